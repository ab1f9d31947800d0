"""`megatron-retro pretrain` with model.arch=retro: the GPT loop with RETRO data, model and engine."""
from __future__ import annotations

from megatron_retro.config import RunConfig


def retro_model_builder(cfg: RunConfig):
    """``build_model(model, parallel, vocab_size=..., precision=..., recompute=...)`` for RETRO."""
    from megatron_retro.models.retro import build_retro_model

    def build(model, parallel, **kwargs):
        return build_retro_model(model, cfg.retro, parallel, **kwargs)

    return build


def pretrain_retro(cfg: RunConfig, progress: bool = True, data=None):
    """Run (or resume) RETRO pretraining: neighbours from the in-process retrieval index."""
    from megatron_retro.training.pretrain import pretrain
    from megatron_retro.training.retro_from_gpt import is_gpt_checkpoint, load_gpt_into_retro
    from megatron_retro.training.retro_data import build_retro_pretrain_data
    from megatron_retro.training.retro_step import RetroEngine, retro_forward_step

    def make_data(cfg, dp=1):
        from megatron.core import parallel_state

        return build_retro_pretrain_data(cfg, dp=dp, dp_rank=parallel_state.get_data_parallel_rank())

    make_engine = RetroEngine
    gpt_start = cfg.checkpoint.load
    init_step = 0
    if gpt_start and is_gpt_checkpoint(gpt_start):
        from megatron_retro.training.checkpointing import read_state

        init_step = int(read_state(gpt_start).get("step", 0))  # the loss curve continues the GPT's axis
        # decoder from the GPT, encoder + cross-attention new; a resumed run overwrites all of it
        import dataclasses

        cfg = dataclasses.replace(cfg, checkpoint=dataclasses.replace(cfg.checkpoint, load=None))

        def make_engine(cfg, chunks, forward_step):
            engine = RetroEngine(cfg, chunks, forward_step)
            load_gpt_into_retro(gpt_start, engine, cfg)
            return engine

    return pretrain(cfg, data=data, build_model=retro_model_builder(cfg), forward_step=retro_forward_step,
                    progress=progress, make_data=make_data, make_engine=make_engine,
                    init_step=init_step, init_from="GPT" if init_step else "")
