"""The runs an experiment grid is made of, shared by its phases (cells, perplexity study).

``model_config``: a grid model's run config; ``run_pretrain``: one GPT or RETRO pretraining run;
``is_writer``: this rank writes the grid's files (rank 0, or no process group).
"""
from __future__ import annotations

from megatron_retro.config import RunConfig, load_config
from megatron_retro.evaluation.experiment_config import ExperimentConfig, ExperimentModel


def is_writer() -> bool:
    import torch.distributed as dist

    return not dist.is_initialized() or dist.get_rank() == 0


def model_config(exp: ExperimentConfig, model: ExperimentModel, *extra: str) -> RunConfig:
    """The model's run config with the grid's overrides (``{out_dir}`` in them = the experiment's)."""
    overrides = [o.replace("{out_dir}", exp.out_dir) for o in (*exp.common_overrides, *model.overrides, *extra)]
    return load_config(exp.resolve(model.config), overrides)


def run_pretrain(cfg: RunConfig, progress: bool):
    """Pretrain (or resume) a GPT or RETRO as ``cfg`` says; the parallel state is torn down after."""
    from megatron_retro.parallel.initialize import destroy_parallel

    try:
        if cfg.model.arch == "retro":
            from megatron_retro.training.retro_pretrain import pretrain_retro

            return pretrain_retro(cfg, progress=progress)
        from megatron_retro.training.pretrain import pretrain

        return pretrain(cfg, progress=progress)
    finally:
        destroy_parallel()
