"""Lesson: outlier activation channels, SmoothQuant, AWQ, mixed precision and the whole-model effect."""
import numpy as np
import streamlit as st

import lab_ui
from quantlab.core import metrics
from quantlab.core.spec import SCHEMES, QuantSpec, label, scheme_spec
from quantlab.io import captures, models
from quantlab.lessons import checks, decoder_quality, outliers, snippets, whole_model
from quantlab.viz import outliers as figures

W8A8_SCHEMES = ("w8a8-static", "w8a8")
AWQ_SCHEMES = ("w4a16", "w4a16-channel", "w3a16")
HEATMAPS = {"local": "own error", "running": "running model"}
ALPHAS = np.round(np.linspace(0, 1, 21), 2)
MIXED_KS = [0, 1, 2, 4, 8, 16, 32, 64]


def _xw(source: models.ModelSource, layer: str):
    return lab_ui.activations(source)[layer], lab_ui.weight(source, f"{layer}.weight")


@st.cache_resource(max_entries=64, show_spinner=False)
def channel_stats(source: models.ModelSource, layer: str) -> outliers.ChannelStats:
    return outliers.channel_stats(lab_ui.activations(source)[layer])


@st.cache_resource(max_entries=64, show_spinner=False)
def token_split(source: models.ModelSource, layer: str, channel: int) -> outliers.TokenSplit:
    return outliers.first_token_split(lab_ui.activations(source)[layer], captures.first_token_rows(source), channel)


@st.cache_resource(max_entries=4, show_spinner="Measuring every Linear's input channels…")
def all_ratios(source: models.ModelSource) -> dict[str, float]:
    return {name: outliers.channel_stats(x).ratio for name, x in lab_ui.activations(source).items()}


@st.cache_resource(max_entries=64, show_spinner=False)
def layer_sqnr(source: models.ModelSource, layer: str, spec: QuantSpec) -> float:
    x, w = _xw(source, layer)
    return metrics.sqnr_db(outliers.layer_output(x, w), outliers.quantized_output(x, w, spec))


@st.cache_resource(max_entries=64, show_spinner="Sweeping α…")
def smooth_curve(source: models.ModelSource, layer: str, spec: QuantSpec) -> outliers.SmoothCurve:
    x, w = _xw(source, layer)
    return outliers.smooth_curve(x, w, spec, ALPHAS)


@st.cache_resource(max_entries=128, show_spinner=False)
def smooth_ranges(source: models.ModelSource, layer: str, alpha: float) -> outliers.SmoothRanges:
    return outliers.smooth_ranges(*_xw(source, layer), alpha)


@st.cache_resource(max_entries=64, show_spinner="Searching AWQ scales…")
def awq(source: models.ModelSource, layer: str, spec: QuantSpec) -> outliers.AwqSearch:
    return outliers.awq_search(*_xw(source, layer), spec)


@st.cache_resource(max_entries=64, show_spinner="Keeping outlier channels in 16-bit…")
def mixed(source: models.ModelSource, layer: str, spec: QuantSpec) -> outliers.MixedCurve:
    return outliers.mixed_precision_curve(*_xw(source, layer), spec, MIXED_KS)


@st.cache_resource(max_entries=64, show_spinner="Quantizing all 36 Linears and embedding 64 sentences…")
def whole(spec: QuantSpec, alpha: float | None, calibration: str, keep: int) -> whole_model.WholeModelResult:
    lab_ui.spend_heavy_run("A whole-model run")
    keep_fp = whole_model.worst_layers(whole_model.run(spec, alpha, calibration), keep) if keep else ()
    return whole_model.run(spec, alpha, calibration, keep_fp)


@st.cache_resource(max_entries=16, show_spinner="Quantizing the decoder and scoring the held-out text…")
def decoder_run(source: models.ModelSource, slug: str, method: str, smooth_alpha: float | None,
                keep: int) -> decoder_quality.SchemeQuality:
    lab_ui.spend_heavy_run("A whole-model run")
    return decoder_quality.scheme_quality(source.path, slug, method, smooth_alpha=smooth_alpha, keep=keep)


@st.cache_resource(max_entries=32, show_spinner="Running the model with 0, 1, 2, 4 and 8 layers kept in 16-bit…")
def keep_sweep(spec: QuantSpec, alpha: float | None, calibration: str) -> whole_model.KeepCurve:
    lab_ui.spend_heavy_run("The keep-k sweep")
    return whole_model.keep_curve(spec, alpha, calibration)


sel = lab_ui.selection()
lab_ui.title(__file__)
lab_ui.lesson_section("outliers", "intro")
lab_ui.require_activations(sel, "This lesson")
layer, source = sel.layer, sel.source

st.subheader("Outlier channels in the real inputs")
lab_ui.check(checks.outlier_channel, lab_ui.activations(source)[layer], key=(source, layer))
with lab_ui.user_errors():
    stats = channel_stats(source, layer)
c1, c2, c3 = st.columns(3)
c1.metric("Largest channel", f"#{stats.top_channel}: {stats.absmax[stats.top_channel]:.3g}")
c2.metric("Median channel's max", f"{stats.median:.3g}")
c3.metric("Ratio", f"{stats.ratio:.1f}×")
lab_ui.chart(figures.channel_absmax, stats, layer, key=(source, layer),
             headline=(f"Channel {stats.top_channel} ÷ the median channel", f"{stats.ratio:.1f}×"),
             code=snippets.outliers_channels(source, layer))
ratios = all_ratios(source)
lab_ui.chart(figures.outlier_ratios, list(ratios), list(ratios.values()), layer, key=(source, layer),
             code=snippets.outliers_ratios(source))
with lab_ui.user_errors():
    split = token_split(source, layer, stats.top_channel)
lab_ui.lesson_section("outliers", "channels", top=stats.top_channel, top_max=stats.absmax[stats.top_channel],
                      ratio=stats.ratio, first=split.first, rest=split.rest, rest_ratio=split.rest_ratio)

st.subheader("W8A8 on this layer")
mode = lab_ui.control(st.radio, "Activation scales", "out_mode", "w8a8-static", W8A8_SCHEMES,
                      format_func=label, horizontal=True)
spec = scheme_spec(mode)
lab_ui.check(checks.w8a8_weaker_side, *reversed(_xw(source, layer)), key=(source, layer))
# The weight half of W8A8 alone, so the two metrics differ only by the activations.
weights_only = spec.with_(activations=None)
with lab_ui.user_errors():
    w_only, w8a8 = layer_sqnr(source, layer, weights_only), layer_sqnr(source, layer, spec)
    static = layer_sqnr(source, layer, scheme_spec("w8a8-static"))
lab_ui.lesson_section("outliers", "w8a8", ratio=stats.ratio, static_loss=w_only - static)
m1, m2, m3 = st.columns(3)
m1.metric("Output SQNR, INT8 weights only", f"{w_only:.1f} dB")
m2.metric(f"Output SQNR, {label(mode)}", f"{w8a8:.1f} dB", f"{w8a8 - w_only:+.1f} dB vs weights only")

st.subheader("SmoothQuant: migrate the difficulty")
alpha = lab_ui.control(st.slider, "Migration strength α", "out_alpha", 0.5, min_value=0.0, max_value=1.0, step=0.05)
with lab_ui.user_errors():
    curve = smooth_curve(source, layer, spec)
    ranges = smooth_ranges(source, layer, alpha)
at_alpha = curve.at(alpha)
lab_ui.lesson_section("outliers", "smoothquant", alpha0=curve.at(0.0), baseline=curve.baseline_db,
                      w_spread=ranges.w_spread, ratio=ranges.x_spread)
m3.metric(f"…after SmoothQuant α = {alpha:.2f}", f"{at_alpha:.1f} dB", f"{at_alpha - w8a8:+.1f} dB")
lab_ui.chart(figures.smooth_ranges, ranges, alpha, key=(source, layer, alpha),
             code=snippets.outliers_smooth_ranges(source, layer, alpha))
lab_ui.chart(figures.smooth_curve, curve, alpha, label(mode), key=(source, layer, mode, alpha),
             code=snippets.outliers_smooth_curve(source, layer, spec, ALPHAS))

st.subheader("AWQ: protect the channels that matter")
awq_scheme = lab_ui.control(st.radio, "Weight scheme (activations stay 16-bit)", "out_awq", "w4a16", AWQ_SCHEMES,
                            format_func=label, horizontal=True)
with lab_ui.user_errors():
    search = awq(source, layer, scheme_spec(awq_scheme))
lab_ui.lesson_section("outliers", "awq", grid_ratio=search.grid_ratio, grid_loss=search.grid_relative_loss)
a1, a2 = st.columns(2)
a1.metric("AWQ's best ratio r", f"{search.grid_ratio:.2f}")
a2.metric("Output error vs plain rounding", f"{search.grid_relative_loss:.0%}")
lab_ui.chart(figures.awq_curve, search, key=(source, layer, awq_scheme),
             code=snippets.outliers_awq(source, layer, scheme_spec(awq_scheme)))

st.subheader("Mixed precision: keep the outliers in 16-bit")
with lab_ui.user_errors():
    kept = mixed(source, layer, spec)
lab_ui.lesson_section("outliers", "mixed", threshold_k=kept.threshold_k)
lab_ui.chart(figures.mixed_curve, kept, key=(source, layer, mode),
             code=snippets.outliers_mixed(source, layer, spec, MIXED_KS))

if source.is_embedded:
    st.subheader("The whole model")
    w1, w2 = st.columns([1.4, 1])
    scheme = lab_ui.control(w1.selectbox, "Scheme for every Linear", "out_scheme", whole_model.SCHEMES[-1],
                            whole_model.SCHEMES, format_func=lambda s: f"{label(s)}: {SCHEMES[s].description}")
    model_spec = scheme_spec(scheme)
    quantizes_acts = model_spec.activations is not None
    calib = lab_ui.control(w2.selectbox, "Calibration text (static scales, SmoothQuant)", "out_calib", "general",
                           models.calibration_kinds(), disabled=not quantizes_acts)
    w3, w4, w5 = st.columns([1, 1, 1.4])
    use_smooth = lab_ui.control(w3.toggle, "SmoothQuant (α above)", "out_smooth", False, disabled=not quantizes_acts)
    keep = lab_ui.control(w4.slider, "Keep the worst k Linears in 16-bit", "out_keep", 0, min_value=0, max_value=8)
    which = lab_ui.control(w5.radio, "Heat map", "out_heat", "local", list(HEATMAPS), format_func=HEATMAPS.get,
                           horizontal=True)
    smooth_alpha = alpha if use_smooth and quantizes_acts else None
    with lab_ui.user_errors():
        result = whole(model_spec, smooth_alpha, calib, keep)
    lab_ui.lesson_section("outliers", "whole", pairs=result.pairs, distractors=result.distractors)
    r1, r2, r3, r4 = st.columns(4)
    r1.metric("Rank correlation with fp32 (ρ)", f"{result.rank_correlation:.4f}",
              help="Spearman's ρ of the cosine similarities of all sentence pairs, quantized against fp32.")
    r2.metric("Embedding cosine to fp32", f"{result.cosine_mean:.4f}")
    r3.metric(f"Paraphrase retrieved among {result.distractors} distractors", f"{result.retrieval_recall:.0%}")
    r4.metric("Linear weights", f"{result.weight_bytes / 2**20:.1f} MiB")
    st.caption(f"{result.label} · worst sentence cosine {result.cosine_min:.4f} · fp32 retrieves "
               f"{result.retrieval_recall_fp32:.0%} · fp16 weights {result.fp16_bytes / 2**20:.1f} MiB · "
               f"computed in {result.seconds:.2f} s")
    lab_ui.chart(figures.sqnr_heatmap, result, which, key=(scheme, smooth_alpha, calib, keep, which),
                 code=snippets.outliers_whole_model(model_spec, smooth_alpha, calib, keep, which))
    if lab_ui.control(st.toggle, "Sweep k: what each whole layer kept in 16-bit buys (5 model runs)", "out_sweep",
                      False):
        with lab_ui.user_errors():
            sweep = keep_sweep(model_spec, smooth_alpha, calib)
        lab_ui.chart(figures.keep_curve, sweep, key=(scheme, smooth_alpha, calib),
                     code=snippets.outliers_keep(model_spec, smooth_alpha, calib))
    lab_ui.lesson_section("outliers", "whole_reading")
else:
    st.subheader("The whole model: perplexity and KL against the original")
    d1, d2 = st.columns([1.4, 1])
    dec_scheme = lab_ui.control(d1.selectbox, "Scheme for every Linear but lm_head", "out_dec_scheme", "w4a16",
                                decoder_quality.SCHEMES, format_func=lambda s: f"{label(s)}: {SCHEMES[s].description}")
    calibrated = decoder_quality.gptq_applies(scheme_spec(dec_scheme))  # GPTQ, AWQ: weight-only integers
    method = lab_ui.control(d2.radio, "Weights by", "out_dec_method", "rtn", list(decoder_quality.METHODS),
                            format_func=decoder_quality.METHODS.get, horizontal=True, disabled=not calibrated)
    d3, d4 = st.columns([1, 1.4])
    quantizes_acts = scheme_spec(dec_scheme).activations is not None
    dec_smooth = lab_ui.control(d3.toggle, "SmoothQuant (α above)", "out_dec_smooth", False,
                                disabled=not quantizes_acts)
    dec_keep = lab_ui.control(d4.slider, "Keep the worst k Linears unquantized", "out_dec_keep", 0, min_value=0,
                              max_value=8)
    with lab_ui.user_errors():
        quality = decoder_run(source, dec_scheme, method if calibrated else "rtn",
                              alpha if dec_smooth and quantizes_acts else None, dec_keep)
    lab_ui.lesson_section("outliers", "decoder", **quality.numbers())
    if quality.kept:
        st.caption("Kept unquantized (lowest own output SQNR first): " + ", ".join(f"`{n}`" for n in quality.kept))
    q1, q2, q3 = st.columns(3)
    q1.metric("Perplexity on held-out text", f"{quality.quantized.perplexity:.2f}",
              f"{quality.quantized.perplexity - quality.reference.perplexity:+.2f} vs original", delta_color="inverse")
    q2.metric("Mean KL to the original (nats/token)", f"{quality.quantized.kl_mean:.4f}")
    q3.metric("Tokens per second, quantized (CPU)", f"{quality.quantized.tokens_per_s:.0f}")
