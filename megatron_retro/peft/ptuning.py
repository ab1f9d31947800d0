"""P-tuning (Liu et al. 2021) and prompt tuning (Lester et al. 2021): virtual-token embeddings.

Both replace the input embeddings of the first ``num_virtual_tokens`` positions of every sequence
(the data reserves those positions, with loss_mask 0), so sequence length and pipeline shapes do
not change.  They live on the first pipeline stage only (the chunk that holds the embedding).

* prompt tuning: a plain soft prompt, ``prompt_embeddings`` [v, d].
* P-tuning: a prompt encoder maps v learned inputs through an MLP (d -> hidden -> d) or a
  bidirectional LSTM + MLP head to the v virtual tokens; in eval mode the encoder output is
  computed once and cached until the next ``train()``.

TP: the virtual tokens are replicated.  Without SP every TP rank sees the whole sequence and
gets the complete gradient; under SP the embedding output is split by sequence, only the ranks
holding positions < v get a gradient, so the parameters are marked for megatron's SP sum.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from megatron_retro.errors import UserError
from megatron_retro.peft.options import check_count, check_positive
from megatron_retro.peft.registry import PeftMethod, register_peft_method
from megatron_retro.peft.targets import first_stage_chunks, seeded_full
from megatron_retro.peft.tp_rule import mark_tp_partial_grad


@dataclass
class PromptTuningConfig:
    """A plain soft prompt of v virtual tokens."""

    method: ClassVar[str] = "prompt"
    num_virtual_tokens: int = field(default=10, metadata={"help": "virtual tokens v at the start of each sequence"})
    init_std: float = field(default=0.02, metadata={"help": "std of the normal init of the prompt"})
    seed: int = field(default=1234, metadata={"help": "init seed"})

    def __post_init__(self) -> None:
        check_count(self, "num_virtual_tokens")
        check_positive(self, "init_std")


@dataclass
class PtuningConfig(PromptTuningConfig):
    """P-tuning: virtual tokens produced by an MLP or LSTM prompt encoder."""

    method: ClassVar[str] = "ptuning"
    encoder: str = field(default="mlp", metadata={"help": "prompt encoder: mlp | lstm"})
    encoder_hidden: int = field(default=1024, metadata={"help": "bottleneck width of the encoder"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.encoder not in ("mlp", "lstm"):
            raise UserError(f"peft.encoder={self.encoder!r}: must be 'mlp' or 'lstm'")
        if not isinstance(self.encoder_hidden, int) or self.encoder_hidden < 2 or \
                (self.encoder == "lstm" and self.encoder_hidden % 2):
            raise UserError(f"peft.encoder_hidden={self.encoder_hidden}: must be an integer >= 2 (even for lstm)")


def _virtual_tokens(cfg: PromptTuningConfig, d: int, stream: str) -> torch.nn.Parameter:
    """[v, d] drawn from N(0, init_std) by the seeded stream ``stream`` (the same at every layout)."""
    return torch.nn.Parameter(seeded_full((cfg.num_virtual_tokens, d), cfg.seed, stream,
                                          lambda t, g: t.normal_(0.0, cfg.init_std, generator=g)))


class SoftPrompt(torch.nn.Module):
    """Prompt tuning: the v x d prompt itself."""

    def __init__(self, cfg: PromptTuningConfig, d: int):
        super().__init__()
        self.weight = _virtual_tokens(cfg, d, "prompt")
        self.num_virtual_tokens = cfg.num_virtual_tokens

    def forward(self) -> torch.Tensor:
        return self.weight  # [v, d]


class PromptEncoder(torch.nn.Module):
    """P-tuning: [v, d] learned inputs -> MLP or (biLSTM -> MLP) -> [v, d]; cached in eval mode."""

    def __init__(self, cfg: PtuningConfig, d: int):
        super().__init__()
        self.inputs = _virtual_tokens(cfg, d, "ptuning")
        self.num_virtual_tokens = cfg.num_virtual_tokens
        hidden = cfg.encoder_hidden
        self.lstm = None
        if cfg.encoder == "lstm":
            self.lstm = torch.nn.LSTM(d, hidden // 2, num_layers=2, bidirectional=True, batch_first=True)
            first = hidden
        else:
            first = d
        self.mlp = torch.nn.Sequential(torch.nn.Linear(first, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, d))
        self._cache = None

    def train(self, mode: bool = True):
        self._cache = None
        return super().train(mode)

    def forward(self) -> torch.Tensor:
        if not self.training and self._cache is not None:
            return self._cache
        h = self.inputs  # [v, d]
        if self.lstm is not None:
            h = self.lstm(h[None])[0][0]  # [v, hidden]
        out = self.mlp(h)  # [v, d]
        if not self.training:
            self._cache = out.detach()
        return out


def _embedding_hook(source: torch.nn.Module, tf_config):
    """Replace the embeddings of positions < v in the [s(/tp), b, d] embedding output.

    Left alone: retrieved neighbours embedded by RETRO (the embedding is marked
    ``embedding_neighbours`` then) and incremental decoding steps whose positions start at or
    after v (a KV-cached generation feeds the prompt once, then one token at a time).
    """
    def hook(module, args, kwargs, output):
        from megatron.core import parallel_state

        if getattr(module, "embedding_neighbours", False):
            return output
        positions = kwargs.get("position_ids", args[1] if len(args) > 1 else None)
        v = source.num_virtual_tokens
        if positions is not None and int(positions[0, 0]) >= v:
            return output
        virtual = source()  # [v, d]
        s_local, b = output.shape[0], output.shape[1]
        start = parallel_state.get_tensor_model_parallel_rank() * s_local if tf_config.sequence_parallel else 0
        n = max(0, min(virtual.shape[0] - start, s_local))
        # Always concatenate (n may be 0 on ranks past the prompt under SP): the result must
        # require grad on every TP rank alike, or the first layer's backward would run its
        # dX reduce-scatter on some ranks only (a deadlock with a frozen embedding).
        head = virtual[start:start + n, None, :].expand(n, b, -1).to(output.dtype)  # [n, b, d]
        return torch.cat([head, output[n:]], dim=0)
    return hook


def apply_prompt(chunks: list, cfg: PromptTuningConfig, tf_config) -> list:
    is_ptuning = isinstance(cfg, PtuningConfig)
    found = []
    for chunk in first_stage_chunks(chunks):
        if cfg.num_virtual_tokens > chunk.max_sequence_length:
            raise UserError(f"peft.num_virtual_tokens={cfg.num_virtual_tokens}: longer than model.seq_length")
        d = tf_config.hidden_size
        module = PromptEncoder(cfg, d) if is_ptuning else SoftPrompt(cfg, d)
        module.to(next(chunk.parameters()).device)
        name = "ptuning_encoder" if is_ptuning else "prompt_embeddings"
        if hasattr(chunk, name):
            raise UserError(f"{name}: already applied")
        chunk.add_module(name, module)
        for p in module.parameters():
            mark_tp_partial_grad(p, tf_config.sequence_parallel, partial_without_sp=False)
        chunk.embedding.register_forward_hook(_embedding_hook(module, tf_config), with_kwargs=True)
        found.append(module)
    return found


def prompt_param_count(cfg: PromptTuningConfig, model_cfg, retro_cfg=None) -> int:  # noqa: ARG001
    d, v = model_cfg.hidden_size, cfg.num_virtual_tokens
    if not isinstance(cfg, PtuningConfig):
        return v * d
    hdim = cfg.encoder_hidden
    count = v * d + (hdim * d + d) + ((d if cfg.encoder == "mlp" else hdim) * hdim + hdim)
    if cfg.encoder == "lstm":  # 2 layers x 2 directions: 4·(in·H + H·H + 2·H), H = hidden/2
        h = hdim // 2
        count += 2 * (4 * (d * h + h * h + 2 * h)) + 2 * (4 * (hdim * h + h * h + 2 * h))
    return count


register_peft_method(PeftMethod(name="prompt", prefix="prompt_", config_cls=PromptTuningConfig,
                                apply=apply_prompt, count=prompt_param_count))
register_peft_method(PeftMethod(name="ptuning", prefix="ptuning_", config_cls=PtuningConfig,
                                apply=apply_prompt, count=prompt_param_count))
