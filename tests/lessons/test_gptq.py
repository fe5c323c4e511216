"""The GPTQ lesson's numbers on the embedded model's real layer and inputs."""
import pytest
import torch

import quantlab as ql
from quantlab.core.gptq import GptqArgs
from quantlab.io import models
from quantlab.lessons import gptq

LAYER = models.DEFAULT_LAYER
W4 = ql.QuantSpec.preset("W4A16")


@pytest.fixture(scope="module")
def held_out() -> gptq.LayerStudy:
    return gptq.embedded_study(LAYER, W4, GptqArgs(), gptq.OTHERS, 40, "general")


def test_held_out_gptq_beats_rtn_on_the_output_while_losing_on_the_weights(held_out):
    assert held_out.gptq_output_db > held_out.rtn_output_db + 2
    assert held_out.gptq_weight_db < held_out.rtn_weight_db
    assert not held_out.rtn_fallback
    n = held_out.numbers()
    assert n["gain_db"] == f"{held_out.gain_db:.1f}" and float(n["w_loss_db"]) > 0


def test_others_excludes_the_evaluation_text():
    mixed = gptq.calibration_inputs(LAYER, gptq.OTHERS, 40, "general")
    expected = sum(models.activation(LAYER, k).shape[0] for k in models.calibration_kinds() if k != "general")
    assert mixed.shape[0] == expected
    assert gptq.calibration_inputs(LAYER, "code", 3, "general").shape[0] < models.activation(LAYER, "code").shape[0]


def test_column_errors_move_error_to_low_energy_columns_and_sum_to_the_output_error(held_out):
    cols = held_out.columns
    assert sorted(cols.order.tolist()) == list(range(384))
    assert (cols.energy[:-1] >= cols.energy[1:]).all()  # act-order: most input energy first
    assert float(held_out.numbers()["tail_ratio"]) > float(held_out.numbers()["top_ratio"])
    # The running output error ends at each method's total output error relative to RTN's, which is
    # exactly the ratio of the two SQNRs (same signal).
    assert cols.rtn_output[-1] == pytest.approx(1.0)
    ratio_db = -10 * torch.log10(torch.tensor(cols.gptq_output[-1])).item()
    assert ratio_db == pytest.approx(held_out.gain_db, abs=0.05)


def test_in_sample_calibration_scores_above_held_out_and_rtn_closes_the_bars():
    rows = gptq.calibration_study(LAYER, W4, GptqArgs(), 40, "general")
    by = {r.calibration: r.output_db for r in rows}
    assert rows[-1].calibration == "RTN" and rows[0].calibration == gptq.OTHERS
    assert by["general"] > by[gptq.OTHERS] > by["RTN"]


def test_more_calibration_tokens_help_on_held_out_text():
    curve = gptq.samples_curve(LAYER, W4, GptqArgs(), gptq.OTHERS, "general")
    assert [p.sentences for p in curve] == list(gptq.SAMPLE_COUNTS)
    assert curve[-1].output_db > curve[0].output_db
    assert all(a.tokens < b.tokens for a, b in zip(curve, curve[1:]))


def test_sweeps_share_one_result_across_block_sizes():
    from quantlab.core.gptq import GptqArgs

    assert gptq.sweep_args(GptqArgs(block_size=16, dampening=0.05)) == GptqArgs(dampening=0.05)
