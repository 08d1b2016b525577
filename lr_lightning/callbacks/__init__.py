"""Lightning callbacks that change how any supported model trains.

* :class:`IntegerTrainingCallback`: integer-arithmetic training (paper E, Sec. V.B, Eq. 10-15).
* :class:`GradientPruningCallback`: cost-constrained gradient pruning (paper E, Sec. IV.B, Eq. 6-9).
* :class:`BestAndLastCheckpoint`: best-by-monitor checkpoints plus a ``last.ckpt`` that really is
  the last one (used by every task).
* :class:`NonFiniteGuard`: a NaN / inf loss or gradient stops the run naming the step and the loss
  terms, or skips the update (used by every task; a config can add its own).
* :class:`ResumeState` (every task) and :class:`LastEveryNSteps`: exact resume mid-epoch.
* :class:`WarmupEMA`: EMA of the weights with a warm-up decay and a start step (inert until it
  has averaged something).
* :class:`MemoryMonitor`: RSS per epoch (leak check) and peak memory.
* :mod:`lr_lightning.callbacks.cost`: Eq. 9/16/17 and the meet-in-the-middle solver of Eq. 8.
"""

from lr_lightning.callbacks.checkpoint import BestAndLastCheckpoint
from lr_lightning.callbacks.ema import WarmupEMA
from lr_lightning.callbacks.finite import NonFiniteGuard, NonFiniteLossError
from lr_lightning.callbacks.integer import IntegerTrainingCallback
from lr_lightning.callbacks.memory import MemoryMonitor
from lr_lightning.callbacks.pruning import GradientPruningCallback, prunable_layers
from lr_lightning.callbacks.resume import LastEveryNSteps, ResumeState

__all__ = [
    "BestAndLastCheckpoint",
    "GradientPruningCallback",
    "IntegerTrainingCallback",
    "LastEveryNSteps",
    "MemoryMonitor",
    "NonFiniteGuard",
    "NonFiniteLossError",
    "ResumeState",
    "WarmupEMA",
    "prunable_layers",
]
