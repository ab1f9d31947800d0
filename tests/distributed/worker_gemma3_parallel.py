"""torchrun worker (2 ranks): import an HF Gemma 3 directory at TP2 and at PP2 and compare our
logits with transformers' (written by the test); TP2 is also read back with sequence parallelism.
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
from megatron_retro.training.hf_convert import import_hf  # noqa: E402
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
        if layout == "tp2":  # the same checkpoint read with sequence parallelism
            cfg = load_config(os.path.join(out, "model.yaml"), ["parallel.tp=2", "parallel.sequence_parallel=true"])
            initialize_parallel(cfg.parallel, seed=1)
            chunks = build_gpt_model(cfg.model, cfg.parallel, vocab_size=vocab, precision="fp32")
            load_checkpoint(info["checkpoint"], SimpleNamespace(chunks=chunks), model_record(cfg, vocab),
                            with_optimizer=False)
            report("tp2-sp", pipeline_logits(chunks, tokens), hf_logits)


if __name__ == "__main__":
    main(sys.argv[1])
