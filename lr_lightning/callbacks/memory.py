"""Memory held by a run: resident set size (RSS) of the process at the end of every training
epoch, and its peak, logged so that growth across epochs (a leak: graphs, tensors or metric
states kept alive from step to step) shows in ``metrics.csv`` beside the losses.

    trainer:
      callbacks:
        - lr_lightning.callbacks.MemoryMonitor

Reads ``/proc/self/status`` (Linux; elsewhere only the peak from ``resource`` is available and
``train/rss_mb`` is not logged). GPU memory is ``torch.cuda.max_memory_allocated`` and is logged
as ``train/cuda_peak_mb`` when a GPU is used.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


def rss_mb() -> float | None:
    """Current resident set size of this process in MiB (``None`` where /proc is absent)."""
    status = Path("/proc/self/status")
    if not status.is_file():
        return None
    for line in status.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return None


def peak_rss_mb() -> float:
    """Peak resident set size of this process (and of its finished children) in MiB."""
    scale = 1.0 / 1024.0 if sys.platform != "darwin" else 1.0 / 1024.0**2  # KiB on Linux, bytes on macOS
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) * scale


class MemoryMonitor(Callback):
    """Logs ``train/rss_mb`` and ``train/peak_rss_mb`` at every training epoch end (and
    ``train/cuda_peak_mb`` on a GPU); :attr:`history` keeps the RSS of each epoch."""

    def __init__(self) -> None:
        self.history: list[float] = []

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        now = rss_mb()
        if now is not None:
            self.history.append(now)
            pl_module.log("train/rss_mb", now, on_step=False, on_epoch=True, batch_size=1)
        pl_module.log("train/peak_rss_mb", peak_rss_mb(), on_step=False, on_epoch=True, batch_size=1)
        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            pl_module.log("train/cuda_peak_mb", torch.cuda.max_memory_allocated(pl_module.device) / 2**20,
                          on_step=False, on_epoch=True, batch_size=1)
