"""Integer-arithmetic training parts of paper E (Sec. V.B): power-of-two int8/int32 tensors
(Eq. 10/11/14) with round-half-up (default), floor (Eq. 10 literally) or stochastic rounding,
integer Conv2d/Linear/residual add with exact int8 x int8 -> int32 arithmetic in forward and
backward (exact float32 split weight gradient), the module swap, offline static-scale calibration,
and float layers with sliced (gradient-pruned) backward."""

from lr_lightning.quant.calibration import (
    calibrate_static_scales,
    load_scale_state,
    quantization_points,
    read_scale_file,
    save_scale_state,
    scale_state,
)
from lr_lightning.quant.convert import (
    IntegerZSSR8,
    convert_to_integer,
    find_unsupported,
    fold_batchnorm,
    integer_layers,
    scale_books,
)
from lr_lightning.quant.core import (
    QTensor,
    Rounding,
    ceil_log2,
    dequantize,
    dynamic_scale,
    floor_half_up_,
    quantize,
    requantize,
    saturate,
    shift_floor,
    shift_round,
)
from lr_lightning.quant.layers import (
    IntAdd,
    IntConv2d,
    IntegerLayer,
    IntLinear,
    ScaleBook,
    conv2d_weight_exact,
    eq15_update,
    split_plan,
)
from lr_lightning.quant.masked import GradMaskedConv2d, GradMaskedLinear

__all__ = [
    "GradMaskedConv2d",
    "GradMaskedLinear",
    "IntAdd",
    "IntConv2d",
    "IntLinear",
    "IntegerLayer",
    "IntegerZSSR8",
    "QTensor",
    "Rounding",
    "ScaleBook",
    "calibrate_static_scales",
    "ceil_log2",
    "conv2d_weight_exact",
    "convert_to_integer",
    "dequantize",
    "dynamic_scale",
    "eq15_update",
    "find_unsupported",
    "floor_half_up_",
    "fold_batchnorm",
    "integer_layers",
    "load_scale_state",
    "quantization_points",
    "quantize",
    "read_scale_file",
    "requantize",
    "saturate",
    "save_scale_state",
    "scale_books",
    "scale_state",
    "shift_floor",
    "shift_round",
    "split_plan",
]
