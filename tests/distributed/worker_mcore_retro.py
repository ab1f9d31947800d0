"""torchrun worker (2 ranks, TP2): retro.megatron_compat against megatron-core 0.15.3's logits.

1. ``import_mcore`` (the `retro import-mcore --tp 2` path) reads the TP1-saved megatron-core
   fixture at TP2 and writes our checkpoint; 2. a fresh TP2 compat model loads that checkpoint
   and computes the logits of both fixture cases (gathered over TP); 3. the other fixture models
   (RoPE / SwiGLU) load straight from their megatron-core checkpoints at TP2.  Rank 0 prints one RESULT.
"""
import json
import sys
import warnings

warnings.filterwarnings("ignore")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

sys.path.insert(0, __file__.rsplit("/", 2)[0] + "/unit")
from test_mcore_retro_compat import FIXTURE, VARIANTS, compat_logits, load_variant, reference, rel_error  # noqa: E402

from megatron_retro.config import ParallelConfig, RunConfig, TrainConfig, load_config  # noqa: E402
from megatron_retro.models.retro import build_retro_model  # noqa: E402
from megatron_retro.training.checkpointing import load_checkpoint  # noqa: E402
from megatron_retro.training.mcore_import import import_mcore  # noqa: E402
from megatron_retro.training.pretrain import model_record  # noqa: E402
from megatron_retro.training.retro_step import RetroEngine  # noqa: E402


def main(out: str) -> None:
    parallel = ParallelConfig(tp=2)
    result = import_mcore(FIXTURE, out, parallel)
    given = load_config(f"{out}/model.yaml")
    cfg = RunConfig(model=given.model, retro=given.retro, parallel=parallel, train=TrainConfig(steps=1, lr_warmup_steps=0))
    chunks = build_retro_model(cfg.model, cfg.retro, parallel, vocab_size=cfg.model.vocab_size, precision="fp32")
    load_checkpoint(result["checkpoint"], RetroEngine(cfg, chunks), model_record(cfg, cfg.model.vocab_size),
                    with_optimizer=False)
    ref = reference()
    errors = {case: rel_error(compat_logits(chunks[0], ref[f"tokens_{case}"], ref[f"neighbours_{case}"]),
                              ref[f"logits_{case}"]) for case in ("full", "ragged")}
    for variant in VARIANTS[1:]:  # the others: loaded straight from megatron-core's checkpoint at TP2
        model = load_variant(variant, parallel)
        ref = reference(variant)
        errors.update({f"{variant}_{case}": rel_error(compat_logits(model, ref[f"tokens_{case}"],
                                                                    ref[f"neighbours_{case}"]), ref[f"logits_{case}"])
                       for case in ("full", "ragged")})
    local_q = tuple(chunks[0].decoder.layers[5].cross_attention.attn.linear_q.weight.shape)
    if dist.get_rank() == 0:
        print("RESULT " + json.dumps({"errors": errors, "local_linear_q": local_q, "tp": result["tp"]}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
