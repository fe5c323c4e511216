"""The Symmetric lesson's numbers: both modes on a one-sided tensor with known answers, the
derivation's live numbers, levels wasted against brute force, SQNR against bits."""
import re

import numpy as np
import pytest
import torch

import quantlab as ql
from quantlab.core import metrics
from quantlab.io import models
from quantlab.lessons import symmetric

LAYER = "encoder.layer.0.intermediate.dense"


@pytest.fixture(scope="module")
def weight():
    return models.load_tensor(models.ModelSource.embedded(), f"{LAYER}.weight")


@pytest.fixture(scope="module")
def one_sided():
    """Dense values in [0.25, 1]: like a post-ReLU activation, nothing below zero."""
    return torch.linspace(0.25, 1.0, 10001).reshape(1, -1)


def _distinct_codes(x: torch.Tensor, sym: bool, bits: int) -> int:
    return torch.unique(ql.quantize(x, ql.QuantSpec(num_bits=bits, symmetric=sym)).q).numel()


def test_one_sided_tensor_known_scales_zero_point_and_ranges(one_sided):
    cmp = symmetric.compare_modes(one_sided, 4)
    assert (cmp.x_min, cmp.x_max, cmp.amax, cmp.numel) == (0.25, 1.0, 1.0, 10001)
    sym, asym = cmp.symmetric, cmp.asymmetric
    # Symmetric: s = α / ((qmax − qmin) / 2) = 1 / 7.5, no zero point, range [−α, α].
    assert sym.scale == pytest.approx(1 / 7.5, rel=1e-6) and sym.zero_point == 0
    assert (sym.range_lo, sym.range_hi) == (-1.0, 1.0)
    # Asymmetric: the range widens to include 0, s = (max − min) / (qmax − qmin) = 1 / 15, z = qmin.
    assert asym.scale == pytest.approx(1 / 15, rel=1e-6) and asym.zero_point == -8
    assert (asym.range_lo, asym.range_hi) == (0.0, 1.0)
    # Both grids hold real 0 exactly; the asymmetric one starts there.
    assert 0.0 in sym.levels.tolist() and asym.levels[0] == 0.0
    assert asym.levels == pytest.approx(np.arange(16) / 15, rel=1e-6)
    assert sym.levels == pytest.approx(np.arange(-8, 8) / 7.5, rel=1e-6)


def test_asymmetric_beats_symmetric_by_one_bit_on_one_sided_data(one_sided):
    cmp = symmetric.compare_modes(one_sided, 4)
    # Half the step, a quarter of the rounding noise: 20·log10(2) ≈ 6.02 dB.
    gain = cmp.asymmetric.report.sqnr_db - cmp.symmetric.report.sqnr_db
    assert gain == pytest.approx(6.02, abs=0.3)
    assert cmp.asymmetric.report.mse < cmp.symmetric.report.mse / 3.5


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_levels_wasted_match_brute_force(one_sided, bits):
    cmp = symmetric.compare_modes(one_sided, bits)
    for sym, mode in ((True, cmp.symmetric), (False, cmp.asymmetric)):
        used = _distinct_codes(one_sided, sym, bits)
        assert mode.codes_used == used
        assert mode.levels_wasted == 2**bits - used
        # A level beyond the data can never be hit, so it is wasted; dense data hits every other one.
        assert mode.levels_outside_data == mode.levels_wasted
    # Symmetric throws away the whole negative half (and more), asymmetric only the levels below min.
    assert cmp.symmetric.levels_wasted > 2 ** (bits - 1)
    assert cmp.asymmetric.levels_wasted < cmp.symmetric.levels_wasted


def test_known_waste_at_4_bits(one_sided):
    cmp = symmetric.compare_modes(one_sided, 4)
    # Symmetric: codes round(0.25·7.5) = 2 … 7 are hit, −8 … 1 are not.
    assert (cmp.symmetric.codes_used, cmp.symmetric.levels_wasted, cmp.symmetric.levels_outside_data) == (6, 10, 10)
    # Asymmetric: 0.25·15 − 8 rounds to −4, so −8 … −5 (0 to 0.2) lie below the data.
    assert (cmp.asymmetric.codes_used, cmp.asymmetric.levels_wasted, cmp.asymmetric.levels_outside_data) == (12, 4, 4)


def test_real_weight_summary_and_worked_example(weight):
    cmp = symmetric.compare_modes(weight, 4)
    assert cmp.x_min == weight.min().item() and cmp.x_max == weight.max().item()
    assert cmp.amax == weight.abs().max().item() and cmp.numel == weight.numel()
    assert int(cmp.hist.counts.sum()) == weight.numel()
    assert cmp.example in weight.flatten().tolist()
    # The example sits near the 90th percentile of |w|.
    assert abs(cmp.example) == pytest.approx(weight.abs().quantile(0.9).item(), rel=0.01)
    for mode in (cmp.symmetric, cmp.asymmetric):
        assert mode.spec.qmin <= mode.example_code <= mode.spec.qmax
        assert mode.example_back == pytest.approx((mode.example_code - mode.zero_point) * mode.scale, rel=1e-6)
        assert abs(mode.example_back - cmp.example) <= mode.scale / 2 + 1e-7


def test_zero_point_cost_on_the_fp32_model_uses_32_bit_scales(weight):
    """fp32 MiniLM stores fp32 scales: g128 is 4 + 32/128 = 4.25 bits, and a zero point packed
    eight to an int32 along the rows adds 4/128: 4.28125 (bf16-scale figures would be 4.125 / 4.156)."""
    cost = symmetric.zero_point_cost(weight)
    assert (cost.granularity, cost.scale_bits) == ("g128", 32)
    assert cost.symmetric_bits == 4.25 and cost.asymmetric_bits == 4.28125
    assert symmetric.zero_point_cost(weight.to(torch.bfloat16)).symmetric_bits == 4.125
    # 128 does not divide 100: one scale per row, and 400 bits of codes fill 13 int32 words (416 bits)
    narrow = symmetric.zero_point_cost(weight[:, :100])
    assert narrow.granularity == "per-channel" and narrow.symmetric_bits == pytest.approx((416 + 32) / 100)


def test_story_tensor_is_where_asymmetry_pays_about_one_bit():
    x = models.activations()[symmetric.STORY[0]]
    cmp = symmetric.compare_modes(x, 8)
    gain = cmp.asymmetric.report.sqnr_db - cmp.symmetric.report.sqnr_db
    assert 4 < gain < 7 and x.min().item() > -0.2  # post-GELU: one-sided


def test_derivation_shows_the_formulas_with_this_tensors_numbers(weight):
    cmp = symmetric.compare_modes(weight, 4)
    amax = weight.abs().max().item()
    lo, hi = min(weight.min().item(), 0.0), max(weight.max().item(), 0.0)
    sym_text = "\n".join(symmetric.derivation(cmp, symmetric=True))
    assert "q ∈ [-8, 7]: 16 levels" in sym_text
    assert f"s = α / ((qmax − qmin) / 2) = {amax:.5g} / 7.5 = **{amax / 7.5:.5g}**" in sym_text
    assert "Zero point.** none" in sym_text
    assert f"x = {cmp.example:.5g}" in sym_text and f"**{cmp.symmetric.example_code}**" in sym_text
    asym = cmp.asymmetric
    asym_text = "\n".join(symmetric.derivation(cmp, symmetric=False))
    assert f"[min, max] = [{lo:.5g}, {hi:.5g}]" in asym_text
    assert f"s = (max − min) / (qmax − qmin) = {hi - lo:.5g} / 15 = **{(hi - lo) / 15:.5g}**" in asym_text
    assert asym.zero_point == round(-8 - lo / asym.scale)
    assert f"**{asym.zero_point}**: real 0 is code {asym.zero_point}" in asym_text
    assert sym_text != asym_text


def test_derivation_at_8_bits_uses_the_8_bit_grid(one_sided):
    cmp = symmetric.compare_modes(one_sided, 8)
    text = "\n".join(symmetric.derivation(cmp, symmetric=True))
    assert "q ∈ [-128, 127]: 256 levels" in text
    assert "= 1 / 127.5 = **" in text
    asym = "\n".join(symmetric.derivation(cmp, symmetric=False))
    assert "= 1 / 255 = **" in asym and "**-128**" in asym


def test_sqnr_rises_about_6_db_per_bit(weight):
    data = symmetric.sqnr_by_bits(weight)
    assert data["bits"] == list(range(2, 9))
    for mode in ("symmetric", "asymmetric"):
        values = data[mode]
        assert len(values) == 7
        assert all(b > a for a, b in zip(values, values[1:]))
        # Once the grid is fine enough, each extra bit halves the step: +6.02 dB.
        for gain in np.diff(values[3:]):
            assert gain == pytest.approx(6.02, abs=0.5)
    assert data["symmetric"][-1] == pytest.approx(
        symmetric.compare_modes(weight, 8).symmetric.report.sqnr_db, rel=1e-9)


def test_sqnr_by_bits_asymmetric_wins_at_every_width_on_one_sided_data(one_sided):
    data = symmetric.sqnr_by_bits(one_sided, bits=range(3, 7))
    assert data["bits"] == [3, 4, 5, 6]
    assert all(a > s + 4 for s, a in zip(data["symmetric"], data["asymmetric"]))


def test_bad_tensors_are_one_line_errors():
    with pytest.raises(ql.QuantlabError, match="NaN"):
        symmetric.compare_modes(torch.tensor([[1.0, float("nan")]]), 4)
    with pytest.raises(ql.QuantlabError, match="floating-point"):
        symmetric.compare_modes(torch.tensor([[1, 2]]), 4)


def _page(query=None):
    from tests.app.apptest_util import run_page

    return run_page("pages/symmetric.py", query=query)


def _text(at) -> str:
    """The page's prose as read: glossary links reduced to their words."""
    prose = " ".join(" ".join(m.value for m in at.markdown).split())
    return re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", prose)


def test_page_opens_on_an_activation_at_8_bits_and_quotes_its_numbers():
    at = _page()
    assert at.radio(key="sym_tensor").value == "input" and at.slider(key="sym_bits").value == 8
    assert at.toggle(key="sym_log").value is True  # activations: log counts
    assert at.selectbox(key="layer").value == symmetric.STORY[0]  # the lesson's story layer
    x = models.activations()[symmetric.STORY[0]]
    cmp = symmetric.compare_modes(x, 8)
    text = _text(at)
    assert (f"symmetric scores {cmp.symmetric.report.sqnr_db:.1f} dB and asymmetric "
            f"{cmp.asymmetric.report.sqnr_db:.1f} dB") in text
    assert "symmetric stores 4.25 bits per weight and asymmetric 4.281" in text  # fp32 scales, g128
    assert "{" not in text


def test_story_button_and_radio_reset_a_log_choice_that_belonged_to_the_other_tensor():
    at = _page()
    at.toggle(key="sym_log").set_value(False).run()  # log off on the input: sym_log=0 in the URL
    assert at.query_params["sym_log"] == "0"
    story = next(b for b in at.button if b.label.startswith("Outlier channels"))  # another input
    story.click().run()
    assert at.toggle(key="sym_log").value is False  # same tensor kind: the learner's choice stays
    weight = next(b for b in at.button if b.label.startswith("A weight"))
    weight.click().run()
    assert at.radio(key="sym_tensor").value == "weight" and at.toggle(key="sym_log").value is False
    assert "sym_log" not in at.query_params
    at.toggle(key="sym_log").set_value(True).run()
    at.radio(key="sym_tensor").set_value("input").run()
    assert at.toggle(key="sym_log").value is True and "sym_log" not in at.query_params  # input default


def test_a_deep_link_keeps_its_own_log_choice():
    at = _page({"sym_tensor": "input", "sym_log": "0"})
    assert at.radio(key="sym_tensor").value == "input" and at.toggle(key="sym_log").value is False


def test_weight_view_shows_stored_bits_from_the_real_layout():
    at = _page({"sym_tensor": "weight", "sym_bits": "4"})
    table = at.dataframe[0].value
    row = table.loc[metrics.BITS_LABEL]
    w = models.load_tensor(models.ModelSource.embedded(), f"{LAYER}.weight")
    assert row["symmetric"] == f"{4 + 32 / w.numel():.4g}" and row["asymmetric"] == f"{4 + 40 / w.numel():.4g}"
    assert metrics.BITS_LABEL not in list(_page().dataframe[0].value.index)  # activations are not stored
