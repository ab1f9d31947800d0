"""CLI: `megatron-retro hf import|export` -- HF Llama checkpoints in and out (handlers are thin)."""
from __future__ import annotations

import argparse

_TOKENIZER = ("The tokenizer is NOT converted: use the HF model's own tokenizer for training data "
              "and evaluation.")
_LAYOUT = ("Run under torchrun/srun/mpirun with a multiple of tp*pp ranks; the checkpoint is "
           "reshardable, so --tp/--pp only split the work and memory of the conversion.")


def register(subparsers) -> None:
    hf = subparsers.add_parser("hf", help="import / export Hugging Face Llama checkpoints (safetensors)",
                               description=f"HF Llama <-> megatron_retro checkpoints. {_TOKENIZER}")
    sub = hf.add_subparsers(dest="hf_command", required=True, metavar="<tool>")
    imp = sub.add_parser("import", help="HF Llama directory -> our TP/PP checkpoint (<out>/iter_0000000)",
                         description="Read config.json + *.safetensors (sharded index too) of a "
                                     "LlamaForCausalLM and write a checkpoint that pretrain/finetune "
                                     f"--load (checkpoint.load) accept, plus <out>/model.yaml. {_LAYOUT} {_TOKENIZER}")
    imp.add_argument("--hf-dir", required=True, help="HF model directory (config.json + *.safetensors)")
    imp.add_argument("--out", required=True, help="checkpoints directory to write (iter_0000000 inside)")
    imp.add_argument("--tp", type=int, default=1, help="tensor parallel size of the conversion (default 1)")
    imp.add_argument("--pp", type=int, default=1, help="pipeline parallel size of the conversion (default 1)")
    imp.set_defaults(handler=_import)
    exp = sub.add_parser("export", help="our checkpoint (any TP/PP) -> HF LlamaForCausalLM directory",
                         description="Write config.json + model*.safetensors loadable with "
                                     f"transformers.LlamaForCausalLM.from_pretrained. {_LAYOUT} {_TOKENIZER}")
    exp.add_argument("--load", required=True, help="checkpoint (iter_*) or checkpoints directory (newest is used)")
    exp.add_argument("--out", required=True, help="HF output directory")
    exp.add_argument("--tp", type=int, default=1, help="tensor parallel size to read the checkpoint at (default 1)")
    exp.add_argument("--pp", type=int, default=1, help="pipeline parallel size to read the checkpoint at (default 1)")
    exp.add_argument("--max-shard-gb", type=float, default=5.0, help="largest safetensors file, GiB (default 5)")
    exp.set_defaults(handler=_export)


def _run(fn, *args, **kwargs) -> int:
    import json

    import torch.distributed as dist

    from megatron_retro.parallel.initialize import destroy_parallel

    try:
        result = fn(*args, **kwargs)
        rank0 = not dist.is_initialized() or dist.get_rank() == 0
    finally:
        destroy_parallel()
    if rank0:
        print(json.dumps(result))
    return 0


def _import(args: argparse.Namespace) -> int:
    from megatron_retro.config import ParallelConfig
    from megatron_retro.training.hf_convert import import_hf

    return _run(import_hf, args.hf_dir, args.out, ParallelConfig(tp=args.tp, pp=args.pp))


def _export(args: argparse.Namespace) -> int:
    from megatron_retro.config import ParallelConfig
    from megatron_retro.training.hf_convert import export_hf

    return _run(export_hf, args.load, args.out, ParallelConfig(tp=args.tp, pp=args.pp),
                max_shard_bytes=int(args.max_shard_gb * 1024 ** 3))
