"""quantlab: bit-exact LLM quantization on real weights and activations, for teaching and what-ifs."""
from quantlab.core.errors import QuantlabError
from quantlab.core.quantize import (
    QuantizedTensor,
    calculate_qparams,
    dequantize,
    fake_quantize,
    quantize,
    quantize_with,
)
from quantlab.core.spec import PRESETS, QuantSpec

__all__ = [
    "PRESETS",
    "QuantSpec",
    "QuantizedTensor",
    "QuantlabError",
    "calculate_qparams",
    "dequantize",
    "fake_quantize",
    "quantize",
    "quantize_with",
]
