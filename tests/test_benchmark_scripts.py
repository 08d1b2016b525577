"""Every benchmark script imports and answers ``--help``: a helper moved or renamed in one
script must not silently break another (the PatchDrop and DarioNet benchmarks once imported a
helper that the autoresolution rewrite had removed)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from tests.conftest import REPO

SCRIPTS = sorted(p.stem for p in (REPO / "benchmarks").glob("*.py") if p.stem not in ("__init__", "common"))


def test_every_benchmark_is_listed() -> None:
    assert {"patchdrop_cifar10", "darionet_cifar10", "autoresolution_cifar10", "maml_degradation_cifar10", "ondevice_sr"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_benchmark_imports(name: str) -> None:
    module = importlib.import_module(f"benchmarks.{name}")
    entry = [f for f in ("main", "main_bench") if callable(getattr(module, f, None))]
    assert entry or name.endswith("_engine"), f"benchmarks/{name}.py has no main()"


def test_patchdrop_benchmark_help_runs() -> None:
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "patchdrop_cifar10.py"), "--help"], capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "--resume" in out.stdout
