"""Meta-learning core shared by paper A (degradation MAML classifier) and paper E (MZSR-style SR).

Model-agnostic MAML (Finn et al. 2017, Eq. 1-3 of the MAML paper; paper A Sec. 3 / 4.2) on top of
``torch.func.functional_call``: the fast weights are a ``{name: Tensor}`` dict, the task loss is a
callback ``loss_fn(forward, batch) -> scalar`` and ``forward(*inputs)`` runs the model with the
current fast weights. No Lightning import here.
"""

from lr_lightning.meta.inner_loop import (
    BN_MODES,
    BNMode,
    InnerLoopResult,
    batch_norm_uses_batch_stats,
    functional_forward,
    inner_loop,
    meta_parameters,
)

__all__ = [
    "BN_MODES",
    "BNMode",
    "InnerLoopResult",
    "batch_norm_uses_batch_stats",
    "functional_forward",
    "inner_loop",
    "meta_parameters",
]
