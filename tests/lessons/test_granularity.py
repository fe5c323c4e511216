"""The Granularity lesson's numbers on a real MiniLM layer: error against stored bits, the scale
map, the channels one scale ruins, and the first packed word."""
import math

import pytest
import torch

import quantlab as ql
from quantlab.core import metrics, packing
from quantlab.io import models, sizing
from quantlab.lessons import granularity

LAYER = "encoder.layer.0.intermediate.dense"
ORDER = ["g32", "g64", "g128", "channel", "tensor"]  # finest to coarsest for 384 input columns


@pytest.fixture(scope="module")
def weight():
    w = models.load_tensor(models.ModelSource.embedded(), f"{LAYER}.weight")
    assert w.shape == (1536, 384) and w.dtype == torch.float32
    return w


@pytest.fixture(scope="module")
def points(weight):
    return granularity.tradeoff(weight, models.activation(LAYER))


def _family(points, bits, sym):
    return {p.label: p for p in points
            if (p.spec.type, p.spec.num_bits, p.spec.symmetric) == ("int", bits, sym)}


def test_candidates_and_unusable_groups():
    labels = [label for label, _, _ in granularity.granularities()]
    assert labels == ["channel", "g32", "g64", "g128", "g256", "tensor"]
    custom = granularity.granularities(96)
    assert [label for label, _, _ in custom] == ["channel", "g32", "g64", "g96", "g128", "g256", "tensor"]
    assert ("g96", "group", 96) in custom
    assert len(granularity.granularities(128)) == 6  # a custom size already listed is not repeated
    assert granularity.unusable_groups(384) == [256]
    assert granularity.unusable_groups(384, 100) == [100, 256]
    assert granularity.unusable_groups(4096, 96) == [96]
    assert granularity.unusable_groups(512) == []


def test_tradeoff_covers_every_usable_candidate(weight, points):
    # bits × sym/asym × granularities (g256 left out), then the block formats on the same layer
    assert len(points) == 2 * 2 * len(ORDER) + len(granularity.BLOCK_FORMATS)
    for bits in (4, 8):
        for sym in (True, False):
            assert sorted(_family(points, bits, sym)) == sorted(ORDER)
    assert all(p.label != "g256" for p in points)
    rows = weight[:32]  # which candidates run depends on the input dimension only
    with_custom = granularity.tradeoff(rows, None, custom_group=96, bits_options=(4,))
    micro = {"NVFP4 (weights)", "MXFP4 (weights)", "MXFP8 (weights)", "FP8 block 128×128", "NF4 double-quant",
             "NF4 (fp32 absmax)"}
    assert {p.label for p in with_custom} == set(ORDER) | {"g96"} | micro
    odd = granularity.tradeoff(rows, None, custom_group=100, bits_options=(4,))
    assert {p.label for p in odd} == set(ORDER) | micro


def test_nvfp4_beats_int4_at_the_same_stored_bits_on_the_real_layer(points):
    by_label = {p.label: p for p in points}
    nvfp4, g64 = by_label["NVFP4 (weights)"], _family(points, 4, True)["g64"]
    assert nvfp4.bits_per_weight == g64.bits_per_weight == 4.5  # E4M3 per 16 against fp32 per 64
    assert nvfp4.output_sqnr_db > g64.output_sqnr_db


def test_nf4_and_fp8_tiles_on_the_real_layer(points):
    by_label = {p.label: p for p in points}
    int4, int8 = _family(points, 4, True), _family(points, 8, True)
    nf4, nf4_fp32, tiles = by_label["NF4 double-quant"], by_label["NF4 (fp32 absmax)"], by_label["FP8 block 128×128"]
    assert all(p.spec.activations is None for p in (nf4, tiles))  # weights alone, as for the integer grids
    # Normal-quantile levels fit these bell-shaped weights better than a uniform grid, at fewer bits.
    assert nf4.bits_per_weight < int4["g128"].bits_per_weight < int4["g64"].bits_per_weight == nf4_fp32.bits_per_weight
    assert nf4.weight_sqnr_db > int4["g64"].weight_sqnr_db and nf4.output_sqnr_db > int4["g64"].output_sqnr_db
    # Double quantization saves 0.37 bits per weight for a few hundredths of a dB.
    assert nf4_fp32.bits_per_weight - nf4.bits_per_weight == pytest.approx(0.5 - 0.125 - 32 / (64 * 256))
    assert 0 <= nf4_fp32.weight_sqnr_db - nf4.weight_sqnr_db < 0.05
    # FP8 keeps 3 mantissa bits whatever the scale: 128x128 tiles cost almost nothing and sit far
    # below INT8's 255 levels per channel, far above any INT4 grid.
    assert tiles.bits_per_weight < int8["channel"].bits_per_weight
    assert int4["g32"].weight_sqnr_db + 5 < tiles.weight_sqnr_db < int8["channel"].weight_sqnr_db - 5


def test_every_family_has_its_own_colour_on_the_pareto_chart(points):
    from quantlab.viz import granularity as viz

    fig = viz.pareto(points, output=True)
    names = [t.name for t in fig.data]
    assert names == ["INT4 sym", "INT4 asym", "INT8 sym", "INT8 asym", "FP8 tiles", "NF4", "microscaling",
                     "Pareto front"]
    assert len({t.marker.color for t in fig.data[:-1]}) == len(names) - 1
    assert sorted(fig.data[names.index("NF4")].customdata) == ["NF4 (fp32 absmax)", "NF4 double-quant"]


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("sym", [True, False])
def test_finer_groups_cost_more_bits_and_buy_higher_sqnr(points, bits, sym):
    fam = _family(points, bits, sym)
    sqnr = [fam[label].weight_sqnr_db for label in ORDER]
    cost = [fam[label].bits_per_weight for label in ORDER]
    assert all(a > b for a, b in zip(sqnr, sqnr[1:])), sqnr
    assert all(a > b for a, b in zip(cost, cost[1:])), cost
    # One scale for the whole matrix is ruined by its widest channel: far below everything else.
    assert fam["channel"].weight_sqnr_db > fam["tensor"].weight_sqnr_db + 10
    # The layer's output on real inputs follows the weight error.
    assert fam["g32"].output_sqnr_db > fam["tensor"].output_sqnr_db + 10


def test_int8_beats_int4_at_every_granularity(points):
    for sym in (True, False):
        four, eight = _family(points, 4, sym), _family(points, 8, sym)
        for label in ORDER:
            assert eight[label].weight_sqnr_db > four[label].weight_sqnr_db + 18
            assert eight[label].bits_per_weight == pytest.approx(four[label].bits_per_weight + 4, abs=0.2)


def test_measured_bits_are_the_stored_bytes_and_match_the_formula(weight, points):
    numel = weight.numel()
    rows, cols = weight.shape
    for p in points:
        b, g = p.spec.num_bits, p.spec.group_size
        if p.spec.type == "nf4":  # two codes per byte; fp32 absmax, or a byte each plus an fp32 per 256
            blocks = numel // g
            scale_bytes = blocks + 4 * math.ceil(blocks / 256) if p.spec.scale_dtype else 4 * blocks
            assert p.stored_bytes == numel // 2 + scale_bytes, p
            assert p.bits_per_weight == pytest.approx(p.formula_bits, rel=1e-12)
            continue
        if p.spec.scale_dtype is not None:  # microscaling: one 8-bit scale per block, whatever the dtype
            assert p.stored_bytes == numel * b // 8 + rows * cols // g, p
            assert p.formula_bits == metrics.bits_per_weight(p.spec, (rows, cols), 8) == b + 8 / g
            continue
        if p.spec.strategy == "block":  # one byte per weight, one float32 per 128x128 tile
            assert p.stored_bytes == numel + 4 * math.ceil(rows / 128) * math.ceil(cols / 128), p
            assert p.bits_per_weight == pytest.approx(p.formula_bits, rel=1e-12)
            continue
        scales = {"tensor": 1, "channel": rows, "group": rows * cols // (g or 1)}[p.spec.strategy]
        # Codes (4-bit packed eight to an int32, 8-bit as int8), float32 scales (the weight's dtype),
        # int8-sized zero points unless packed too.
        zp_bytes = 0 if p.spec.symmetric else (scales * b // 8 if p.spec.strategy != "tensor" else 1)
        expected = numel * b // 8 + scales * 4 + zp_bytes
        assert p.stored_bytes == expected, p
        assert p.bits_per_weight == sizing.stored_bits_per_weight((rows, cols), "F32", p.spec)  # the one function
        assert p.bits_per_weight == pytest.approx(8 * p.stored_bytes / numel, rel=1e-12)
        assert p.formula_bits == metrics.bits_per_weight(p.spec, (rows, cols), 32)
        if (b, p.spec.symmetric, p.spec.strategy) == (4, False, "tensor"):
            # The lone per-tensor zero point is stored as a whole int8: 4 bits more than b / g counts.
            assert p.bits_per_weight - p.formula_bits == pytest.approx(4 / numel, rel=1e-9)
        else:
            assert p.bits_per_weight == pytest.approx(p.formula_bits, rel=1e-12)
    g128 = _family(points, 4, True)["g128"]
    assert g128.bits_per_weight == 4 + 32 / 128


def test_without_inputs_there_is_no_output_sqnr(weight, points):
    bare = granularity.tradeoff(weight, None, bits_options=(4,))
    assert all(p.output_sqnr_db is None for p in bare)
    assert all(p.output_sqnr_db is not None and math.isfinite(p.output_sqnr_db) for p in points)
    same = {(p.label, p.spec.symmetric): p.weight_sqnr_db for p in points if p.spec.num_bits == 4}
    assert all(same[(p.label, p.spec.symmetric)] == p.weight_sqnr_db for p in bare if p.spec.num_bits == 4)


def test_scale_map_pools_real_scales_to_a_few_hundred_rows(weight):
    spec = ql.QuantSpec(num_bits=4, strategy="group", group_size=128)
    smap = granularity.scale_map(weight, spec)
    scales = ql.quantize(weight, spec).scale.float()
    assert scales.shape == (1536, 3)
    assert smap.values.shape == (384, 3) and smap.rows_per_cell == 4 and smap.group_size == 128
    assert torch.equal(smap.values, scales.reshape(384, 4, 3).amax(dim=1))
    channel = granularity.scale_map(weight, spec.with_(strategy="channel", group_size=None))
    assert channel.values.shape == (384, 1) and channel.group_size == 384
    tensor = granularity.scale_map(weight, spec.with_(strategy="tensor", group_size=None))
    assert tensor.values.shape == (1, 1) and tensor.rows_per_cell == 1
    assert tensor.values.item() == pytest.approx(weight.abs().max().item() / 7.5, rel=1e-6)


def test_scale_map_small_layer_unpooled_and_ragged_pooling():
    w = torch.arange(1, 1 + 8 * 64, dtype=torch.float32).reshape(8, 64)
    spec = ql.QuantSpec(num_bits=8, strategy="group", group_size=32)
    smap = granularity.scale_map(w, spec)
    assert smap.rows_per_cell == 1 and smap.values.shape == (8, 2)
    # Symmetric 8-bit: each group's scale is its max |w| / 127.5.
    expected = w.reshape(8, 2, 32).amax(dim=2) / 127.5
    assert torch.allclose(smap.values, expected, rtol=1e-6)
    tall = torch.randn(389, 64, generator=torch.Generator().manual_seed(0))
    pooled = granularity.scale_map(tall, spec)
    assert pooled.rows_per_cell == 2 and pooled.values.shape == (195, 2)
    scales = ql.quantize(tall, spec).scale.float()
    assert torch.equal(pooled.values[-1], scales[-1])  # the odd last row is a cell of its own
    assert torch.equal(pooled.values[0], scales[:2].amax(dim=0))


def test_where_tensor_fails_known_answer():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(16, 64, generator=g)
    w[3] *= 50  # one wide channel sets the per-tensor scale
    fine = ql.QuantSpec(num_bits=4, strategy="channel")
    fail = granularity.where_tensor_fails(w, fine)
    assert fail.coarse.strategy == "tensor" and fail.fine == fine
    assert torch.allclose(fail.absmax, w.abs().amax(dim=1))
    # The widest channel's own scale is the tensor's scale: identical codes, identical SQNR.
    assert fail.sqnr_coarse[3] == fail.sqnr_fine[3]
    narrow = torch.arange(16) != 3
    assert (fail.sqnr_fine[narrow] > fail.sqnr_coarse[narrow] + 10).all()
    for row in (0, 3, 7):
        ref = metrics.sqnr_db(w[row], ql.quantize(w, fail.coarse).dequantize()[row])
        assert fail.sqnr_coarse[row].item() == pytest.approx(ref, rel=1e-5)
    worst = fail.worst(3)
    assert len(worst) == 3
    assert [r["channel"] for r in worst] == torch.argsort(fail.sqnr_coarse)[:3].tolist()
    assert all(r["channel"] != 3 for r in worst)
    first = worst[0]
    assert set(first) == {"channel", "max |w|", "range / median", f"SQNR {fail.coarse.label} (dB)",
                          f"SQNR {fine.label} (dB)"}
    assert first["range / median"] == pytest.approx(first["max |w|"] / fail.absmax.median().item())


def test_an_all_zero_matrix_has_no_median_range_and_no_crash():
    fail = granularity.where_tensor_fails(torch.zeros(4, 8), ql.QuantSpec(num_bits=4, strategy="channel"))
    worst = fail.worst(2)
    assert len(worst) == 2 and all(math.isnan(r["range / median"]) for r in worst)
    assert all(math.isnan(v) for v in fail.fine_range_db())


def test_fine_range_is_the_channels_lowest_median_and_highest(weight):
    fail = granularity.where_tensor_fails(weight, ql.QuantSpec(num_bits=4, strategy="group", group_size=128))
    lo, median, hi = fail.fine_range_db()
    assert (lo, hi) == (fail.sqnr_fine.min().item(), fail.sqnr_fine.max().item())
    assert lo < median < hi and 8 < lo < 14 and 17 < median < 21  # measured: 10.8, 19.0, 21.0 dB


@pytest.mark.parametrize("cols,default", [(384, 96), (1536, 96), (13, 13), (64, 64), (50, 50), (100, 50), (1, None)])
def test_custom_group_default_always_divides_and_fits(cols, default):
    assert granularity.custom_default(cols) == default
    if default is not None:
        assert cols % default == 0 and 2 <= default <= cols


def test_heatmap_groups_fall_back_to_the_whole_row():
    assert granularity.heatmap_groups(384, 96) == [32, 64, 96, 128]
    assert granularity.heatmap_groups(13, 13) == [13] and granularity.heatmap_groups(1) == [1]
    assert granularity.heatmap_default([32, 64, 128]) == 128 and granularity.heatmap_default([13]) == 13


def test_where_tensor_fails_on_the_real_layer(weight):
    fail = granularity.where_tensor_fails(weight, ql.QuantSpec(num_bits=4, strategy="group", group_size=128))
    assert fail.absmax.shape == (1536,) and fail.sqnr_coarse.shape == fail.sqnr_fine.shape == (1536,)
    assert fail.sqnr_fine.median() > fail.sqnr_coarse.median() + 10
    # The channel with the smallest range suffers most under one shared scale.
    assert fail.sqnr_coarse[fail.absmax.argmin()] < fail.sqnr_coarse.median()


@pytest.mark.parametrize("spec", [ql.QuantSpec(num_bits=4, strategy="group", group_size=128),
                                  ql.QuantSpec(num_bits=8, strategy="channel")])
def test_first_word_is_the_first_int32_of_weight_packed(weight, spec):
    diagram = granularity.first_word(weight, spec)
    q = ql.quantize(weight, spec.with_(num_bits=4)).q
    assert diagram.num_bits == 4
    assert diagram.codes == tuple(q[0, :8].tolist())
    assert diagram.word == packing.pack(q[:1, :8], 4)[0, 0].item()
    assert diagram.word == packing.pack(q, 4)[0, 0].item()  # the whole matrix packed: same first word
    assert diagram.stored == tuple(c + 8 for c in diagram.codes)
    assert int(diagram.binary, 2) == diagram.word & 0xFFFFFFFF
