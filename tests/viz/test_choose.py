"""Figures of the Choose-a-scheme lesson: the evidence scatter and the memory bars."""
from quantlab.lessons import choose
from quantlab.viz import choose as figures


def _rows():
    errs = {"w4a16": choose.LayerError("w4a16", 21.0, 21.0, 4.25),
            "w8a16": choose.LayerError("w8a16", 45.0, 45.0, 8.25),
            "fp8-dynamic": choose.LayerError("fp8-dynamic", 32.0, 32.0, 8.08)}
    files = {"w4a16": choose.FileSize(5_700_679_568, 5.68, 4.125), "w8a16": choose.FileSize(9_190_340_760, 9.16, 8.125),
             "fp8-dynamic": choose.FileSize(9_084_014_440, 9.05, 8.0)}
    return choose.evidence(errs, files, {}, "ampere")


def test_scatter_colours_by_hardware_status_and_rings_the_pick():
    fig = figures.evidence_scatter(_rows(), "w8a16", "layer-output SQNR", "llama-3.1-8b", "Ampere")
    names = [t.name for t in fig.data]
    # Ampere: W4A16 and W8A16 run weight-only, FP8 too (FP8 Marlin): one status, then the ring.
    assert names == ["weight-only on Ampere", "recommended: W8A16"]
    ring = fig.data[-1]
    assert ring.x == (9.19034076,) and ring.y == (45.0,)
    assert "llama-3.1-8b file size (GB)" in fig.layout.xaxis.title.text


def test_memory_bars_stack_weights_and_cache():
    mem = choose.Memory("llama-3.1-8b", 32768, 8, 16_060_522_496, 34_359_738_368, 17_179_869_184, None)
    fig = figures.memory_bars(mem, [("bf16", 16_060_522_496, mem.kv16_bytes), ("W4A16 + FP8 KV", 5_700_679_568,
                                                                               mem.kv8_bytes)])
    assert fig.layout.barmode == "stack"
    weights, kv = fig.data
    assert weights.y == (16.060522496, 5.700679568) and kv.y == (34.359738368, 17.179869184)
    assert "32,768 tokens × 8" in fig.layout.title.text


def test_scatter_prints_only_names_that_keep_clear_and_the_pick_first():
    # W8A16 per-channel sits on top of W8A16 (0.1 GB, 0.1 dB apart): only the pick's name is printed.
    errs = {"w4a16": choose.LayerError("w4a16", 21.0, 21.0, 4.25),
            "w8a16": choose.LayerError("w8a16", 45.0, 45.0, 8.25),
            "w8a16-channel": choose.LayerError("w8a16-channel", 44.9, 44.9, 8.08)}
    files = {"w4a16": choose.FileSize(5_700_679_568, 5.68, 4.125), "w8a16": choose.FileSize(9_190_340_760, 9.16, 8.125),
             "w8a16-channel": choose.FileSize(9_084_041_112, 9.05, 8.1)}
    rows = choose.evidence(errs, files, {}, "ampere")
    pick = next(r for r in rows if r.slug == "w8a16-channel")
    fig = figures.evidence_scatter(rows, pick.slug, "layer-output SQNR", "llama-3.1-8b", "Ampere")
    printed = {t for trace in fig.data[:-1] for t in (trace.text or ()) if t}
    hover = {t for trace in fig.data[:-1] for t in trace.customdata}
    w8 = next(r for r in rows if r.slug == "w8a16")
    assert pick.label in printed and w8.label not in printed and w8.label in hover
