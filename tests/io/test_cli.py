"""The `quantlab` command: tables a newcomer can read, one-line errors, a real export."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from quantlab.io import cli


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_size_prints_the_breakdown(capsys) -> None:
    code, out, err = run(capsys, "size", "llama-3.1-8b", "--scheme", "w4a16")
    assert code == 0 and err == ""
    assert "packed weights" in out and "3,489,660,928" in out
    assert "scales" in out and "109,051,904" in out
    assert "224 Linear layers quantized" in out and "lm_head" in out


def test_size_of_an_nvfp4_checkpoint(capsys) -> None:
    code, out, _ = run(capsys, "size", "llama-3.1-8b", "--scheme", "nvfp4a16")
    assert code == 0 and "nvfp4-pack-quantized" in out
    assert "3,489,660,928" in out and "436,207,616" in out  # two codes per byte, one E4M3 byte per 16
    assert "global scales" in out and "4.500 in the quantized layers" in out


def test_size_of_nf4_and_fp8_block(capsys) -> None:
    code, out, _ = run(capsys, "size", "llama-3.1-8b", "--scheme", "NF4")
    assert code == 0 and "bitsandbytes-nf4" in out and "code books" in out
    # two codes per byte, as INT4 packs them; one absmax byte per 64 plus an fp32 per 256 of those
    assert "3,489,660,928" in out and "4.127 in the quantized layers" in out
    assert "note: NF4 is bitsandbytes' format" in out
    _, out, _ = run(capsys, "size", "llama-3.1-8b", "--scheme", "nf4-fp32")
    assert "4.500 in the quantized layers" in out
    _, out, _ = run(capsys, "size", "embedded", "--scheme", "FP8_BLOCK", "--per-tensor")
    assert "float-quantized" in out and "encoder.layer.0.intermediate.dense.weight_scale" in out
    assert "12x3" in out  # 1536x384 in 128x128 tiles


def test_group_size_option_doubles_the_scales(capsys) -> None:
    _, out, _ = run(capsys, "size", "llama-3.1-8b", "--group-size", "64")
    assert "218,103,808" in out and "INT4 sym g64" in out


def test_per_tensor_listing(capsys) -> None:
    _, out, _ = run(capsys, "size", "embedded", "--scheme", "W4A16_ASYM", "--per-tensor")
    assert "encoder.layer.0.intermediate.dense.weight_zero_point" in out
    assert "192x3" in out  # 1536 rows of 4-bit zero points packed into 192 int32 words, 3 groups


def test_help_explains_models_and_schemes(capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main(["size", "--help"])
    out = capsys.readouterr().out
    assert "llama-3.1-70b" in out and "config.json" in out and "--group-size" in out and "W4A16" in out


@pytest.mark.parametrize("argv,message", [
    (["size", "/no/such/thing"], "neither a file"),
    (["size", "llama-3.1-8b", "--scheme", "FP8", "--group-size", "64"], "no group size"),
    (["size", "llama-3.1-8b", "--group-size", "5000"], "divides none"),
    (["size", "llama-3.1-8b", "--scheme", "W5A16"], "unknown scheme"),
    (["size", "llama-3.1-8b", "--scheme", "bf16"], "unquantized baseline"),
    (["export", "mistral-7b", "/tmp/never-written"], "without weights"),
    (["export", "embedded", "/tmp/never-written", "--scheme", "nf4"], "not a compressed-tensors scheme"),
])
def test_bad_input_is_one_line_on_stderr(capsys, argv: list[str], message: str) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert message in err and err.count("\n") == 1


def test_export_writes_a_checkpoint(capsys, tmp_path: Path) -> None:
    code, out, _ = run(capsys, "export", "embedded", str(tmp_path / "w8"), "--scheme", "W8A8")
    assert code == 0 and "wrote" in out and "loads with" in out
    config = json.loads((tmp_path / "w8" / "config.json").read_text())
    assert config["quantization_config"]["format"] == "int-quantized"
    code, _, err = run(capsys, "export", "embedded", str(tmp_path / "w8"))
    assert code == 2 and "already exists" in err


def test_a_higher_layer_can_add_a_subcommand(capsys) -> None:
    """How `whatif` (in quantlab.lessons, which io may not import) joins the command."""
    def add(sub) -> None:
        p = sub.add_parser("hello", help="say hello")
        p.add_argument("--fail", action="store_true")

        def run_hello(args) -> int:
            if args.fail:
                raise cli.QuantlabError("no hello today")
            print("hello")
            return 0

        p.set_defaults(run=run_hello)

    assert run_extra(capsys, add, "hello") == (0, "hello\n", "")
    assert run_extra(capsys, add, "hello", "--fail") == (2, "", "quantlab: error: no hello today\n")
    with pytest.raises(SystemExit):
        cli.main(["--help"], extra=(add,))
    assert "{size,export,hello}" in capsys.readouterr().out


def run_extra(capsys: pytest.CaptureFixture[str], add: cli.Command, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv), extra=(add,))
    out, err = capsys.readouterr()
    return code, out, err
