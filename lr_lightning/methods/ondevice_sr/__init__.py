"""Paper E: on-device meta-learned zero-shot SR in integer arithmetic with learned gradient masks.

Offline (Alg. 1): :class:`ZSSRPretrain` (``D_bic`` / ``D_meta``), :class:`ZSSRMetaLearn` (MAML over
kernels), :class:`GradientMasks` (Eq. 7-9, a masks file). Online (Alg. 2): the ``test`` /
``predict`` of every stage, :class:`OnlineZSSR` for a trained theta; the maths is in
:func:`zero_shot_adapt`. See docs/ondevice_sr.md.
"""

from lr_lightning.methods.ondevice_sr.masks import (
    knapsack_masks,
    layerwise_masks,
    load_masks,
    save_masks,
)
from lr_lightning.methods.ondevice_sr.module import (
    GradientMasks,
    OnlineSpec,
    OnlineZSSR,
    ZeroShotSRTask,
    ZSSRMetaLearn,
    ZSSRPretrain,
    multi_step_weights,
)
from lr_lightning.methods.ondevice_sr.online import (
    OnlineResult,
    install_masks,
    prepare_network,
    zero_shot_adapt,
)

__all__ = [
    "GradientMasks",
    "OnlineResult",
    "OnlineSpec",
    "OnlineZSSR",
    "ZSSRMetaLearn",
    "ZSSRPretrain",
    "ZeroShotSRTask",
    "install_masks",
    "knapsack_masks",
    "layerwise_masks",
    "load_masks",
    "multi_step_weights",
    "prepare_network",
    "save_masks",
    "zero_shot_adapt",
]
