"""`megatron-retro evaluate`: greedy answers to a QA split, scored with EM / F1 / ROUGE-L.

Every data-parallel rank answers a contiguous share of the questions in batches of
``qa.eval_batch_size``; the prompts are laid out exactly as in fine-tuning
(``data/qa_prompts.py``: GPT reads the retrieved passages inline, RETRO as the neighbours of its
first chunk).  One pipeline stage: megatron's KV-cached generation (``generation.generate``);
several: a forward-only pass of the pipeline schedule per new token
(``pipeline_generation.generate_pipelined``).  The predictions of all DP ranks are gathered,
scored against every gold answer (max over golds) and written, with the scores, to
``<out_dir>/predictions.jsonl`` and ``<out_dir>/scores.json`` (atomically, on the logging rank).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import torch

from megatron_retro.config import RunConfig


@dataclass
class EvalResult:
    scores: Dict[str, float]        # em / f1 / rougeL in [0, 1], averaged over the questions
    predictions: List[dict]         # {"id", "question", "prediction", "answers"} in split order
    count: int
    info: dict


def _unwrap(chunk):
    while hasattr(chunk, "module"):
        chunk = chunk.module
    return chunk


def answer_batch(chunks: list, layout, tokenizer, questions: List[List[int]], passages: np.ndarray,
                 vocab_size: int) -> List[List[int]]:
    """Collective over TP/PP: greedy answer token ids (end-of-text stripped) of one batch.

    ``questions``: token ids of each ``Question: q Answer:`` line; ``passages`` int64 [b, k, r].
    """
    from megatron.core import parallel_state

    from megatron_retro.evaluation.generation import generate
    from megatron_retro.evaluation.pipeline_generation import generate_pipelined

    prompts = torch.as_tensor(np.stack([layout.prompt(q, p) for q, p in zip(questions, passages)]))  # [b, P]
    retro = layout.arch == "retro"
    neighbours = torch.as_tensor(np.asarray(passages, dtype=np.int64))[:, None]                     # [b, 1, k, r]
    models = [_unwrap(c) for c in chunks]
    if parallel_state.get_pipeline_model_parallel_world_size() == 1 and len(models) == 1:
        retriever = (lambda chunk_tokens: neighbours.numpy()) if retro else None
        out = generate(models[0], prompts, layout.answer_tokens, vocab_size, retriever=retriever,
                       eod=layout.eod, pad_id=layout.pad)
    else:
        out = generate_pipelined(models, prompts, layout.answer_tokens, vocab_size, eod=layout.eod,
                                 neighbours=neighbours if retro else None, chunk_length=layout.chunk_length)
    answers = []
    for row in out[:, prompts.shape[1]:].tolist():
        answers.append(row[:row.index(layout.eod)] if layout.eod in row else row)
    return answers


def evaluate_model(cfg: RunConfig, chunks: list, qa, split, progress: bool = True) -> EvalResult:
    """Collective: answer and score ``split`` (a ``qa_data.QASplit``) with this rank's ``chunks``."""
    import torch.distributed as dist
    from megatron.core import parallel_state
    from tqdm import tqdm

    from megatron_retro.data.qa_prompts import encode_question, prompt_question
    from megatron_retro.evaluation.metrics import answer_concentration, choose_option, score_one

    for c in chunks:
        c.eval()
    dp, dp_rank = parallel_state.get_data_parallel_world_size(), parallel_state.get_data_parallel_rank()
    n = len(split.examples)
    lo, hi = n * dp_rank // dp, n * (dp_rank + 1) // dp
    # every DP rank runs the same number of batches (the pipeline schedule is collective)
    bs = cfg.qa.eval_batch_size
    num_batches = max(-(-(n * (r + 1) // dp - n * r // dp) // bs) for r in range(dp))
    logging = dist.get_rank() == 0 if dist.is_initialized() else True
    mine = []
    bar = tqdm(total=n, desc=f"evaluate[{cfg.model.arch}]", unit="q", disable=not (progress and logging),
               dynamic_ncols=True)
    for b in range(num_batches):
        idx = list(range(lo + b * bs, min(lo + (b + 1) * bs, hi))) or [lo if lo < n else 0]  # keep in step
        questions = [encode_question(qa.tokenizer, prompt_question(split.examples[i])) for i in idx]
        with torch.no_grad():
            answers = answer_batch(chunks, qa.layout, qa.tokenizer, questions, split.passages[idx], qa.vocab_size)
        if lo + b * bs < hi:
            mine.extend((i, qa.tokenizer.decode(a)) for i, a in zip(idx, answers))
            bar.update(len(idx) * dp)
    bar.close()
    gathered = [mine]
    if dist.is_initialized() and dp > 1:
        gathered = [None] * dp
        dist.all_gather_object(gathered, mine, group=parallel_state.get_data_parallel_group())
    predicted = dict(pair for part in gathered for pair in part)
    rows, totals = [], {"em": 0.0, "f1": 0.0, "rougeL": 0.0}
    multiple_choice = all(ex.options for ex in split.examples)   # QuALITY: choice accuracy too
    if multiple_choice:
        totals["choice"] = 0.0
    for i, ex in enumerate(split.examples):
        s = score_one(predicted[i], ex.answers)
        if multiple_choice:
            picked = choose_option(predicted[i], ex.options)
            s["choice"] = float(picked >= 0 and ex.options[picked] in ex.answers)
        for key in totals:
            totals[key] += s[key]
        rows.append({"id": ex.id, "question": ex.question, "prediction": predicted[i], "answers": ex.answers,
                     **{k: round(v, 4) for k, v in s.items()}})
    scores = {k: v / n for k, v in totals.items()}
    top_answer, top_share = answer_concentration(predicted[i] for i in range(n))
    return EvalResult(scores=scores, predictions=rows, count=n,
                      info={"gold_passage_retrieved": split.gold_hit, "passages_retrieved_by": split.retrieved_by,
                            "truncation": qa.layout.truncation.as_dict(),
                            "vocab_size": qa.vocab_size, "top_answer": top_answer, "top_share": top_share})


def write_eval(out_dir: str, result: EvalResult, extra: Optional[dict] = None) -> str:
    """predictions.jsonl + scores.json in ``out_dir``, each written to a temporary name and renamed."""
    import json

    from megatron_retro.io_atomic import write_text_atomic

    os.makedirs(out_dir, exist_ok=True)
    write_text_atomic(os.path.join(out_dir, "predictions.jsonl"),
                      "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result.predictions))
    path = os.path.join(out_dir, "scores.json")
    write_text_atomic(path, json.dumps({"scores": result.scores, "count": result.count, **result.info,
                                        **(extra or {})}, indent=1))
    return path


def load_for_eval(cfg: RunConfig, load: Optional[str], adapter: Optional[str] = None):
    """Collective: parallel state, the QA data (room for P-tuning's virtual tokens) and the model (+ adapter);
    returns (qa data, model chunks, parameter count)."""
    from megatron_retro.errors import UserError
    from megatron_retro.parallel.initialize import initialize_parallel
    from megatron_retro.training.checkpointing import read_state
    from megatron_retro.training.finetune import load_model, parameter_counts
    from megatron_retro.training.qa_data import prepare_qa

    if not load:
        raise UserError("checkpoint.load: evaluate needs a model checkpoint (--load or checkpoint.load)")
    read_state(load)  # a missing or incomplete checkpoint is refused before any data/retrieval work
    initialize_parallel(cfg.parallel, seed=cfg.train.seed)
    virtual = 0
    if adapter:
        from megatron_retro.peft.checkpoint import adapter_peft_config

        virtual = getattr(adapter_peft_config(adapter), "num_virtual_tokens", 0)
    qa = prepare_qa(cfg, virtual_tokens=virtual)
    chunks, _, _ = load_model(cfg, qa.vocab_size, load, adapter=adapter, tokenizer=qa.tokenizer)
    return qa, chunks, parameter_counts(chunks)[1]


def evaluate(cfg: RunConfig, load: Optional[str], adapter: Optional[str] = None, progress: bool = True,
             write: bool = True) -> EvalResult:
    """Collective: load a base checkpoint (+ adapter) and score ``qa.eval_split``; zero-shot without adapter."""
    from megatron_retro.training.qa_data import load_split

    qa, chunks, params = load_for_eval(cfg, load, adapter)
    split = load_split(cfg, qa, cfg.qa.eval_split, cfg.qa.eval_examples)
    result = evaluate_model(cfg, chunks, qa, split, progress=progress)
    result.info["params"] = params
    import torch.distributed as dist

    if write and (not dist.is_initialized() or dist.get_rank() == 0):
        write_eval(cfg.out_dir, result, {"checkpoint": load, "adapter": adapter, "task": cfg.qa.task,
                                         "split": cfg.qa.eval_split})
    return result
