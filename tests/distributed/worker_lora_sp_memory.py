"""torchrun worker (2 ranks, TP2 + sequence parallel): the activation bytes a column-parallel LoRA
linear saves for backward, against the frozen base layer alone, and its gradients against the
same layer saving the gathered input (the rule switched off).  Rank 0 prints RESULT lines."""
import json
import os
import sys
import warnings

warnings.filterwarnings("ignore")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from peft_cases import MODEL_OVERRIDES, VOCAB  # noqa: E402

from megatron_retro.config import load_config  # noqa: E402
from megatron_retro.models.gpt import build_gpt_model  # noqa: E402
from megatron_retro.parallel.initialize import initialize_parallel  # noqa: E402
from megatron_retro.peft import apply_peft, make_peft_config  # noqa: E402
from megatron_retro.peft import sp_saved  # noqa: E402

S, B = 32, 2   # full sequence, micro-batch


class Saved:
    """Counts the bytes autograd keeps: tensors saved directly, and what sp_saved packs them as."""

    def __init__(self, params):
        self.bytes, self.params = 0, {p.data_ptr() for p in params}

    def add(self, kept):
        t = kept.local if isinstance(kept, sp_saved._Regather) else kept
        if isinstance(t, torch.Tensor) and t.data_ptr() not in self.params:
            self.bytes += t.numel() * t.element_size()

    def pack(self, t):
        self.add(t)
        return t

    def wrap(self, make_hooks):
        def counted(local, gathered, group):
            pack, unpack = make_hooks(local, gathered, group)

            def pack_counted(t):
                kept = pack(t)
                self.add(kept)
                return kept
            return pack_counted, unpack
        return counted


def forward_backward(module, x, dy, count):
    x = x.clone().requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(count.pack, lambda t: t):
        y, _ = module(x)
    y.backward(dy)
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    for p in module.parameters():
        p.grad = None
    return x.grad, grads


def main():
    cfg = load_config(None, MODEL_OVERRIDES + ["parallel.tp=2", "parallel.sequence_parallel=true",
                                               "model.add_bias_linear=false"])
    ctx = initialize_parallel(cfg.parallel, seed=5)
    chunk = build_gpt_model(cfg.model, cfg.parallel, vocab_size=VOCAB, precision="fp32")[0]
    layer = chunk.decoder.layers[0].self_attention.linear_qkv          # ColumnParallelLinear, SP
    for p in chunk.parameters():
        p.requires_grad_(False)
    k = layer.weight.shape[1]
    g = torch.Generator().manual_seed(ctx.tp_rank)
    x = torch.randn(S // 2, B, k, generator=g)                          # [s/tp, b, K]
    dy = torch.randn(S, B, layer.weight.shape[0], generator=g)          # [s, b, N/tp]
    frozen = Saved(layer.parameters())
    forward_backward(layer, x, dy, frozen)
    rank = 4
    apply_peft([chunk], make_peft_config("lora", {"rank": rank, "alpha": 8.0, "targets": ["linear_qkv"]}))
    with torch.no_grad():
        layer.lora_b.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(7))
    lora = Saved(layer.parameters())
    original = sp_saved.hooks
    sp_saved.hooks = lora.wrap(original)
    dx, grads = forward_backward(layer, x, dy, lora)
    full = Saved(layer.parameters())
    sp_saved.hooks = lambda local, gathered, group: (full.pack, lambda t: t)   # rule off: keep [s, b, K]
    dx_off, grads_off = forward_backward(layer, x, dy, full)
    sp_saved.hooks = original
    # the folded path keeps its stacked weight for backward (weight-sized, not an activation): the saved
    # tensor is the [N/tp, K + r] window [W + s·B·A | s·B] of its [N/tp + r, K + r] buffer
    from megatron_retro.kernels.lora_torch import keeps_folded_weight, use_folded

    gathered = torch.zeros(S, B, k, requires_grad=True)
    folds = use_folded(gathered, layer.weight) and keeps_folded_weight(layer.weight)
    buffer_bytes = layer.weight.shape[0] * (k + rank) * 4 if folds else 0
    same = torch.equal(dx, dx_off) and all(torch.equal(grads[n], grads_off[n]) for n in grads)
    if torch.distributed.get_rank() == 0:
        print("RESULT " + json.dumps({
            "frozen_bytes": frozen.bytes, "lora_bytes": lora.bytes, "rule_off_bytes": full.bytes,
            "x_local_bytes": x.numel() * 4, "x_full_bytes": 2 * x.numel() * 4,
            "h_bytes": S * B * rank * 4, "fold_buffer_bytes": buffer_bytes, "same_grads": same, "grad_names": sorted(grads)}), flush=True)


if __name__ == "__main__":
    main()
