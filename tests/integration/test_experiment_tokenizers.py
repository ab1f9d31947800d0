"""One grid holding models with two tokenizers (the bundled SentencePiece one and a model's own HF
tokenizer, as Gemma's next to the tiny models): each model's questions, passages and retrieval
database are tokenized with its own tokenizer, and the question caches are not shared."""
import glob
import json
import os

import yaml

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def _own_tokenizer(d, data_dir):
    """A byte-level BPE trained on the bundled documents (another vocabulary, another bos/eos)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    texts = [json.loads(line)["text"] for line in open(os.path.join(data_dir, "documents.jsonl"))]
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer, tk.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tk.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=700, special_tokens=["<pad>", "</s>", "<s>", "<unk>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    os.makedirs(d)
    tk.save(os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
                   "add_bos_token": True}, f)
    return d


def test_each_model_reads_qa_data_tokenized_with_its_own_tokenizer(small_data_dir, tmp_path):
    from megatron_retro.data.qa_prompts import encode_question, prompt_question
    from megatron_retro.data.tokenizer import load_tokenizer
    from megatron_retro.evaluation.experiment_config import load_experiment
    from megatron_retro.evaluation.experiment_retrieval import Services, prepare_model_retrieval
    from megatron_retro.evaluation.grid_runs import cell_config
    from megatron_retro.parallel.initialize import destroy_parallel, initialize_parallel
    from megatron_retro.training.qa_data import QASamples, load_split, prepare_qa

    own = _own_tokenizer(str(tmp_path / "own-tokenizer"), small_data_dir)
    tiny = os.path.abspath(os.path.join(ROOT, "configs", "models", "gpt-tiny.yaml"))
    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(yaml.safe_dump({
        "out_dir": str(tmp_path / "exp"), "retrieval_shards": 0, "methods": ["zero-shot", "lora"],
        "models": [{"name": "tiny", "config": tiny, "pretrain_steps": 1},
                   {"name": "tiny-b", "config": tiny, "pretrain_steps": 1, "finetune_overrides": ["train.steps=3"]},
                   {"name": "own", "config": tiny, "checkpoint": "ck", "overrides": [f"data.tokenizer={own}"]}],
        "common_overrides": [f"data.dir={small_data_dir}", "data.seed=3", "data.num_entities=60",
                             "data.vocab_size=512", "data.split=90,10,0", "qa.embedder=hash:64",
                             "qa.train_examples=8", "qa.eval_examples=4"]}))
    exp = load_experiment(str(exp_file))
    info = prepare_model_retrieval(exp, progress=False, services=Services())
    assert info["tiny"] is info["tiny-b"]                                   # one tokenizer: one database
    assert info["own"]["db_dir"] != info["tiny"]["db_dir"] and "/tok-" in info["own"]["db_dir"]
    caches = {m: set(glob.glob(os.path.join(info[m]["db_dir"], "questions", "*.npz"))) for m in ("tiny", "own")}
    assert len(caches["tiny"]) >= 3 and len(caches["own"]) >= 3 and not caches["tiny"] & caches["own"]

    toks = {"tiny": load_tokenizer(os.path.join(small_data_dir, "tokenizer.model")), "own": load_tokenizer(own)}
    assert toks["tiny"].vocab_size != toks["own"].vocab_size
    for name, model in (("tiny", exp.models[0]), ("own", exp.models[2])):
        cfg = cell_config(exp, model, "ck", "lora", 1)
        initialize_parallel(cfg.parallel, seed=1)
        try:
            qa = prepare_qa(cfg)
            split = load_split(cfg, qa, cfg.qa.eval_split, cfg.qa.eval_examples)
        finally:
            destroy_parallel()
        tok = toks[name]
        assert qa.db_dir == info[name]["db_dir"] and qa.tokenizer.vocab_size == tok.vocab_size
        sample = QASamples(qa.layout, qa.tokenizer, split).items[0]
        question = encode_question(tok, prompt_question(split.examples[0]))
        tokens = sample["tokens"].tolist()
        assert any(tokens[i:i + len(question)] == question for i in range(len(tokens)))  # its own question ids
        words = [w for w in tok.decode([t for t in split.passages[0, 0].tolist() if t != tok.pad]).split()
                 if w.isalpha()]
        corpus = open(os.path.join(small_data_dir, "documents.jsonl")).read()
        assert len(words) >= 5 and all(w in corpus for w in words), words  # passages decode to the corpus's text
