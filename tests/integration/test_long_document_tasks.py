"""End to end, in one process, per long-document task format: a tiny GPT base, LoRA fine-tuning on
the fixture with passages retrieved from each example's own document, then evaluation (QuALITY:
options in the prompt, choice accuracy among the scores)."""
import os

import numpy as np
import pytest

from megatron_retro.config import load_config

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "tasks", "longdoc")
TASKS = {"narrativeqa": "narrativeqa.jsonl", "qasper": "qasper.json", "quality": "quality.dev",
         "qmsum": "qmsum.jsonl"}


def overrides(data_dir, out):
    return ["model.num_layers=2", "model.hidden_size=64", "model.num_attention_heads=4",
            "model.ffn_hidden_size=192", "model.seq_length=64", "train.micro_batch_size=2",
            "train.global_batch_size=2", "train.lr_warmup_steps=0", "train.eval_interval=0", "train.eval_iters=1",
            f"data.dir={data_dir}", "data.num_entities=60", "data.vocab_size=512", "data.seed=3",
            "data.split=90,10,0", "checkpoint.save_interval=0", f"out_dir={out}"]


@pytest.fixture(scope="module")
def base(small_data_dir, tmp_path_factory):
    from megatron_retro.parallel.initialize import destroy_parallel
    from megatron_retro.training.pretrain import pretrain

    out = str(tmp_path_factory.mktemp("base"))
    cfg = load_config(os.path.join(ROOT, "configs", "models", "gpt-tiny.yaml"),
                      overrides(small_data_dir, out) + ["train.steps=1"])
    try:
        return pretrain(cfg, progress=False).checkpoint
    finally:
        destroy_parallel()


@pytest.mark.parametrize("task", sorted(TASKS))
def test_finetune_and_evaluate_on_own_document_passages(task, base, small_data_dir, tmp_path):
    from megatron_retro.evaluation.answer_eval import evaluate_model
    from megatron_retro.parallel.initialize import destroy_parallel
    from megatron_retro.peft import make_peft_config
    from megatron_retro.training.finetune import finetune
    from megatron_retro.training.qa_data import load_split

    qa = [f"qa.task={task}", f"qa.path={os.path.join(FIXTURES, TASKS[task])}", "qa.embedder=hash:64",
          "qa.chunk_length=16", "qa.passage_length=32", "qa.num_passages=2", "qa.seq_length=128",
          "qa.max_answer_tokens=12", "qa.eval_batch_size=4"]
    cfg = load_config(os.path.join(ROOT, "configs", "models", "gpt-tiny.yaml"),
                      overrides(small_data_dir, str(tmp_path)) + qa + ["train.steps=2", f"checkpoint.load={base}"])
    try:
        ft = finetune(cfg, make_peft_config("lora", {"rank": 4, "alpha": 8}), progress=False, keep_engine=True)
        assert ft.qa.own_document and ft.steps == 2 and np.isfinite(ft.last_loss)
        split = load_split(cfg, ft.qa, cfg.qa.eval_split, 0)
        # passages are chunks of the example's own document: their tokens all occur in it
        for ex, passages in zip(split.examples, split.passages):
            doc = set(ft.qa.tokenizer.encode(ex.context))
            kept = {int(t) for t in passages.reshape(-1) if t != ft.qa.tokenizer.pad}
            assert kept and kept <= doc
        result = evaluate_model(cfg, ft.engine.chunks, ft.qa, split, progress=False)
    finally:
        destroy_parallel()
    expected = {"em", "f1", "rougeL"} | ({"choice"} if task == "quality" else set())
    assert set(result.scores) == expected and result.count == len(split.examples) >= 3
    assert all(0 <= v <= 1 for v in result.scores.values())
    if task == "quality":
        assert all("choice" in row for row in result.predictions)
