"""The RAG suite end to end: its passages are the specified ones (oracle answers score as they must), a
RETRO model answers every split in-process, and `evaluate --suite rag` runs on a tiny GPT checkpoint."""
import json
import os

import numpy as np
import pytest

from conftest import run_cli
from megatron_retro.config import load_config

TINY = ["model.num_layers=2", "model.hidden_size=64", "model.num_attention_heads=4", "model.seq_length=64",
        "train.micro_batch_size=2", "train.global_batch_size=4", "train.lr_warmup_steps=0", "train.eval_interval=0",
        "train.eval_iters=1", "data.num_entities=60", "data.vocab_size=512", "data.seed=3", "data.split=90,10,0"]
QA = ["qa.embedder=hash:64", "qa.seq_length=288", "qa.max_answer_tokens=8"]


def _cfg(data_dir, *extra):
    return load_config(None, TINY + QA + [f"data.dir={data_dir}", "train.precision=fp32", *extra])


@pytest.fixture(scope="module")
def suite(small_data_dir):
    from megatron_retro.evaluation.rag_suite import build_suite
    from megatron_retro.training.qa_data import prepare_qa

    cfg = _cfg(small_data_dir)
    qa = prepare_qa(cfg)
    splits, types = build_suite(cfg, qa, examples=5)
    return cfg, qa, splits, types


def test_suite_splits_hold_the_specified_passages(suite):
    from megatron_retro.data.synthetic.rag_splits import REFUSAL
    from megatron_retro.evaluation.rag_metrics import ReferenceJudge
    from megatron_retro.evaluation.rag_suite import score_split

    cfg, qa, splits, types = suite
    by_name = {s.name: s for s in splits}
    assert list(by_name) == ["retrieved", "noise-0", "noise-1", "negative", "integration", "counterfactual"]
    for s in splits:
        n = len(s.items)
        assert n >= 3 and s.split.passages.shape == (n, 2, 128) and s.docs.shape == (n, 2)
    # the passages the model reads are the store's windows, and their texts are what the metrics see
    noise0 = by_name["noise-0"]
    for row, texts, docs in zip(noise0.split.passages, noise0.texts, noise0.docs):
        gold = int(np.flatnonzero(docs >= 0)[0])
        assert qa.tokenizer.decode([t for t in row[gold] if t != qa.tokenizer.pad]) == texts[gold]
        assert (row[1 - gold] == qa.tokenizer.pad).all()                     # n = 0: the other slot is empty
    judge = ReferenceJudge(types)
    # oracle answers: right, faithful, of the right type; the counterfactual passage states the new value
    for name in ("noise-0", "noise-1", "integration", "counterfactual", "negative"):
        s = by_name[name]
        _, m = score_split(s, [i.answers[0] for i in s.items], judge)
        assert m["em"] == 1.0 and m["answer_relevance"] == 1.0, name
        if name == "negative":
            assert m["refused"] == 1.0 and m["context_precision"] == 0.0 and m["context_recall"] is None
        else:
            assert m["faithful"] == 1.0 and m["gold_faithful"] == 1.0 and m["context_recall"] == 1.0, name
    cf = by_name["counterfactual"]
    _, m = score_split(cf, [i.original_answers[0] for i in cf.items], judge)
    assert m["em"] == 0.0 and m["pretrained_em"] == 1.0 and m["gold_faithful"] < 1.0
    # a noise-1 answer copied from the distractor: faithful to the context, not to the gold passage
    s = by_name["noise-1"]
    copied = []
    for item in s.items:
        dis = next(p for p in item.passages if p.role == "distractor")
        copied.append(dis.needles[0][0])
    rows, m = score_split(s, copied, judge)
    assert m["em"] == 0.0 and m["faithful"] == 1.0 and m["answer_relevance"] == 1.0
    from megatron_retro.data.synthetic.qa import contains_words

    for row, value, texts, item in zip(rows, copied, s.texts, s.items):
        gold_text = texts[[p.role for p in item.passages].index("gold")]
        if not contains_words(gold_text, value):              # (the gold window may happen to name it too)
            assert row["gold_faithful"] == 0.0, (value, gold_text)
    assert m["gold_faithful"] < 1.0
    assert REFUSAL not in copied


def test_retro_answers_every_split_in_process(suite, tmp_path):
    from megatron_retro.evaluation.rag_suite import run_suite, write_suite
    from megatron_retro.models.global_params import init_by_global_name
    from megatron_retro.parallel.initialize import destroy_parallel, initialize_parallel
    from megatron_retro.training.finetune import build_model

    _, qa, _, _ = suite
    cfg = _cfg(os.path.dirname(qa.db_dir), "model.arch=retro", "retro.retrieval_layers=[2]")
    from megatron_retro.training.qa_data import prepare_qa

    qa = prepare_qa(cfg)
    initialize_parallel(cfg.parallel, seed=1)
    try:
        chunks = build_model(cfg, qa.vocab_size)
        init_by_global_name(chunks, seed=5, std=0.2)
        result = run_suite(cfg, chunks, qa, examples=3, progress=False)
    finally:
        destroy_parallel()
    splits = result["splits"]
    assert set(splits) == {"retrieved", "noise-0", "noise-1", "negative", "integration", "counterfactual"}
    assert all(m["count"] >= 2 for m in splits.values()) and splits["noise-1"]["noise_ratio"] == 0.5
    assert len(result["predictions"]) == sum(m["count"] for m in splits.values())
    files = write_suite(str(tmp_path), result, "retro")
    assert sorted(map(os.path.basename, files)) == ["rag_noise.png", "rag_predictions.jsonl", "rag_suite.json",
                                                    "rag_suite.md"]
    assert "| retro | counterfactual |" in open(os.path.join(tmp_path, "rag_suite.md")).read()


@pytest.mark.slow
def test_evaluate_suite_rag_cli_on_a_tiny_gpt_checkpoint(small_data_dir, tmp_path):
    common = TINY + [f"data.dir={small_data_dir}"]
    run_cli(["pretrain", "--no-progress", "--out", str(tmp_path / "base"), "--steps", "1", *common])
    base = str(tmp_path / "base" / "checkpoints" / "iter_0000001")
    out = str(tmp_path / "rag")
    proc = run_cli(["evaluate", "--suite", "rag", "--suite-examples", "3", "--no-progress", "--load", base,
                    "--out", out, *common, *QA])
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["suite"] == "rag" and summary["splits"]["negative"]["count"] >= 2
    table = open(os.path.join(out, "rag_suite.md")).read()
    assert table.count("| gpt |") == 6 and os.path.getsize(os.path.join(out, "rag_noise.png")) > 1000
    bad = run_cli(["evaluate", "--suite", "rag", "--suite-examples", "0", "--load", base, *common, *QA], check=False)
    assert bad.returncode == 2 and "--suite-examples=0" in bad.stderr


def test_refusal_teaching_swaps_in_distractors_and_the_refusal_string(suite):
    from megatron_retro.config import ConfigError
    from megatron_retro.data.synthetic.qa import contains_words
    from megatron_retro.data.synthetic.rag_splits import REFUSAL
    from megatron_retro.retrieval.chunk_store import ChunkStore
    from megatron_retro.training.qa_data import load_split
    from megatron_retro.training.rag_passages import PassageCutter, teach_refusal

    cfg, qa, _, _ = suite
    split = load_split(cfg, qa, "train", 24)
    taught, changed = teach_refusal(cfg, qa, split, 0.5, seed=1)
    again, _ = teach_refusal(cfg, qa, split, 0.5, seed=1)
    assert 4 <= changed <= 20 and np.array_equal(taught.passages, again.passages)
    cutter = PassageCutter(ChunkStore(os.path.join(qa.db_dir, "store")), qa.tokenizer)
    by_doc = {int(c): d for d, cs in cutter.by_doc.items() for c in cs}
    windows = {tuple(cutter.store.neighbours(np.array([c]))[0]): by_doc[c] for c in by_doc}
    for before, after, p_before, p_after in zip(split.examples, taught.examples, split.passages, taught.passages):
        if after.answers == [REFUSAL]:
            for row in p_after:                                 # distractor windows of the store, no gold, no answer
                doc = windows[tuple(row)]
                assert doc not in before.meta["gold_doc_ids"]
                text = qa.tokenizer.decode([t for t in row if t != qa.tokenizer.pad])
                assert not any(contains_words(text, a) for a in before.answers)
        else:
            assert after.answers == before.answers and np.array_equal(p_before, p_after)
    with pytest.raises(ConfigError, match="qa.refusal_fraction=1.0"):
        load_config(None, ["qa.refusal_fraction=1.0"])
