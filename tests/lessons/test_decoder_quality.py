"""Perplexity and KL divergence of a quantized decoder against itself unquantized (tiny random Llama)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

import quantlab as ql
from quantlab.lessons import decoder_quality
from tests.io.test_decoder import save_tiny_llama


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, decoder_quality.Quality]:
    folder: Path = save_tiny_llama(tmp_path_factory.mktemp("tiny-llama-quality"))
    specs = {"W4A16": ql.QuantSpec.preset("W4A16"), "W8A16": ql.QuantSpec.preset("W8A16"),
             "W8A8": ql.QuantSpec.preset("W8A8")}
    return decoder_quality.compare(folder, specs)


def test_reference_has_zero_kl_and_a_finite_perplexity(results) -> None:
    fp = results["fp"]
    assert fp.kl_mean == 0 and math.isfinite(fp.perplexity) and fp.perplexity > 1
    assert fp.tokens > 200 and fp.tokens_per_s > 0


def test_fewer_bits_move_the_predictions_more(results) -> None:
    assert 0 < results["W8A16 rtn"].kl_mean < results["W4A16 rtn"].kl_mean
    assert results["W8A8 rtn"].kl_mean > results["W8A16 rtn"].kl_mean  # activations quantized too


def test_gptq_moves_them_less_than_rtn(results) -> None:
    assert results["W4A16 gptq"].kl_mean < results["W4A16 rtn"].kl_mean
    assert abs(math.log(results["W4A16 gptq"].perplexity / results["fp"].perplexity)) < \
        abs(math.log(results["W4A16 rtn"].perplexity / results["fp"].perplexity))


def test_the_heldout_text_is_not_a_calibration_text() -> None:
    from quantlab.io import models

    heldout = set(decoder_quality.heldout_texts())
    assert len(heldout) >= 8
    assert not heldout & {s for kind in models.calibration_kinds() for s in models.sample_texts(kind)}
