"""The Storage lesson's syllabus claims, measured on shipped architectures."""
import pytest

import quantlab as ql
from quantlab.io import sizing
from quantlab.lessons import storage

W4_G128 = ql.QuantSpec(num_bits=4, strategy="group", group_size=128)


@pytest.fixture(scope="module")
def mistral():
    return (storage.syllabus_claims("mistral-7b"), sizing.model_size("mistral-7b", W4_G128),
            sizing.model_size("mistral-7b", W4_G128.with_(group_size=64)))


def test_claims_are_the_size_reports_numbers(mistral):
    claims, g128, g64 = mistral
    fp16, int4, scales, g64_claim = claims
    parts = g128.by_kind()
    assert fp16.measured_bytes == g128.original_bytes
    assert int4.measured_bytes == g128.total_bytes
    assert scales.measured_bytes == parts["scales"]
    assert (g64_claim.stated_bytes, g64_claim.measured_bytes) == (g128.total_bytes, g64.total_bytes)
    assert [c.stated_bytes for c in claims[:3]] == [14e9, 3.5e9, 50e6]


def test_mistral_numbers_from_first_principles(mistral):
    claims, g128, g64 = mistral
    parts = g128.by_kind()
    # A bf16 checkpoint: two bytes per parameter.
    assert g128.original_bytes == 2 * g128.num_params
    assert "7.25 B parameters × 2 bytes" in claims[0].detail
    # Eight 4-bit codes per int32: packed bytes are half the quantized weight count.
    quantized = 2 * parts["packed weights"]
    assert quantized == pytest.approx(6.98e9, rel=1e-3)
    # One bf16 scale per 128 weights.
    assert parts["scales"] == quantized // 128 * 2
    assert "0.125 extra bits per weight" in claims[2].detail
    # Embeddings and lm_head are not quantized: that, more than scales, is why INT4 is not 3.5 GB.
    config = sizing.read_json(sizing.shipped_configs()["mistral-7b"])
    kept = parts["embeddings"] + parts["lm_head"]
    assert kept == 2 * config["vocab_size"] * config["hidden_size"] * 2
    assert claims[1].measured_bytes > parts["packed weights"] + kept
    # Halving the group doubles the scales and nothing else.
    assert g64.by_kind()["scales"] == 2 * parts["scales"]
    assert g64.total_bytes - g128.total_bytes == pytest.approx(parts["scales"], rel=1e-4)
    assert f"(+{g64.total_bytes / g128.total_bytes - 1:.1%})" in claims[3].detail


def test_which_claims_hold_on_mistral(mistral):
    claims = mistral[0]
    # 14.5 GB is within 10% of 14 GB; 4.14 GB is not 3.5 GB; 109 MB of scales is not 50 MB;
    # g64 adds 2.6%.
    assert [c.holds for c in claims] == [True, False, False, True]


@pytest.mark.parametrize("arch", sorted(sizing.shipped_configs()))
def test_every_shipped_config_gives_four_consistent_claims(arch):
    claims = storage.syllabus_claims(arch)
    assert len(claims) == 4
    fp16, int4, scales, g64 = claims
    assert fp16.measured_bytes > int4.measured_bytes > scales.measured_bytes > 0
    assert g64.measured_bytes > g64.stated_bytes == int4.measured_bytes
    assert g64.holds  # smaller groups only add scales


@pytest.mark.parametrize(("measured", "holds"), [(100, True), (110, True), (90, True), (111, False),
                                                  (89, False), (0, False)])
def test_holds_within_ten_percent(measured, holds):
    assert storage.Claim("c", 100.0, measured, "").holds is holds


def test_ladder_counts_the_layers_each_group_size_leaves_unquantized():
    from quantlab.io import models

    ladder = storage.group_ladder(models.ModelSource.embedded(), W4_G128)
    by = {r.label: r for r in ladder.rungs}
    assert list(by) == ["channel", "g256", "g128", "g64", "g32"] and not ladder.left_out
    assert (by["g256"].unquantized, by["g256"].linear_layers) == (30, 36)
    assert all(by[g].unquantized == 0 and by[g].note is None for g in ("channel", "g128", "g64", "g32"))
    assert by["g256"].report.total_bytes > by["g128"].report.total_bytes
    numbers = storage.groups_numbers(ladder)
    assert numbers["scale_bits"] == "32" and numbers["g64_extra"] == "0.25"  # fp32 scales: 32/128
    assert "g256" in numbers["partial"] and "30 of 36" in numbers["partial"]


def test_ladder_leaves_out_a_group_size_that_divides_nothing(tmp_path):
    import torch
    from safetensors.torch import save_file

    from quantlab.io import models

    f = tmp_path / "m.safetensors"
    save_file({"model.layers.0.proj.weight": torch.randn(8, 96)}, str(f))
    ladder = storage.group_ladder(models.ModelSource.local(f), W4_G128)
    assert [r.label for r in ladder.rungs] == ["channel", "g32"] and ladder.left_out == ("g256", "g128", "g64")


def test_ladder_on_mistral_is_complete_and_grows_with_smaller_groups():
    ladder = storage.group_ladder("mistral-7b", W4_G128)
    sizes = [r.report.total_bytes for r in ladder.rungs]
    assert all(r.unquantized == 0 for r in ladder.rungs) and sizes == sorted(sizes)
    assert storage.groups_numbers(ladder) == {"scale_bits": "16", "g64_extra": "0.125", "g64_growth": "+2.6%",
                                              "partial": ""}
