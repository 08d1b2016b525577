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


def test_resumable_results_keeps_finished_stages_and_drops_redone_ones(tmp_path) -> None:
    """``--resume`` keeps each finished stage with its wall time, recorded runs and the machine it
    ran on; ``--redo`` drops all four for the named stage, and a JSON of another profile is ignored."""
    import json

    from benchmarks.common import resumable_results

    path = tmp_path / "bench.json"
    old = {"profile": "default", "stages": {"a": {"x": 1}, "b": {"y": 2}}, "stage_wall_s": {"a": 10.0, "b": 20.0},
           "partial": {"b": {"run0": {"weights": "w"}}}, "stage_environment": {"a": {"cpu": "A"}, "b": {"cpu": "B"}}}
    path.write_text(json.dumps(old))

    def fresh(profile: str = "default") -> dict:
        return {"profile": profile, "stages": {}, "stage_wall_s": {}}

    kept = resumable_results(path, fresh(), resume=True, redo="")
    assert kept["stages"] == old["stages"] and kept["stage_environment"] == old["stage_environment"] and kept["partial"] == old["partial"]
    redone = resumable_results(path, fresh(), resume=True, redo="b")
    assert set(redone["stages"]) == {"a"} and set(redone["stage_wall_s"]) == {"a"}
    assert set(redone["stage_environment"]) == {"a"} and "b" not in redone["partial"]
    assert resumable_results(path, fresh("smoke"), resume=True, redo="")["stages"] == {}
    assert resumable_results(path, fresh(), resume=False, redo="")["stages"] == {}
