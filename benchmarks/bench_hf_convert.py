"""HF Llama import / export time against a plain safetensors read + write of the same tensors.

One process (world size 1, TP1/PP1), one random Llama written with save_pretrained (sharded at
1 GB), side by side in one run:
  baseline   safetensors: load every tensor of the HF directory + save them again (the I/O floor);
  import     `megatron_retro.training.hf_convert.import_hf` (build the model, copy, save_checkpoint);
  export     `export_hf` (build, load_checkpoint, gather, write HF safetensors + config.json).

    python benchmarks/bench_hf_convert.py                 # d=1024 L=12 heads 16/4 f=2816 V=32000
    python benchmarks/bench_hf_convert.py --layers 4 --hidden 512

Prints one JSON line: seconds of each and ratios to the baseline.
"""
from __future__ import annotations

import glob
import json
import os
import tempfile
import time
import warnings

warnings.filterwarnings("ignore")

import torch  # noqa: E402
from common import options  # noqa: E402


def main() -> None:
    args = options(__doc__, hidden=1024, layers=12, heads=16, kv_heads=4, ffn=2816, vocab=32000,
                   threads=2).parse_args()
    torch.set_num_threads(args.threads)

    from safetensors.torch import load_file, save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    from megatron_retro.config import ParallelConfig
    from megatron_retro.parallel.initialize import destroy_parallel
    from megatron_retro.training.hf_convert import export_hf, import_hf

    with tempfile.TemporaryDirectory() as tmp:
        config = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.ffn,
                             num_hidden_layers=args.layers, num_attention_heads=args.heads,
                             num_key_value_heads=args.kv_heads, max_position_embeddings=4096)
        model = LlamaForCausalLM(config)
        params = sum(p.numel() for p in model.parameters())
        model.save_pretrained(f"{tmp}/hf", max_shard_size="1GB")
        del model

        t0 = time.perf_counter()
        for i, path in enumerate(sorted(glob.glob(f"{tmp}/hf/*.safetensors"))):
            save_file(load_file(path), f"{tmp}/copy-{i}.safetensors", metadata={"format": "pt"})
        baseline = time.perf_counter() - t0

        t0 = time.perf_counter()
        info = import_hf(f"{tmp}/hf", f"{tmp}/ckpt", ParallelConfig())
        destroy_parallel()
        t_import = time.perf_counter() - t0

        t0 = time.perf_counter()
        export_hf(info["checkpoint"], f"{tmp}/out", ParallelConfig(), max_shard_bytes=1 << 30)
        destroy_parallel()
        t_export = time.perf_counter() - t0
        size = sum(os.path.getsize(p) for p in glob.glob(f"{tmp}/out/*.safetensors"))

    print(json.dumps({"params": params, "fp32_bytes": size, "baseline_s": round(baseline, 2),
                      "import_s": round(t_import, 2), "export_s": round(t_export, 2),
                      "import_vs_baseline": round(t_import / baseline, 2),
                      "export_vs_baseline": round(t_export / baseline, 2), "threads": args.threads}))


if __name__ == "__main__":
    main()
