"""The whole-model effect: quantize every Linear of the embedded MiniLM and compare it with fp32.

The model runs on shipped paraphrase pairs (quantlab/data/eval/paraphrases.tsv). Sentence embeddings
are mean-pooled over real tokens, as sentence-transformers does for all-MiniLM-L6-v2, and then
compared with the fp32 model's: cosine per sentence; the Spearman rank correlation of all pairwise
similarities (does the model still order pairs from "same meaning" to "unrelated" the way fp32 does);
and paraphrase retrieval among many distractors: each quantized sentence vector searches an index the
fp32 model built over the eval sentences plus every shipped calibration sentence, as when a quantized
query encoder is put in front of an existing index. (Whether each sentence's nearest neighbour among
the 64 stays the same, or is its paraphrase, is 100 % for every scheme here, even at cosine 0.4:
those metrics do not move, these do.) A heat map of per-Linear output SQNR shows which layers hurt
most, both on their own (fp32 input, the layer's own error) and in the running model (errors of
every earlier layer included).

Activations, when the spec quantizes them, are quantized on each Linear's input: dynamic
per-token scales are observed on the fly; static per-tensor scales are calibrated beforehand on
the Linear's fp32 inputs over a chosen calibration text. SmoothQuant divides the input of the
Linears fed by a LayerNorm (query/key/value share one s, intermediate.dense has its own) and
multiplies their weights. In a pre-LN LLM the 1/s folds into the LayerNorm for free; MiniLM is
post-LN (the LayerNorm output is also the residual), so here the division stays on the input.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from quantlab import data
from quantlab.core.errors import QuantlabError
from quantlab.core.observers import calibrate, observe
from quantlab.core.qparams import calculate_qparams, quantize_with
from quantlab.core.quantize import fake_quantize
from quantlab.core.spec import QuantSpec
from quantlab.io import models
from quantlab.lessons.outliers import smooth_scales

# The six Linears of a BERT block, in the order data flows through them: the heat map's columns.
BLOCK_LINEARS = ("attention.self.query", "attention.self.key", "attention.self.value",
                 "attention.output.dense", "intermediate.dense", "output.dense")
SHORT_NAMES = ("query", "key", "value", "attn out", "FFN up", "FFN down")
FP16_BYTES = 2


# The schemes the lesson offers, as registry slugs.
SCHEMES: tuple[str, ...] = ("w8a16", "w8a16-channel", "w4a16", "w4a16-channel", "w4a16-tensor", "w8a8", "w8a8-static")


def eval_pairs() -> list[tuple[str, str]]:
    pairs = []
    for line in data.resource("eval", "paraphrases.tsv").read_text().splitlines():
        if line.strip():
            a, b = line.split("\t")
            pairs.append((a.strip(), b.strip()))
    return pairs


def eval_sentences() -> list[str]:
    """Pairs flattened: sentence 2i's paraphrase is 2i + 1."""
    return [s for pair in eval_pairs() for s in pair]


def smoothing_groups(names: list[str]) -> dict[str, tuple[str, ...]]:
    """Linears fed by one LayerNorm, which must share one smoothing vector: {first: group}."""
    groups = {}
    for name in names:
        if name.endswith("attention.self.query"):
            prefix = name.removesuffix("query")
            groups[name] = (name, prefix + "key", prefix + "value")
        elif name.endswith("intermediate.dense"):
            groups[name] = (name,)
    return groups


@lru_cache(maxsize=1)
def reference() -> models.LinearTrace:
    """The fp32 model on the eval sentences, once per process."""
    model, tokenizer = models.embedded_model()
    return models.trace_linears(model, tokenizer, eval_sentences())


def distractor_sentences() -> list[str]:
    """Every shipped calibration sentence: the haystack in which paraphrases are retrieved."""
    return [s for kind in models.calibration_kinds() for s in models.sample_texts(kind)]


@lru_cache(maxsize=1)
def index() -> torch.Tensor:
    """Unit-length fp32 embeddings of the search corpus: the eval sentences, then the distractors."""
    model, tokenizer = models.embedded_model()
    extra = models.trace_linears(model, tokenizer, distractor_sentences(), keep_inputs=False, keep_outputs=False)
    return torch.nn.functional.normalize(torch.cat([reference().embeddings, extra.embeddings]).double(), dim=-1)


def pairwise_similarities(emb: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every unordered pair of sentences, [n(n−1)/2]."""
    e = torch.nn.functional.normalize(emb.double(), dim=-1)
    i, j = torch.triu_indices(len(e), len(e), offset=1)
    return (e[i] * e[j]).sum(dim=-1)


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's ρ: the Pearson correlation of the ranks (ties among float similarities are negligible)."""
    ra, rb = (torch.argsort(torch.argsort(t)).double() for t in (a, b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float(ra @ rb / (ra.norm() * rb.norm()))


def retrieval_recall(queries: torch.Tensor) -> float:
    """Share of eval sentences whose query vector finds its paraphrase first in the fp32 index,
    with the sentence's own entry removed (a search never has the query text in its index)."""
    corpus = index()
    n = len(queries)
    sim = torch.nn.functional.normalize(queries.double(), dim=-1) @ corpus.T
    sim[torch.arange(n), torch.arange(n)] = -math.inf
    return (sim.argmax(dim=1) == torch.arange(n) ^ 1).double().mean().item()


def _sqnr_db(ref: torch.Tensor, approx: torch.Tensor) -> float:
    """`metrics.sqnr_db` computed in float32: 72 large outputs per run make the float64 copies the
    slowest step, and layer-output SQNRs here (< 60 dB) are far above float32's rounding."""
    noise = torch.dist(ref, approx).item()
    if noise == 0:
        return math.inf
    return 20 * math.log10(ref.norm().item() / noise)


@dataclass(frozen=True, eq=False)
class LinearPlan:
    """How one Linear runs quantized: its weight to use, and what happens to its input."""

    weight: torch.Tensor  # dequantized (smoothed) weight, or the original when kept in 16-bit
    smooth: torch.Tensor | None  # divide the input by this first
    act_spec: QuantSpec | None
    static: tuple[torch.Tensor, torch.Tensor | None] | None  # calibrated (scale, zero point)

    def input(self, x: torch.Tensor) -> torch.Tensor:
        """What the quantized Linear multiplies: smoothed, then (fake-)quantized."""
        if self.smooth is not None:
            x = x / self.smooth
        if self.act_spec is None:
            return x
        flat = x.reshape(-1, x.shape[-1])
        # Inside the model the inputs are known to be finite 2-D floats, so the user-input checks
        # of `quantize` are skipped: they cost more than the quantization itself here.
        if self.static is not None:
            scale, zp = self.static
        else:
            scale, zp = calculate_qparams(*observe(flat, self.act_spec), self.act_spec)
        return quantize_with(flat, scale, zp, self.act_spec).dequantize().reshape(x.shape)


@torch.no_grad()
def plan(spec: QuantSpec, smooth_alpha: float | None = None, calibration: str = "general",
         keep_fp: tuple[str, ...] = ()) -> dict[str, LinearPlan]:
    """A quantization plan for every Linear of the embedded model."""
    model, _ = models.embedded_model()
    act = spec.activations
    if smooth_alpha is not None and act is None:
        raise QuantlabError("SmoothQuant moves difficulty from activations to weights: "
                            "pick a scheme that quantizes activations (W8A8)")
    needs_calib = act is not None and (not act.dynamic or smooth_alpha is not None)
    calib = models.activations(calibration) if needs_calib else {}
    modules = dict(model.named_modules())
    names = models.linear_names(model)
    unknown = [n for n in keep_fp if n not in names]
    if unknown:
        raise QuantlabError(f"no Linear named {unknown[0]!r} in the embedded model")
    smooth: dict[str, torch.Tensor] = {}
    if smooth_alpha is not None:
        for first, group in smoothing_groups(names).items():
            w_absmax = torch.stack([modules[n].weight.abs().amax(dim=0) for n in group]).amax(dim=0)
            s = smooth_scales(calib[first].abs().amax(dim=0), w_absmax, smooth_alpha)
            smooth.update({n: s for n in group})
    weight_spec = spec.with_(activations=None)
    plans = {}
    for name in names:
        w = modules[name].weight.detach()
        if name in keep_fp:
            plans[name] = LinearPlan(weight=w, smooth=None, act_spec=None, static=None)
            continue
        s = smooth.get(name)
        w_hat = fake_quantize(w if s is None else w * s, weight_spec)
        static = None
        if act is not None and not act.dynamic:
            c = calib[name] if s is None else calib[name] / s
            static = calibrate(c, act)
        plans[name] = LinearPlan(weight=w_hat, smooth=s, act_spec=act, static=static)
    return plans


@dataclass(frozen=True, eq=False)
class WholeModelResult:
    label: str
    layers: tuple[str, ...]
    cosine: np.ndarray  # per sentence, quantized vs fp32 embedding
    rank_correlation: float  # Spearman ρ of all pairwise similarities, quantized vs fp32
    retrieval_recall_fp32: float  # paraphrase found first among the distractors, fp32 queries
    retrieval_recall: float  # the same with the quantized model's queries
    distractors: int  # sentences in the index besides the eval set
    local_sqnr_db: np.ndarray  # per Linear, its own error on fp32 inputs
    running_sqnr_db: np.ndarray  # per Linear, output in the quantized model vs fp32
    weight_bytes: int  # every Linear's weights (16-bit kept layers included), scales excluded
    fp16_bytes: int
    seconds: float  # this run's compute; the fp32 reference is computed once per process, before

    @property
    def cosine_mean(self) -> float:
        return float(self.cosine.mean())

    @property
    def cosine_min(self) -> float:
        return float(self.cosine.min())

    @property
    def pairs(self) -> int:
        """Sentence pairs whose similarities `rank_correlation` compares."""
        return len(self.cosine) * (len(self.cosine) - 1) // 2

    def heatmap(self, which: str = "local") -> np.ndarray:
        """[blocks, 6] SQNR grid in BLOCK_LINEARS order (rows: encoder.layer.i)."""
        values = self.local_sqnr_db if which == "local" else self.running_sqnr_db
        by_name = dict(zip(self.layers, values))
        blocks = sorted({int(n.split(".")[2]) for n in self.layers})
        return np.array([[by_name[f"encoder.layer.{b}.{kind}"] for kind in BLOCK_LINEARS] for b in blocks])


def _describe(spec: QuantSpec, smooth_alpha: float | None, calibration: str, keep_fp: tuple[str, ...]) -> str:
    act = spec.activations
    if act is None:
        text = f"W {spec.label}, activations fp32"
    else:
        how = "dynamic" if act.dynamic else f"static, calibrated on {calibration}"
        text = f"W {spec.label}, A {act.label} ({how})"
    if smooth_alpha is not None:
        text += f", SmoothQuant α={smooth_alpha:g}"
    if keep_fp:
        text += f", {len(keep_fp)} layer(s) in 16-bit"
    return text


def run(spec: QuantSpec, smooth_alpha: float | None = None, calibration: str = "general",
        keep_fp: tuple[str, ...] = ()) -> WholeModelResult:
    """Quantize every Linear per `spec` and measure the model against fp32 (cached per process,
    one entry per run however its arguments are spelled: the warm-up and the pages share it)."""
    return _run(spec, smooth_alpha, calibration, tuple(keep_fp))


@lru_cache(maxsize=32)
@torch.no_grad()
def _run(spec: QuantSpec, smooth_alpha: float | None, calibration: str, keep_fp: tuple[str, ...]) -> WholeModelResult:
    ref = reference()
    index()  # built once per process, so `seconds` is what a change of scheme costs
    model, tokenizer = models.embedded_model()
    start = time.perf_counter()
    plans = plan(spec, smooth_alpha, calibration, keep_fp)
    with models.exclusive_transformers():  # never copy the model while another pass has hooks on it
        qmodel = copy.deepcopy(model)
    qmods = dict(qmodel.named_modules())
    for name, p in plans.items():
        qmods[name].weight.data = p.weight
    pre = {name: p.input for name, p in plans.items() if p.smooth is not None or p.act_spec is not None}
    out = models.trace_linears(qmodel, tokenizer, eval_sentences(), pre, keep_inputs=False)
    layers = tuple(plans)
    local = []
    for name in layers:
        y = torch.nn.functional.linear(plans[name].input(ref.inputs[name]), plans[name].weight)
        local.append(_sqnr_db(ref.outputs[name] - qmods[name].bias, y))
    running = [_sqnr_db(ref.outputs[n] - qmods[n].bias, out.outputs[n] - qmods[n].bias) for n in layers]
    cos = torch.nn.functional.cosine_similarity(out.embeddings.double(), ref.embeddings.double(), dim=-1)
    numel = {n: qmods[n].weight.numel() for n in layers}
    weight_bytes = sum(numel[n] * (FP16_BYTES if n in keep_fp else spec.num_bits / 8) for n in layers)
    return WholeModelResult(
        label=_describe(spec, smooth_alpha, calibration, keep_fp),
        layers=layers,
        cosine=cos.numpy(),
        rank_correlation=rank_correlation(pairwise_similarities(ref.embeddings), pairwise_similarities(out.embeddings)),
        retrieval_recall_fp32=retrieval_recall(ref.embeddings),
        retrieval_recall=retrieval_recall(out.embeddings),
        distractors=len(index()) - len(ref.embeddings),
        local_sqnr_db=np.array(local),
        running_sqnr_db=np.array(running),
        weight_bytes=int(weight_bytes),
        fp16_bytes=sum(numel.values()) * FP16_BYTES,
        seconds=time.perf_counter() - start,
    )


def worst_layers(result: WholeModelResult, k: int) -> tuple[str, ...]:
    """The k Linears with the lowest own-error SQNR: the first candidates to keep in 16-bit."""
    order = np.argsort(result.local_sqnr_db)
    return tuple(result.layers[i] for i in order[:k])


@dataclass(frozen=True, eq=False)
class KeepCurve:
    """Whole layers kept in 16-bit, worst first: what each step buys and costs."""

    ks: np.ndarray
    extra_bytes: np.ndarray  # over the all-quantized model
    cosine_mean: np.ndarray
    rank_correlation: np.ndarray


def keep_curve(spec: QuantSpec, smooth_alpha: float | None = None, calibration: str = "general",
               ks: tuple[int, ...] = (0, 1, 2, 4, 8)) -> KeepCurve:
    base = run(spec, smooth_alpha, calibration)
    runs = [run(spec, smooth_alpha, calibration, worst_layers(base, k)) for k in ks]
    return KeepCurve(ks=np.array(ks), extra_bytes=np.array([r.weight_bytes - base.weight_bytes for r in runs]),
                     cosine_mean=np.array([r.cosine_mean for r in runs]),
                     rank_correlation=np.array([r.rank_correlation for r in runs]))
