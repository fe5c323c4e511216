"""quantlab's GPU speed lab: dequant-matmul kernels, their torch reference, and the numbers behind
the Speed lesson.

This package imports without Triton or a GPU: `layout` (the weight layout and the plain torch
paths) is pure torch; the bytes, FLOPs and committed benchmark results are the Speed lesson's
(`quantlab.lessons.speed`). The kernels live in `quantlab.kernels.triton_ops` (integer weights)
and `quantlab.kernels.fp8` (FP8 W8A8); importing those needs Triton, and a GPU unless TRITON_INTERPRET=1 is set first.
"""
from quantlab.kernels.layout import (
    PackedLinear,
    dequantize_packed,
    reference_matmul,
    torch_matmul,
)

__all__ = ["PackedLinear", "dequantize_packed", "reference_matmul", "torch_matmul"]
