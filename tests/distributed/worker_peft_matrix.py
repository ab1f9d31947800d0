"""torchrun worker (4 ranks): every PEFT method on GPT and on RETRO x TP1 / TP2 / TP2+SP / PP2,
plus the LoRA collective count, in ONE launch.

Per method: the TP1xPP1 run (weights and adapter from init_by_global_name) computes reference
adapter gradients and per-token losses and saves an adapter-only checkpoint; every other layout
builds the same base, loads that checkpoint (another TP/PP), and compares its adapter gradient
slices and per-token losses with the reference.  Rank 0 prints one RESULT line per case.
"""
import json
import os
import sys
import warnings

warnings.filterwarnings("ignore")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from peft_cases import (METHOD_CASES, MODEL_OVERRIDES, RETRO_METHOD_CASES, RETRO_OVERRIDES, SEQ, VOCAB,  # noqa: E402
                        RandomRetroTokens, RandomTokens)

from megatron_retro.config import load_config  # noqa: E402
from megatron_retro.kernels import lora_torch  # noqa: E402
from megatron_retro.models.global_params import init_by_global_name, local_grad_view  # noqa: E402
from megatron_retro.models.gpt import build_gpt_model  # noqa: E402
from megatron_retro.models.retro import build_retro_model  # noqa: E402
from megatron_retro.parallel.initialize import initialize_parallel  # noqa: E402
from megatron_retro.peft import apply_peft, get_method, install_peft_grad_reduction, make_peft_config, merge_peft  # noqa: E402,E501
from megatron_retro.peft.api import global_name, peft_shards  # noqa: E402
from megatron_retro.peft.checkpoint import load_adapter, save_adapter  # noqa: E402
from megatron_retro.training.batches import step_microbatches  # noqa: E402
from megatron_retro.training.engine import Engine  # noqa: E402
from megatron_retro.training.retro_step import RetroEngine  # noqa: E402
from megatron_retro.training.gpt_step import masked_token_loss  # noqa: E402

GBS = 4
# LoRA's folded torch path (strided dX) at these tiny shapes too: its TP collectives are what is checked
lora_torch.FOLD_MIN_TOKENS_PER_IN_FEATURE = 0.0
LAYOUTS = [dict(tp=1, pp=1), dict(tp=2, pp=1), dict(tp=2, pp=1, sp=True), dict(tp=1, pp=2)]


ARCHS = {"gpt": (MODEL_OVERRIDES, METHOD_CASES), "retro": (RETRO_OVERRIDES, RETRO_METHOD_CASES)}


def layouts_for(arch, method):
    """TP2 without SP exercises the non-SP reduction of replicated LoRA factors and the adapters'
    all-reduce path (on GPT); everything runs TP2+SP and PP2 (keeps the launch short)."""
    return LAYOUTS[1:] if arch == "gpt" and method in ("lora", "adapter") else LAYOUTS[2:]


class IndexedTokens(RandomTokens):
    def __getitem__(self, i):
        item = super().__getitem__(i)
        item["sample_id"] = torch.tensor(i)
        return item


class IndexedRetroTokens(RandomRetroTokens):
    def __getitem__(self, i):
        item = super().__getitem__(i)
        item["sample_id"] = torch.tensor(i)
        return item


def config(layout, arch="gpt"):
    return load_config(None, ARCHS[arch][0] + [
        f"parallel.tp={layout['tp']}", f"parallel.pp={layout['pp']}",
        f"parallel.sequence_parallel={str(layout.get('sp', False)).lower()}",
        "train.micro_batch_size=1", f"train.global_batch_size={GBS}"])


def collecting_step(store):
    def step(data_iterator, model):
        batch = next(data_iterator)
        ids = batch["sample_id"].tolist()
        extra = {"neighbours": batch["neighbours"]} if "neighbours" in batch else {}
        out = model(batch["tokens"], batch["position_ids"], None, labels=batch["labels"], **extra)  # [mbs, ns]

        def loss_fn(output):
            store.extend(zip(ids, output.detach().double().clone()))
            return masked_token_loss(batch["loss_mask"], output)
        return out, loss_fn
    return step


def run(arch, method, layout, adapter_dir, reference):
    cfg = config(layout, arch)
    ctx = initialize_parallel(cfg.parallel, seed=7)
    if arch == "retro":
        chunks = build_retro_model(cfg.model, cfg.retro, cfg.parallel, vocab_size=VOCAB)
    else:
        chunks = build_gpt_model(cfg.model, cfg.parallel, vocab_size=VOCAB)
    init_by_global_name(chunks, seed=11, std=0.05)
    options = ARCHS[arch][1][method]
    if reference:
        apply_peft(chunks, make_peft_config(method, options))
        init_by_global_name(chunks, seed=11, std=0.05)  # same base, non-trivial adapter values
    else:
        load_adapter(adapter_dir, chunks)             # saved at TP1xPP1, loaded at this layout
    store = []
    engine = (RetroEngine if arch == "retro" else Engine)(cfg, chunks, collecting_step(store))
    install_peft_grad_reduction(engine)
    for c in engine.chunks:
        c.zero_grad_buffer()
    data = IndexedRetroTokens() if arch == "retro" else IndexedTokens()
    engine.forward_backward(step_microbatches(data, 0, GBS, 1, ctx.dp, ctx.dp_rank))
    grads = [(s, local_grad_view(s).detach().double().clone()) for s in peft_shards(chunks)]
    if reference:
        save_adapter(adapter_dir, chunks, make_peft_config(method, options))
    token_losses = gather_losses(store)
    merged_losses = None
    if not reference and get_method(method).merge is not None:  # merge at this TP/PP, same losses
        merge_peft(chunks)
        store.clear()
        engine.forward_backward(step_microbatches(data, 0, GBS, 1, ctx.dp, ctx.dp_rank), forward_only=True)
        merged_losses = gather_losses(store)
    return grads, token_losses, merged_losses


def gather_losses(store):
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, store)
    return {i: t for rank_store in gathered for i, t in rank_store}


def assemble(grads):
    full = {}
    for shard, grad in grads:
        t = full.setdefault(global_name(shard), torch.zeros(shard.full_shape, dtype=torch.float64))
        t[tuple(slice(o, o + n) for o, n in zip(shard.offset, grad.shape))] = grad
    return full


def compare(arch, method, layout, ref_full, ref_tok, grads, tok, merged):
    worst, covered = 0.0, 0
    for shard, grad in grads:
        full = ref_full[global_name(shard)]
        expected = full[tuple(slice(o, o + n) for o, n in zip(shard.offset, grad.shape))]
        worst = max(worst, (grad - expected).abs().max().item() / max(full.abs().max().item(), 1e-30))
        covered += grad.numel()
    tok_err = max((tok[i] - ref_tok[i]).abs().max().item() for i in ref_tok)
    merged_err = max((merged[i] - ref_tok[i]).abs().max().item() for i in ref_tok) if merged else -1.0
    stats = torch.tensor([worst, tok_err, merged_err], dtype=torch.float64)
    dist.all_reduce(stats, op=dist.ReduceOp.MAX)
    n = torch.tensor([covered], dtype=torch.float64)
    dist.all_reduce(n)
    if dist.get_rank() == 0:
        print("RESULT " + json.dumps({"case": "matrix", "arch": arch, "method": method, "layout": layout,
                                      "grad_rel_err": stats[0].item(), "token_loss_err": stats[1].item(),
                                      "merged_token_loss_err": stats[2].item(),
                                      "grad_elements": int(n.item()), "samples": len(tok)}), flush=True)


# --------------------------------------------------------------------------------------------
COLLECTIVES = ["all_reduce", "all_gather", "all_gather_into_tensor", "_all_gather_base", "reduce_scatter",
               "reduce_scatter_tensor", "_reduce_scatter_base", "broadcast", "all_to_all_single", "reduce",
               "send", "recv", "isend", "irecv", "batch_isend_irecv", "barrier", "gather", "scatter"]


class CountCollectives:
    """Counts torch.distributed calls (also through megatron's module-level aliases)."""

    def __enter__(self):
        import megatron.core.tensor_parallel.layers as layers
        import megatron.core.tensor_parallel.mappings as mappings

        self.counts, self.saved = {}, []

        def wrap(name, fn):
            def counted(*args, **kwargs):
                self.counts[name] = self.counts.get(name, 0) + 1
                return fn(*args, **kwargs)
            return counted
        for name in COLLECTIVES:
            fn = getattr(dist, name, None)
            if fn is not None:
                self.saved.append((dist, name, fn))
                setattr(dist, name, wrap(name, fn))
        for mod in (layers, mappings):
            for alias in ("dist_all_gather_func", "dist_reduce_scatter_func"):
                fn = getattr(mod, alias)
                self.saved.append((mod, alias, fn))
                setattr(mod, alias, wrap(fn.__name__, fn))
        return self

    def __exit__(self, *exc):
        for owner, name, fn in reversed(self.saved):
            setattr(owner, name, fn)


def layer_collectives(layer, cfg):
    s = SEQ // cfg.parallel.tp if cfg.parallel.sequence_parallel else SEQ
    torch.manual_seed(0)
    hidden = torch.randn(s, 2, cfg.model.hidden_size, requires_grad=True)  # [s(/tp), b, d]
    with CountCollectives() as counter:
        out, _ = layer(hidden, attention_mask=None)
        out.float().sum().backward()
    return dict(sorted(counter.counts.items()))


def collective_case(layout):
    cfg = config(layout)
    initialize_parallel(cfg.parallel, seed=7)
    chunks = build_gpt_model(cfg.model, cfg.parallel, vocab_size=VOCAB)
    init_by_global_name(chunks, seed=11)
    layer = chunks[0].decoder.layers[0]
    trainable = layer_collectives(layer, cfg)      # full fine-tuning (weight grads)
    for p in layer.parameters():
        p.requires_grad_(False)
    frozen = layer_collectives(layer, cfg)         # the frozen base alone
    apply_peft(chunks, make_peft_config("lora", {"rank": 4, "dropout": 0.1}))
    with_lora = layer_collectives(layer, cfg)      # frozen base + LoRA on all four linears
    if dist.get_rank() == 0:
        print("RESULT " + json.dumps({"case": "collectives", "layout": layout, "trainable": trainable,
                                      "frozen": frozen, "lora": with_lora}), flush=True)


def main():
    adapter_root = sys.argv[1]
    archs = sys.argv[2].split(",") if len(sys.argv) > 2 else list(ARCHS)
    for layout in (dict(tp=2, pp=1), dict(tp=2, pp=1, sp=True)):
        collective_case(layout)
    for arch in archs:
        for method in ARCHS[arch][1]:
            adapter_dir = os.path.join(adapter_root, arch, method)
            ref_grads, ref_tok, _ = run(arch, method, LAYOUTS[0], adapter_dir, reference=True)
            ref_full = assemble(ref_grads)
            for layout in layouts_for(arch, method):
                grads, tok, merged = run(arch, method, layout, adapter_dir, reference=False)
                compare(arch, method, layout, ref_full, ref_tok, grads, tok, merged)
    dist.barrier()


if __name__ == "__main__":
    main()
