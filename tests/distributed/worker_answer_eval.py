"""torchrun worker (4 ranks): QA evaluation (greedy answers, EM/F1/ROUGE-L) under DP / TP / PP
layouts, GPT and RETRO, with the same full weights (init_by_global_name) and the same questions.

DP4 runs the KV-cached single-stage generation on a quarter of the questions per rank; TP2xDP2
splits heads; PP2xDP2 and TP2xPP2 generate through the pipeline schedule.  Rank 0 prints one
RESULT line per (arch, layout) with every prediction and the scores.
"""
import json
import sys
import warnings

warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch.distributed as dist  # noqa: E402

from megatron_retro.config import load_config  # noqa: E402
from megatron_retro.data.qa_prompts import QALayout  # noqa: E402
from megatron_retro.data.tasks.example import QAExample  # noqa: E402
from megatron_retro.evaluation.answer_eval import evaluate_model  # noqa: E402
from megatron_retro.models.global_params import init_by_global_name  # noqa: E402
from megatron_retro.parallel.initialize import initialize_parallel  # noqa: E402
from megatron_retro.training.finetune import build_model  # noqa: E402
from megatron_retro.training.qa_data import QASplit  # noqa: E402

VOCAB, M, K, R, N = 96, 8, 2, 16, 10
LAYOUTS = [dict(tp=1, pp=1), dict(tp=2, pp=1), dict(tp=1, pp=2), dict(tp=2, pp=2)]


class CharTokenizer:
    """Letters a..z as ids 4..29 (eod 3, pad 0); enough to score decoded answers."""

    eod, pad = 3, 0

    def encode(self, text):
        return [4 + (ord(c) - 97) % 26 for c in text.lower() if c.isalpha()]

    def decode(self, ids):
        return "".join(chr(97 + (i - 4) % 26) if i >= 4 else " " for i in ids).strip()


def split():
    g = np.random.default_rng(0)
    examples = [QAExample(id=f"q{i}", question="what is " + "".join(g.choice(list("abcdef"), 5)),
                          answers=["abc", "b" * (i % 3 + 1)], task="fixture") for i in range(N)]
    passages = g.integers(4, VOCAB, (N, K, R))
    return QASplit(examples=examples, passages=passages, chunk_ids=np.zeros((N, K), np.int64), gold_hit=None)


def run(arch, layout):
    overrides = [f"parallel.tp={layout['tp']}", f"parallel.pp={layout['pp']}", "model.num_layers=4",
                 "model.hidden_size=64", "model.num_attention_heads=4", "model.ffn_hidden_size=128",
                 "model.seq_length=48", "model.rotary_percent=0.5", "train.precision=fp32", "qa.eval_batch_size=2",
                 f"qa.num_passages={K}", f"qa.passage_length={R}", f"qa.chunk_length={M}", "qa.max_answer_tokens=6"]
    if arch == "retro":
        overrides += ["model.arch=retro", f"retro.chunk_length={M}", f"retro.num_neighbours={K}",
                      f"retro.neighbour_length={R}", "retro.retrieval_layers=[2,4]"]
    cfg = load_config(None, overrides)
    initialize_parallel(cfg.parallel, seed=3)
    chunks = build_model(cfg, VOCAB)
    init_by_global_name(chunks, seed=5, std=0.3)
    tok = CharTokenizer()
    layout_ = QALayout(arch=arch, seq_length=48, answer_tokens=6, eod=tok.eod, pad=tok.pad, chunk_length=M)

    class QA:
        tokenizer, layout, vocab_size = tok, layout_, VOCAB

    result = evaluate_model(cfg, chunks, QA, split(), progress=False)
    if dist.get_rank() == 0:
        print("RESULT " + json.dumps({"arch": arch, "layout": layout, "scores": result.scores,
                                      "predictions": [r["prediction"] for r in result.predictions]}), flush=True)


if __name__ == "__main__":
    for arch in sys.argv[1:]:
        for layout in LAYOUTS:
            run(arch, layout)
