"""torchrun worker (4 ranks): import an HF Llama at TP2xPP2, check our logits against HF's,
then export at TP1xPP1 (DP4, a resharded read).  Arguments: scratch directory holding hf/ and
ref.safetensors (tokens + HF logits written by the test)."""
import json
import os
import sys
import warnings
from types import SimpleNamespace

warnings.filterwarnings("ignore")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from megatron_retro.config import ParallelConfig, load_config  # noqa: E402
from megatron_retro.models.global_params import init_by_global_name  # noqa: E402
from megatron_retro.models.gpt import build_gpt_model  # noqa: E402
from megatron_retro.training.checkpointing import load_checkpoint  # noqa: E402
from megatron_retro.training.hf_convert import export_hf, import_hf  # noqa: E402
from megatron_retro.training.pretrain import model_record  # noqa: E402


def pipeline_logits(chunks, tokens):
    """[b, s, Vp] logits on the last pipeline stage (TP-gathered), None elsewhere."""
    from megatron.core import parallel_state
    from megatron.core.pipeline_parallel import get_forward_backward_func
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

    b, s = tokens.shape
    positions = torch.arange(s).expand(b, s)

    def step(it, model):
        batch = next(it)
        return model(batch, positions, None), lambda out, non_loss_data=False: out.detach()

    for c in chunks:
        c.eval()
    out = get_forward_backward_func()(forward_step_func=step, data_iterator=iter([tokens]), model=chunks[0],
                                      num_microbatches=1, seq_length=s, micro_batch_size=b, forward_only=True,
                                      collect_non_loss_data=True)
    if not parallel_state.is_pipeline_last_stage():
        return None
    return gather_from_tensor_model_parallel_region(out[0])


def main(scratch):
    from megatron.core import parallel_state
    from safetensors.torch import load_file

    ref = load_file(os.path.join(scratch, "ref.safetensors"))
    tokens, hf_logits = ref["tokens"], ref["logits"]  # [b, s], [b, s, V]
    vocab = hf_logits.shape[-1]
    info = import_hf(os.path.join(scratch, "hf"), os.path.join(scratch, "ckpt"), ParallelConfig(tp=2, pp=2))

    # What `pretrain --config ckpt/model.yaml checkpoint.load=...` does: the emitted config's
    # model record must match the saved one, and the weights must load at TP2xPP2.
    cfg = load_config(os.path.join(scratch, "ckpt", "model.yaml"), ["parallel.tp=2", "parallel.pp=2"])
    chunks = build_gpt_model(cfg.model, cfg.parallel, vocab_size=vocab, precision="fp32")
    init_by_global_name(chunks, seed=99)  # other weights: the load must overwrite all of them
    before = pipeline_logits(chunks, tokens)
    load_checkpoint(info["checkpoint"], SimpleNamespace(chunks=chunks), model_record(cfg, vocab), with_optimizer=False)
    after = pipeline_logits(chunks, tokens)
    reporter = after is not None and parallel_state.get_tensor_model_parallel_rank() == 0

    export_hf(info["checkpoint"], os.path.join(scratch, "exported"), ParallelConfig(tp=1, pp=1),
                         max_shard_bytes=200_000)
    if reporter:
        scale = hf_logits.abs().max().item()
        print("RESULT " + json.dumps({
            "padded_vocab": after.shape[-1], "vocab": vocab,
            "differs_before_load": (before[..., :vocab] - hf_logits).abs().max().item() / scale,
            "import_rel_err": (after[..., :vocab] - hf_logits).abs().max().item() / scale}), flush=True)
    dist.barrier()


if __name__ == "__main__":
    main(sys.argv[1])
