"""`megatron-retro evaluate --suite rag`: the RAG quality dimensions and the four abilities of one model.

Reads top to bottom: the suite's splits of the bundled benchmark (``build_suite``) —
``retrieved`` (the test questions with their retrieved top-k passages, as `evaluate` scores
them), ``noise-0 .. noise-(k-1)`` (gold passage + n distractors), ``negative`` (distractors
only; expected answer ``REFUSAL``), ``integration`` (two-hop, both passages given) and
``counterfactual`` (gold passage with the fact changed) — each a ``QASplit`` of k passages
of r tokens per question, the layout every fine-tuning sample has (GPT reads them inline,
RETRO as neighbours); then the model's greedy answers through ``answer_eval.evaluate_model`` (any
TP/PP/DP layout), EM / F1 / ROUGE-L against each split's expected answers, and per answer the
judge's scores (``rag_metrics``: context precision/recall, faithfulness, answer relevance;
``ReferenceJudge`` by default).  The counterfactual split adds ``pretrained_em``: EM against
the fact the passage contradicts (the answer learnt in pretraining).

Writes (logging rank, atomically) ``rag_suite.json`` (means per split), ``rag_predictions.jsonl``,
``rag_suite.md`` (one table, metric per split) and ``rag_noise.png`` (EM vs noise ratio).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np

from megatron_retro.config import RunConfig
from megatron_retro.data.synthetic.rag_splits import RagItem, build_rag_splits
from megatron_retro.errors import UserError


@dataclass
class SuiteSplit:
    name: str
    items: List[RagItem]
    split: object                  # training.qa_data.QASplit: examples + passages int64[n, k, r]
    texts: List[List[str]]         # [n][k] passage texts
    docs: np.ndarray               # int64[n, k] document of each passage (-1 = empty slot)
    dropped: int = 0               # items whose passages could not be cut


def _qa_split(items: List[RagItem], passages: np.ndarray):
    from megatron_retro.data.tasks.example import QAExample
    from megatron_retro.training.qa_data import QASplit

    examples = [QAExample(id=i.id, question=i.question, answers=i.answers, task="bundled-rag") for i in items]
    return QASplit(examples=examples, passages=passages, chunk_ids=np.full(passages.shape[:2], -1, np.int64),
                   gold_hit=None)


def build_suite(cfg: RunConfig, qa, examples: int, seed: int = 0):
    """(suite splits in table order, the answer-type inventory); collective (rank 0 retrieves first)."""
    from megatron_retro.data.synthetic.encyclopedia import generate
    from megatron_retro.evaluation.rag_metrics import AnswerTypes
    from megatron_retro.retrieval.chunk_store import ChunkStore
    from megatron_retro.training.qa_data import load_split
    from megatron_retro.training.rag_passages import PassageCutter, cut_items

    if cfg.qa.task != "bundled":
        raise UserError(f"--suite rag: needs the bundled benchmark (qa.task={cfg.qa.task}): its generator knows "
                        f"every question's gold documents, answer type and facts")
    params = qa.data.params
    enc = generate(params["num_entities"], params["seed"], params["split"])
    store = ChunkStore(os.path.join(qa.db_dir, "store"))
    cutter = PassageCutter(store, qa.tokenizer)
    k = cfg.qa.num_passages

    retrieved = load_split(cfg, qa, cfg.qa.eval_split, examples)
    items = [RagItem(ex.id, "retrieved", ex.question, ex.answers,
                     f"{ex.meta['entity'].split(':')[0]}.{ex.meta['relation']}", [],
                     [(list(ex.meta["gold_doc_ids"]), list(ex.answers))]) for ex in retrieved.examples]
    ids = retrieved.chunk_ids
    docs = np.where(ids >= 0, store.doc_ids(np.maximum(ids, 0)), -1)
    out = [SuiteSplit("retrieved", items, retrieved, cutter.texts(ids), docs)]

    parts = build_rag_splits(enc, k, examples, seed=seed, qa_split=cfg.qa.eval_split)
    groups = [(f"noise-{n}", [i for i in parts["noise"] if i.noise == n]) for n in range(k)]
    groups += [(name, parts[name]) for name in ("negative", "integration", "counterfactual")]
    for name, group in groups:
        if not group:
            continue
        kept, passages, texts, docs, dropped = cut_items(group, cutter)
        out.append(SuiteSplit(name, kept, _qa_split(kept, passages), texts, docs, dropped))
    return out, AnswerTypes(enc.entities)


def score_split(s: SuiteSplit, predictions: List[str], judge) -> tuple:
    """(per-question rows, means) of one split's predictions."""
    from megatron_retro.evaluation.metrics import score_one
    from megatron_retro.evaluation.rag_metrics import mean_scores

    rows = []
    for item, pred, texts, docs in zip(s.items, predictions, s.texts, s.docs.tolist()):
        row = {**score_one(pred, item.answers), **judge.judge(item.question, pred, texts, item, docs)}
        if item.split == "counterfactual":
            row["pretrained_em"] = score_one(pred, item.original_answers)["em"]
        rows.append(row)
    means = mean_scores(rows)
    k = int(s.split.passages.shape[1])
    noise = s.items[0].noise if s.items and s.name.startswith("noise") else None
    means.update(count=len(rows), dropped=s.dropped,
                 noise_ratio=None if noise is None else noise / (noise + 1), k=k)
    return rows, means


def run_suite(cfg: RunConfig, chunks: list, qa, examples: int, judge: str = "reference", seed: int = 0,
              progress: bool = True) -> dict:
    """Collective: every suite split answered by ``chunks`` and scored; ``{"splits", "predictions"}``."""
    from megatron_retro.evaluation.answer_eval import evaluate_model
    from megatron_retro.evaluation.rag_metrics import make_judge

    splits, types = build_suite(cfg, qa, examples, seed)
    scorer = make_judge(judge, types)
    table: Dict[str, dict] = {}
    predictions: List[dict] = []
    for s in splits:
        if not s.items:
            continue
        result = evaluate_model(cfg, chunks, qa, s.split, progress=progress)
        preds = [r["prediction"] for r in result.predictions]
        rows, table[s.name] = score_split(s, preds, scorer)
        predictions += [{"split": s.name, "id": i.id, "question": i.question, "prediction": p,
                         "answers": i.answers, "passages": t, "docs": d, **row}
                        for i, p, t, d, row in zip(s.items, preds, s.texts, s.docs.tolist(), rows)]
    return {"splits": table, "predictions": predictions, "judge": judge, "examples": examples}


def write_suite(out_dir: str, result: dict, label: str, scored: Optional[dict] = None) -> List[str]:
    """rag_suite.json, rag_predictions.jsonl, rag_suite.md and rag_noise.png in ``out_dir`` (atomic).

    rag_suite.json names what was scored: the judge, the base questions per split (``examples``) and
    ``scored`` (the model: ``{"base", "adapter"}``)."""
    from megatron_retro.evaluation.rag_report import noise_figure, suite_table
    from megatron_retro.io_atomic import save_figure_atomic, write_text_atomic

    os.makedirs(out_dir, exist_ok=True)
    paths = [write_text_atomic(os.path.join(out_dir, "rag_predictions.jsonl"),
                               "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result["predictions"])),
             write_text_atomic(os.path.join(out_dir, "rag_suite.json"),
                               json.dumps({"label": label, "judge": result["judge"], "examples": result["examples"],
                                           **(scored or {}), "splits": result["splits"]}, indent=1)),
             write_text_atomic(os.path.join(out_dir, "rag_suite.md"), suite_table({label: result["splits"]}) + "\n")]
    paths.append(save_figure_atomic(noise_figure({label: result["splits"]}), os.path.join(out_dir, "rag_noise.png")))
    return paths


def evaluate_rag(cfg: RunConfig, load: Optional[str], adapter: Optional[str] = None, examples: int = 50,
                 judge: str = "reference", progress: bool = True, write: bool = True) -> dict:
    """Collective: load a checkpoint (+ adapter) and run the suite; the logging rank writes the files."""
    import torch.distributed as dist

    from megatron_retro.evaluation.answer_eval import load_for_eval

    qa, chunks, _ = load_for_eval(cfg, load, adapter)
    result = run_suite(cfg, chunks, qa, examples, judge=judge, progress=progress)
    if write and (not dist.is_initialized() or dist.get_rank() == 0):
        label = f"{cfg.model.arch}" + (f" + {os.path.basename(os.path.normpath(adapter))}" if adapter else "")
        result["files"] = write_suite(cfg.out_dir, result, label, {"base": load, "adapter": adapter})
    return result
