"""torchrun worker (4 ranks): a checkpoint saved at TP2xPP2 loads at TP1xPP1 with the same logits,
and one saved at TP1xPP1 loads at TP2xPP2.  Argument: a scratch directory."""
import json
import sys
import warnings

warnings.filterwarnings("ignore")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from megatron_retro.config import load_config  # noqa: E402
from megatron_retro.models.global_params import init_by_global_name  # noqa: E402
from megatron_retro.models.gpt import build_gpt_model  # noqa: E402
from megatron_retro.parallel.initialize import initialize_parallel  # noqa: E402
from megatron_retro.training.checkpointing import load_checkpoint, save_checkpoint  # noqa: E402
from megatron_retro.training.engine import Engine  # noqa: E402
from megatron_retro.training.gpt_step import gpt_forward_step  # noqa: E402
from megatron_retro.training.pretrain import model_record  # noqa: E402

VOCAB, SEQ = 512, 32


def setup(tp, pp, seed):
    cfg = load_config(None, [f"parallel.tp={tp}", f"parallel.pp={pp}", "model.num_layers=4",
                             "model.hidden_size=64", "model.num_attention_heads=4", f"model.seq_length={SEQ}",
                             "train.micro_batch_size=2", "train.steps=10", "train.lr_warmup_steps=1"])
    initialize_parallel(cfg.parallel, seed=seed)
    chunks = build_gpt_model(cfg.model, cfg.parallel, vocab_size=VOCAB)
    init_by_global_name(chunks, seed=seed)
    return cfg, Engine(cfg, chunks, gpt_forward_step)


def full_logits(engine):
    """Logits [b, s, V] of a fixed batch, identical on every rank (gathered over TP, shared over PP)."""
    from megatron.core import parallel_state
    from megatron.core.pipeline_parallel import get_forward_backward_func
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, VOCAB, (2, SEQ), generator=g)
    batch = {"tokens": tokens, "position_ids": torch.arange(SEQ).expand(2, SEQ)}

    def step(it, model):
        b = next(it)
        return model(b["tokens"], b["position_ids"], None), lambda out, non_loss_data=False: out.detach()

    for c in engine.chunks:
        c.eval()
    out = get_forward_backward_func()(forward_step_func=step, data_iterator=iter([batch]), model=engine.chunks[0],
                                      num_microbatches=1, seq_length=SEQ, micro_batch_size=2, forward_only=True,
                                      collect_non_loss_data=True)
    holder = torch.zeros(1)
    logits = torch.zeros(2, SEQ, 512 * 4)  # padded vocab is 512 at TP1 / TP2 (128 * tp divides 512)
    if parallel_state.is_pipeline_last_stage():
        full = gather_from_tensor_model_parallel_region(out[0])  # [b, s, V]
        logits = torch.zeros(2, SEQ, 512 * 4)
        logits[..., : full.shape[-1]] = full
        holder += 1
    dist.all_reduce(logits)
    dist.all_reduce(holder)
    return logits / holder


def main(scratch):
    cfg, engine = setup(2, 2, seed=5)
    g = torch.Generator().manual_seed(1)
    t = torch.randint(0, VOCAB, (2, SEQ + 1), generator=g)
    engine.train_step([{"tokens": t[:, :-1], "labels": t[:, 1:], "loss_mask": torch.ones(2, SEQ),
                        "position_ids": torch.arange(SEQ).expand(2, SEQ)}] * 2)  # optimizer state exists
    ref = full_logits(engine)
    record = model_record(cfg, VOCAB)
    save_checkpoint(f"{scratch}/a", 3, engine, {"model": record})

    cfg, engine = setup(1, 1, seed=99)  # other weights: the load must overwrite all of them
    before = full_logits(engine)
    loaded = load_checkpoint(f"{scratch}/a/iter_0000003", engine, model_record(cfg, VOCAB))
    after_tp1 = full_logits(engine)
    save_checkpoint(f"{scratch}/b", 4, engine, {"model": model_record(cfg, VOCAB)})

    cfg, engine = setup(2, 2, seed=123)
    load_checkpoint(f"{scratch}/b/iter_0000004", engine, model_record(cfg, VOCAB))
    after_tp2pp2 = full_logits(engine)
    if dist.get_rank() == 0:
        print("RESULT " + json.dumps({
            "step": loaded.step,
            "differs_before_load": (before - ref).abs().max().item(),
            "tp2pp2_to_tp1": (after_tp1 - ref).abs().max().item(),
            "tp1_to_tp2pp2": (after_tp2pp2 - ref).abs().max().item(),
            "logit_scale": ref.abs().max().item(),
            # the weights fingerprint adapters check: the same weights at TP2xPP2 and at TP1xDP4
            "fingerprints": [json.load(open(f"{scratch}/{d}/state.json"))["weights_fingerprint"]
                             for d in ("a/iter_0000003", "b/iter_0000004")],
        }), flush=True)
    dist.barrier()


if __name__ == "__main__":
    main(sys.argv[1])
