"""Model chunks wrapped in megatron DDP, the megatron optimizer and LR schedule, and one train step.

The same engine serves pretraining and fine-tuning: the caller supplies the model chunks (built
for this rank's pipeline stages) and the forward-step function.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import torch
import torch.distributed as dist

from megatron_retro.config import RunConfig


@dataclass
class StepResult:
    loss: Optional[float]       # per-token mean over the global batch (last pipeline stage only)
    tokens: int                 # loss tokens in the global batch (last stage only, else 0)
    grad_norm: Optional[float]  # global gradient norm before clipping
    lr: float
    skipped: bool               # optimizer step skipped (fp16 overflow)


class Engine:
    """Holds DDP-wrapped model chunks, the optimizer and the LR scheduler of one run."""

    def __init__(self, cfg: RunConfig, chunks: list, forward_step: Callable):
        from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
        from megatron.core.distributed import finalize_model_grads
        from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
        from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

        self.cfg = cfg
        self.forward_step = forward_step
        tf_config = chunks[0].config
        tf_config.calculate_per_token_loss = True
        ddp_config = DistributedDataParallelConfig(
            grad_reduce_in_fp32=True, overlap_grad_reduce=False, use_distributed_optimizer=False,
            average_in_collective=False)
        self.chunks = [
            DistributedDataParallel(config=tf_config, ddp_config=ddp_config, module=chunk,
                                    disable_bucketing=i > 0)
            for i, chunk in enumerate(chunks)
        ]
        from megatron_retro.training import cpu_fast_paths

        cpu_fast_paths.accumulate_wgrad_into_main_grad(self.chunks)   # dW straight into main_grad
        if all(p.device.type == "cpu" for c in chunks for p in c.parameters()):
            cpu_fast_paths.keep_freed_heap()      # a step's freed tensors reused by the next, no page faults
        tf_config.finalize_model_grads_func = finalize_model_grads
        tf_config.no_sync_func = [c.no_sync for c in self.chunks] if len(self.chunks) > 1 else self.chunks[0].no_sync
        train = cfg.train
        opt_config = OptimizerConfig(
            optimizer="adam", lr=train.lr, min_lr=train.min_lr, weight_decay=train.weight_decay,
            adam_beta1=train.adam_beta1, adam_beta2=train.adam_beta2, adam_eps=train.adam_eps,
            clip_grad=train.clip_grad, bf16=tf_config.bf16, fp16=tf_config.fp16,
            params_dtype=tf_config.params_dtype, use_distributed_optimizer=False)
        from megatron_retro.training.lr_mult import lr_mult_overrides

        self.optimizer = get_megatron_optimizer(
            opt_config, self.chunks, config_overrides=lr_mult_overrides(train.lr_mult, self.chunks, opt_config))
        cpu_fast_paths.use_fused_adam(self.optimizer)
        cpu_fast_paths.install_foreach_clip_scale()
        self.scheduler = OptimizerParamScheduler(
            self.optimizer, init_lr=0.0, max_lr=train.lr, min_lr=train.min_lr,
            lr_warmup_steps=train.lr_warmup_steps, lr_decay_steps=max(train.steps, 1),
            lr_decay_style=train.lr_decay_style, start_wd=train.weight_decay,
            end_wd=train.weight_decay, wd_incr_steps=max(train.steps, 1), wd_incr_style="constant")

    # ----------------------------------------------------------------------------------------
    def forward_backward(self, microbatches: Iterable[dict], forward_only: bool = False
                         ) -> tuple[Optional[float], int]:
        """Run megatron's schedule over the micro-batches; gradients end in each param's main_grad.

        Returns (per-token mean loss over the global batch, loss tokens) on the last pipeline
        stage, (None, 0) elsewhere.
        """
        return self._reduce_loss(self._run_schedule(list(microbatches), forward_only))

    def _run_schedule(self, microbatches: list, forward_only: bool) -> list:
        """megatron's schedule over the micro-batches (GPT and RETRO alike: only the shape of the
        inter-stage tensors, ``schedule_shape``, differs)."""
        from megatron.core.pipeline_parallel import get_forward_backward_func

        model = self.chunks if len(self.chunks) > 1 else self.chunks[0]
        iterators = [iter(microbatches) for _ in self.chunks]
        data_iterator = iterators if len(self.chunks) > 1 else iterators[0]
        first = microbatches[0]
        return get_forward_backward_func()(
            forward_step_func=self.forward_step, data_iterator=data_iterator, model=model,
            num_microbatches=len(microbatches), micro_batch_size=first["tokens"].shape[0],
            forward_only=forward_only, **self.schedule_shape(first))

    def schedule_shape(self, first: dict) -> dict:
        """Shape arguments of megatron's schedule (``seq_length`` of the tensors pipeline stages
        exchange), from the first micro-batch."""
        return {"seq_length": first["tokens"].shape[1]}

    @staticmethod
    def _reduce_loss(reports: list) -> tuple[Optional[float], int]:
        """Sum the [loss_sum, tokens] reports of this rank's micro-batches over the DP group."""
        from megatron.core import parallel_state

        if not reports:
            return None, 0
        total = torch.stack([r["lm loss"] for r in reports]).sum(0).to(torch.float64)
        dist.all_reduce(total, group=parallel_state.get_data_parallel_group())
        tokens = int(total[1].item())
        return float(total[0] / max(tokens, 1)), tokens

    def train_step(self, microbatches: Iterable[dict]) -> StepResult:
        for chunk in self.chunks:
            chunk.train()
            chunk.zero_grad_buffer()
        self.optimizer.zero_grad()
        lr = float(self.optimizer.param_groups[0]["lr"])  # the rate this step uses
        loss, tokens = self.forward_backward(microbatches)
        ok, grad_norm, _ = self.optimizer.step()
        if ok:
            self.scheduler.step(increment=1)
        return StepResult(loss=loss, tokens=tokens, grad_norm=None if grad_norm is None else float(grad_norm),
                          lr=lr, skipped=not ok)

    @torch.no_grad()
    def evaluate(self, microbatches: Iterable[dict]) -> Optional[float]:
        """Per-token mean loss over the given micro-batches (last pipeline stage; None elsewhere)."""
        for chunk in self.chunks:
            chunk.eval()
        return self.forward_backward(microbatches, forward_only=True)[0]
