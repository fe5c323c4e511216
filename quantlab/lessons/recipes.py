"""Copyable recipes for a scheme: llm-compressor, the line that loads the result, `quantlab export`.

The recipe spells the scheme out as `config_groups` (the fields of compressed-tensors'
`QuantizationScheme`, from `QuantSpec.to_ct_scheme`) rather than only a preset name: it works
for schemes without a preset (g64, per-channel) and shows the very fields the lessons taught.
The modifier is `QuantizationModifier`, round-to-nearest with the min-max observer, which is
what this lab computes bit for bit; GPTQ or AWQ would change the weights the lab measured.
"""
from __future__ import annotations

import pprint
from dataclasses import dataclass

from quantlab.core.errors import QuantlabError
from quantlab.core.spec import scheme
from quantlab.io import export, sizing
from quantlab.lessons import hardware

# llm-compressor's calibration defaults in its examples: enough tokens for a stable min-max.
CALIBRATION_SAMPLES = 512
CALIBRATION_SEQ_LEN = 2048
CALIBRATION_DATASET = "open_platypus"  # a dataset name llm-compressor registers for oneshot


@dataclass(frozen=True)
class Recipes:
    llm_compressor: str  # Python
    load: str  # Python (vLLM / transformers) or a shell line (MLX)
    load_language: str
    export: str  # shell
    runtimes: str  # which runtimes read the checkpoint


def needs_calibration(slug: str) -> bool:
    """Static activation scales are fixed before serving, from calibration text."""
    acts = scheme(slug).spec.activations  # type: ignore[union-attr]
    return acts is not None and not acts.dynamic


def config_groups(slug: str) -> dict[str, dict[str, object]]:
    """The recipe's `config_groups`: compressed-tensors' scheme fields for every Linear."""
    spec = scheme(slug).spec
    assert spec is not None
    return {"group_0": {"targets": ["Linear"], **spec.to_ct_scheme()}}


def _python_literal(value: object, indent: int) -> str:
    text = pprint.pformat(value, indent=1, width=96 - indent, sort_dicts=False)
    return text.replace("\n", "\n" + " " * indent)


def llm_compressor(slug: str, model_id: str, ignore: tuple[str, ...] = sizing.DEFAULT_IGNORE) -> str:
    s = scheme(slug)
    preset = f' (llm-compressor\'s preset scheme="{s.preset}")' if s.preset else ""
    save = f"{model_id.rstrip('/').split('/')[-1]}-{slug}"
    if needs_calibration(slug):
        oneshot = (f'oneshot(model=model, recipe=recipe, dataset="{CALIBRATION_DATASET}",\n'
                   f"        num_calibration_samples={CALIBRATION_SAMPLES}, max_seq_length={CALIBRATION_SEQ_LEN})"
                   "  # static activation scales: min-max over these tokens")
    else:
        oneshot = "oneshot(model=model, recipe=recipe)  # no calibration text: weights and dynamic scales only"
    return f'''from transformers import AutoModelForCausalLM, AutoTokenizer
from llmcompressor import oneshot
from llmcompressor.modifiers.quantization import QuantizationModifier

MODEL_ID = "{model_id}"
model = AutoModelForCausalLM.from_pretrained(MODEL_ID, dtype="auto")
tokenizer = AutoTokenizer.from_pretrained(MODEL_ID)

# {s.label}{preset}: round-to-nearest, min-max scales, as measured in quantlab
recipe = QuantizationModifier(
    ignore={list(ignore)!r},
    config_groups={_python_literal(config_groups(slug), 18)},
)
{oneshot}
model.save_pretrained("{save}", save_compressed=True)
tokenizer.save_pretrained("{save}")
'''


def load_line(slug: str, model_id: str, hw: str, kv_fp8: bool = False) -> tuple[str, str]:
    """(code, language) that serves the saved checkpoint on `hw`."""
    save = f"{model_id.rstrip('/').split('/')[-1]}-{slug}"
    if hw == "apple":
        spec = scheme(slug).spec
        assert spec is not None
        group = spec.group_size or 64  # MLX always groups; 64 is its default
        return (f"# MLX reads its own format: quantize the original model with mlx-lm instead\n"
                f"mlx_lm.convert --hf-path {model_id} -q --q-bits {spec.num_bits} --q-group-size {group}", "bash")
    kv = ', kv_cache_dtype="fp8"' if kv_fp8 else ""
    return (f'from vllm import LLM\nllm = LLM(model="{save}"{kv})  # the scheme is read from config.json\n\n'
            f"# or, without vLLM (compressed-tensors installed):\n"
            f"from transformers import AutoModelForCausalLM\n"
            f'model = AutoModelForCausalLM.from_pretrained("{save}", device_map="auto")', "python")


def export_command(slug: str, model_arg: str = "embedded") -> str:
    return f"quantlab export {model_arg} ./{'minilm' if model_arg == 'embedded' else 'model'}-{slug} --scheme {slug}"


def recipes(slug: str, model_id: str, hw: str, kv_fp8: bool = False, model_arg: str = "embedded") -> Recipes:
    if hw not in hardware.HARDWARE:
        raise QuantlabError(f"unknown hardware {hw!r}: use one of {', '.join(hardware.HARDWARE)}")
    code, language = load_line(slug, model_id, hw, kv_fp8)
    spec = scheme(slug).spec
    assert spec is not None
    return Recipes(llm_compressor(slug, model_id), code, language, export_command(slug, model_arg),
                   export.runtimes(spec))

