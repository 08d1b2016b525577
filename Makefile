# lr-lightning: the two commands of the README's quick start, and their helpers.
#   make quickstart   train + test the quick-start config, print the test accuracy
#   make test         run the test suite
# Both create .venv (Python 3.11) and install the package the first time.

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
# Offline data: this repository's CI keeps CIFAR-10 (ImageFolder PNGs) in ../shared/data.
LR_LIGHTNING_DATA ?= $(if $(wildcard ../shared/data/cifar10),$(abspath ../shared/data),$(abspath ./data))
export LR_LIGHTNING_DATA
export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= offline
PYTEST_ARGS ?=

.PHONY: install install-test quickstart test lint bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,export]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed scripts/install_learn2learn.sh
	bash scripts/install_learn2learn.sh $(PY)
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

quickstart: install
	$(PY) scripts/quickstart.py --config configs/quickstart.yaml

test: install-test
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check lr_lightning tests benchmarks scripts

bench: install
	$(PY) benchmarks/degrade_throughput.py
	$(PY) benchmarks/baselines_cifar10.py

clean:
	rm -rf logs lightning_logs .pytest_cache
