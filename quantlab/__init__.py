"""quantlab: bit-exact LLM quantization on real weights and activations, for teaching and what-ifs."""
from quantlab.core.errors import QuantlabError
from quantlab.core.qparams import QuantizedTensor, calculate_qparams, dequantize, quantize_with
from quantlab.core.quantize import fake_quantize, quantize
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
