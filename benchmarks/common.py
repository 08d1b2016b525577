"""Shared benchmark plumbing: environment facts, timing, and JSON + Markdown result files.

Every result file carries the git commit, library versions, thread count, CPU and wall time, so
numbers can be traced to the code and machine that produced them.
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lr_lightning.callbacks.memory import peak_rss_mb

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict[str, Any]:
    import lightning

    return {
        "git_commit": git_commit(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "cuda": torch.cuda.is_available(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        # peak resident memory of the benchmark process (or its largest finished child) so far
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def median_time(fn: Callable[[], Any], repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_results(name: str, payload: dict[str, Any], markdown: str, wall_time_s: float) -> tuple[Path, Path]:
    """Write ``benchmarks/results/<name>.json`` and ``.md`` (environment header included)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    env = environment()
    payload = {**payload, "environment": env, "wall_time_s": round(wall_time_s, 1)}
    json_path = RESULTS / f"{name}.json"
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    header = (
        f"# {name}\n\ncommit `{env['git_commit']}`, torch {env['torch']}, lightning {env['lightning']}, "
        f"{env['threads']} threads, {env['cpu']}, {env['date_utc']}, wall time {wall_time_s:.0f} s\n\n"
    )
    md_path = RESULTS / f"{name}.md"
    md_path.write_text(header + markdown)
    return json_path, md_path


def cli_run_args(out: str | Path, name: str, epochs: int) -> list[str]:
    """LightningCLI overrides shared by the method benchmarks: epochs, no progress bar or model
    summary, CSV logs and checkpoints under ``out/name``."""
    return [
        f"--trainer.max_epochs={epochs}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.logger.init_args.save_dir={out}",
        f"--trainer.logger.init_args.name={name}",
        f"--trainer.default_root_dir={out}",
    ]


def add_stage_arguments(ap: Any, stages: list[str]) -> None:
    """``--resume``, ``--stages`` and ``--redo`` of a staged, resumable benchmark."""
    ap.add_argument("--resume", action="store_true", help="skip stages already in the results JSON")
    ap.add_argument("--stages", default=",".join(stages), help="comma-separated subset of: " + ",".join(stages))
    ap.add_argument("--redo", default="", help="comma-separated stages to run again even with --resume")


def resumable_results(path: Path, fresh: dict[str, Any], *, resume: bool, redo: str) -> dict[str, Any]:
    """The results dict of a staged benchmark: ``fresh`` plus, with ``resume``, the finished
    ``stages`` / ``stage_wall_s`` of the JSON at ``path`` when it has the same profile, the
    finished runs of unfinished stages (``partial``, for benchmarks that record them) and the
    machine each stage ran on (``stage_environment``, for those that record it); the
    comma-separated stages in ``redo`` are dropped so they run again."""
    results = dict(fresh)
    if resume and path.is_file():
        old = json.loads(path.read_text())
        if old.get("profile") == fresh.get("profile"):
            results.update({k: old[k] for k in ("stages", "stage_wall_s", "partial", "stage_environment") if k in old})
    for stage in (s for s in redo.split(",") if s):
        results["stages"].pop(stage, None)
        results["stage_wall_s"].pop(stage, None)
        results.get("partial", {}).pop(stage, None)
        results.get("stage_environment", {}).pop(stage, None)
    return results


def selected_stages(spec: str, stages: list[str]) -> list[str]:
    """The stages named in the comma-separated ``spec``; a ValueError names unknown ones."""
    wanted = [s for s in spec.split(",") if s]
    unknown = sorted(set(wanted) - set(stages))
    if unknown:
        raise ValueError(f"unknown stages {unknown}; valid: {stages}")
    return wanted


# -- statistics ------------------------------------------------------------------------------------
def mean_ci(values: list[float]) -> dict[str, float]:
    """Mean and the half-width of the 95 % t-interval."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return {"mean": float(x.mean()), "ci95": float("nan"), "n": int(len(x))}
    half = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return {"mean": float(x.mean()), "ci95": half, "n": int(len(x))}


def paired(a: list[float], b: list[float]) -> dict[str, float]:
    """Paired difference a - b over the same test pairs: mean, 95 % CI, t-test p and wins."""
    from scipy import stats

    d = np.asarray(a) - np.asarray(b)
    out = mean_ci(d.tolist())
    out["p"] = float(stats.ttest_rel(a, b).pvalue) if len(d) > 1 and d.std() > 0 else float("nan")
    out["wins"] = f"{int((d > 0).sum())}/{len(d)}"
    return out


def mcnemar(correct_a: Any, correct_b: Any) -> dict[str, Any]:
    """Exact McNemar test of two classifiers on the same images (per-image correctness, same
    order): ``b`` = images only A gets right, ``c`` = only B; two-sided p of the binomial test
    of ``b`` vs ``c`` (scipy); ``diff`` = acc(A) - acc(B) in points."""
    from scipy import stats

    a = np.asarray(correct_a, dtype=bool)
    bb = np.asarray(correct_b, dtype=bool)
    if a.shape != bb.shape:
        raise ValueError(f"McNemar needs the same images: {a.shape} vs {bb.shape}")
    b, c = int((a & ~bb).sum()), int((~a & bb).sum())
    p = float(stats.binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0
    return {"only_a": b, "only_b": c, "p": p, "diff": float(100 * (a.mean() - bb.mean()))}


def cache_cifar_loading() -> None:
    """Decode the CIFAR PNGs once per process instead of once per CLI run (benchmark-only patch
    of ``CIFARDataModule.load_split``; the data are read-only, so sharing them is safe)."""
    from lr_lightning.data import CIFARDataModule

    original = CIFARDataModule.load_split
    if getattr(original, "_cached", False):
        return
    cache: dict[tuple[str, str, str], Any] = {}

    def load_split(self: CIFARDataModule, split: str) -> Any:
        key = (str(self.root), self.variant, split)
        if key not in cache:
            cache[key] = original(self, split)
        return cache[key]

    load_split._cached = True  # type: ignore[attr-defined]
    CIFARDataModule.load_split = load_split  # type: ignore[method-assign]
