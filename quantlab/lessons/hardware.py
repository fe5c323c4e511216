"""Which number formats run fast on which hardware: the matrix the "Choose a scheme" lesson uses.

A format only pays where something executes it. "native" means the matrix multiply itself runs in
that format on tensor/matrix cores (W8A8, FP8); "weight-only" means weights are stored in it and a
kernel expands them to 16 bits on the fly (Marlin, Machete, MLX), which saves memory traffic but
not math; "none" means no serving path the sources list. Every entry names its source, because
this table goes stale as runtimes add kernels: check the source before relying on it.

FP8 comes in two encodings: OCP E4M3FN (±448, what compressed-tensors writes) and E4M3FNUZ
(±240, no negative zero), the only FP8 that MI300's CDNA 3 matrix cores take. vLLM converts FN
checkpoints to FNUZ at load time on MI300 (the bit pattern of −0 becomes NaN in FNUZ, so it is
zeroed, and scales are doubled because the same bits mean half the value).

Three formats have rows of their own because a plain FP8 or INT4 kernel cannot run them: MXFP8's
E8M0 scale per 32 needs block-scaled (MX) matrix instructions, FP8_BLOCK's scale per 128×128 tile
a block-scaled FP8 GEMM, and NF4 is a 16-entry table that only bitsandbytes' kernels read: they
dequantize it to 16 bits, so it saves memory everywhere and math nowhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from quantlab.core.errors import QuantlabError

Status = Literal["native", "weight-only", "none"]

HARDWARE: dict[str, str] = {
    "cpu": "x86 CPU",
    "ampere": "NVIDIA Ampere (A100, A10, RTX 30)",
    "ada": "NVIDIA Ada (L4, L40S, RTX 40)",
    "hopper": "NVIDIA Hopper (H100, H200)",
    "blackwell": "NVIDIA Blackwell (B200, RTX 50)",
    "mi300": "AMD MI300 (CDNA 3)",
    "mi350": "AMD MI350 (CDNA 4)",
    "apple": "Apple silicon (M-series)",
}
# Hardware the committed GPU run (an H200) speaks for: same vendor stack, Marlin-family kernels.
NVIDIA: frozenset[str] = frozenset({"ampere", "ada", "hopper", "blackwell"})

CAPABILITIES: dict[str, str] = {
    "int4-weight": "INT4 weight-only (W4A16)",
    "int8-weight": "INT8 weight-only (W8A16)",
    "int8-matmul": "INT8 matmul (W8A8)",
    "fp8-matmul": "FP8 matmul (W8A8)",
    "fp8-kv": "FP8 KV cache",
    "fp4": "NVFP4 / MXFP4",
    "mxfp8": "MXFP8 (E8M0 scale per 32)",
    "fp8-block": "FP8 block (scale per 128×128 tile)",
    "nf4": "NF4 (bitsandbytes)",
}

VLLM_HW = "https://docs.vllm.ai/en/v0.11.2/features/quantization/ (supported-hardware table)"
VLLM_HW_NEW = "https://docs.vllm.ai/quantization/ (supported-hardware table, Marlin now lists FP4)"
VLLM_FP8 = "https://docs.vllm.ai/en/stable/features/quantization/fp8/"
FP8_MARLIN = "https://github.com/vllm-project/vllm/pull/5975 (FP8 Marlin for Ampere)"
MACHETE = "https://github.com/vllm-project/vllm/blob/main/csrc/quantization/machete/Readme.md"
VLLM_KV = "https://docs.vllm.ai/en/latest/features/quantization/quantized_kvcache/"
HIP_FP8 = "https://rocm.docs.amd.com/projects/HIP/en/docs-6.2.0/reference/fp8_numbers.html (gfx942: FNUZ only)"
ROCM_TYPES = "https://rocm.docs.amd.com/en/latest/reference/precision-support.html"
VLLM_FNUZ = ("https://github.com/vllm-project/vllm/blob/main/vllm/model_executor/layers/quantization/utils/"
             "w8a8_utils.py (normalize_e4m3fn_to_e4m3fnuz)")
CDNA4 = "https://www.servethehome.com/amd-mi350-and-cdna-4-architecture-launched-with-rocm-7/"
NVFP4 = "https://build.nvidia.com/playbooks/nvfp4-quantization/overview"
B200 = "https://www.nvidia.com/en-us/data-center/dgx-b200/ (INT8 and FP4 tensor-core rates)"
MLX = "https://ml-explore.github.io/mlx/build/html/python/_autosummary/mlx.core.quantize.html"
MLX_LM = "https://github.com/ml-explore/mlx-lm (convert -q, --kv-bits)"
VLLM_FP8_BLOCK = ("https://github.com/vllm-project/vllm/blob/main/docs/features/quantization/llm_compressor/fp8.md "
                  "(GEMM kernel selection for block-quantized checkpoints)")
ROCM_FP8_BLOCK = ("https://github.com/vllm-project/vllm/pull/14968 (AITER block-scaled FP8 GEMM); "
                  "https://github.com/vllm-project/vllm/pull/12134 (block FP8 in E4M3FNUZ on MI300)")
MI355_FP8_BLOCK = "https://github.com/sgl-project/sglang/pull/14043 (block-scale FP8 GEMM on CDNA 4, MI355X)"
VLLM_MXFP8 = "https://github.com/vllm-project/vllm/pull/38815 (compressed-tensors MXFP8 in vLLM)"
MXFP8_SM100 = "https://github.com/vllm-project/vllm/pull/46393 (MXFP8 GEMM for sm_100/sm_103 via FlashInfer)"
MXFP8_EMULATION = ("https://github.com/vllm-project/vllm/pull/50814 (review: vLLM's MXFP8 emulation, PR 45381, "
                   "dequantizes the weights)")
MI355_MX = "https://github.com/pytorch/ao/pull/2066 (MX-format GEMMs on MI355X, gfx950, through hipBLASLt)"
BNB = "https://huggingface.co/docs/bitsandbytes/v0.50.0/installation (NVIDIA, AMD, Intel, Apple Silicon, CPU)"


@dataclass(frozen=True)
class Entry:
    hardware: str
    capability: str
    status: Status
    note: str
    source: str
    encoding: str | None = None  # the FP8 encoding the hardware computes in, for fp8 rows


def _e(hw: str, cap: str, status: Status, note: str, source: str, encoding: str | None = None) -> Entry:
    return Entry(hw, cap, status, note, source, encoding)


MATRIX: tuple[Entry, ...] = (
    # x86 CPU
    _e("cpu", "int4-weight", "weight-only", "vLLM's CPU backend runs AWQ/GPTQ weights", VLLM_HW),
    _e("cpu", "int8-weight", "weight-only", "GPTQ 8-bit weights on vLLM's CPU backend", VLLM_HW),
    _e("cpu", "int8-matmul", "native", "INT8 W8A8 on VNNI/AMX through vLLM's CPU backend", VLLM_HW),
    _e("cpu", "fp8-matmul", "none", "no FP8 matmul on x86 in vLLM's table", VLLM_HW),
    _e("cpu", "fp8-kv", "none", "the FP8 cache kernels are CUDA/ROCm ones", VLLM_KV),
    _e("cpu", "fp4", "none", "no FP4 path listed", VLLM_HW_NEW),
    # Ampere (sm_80/86)
    _e("ampere", "int4-weight", "weight-only", "Marlin (groups -1/32/64/128, sym or with zero points)", VLLM_HW),
    _e("ampere", "int8-weight", "weight-only", "Marlin 8-bit", VLLM_HW),
    _e("ampere", "int8-matmul", "native", "INT8 tensor cores (CUTLASS scaled_mm)", VLLM_HW),
    _e("ampere", "fp8-matmul", "weight-only", "no FP8 tensor cores: FP8 checkpoints run as W8A16 via FP8 Marlin",
       FP8_MARLIN),
    _e("ampere", "fp8-kv", "weight-only", "cache stored in FP8, attention computed in 16 bits", VLLM_KV),
    _e("ampere", "fp4", "weight-only", "NVFP4 weights expanded by Marlin, no FP4 math", VLLM_HW_NEW),
    # Ada (sm_89)
    _e("ada", "int4-weight", "weight-only", "Marlin", VLLM_HW),
    _e("ada", "int8-weight", "weight-only", "Marlin 8-bit", VLLM_HW),
    _e("ada", "int8-matmul", "native", "INT8 tensor cores", VLLM_HW),
    _e("ada", "fp8-matmul", "native", "FP8 tensor cores (compute capability 8.9)", VLLM_FP8, "E4M3FN"),
    _e("ada", "fp8-kv", "native", "FP8 KV cache", VLLM_KV, "E4M3FN"),
    _e("ada", "fp4", "weight-only", "NVFP4 weights via Marlin, no FP4 math", VLLM_HW_NEW),
    # Hopper (sm_90)
    _e("hopper", "int4-weight", "weight-only", "Machete (wgmma, pre-shuffled weights) or Marlin", MACHETE),
    _e("hopper", "int8-weight", "weight-only", "Machete/Marlin 8-bit", MACHETE),
    _e("hopper", "int8-matmul", "native", "INT8 tensor cores", VLLM_HW),
    _e("hopper", "fp8-matmul", "native", "FP8 tensor cores; the lab's committed run times it", VLLM_FP8, "E4M3FN"),
    _e("hopper", "fp8-kv", "native", "FP8 KV cache (FlashAttention 3 computes attention in FP8)", VLLM_KV,
       "E4M3FN"),
    _e("hopper", "fp4", "weight-only", "NVFP4 weights via Marlin, no FP4 math", VLLM_HW_NEW),
    # Blackwell (sm_100/120)
    _e("blackwell", "int4-weight", "weight-only", "Marlin", VLLM_HW_NEW),
    _e("blackwell", "int8-weight", "weight-only", "Marlin 8-bit", VLLM_HW_NEW),
    _e("blackwell", "int8-matmul", "native", "INT8 tensor cores (B200)", B200),
    _e("blackwell", "fp8-matmul", "native", "FP8 tensor cores", VLLM_FP8, "E4M3FN"),
    _e("blackwell", "fp8-kv", "native", "FP8 KV cache", VLLM_KV, "E4M3FN"),
    _e("blackwell", "fp4", "native", "FP4 tensor cores: NVFP4 (E2M1, FP8 scale per 16) and MXFP4", NVFP4),
    # MI300 (CDNA 3, gfx942)
    _e("mi300", "int4-weight", "none", "vLLM's table lists no AWQ/GPTQ/Marlin on AMD GPUs", VLLM_HW),
    _e("mi300", "int8-weight", "none", "as for INT4: no weight-only kernel listed", VLLM_HW),
    _e("mi300", "int8-matmul", "none", "the matrix cores do INT8, but vLLM's table lists no INT8 W8A8 on AMD",
       VLLM_HW),
    _e("mi300", "fp8-matmul", "native", "FP8 matrix cores in E4M3FNUZ only; vLLM converts E4M3FN checkpoints "
       "at load", HIP_FP8 + "; " + VLLM_FNUZ, "E4M3FNUZ"),
    _e("mi300", "fp8-kv", "native", "FP8 KV cache (FNUZ)", VLLM_KV, "E4M3FNUZ"),
    _e("mi300", "fp4", "none", "CDNA 3 has no FP4", ROCM_TYPES),
    # MI350 (CDNA 4, gfx950)
    _e("mi350", "int4-weight", "none", "no AMD weight-only kernel in vLLM's table", VLLM_HW),
    _e("mi350", "int8-weight", "none", "no AMD weight-only kernel in vLLM's table", VLLM_HW),
    _e("mi350", "int8-matmul", "none", "no INT8 W8A8 on AMD in vLLM's table", VLLM_HW),
    _e("mi350", "fp8-matmul", "native", "OCP FP8 matrix cores: compressed-tensors' E4M3FN as written", ROCM_TYPES,
       "E4M3FN"),
    _e("mi350", "fp8-kv", "native", "FP8 KV cache", VLLM_KV, "E4M3FN"),
    _e("mi350", "fp4", "native", "MXFP4 and MXFP6 matrix cores (OCP microscaling, E8M0 scale per 32)", CDNA4),
    # Apple silicon (MLX: its own checkpoint format, converted with mlx_lm)
    _e("apple", "int4-weight", "weight-only", "MLX affine 4-bit (group 64 default; MLX format, not "
       "compressed-tensors)", MLX),
    _e("apple", "int8-weight", "weight-only", "MLX affine 8-bit", MLX),
    _e("apple", "int8-matmul", "none", "MLX quantizes weights only", MLX),
    _e("apple", "fp8-matmul", "none", "MLX's mxfp8 mode is weight-only with E8M0 block scales, not this FP8",
       MLX),
    _e("apple", "fp8-kv", "none", "mlx-lm quantizes the cache in its affine integer format instead", MLX_LM),
    _e("apple", "fp4", "weight-only", "MLX mxfp4/nvfp4 modes: weights only", MLX),
    # MXFP8: FP8 values, a power-of-two E8M0 scale per 32 (OCP microscaling)
    _e("cpu", "mxfp8", "none", "no MX format in vLLM's CPU backend", VLLM_HW_NEW),
    _e("ampere", "mxfp8", "weight-only", "no MX tensor cores: vLLM's MXFP8 emulation dequantizes the weights "
       "to 16 bits", MXFP8_EMULATION),
    _e("ada", "mxfp8", "weight-only", "FP8 tensor cores but no MX scaling: vLLM emulates MXFP8 with dequantized "
       "weights", MXFP8_EMULATION),
    _e("hopper", "mxfp8", "weight-only", "no MX scaling in Hopper's tensor cores: vLLM emulates MXFP8 with "
       "dequantized weights", MXFP8_EMULATION),
    _e("blackwell", "mxfp8", "native", "block-scaled tensor cores take FP8 with E8M0 scales (FlashInfer "
       "mm_mxfp8); vLLM reads compressed-tensors MXFP8", MXFP8_SM100 + "; " + VLLM_MXFP8, "E4M3FN"),
    _e("mi300", "mxfp8", "weight-only", "CDNA 3 has no MX scaling: vLLM's emulation dequantizes, on gfx942 too",
       MXFP8_EMULATION),
    _e("mi350", "mxfp8", "native", "CDNA 4's scaled matrix instructions take FP8/FP6/FP4 with E8M0 scales",
       MI355_MX, "E4M3FN"),
    _e("apple", "mxfp8", "weight-only", "MLX's mxfp8 mode: weights only, E8M0 scale per 32", MLX),
    # FP8_BLOCK: FP8 weights with a scale per 128x128 tile, activations per token in groups of 128
    _e("cpu", "fp8-block", "none", "no FP8 matmul on x86 in vLLM's table", VLLM_HW),
    _e("ampere", "fp8-block", "weight-only", "no FP8 tensor cores: block-FP8 checkpoints run as W8A16 through "
       "Marlin", VLLM_FP8_BLOCK),
    _e("ada", "fp8-block", "native", "FP8 tensor cores through a block-scaled FP8 GEMM vLLM picks at load",
       VLLM_FP8_BLOCK, "E4M3FN"),
    _e("hopper", "fp8-block", "native", "DeepSeek-V3's own recipe: DeepGEMM or CUTLASS block-scaled FP8 GEMM",
       VLLM_FP8_BLOCK, "E4M3FN"),
    _e("blackwell", "fp8-block", "native", "block-scaled FP8 GEMM (DeepGEMM, CUTLASS)", VLLM_FP8_BLOCK, "E4M3FN"),
    _e("mi300", "fp8-block", "native", "AITER's block-scaled FP8 GEMM; weights converted to FNUZ at load",
       ROCM_FP8_BLOCK, "E4M3FNUZ"),
    _e("mi350", "fp8-block", "native", "block-scale FP8 GEMM on OCP FP8 matrix cores", MI355_FP8_BLOCK, "E4M3FN"),
    _e("apple", "fp8-block", "none", "MLX has no FP8 matmul", MLX),
    # NF4: bitsandbytes' kernels expand the 16-entry table to bf16 before a 16-bit matmul, on every device
    _e("cpu", "nf4", "weight-only", "bitsandbytes' CPU backend dequantizes to 16 bits; not in vLLM's CPU table", BNB),
    _e("ampere", "nf4", "weight-only", "bitsandbytes kernels dequantize to bf16 (transformers, vLLM): no "
       "tensor-core path for a table format", BNB + "; " + VLLM_HW),
    _e("ada", "nf4", "weight-only", "bitsandbytes kernels dequantize to bf16: no tensor-core path",
       BNB + "; " + VLLM_HW),
    _e("hopper", "nf4", "weight-only", "bitsandbytes kernels dequantize to bf16: no tensor-core path",
       BNB + "; " + VLLM_HW),
    _e("blackwell", "nf4", "weight-only", "bitsandbytes kernels dequantize to bf16: FP4 tensor cores take E2M1, "
       "not NF4's table", BNB),
    _e("mi300", "nf4", "weight-only", "bitsandbytes' ROCm build dequantizes to 16 bits; vLLM lists bitsandbytes "
       "on NVIDIA only", BNB + "; " + VLLM_HW),
    _e("mi350", "nf4", "weight-only", "bitsandbytes' ROCm build dequantizes to 16 bits", BNB),
    _e("apple", "nf4", "weight-only", "bitsandbytes' Apple Silicon support dequantizes to 16 bits", BNB),
)

_BY_KEY: dict[tuple[str, str], Entry] = {(e.hardware, e.capability): e for e in MATRIX}


def entry(hardware: str, capability: str) -> Entry:
    if hardware not in HARDWARE:
        raise QuantlabError(f"unknown hardware {hardware!r}: use one of {', '.join(HARDWARE)}")
    if capability not in CAPABILITIES:
        raise QuantlabError(f"unknown capability {capability!r}: use one of {', '.join(CAPABILITIES)}")
    return _BY_KEY[(hardware, capability)]


def rows() -> list[dict[str, str]]:
    """The matrix as a table: one row per hardware, one column per capability (status + encoding)."""
    out = []
    for hw, name in HARDWARE.items():
        row = {"hardware": name}
        for cap, cap_name in CAPABILITIES.items():
            e = _BY_KEY[(hw, cap)]
            row[cap_name] = e.status + (f" ({e.encoding})" if e.encoding and e.status != "none" else "")
        out.append(row)
    return out


def source_rows() -> list[dict[str, str]]:
    """Every entry with its note and source, for checking the matrix."""
    return [{"hardware": HARDWARE[e.hardware], "format": CAPABILITIES[e.capability], "status": e.status,
             "note": e.note, "source": e.source} for e in MATRIX]
