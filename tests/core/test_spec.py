"""QuantSpec's own rules and serialisations, and the one scheme registry."""
import pytest
from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
from hypothesis import given
from hypothesis import strategies as st

import quantlab as ql
from quantlab.core import spec as specs
from quantlab.core.errors import QuantlabError


def test_every_registered_scheme_round_trips_through_its_slug():
    for slug, scheme in specs.SCHEMES.items():
        if scheme.spec is None:
            continue
        assert scheme.spec.to_url() == slug
        assert ql.QuantSpec.from_url(slug) == scheme.spec
        assert specs.scheme(slug) is scheme


def test_presets_come_from_the_registry_under_compressed_tensors_names():
    assert set(ql.PRESETS) == {"W4A16", "W4A16_ASYM", "W8A16", "W8A8", "FP8", "FP8_DYNAMIC", "NVFP4A16", "NVFP4",
                               "MXFP4A16", "MXFP4", "MXFP8A16", "MXFP8", "W4AFP8", "FP8_BLOCK"}
    for name, spec in ql.PRESETS.items():
        assert specs.scheme(name).spec == spec  # the CLI's W4A16_ASYM is the URL's w4a16-asym
    assert len({specs.scheme(s).label for s in specs.SCHEMES}) == len(specs.SCHEMES)


@pytest.mark.parametrize("preset", sorted(ql.PRESETS))
def test_registered_presets_are_compressed_tensors_own(preset):
    import torch
    from compressed_tensors.quantization import preset_name_to_scheme

    theirs = preset_name_to_scheme(preset, ["Linear"])
    scale_dtypes = {torch.float8_e4m3fn: "e4m3", torch.uint8: "e8m0", None: None}
    ours = ql.PRESETS[preset]
    for args, spec in ((theirs.weights, ours), (theirs.input_activations, ours.activations)):
        if args is None:
            assert spec is None
            continue
        assert spec is not None
        block = tuple(args.block_structure) if args.block_structure is not None else None
        assert (spec.num_bits, spec.type, spec.strategy, spec.group_size, spec.symmetric, spec.dynamic,
                spec.scale_dtype, spec.block_structure) == (args.num_bits, args.type, args.strategy, args.group_size,
                                                            args.symmetric, args.dynamic,
                                                            scale_dtypes[args.scale_dtype], block)


def test_what_iterates_the_registry_takes_every_entry():
    """The CLI, the hardware matrix and the kernels each answer for every scheme: a row, or one line."""
    import torch

    from quantlab.io import cli
    from quantlab.kernels.layout import PackedLinear
    from quantlab.lessons import choose, hardware

    assert all(p in cli.parser().format_help() for p in ql.PRESETS)
    w = torch.randn(32, 256)
    for slug, scheme in specs.SCHEMES.items():
        if scheme.spec is None:
            continue
        assert choose.capability(slug) in hardware.CAPABILITIES
        spec = scheme.spec
        if spec.type == "float" or spec.activations is not None:
            with pytest.raises(QuantlabError) as err:
                PackedLinear.from_quantized(ql.quantize(w, spec))
            assert "\n" not in str(err.value)
    assert {choose.capability(s) for s in ("nvfp4", "nvfp4a16", "mxfp4", "mxfp4a16")} == {"fp4"}
    assert choose.capability("w4afp8") == "fp8-matmul"  # its matmul runs in FP8, not INT8
    assert {choose.capability(s) for s in ("mxfp8", "mxfp8a16")} == {"mxfp8"}
    assert (choose.capability("fp8-block"), choose.capability("nf4"), choose.capability("nf4-fp32")) == \
        ("fp8-block", "nf4", "nf4")


@given(bits=st.integers(2, 8), symmetric=st.booleans(), group=st.sampled_from([None, 16, 32, 96, 128]),
       observer=st.sampled_from(["minmax", "mse", "percentile"]), dynamic_acts=st.booleans())
def test_any_spec_round_trips_through_the_url(bits, symmetric, group, observer, dynamic_acts):
    kwargs = {"mse": {"norm": 2.0}, "percentile": {"percentile": 99.5}}.get(observer, {})
    spec = ql.QuantSpec(num_bits=bits, symmetric=symmetric, strategy="group" if group else "channel",
                        group_size=group, observer=observer, observer_kwargs=kwargs)
    acts = ql.QuantSpec(num_bits=8, strategy="token", dynamic=True) if dynamic_acts else ql.QuantSpec(num_bits=8)
    for s in (spec, spec.with_(activations=acts)):
        assert ql.QuantSpec.from_url(s.to_url()) == s


@pytest.mark.parametrize("text", ["", "int4", "int4-sym", "int9-sym-g128", "fp8-both-tensor", "int4-sym-gx",
                                  "int4-sym-g128-nope", "int4-sym-g128+banana"])
def test_malformed_url_specs_are_one_line_errors(text):
    with pytest.raises(QuantlabError):
        ql.QuantSpec.from_url(text)


def test_static_activations_must_be_per_tensor_on_the_spec_itself():
    with pytest.raises(QuantlabError, match="static activation scales are per tensor"):
        ql.QuantSpec(num_bits=8, strategy="channel", activations=ql.QuantSpec(num_bits=8, strategy="token"))
    ok = ql.QuantSpec(num_bits=8, strategy="channel",
                      activations=ql.QuantSpec(num_bits=8, strategy="token", dynamic=True))
    assert ok.activations.dynamic


def test_group_size_rule_is_one_method():
    assert ql.QuantSpec.preset("W8A8").with_group_size(64) == ql.QuantSpec(
        num_bits=8, strategy="group", group_size=64, activations=ql.QuantSpec.preset("W8A8").activations)
    with pytest.raises(QuantlabError, match="FP8"):
        ql.QuantSpec.preset("FP8").with_group_size(64)


@pytest.mark.parametrize("name", sorted(ql.PRESETS))
def test_ct_args_parse_as_compressed_tensors_scheme_equal_to_its_preset(name):
    from compressed_tensors.quantization.quant_scheme import preset_name_to_scheme

    ours = QuantizationScheme(targets=["Linear"], **ql.QuantSpec.preset(name).to_ct_scheme())
    theirs = preset_name_to_scheme(name, ["Linear"])
    for part in ("weights", "input_activations"):
        a, b = getattr(ours, part), getattr(theirs, part)
        assert (a is None) == (b is None)
        if a is not None:
            fields = ("num_bits", "type", "symmetric", "strategy", "group_size", "dynamic", "scale_dtype",
                      "block_structure")
            assert {f: getattr(a, f) for f in fields} == {f: getattr(b, f) for f in fields}
    assert QuantizationArgs(**ql.QuantSpec.preset(name).to_ct_args()).num_bits == ql.QuantSpec.preset(name).num_bits
