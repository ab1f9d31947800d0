"""Can a base checkpoint read?  Two in-context copying probes of a GPT base (no fine-tuning).

    python benchmarks/probe_copying.py --data-dir DIR CKPT [CKPT ...] [section.key=value ...]

1. **Repeat**: passages of fact sentences about entities of an unseen fictional world
   (``encyclopedia.reading_world``, another seed than any data directory's), each fed twice in one
   sequence; mean next-token loss (nats) on the first copy and on the second.  A model with
   induction (copying) heads predicts the second copy far better; equal losses mean it cannot copy.
2. **Sentence twice**: each fact sentence of those passages followed by itself; mean loss on the
   first and on the second instance (the immediate repeat a sentence-doubled corpus trains).
3. **Passage gain**: for each question on those passages, the loss of the answer tokens after
   ``passage Question: q Answer:`` and after ``Question: q Answer:`` alone, and how often the
   greedy first answer token is right with the passage.  Reading shows as a lower loss with it.
4. **Random twice**: 32 spans of 24 random ordinary pieces (``data.copy_vocab`` of them when set,
   as ``data.copy_share`` draws them), each fed twice; loss on the first copy and on the second
   from its second token on (its first is unpredictable).
   Only a copy circuit lowers the second (the first sits at ln(pieces drawn from)).

Prints one JSON line per checkpoint.  Single process, CPU, the run config's model
(``--config``, default configs/models/gpt-tiny.yaml).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import warnings

warnings.filterwarnings("ignore")


def _loss(model, seq, first):
    """Mean next-token loss of ``seq`` (list of ids) over the tokens from index ``first`` on."""
    import torch

    x, y = torch.tensor([seq[:-1]]), torch.tensor([seq[1:]])             # [1, n-1]
    mask = torch.zeros_like(x, dtype=torch.float)
    mask[0, first - 1:] = 1.0
    pos = torch.arange(x.shape[1])[None]
    loss = model(x, pos, None, labels=y, loss_mask=mask)                  # [1, n-1] per-token losses
    return float((loss * mask).sum() / mask.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/models/gpt-tiny.yaml")
    ap.add_argument("--data-dir", required=True, help="the prepared data directory of the checkpoints (tokenizer)")
    ap.add_argument("--entities", type=int, default=120)
    ap.add_argument("checkpoints", nargs="+", help="iter_* directories; then section.key=value overrides")
    args = ap.parse_args()
    ckpts = [c for c in args.checkpoints if "=" not in c]
    overrides = [c for c in args.checkpoints if "=" in c] + [f"data.dir={args.data_dir}"]

    import numpy as np
    import torch

    from megatron_retro.config import load_config
    from megatron_retro.data.synthetic.encyclopedia import READING_FACTS, reading_world
    from megatron_retro.data.qa_prompts import encode_answer, encode_question
    from megatron_retro.data.tokenizer import load_tokenizer
    from megatron_retro.parallel.initialize import initialize_parallel
    from megatron_retro.training.finetune import load_model

    cfg = load_config(args.config, overrides)
    initialize_parallel(cfg.parallel, seed=1)
    tok = load_tokenizer(os.path.join(args.data_dir, "tokenizer.model"))
    facts, by_entity = reading_world(args.entities, seed=424242, taken=set())
    rng = random.Random(5)
    passages, questions, sentences_seen = [], [], []
    for e in sorted(by_entity)[:args.entities]:
        asked = by_entity[e][:READING_FACTS]
        sentences = [facts[q["fact_id"]].sentences[0] for q in asked]
        sentences_seen += [(tok.encode(t), tok.encode(" " + t)) for t in sentences[:2]]
        rng.shuffle(sentences)
        ctx = tok.encode(" ".join(sentences))
        if 2 * len(ctx) + 1 <= cfg.model.seq_length:
            passages.append(ctx)
        questions += [(ctx, encode_question(tok, q["question"]), encode_answer(tok, q["answers"][0])) for q in asked]
    from megatron_retro.data.copy_mix import ordinary_ids

    pieces = ordinary_ids(tok)[:cfg.data.copy_vocab or None]
    spans = np.random.default_rng(99).choice(pieces, size=(32, 24)).tolist()   # [32, 24]
    for ckpt in ckpts:
        chunks, _, _ = load_model(cfg, tok.vocab_size, ckpt, tokenizer=tok)
        model = chunks[0]
        while hasattr(model, "module"):
            model = model.module
        model.eval()
        out = {"checkpoint": ckpt, "passages": len(passages), "questions": len(questions)}
        with torch.no_grad():
            # causal: the first copy's losses in [eod] p p are those of [eod] p alone
            out["repeat_first_copy_loss"] = round(float(np.mean([_loss(model, [tok.eod] + p, 1) for p in passages])), 3)
            out["repeat_second_copy_loss"] = round(float(np.mean(
                [_loss(model, [tok.eod] + p + p, 1 + len(p)) for p in passages])), 3)
            out["sentence_first_loss"] = round(float(np.mean([_loss(model, [tok.eod] + a, 1)
                                                              for a, _ in sentences_seen])), 3)
            out["sentence_second_loss"] = round(float(np.mean([_loss(model, [tok.eod] + a + b, 1 + len(a))
                                                               for a, b in sentences_seen])), 3)
            out["random_first_copy_loss"] = round(float(np.mean([_loss(model, [tok.eod] + x, 1) for x in spans])), 3)
            out["random_second_copy_loss"] = round(float(np.mean(
                [_loss(model, [tok.eod] + x + x, 2 + len(x)) for x in spans])), 3)
            with_p, without_p, right = [], [], []
            for ctx, q, a in questions:
                with_p.append(_loss(model, [tok.eod] + ctx + q + a, 1 + len(ctx) + len(q)))
                without_p.append(_loss(model, [tok.eod] + q + a, 1 + len(q)))
                seq = [tok.eod] + ctx + q
                logits = model(torch.tensor([seq]), torch.arange(len(seq))[None], None)   # [1, n, V]
                right.append(int(logits[0, -1, :tok.vocab_size].argmax()) == a[0])
            out["answer_loss_with_passage"] = round(float(np.mean(with_p)), 3)
            out["answer_loss_without_passage"] = round(float(np.mean(without_p)), 3)
            out["first_answer_token_right_with_passage"] = round(float(np.mean(right)), 3)
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
