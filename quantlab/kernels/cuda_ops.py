"""A CUDA W4A16 kernel for Hopper (sm_90a): `w4a16_wgmma.cu`, compiled at run time by NVRTC and
launched through the CUDA driver API (NVIDIA's `cuda-bindings`), on the caller's torch stream.

Why CUDA and not Triton: on Hopper the fastest matrix instruction, wgmma, runs asynchronously, and
a W4A16 kernel should dequantize the next weights while the tensor cores multiply the current ones.
Triton 3.6 waits for each register-operand wgmma before the next dequantization (bench/NOTES.md,
v9), so the two run one after the other. Here the weights of step j + 1 are dequantized into a
second set of registers while step j's wgmma is in flight, which is what CUTLASS's mixed-input
Hopper GEMM and Machete do.

Scope: 4-bit integer weights (symmetric or with zero points), group sizes that are multiples of 64
or per-channel, bf16 or fp16 activations, K a multiple of 8. `supports` says whether a layer and x
qualify; `triton_ops.matmul` routes to `matmul` here when they do, the card is a Hopper and the
batch size is one where this kernel measured faster (`preferred`).

Nothing here runs without a GPU except `source` and `compile_cubin` (NVRTC needs no device), which
the tests use to check that every configuration compiles for sm_90a without spills.
"""
from __future__ import annotations

import ctypes
import dataclasses
import functools
import weakref
from dataclasses import dataclass
from importlib import resources

import torch

from quantlab.core.errors import QuantlabError
from quantlab.kernels.layout import TILE_K, PackedLinear

ARCH = "sm_90a"  # wgmma needs the "a" (architecture-specific) target
TOKENS = (16, 32, 64, 128, 256)  # wgmma N sizes a program may take


@dataclass(frozen=True)
class CudaConfig:
    """Launch parameters of the wgmma kernel."""

    block_m: int = 128  # tokens per program (a wgmma N)
    warpgroups: int = 2  # 64 output rows each
    stages: int = 4  # shared-memory slabs of x, 64 inputs each
    weight_tiles: int = 2  # 256-input weight tiles in flight in registers
    split_k: int = 1
    depth: int = 3  # wgmmas left in flight while the next weights are dequantized (1 or 3)
    tma: bool = True  # x through the bulk tensor copy engine, else cp.async by every thread
    probe: int = 0  # 1: timing experiment without the dequantization (wrong results; bench only)

    def __post_init__(self) -> None:
        if self.block_m not in TOKENS or self.warpgroups not in (1, 2) or self.depth not in (1, 3):
            raise QuantlabError(f"no such wgmma kernel: {self}")
        if self.tma and self.depth == 1:
            # ptxas 13.0 serializes those wgmmas (C7513): the single-thread copy issue sits inside
            # the one-deep pipeline stage
            raise QuantlabError("the TMA kernel keeps 3 wgmmas in flight (depth=3)")
        if self.stages < 3:
            raise QuantlabError("the x pipeline needs at least 3 stages (one in use, one retiring, one landing)")

    @property
    def block_n(self) -> int:
        return 64 * self.warpgroups

    @property
    def threads(self) -> int:
        return 128 * self.warpgroups

    @property
    def shared_bytes(self) -> int:
        return self.stages * self.block_m * 128 + 1024  # + room to align the stages to 1024 bytes


def _mma_step(block_m: int, half: bool) -> str:
    """The m64nBNk16 wgmma with A from registers, B from a shared-memory descriptor."""
    n_acc = block_m // 2
    dtype = "f16" if half else "bf16"
    acc = ", ".join(f"%{i}" for i in range(n_acc))
    a = ", ".join(f"%{n_acc + i}" for i in range(4))
    outs = ", ".join(f'"+f"(d[{i}])' for i in range(n_acc))
    return (
        f"__device__ __forceinline__ void mma_step(float (&d)[{n_acc}], const u32* a, u64 desc) {{\n"
        f'  asm volatile("{{ .reg .pred p; setp.eq.u32 p, 1, 1;\\n"\n'
        f'    "wgmma.mma_async.sync.aligned.m64n{block_m}k16.f32.{dtype}.{dtype} {{{acc}}}, {{{a}}}, %{n_acc + 4}, '
        f'p, 1, 1, 0; }}"\n'
        f'    : {outs}\n'
        f'    : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc));\n'
        "}\n")


def source(cfg: CudaConfig, group: int, asym: bool, half: bool) -> str:
    """The kernel's CUDA text for one configuration (the defines and generated wgmma, then the .cu file)."""
    defines = {"BN": cfg.block_m, "WGS": cfg.warpgroups, "STAGES": cfg.stages, "WBUF": cfg.weight_tiles,
               "GROUP": group, "ASYM": int(asym), "HALF": int(half), "DEPTH": cfg.depth, "TMA": int(cfg.tma),
               "PROBE": cfg.probe}
    head = "".join(f"#define {k} {v}\n" for k, v in defines.items())
    body = resources.files("quantlab.kernels").joinpath("w4a16_wgmma.cu").read_text()
    marker = "struct Tile {"
    return head + body.replace(marker, _mma_step(cfg.block_m, half) + "\n" + marker, 1)


def _check_nvrtc(result, prog=None) -> None:
    from cuda.bindings import nvrtc

    err = result[0] if isinstance(result, tuple) else result
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        log = _log(prog) if prog is not None else ""
        raise QuantlabError(f"NVRTC failed ({err}): {log}")


def _log(prog) -> str:
    from cuda.bindings import nvrtc

    _, size = nvrtc.nvrtcGetProgramLogSize(prog)
    buf = b" " * size
    nvrtc.nvrtcGetProgramLog(prog, buf)
    return buf.decode(errors="replace").strip("\x00 \n")


def compile_cubin(cfg: CudaConfig, group: int, asym: bool, half: bool, verbose: bool = False) -> tuple[bytes, str]:
    """(cubin, NVRTC/ptxas log) for one configuration; `verbose` asks ptxas for registers and spills."""
    from cuda.bindings import nvrtc

    text = source(cfg, group, asym, half).encode()
    err, prog = nvrtc.nvrtcCreateProgram(text, b"w4a16_wgmma.cu", 0, [], [])
    _check_nvrtc(err)
    opts = [f"--gpu-architecture={ARCH}".encode(), b"--std=c++17", b"-default-device"]
    if verbose:
        opts.append(b"--ptxas-options=-v")
    result = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
    log = _log(prog)
    _check_nvrtc(result, prog)
    _, size = nvrtc.nvrtcGetCUBINSize(prog)
    cubin = b" " * size
    nvrtc.nvrtcGetCUBIN(prog, cubin)
    nvrtc.nvrtcDestroyProgram(prog)
    return cubin, log


def _check_cu(result):
    from cuda.bindings import driver

    err, *rest = result if isinstance(result, tuple) else (result,)
    if err != driver.CUresult.CUDA_SUCCESS:
        raise QuantlabError(f"CUDA driver call failed: {err}")
    return rest[0] if len(rest) == 1 else rest


@functools.cache
def _kernel(cfg: CudaConfig, group: int, asym: bool, half: bool, device_index: int):
    from cuda.bindings import driver

    torch.cuda.init()
    with torch.cuda.device(device_index):
        torch.empty(1, device="cuda")  # the runtime makes the device's primary context current
        cubin, _ = compile_cubin(cfg, group, asym, half)
        module = _check_cu(driver.cuModuleLoadData(cubin))
        fn = _check_cu(driver.cuModuleGetFunction(module, b"w4a16_wgmma"))
        _check_cu(driver.cuFuncSetAttribute(
            fn, driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, cfg.shared_bytes))
    return module, fn


@functools.cache
def available(device: torch.device) -> bool:
    """A Hopper card (compute capability 9.0) with the driver bindings and NVRTC importable."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    if torch.cuda.get_device_capability(device) != (9, 0):
        return False
    try:
        from cuda.bindings import driver, nvrtc  # noqa: F401

        return nvrtc.nvrtcVersion()[0] == nvrtc.nvrtcResult.NVRTC_SUCCESS
    except (ImportError, RuntimeError, OSError):  # no bindings, or no libnvrtc to load
        return False


def supports(x: torch.Tensor, layer: PackedLinear) -> bool:
    """Whether this kernel computes x @ W.T for this layer (else the Triton kernels do)."""
    group_ok = layer.groups == 1 or (layer.group_size % 64 == 0)
    return (layer.num_bits == 4 and group_ok and layer.in_features % 8 == 0
            and x.dtype in (torch.bfloat16, torch.float16) and layer.scale.dtype == x.dtype
            and available(x.device))


def cuda_words(words: torch.Tensor) -> torch.Tensor:
    """Interleaved 4-bit words [N, tiles·32] -> the kernel's order: within each tile, word
    c = 16·j2 + 8·jj + 4·b + tig moves to 16·j2 + 4·tig + 2·jj + b, so that lane tig of a warp reads
    the words of its wgmma A fragments (c = 8j + tig and 8j + 4 + tig, j = 2·j2 + jj) as two 16-byte
    vectors, and four lanes read a row's 64 bytes together."""
    n = words.shape[0]
    return words.view(n, -1, 2, 2, 2, 4).permute(0, 1, 2, 5, 3, 4).reshape(n, -1).contiguous()


_WORDS: weakref.WeakKeyDictionary[PackedLinear, torch.Tensor] = weakref.WeakKeyDictionary()


def _words_of(layer: PackedLinear) -> torch.Tensor:
    """The layer's words in the kernel's order, made once per layer and kept while the layer lives."""
    words = _WORDS.get(layer)
    if words is None:
        words = _WORDS[layer] = cuda_words(layer.words)
    return words


@functools.cache
def multiprocessors(device: torch.device) -> int:
    """The card's multiprocessors (132 on an H200), which decide the K split."""
    return torch.cuda.get_device_properties(device).multi_processor_count


# v10 tuning on the H200 (bench/NOTES.md): this kernel beats the Triton kernels and dequantize-then-
# cuBLAS above M = 128 on all five benchmark shapes (M = 256: 0.64-0.81x bf16 against 0.42-0.67x),
# and from M = 65 when the layer has at least 8192 outputs (M = 128: 0.80-0.84x against 0.63-0.75x;
# with 4096 outputs Triton's split kernel wins there). From M = 1024 cuBLAS on the dequantized
# weight wins again (0.75-0.94x against 0.64-0.76x).
FIRST_M, FIRST_M_WIDE, LAST_M, WIDE_N = 129, 65, 256, 8192


def preferred(m: int, layer: PackedLinear) -> bool:
    """Whether M rows of x run faster here than on the Triton paths (measured; see above)."""
    return (FIRST_M_WIDE if layer.out_features >= WIDE_N else FIRST_M) <= m <= LAST_M


def default_config(m: int, layer: PackedLinear) -> CudaConfig:
    """The launch the v10 tuning picked for M rows of x (bench/gpu_matmul.py --tune, `cuda_variants`):
    one-warpgroup programs, two or three to a multiprocessor, except where two warpgroups sharing one
    x tile won (M = 129-256 with 4096 outputs; M <= 128 with K <= 4096); K split in two where the
    programs would not fill the card twice over."""
    n, k = layer.out_features, layer.in_features
    sms = multiprocessors(layer.device)
    if m > LAST_M:
        return CudaConfig(block_m=256, warpgroups=2, stages=3, weight_tiles=2)
    if m > 128:
        if n >= WIDE_N:
            return CudaConfig(block_m=256, warpgroups=1, stages=3, weight_tiles=2,
                              split_k=2 if -(-n // 64) < 1.5 * sms else 1)
        return CudaConfig(block_m=128, warpgroups=2, stages=6, weight_tiles=3, split_k=2)
    block_m = next(t for t in TOKENS if t >= m)
    if m > 64 and k <= 4096:
        return CudaConfig(block_m=block_m, warpgroups=2, stages=4, weight_tiles=3)
    tiles = -(-n // 64)
    split = 1
    while split < 8 and tiles * split < 2 * sms and k // TILE_K >= 8 * split:
        split *= 2
    return CudaConfig(block_m=block_m, warpgroups=1, stages=6 if block_m <= 64 else 4, weight_tiles=3, split_k=split)


_WORKSPACES: dict[tuple[torch.device, str], torch.Tensor] = {}


def _workspace(device: torch.device, kind: str, numel: int, dtype: torch.dtype) -> torch.Tensor:
    buf = _WORKSPACES.get((device, kind))
    if buf is None or buf.numel() < numel:
        buf = torch.zeros(max(numel, 1 << 16), dtype=dtype, device=device)
        _WORKSPACES[(device, kind)] = buf
    return buf


def matmul(x: torch.Tensor, layer: PackedLinear, config: CudaConfig | None = None,
           out: torch.Tensor | None = None) -> torch.Tensor:
    """y = x @ W.T through the wgmma kernel; `supports(x, layer)` must hold."""
    from cuda.bindings import driver

    if not supports(x, layer):
        raise QuantlabError("the wgmma kernel takes 4-bit weights in groups of 64·k (or per channel), "
                            "16-bit activations and K a multiple of 8, on a Hopper card")
    lead = x.shape[:-1]
    x2 = x.reshape(-1, layer.in_features)
    if x2.stride(-1) != 1 or x2.stride(0) % 8 or x2.data_ptr() % 16:
        x2 = x2.contiguous()
    m, n = x2.shape[0], layer.out_features
    y = out if out is not None else torch.empty(*lead, n, dtype=x.dtype, device=x.device)
    y2 = y.view(-1, n)
    if m == 0:
        return y
    cfg = config or default_config(m, layer)
    words = _words_of(layer)
    tiles_k = words.shape[1] // 32
    group = 0 if layer.groups == 1 else layer.group_size
    # the split is a run-time argument: one compiled kernel serves every split
    _, fn = _kernel(dataclasses.replace(cfg, split_k=1), group, not layer.symmetric, x.dtype == torch.float16,
                    x.device.index or 0)
    grid = (-(-n // cfg.block_n), -(-m // cfg.block_m), cfg.split_k)
    partials = _workspace(x.device, "partials", cfg.split_k * grid[0] * grid[1] * cfg.block_n * cfg.block_m,
                          torch.float32)
    counters = _workspace(x.device, "counters", grid[0] * grid[1], torch.int32)
    args = [ctypes.c_void_p(t.data_ptr()) for t in (x2, words, layer.scale, layer.bias, y2, partials, counters)]
    args += [ctypes.c_int(v) for v in (m, n, layer.in_features, tiles_k, layer.groups, x2.stride(0), y2.stride(0),
                                        cfg.split_k)]
    args.append(_x_map(x2, cfg.block_m) if cfg.tma else _TensorMap())
    params = (ctypes.c_void_p * len(args))(*[ctypes.addressof(a) for a in args])
    stream = driver.CUstream(torch.cuda.current_stream(x.device).cuda_stream)
    _check_cu(driver.cuLaunchKernel(fn, *grid, cfg.threads, 1, 1, cfg.shared_bytes, stream, ctypes.addressof(params),
                                    0))
    return y


class _TensorMap(ctypes.Structure):
    """CUtensorMap's 128 bytes, passed by value (the kernel's `__grid_constant__ TensorMap`)."""

    _fields_ = [("opaque", ctypes.c_uint64 * 16)]


def _x_map(x2: torch.Tensor, block_m: int) -> _TensorMap:
    """The copy engine's map of x [M, K]: boxes of 64 inputs (128 bytes) by block_m rows, 128-byte
    swizzled, zeros outside x."""
    from cuda.bindings import driver

    m, k = x2.shape
    dtype = (driver.CUtensorMapDataType.CU_TENSOR_MAP_DATA_TYPE_FLOAT16 if x2.dtype == torch.float16
             else driver.CUtensorMapDataType.CU_TENSOR_MAP_DATA_TYPE_BFLOAT16)
    u32, u64 = driver.cuuint32_t, driver.cuuint64_t
    tmap = _check_cu(driver.cuTensorMapEncodeTiled(
        dtype, u32(2), x2.data_ptr(), [u64(k), u64(m)], [u64(x2.stride(0) * x2.element_size())],
        [u32(64), u32(block_m)], [u32(1), u32(1)],
        driver.CUtensorMapInterleave.CU_TENSOR_MAP_INTERLEAVE_NONE,
        driver.CUtensorMapSwizzle.CU_TENSOR_MAP_SWIZZLE_128B,
        driver.CUtensorMapL2promotion.CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
        driver.CUtensorMapFloatOOBfill.CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE))
    out = _TensorMap()
    ctypes.memmove(ctypes.addressof(out), tmap.getPtr(), ctypes.sizeof(out))
    return out
