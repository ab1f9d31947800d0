"""CLI: `megatron-retro finetune --peft <method> ...`, `megatron-retro peft merge|export-hf|methods`."""
from __future__ import annotations

import argparse


def _peft_options(pairs) -> dict:
    import yaml

    from megatron_retro.errors import UserError

    out = {}
    for text in pairs or []:
        if "=" not in text:
            raise UserError(f"--peft-opt {text!r}: expected key=value (e.g. rank=16)")
        key, raw = text.split("=", 1)
        out[key] = yaml.safe_load(raw)
    return out


def register(subparsers) -> None:
    from megatron_retro.config.args import add_run_config_args

    p = subparsers.add_parser("finetune", help="QA fine-tuning with retrieval of a GPT or RETRO: PEFT (LoRA, "
                                               "adapters, P-tuning, ...) or full")
    add_run_config_args(p)
    p.add_argument("--model", choices=("gpt", "retro"),
                   help="model family; without --config it picks configs/models/<model>-tiny.yaml")
    p.add_argument("--peft", help="method: lora, qlora, adapter, parallel_adapter, ptuning, prompt, prefix, ia3 "
                                  "(see `peft methods`), or none for full fine-tuning; overrides the method of "
                                  "--peft-config")
    p.add_argument("--peft-config", help="YAML of method options (configs/peft/*.yaml)")
    p.add_argument("--peft-opt", action="append", metavar="key=value",
                   help="method option, repeatable, e.g. --peft-opt rank=16 --peft-opt alpha=32")
    p.add_argument("--base", help="base checkpoint to fine-tune (overrides checkpoint.load)")
    p.add_argument("--adapter-out", help="adapter directory (default <out>/adapter)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_finetune)

    peft = subparsers.add_parser("peft", help="adapter tools: merge, export-hf, methods")
    sub = peft.add_subparsers(dest="peft_command", required=True, metavar="<tool>")
    _add_adapter_tool(sub, "merge", "fold an adapter into its base checkpoint (any TP/PP)",
                      "adapter directory (adapter_config.json + safetensors)",
                      "--merged-out", "directory for the merged checkpoint", _merge)
    _add_adapter_tool(sub, "export-hf", "LoRA adapter -> HF peft format + base -> HF Llama/Gemma3ForCausalLM",
                      "LoRA adapter directory", "--hf-out", "output directory (base/ and adapter/ inside)",
                      _export_hf)
    lst = sub.add_parser("methods", help="list PEFT methods and their options")
    lst.set_defaults(handler=_methods)


def _add_adapter_tool(sub, name: str, help: str, adapter_help: str, out_flag: str, out_help: str, handler) -> None:
    """``peft <name> --base B --adapter A <out_flag> O`` with the run-config arguments."""
    from megatron_retro.config.args import add_run_config_args

    p = sub.add_parser(name, help=help)
    add_run_config_args(p)
    p.add_argument("--base", required=True, help="base checkpoint directory (iter_*)")
    p.add_argument("--adapter", required=True, help=adapter_help)
    p.add_argument(out_flag, required=True, help=out_help)
    p.set_defaults(handler=handler)


def _finetune(args: argparse.Namespace) -> int:
    import json

    from megatron_retro.parallel.initialize import destroy_parallel
    from megatron_retro.peft import make_peft_config
    from megatron_retro.training.finetune import finetune

    if args.base:
        args.overrides = list(args.overrides or []) + [f"checkpoint.load={args.base}"]
    cfg = config_for_model(args)
    from megatron_retro.peft.options import read_peft_yaml

    options = read_peft_yaml(args.peft_config, "--peft-config") if args.peft_config else {}
    method = args.peft or options.pop("method", None)
    options.pop("method", None)
    if not method:
        from megatron_retro.errors import UserError

        raise UserError("finetune: give --peft <method> (or none) or a --peft-config with 'method:'")
    peft_cfg = None if method == "none" else make_peft_config(method, {**options, **_peft_options(args.peft_opt)})
    try:
        result = finetune(cfg, peft_cfg, adapter_dir=args.adapter_out, progress=not args.no_progress)
    finally:
        destroy_parallel()
    print(json.dumps({"model": cfg.model.arch, "method": method, "steps": result.steps,
                      "first_loss": result.first_loss, "train_loss": result.last_loss,
                      "valid_loss": result.valid_loss, "trainable_params": result.trainable_params,
                      "total_params": result.total_params, "adapter": result.adapter_dir,
                      "checkpoint": result.checkpoint, "data": result.data}))
    return 0


def config_for_model(args: argparse.Namespace):
    """The run config of ``--config`` or, without it, of ``--model``'s tiny config; the two must agree."""
    import os

    from megatron_retro.config.args import run_config_from_args
    from megatron_retro.errors import UserError

    model = getattr(args, "model", None)
    if not args.config and model:
        args.config = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "models", f"{model}-tiny.yaml")
    cfg = run_config_from_args(args)
    if model and cfg.model.arch != model:
        raise UserError(f"--model {model}: the config {args.config} is model.arch={cfg.model.arch}")
    return cfg


def _with_run_config(args: argparse.Namespace, tool, *tool_args):
    """``tool(run config of args, *tool_args)``, the parallel state torn down after (also on failure)."""
    from megatron_retro.config.args import run_config_from_args
    from megatron_retro.parallel.initialize import destroy_parallel

    cfg = run_config_from_args(args)
    try:
        return tool(cfg, *tool_args)
    finally:
        destroy_parallel()


def _merge(args: argparse.Namespace) -> int:
    import json

    from megatron_retro.training.finetune import merge_adapter_checkpoint

    path = _with_run_config(args, merge_adapter_checkpoint, args.base, args.adapter, args.merged_out)
    print(json.dumps({"merged_checkpoint": path}))
    return 0


def _export_hf(args: argparse.Namespace) -> int:
    import json

    from megatron_retro.training.finetune import export_hf_checkpoint

    summary = _with_run_config(args, export_hf_checkpoint, args.base, args.adapter, args.hf_out)
    if summary:
        print(json.dumps(summary))
    return 0


def _methods(args: argparse.Namespace) -> int:
    import dataclasses

    from megatron_retro.peft.registry import get_method, method_names

    for name in method_names():
        method = get_method(name)
        print(f"{name} (parameters {method.prefix}*){' mergeable' if method.merge else ''}")
        if name == "qlora":
            from megatron_retro.peft.qlora import QLoraConfig, quantized_nbytes

            qc, n = QLoraConfig(), 1 << 20
            bits = 8 * quantized_nbytes(n, qc.block_size, qc.double_quant, qc.scale_block_size) / n
            print(f"    base weights stored in {bits:.3f} bits each (fp32: 32, bf16: 16) at the defaults; "
                  f"qlora_memory(chunks) reports a model's bytes before/after")
        for f in dataclasses.fields(method.config_cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            print(f"    {f.name}={default!r}: {f.metadata.get('help', '')}")
    return 0
