"""Time and memory of the own-decoder path on this machine: load, activation capture, and the
perplexity/KL pass (the unquantized reference and one W4A16 RTN copy), for decoders built from
Llama-shaped configs with random weights (nothing may be downloaded here, and random weights cost
the same time as trained ones). Each model runs in a fresh process, so its peak RSS is its own.

    python bench/decoder.py [tiny 1b 3b]     # writes bench/results/decoder.json

- tiny: the test suite's 2-layer Llama (128 hidden): the issue's "capture <= 2 s" target;
- 1b, 3b: Llama-3.2-1B / -3B shapes in bf16 (MiniLM's tokenizer, so the vocabulary is unused
  past its 30,522 ids, which changes nothing but the embedding's size).
The 1-minute load average at the start of each run is recorded: this CPU is shared.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHAPES = {
    "tiny": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=256, dtype="float32"),
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, max_position_embeddings=131072, vocab_size=128256, dtype="bfloat16",
               tie_word_embeddings=True),
    "3b": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
               num_key_value_heads=8, max_position_embeddings=131072, vocab_size=128256, dtype="bfloat16",
               tie_word_embeddings=True),
}

RUN = """
import json, resource, sys, time
from quantlab.io import decoder
from quantlab.lessons import decoder_quality
folder = sys.argv[1]
t0 = time.perf_counter(); dec = decoder.load(folder); t1 = time.perf_counter()
cap = decoder.activations(folder, "general"); t2 = time.perf_counter()
quality = decoder_quality.scheme_quality(folder, "w4a16", "rtn"); t3 = time.perf_counter()
print(json.dumps({"parameters": sum(p.numel() for p in dec.model.parameters()), "load_s": t1 - t0,
                  "capture_s": cap.seconds, "captured_tokens": next(iter(cap.inputs.values())).shape[0],
                  "quality_s": t3 - t2, "heldout_tokens": quality.reference.tokens,
                  "perplexity_fp": quality.reference.perplexity, "perplexity_w4a16": quality.quantized.perplexity,
                  "kl_w4a16": quality.quantized.kl_mean, "tokens_per_s_fp": quality.reference.tokens_per_s,
                  "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def build(shape: str, folder: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from quantlab.io import models

    tokenizer = AutoTokenizer.from_pretrained(models.embedded_model_dir(), local_files_only=True)
    fields = dict(SHAPES[shape])
    fields.setdefault("vocab_size", tokenizer.vocab_size)
    dtype = getattr(torch, fields.pop("dtype"))
    torch.manual_seed(0)
    with torch.device("cpu"):
        model = LlamaForCausalLM(LlamaConfig(**fields)).to(dtype)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def main(shapes: list[str]) -> None:
    out = ROOT / "bench" / "results" / "decoder.json"
    results = json.loads(out.read_text()) if out.exists() else {}
    results["machine"] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "python": platform.python_version()}
    results["date"] = date.today().isoformat()
    for shape in shapes:
        with tempfile.TemporaryDirectory() as tmp:
            build(shape, Path(tmp))
            load = os.getloadavg()[0]
            done = subprocess.run([sys.executable, "-c", RUN, tmp], capture_output=True, text=True, cwd=ROOT)
            if done.returncode:
                print(done.stderr[-3000:], file=sys.stderr)
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row["load_average_1m"] = load
            results.setdefault("runs", {})[shape] = row
            print(shape, json.dumps(row))
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:] or list(SHAPES))
