"""Lesson: speed — when does a quantized matmul beat bf16, and why is int4 sometimes slower?"""
import pandas as pd
import streamlit as st
import torch

import lab_ui
from quantlab.io import models
from quantlab.kernels import live
from quantlab.lessons import checks, kv_cache, snippets, speed
from quantlab.viz import speed as figures

lab_ui.routed()

MAIN_METHODS = ["bf16", "torch_int4", "w4a16", "w8a16", "fp8"]
CPU_CAP = 4096  # largest K or N timed live on a CPU: the torch path dequantizes the whole matrix per call


@st.cache_resource(show_spinner=False)
def results(name: str) -> speed.Results:
    return speed.committed_run(name)


@st.cache_resource(show_spinner="Reading the architecture's layers from its config…")
def preset(arch: str) -> dict[str, tuple[int, int]]:
    return speed.preset_layers(arch)


@st.cache_resource(show_spinner=False)
def history(files: tuple[str, ...], card: str) -> dict[str, tuple[list[int], list[float | None]]]:
    return speed.kernel_history([r for r in map(results, files) if r.meta["card"] == card])


@st.cache_resource(show_spinner=False)
def targets(name: str) -> list[dict[str, object]]:
    return speed.targets(results(name))


lab_ui.title(__file__)
lab_ui.lesson_section("speed", "intro")

files = [p.stem for p in speed.committed_results()]
if not files:
    st.error("No committed GPU results in quantlab/data/gpu: "
             "run `python bench/gpu_matmul.py --out quantlab/data/gpu` on a GPU.")
    st.stop()
c1, c2 = st.columns([1.2, 2])
run = lab_ui.control(c1.selectbox, "Benchmark run", "speed_run", files[0], files)
res = results(run)
shape_slugs = [f"{k}x{n}" for k, n in res.shapes]
shape_slug = lab_ui.control(c2.selectbox, "Weight shape (in × out)", "speed_shape", shape_slugs[1 % len(shape_slugs)],
                            shape_slugs, format_func=lambda s: "K={} × N={}".format(*s.split("x")))
k, n = res.shapes[shape_slugs.index(shape_slug)]
extra = [m for m in res.methods if m not in MAIN_METHODS]
methods = lab_ui.control(st.multiselect, "Methods", "speed_methods", [m for m in MAIN_METHODS if m in res.methods],
                         MAIN_METHODS + extra, format_func=lambda m: speed.LABELS.get(m, m))
st.caption(f"Measured on **{res.label}** — {res.meta['timing']}. Copy bandwidth {res.meta['copy_gbps']:,.0f} GB/s "
           f"(read + write), bf16 matmul {res.meta['bf16_tflops']:,.0f} TFLOP/s, fp8 {res.meta['fp8_tflops']:,.0f} "
           "TFLOP/s, all measured in the same run."
           + ("" if torch.cuda.is_available() else " This app runs without a GPU: these are the committed results."))

shown = ("bf16", *(m for m in methods if m != "bf16"))
left, right = st.columns(2)
for where, batch in ((left, min(res.batch_sizes)), (right, 256 if 256 in res.batch_sizes else max(res.batch_sizes))):
    lab_ui.check(checks.int4_faster_at, res, batch, key=(run, batch), where=where)
one_token = res.speedup(k, n, min(res.batch_sizes), "w4a16")
lab_ui.chart(figures.speedup_chart, res, k, n, shown, key=(run, k, n, shown),
             headline=None if one_token is None else (f"W4A16 over bf16 at batch {min(res.batch_sizes)}",
                                                      f"{one_token:.2f}×"),
             code=snippets.speed_speedup(run, k, n, shown))
w4_geo = [res.geomean_speedup(b, "w4a16") for b in res.batch_sizes]
if all(g is not None for g in w4_geo):
    w4_low, w4_low_m = min(zip(w4_geo, res.batch_sizes))
    w4_cross = speed.crossover(res.batch_sizes, w4_geo)
    st.markdown(f"In this run, across its {len(res.shapes)} shapes (geometric mean), quantlab's W4A16 runs "
                f"**{w4_geo[0]:.2f}×** bf16 at one token, "
                + (f"falls below bf16 at **M ≈ {w4_cross:.0f}**, " if w4_cross else "never falls below bf16, ")
                + f"is slowest against it at M = {w4_low_m} (**{w4_low:.2f}×**) and runs **{w4_geo[-1]:.2f}×** at "
                f"M = {res.batch_sizes[-1]}.")
overlap = speed.overlap_gain(res)
if overlap:
    st.markdown(f"At M = {overlap.m}, unpacking *while* the tensor cores multiply is worth it: quantlab's Triton "
                f"kernel, whose warps unpack and then multiply, runs **{overlap.sequential:.2f}×** bf16; its CUDA "
                f"kernel, which unpacks the next step during the current one, runs **{overlap.overlapped:.2f}×** "
                "(geometric means over the shapes).")
lab_ui.lesson_section("speed", "speedup")

# -- why is my int4 model slower than fp16? -------------------------------------------------------------
st.subheader("Why is my int4 model slower than fp16?")
why = speed.why_slower(res, k, n)
cross = f"M ≈ {why.int4_crossover:.0f}" if why.int4_crossover else "no measured batch size"
st.markdown(
    f"On this card and shape, torch's built-in int4 kernel runs **{why.int4_at_1:.2f}×** bf16 at one token, "
    f"**{why.int4_at_16:.2f}×** at 16 tokens and **{why.int4_at_max:.2f}×** at {why.max_m} tokens; it falls below "
    f"bf16 at **{cross}**. The memory-bound ceiling at one token is **{why.ideal_at_1:.1f}×** (16 bits against "
    f"{speed.bits_per_weight('w4a16', k, n):.3f} per weight). quantlab's own W4A16 kernel measures "
    f"**{why.ours_at_1:.2f}×** at one token here."
)
lab_ui.lesson_section("speed", "why")
with st.expander("How quantlab's int4 kernel gets its speed"):
    lab_ui.lesson_section("speed", "kernel")
    card = str(res.meta["card"])
    lab_ui.chart(figures.history_chart, history(tuple(files), card), card, key=(tuple(files), card),
                 code=snippets.speed_history(files, card))
    lab_ui.lesson_section("speed", "history")

# -- roofline -------------------------------------------------------------------------------------------
st.subheader("The roofline")
lab_ui.chart(figures.roofline_chart, res, k, n, methods, key=(run, k, n, tuple(methods)),
             code=snippets.speed_roofline(run, k, n, methods))
lab_ui.lesson_section("speed", "roofline")

# -- your shape -----------------------------------------------------------------------------------------
st.subheader("Your layer: memory- or compute-bound?")
sel = lab_ui.selection()
archs = kv_cache.architectures()
origins = ["sidebar", *archs]
c1, c2, c3 = st.columns([1.4, 1.6, 1.2])
origin = lab_ui.control(c1.selectbox, "Shape from", "speed_origin", "sidebar", origins,
                        format_func=lambda o: "Layer picked in the sidebar" if o == "sidebar" else f"Architecture: {o}")
with lab_ui.user_errors():
    if origin == "sidebar":
        out_f, in_f = models.matrix_shape(sel.source, sel.weight_name)[:2]
        layers = {sel.layer: (int(in_f), int(out_f))}
    else:
        layers = preset(origin)
layer = lab_ui.control(c2.selectbox, "Layer", "speed_layer", next(iter(layers)), list(layers))
m = lab_ui.control(c3.select_slider, "Batch size M", "speed_m", 1,
                   [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192])
lk, ln = layers[layer]
bw, peak = float(res.meta["copy_gbps"]), float(res.meta["bf16_tflops"])
rows = []
for method in ("bf16", "w4a16", "w8a16"):
    with lab_ui.user_errors():  # a K that g128 does not divide has no W4A16 kernel shape
        b = speed.bound(m, lk, ln, method, bw, peak)
    rows.append({"method": speed.LABELS[method], "FLOP per byte": f"{b.intensity:.3g}",
                 "ridge (FLOP/B)": f"{b.ridge:.3g}", "memory time (µs)": f"{b.memory_us:.3g}",
                 "compute time (µs)": f"{b.compute_us:.3g}", "bound": "memory" if b.memory_bound else "compute"})
st.markdown(f"`{layer}`: K = {lk}, N = {ln}, at M = {m}, with the ceilings of {res.meta['card']} measured above.")
st.dataframe(pd.DataFrame(rows).set_index("method"), width="stretch")
floors = (lk, ln, bw, peak, tuple(2**i for i in range(14)), ("bf16", "w4a16", "w8a16"))
lab_ui.chart(figures.floors_chart, *floors, m, code=snippets.speed_floors(*floors))
lab_ui.lesson_section("speed", "bound")

# -- live timing ----------------------------------------------------------------------------------------
def time_here(measure, spinner: str) -> None:
    """One live measurement for this session, unless another session is measuring right now."""
    with st.spinner(spinner), lab_ui.user_errors():
        lab_ui.spend_heavy_run("Live timing")
        timing = live.measure_if_free(measure)
    if timing is None:
        st.warning("Another session is measuring right now; try again in a few seconds.")
    else:
        st.session_state["speed_live"] = timing


st.subheader("Time it here")
if torch.cuda.is_available():
    st.caption(f"This app has a GPU ({torch.cuda.get_device_name(0)}): time bf16 cuBLAS against quantlab's W4A16 "
               "kernel on the shape above. One measurement runs at a time for everyone using this server.")
    if st.button("Time on this GPU", key="speed_gpu"):
        time_here(lambda: live.measure_gpu(m, lk, ln), "Compiling and timing…")
else:
    ck, cn, cm = min(lk, CPU_CAP), min(ln, CPU_CAP), min(m, 64)
    st.caption(f"No GPU here. The button times, **on this CPU**, bf16 `F.linear` against quantlab's plain torch W4A16 "
               f"path (unpack + dequantize + matmul) at K={ck}, N={cn}, M={cm} (capped so it takes seconds). CPU "
               "numbers say nothing about GPU kernels; they show what a dequantize-every-call path costs.")
    if st.button("Time on this CPU", key="speed_cpu"):
        time_here(lambda: live.measure_cpu(cm, ck, cn), "Timing on the CPU…")
timing = st.session_state.get("speed_live")
if isinstance(timing, live.LiveTiming):
    base = timing.ms["bf16"]
    st.dataframe(pd.DataFrame([{"device": timing.device.upper() if timing.device == "cpu" else timing.device,
                                "shape": f"M={timing.m}, K={timing.k}, N={timing.n}", "method": name,
                                "ms per call": float(f"{t:.3g}"), "speedup over bf16": float(f"{base / t:.2g}")}
                               for name, t in timing.ms.items()]).set_index("method"), width="stretch")

with st.expander("Targets quantlab's kernels were written against, on this run"):
    goals = pd.DataFrame([{"target": t["target"], "goal (×)": t["goal"], "measured (×)": t["measured"],
                           "met": "yes" if t["met"] else "no"} for t in targets(run)]).set_index("target")
    st.dataframe(goals.style.format({"goal (×)": "{:g}", "measured (×)": "{:.2f}"}, na_rep="not measured"),
                 width="stretch")
    lab_ui.lesson_section("speed", "targets")
