"""The `quantlab` command: size a model or export a compressed-tensors checkpoint from a terminal."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from quantlab.core.errors import QuantlabError
from quantlab.core.spec import PRESETS, SCHEMES, QuantSpec, scheme_spec
from quantlab.io import sizing

DESCRIPTION = """\
Quantization what-ifs on real models, without a GPU.

  quantlab size llama-3.1-8b --scheme W4A16              size a shipped architecture (no download)
  quantlab size llama-3.1-8b --scheme NVFP4A16           FP4 weights, an FP8 scale per 16 (Blackwell's format)
  quantlab size ./my-model --scheme W4A16 --group-size 64 size your own checkpoint (headers only)
  quantlab export embedded ./minilm-w4 --scheme W4A16    write a real compressed-tensors checkpoint

Schemes: {schemes} (or llm-compressor's preset names: {presets}).
"""


def _spec(args: argparse.Namespace) -> QuantSpec:
    spec = scheme_spec(args.scheme)
    return spec if args.group_size is None else spec.with_group_size(args.group_size)


def _source(text: str) -> object:
    from quantlab.io.models import ModelSource

    return ModelSource.embedded() if text == "embedded" else text


def _table(report: sizing.SizeReport, per_tensor: bool) -> str:
    lines = []
    if per_tensor:
        width = max(len(t.name) for t in report.tensors)
        lines += [f"{'tensor':<{width}}  {'kind':<17} {'dtype':<7} {'shape':<14} {'bytes':>15}"]
        lines += [f"{t.name:<{width}}  {t.kind:<17} {t.dtype:<7} {'x'.join(map(str, t.shape)):<14} {t.nbytes:>15,}"
                  for t in report.tensors]
        lines.append("")
    lines.append(f"{'part':<20} {'bytes':>16} {'size':>11} {'share':>7}")
    for kind, n in report.by_kind().items():
        lines.append(f"{kind:<20} {n:>16,} {sizing.format_bytes(n):>11} {n / report.total_bytes:>7.1%}")
    header = report.header_bytes
    lines.append(f"{'safetensors header':<20} {header:>16,} {sizing.format_bytes(header):>11} "
                 f"{header / report.total_bytes:>7.1%}")
    lines.append(f"{'total':<20} {report.total_bytes:>16,} {sizing.format_bytes(report.total_bytes):>11}")
    lines.append("")
    lines.append(f"{report.label}, {report.spec.label} ({report.format}): {report.quantized_layers} Linear layers "
                 f"quantized, {report.bits_per_weight:.3f} bits per parameter over the whole file, "
                 f"{report.quantized_bits_per_weight():.3f} in the quantized layers; unquantized: "
                 f"{sizing.format_bytes(report.original_bytes)} ({report.compression:.2f}x smaller)")
    if report.ignore:
        shown = ", ".join(report.ignore[:4]) + (" ..." if len(report.ignore) > 4 else "")
        lines.append(f"kept in full precision (ignore list): {shown}")
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)


def cmd_size(args: argparse.Namespace) -> int:
    report = sizing.model_size(_source(args.model), _spec(args), args.ignore or None)
    print(_table(report, args.per_tensor))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from quantlab.io import export

    spec = _spec(args)
    result = export.save_compressed(_source(args.model), args.out_dir, spec, args.ignore or None)
    size = (result.path / "model.safetensors").stat().st_size
    print(f"wrote {result.path} ({len(result.files)} files; model.safetensors {sizing.format_bytes(size)}, "
          f"{result.report.quantized_layers} layers at {spec.label})")
    for note in result.report.notes:
        print(f"note: {note}")
    print(f"loads with: {export.runtimes(spec)}")
    return 0


# A subcommand defined above this layer (e.g. `whatif` in quantlab.lessons.whatif, which needs the
# lessons' computations): it adds its parser, with `run` as a default, to the subparsers it is given.
# io must not import lessons, so the higher layer hands its commands in instead.
Command = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def parser(extra: Sequence[Command] = ()) -> argparse.ArgumentParser:
    schemes = ", ".join(s.slug for s in SCHEMES.values() if s.spec is not None)
    p = argparse.ArgumentParser(prog="quantlab", description=DESCRIPTION.format(schemes=schemes,
                                                                                presets=", ".join(PRESETS)),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--scheme", default="w4a16", metavar="SCHEME",
                        help=f"quantization scheme ({schemes}; llm-compressor's preset names such as W4A16_ASYM "
                             "work too); default w4a16 = INT4 weights, one scale per 128 weights")
        sp.add_argument("--group-size", type=int, metavar="G",
                        help="one scale per G weights of a row (e.g. 32, 64, 128); "
                             "smaller = more accurate, bigger file")
        sp.add_argument("--ignore", action="append", metavar="LAYER",
                        help="keep this Linear layer unquantized (a name, or 're:<regex>'); repeatable; "
                             "default: lm_head")

    size = sub.add_parser(
        "size", help="exact checkpoint size for a scheme, from shapes only",
        description="Print the bytes a compressed-tensors checkpoint would take, tensor kind by kind. "
                    "MODEL is a shipped architecture (" + ", ".join(sizing.shipped_configs()) + "), "
                    "a config.json, a .safetensors file, a model folder (sharded index supported), or "
                    "'embedded'. Nothing is downloaded and no weight is read.")
    size.add_argument("model", metavar="MODEL")
    common(size)
    size.add_argument("--per-tensor", action="store_true", help="also list every tensor with dtype, shape, bytes")
    size.set_defaults(run=cmd_size)

    exp = sub.add_parser(
        "export", help="write a real compressed-tensors checkpoint",
        description="Quantize MODEL ('embedded' or a local .safetensors file or folder) and write OUT_DIR: "
                    "model.safetensors, config.json with quantization_config, tokenizer files. OUT_DIR must "
                    "not exist; nothing is left behind if anything fails.")
    exp.add_argument("model", metavar="MODEL")
    exp.add_argument("out_dir", metavar="OUT_DIR")
    common(exp)
    exp.set_defaults(run=cmd_export)
    for add in extra:
        add(sub)
    return p


def main(argv: Sequence[str] | None = None, extra: Sequence[Command] = ()) -> int:
    """Run one subcommand; a QuantlabError becomes one line on stderr and exit code 2."""
    args = parser(extra).parse_args(argv)
    try:
        return args.run(args)
    except QuantlabError as err:
        print(f"quantlab: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
