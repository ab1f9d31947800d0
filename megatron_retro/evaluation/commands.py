"""CLI: `megatron-retro evaluate`, `megatron-retro experiment --config E`, `megatron-retro demo`."""
from __future__ import annotations

import argparse
import os
from typing import Optional

CONFIGS = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "configs"))


def register(subparsers) -> None:
    from megatron_retro.config.args import add_run_config_args

    p = subparsers.add_parser("evaluate", help="greedy answers to a QA split scored with EM / F1 / ROUGE-L")
    add_run_config_args(p)
    p.add_argument("--model", choices=("gpt", "retro"),
                   help="model family; without --config it picks configs/models/<model>-tiny.yaml")
    p.add_argument("--load", help="model checkpoint (iter_* directory); overrides checkpoint.load")
    p.add_argument("--adapter", help="PEFT adapter directory to load on the base (none = zero-shot)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--suite", choices=("qa", "rag"), default="qa",
                   help="qa: EM / F1 / ROUGE-L on qa.eval_split; rag: context relevance, faithfulness, answer "
                        "relevance and the noise / negative-rejection / two-hop / counterfactual splits "
                        "(bundled task), written to rag_suite.{md,json} and rag_noise.png in out_dir")
    p.add_argument("--suite-examples", type=int, default=50,
                   help="rag suite: base questions per split (the noise split asks each at every noise level)")
    p.add_argument("--judge", default="reference", help="rag suite: answer judge (reference = the gold-label "
                                                        "metrics; others register through rag_metrics.register_judge)")
    p.set_defaults(handler=_evaluate)

    e = subparsers.add_parser("experiment", help="run (or resume) a grid: model x PEFT method x seed, "
                                                 "then the table and plots")
    e.add_argument("--config", required=True, help="experiment YAML (configs/experiments/*.yaml)")
    e.add_argument("--out", help="override out_dir")
    e.add_argument("--max-cells", type=int, help="stop after running this many new cells (resume later)")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    e.add_argument("--suites-only", choices=("rag",), help="run only this suite, on the finished cells of the "
                                                           "grid (base + saved adapter; no training), and write "
                                                           "rag_suite.md and rag_noise.png over all seeds")
    e.add_argument("overrides", nargs="*", metavar="key=value", help="experiment fields, e.g. seeds=[1,2]")
    e.set_defaults(handler=_experiment)

    d = subparsers.add_parser("demo", help="the whole study at tiny scale on the bundled data (~20 min on 2 "
                                           "CPU cores): corpus, index, retrieval service, GPT + RETRO, "
                                           "zero-shot / LoRA / Adapter / P-tuning, table and plots")
    d.add_argument("--out", help="output directory (default runs/demo)")
    d.add_argument("--quick", action="store_true", help="a few-minute smoke version (configs/experiments/"
                                                        "demo-quick.yaml)")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    d.set_defaults(handler=_demo)


def _evaluate(args: argparse.Namespace) -> int:
    import json

    from megatron_retro.evaluation.answer_eval import evaluate
    from megatron_retro.parallel.initialize import destroy_parallel
    from megatron_retro.peft.commands import config_for_model

    if args.load:
        args.overrides = list(args.overrides or []) + [f"checkpoint.load={args.load}"]
    cfg = config_for_model(args)
    if args.suite == "rag":
        return _evaluate_rag(args, cfg)
    try:
        result = evaluate(cfg, cfg.checkpoint.load, adapter=args.adapter, progress=not args.no_progress)
    finally:
        destroy_parallel()
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"model": cfg.model.arch, "task": cfg.qa.task, "split": cfg.qa.eval_split,
                          "count": result.count, "scores": result.scores,
                          "gold_passage_retrieved": result.info.get("gold_passage_retrieved"),
                          "predictions": os.path.join(cfg.out_dir, "predictions.jsonl")}))
    return 0


def _evaluate_rag(args: argparse.Namespace, cfg) -> int:
    import json

    from megatron_retro.errors import UserError
    from megatron_retro.evaluation.rag_report import suite_table
    from megatron_retro.evaluation.rag_suite import evaluate_rag
    from megatron_retro.parallel.initialize import destroy_parallel

    if args.suite_examples < 1:
        raise UserError(f"--suite-examples={args.suite_examples}: must be >= 1")
    try:
        result = evaluate_rag(cfg, cfg.checkpoint.load, adapter=args.adapter, examples=args.suite_examples,
                              judge=args.judge, progress=not args.no_progress)
    finally:
        destroy_parallel()
    if int(os.environ.get("RANK", "0")) == 0:
        print(suite_table({cfg.model.arch: result["splits"]}))
        print(json.dumps({"model": cfg.model.arch, "suite": "rag", "splits": result["splits"],
                          "files": result.get("files", [])}))
    return 0


def _run(path: str, out, overrides, max_cells, progress: bool, suites_only: Optional[str] = None) -> int:
    import json

    from megatron_retro.evaluation.experiment import run_experiment
    from megatron_retro.evaluation.experiment_config import load_experiment

    overrides = list(overrides or [])
    if out:
        overrides.append(f"out_dir={out}")
    exp = load_experiment(path, overrides)
    if suites_only:
        return _suites_only(exp, suites_only, progress)
    summary = run_experiment(exp, progress=progress, max_cells=max_cells)
    if int(os.environ.get("RANK", "0")) == 0:
        results = os.path.join(exp.out_dir, "results.md")
        if os.path.isfile(results) and summary["cells"] == summary["total_cells"]:
            with open(results, encoding="utf-8") as f:
                print(f.read())
        print(json.dumps({k: summary[k] for k in ("cells", "ran", "total_cells", "report", "seconds", "phase_minutes")}))
    return 0


def _suites_only(exp, suite: str, progress: bool) -> int:
    import json

    from megatron_retro.evaluation.experiment_suites import run_suites_only
    from megatron_retro.evaluation.grid_runs import log

    exp.suites = list(dict.fromkeys([*exp.suites, suite]))
    summary = run_suites_only(exp, log, progress=progress)
    if int(os.environ.get("RANK", "0")) == 0:
        with open(summary["report"][0], encoding="utf-8") as f:
            print(f.read())
        print(json.dumps(summary))
    return 0


def _experiment(args: argparse.Namespace) -> int:
    return _run(args.config, args.out, args.overrides, args.max_cells, not args.no_progress, args.suites_only)


def _demo(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    name = "demo-quick.yaml" if args.quick else "demo.yaml"
    return _run(os.path.join(CONFIGS, "experiments", name), args.out, [], None, not args.no_progress)
