"""What-if comparisons: engine numbers and the page."""
import math

import pytest
import torch

from quantlab.core.spec import label
from quantlab.io import models, sizing
from quantlab.lessons import compare
from tests.app.apptest_util import run_page


@pytest.fixture(scope="module")
def layer():
    src = models.ModelSource.embedded()
    name = "encoder.layer.0.intermediate.dense"
    return models.load_tensor(src, f"{name}.weight"), models.activations()[name]


def test_finer_groups_cost_bits_and_buy_accuracy(layer):
    w, x = layer
    rows = {n: compare.layer_what_if(n, w, x) for n in ("w4a16-g32", "w4a16", "w4a16-tensor", "w8a16")}
    # fp32 MiniLM stores fp32 scales: 4 + 32/32 and 4 + 32/128, the Granularity page's own figures
    assert rows["w4a16-g32"].bits_per_weight == pytest.approx(5.0)
    assert rows["w4a16"].bits_per_weight == pytest.approx(4.25)
    assert rows["w4a16"].bits_per_weight == sizing.stored_bits_per_weight(tuple(w.shape), "F32", rows["w4a16"].spec)
    assert compare.group_step_bits(w) == pytest.approx(0.25)
    assert compare.group_step_bits(w.to(torch.bfloat16)) == pytest.approx(0.125)
    assert compare.group_step_bits(w[:, :96]) is None
    assert rows["w4a16-g32"].weight_sqnr_db > rows["w4a16"].weight_sqnr_db > rows["w4a16-tensor"].weight_sqnr_db
    assert rows["w8a16"].output_sqnr_db > rows["w4a16-g32"].output_sqnr_db + 15  # 4 more bits ≈ 24 dB


def test_activation_quantization_costs_output_accuracy(layer):
    w, x = layer
    w8a16 = compare.layer_what_if("w8a16-channel", w, x)
    w8a8 = compare.layer_what_if("w8a8", w, x)
    assert w8a8.quantizes_activations and not w8a16.quantizes_activations
    assert w8a8.weight_sqnr_db == pytest.approx(w8a16.weight_sqnr_db)  # same weight grid
    assert w8a8.output_sqnr_db < w8a16.output_sqnr_db


def test_group_that_does_not_divide_is_skipped_with_a_reason(layer):
    w, x = layer  # in_features = 384: 256 does not divide it
    row = compare.layer_what_if("w4a16-g256", w, x)
    assert row.skipped and "384" in row.skipped and math.isnan(row.weight_sqnr_db)


def test_fp8_block_and_nf4_rows_on_the_real_layer(layer):
    w, x = layer
    rows = {n: compare.layer_what_if(n, w, x) for n in ("fp8-block", "fp8-dynamic", "nf4", "nf4-fp32", "w4a16")}
    assert all(r.skipped is None for r in rows.values())
    block = rows["fp8-block"]
    assert block.quantizes_activations and not rows["nf4"].quantizes_activations
    # One float32 per 128x128 tile against one per output channel: fewer stored bits than FP8_DYNAMIC.
    tiles = (1536 // 128) * (384 // 128)
    assert block.bits_per_weight == 8 + 32 * tiles / w.numel() < rows["fp8-dynamic"].bits_per_weight
    assert rows["nf4"].bits_per_weight == 4 + 8 / 64 + 32 / (64 * 256) and rows["nf4-fp32"].bits_per_weight == 4.5
    # NF4's double-quantized g64 stores fewer bits than W4A16's g128 and still beats it on this layer.
    assert rows["nf4"].bits_per_weight < rows["w4a16"].bits_per_weight
    assert rows["nf4"].output_sqnr_db > rows["w4a16"].output_sqnr_db
    assert set(rows) - {"w4a16"} <= set(compare.CANDIDATES)


def test_a_layer_fp8_block_activations_cannot_split_is_skipped_with_the_reason(layer):
    w, x = layer
    narrow = compare.layer_what_if("fp8-block", w[:, :96], x[:, :96])  # tiles fit, groups of 128 do not
    assert narrow.skipped and "group_size 128" in narrow.skipped and math.isnan(narrow.weight_sqnr_db)
    assert compare.layer_what_if("fp8-block", w[:, :96], None).skipped is None  # weights alone are fine
    assert "64" in compare.layer_what_if("nf4", w[:, :96], x[:, :96]).skipped


def test_readme_preset_table_is_what_the_lab_measures(layer):
    """Every row of README.md's preset table, recomputed: scheme, stored bits, weight and output SQNR."""
    from pathlib import Path

    from quantlab.core.spec import PRESETS, scheme

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    body = text.split("<!-- presets-table -->")[1].split("<!-- /presets-table -->")[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in body.strip().splitlines()[2:]]
    assert [r[0] for r in rows] == [*PRESETS, "nf4", "nf4-fp32"]  # every preset, and bitsandbytes' NF4
    w, x = layer
    for name, _, bits, weight_db, output_db in rows:
        r = compare.layer_what_if(scheme(name).slug, w, x)
        assert [bits, weight_db, output_db] == [f"{r.bits_per_weight:.3f}", f"{r.weight_sqnr_db:.1f}",
                                                f"{r.output_sqnr_db:.1f}"], name


def test_sizes_grow_with_finer_groups():
    sizes = {n: s.total_bytes for n, s in compare.model_sizes("llama-3.1-8b", ("w4a16", "w4a16-g64", "w8a16")).items()}
    assert sizes["w4a16"] < sizes["w4a16-g64"] < sizes["w8a16"]
    assert 5.0e9 < sizes["w4a16"] < 6.0e9  # 8B: INT4 blocks + 16-bit embeddings and lm_head


def test_page_reacts_to_schemes_and_runs_the_whole_model():
    at = run_page("pages/compare.py")
    table = at.dataframe[0].value
    assert list(table.index) == [label(s) for s in compare.DEFAULT_CHOICE]
    assert [b.proto.label for b in at.get("download_button") if b.key == "cmp_csv"] == ["Download this table (CSV)"]
    at.multiselect(key="cmp_schemes").set_value(["w4a16-g256", "w8a16"]).run()
    assert not at.exception
    assert any("does not divide" in w.value for w in at.warning)
    assert any("kept unquantized" in c.value for c in at.caption)  # sizing says what it did with them
    assert at.query_params["cmp_schemes"] == ["w4a16-g256", "w8a16"]
    at.selectbox(key="cmp_target").set_value("llama-3.1-8b").run()
    assert "GB" in at.dataframe[0].value.iloc[1, -1]
    at.button(key="cmp_run").click().run()
    assert not at.exception
    whole = at.dataframe[1].value
    assert whole.loc["W8A16"].iloc[0] > 0.999
    assert any("distractors" in c for c in whole.columns)


def test_page_compares_fp8_block_and_nf4_down_to_the_whole_model():
    at = run_page("pages/compare.py")
    at.multiselect(key="cmp_schemes").set_value(["fp8-block", "nf4", "nf4-fp32"]).run()
    assert not at.exception and not at.warning
    assert list(at.dataframe[0].value.index) == [label(s) for s in ("fp8-block", "nf4", "nf4-fp32")]
    assert any("bitsandbytes' format" in c.value for c in at.caption)  # NF4's size is not a compressed-tensors file
    at.button(key="cmp_run").click().run()
    assert not at.exception
    whole = at.dataframe[1].value
    assert list(whole.index) == [label(s) for s in ("fp8-block", "nf4", "nf4-fp32")]
    assert (whole.iloc[:, 0] > 0.9).all()  # sentence embeddings survive all three


def test_page_tables_show_no_raw_none_or_four_decimal_percentages():
    at = run_page("pages/compare.py")
    at.button(key="cmp_run").click().run()
    assert not at.exception
    layer_table, whole = (_shown(d) for d in at.dataframe)
    assert not {"None", "nan"} & set(layer_table.to_numpy().ravel())
    assert layer_table.loc["W4A16 g128", "stored bits / weight (this layer)"] == "4.25"  # fp32 scales
    assert not any(v.endswith(".0000") for v in whole.to_numpy().ravel())


def _shown(frame):
    """The strings a dataframe element displays (its Styler's formatted values)."""
    import pyarrow as pa

    return pa.ipc.open_stream(frame.proto.arrow_data.styler.display_values).read_all().to_pandas()
