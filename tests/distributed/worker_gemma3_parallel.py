"""torchrun worker (2 ranks): import an HF Gemma 3 directory at TP2 and at PP2 and compare our
logits with transformers' (written by the test); TP2 is also read back with sequence parallelism
and exported back to HF (every tensor equal: the single KV head is split over the ranks); 32 greedy
tokens at TP2 (KV cache) and PP2 equal transformers'.
Argument: scratch directory holding hf/ and ref.safetensors (tokens + HF logits)."""
import json
import os
import sys
import warnings
from types import SimpleNamespace

warnings.filterwarnings("ignore")

import torch  # noqa: E402

from megatron_retro.config import ParallelConfig, load_config  # noqa: E402
from megatron_retro.models.gpt import build_gpt_model  # noqa: E402
from megatron_retro.parallel.initialize import initialize_parallel  # noqa: E402
from megatron_retro.training.checkpointing import load_checkpoint  # noqa: E402
from megatron_retro.models.hf_files import HFCheckpoint  # noqa: E402
from megatron_retro.training.hf_convert import export_hf, import_hf  # noqa: E402
from megatron_retro.training.pretrain import model_record  # noqa: E402
from worker_hf_roundtrip import pipeline_logits  # noqa: E402


def report(layout, logits, ref):
    from megatron.core import parallel_state

    if logits is None or parallel_state.get_tensor_model_parallel_rank() != 0:
        return
    got = logits[..., :ref.shape[-1]]
    rel = lambda a, b: ((a - b).abs().max() / b.abs().max()).item()  # noqa: E731
    print("RESULT " + json.dumps({"layout": layout, "rel_err": rel(got, ref),
                                  "rel_err_past_window": rel(got[:, 512:], ref[:, 512:])}), flush=True)


def greedy(layout, chunks, prompt, want, vocab):
    """32 greedy tokens: TP2 through `generate` (KV cache), PP2 through `generate_pipelined`."""
    from megatron.core import parallel_state

    from megatron_retro.evaluation.generation import generate
    from megatron_retro.evaluation.pipeline_generation import generate_pipelined

    with torch.no_grad():
        if len(chunks) == 1 and chunks[0].pre_process and chunks[0].post_process:
            got = generate(chunks[0], prompt, want.shape[1] - prompt.shape[1], vocab)
        else:
            got = generate_pipelined(chunks, prompt, want.shape[1] - prompt.shape[1], vocab)
    if torch.distributed.get_rank() == 0 and parallel_state.get_tensor_model_parallel_rank() == 0:
        print("RESULT " + json.dumps({"layout": f"{layout}-greedy", "equal": got.tolist() == want.tolist(),
                                      "new_tokens": got.shape[1] - prompt.shape[1]}), flush=True)


def main(scratch):
    from safetensors.torch import load_file

    ref = load_file(os.path.join(scratch, "ref.safetensors"))
    tokens, hf_logits = ref["tokens"], ref["logits"]
    vocab = hf_logits.shape[-1]
    for layout, parallel in (("tp2", ParallelConfig(tp=2)), ("pp2", ParallelConfig(pp=2))):
        out = os.path.join(scratch, f"ckpt-{layout}")
        info = import_hf(os.path.join(scratch, "hf"), out, parallel)
        cfg = load_config(os.path.join(out, "model.yaml"), [f"parallel.tp={parallel.tp}", f"parallel.pp={parallel.pp}"])
        chunks = build_gpt_model(cfg.model, cfg.parallel, vocab_size=vocab, precision="fp32")
        load_checkpoint(info["checkpoint"], SimpleNamespace(chunks=chunks), model_record(cfg, vocab), with_optimizer=False)
        report(layout, pipeline_logits(chunks, tokens), hf_logits)
        greedy(layout, chunks, ref["prompt"], ref["greedy"], vocab)
        if layout == "tp2":  # one KV head split over 2 ranks: export writes back the HF tensors
            exported = os.path.join(scratch, "exported")
            export_hf(info["checkpoint"], exported, parallel)
            if torch.distributed.get_rank() == 0:
                original, back = HFCheckpoint(os.path.join(scratch, "hf")), HFCheckpoint(exported)
                same = set(back.files) == set(original.files) and all(
                    torch.equal(back.get(n), original.get(n)) for n in original.files)
                print("RESULT " + json.dumps({"layout": "tp2-export", "every_tensor_equal": same}), flush=True)
        if layout == "tp2":  # the same checkpoint read with sequence parallelism
            cfg = load_config(os.path.join(out, "model.yaml"), ["parallel.tp=2", "parallel.sequence_parallel=true"])
            initialize_parallel(cfg.parallel, seed=1)
            chunks = build_gpt_model(cfg.model, cfg.parallel, vocab_size=vocab, precision="fp32")
            load_checkpoint(info["checkpoint"], SimpleNamespace(chunks=chunks), model_record(cfg, vocab),
                            with_optimizer=False)
            report("tp2-sp", pipeline_logits(chunks, tokens), hf_logits)


if __name__ == "__main__":
    main(sys.argv[1])
