"""Choose a scheme: the policy picks for the computed reason, the syllabus is checked against real
numbers, the hardware matrix is complete and sourced, and the recipes carry exactly the QuantSpec."""
import ast
import json
import math

import pytest
from compressed_tensors.quantization import QuantizationConfig, QuantizationScheme, preset_name_to_scheme

from quantlab.core.errors import QuantlabError
from quantlab.core.spec import SCHEMES, scheme_spec
from quantlab.io import cli, models
from quantlab.lessons import choose, hardware, recipes, speed

METRIC = "layer-output SQNR"


def _file(total: int, bits: float) -> choose.FileSize:
    return choose.FileSize(total, bits + 1.5, bits)


def _rows(hw: str, errors: dict[str, float], bits: dict[str, float], speedups: dict[str, float] | None = None):
    """Synthetic evidence for the candidates named, through the real `evidence` (matrix lookups)."""
    errs = {s: choose.LayerError(s, e, e, bits[s]) for s, e in errors.items()}
    files = {s: _file(int(bits[s] * 1e9), bits[s]) for s in errors}
    return choose.evidence(errs, files, speedups or {}, hw)


MEM = choose.Memory("llama-3.1-8b", 32768, 8, 16_060_522_496, 34_359_738_368, 17_179_869_184, 30.1)


def _rec(rows, priority, hw, floor=20.0, batch=1, timed=1):
    return choose.recommend(rows, priority, hw, floor, METRIC, MEM, batch, timed, "NVIDIA H200")


FOUR = {"w4a16-channel": 4.0, "w4a16": 4.125, "w4a16-g64": 4.25, "w8a16": 8.125, "fp8-dynamic": 8.0}


def test_priority_changes_the_pick_for_the_computed_reason():
    rows = _rows("hopper", {"w4a16-channel": 20.5, "w4a16": 21.5, "w4a16-g64": 22.0, "w8a16": 45.0,
                            "fp8-dynamic": 32.0}, FOUR)
    acc = _rec(rows, "accuracy", "hopper")
    assert acc.slug == "w8a16" and "45.0 dB" in acc.reason and "next FP8 dynamic at 32.0 dB" in acc.reason
    comp = _rec(rows, "compression", "hopper")
    assert comp.slug == "w4a16-channel" and "20.5 dB" in comp.reason and "20 dB floor" in comp.reason
    # Raising the floor above the per-channel error moves compression to the next smallest file.
    assert _rec(rows, "compression", "hopper", floor=21.0).slug == "w4a16"
    # channel -> g128 buys 1.0 dB for 0.125 bits (8 dB/bit >= 6.02): taken; g128 -> g64 buys 4 dB/bit: not.
    bal = _rec(rows, "balance", "hopper")
    assert bal.slug == "w4a16" and "8.0 dB per bit" in bal.reason and "4.0 dB per bit" in bal.reason


def test_balance_stops_where_scales_buy_less_than_a_code_bit():
    at_rate = {"w4a16-channel": 20.0, "w4a16": 20.0 + 0.125 * (choose.BIT_DB - 0.1), "w4a16-g64": 30.0 - 1e-9}
    rows = _rows("hopper", {**at_rate, "w4a16-g64": at_rate["w4a16"] + 0.125 * (choose.BIT_DB + 0.1)}, FOUR)
    # The best first step is channel -> g64 (above 6.02 dB/bit on average), so balance lands on g64.
    assert _rec(rows, "balance", "hopper").slug == "w4a16-g64"
    flat = _rows("hopper", {"w4a16-channel": 20.0, "w4a16": 20.5, "w4a16-g64": 20.7}, FOUR)
    assert _rec(flat, "balance", "hopper").slug == "w4a16-channel"


def test_hardware_decides_what_can_be_picked():
    errors = {"w4a16": 21.0, "w8a16": 45.0, "fp8-dynamic": 32.0}
    # MI300: no weight-only kernel in vLLM's table, FP8 only (and in FNUZ).
    mi300 = _rows("mi300", errors, FOUR)
    assert _rec(mi300, "accuracy", "mi300").slug == "fp8-dynamic"
    assert hardware.entry("mi300", "fp8-matmul").encoding == "E4M3FNUZ"
    # Throughput at batch 256: FP8 W8A8 is fastest on Hopper; on Ampere FP8 runs weight-only, so the
    # W8A8 timing does not apply and the fastest timed kernel there is a weight-only one.
    fast = {"w4a16": 0.55, "w8a16": 0.44, "fp8-dynamic": 1.29}
    hop = _rec(_rows("hopper", errors, FOUR, fast), "throughput", "hopper", batch=256, timed=256)
    assert hop.slug == "fp8-dynamic" and "1.29× bf16 at batch 256" in hop.reason
    amp = _rec(_rows("ampere", errors, FOUR, fast), "throughput", "ampere", batch=256, timed=256)
    assert amp.slug == "w4a16" and "Nothing beats bf16" in amp.reason
    # No timing speaks for a CPU: the fewest bytes per token.
    cpu = _rec(_rows("cpu", errors, FOUR, fast), "throughput", "cpu")
    assert cpu.slug == "w4a16" and "No timing" in cpu.reason
    # Long context: FP8 KV where the hardware has an FP8 cache.
    assert _rec(_rows("hopper", errors, FOUR), "long-context", "hopper").kv_fp8
    cpu_kv = _rec(_rows("cpu", errors, FOUR), "long-context", "cpu")
    assert not cpu_kv.kv_fp8 and "34.36 GB" in cpu_kv.reason


def test_nothing_runnable_is_a_one_line_error():
    rows = _rows("mi300", {"w4a16": 21.0}, FOUR)
    with pytest.raises(QuantlabError, match="none of the candidate schemes runs on AMD MI300"):
        _rec(rows, "accuracy", "mi300")


@pytest.fixture(scope="module")
def real_rows():
    src = models.ModelSource.embedded()
    layer = models.DEFAULT_LAYER
    w, x = models.load_tensor(src, f"{layer}.weight"), models.activation(layer)
    dtype = models.list_tensors(src)[f"{layer}.weight"].dtype
    errors = {s: choose.layer_error(s, w, x, dtype) for s in choose.CANDIDATES}
    res = speed.committed_run(speed.committed_results()[0].stem)
    return errors, choose.file_sizes("llama-3.1-8b", choose.CANDIDATES), res


def test_real_evidence_and_the_syllabus_check(real_rows):
    errors, files, res = real_rows
    assert errors["w8a16"].output_sqnr_db > errors["w4a16"].output_sqnr_db + 20
    assert errors["w4a16"].layer_bits == pytest.approx(4 + 32 / 128)  # MiniLM is fp32: 32-bit scales
    assert files["w4a16"].total_bytes == 5_700_679_568  # Llama-3.1-8B, as README and ModelCompressor say
    rows = choose.evidence(errors, files, choose.speedups(res, 1), "hopper")
    mem = choose.memory("llama-3.1-8b", 32768, 8, None)
    checked = {c.scenario: c for c in choose.check_syllabus(rows, "hopper", 20.0, METRIC, mem)}
    comp = checked["Maximum compression"]
    assert comp.verdict == "wrong" and files["w4a16-g64"].total_bytes > files["w4a16"].total_bytes
    assert "W4A16 g64 5.81 GB" in comp.evidence and "W4A16 g128 5.70 GB" in comp.evidence
    assert checked["Long context workloads"].verdict == "holds"  # 34.36 GB of cache against 5.70 GB


def test_misconceptions_are_measured(real_rows):
    _, _, res = real_rows
    facts = choose.int4_speed(res, 1)
    assert facts.torch_int4_crossover < facts.w4a16_crossover  # the kernel, not the format, decides
    assert facts.at_batch == res.geomean_speedup(1, "w4a16")
    four = choose.four_bit_file()
    assert four.naive_bytes == pytest.approx(4.015e9, rel=1e-3) and four.total_bytes == 5_700_679_568
    assert four.by_kind["embeddings"] + four.by_kind["lm_head"] + four.by_kind["scales"] > 2e9
    cal = choose.calibration_size(models.DEFAULT_LAYER, sentences=(1, 40))
    assert cal.static_db[-1] <= cal.static_db[0] + 0.01  # 40x the data bought nothing with min-max
    assert cal.dynamic_db > max(cal.static_db) + 5


def test_hardware_matrix_is_complete_and_sourced():
    for hw in hardware.HARDWARE:
        for cap in hardware.CAPABILITIES:
            e = hardware.entry(hw, cap)
            assert e.source.startswith("https://") and e.note
    assert hardware.entry("ampere", "fp8-matmul").status == "weight-only"  # no FP8 tensor cores
    assert hardware.entry("blackwell", "fp4").status == "native"
    assert hardware.entry("mi350", "fp8-matmul").encoding == "E4M3FN"
    assert {choose.capability(s) for s in choose.CANDIDATES} <= set(hardware.CAPABILITIES)
    with pytest.raises(QuantlabError, match="unknown hardware"):
        hardware.entry("tpu", "fp4")


def test_mxfp8_fp8_block_and_nf4_have_rows_of_their_own():
    assert {choose.capability(s) for s in ("mxfp8", "mxfp8a16", "fp8-block", "nf4", "nf4-fp32")} == \
        {"mxfp8", "fp8-block", "nf4"}
    # MX scaling needs MX matrix instructions: Blackwell and CDNA 4 have them, Hopper's FP8 cores do not.
    assert [hardware.entry(hw, "mxfp8").status for hw in ("hopper", "blackwell", "mi300", "mi350")] == \
        ["weight-only", "native", "weight-only", "native"]
    # Block-scaled FP8 runs where FP8 matmul does, and in MI300's own FP8 encoding.
    for hw in hardware.HARDWARE:
        assert hardware.entry(hw, "fp8-block").status == hardware.entry(hw, "fp8-matmul").status, hw
    assert hardware.entry("mi300", "fp8-block").encoding == "E4M3FNUZ"
    # NF4 is a table only bitsandbytes' kernels read, expanded to 16 bits: never native, never a math saving.
    assert {hardware.entry(hw, "nf4").status for hw in hardware.HARDWARE} == {"weight-only"}
    assert all("bitsandbytes" in hardware.entry(hw, "nf4").source for hw in hardware.HARDWARE)


def _recipe_groups(code: str) -> dict:
    """The literal `config_groups=` argument of the QuantizationModifier call in a recipe."""
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "QuantizationModifier":
            kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
            assert kwargs["ignore"] == ["lm_head"]
            return kwargs["config_groups"]
    raise AssertionError("no QuantizationModifier call in the recipe")


# Every scheme the lesson can recommend, plus the static-activation ones (their recipe calibrates).
@pytest.mark.parametrize("slug", [*choose.CANDIDATES, "w8a8-static", "fp8"])
def test_recipe_scheme_fields_equal_the_quantspec(slug):
    spec = scheme_spec(slug)
    code = recipes.recipes(slug, "meta-llama/Llama-3.1-8B", "hopper").llm_compressor
    group = QuantizationScheme(**_recipe_groups(code)["group_0"])
    weights = group.weights
    assert (weights.num_bits, weights.type, weights.symmetric, weights.strategy, weights.group_size,
            weights.dynamic) == (spec.num_bits, spec.type, spec.symmetric, spec.strategy, spec.group_size,
                                 spec.dynamic)
    acts = spec.activations
    if acts is None:
        assert group.input_activations is None
    else:
        got = group.input_activations
        assert (got.num_bits, got.type, got.strategy, got.dynamic) == (acts.num_bits, acts.type, acts.strategy,
                                                                       acts.dynamic)
    assert ("dataset=" in code) == (acts is not None and not acts.dynamic)  # static scales need calibration text
    preset = SCHEMES[slug].preset
    if preset:  # the explicit fields are llm-compressor's preset of the same name
        assert preset_name_to_scheme(preset, ["Linear"]).weights == weights


@pytest.mark.parametrize("slug", ["w4a16-g64", "w8a8"])
def test_export_command_parses_to_the_spec_and_writes_it(slug, tmp_path, capsys):
    command = recipes.export_command(slug).split()
    assert command[:3] == ["quantlab", "export", "embedded"]
    args = cli.parser().parse_args(command[1:])
    assert scheme_spec(args.scheme) == scheme_spec(slug) and args.group_size is None
    out = tmp_path / "out"
    assert cli.main([*command[1:3], str(out), *command[4:]]) == 0
    config = QuantizationConfig(**json.loads((out / "config.json").read_text())["quantization_config"])
    written = config.config_groups["group_0"].weights
    spec = scheme_spec(slug)
    assert (written.num_bits, written.strategy, written.group_size) == (spec.num_bits, spec.strategy, spec.group_size)


def test_load_line_follows_hardware_and_kv():
    vllm = recipes.recipes("w4a16", "meta-llama/Llama-3.1-8B", "hopper", kv_fp8=True)
    assert 'kv_cache_dtype="fp8"' in vllm.load and vllm.load_language == "python"
    mlx = recipes.recipes("w4a16-g64", "meta-llama/Llama-3.1-8B", "apple")
    assert mlx.load_language == "bash" and "--q-bits 4 --q-group-size 64" in mlx.load
    assert not math.isnan(choose.BIT_DB) and choose.BIT_DB == pytest.approx(6.0206, abs=1e-4)
