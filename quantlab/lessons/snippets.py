"""The code behind each chart: a short script, with the page's settings filled in, that reproduces
the chart's numbers from quantlab's public functions, for a learner to paste into Python.

Every snippet has the same shape: where the model comes from, the tensor the chart looks at, the
lesson's call that makes `result`, and a `print` of the numbers the chart shows. The calls are
written from the functions themselves (their module and name), not typed as text, so a renamed
or moved function fails tests/lessons/test_snippets.py instead of a learner's paste; each setting
is written as the Python that rebuilds it (a registered scheme by its slug, any other spec or
argument object by the fields it changes from its defaults).
"""
from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from quantlab.core import formats as number_formats
from quantlab.core import observers, stats
from quantlab.core.gptq import GptqArgs
from quantlab.core.spec import SCHEMES, QuantSpec, scheme_spec
from quantlab.io import captures, models, sizing
from quantlab.io.models import ModelSource
from quantlab.lessons import (
    choose,
    clipping,
    compare,
    formats,
    gptq,
    granularity,
    kv_cache,
    outliers,
    speed,
    storage,
    symmetric,
    whole_model,
)

# The spec vocabulary reads best bare (QuantSpec(...), scheme_spec("w4a16")); everything else is
# called through its module, so each line says which lesson or layer it comes from.
VOCABULARY = "quantlab.core.spec"


@dataclass(frozen=True)
class Code:
    """Python source of one expression and the `from module import name` pairs it needs."""

    text: str
    imports: frozenset[tuple[str, str]] = frozenset()


def name(text: str) -> Code:
    """A variable an earlier line of the snippet defined."""
    return Code(text)


def ref(obj: Callable[..., object]) -> Code:
    """How a snippet names a quantlab function or class, with the import that makes it work."""
    module, qualname = obj.__module__, obj.__qualname__
    if isinstance(obj, type) or module == VOCABULARY:
        return Code(qualname, frozenset({(module, qualname.split(".")[0])}))
    package, _, short = module.rpartition(".")
    return Code(f"{short}.{qualname}", frozenset({(package, short)}))


def constant(module: ModuleType, attr: str) -> Code:
    """A module's public constant by name (choose.CANDIDATES), checked to exist."""
    getattr(module, attr)
    package, _, short = module.__name__.rpartition(".")
    return Code(f"{short}.{attr}", frozenset({(package, short)}))


def value(v: object) -> Code:
    """`v` as the Python source that rebuilds it."""
    if isinstance(v, Code):
        return v
    if isinstance(v, QuantSpec):
        return _spec(v)
    if isinstance(v, np.ndarray | np.generic):
        return value(v.tolist())
    if isinstance(v, float) and not math.isfinite(v):
        return Code(f'float("{v}")')
    if isinstance(v, int | float) and not isinstance(v, bool) and v > 0 and len(repr(v)) > 6:
        mantissa, exponent = math.frexp(v)
        if mantissa == 0.5:  # byte units and format bounds read as what they are: 2**30, 2.0**-26
            return Code(f"2**{exponent - 1}" if isinstance(v, int) else f"2.0**{exponent - 1}")
    if isinstance(v, str):
        return Code(_quoted(v))
    if v is None or isinstance(v, bool | int | float | range):
        return Code(repr(v))
    if isinstance(v, list | tuple):
        parts = [value(item) for item in v]
        body = ", ".join(p.text for p in parts) + ("," if isinstance(v, tuple) and len(v) == 1 else "")
        return _join("[{}]" if isinstance(v, list) else "({})", body, parts)
    if isinstance(v, Mapping):
        pairs = [(value(k), value(item)) for k, item in v.items()]
        body = ", ".join(f"{k.text}: {item.text}" for k, item in pairs)
        return _join("{{{}}}", body, [p for pair in pairs for p in pair])
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return call(type(v), **_changed_fields(v))
    raise TypeError(f"no source form for {type(v).__name__}")


def _quoted(text: str) -> str:
    """A string in double quotes, as the rest of quantlab writes them, where that needs no escape."""
    written = repr(text)
    return f'"{text}"' if written == f"'{text}'" and '"' not in text else written


def _join(template: str, body: str, parts: Sequence[Code]) -> Code:
    return Code(template.format(body), frozenset().union(*(p.imports for p in parts)))


def _changed_fields(obj: object, always: tuple[str, ...] = ()) -> dict[str, object]:
    """The fields of a dataclass that differ from their defaults (and those in `always`): what a
    learner would type."""
    changed = {}
    for field in dataclasses.fields(obj):  # type: ignore[arg-type]
        current = getattr(obj, field.name)
        if field.name in always or field.default is dataclasses.MISSING or current != field.default:
            changed[field.name] = current
    return changed


def _spec(spec: QuantSpec) -> Code:
    slug = spec.to_url()
    if slug in SCHEMES:
        return call(scheme_spec, slug)
    fields = _changed_fields(spec, always=("num_bits",))  # QuantSpec() alone hides that it means 8 bits
    if "observer_kwargs" in fields:
        fields["observer_kwargs"] = dict(spec.observer_kwargs)
    return call(QuantSpec, **fields)


def call(fn: Callable[..., object], *args: object, **kwargs: object) -> Code:
    """`fn(args, name=value)` as source."""
    head = ref(fn)
    parts = [value(a) for a in args]
    named = {key: value(v) for key, v in kwargs.items()}
    body = ", ".join([*(p.text for p in parts), *(f"{key}={p.text}" for key, p in named.items())])
    return Code(f"{head.text}({body})", head.imports.union(*(p.imports for p in [*parts, *named.values()])))


def expr(template: str, *parts: object) -> Code:
    """A template whose `{}` slots take the source of `parts` (other braces stay as written):
    the comprehensions, attributes and indexing a call alone cannot say."""
    pieces = [value(p) for p in parts]
    texts = iter(p.text for p in pieces)
    return Code(re.sub(r"\{\}", lambda _: next(texts), template), frozenset().union(*(p.imports for p in pieces)))


@dataclass(frozen=True)
class Line:
    target: str
    code: Code
    comment: str = ""


def _script(lines: Sequence[Line], shows: str) -> str:
    """The whole snippet: imports, one assignment per line, then a print of `shows` (an expression
    over the names assigned; `result` is what the lesson's call returned, which tests compare)."""
    imports: dict[str, set[str]] = {}
    for line in lines:
        for module, imported in line.code.imports:
            imports.setdefault(module, set()).add(imported)
    bound: dict[str, str] = {}
    for module, names in imports.items():
        for imported in names:
            if bound.setdefault(imported, module) != module:
                raise ValueError(f"{imported!r} would be imported from both {bound[imported]} and {module}")
    head = [f"from {module} import {', '.join(sorted(names))}" for module, names in sorted(imports.items())]
    body = [f"{line.target} = {line.code.text}" + (f"  # {line.comment}" if line.comment else "") for line in lines]
    return "\n".join([*head, "", *body, f"print({shows})"]) + "\n"


# -- where the numbers come from ------------------------------------------------------------------

_UPLOAD_NAME = re.compile(r"[0-9a-f]{16}\.safetensors")


def _uploaded(source: ModelSource) -> bool:
    """An upload is stored under a name made of its content hash (ModelSource.from_upload), in the
    server's private upload folder: the snippet names the file as the learner knows it instead."""
    file = Path(source.path).name
    return bool(_UPLOAD_NAME.fullmatch(file)) and file != source.label


def source_line(source: ModelSource) -> Line:
    if source.is_embedded:
        return Line("source", call(ModelSource.embedded))
    if _uploaded(source):
        return Line("source", call(ModelSource.local, source.label),
                    comment="the file you uploaded: point this at your copy of it")
    return Line("source", call(ModelSource.local, source.path))


SOURCE = name("source")


def weight_lines(source: ModelSource, layer: str, target: str = "w") -> list[Line]:
    return [source_line(source), Line(target, call(models.load_tensor, SOURCE, f"{layer}.weight"))]


def input_line(layer: str, target: str = "x") -> Line:
    """The real input the layer receives on the shipped sample text."""
    return Line(target, call(captures.activation, SOURCE, layer))


def tensor_lines(source: ModelSource, layer: str, tensor: str) -> list[Line]:
    """The layer's weight matrix ("weight") or its real input ("input"), as `x`."""
    if tensor == "weight":
        return weight_lines(source, layer, "x")
    return [source_line(source), input_line(layer)]


def pair_lines(source: ModelSource, layer: str, with_inputs: bool = True) -> list[Line]:
    """The layer's weight `w` and, where the lab has them, its real inputs `x` (else None)."""
    x = input_line(layer) if with_inputs else Line("x", value(None), comment="this source has weights only")
    return [*weight_lines(source, layer), x]


def _result(code: Code) -> Line:
    return Line("result", code)


X, W = name("x"), name("w")


# -- Symmetric vs asymmetric --------------------------------------------------------------------------

def symmetric_grid(source: ModelSource, layer: str, tensor: str, bits: int) -> str:
    return _script([*tensor_lines(source, layer, tensor), _result(call(symmetric.compare_modes, X, num_bits=bits))],
                   "result.symmetric.scale, result.asymmetric.scale, result.asymmetric.zero_point, "
                   "result.symmetric.report.sqnr_db, result.asymmetric.report.sqnr_db")


def symmetric_bits(source: ModelSource, layer: str, tensor: str) -> str:
    return _script([*tensor_lines(source, layer, tensor), _result(call(symmetric.sqnr_by_bits, X))], "result")


# -- Precision formats ----------------------------------------------------------------------------------

def formats_levels(names: Sequence[str]) -> str:
    levels = expr("{name: {}.tolist() for name in {}}", call(number_formats.positive_levels, name("name")),
                  tuple(names))
    return _script([_result(levels)], "{name: levels[:4] for name, levels in result.items()}")


# The span and sampling of the lesson's precision chart (quantlab.viz.formats.precision_chart).
PRECISION_SPAN = (2.0**-26, 2.0**17, 3000)


def formats_precision(span: tuple[float, float, int] = PRECISION_SPAN) -> str:
    lo, hi, points = span
    curves = expr("{name: {} for name in {}}", call(number_formats.precision_curve, name("name"), lo, hi,
                                                    points=points), constant(number_formats, "FORMATS"))
    return _script([_result(curves)], "{name: 100 * rel.min().item() for name, (mags, rel) in result.items()}")


def formats_range() -> str:
    return _script([_result(call(number_formats.format_table))],
                   '[(row["format"], row["range (binades)"], row["precision at top (bits)"]) for row in result]')


def formats_duel(source: ModelSource, layer: str, tensor: str, strategy: str) -> str:
    return _script([*tensor_lines(source, layer, tensor), _result(call(formats.fp8_vs_int8, X, strategy=strategy))],
                   "result.sqnr_db")


def formats_blocks(source: ModelSource, layer: str) -> str:
    return _script([*weight_lines(source, layer), _result(call(formats.block_scales, W))], "result.sqnr_db")


# -- Granularity ----------------------------------------------------------------------------------------

def granularity_tradeoff(source: ModelSource, layer: str, custom_group: int, with_inputs: bool,
                         output: bool) -> str:
    measured = "p.output_sqnr_db" if output else "p.weight_sqnr_db"
    return _script([*pair_lines(source, layer, with_inputs),
                    _result(call(granularity.tradeoff, W, X, custom_group=custom_group))],
                   f"{{p.label: (p.bits_per_weight, {measured}) for p in result}}")


def granularity_scales(source: ModelSource, layer: str, spec: QuantSpec) -> str:
    return _script([*weight_lines(source, layer), _result(call(granularity.scale_map, W, spec))],
                   "result.values.min().item(), result.values.max().item()")


def granularity_failure(source: ModelSource, layer: str, spec: QuantSpec) -> str:
    return _script([*weight_lines(source, layer), _result(call(granularity.where_tensor_fails, W, spec))],
                   "result.worst(1)")


def granularity_word(source: ModelSource, layer: str, spec: QuantSpec) -> str:
    return _script([*weight_lines(source, layer), _result(call(granularity.first_word, W, spec))],
                   "result.word, result.codes")


# -- Storage --------------------------------------------------------------------------------------------

def _model(source: ModelSource | str) -> tuple[list[Line], Code]:
    """A model to size: the sidebar's weights, or a shipped architecture by name (shapes only)."""
    if isinstance(source, str):
        return [], value(source)
    return [source_line(source)], SOURCE


def storage_breakdown(source: ModelSource | str, spec: QuantSpec) -> str:
    lines, model = _model(source)
    return _script([*lines, _result(call(sizing.model_size, model, spec))],
                   "result.total_bytes, {kind: n / 1e6 for kind, n in result.by_kind().items()}")


def storage_groups(source: ModelSource | str, spec: QuantSpec) -> str:
    lines, model = _model(source)
    return _script([*lines, _result(call(storage.group_ladder, model, spec))],
                   '{rung.label: rung.report.by_kind()["scales"] / 1e6 for rung in result.rungs}')


# -- Clipping ---------------------------------------------------------------------------------------------

def _observed(bits: int, percentile: float) -> Code:
    """Where each observer puts the range, as the lesson marks them on its curve."""
    return value({"min-max": call(observers.clip_ratio, X, QuantSpec(num_bits=bits)),
                  f"percentile {percentile:g}": call(observers.clip_ratio, X, QuantSpec(
                      num_bits=bits, observer="percentile", observer_kwargs={"percentile": percentile})),
                  "MSE": call(observers.clip_ratio, X, QuantSpec(num_bits=bits, observer="mse"))})


def clipping_curve(source: ModelSource, layer: str, tensor: str, bits: int, percentile: float,
                   ratios: Sequence[float]) -> str:
    return _script([*tensor_lines(source, layer, tensor),
                    _result(call(clipping.clipping_curve, X, QuantSpec(num_bits=bits), ratios)),
                    Line("observed", _observed(bits, percentile))],
                   "result.best_ratio, observed")


def clipping_histogram(source: ModelSource, layer: str, tensor: str, bits: int, ratio: float, bins: int) -> str:
    return _script([*tensor_lines(source, layer, tensor), Line("hist", call(stats.histogram, X, bins=bins)),
                    _result(call(clipping.clip_point, X, QuantSpec(num_bits=bits), ratio))],
                   "result.range_lo, result.range_hi")


def clipping_calibration(source: ModelSource, layer: str, eval_kind: str, spec: QuantSpec, sentences: int) -> str:
    return _script([source_line(source), _result(call(clipping.study, layer, eval_kind, spec, sentences=sentences,
                                                      source=SOURCE))],
                   "{row.calibration: row.sqnr_db for row in result}")


# -- Outliers ---------------------------------------------------------------------------------------------

def outliers_channels(source: ModelSource, layer: str) -> str:
    return _script([source_line(source), input_line(layer), _result(call(outliers.channel_stats, X))],
                   "result.top_channel, result.ratio")


def outliers_ratios(source: ModelSource) -> str:
    ratios = expr("{layer: {}.ratio for layer, x in {}.items()}", call(outliers.channel_stats, X),
                  call(captures.inputs, SOURCE))
    return _script([source_line(source), _result(ratios)], "result")


def outliers_smooth_ranges(source: ModelSource, layer: str, alpha: float) -> str:
    return _script([*pair_lines(source, layer), _result(call(outliers.smooth_ranges, X, W, alpha))],
                   "result.x_before.max().item(), result.x_after.max().item()")


def outliers_smooth_curve(source: ModelSource, layer: str, spec: QuantSpec, alphas: Sequence[float]) -> str:
    return _script([*pair_lines(source, layer), _result(call(outliers.smooth_curve, X, W, spec, alphas))],
                   "result.best_alpha, result.sqnr_db.max().item(), result.baseline_db")


def outliers_awq(source: ModelSource, layer: str, spec: QuantSpec) -> str:
    return _script([*pair_lines(source, layer), _result(call(outliers.awq_search, X, W, spec))],
                   "result.grid_ratio, result.losses.min().item(), result.identity_loss")


def outliers_mixed(source: ModelSource, layer: str, spec: QuantSpec, ks: Sequence[int]) -> str:
    return _script([*pair_lines(source, layer), _result(call(outliers.mixed_precision_curve, X, W, spec, ks))],
                   "dict(zip(result.ks.tolist(), result.sqnr_db.tolist()))")


def outliers_whole_model(spec: QuantSpec, alpha: float | None, calibration: str, keep: int, which: str) -> str:
    settings = {"smooth_alpha": alpha, "calibration": calibration}
    lines = []
    if keep:
        worst = call(whole_model.worst_layers, call(whole_model.run, spec, **settings), keep)
        lines.append(Line("keep_fp", worst, comment="the Linears with the worst own error stay 16-bit"))
        settings["keep_fp"] = name("keep_fp")
    return _script([*lines, _result(call(whole_model.run, spec, **settings))],
                   f"result.rank_correlation, result.heatmap({_quoted(which)}).min().item()")


def outliers_keep(spec: QuantSpec, alpha: float | None, calibration: str) -> str:
    return _script([_result(call(whole_model.keep_curve, spec, smooth_alpha=alpha, calibration=calibration))],
                   "result.rank_correlation.tolist()")


# -- GPTQ ---------------------------------------------------------------------------------------------------

def gptq_study(source: ModelSource, layer: str, spec: QuantSpec, args: GptqArgs, calibration: str,
               sentences: int, eval_kind: str) -> str:
    study = call(gptq.embedded_study, layer, spec, args, calibration=calibration, sentences=sentences,
                 eval_kind=eval_kind, source=SOURCE)
    return _script([source_line(source), _result(study)], "result.rtn_output_db, result.gptq_output_db")


def gptq_calibration(source: ModelSource, layer: str, spec: QuantSpec, args: GptqArgs, sentences: int,
                     eval_kind: str) -> str:
    return _script([source_line(source),
                    _result(call(gptq.calibration_study, layer, spec, args, sentences=sentences, eval_kind=eval_kind,
                                 source=SOURCE))],
                   "{point.calibration: point.output_db for point in result}")


def gptq_samples(source: ModelSource, layer: str, spec: QuantSpec, args: GptqArgs, calibration: str,
                 eval_kind: str) -> str:
    return _script([source_line(source),
                    _result(call(gptq.samples_curve, layer, spec, args, calibration=calibration, eval_kind=eval_kind,
                                 source=SOURCE))],
                   "[(point.tokens, point.output_db) for point in result]")


# -- KV cache -------------------------------------------------------------------------------------------------

def kv_memory(arch: str, scheme: str, batch: int, unit: int) -> str:
    return _script([_result(call(kv_cache.memory_plan, arch, scheme, batch=batch, gpu_unit=unit))],
                   "{label: result.totals(label)[-1] for label in result.kv}")


def _real_kv(source: ModelSource | None) -> tuple[list[Line], dict[str, Code]]:
    """Whose keys and values: the embedded model's (None, the lessons' default) or a local causal LM's."""
    return ([], {}) if source is None else ([source_line(source)], {"source": SOURCE})


def kv_errors(source: ModelSource | None, kind: str) -> str:
    lines, where = _real_kv(source)
    errors = expr("{{}: error.out_sqnr_db for spec, error in {}.items()}", call(kv_cache.kv_label, name("spec")),
                  call(kv_cache.kv_errors, kind, **where))
    return _script([*lines, _result(errors)], "result")


def kv_channels(source: ModelSource | None, layer: int, head: int) -> str:
    lines, where = _real_kv(source)
    return _script([*lines, _result(call(kv_cache.channel_absmax, layer, head, **where))],
                   "[channel.max().item() for channel in result]")


# -- What if -----------------------------------------------------------------------------------------------------

def compare_layer(source: ModelSource, layer: str, names: Sequence[str], with_inputs: bool) -> str:
    rows = expr("{name: {} for name in {}}", call(compare.layer_what_if, name("name"), W, X), tuple(names))
    measured = "row.output_sqnr_db" if with_inputs else "row.weight_sqnr_db"
    return _script([*pair_lines(source, layer, with_inputs), _result(rows)],
                   f"{{name: (row.bits_per_weight, {measured}) for name, row in result.items()}}")


# -- Speed -----------------------------------------------------------------------------------------------------------

def _run(run: str) -> Line:
    return Line("run", call(speed.committed_run, run), comment="a committed GPU benchmark run")


RUN = name("run")


def speed_speedup(run: str, k: int, n: int, methods: Sequence[str]) -> str:
    return _script([_run(run), _result(call(speed.series, RUN, k, n, tuple(methods)))], "result")


def speed_history(runs: Sequence[str], card: str) -> str:
    on_card = expr("[r for r in ({} for name in {}) if r.meta[\"card\"] == {}]",
                   call(speed.committed_run, name("name")), tuple(runs), card)
    return _script([Line("runs", on_card), _result(call(speed.kernel_history, name("runs")))], "result")


def speed_roofline(run: str, k: int, n: int, methods: Sequence[str]) -> str:
    """Achieved TFLOP/s against FLOP per byte, one point per measured batch size of each method."""
    sized = tuple(m for m in methods if m in speed.SIZED_METHODS)
    points = expr("{method: [({}, {} / run.ms({}, {}, m, method) / 1e9) for m in run.batch_sizes "
                  "if run.ms({}, {}, m, method)] for method in {}}",
                  call(speed.intensity, name("m"), k, n, name("method")), call(speed.flops, name("m"), k, n),
                  k, n, k, n, sized)
    return _script([_run(run), _result(points)], "result")


def speed_floors(k: int, n: int, bandwidth_gbps: float, peak_tflops: float, batch_sizes: Sequence[int],
                 methods: Sequence[str]) -> str:
    floors = expr("{method: [{}.floor_us for m in {}] for method in {}}",
                  call(speed.bound, name("m"), k, n, name("method"), bandwidth_gbps, peak_tflops),
                  tuple(batch_sizes), tuple(methods))
    return _script([_result(floors)], "result")


# -- Choose a scheme ---------------------------------------------------------------------------------------------

def choose_evidence(source: ModelSource, layer: str, with_inputs: bool, arch: str, run: str, batch: int,
                    hw: str) -> str:
    candidates = constant(choose, "CANDIDATES")
    dtype = expr("{}[{}].dtype", call(models.list_tensors, SOURCE), f"{layer}.weight")
    errors = expr("{slug: {} for slug in {}}", call(choose.layer_error, name("slug"), W, X, name("dtype")),
                  candidates)
    measured = call(choose.speedups, RUN, batch)
    return _script([*pair_lines(source, layer, with_inputs), Line("dtype", dtype), Line("errors", errors),
                    Line("sizes", call(choose.file_sizes, arch, candidates)), _run(run),
                    _result(call(choose.evidence, name("errors"), name("sizes"), measured, hw))],
                   "{row.label: (row.file.total_bytes / 1e9, row.error_db) for row in result"
                   " if row.error_db is not None}")


def choose_memory(arch: str, context: int, batch: int, scheme: str) -> str:
    size = expr("{}[{}].total_bytes", call(choose.file_sizes, arch, (scheme,)), scheme)
    return _script([_result(call(choose.memory, arch, context=context, batch=batch,
                                 fp8_kv_attention_db=call(choose.fp8_kv_attention_db))),
                    Line("scheme_bytes", size)],
                   "result.weights_bytes / 1e9, scheme_bytes / 1e9, result.kv16_bytes / 1e9, result.kv8_bytes / 1e9")
