"""quantlab.lessons.snippets: every chart's snippet, run as a learner would paste it, makes the same
`result` as the lesson's own call with the same settings; values and sources are written so that
they rebuild what they stand for (and never name the server's upload folder)."""
import contextlib
import dataclasses
import inspect
import io
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from quantlab.core import formats as number_formats
from quantlab.core import observers, stats
from quantlab.core.gptq import GptqArgs
from quantlab.core.spec import QuantSpec, scheme_spec
from quantlab.io import captures, models, sizing, uploads
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
    snippets,
    speed,
    storage,
    symmetric,
    whole_model,
)
from quantlab.viz import speed as speed_figures

EMBEDDED = ModelSource.embedded()
# Not a lesson's default layer (a snippet must name it), and a small one: 384 × 384.
LAYER = "encoder.layer.2.attention.self.query"
RUN = speed.committed_results()[-1].stem  # the oldest run, not the page's default
W8A8 = scheme_spec("w8a8")
G64_ASYM = QuantSpec(num_bits=4, symmetric=False, strategy="group", group_size=64)


def w(layer: str = LAYER) -> torch.Tensor:
    return models.load_tensor(EMBEDDED, f"{layer}.weight")


def x(layer: str = LAYER) -> torch.Tensor:
    return captures.activation(EMBEDDED, layer)


def roofline_points(run: str, k: int, n: int, methods: list[str]) -> dict[str, list[tuple[float, float]]]:
    """The points the roofline chart itself draws for each method (it computes them from the run)."""
    figure = speed_figures.roofline_chart(speed.committed_run(run), k, n, methods)
    drawn = {trace.name: list(zip(trace.x, trace.y)) for trace in figure.data}
    return {m: drawn[speed.LABELS[m]] for m in methods if speed.LABELS.get(m) in drawn}


# kind -> cases of (arguments, the lesson's own call with the same settings -> {name: value}).
CASES = {
    "symmetric_grid": [((EMBEDDED, LAYER, "input", 3), lambda: {"result": symmetric.compare_modes(x(), 3)})],
    "symmetric_bits": [((EMBEDDED, LAYER, "weight"), lambda: {"result": symmetric.sqnr_by_bits(w())})],
    "formats_levels": [((("int4", "nf4"),), lambda: {
        "result": {n: number_formats.positive_levels(n).tolist() for n in ("int4", "nf4")}})],
    "formats_precision": [(((1e-3, 10.0, 50),), lambda: {
        "result": {n: number_formats.precision_curve(n, 1e-3, 10.0, points=50) for n in number_formats.FORMATS}})],
    "formats_range": [((), lambda: {"result": number_formats.format_table()})],
    "formats_duel": [((EMBEDDED, LAYER, "input", "token"), lambda: {"result": formats.fp8_vs_int8(x(), "token")})],
    "formats_blocks": [((EMBEDDED, LAYER), lambda: {"result": formats.block_scales(w())})],
    "granularity_tradeoff": [
        ((EMBEDDED, LAYER, 96, True, True), lambda: {"result": granularity.tradeoff(w(), x(), 96)}),
        ((EMBEDDED, LAYER, 0, False, False), lambda: {"result": granularity.tradeoff(w(), None, 0)}),
    ],
    "granularity_scales": [((EMBEDDED, LAYER, G64_ASYM), lambda: {"result": granularity.scale_map(w(), G64_ASYM)})],
    "granularity_failure": [((EMBEDDED, LAYER, G64_ASYM),
                             lambda: {"result": granularity.where_tensor_fails(w(), G64_ASYM)})],
    "granularity_word": [((EMBEDDED, LAYER, scheme_spec("w8a16")),
                          lambda: {"result": granularity.first_word(w(), scheme_spec("w8a16"))})],
    "storage_breakdown": [
        (("llama-3.1-8b", scheme_spec("w4a16-g64")),
         lambda: {"result": sizing.model_size("llama-3.1-8b", scheme_spec("w4a16-g64"))}),
        ((EMBEDDED, scheme_spec("fp8-dynamic")),
         lambda: {"result": sizing.model_size(EMBEDDED, scheme_spec("fp8-dynamic"))}),
    ],
    "storage_groups": [((EMBEDDED, scheme_spec("w8a16")),
                        lambda: {"result": storage.group_ladder(EMBEDDED, scheme_spec("w8a16"))})],
    "clipping_curve": [((EMBEDDED, LAYER, "input", 6, 99.99, [0.5, 0.75, 1.0]), lambda: {
        "result": clipping.clipping_curve(x(), QuantSpec(num_bits=6), np.array([0.5, 0.75, 1.0])),
        "observed": {"min-max": observers.clip_ratio(x(), QuantSpec(num_bits=6)),
                     "percentile 99.99": observers.clip_ratio(x(), QuantSpec(
                         num_bits=6, observer="percentile", observer_kwargs={"percentile": 99.99})),
                     "MSE": observers.clip_ratio(x(), QuantSpec(num_bits=6, observer="mse"))}})],
    "clipping_histogram": [((EMBEDDED, LAYER, "weight", 4, 0.6, 80), lambda: {
        "result": clipping.clip_point(w(), QuantSpec(num_bits=4), 0.6), "hist": stats.histogram(w(), bins=80)})],
    "clipping_calibration": [((EMBEDDED, clipping.CALIBRATION_LAYER, "code", QuantSpec(num_bits=8, observer="mse"), 2),
                              lambda: {"result": clipping.study(clipping.CALIBRATION_LAYER, "code",
                                                                QuantSpec(num_bits=8, observer="mse"), 2)})],
    "outliers_channels": [((EMBEDDED, LAYER), lambda: {"result": outliers.channel_stats(x())})],
    "outliers_ratios": [((EMBEDDED,), lambda: {
        "result": {n: outliers.channel_stats(t).ratio for n, t in models.activations().items()}})],
    "outliers_smooth_ranges": [((EMBEDDED, LAYER, 0.3), lambda: {"result": outliers.smooth_ranges(x(), w(), 0.3)})],
    "outliers_smooth_curve": [((EMBEDDED, LAYER, scheme_spec("w8a8"), [0.0, 0.5, 1.0]), lambda: {
        "result": outliers.smooth_curve(x(), w(), scheme_spec("w8a8"), np.array([0.0, 0.5, 1.0]))})],
    "outliers_awq": [((EMBEDDED, LAYER, scheme_spec("w3a16")),
                      lambda: {"result": outliers.awq_search(x(), w(), scheme_spec("w3a16"))})],
    "outliers_mixed": [((EMBEDDED, LAYER, scheme_spec("w8a8"), [0, 4]),
                        lambda: {"result": outliers.mixed_precision_curve(x(), w(), scheme_spec("w8a8"), [0, 4])})],
    # Whole-model runs are cached per process: this one shares its two with the keep-k curve below.
    "outliers_whole_model": [((W8A8, 0.5, "code", 1, "running"), lambda: {"result": whole_model.run(
        W8A8, 0.5, "code", whole_model.worst_layers(whole_model.run(W8A8, 0.5, "code"), 1))})],
    "outliers_keep": [((W8A8, 0.5, "code"), lambda: {"result": whole_model.keep_curve(W8A8, 0.5, "code")})],
    "gptq_study": [((EMBEDDED, LAYER, scheme_spec("w3a16"), GptqArgs(block_size=64, dampening=0.05), "code", 3,
                     "general"), lambda: {"result": gptq.embedded_study(
                         LAYER, scheme_spec("w3a16"), GptqArgs(block_size=64, dampening=0.05), "code", 3, "general")})],
    "gptq_calibration": [((EMBEDDED, LAYER, scheme_spec("w4a16"), GptqArgs(actorder=False), 2, "code"),
                          lambda: {"result": gptq.calibration_study(LAYER, scheme_spec("w4a16"),
                                                                    GptqArgs(actorder=False), 2, "code")})],
    "gptq_samples": [((EMBEDDED, LAYER, scheme_spec("w4a16"), GptqArgs(), "general", "code"),
                      lambda: {"result": gptq.samples_curve(LAYER, scheme_spec("w4a16"), GptqArgs(), "general",
                                                            "code")})],
    "kv_memory": [(("qwen2.5-7b", "w4a16", 4, 10**9),
                   lambda: {"result": kv_cache.memory_plan("qwen2.5-7b", "w4a16", 4, 10**9)})],
    "kv_errors": [((None, "general"), lambda: {
        "result": {kv_cache.kv_label(s): e.out_sqnr_db for s, e in kv_cache.kv_errors("general").items()}})],
    "kv_channels": [((None, 2, 3), lambda: {"result": kv_cache.channel_absmax(2, 3)})],
    "compare_layer": [
        ((EMBEDDED, LAYER, ["w4a16-g64", "fp8-dynamic"], True), lambda: {
            "result": {n: compare.layer_what_if(n, w(), x()) for n in ("w4a16-g64", "fp8-dynamic")}}),
        ((EMBEDDED, LAYER, ["w8a16"], False), lambda: {"result": {"w8a16": compare.layer_what_if("w8a16", w(), None)}}),
    ],
    "speed_speedup": [((RUN, 4096, 14336, ["bf16", "fp8"]), lambda: {
        "result": speed.series(speed.committed_run(RUN), 4096, 14336, ("bf16", "fp8"))})],
    "speed_history": [(([p.stem for p in speed.committed_results()], "NVIDIA H200"), lambda: {
        "result": speed.kernel_history([speed.committed_run(p.stem) for p in speed.committed_results()])})],
    "speed_roofline": [((RUN, 8192, 8192, ["w4a16", "fp8", "w4a16_gemv"]), lambda: {
        "result": roofline_points(RUN, 8192, 8192, ["w4a16", "fp8", "w4a16_gemv"])})],
    "speed_floors": [((384, 1536, 3000.0, 500.0, (1, 8, 64), ("bf16", "w8a16")), lambda: {
        "result": {m: [speed.bound(b, 384, 1536, m, 3000.0, 500.0).floor_us for b in (1, 8, 64)]
                   for m in ("bf16", "w8a16")}})],
    "choose_evidence": [((EMBEDDED, LAYER, True, "mistral-7b", RUN, 16, "ampere"), lambda: {
        "result": choose.evidence(
            {s: choose.layer_error(s, w(), x(), "F32") for s in choose.CANDIDATES},
            choose.file_sizes("mistral-7b", choose.CANDIDATES), choose.speedups(speed.committed_run(RUN), 16),
            "ampere")})],
    "choose_memory": [(("llama-3.1-70b", 65536, 4, "w4a16-asym"), lambda: {
        "result": choose.memory("llama-3.1-70b", 65536, 4, choose.fp8_kv_attention_db()),
        "scheme_bytes": choose.file_sizes("llama-3.1-70b", ["w4a16-asym"])["w4a16-asym"].total_bytes})],
}


def _kinds() -> list[str]:
    """The module's chart snippets: its public functions that return a script."""
    return [n for n, f in inspect.getmembers(snippets, inspect.isfunction)
            if f.__module__ == snippets.__name__ and not n.startswith("_")
            and inspect.signature(f).return_annotation == "str"]


def test_every_snippet_kind_is_run_here():
    assert sorted(CASES) == sorted(_kinds())


def same(got: object, want: object, where: str = "result") -> None:
    """Equal as numbers, field by field (timings left out: they are never the same twice)."""
    if dataclasses.is_dataclass(want):
        assert type(got) is type(want), where
        for field in dataclasses.fields(want):
            if field.name != "seconds":
                same(getattr(got, field.name), getattr(want, field.name), f"{where}.{field.name}")
    elif isinstance(want, dict):
        assert list(got) == list(want), where
        for key in want:
            same(got[key], want[key], f"{where}[{key!r}]")
    elif isinstance(want, torch.Tensor | np.ndarray):
        got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
        assert got.shape == want.shape and np.allclose(got, want, rtol=1e-9, atol=0, equal_nan=True), where
    elif isinstance(want, list | tuple):
        assert len(got) == len(want), where
        for i, (g, v) in enumerate(zip(got, want)):
            same(g, v, f"{where}[{i}]")
    elif isinstance(want, float):
        assert math.isclose(got, want, rel_tol=1e-9) or (math.isnan(got) and math.isnan(want)), (where, got, want)
    else:
        assert got == want, (where, got, want)


def run_snippet(code: str) -> tuple[dict, str]:
    scope: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<snippet>", "exec"), scope)
    return scope, out.getvalue()


@pytest.mark.parametrize(("kind", "args", "oracle"),
                         [(kind, args, oracle) for kind, cases in CASES.items() for args, oracle in cases],
                         ids=[f"{kind}-{i}" for kind, cases in CASES.items() for i in range(len(cases))])
def test_snippet_makes_what_the_lesson_makes(kind, args, oracle):
    code = getattr(snippets, kind)(*args)
    scope, printed = run_snippet(code)
    assert printed.strip(), code
    for variable, want in oracle().items():
        same(scope[variable], want, variable)


def test_settings_are_written_so_that_they_rebuild_themselves():
    for setting in (scheme_spec("w8a8-static"), G64_ASYM, QuantSpec(num_bits=6, observer="percentile",
                                                                      observer_kwargs={"percentile": 99.99}),
                    scheme_spec("nvfp4").with_(symmetric=True, observer="percentile"),
                    GptqArgs(block_size=32, groups="dynamic"), {"a": (1, 2.5, None)}, [float("inf")],
                    (2**30, 2.0**-26, 131072, 1e-05)):
        code = snippets.value(setting)
        imports = "".join(f"from {module} import {name}\n" for module, name in code.imports)
        scope: dict = {}
        exec(f"{imports}rebuilt = {code.text}", scope)
        assert scope["rebuilt"] == setting, code.text
    assert snippets.value(scheme_spec("w4a16")).text == 'scheme_spec("w4a16")'  # a registered scheme by its slug
    assert snippets.value(QuantSpec()).text == "QuantSpec(num_bits=8)"  # the bit width is always said
    assert snippets.value((2**30, 2.0**-26, 1024)).text == "(2**30, 2.0**-26, 1024)"


def test_a_local_file_is_named_and_runs_like_the_embedded_model(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "mine.safetensors"
    save_file({"block.up.weight": torch.randn(32, 64)}, str(path))
    source = ModelSource.local(path)
    code = snippets.symmetric_grid(source, "block.up", "weight", 4)
    assert f'ModelSource.local("{path.resolve()}")' in code
    scope, _ = run_snippet(code)
    same(scope["result"], symmetric.compare_modes(models.load_tensor(source, "block.up.weight"), 4))


def test_an_upload_is_named_as_the_learner_knows_it_never_by_its_server_path(tmp_path):
    torch.manual_seed(0)
    local = tmp_path / "my model.safetensors"
    save_file({"block.up.weight": torch.randn(32, 64)}, str(local))
    store = uploads.UploadStore()
    try:
        source = store.open_session().add("upload-1", "my model.safetensors", local.read_bytes())
        code = snippets.formats_blocks(source, "block.up")
        assert str(store.root) not in code and 'ModelSource.local("my model.safetensors")' in code
        assert "the file you uploaded" in code
    finally:
        store.close()
