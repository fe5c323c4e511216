"""Predict-then-reveal checks: a question about the tensor on screen, graded by measuring it.

Every check is computed from the live tensor (or the committed GPU run, a shipped config, or the
result the lesson has just computed and cached) when it is asked, never looked up in a stored key,
so it stays right when the learner picks another layer, tensor or bit width. A check carries its
question, the options, the option the measurement makes right and a one-line reason with the
numbers; `None` means the question does not apply to this tensor (a group size that does not
divide it, weights-only data for an activation question).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from quantlab.core import blocks, metrics
from quantlab.core.errors import QuantlabError
from quantlab.core.qparams import QuantizedTensor, calculate_qparams, quantize_with
from quantlab.core.quantize import fake_quantize, quantize
from quantlab.core.spec import QuantSpec, label
from quantlab.io import sizing
from quantlab.lessons import choose, compare, gptq, intro, kv_cache, speed

TIE_DB = 0.5  # differences smaller than this are "about the same": below run-to-run interest


@dataclass(frozen=True)
class Check:
    """One question. `key` names the question and the data it was asked on, so a new layer or
    bit width is a new question; `topic` is the question alone (the room tally counts by it)."""

    topic: str
    key: str
    question: str
    options: tuple[str, ...]
    answer: str
    why: str

    def is_right(self, choice: str) -> bool:
        return choice == self.answer


def _sqnr(x: torch.Tensor, spec: QuantSpec) -> float:
    return metrics.sqnr_db(x, fake_quantize(x, spec))


def _winner(a: float, b: float, options: tuple[str, str, str]) -> str:
    """options[0] when `a` is higher by at least TIE_DB, options[1] when `b` is, else options[2]."""
    return options[2] if abs(a - b) < TIE_DB else options[0] if a > b else options[1]


def _band(value: float, low: float, high: float, options: tuple[str, str, str]) -> str:
    """options[0] below `low`, options[1] up to `high`, options[2] above it."""
    return options[0] if value < low else options[1] if value <= high else options[2]


def _clipped(x: torch.Tensor, spec: QuantSpec, ratio: float) -> QuantizedTensor:
    """`x` quantized with one scale for `ratio` × its min-max range: values beyond it saturate."""
    lo, hi = torch.aminmax(x)
    scale, zp = calculate_qparams(ratio * lo.reshape(1), ratio * hi.reshape(1), spec)
    return quantize_with(x, scale, zp, spec)


def _signature(x: torch.Tensor) -> str:
    """A short fingerprint of the data a check was asked on (shape and two moments)."""
    xf = x.float()
    return f"{tuple(x.shape)}:{xf.abs().mean().item():.6g}:{xf.abs().max().item():.6g}"


def _usable(x: torch.Tensor) -> bool:
    return x.numel() > 0 and bool(torch.isfinite(x).all()) and bool((x != 0).any())


# -- precision formats --------------------------------------------------------------------------

GRANULARITY_WORDS = {"tensor": "one scale for the whole tensor", "channel": "one scale per output channel",
                     "token": "one scale per token"}


def int8_or_fp8(x: torch.Tensor, strategy: str = "tensor") -> Check | None:
    """INT8 against FP8 E4M3 on this tensor at one granularity: which keeps more signal?"""
    if not _usable(x) or (strategy != "tensor" and x.ndim != 2):
        return None
    int8 = _sqnr(x, QuantSpec(num_bits=8, strategy=strategy))  # type: ignore[arg-type]
    fp8 = _sqnr(x, QuantSpec(num_bits=8, type="float", strategy=strategy))  # type: ignore[arg-type]
    options = ("INT8", "FP8 E4M3", "about the same")
    answer = _winner(int8, fp8, options)
    why = (f"INT8 {int8:.1f} dB, FP8 {fp8:.1f} dB: FP8 spends its levels logarithmically, so it wins when most values "
           "are small next to the largest; INT8's even grid wins when they are spread across the range.")
    return Check(f"int8-or-fp8:{strategy}", f"int8-or-fp8:{strategy}:{_signature(x)}",
                 f"8 bits, {GRANULARITY_WORDS[strategy]}: which grid keeps more of this tensor (higher SQNR)?",
                 options, answer, why)


def int4_levels_used(x: torch.Tensor) -> Check | None:
    """How many of INT4's 16 codes a per-tensor scale actually uses on this tensor."""
    if not _usable(x):
        return None
    qt = quantize(x, QuantSpec(num_bits=4))
    used = int(torch.unique(qt.q).numel())
    options = ("all 16", "12 to 15", "fewer than 12")
    answer = options[0] if used == 16 else options[1] if used >= 12 else options[2]
    why = (f"{used} of 16 codes occur: a per-tensor symmetric scale is set by the largest |value|, and codes "
           "between the data and that extreme stay empty.")
    return Check("int4-levels", f"int4-levels:{_signature(x)}",
                 "INT4, one symmetric scale for the whole tensor: how many of the 16 codes does this tensor use?",
                 options, answer, why)


# -- symmetric vs asymmetric ----------------------------------------------------------------------

def symmetric_or_asymmetric(x: torch.Tensor, bits: int) -> Check | None:
    if not _usable(x):
        return None
    sym = _sqnr(x, QuantSpec(num_bits=bits))
    asym = _sqnr(x, QuantSpec(num_bits=bits, symmetric=False))
    options = ("symmetric", "asymmetric", f"within {TIE_DB} dB")
    answer = _winner(sym, asym, options)
    lo, hi = x.min().item(), x.max().item()
    why = (f"symmetric {sym:.1f} dB, asymmetric {asym:.1f} dB on values in [{lo:.3g}, {hi:.3g}]: the zero point pays "
           "off when the range is lopsided around 0.")
    return Check("sym-or-asym", f"sym-or-asym:{bits}:{_signature(x)}",
                 f"{bits} bits, one scale for the whole tensor: which grid wins here?", options, answer, why)


def asymmetric_gain(x: torch.Tensor, bits: int) -> Check | None:
    if not _usable(x):
        return None
    gain = _sqnr(x, QuantSpec(num_bits=bits, symmetric=False)) - _sqnr(x, QuantSpec(num_bits=bits))
    options = ("less than 1 dB", "1 to 3 dB", "more than 3 dB")
    answer = _band(gain, 1, 3, options)
    why = (f"the zero point buys {gain:+.2f} dB here; one extra bit would buy about 6 dB, so a lopsided range can "
           "be worth most of a bit.")
    return Check("asym-gain", f"asym-gain:{bits}:{_signature(x)}",
                 f"How much does the zero point gain over the symmetric grid at {bits} bits on this tensor?",
                 options, answer, why)


# -- granularity --------------------------------------------------------------------------------

def g64_beats_g128(w: torch.Tensor) -> Check | None:
    """Whether halving the group size buys more than 1 dB on this weight at INT4."""
    if w.ndim != 2 or w.shape[1] % 128 or not _usable(w):
        return None
    g64 = _sqnr(w, QuantSpec(num_bits=4, strategy="group", group_size=64))
    g128 = _sqnr(w, QuantSpec(num_bits=4, strategy="group", group_size=128))
    options = ("yes, by more than 1 dB", "no, 1 dB or less")
    answer = options[0] if g64 - g128 > 1 else options[1]
    why = (f"g64 {g64:.2f} dB against g128 {g128:.2f} dB ({g64 - g128:+.2f} dB), for twice the scales: smaller "
           "groups help most where a few large weights share a group with many small ones.")
    return Check("g64-vs-g128", f"g64-vs-g128:{_signature(w)}",
                 "INT4 weights: will groups of 64 beat groups of 128 by more than 1 dB on this matrix?",
                 options, answer, why)


def channel_gain_over_tensor(w: torch.Tensor) -> Check | None:
    if w.ndim != 2 or not _usable(w):
        return None
    gain = _sqnr(w, QuantSpec(num_bits=4, strategy="channel")) - _sqnr(w, QuantSpec(num_bits=4))
    options = ("less than 3 dB", "3 to 10 dB", "more than 10 dB")
    answer = _band(gain, 3, 10, options)
    why = (f"one scale per output row instead of one for the matrix: {gain:+.1f} dB; rows whose largest weight is "
           "far below the matrix's largest gain the most.")
    return Check("channel-vs-tensor", f"channel-vs-tensor:{_signature(w)}",
                 "INT4: how much does a scale per output channel gain over one scale for the whole matrix?",
                 options, answer, why)


# -- storage ------------------------------------------------------------------------------------

def stored_bits_at_g128(w: torch.Tensor, scale_bits: int | None = None) -> Check | None:
    """Bits per weight of INT4 g128 with scales in the weight's own dtype (compressed-tensors keeps
    them there), from the real layout."""
    if w.ndim != 2 or w.shape[1] % 128 or not torch.is_floating_point(w):
        return None
    scale_bits = scale_bits or torch.finfo(w.dtype).bits
    spec = QuantSpec(num_bits=4, strategy="group", group_size=128)
    bits = spec.num_bits + blocks.num_scales(spec, tuple(w.shape)) * scale_bits / w.numel()
    options = ("exactly 4", "between 4 and 4.2", "more than 4.2")
    answer = options[0] if bits == 4 else options[1] if bits <= 4.2 else options[2]
    why = (f"{bits:.3f} bits: 4 for the code plus one {scale_bits}-bit scale shared by 128 weights "
           f"({scale_bits}/128 = {scale_bits / 128:.3f}); the scale is stored in the model's own dtype.")
    return Check("g128-bits", f"g128-bits:{tuple(w.shape)}:{scale_bits}",
                 "W4A16 g128 on this layer: how many bits does each weight really take on disk?",
                 options, answer, why)


def kept_share(rep: sizing.SizeReport) -> Check:
    """How much of the whole file is tensors no scheme touches: why a "4-bit" file is not 4 bits."""
    kept = sum(t.nbytes for t in rep.tensors if t.kind not in sizing.QUANTIZED_KINDS)
    share = kept / rep.total_bytes
    options = ("less than 20 %", "20 % to 50 %", "more than 50 %")
    answer = _band(share, 0.2, 0.5, options)
    why = (f"{sizing.format_bytes(kept)} of {sizing.format_bytes(rep.total_bytes)} ({share:.0%}) stay in their "
           "original dtype: embeddings, lm_head, norms and biases are not quantized, and the fewer the layers "
           "beside the vocabulary's tables, the larger their share.")
    return Check("kept-share", f"kept-share:{rep.label}:{rep.spec.to_url()}:{rep.total_bytes}",
                 f"{rep.label} at {rep.spec.label}: what share of the file stays unquantized (embeddings, lm_head, "
                 "norms, biases)?", options, answer, why)


# -- clipping -----------------------------------------------------------------------------------

def _clipped_sqnr(x: torch.Tensor, spec: QuantSpec, ratio: float) -> float:
    return metrics.sqnr_db(x, _clipped(x, spec, ratio).dequantize())


def clipping_helps(x: torch.Tensor, bits: int) -> Check | None:
    """Whether some clipping ratio below 1 beats the full min-max range by more than the tie."""
    if not _usable(x):
        return None
    spec = QuantSpec(num_bits=bits)
    ratios = [1 - i / 50 for i in range(40)]
    scores = [_clipped_sqnr(x, spec, r) for r in ratios]
    best = max(range(len(ratios)), key=scores.__getitem__)
    options = ("yes, by more than 0.5 dB", "no: the full range is about as good")
    answer = options[0] if scores[best] - scores[0] > TIE_DB else options[1]
    why = (f"best ratio {ratios[best]:.2f} at {scores[best]:.2f} dB against {scores[0]:.2f} dB with the full range: "
           "clipping pays when a few extreme values stretch a grid that everything else needs finer.")
    return Check("clipping-helps", f"clipping-helps:{bits}:{_signature(x)}",
                 f"INT{bits}, one scale: does clipping the range (saturating the extremes) beat min-max here?",
                 options, answer, why)


def saturated_share(x: torch.Tensor, ratio: float = 0.8) -> Check | None:
    if not _usable(x):
        return None
    spec = QuantSpec(num_bits=8)
    share = metrics.clipped_fraction(x, _clipped(x, spec, ratio))
    options = ("less than 0.1 %", "0.1 % to 1 %", "more than 1 %")
    answer = _band(share, 1e-3, 1e-2, options)
    why = (f"{share:.3%} of the values lie beyond {ratio:.0%} of the largest |value| and saturate: heavy tails are "
           "rare, which is why clipping them can be cheap.")
    return Check("saturated-share", f"saturated-share:{ratio}:{_signature(x)}",
                 f"INT8 with the range cut to {ratio:.0%} of min-max: what share of this tensor's values saturate?",
                 options, answer, why)


# -- outliers -----------------------------------------------------------------------------------

def outlier_channel(x: torch.Tensor) -> Check | None:
    """Whether one input channel's max |value| is more than 10x the median channel's."""
    if x.ndim != 2 or not _usable(x):
        return None
    per_channel = x.abs().amax(dim=0).float()
    ratio = (per_channel.max() / per_channel.median().clamp_min(torch.finfo(torch.float32).tiny)).item()
    options = ("yes, more than 10x", "no, 10x or less")
    answer = options[0] if ratio > 10 else options[1]
    worst = int(per_channel.argmax())
    why = (f"channel {worst}'s largest |value| is {ratio:.1f}x the median channel's: one per-tensor activation scale "
           "must cover it, so every other channel gets a coarse grid.")
    return Check("outlier-channel", f"outlier-channel:{_signature(x)}",
                 "In this layer's real input, is any channel's largest value more than 10x the median channel's?",
                 options, answer, why)


def w8a8_weaker_side(w: torch.Tensor, x: torch.Tensor) -> Check | None:
    """Under W8A8 with a per-tensor activation scale, which side loses more of the layer output."""
    if w.ndim != 2 or x.ndim != 2 or x.shape[1] != w.shape[1] or not (_usable(w) and _usable(x)):
        return None
    y = x.float() @ w.float().T
    weight_only = metrics.sqnr_db(y, x.float() @ fake_quantize(w, QuantSpec(num_bits=8, strategy="channel")).float().T)
    act_only = metrics.sqnr_db(y, fake_quantize(x, QuantSpec(num_bits=8)).float() @ w.float().T)
    options = ("the weights", "the activations", "about the same")
    answer = _winner(act_only, weight_only, options)  # the side whose error leaves less signal
    why = (f"quantizing only the weights (per channel) keeps {weight_only:.1f} dB of the output, only the activations "
           f"(per tensor) {act_only:.1f} dB.")
    return Check("w8a8-side", f"w8a8-side:{_signature(w)}:{_signature(x)}",
                 "W8A8 with one activation scale per tensor: which side costs this layer's output more?",
                 options, answer, why)


# -- KV cache and speed (shipped configs, real keys and values, the committed GPU run) ----------

def kv_larger_than_weights(arch_name: str, tokens: int, batch: int) -> Check:
    arch = kv_cache.architecture(arch_name)
    kv = kv_cache.kv_bytes(arch, tokens, batch).total
    weights = kv_cache.weight_bytes(arch_name, "bf16")
    options = ("yes", "no")
    answer = options[0] if kv > weights else options[1]
    why = (f"bf16 KV cache {kv / 1e9:.1f} GB against {weights / 1e9:.1f} GB of bf16 weights: the cache grows with "
           "context × batch, the weights do not.")
    return Check("kv-vs-weights", f"kv-vs-weights:{arch_name}:{tokens}:{batch}",
                 f"{arch.name}, {tokens:,} tokens of context, batch {batch}: is the bf16 KV cache larger than the "
                 "weights?", options, answer, why)


# At INT8 per-tensor MiniLM's K and V lose about the same as tensors and very differently in the output.
KV_HALF_SCHEME = kv_cache.kv_label(kv_cache.kv_spec("INT8", "tensor"))


def kv_costlier_half(errors: Mapping[str, kv_cache.KVError], scheme: str = KV_HALF_SCHEME) -> Check | None:
    """Which half of the cache, quantized alone, leaves the attention output less signal."""
    if scheme not in errors:
        return None
    e = errors[scheme]
    k_only, v_only = e.out_sqnr_db["k"], e.out_sqnr_db["v"]
    options = ("the keys", "the values", "about the same")
    answer = _winner(v_only, k_only, options)  # the half whose quantization leaves the output more signal is cheaper
    why = (f"as tensors K keeps {e.k_sqnr_db:.1f} dB and V {e.v_sqnr_db:.1f} dB; the output keeps {k_only:.1f} dB "
           f"with only K quantized and {v_only:.1f} dB with only V: a key error reaches the output only through the "
           "softmax weights it shifts, a value error directly through the weighted sum.")
    return Check("kv-half", f"kv-half:{scheme}:{e.k_sqnr_db:.4f}:{e.v_sqnr_db:.4f}",
                 f"{scheme} on the real keys and values: which half of the cache, quantized on its own, costs the "
                 "attention output more?", options, answer, why)


def int4_faster_at(res: speed.Results, m: int) -> Check:
    if m not in res.batch_sizes:
        raise QuantlabError(f"the run {res.name} has no batch {m}; it measured {res.batch_sizes}")
    gain = res.geomean_speedup(m, "w4a16")
    if gain is None:
        raise QuantlabError(f"the run {res.name} has no W4A16 timing at batch {m}")
    options = ("faster than bf16", "slower than bf16")
    answer = options[0] if gain > 1 else options[1]
    why = (f"{gain:.2f}x bf16 cuBLAS (geomean over the run's shapes) on {res.meta.get('card', 'the GPU')}: at small "
           "batch the weights' bytes decide, at large batch the matmul's FLOPs do.")
    return Check("int4-speed", f"int4-speed:{res.name}:{m}",
                 f"On the committed GPU run, batch {m}: is quantlab's W4A16 kernel faster or slower than bf16?",
                 options, answer, why)


# -- what if: graded on the numbers the lesson has just measured ----------------------------------

def best_of(scores: dict[str, float], measured: str, where: str) -> Check | None:
    """Which of the picked schemes scores highest on `measured` (at least two to choose from)."""
    if len(scores) < 2:
        return None
    ranked = sorted(scores.items(), key=lambda item: item[1], reverse=True)
    (best, top), (second, runner_up) = ranked[0], ranked[1]
    why = f"{best} {top:.1f} dB, then {second} {runner_up:.1f} dB ({measured}, {where})."
    return Check("best-of-picked", f"best-of-picked:{where}:{sorted(scores.items())}",
                 f"Of the schemes you picked, which keeps the most of {where} ({measured})?",
                 tuple(scores), best, why)


def checkpoint_ratio(sizes: Mapping[str, compare.CheckpointSize], model: str) -> Check | None:
    """How many times the smallest of the picked checkpoints the largest one is (different sizes)."""
    if len({v.total_bytes for v in sizes.values()}) < 2:
        return None
    small = min(sizes, key=lambda s: sizes[s].total_bytes)
    large = max(sizes, key=lambda s: sizes[s].total_bytes)
    small_bytes, large_bytes = sizes[small].total_bytes, sizes[large].total_bytes
    ratio = large_bytes / small_bytes
    options = ("less than 1.25x", "1.25x to 1.75x", "more than 1.75x")
    answer = _band(ratio, 1.25, 1.75, options)
    why = (f"{label(large)} {sizing.format_bytes(large_bytes)} against {label(small)} "
           f"{sizing.format_bytes(small_bytes)}: {ratio:.2f}x. The tensors no scheme quantizes (embeddings, lm_head, "
           "norms) weigh the same in both files, so the file shrinks less than the codes do.")
    return Check("checkpoint-ratio", f"checkpoint-ratio:{model}:{sorted((s, v.total_bytes) for s, v in sizes.items())}",
                 f"The whole {model} checkpoint: how many times the {label(small)} file is the {label(large)} one?",
                 options, answer, why)


# -- GPTQ: graded on the study the lesson has just run --------------------------------------------

GPTQ_MARGIN_DB = 2.0  # a gain worth a calibration pass; below it RTN is as good in practice


def gptq_beats_rtn(study: gptq.LayerStudy, calibration: str, eval_kind: str) -> Check | None:
    """GPTQ's output gain over RTN on the evaluation text: none, below the margin, or above it."""
    if study.rtn_fallback:  # GPTQ did not run: its result is RTN's
        return None
    fitted = "every other text" if calibration == gptq.OTHERS else f"the {calibration} text"
    judged = "the same text" if calibration == eval_kind else "held-out text"
    margin = f"{GPTQ_MARGIN_DB:g} dB"
    options = ("no better than RTN", f"better, by up to {margin}", f"better, by more than {margin}")
    gain = study.gain_db
    answer = options[0] if gain <= 0 else options[1] if gain <= GPTQ_MARGIN_DB else options[2]
    why = (f"RTN {study.rtn_output_db:.1f} dB, GPTQ {study.gptq_output_db:.1f} dB ({gain:+.1f} dB), with the "
           f"Hessian from {study.calibration_tokens:,} tokens: GPTQ gains as far as its calibration inputs describe "
           "the ones it is judged on.")
    return Check("gptq-gain", f"gptq-gain:{calibration}:{eval_kind}:{study.rtn_output_db:.4f}:"
                              f"{study.gptq_output_db:.4f}",
                 f"GPTQ fitted on {fitted}, judged on {eval_kind} text ({judged}): how does it do against "
                 "round-to-nearest on this layer's output?", options, answer, why)


def gptq_weight_error(study: gptq.LayerStudy) -> Check:
    """Whose quantized weights are closer to the original: GPTQ optimises the output, not the weights."""
    options = ("GPTQ's", "RTN's", "about the same")
    answer = _winner(study.gptq_weight_db, study.rtn_weight_db, options)
    why = (f"weight SQNR: RTN {study.rtn_weight_db:.1f} dB, GPTQ {study.gptq_weight_db:.1f} dB, while GPTQ moves the "
           f"layer output by {study.gain_db:+.1f} dB: RTN takes each weight's nearest code, GPTQ moves weights off it "
           "so that their errors cancel in X·Wᵀ.")
    return Check("gptq-weights", f"gptq-weights:{study.rtn_weight_db:.4f}:{study.gptq_weight_db:.4f}",
                 "Same grid, same layer: whose quantized weights are closer to the original ones (higher weight "
                 "SQNR), GPTQ's or round-to-nearest's?", options, answer, why)


# -- choosing a scheme: the committed GPU run, the deployment's memory ----------------------------

def fastest_kernel(res: speed.Results, m: int) -> Check | None:
    """Which timed scheme runs fastest against bf16 at the measured batch nearest `m`."""
    gains = {label(slug): g for slug, g in choose.speedups(res, m).items() if g is not None}
    if not gains:
        return None
    timed = choose.nearest_batch(res, m)
    best = max(gains, key=gains.__getitem__)
    options = (*gains, "none: bf16 is fastest")
    answer = best if gains[best] > 1 else options[-1]
    why = ("against bf16, geomean over the run's shapes: " + ", ".join(f"{name} {g:.2f}x" for name, g in gains.items())
           + ". At small batch the weight bytes decide, at large batch the arithmetic does, and FP8 tensor cores have "
           "the higher rate.")
    where = f"batch {timed}" + ("" if timed == m else f" (the timed batch nearest your {m})")
    return Check("fastest-kernel", f"fastest-kernel:{res.name}:{timed}",
                 f"On the committed {res.meta.get('card', 'GPU')} run at {where}: which scheme's kernel is fastest "
                 "against bf16?", options, answer, why)


def weights_or_kv(mem: choose.Memory, scheme: str, scheme_bytes: int) -> Check:
    """Which saves more memory at this context and batch: bf16 weights to `scheme`, or a 16-bit KV
    cache to FP8."""
    by_weights, by_kv = mem.weights_bytes - scheme_bytes, mem.kv16_bytes - mem.kv8_bytes
    options = (f"the weights, bf16 to {scheme}", "the KV cache, 16 bits to FP8")
    answer = options[0] if by_weights >= by_kv else options[1]
    why = (f"{scheme} saves {sizing.format_bytes(by_weights)} of {sizing.format_bytes(mem.weights_bytes)} of weights; "
           f"an FP8 cache saves {sizing.format_bytes(by_kv)} of {sizing.format_bytes(mem.kv16_bytes)}: the cache "
           "grows with context × batch, the weights do not.")
    return Check("weights-or-kv", f"weights-or-kv:{mem.arch}:{mem.context}:{mem.batch}:{scheme}:{scheme_bytes}",
                 f"{mem.arch}, {mem.context:,} tokens × batch {mem.batch}: which saves more memory?",
                 options, answer, why)


# -- why and what: the eight weights quantized by hand --------------------------------------------

HAND_BITS = intro.HAND_SPEC.num_bits


def largest_code(h: intro.ByHand) -> Check | None:
    """The code the largest-magnitude of the eight gets: ±max|x| lands on ±7.5 (give or take float32's
    last bit, which decides a tie), and the codes are not symmetric."""
    if h.absmax == 0:
        return None
    big = max(h.steps, key=lambda s: abs(s.x))
    half_range = (h.qmax - h.qmin) / 2
    options = tuple(f"{c:+d}" for c in (h.qmin, h.qmin + 1, h.qmax, h.qmax + 1))
    clamped = f", clamped to {big.code:+d}" if big.code != big.rounded else ""
    why = (f"x ÷ s = {big.scaled:+.8g} in float32 rounds (half to even) to {big.rounded:+.0f}{clamped}: the codes "
           f"run from {h.qmin} to {h.qmax}, so a negative extreme gets the extra code {h.qmin} and a positive one is "
           f"cut to {h.qmax}.")
    return Check("hand-code", f"hand-code:{h.row}:{h.absmax:.6g}:{big.x:.6g}",
                 f"The largest of these eight weights is x = {big.x:+.5f}, and s = max|x| ÷ {half_range:g}. "
                 f"Which INT{HAND_BITS} code does it get?", options, f"{big.code:+d}", why)


def hand_sqnr(h: intro.ByHand) -> Check | None:
    """The SQNR of the eight values against the 6-dB-per-bit rule of thumb."""
    if not math.isfinite(h.sqnr_db):
        return None
    rule = round(HAND_BITS * choose.BIT_DB)
    options = ("below 20 dB", f"20 to {rule} dB", f"above {rule} dB")
    answer = _band(h.sqnr_db, 20, rule, options)
    why = (f"Σx² = {h.signal:.4g}, Σ(x − x̂)² = {h.noise:.4g}: 10·log₁₀ of their ratio is {h.sqnr_db:.1f} dB. About "
           f"6 dB per bit predicts {rule} dB at {HAND_BITS} bits; on eight values the rule is only a guide.")
    return Check("hand-sqnr", f"hand-sqnr:{h.row}:{h.signal:.6g}:{h.noise:.6g}",
                 f"What SQNR will these eight weights keep after INT{HAND_BITS} and back?", options, answer, why)
