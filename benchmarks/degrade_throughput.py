"""Throughput of the degradation layer (``lr_lightning.degrade``) on CPU.

Measures images/s for degrading a CIFAR-size batch (B=1024, 3x32x32) with the
headline paper-A task (average pooling x2 + 3-bit DoReFa quantisation) and a
few other degradations.  Each timing is the median over ``repeats`` runs after
``warmup`` untimed runs, with PyTorch's default thread count.

Usage::

    python benchmarks/degrade_throughput.py

writes ``benchmarks/results/degrade_throughput.{json,md}`` (goal: >= 20,000 images/s for
pool + quantise on 2 cores) and prints the table. ``run()`` returns the result dict.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

try:
    from lr_lightning.degrade import Degradation, downsample, gaussian_kernel
except ImportError:  # running from a source checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from lr_lightning.degrade import Degradation, downsample, gaussian_kernel


def time_callable(fn: Callable[[], object], repeats: int, warmup: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def run(batch: int = 1024, repeats: int = 20, warmup: int = 3, seed: int = 0) -> dict:
    """Benchmark the degradations; returns images/s medians (see module docstring)."""
    if repeats < 1 or batch < 1:
        raise ValueError("batch and repeats must be positive")
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, 32, 32, generator=g)
    kernel21 = gaussian_kernel(21, sigma=math.sqrt(2.0))  # MZSR-style g20 kernel size
    ops: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "maxpool2": Degradation("max", 2),
        "avgpool2+q3": Degradation("avg", 2, bits=3),
        "bicubic4": Degradation("bicubic", 4),
        "bicubic_matlab4": Degradation("bicubic_matlab", 4),
        "nearest4": Degradation("nearest", 4),
        "blur4(k21x21)": lambda t: downsample(t, 4, "blur", kernel21),
    }
    per_op: dict[str, float] = {}
    load_before = os.getloadavg()[0]
    with torch.inference_mode():
        for name, op in ops.items():
            times = time_callable(lambda op=op: op(x), repeats=repeats, warmup=warmup)
            per_op[name] = batch / statistics.median(times)
    return {
        "images_per_s": per_op["avgpool2+q3"],
        "per_op": per_op,
        "repeats": repeats,
        "batch": batch,
        "image_shape": [3, 32, 32],
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        # 1-min load average before/after: numbers taken on a busy machine are not comparable
        "loadavg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.common import markdown_table, write_results

    t0 = time.perf_counter()
    result = run()
    rows = [{"degradation": k, "images_per_s": round(v)} for k, v in result["per_op"].items()]
    md = (
        f"Batch {result['batch']} x 3x32x32, median of {result['repeats']} runs, "
        f"{result['threads']} threads, 1-min load average before/after {result['loadavg_1min']}.\n\n"
        + markdown_table(rows, ["degradation", "images_per_s"])
        + f"\nHeadline (avgpool2 + 3-bit DoReFa): **{result['images_per_s']:,.0f} images/s** (goal >= 20,000).\n"
    )
    write_results("degrade_throughput", result, md, time.perf_counter() - t0)
    print(json.dumps(result, indent=2))
    print(md)


if __name__ == "__main__":
    main()
