"""Integer-arithmetic training parts of paper E (Sec. V.B): power-of-two int8/int32 tensors
(Eq. 10/11/14), integer Conv2d/Linear/residual add with exact int8 x int8 -> int32 arithmetic in
forward and backward, the module swap, and float layers with sliced (gradient-pruned) backward."""

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
    ceil_log2,
    dequantize,
    dynamic_scale,
    quantize,
    requantize,
    saturate,
    shift_floor,
)
from lr_lightning.quant.layers import (
    IntAdd,
    IntConv2d,
    IntegerLayer,
    IntLinear,
    ScaleBook,
    eq15_update,
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
    "ScaleBook",
    "ceil_log2",
    "convert_to_integer",
    "dequantize",
    "dynamic_scale",
    "eq15_update",
    "find_unsupported",
    "fold_batchnorm",
    "integer_layers",
    "quantize",
    "requantize",
    "saturate",
    "scale_books",
    "shift_floor",
]
