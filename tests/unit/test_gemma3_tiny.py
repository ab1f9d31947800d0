"""Gemma 3 on a tiny random Gemma3ForCausalLM (fast; the real 270M is in
tests/integration/test_gemma3_real.py): import parity through the local/global window and RoPE
bases, LoRA exported with `peft export-hf` loading onto the exported Gemma 3 with peft, a RETRO
retro-fitted from it equal to it at step 0, and the tokenizer interface."""
import json
import os

import pytest
import torch

from gemma3_cases import SEQ, VOCAB, fixed_tokens, hf_gemma3_logits, make_hf_gemma3, relative_error

pytest.importorskip("transformers", reason="Gemma 3 parity needs `pip install -e .[hf]`")


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """(hf dir, our checkpoint dir, tokens, HF logits) of a tiny Gemma 3 imported at TP1."""
    from megatron_retro.config import ParallelConfig
    from megatron_retro.parallel.initialize import destroy_parallel
    from megatron_retro.training.hf_convert import import_hf

    d = tmp_path_factory.mktemp("gemma3")
    make_hf_gemma3(str(d / "hf"))
    tokens = fixed_tokens()
    ref = hf_gemma3_logits(str(d / "hf"), tokens)
    import_hf(str(d / "hf"), str(d / "ckpt"), ParallelConfig())
    destroy_parallel()
    return str(d / "hf"), str(d / "ckpt"), tokens, ref


def _load(ckpt, overrides=(), arch_retro=False):
    from types import SimpleNamespace

    from megatron_retro.config import load_config
    from megatron_retro.models.gpt import build_gpt_model
    from megatron_retro.parallel.initialize import initialize_parallel
    from megatron_retro.training.checkpointing import load_checkpoint
    from megatron_retro.training.pretrain import model_record

    cfg = load_config(os.path.join(ckpt, "model.yaml"), list(overrides))
    initialize_parallel(cfg.parallel, seed=1)
    chunks = build_gpt_model(cfg.model, cfg.parallel, vocab_size=VOCAB, precision="fp32")
    load_checkpoint(os.path.join(ckpt, "iter_0000000"), SimpleNamespace(chunks=chunks), model_record(cfg, VOCAB),
                    with_optimizer=False)
    return cfg, chunks


def _logits(model, tokens, **kwargs):
    b, s = tokens.shape
    model.eval()
    with torch.no_grad():
        return model(tokens, torch.arange(s).expand(b, s), None, **kwargs)[..., :VOCAB]


def test_import_matches_hf_and_each_gemma_part_matters(imported):
    _, ckpt, tokens, ref = imported
    cfg, (model,) = _load(ckpt)
    assert (cfg.model.family, cfg.model.sliding_window, cfg.model.global_attn_every) == ("gemma3", 5, 3)
    assert (cfg.model.rotary_base, cfg.model.rotary_base_local, cfg.model.num_query_groups) == (1000000, 10000, 1)
    assert relative_error(_logits(model, tokens), ref) < 1e-5
    # the comparison can fail: each Gemma-specific setting changes the logits
    for change in ("model.sliding_window=6", "model.rotary_base_local=1000000", "model.softmax_scale=0.18"):
        _, (other,) = _load(ckpt, [change])
        assert relative_error(_logits(other, tokens), ref) > 1e-2, change


def test_hf_export_round_trips_every_tensor(imported, tmp_path):
    from megatron_retro.config import ParallelConfig
    from megatron_retro.models.hf_files import HFCheckpoint
    from megatron_retro.training.hf_convert import export_hf

    hf_dir, ckpt, tokens, ref = imported
    export_hf(ckpt, str(tmp_path / "out"), ParallelConfig())
    original, exported = HFCheckpoint(hf_dir), HFCheckpoint(str(tmp_path / "out"))
    assert set(exported.files) == set(original.files)
    for name in original.files:
        assert torch.equal(exported.get(name), original.get(name)), name
    assert relative_error(hf_gemma3_logits(str(tmp_path / "out"), tokens), ref) == 0.0


def test_lora_export_loads_with_peft_onto_gemma3(imported, tmp_path):
    from peft import PeftModel
    from transformers import Gemma3ForCausalLM

    from megatron_retro.peft import apply_peft, make_peft_config, peft_state_dict
    from megatron_retro.peft.hf_export import export_hf, full_model_state

    _, ckpt, tokens, ref = imported
    cfg, chunks = _load(ckpt)
    lora = make_peft_config("lora", {"rank": 4, "alpha": 8.0})
    apply_peft(chunks, lora)
    torch.manual_seed(0)
    with torch.no_grad():  # a trained-looking adapter: B != 0
        for name, p in chunks[0].named_parameters():
            if "lora_b" in name:
                p.normal_(0.0, 0.05)
    base, sd = full_model_state(chunks), peft_state_dict(chunks)
    ours = _logits(chunks[0], tokens)
    assert relative_error(ours, ref) > 1e-3  # the adapter changes the output
    out = export_hf(str(tmp_path), cfg.model, VOCAB, base, sd, lora)
    hf = PeftModel.from_pretrained(Gemma3ForCausalLM.from_pretrained(out["base"]), out["adapter"]).eval()
    with torch.no_grad():
        theirs = hf(input_ids=tokens).logits
    assert relative_error(theirs, ours) < 1e-4


def test_retro_fitted_from_gemma3_equals_it_at_step0(imported):
    from types import SimpleNamespace

    from megatron_retro.config import load_config
    from megatron_retro.models.retro.builder import build_retro_model
    from megatron_retro.parallel.initialize import initialize_parallel
    from megatron_retro.training.retro_from_gpt import load_gpt_into_retro

    _, ckpt, tokens, ref = imported
    m = 8  # chunk length: SEQ=24 -> 3 chunks
    cfg = load_config(os.path.join(ckpt, "model.yaml"), [
        "model.arch=retro", f"retro.chunk_length={m}", "retro.neighbour_length=16", "retro.retrieval_layers=[2,5]",
        "retro.attention_gate=true", f"model.seq_length={SEQ}"])
    initialize_parallel(cfg.parallel, seed=1)
    chunks = build_retro_model(cfg.model, cfg.retro, cfg.parallel, vocab_size=VOCAB, precision="fp32")
    fresh = load_gpt_into_retro(os.path.join(ckpt, "iter_0000000"), SimpleNamespace(chunks=chunks, optimizer=None), cfg)
    assert fresh and all(".cross_attention." in n for n in fresh)
    g = torch.Generator().manual_seed(5)
    neighbours = torch.randint(0, VOCAB, (tokens.shape[0], SEQ // m, 2, 16), generator=g)
    assert relative_error(_logits(chunks[0], tokens, neighbours=neighbours), ref) < 1e-5
    with torch.no_grad():  # the gate is what keeps it equal: opened, the neighbours change the output
        for name, p in chunks[0].named_parameters():
            if "gate" in name:
                p.fill_(1.0)
    assert relative_error(_logits(chunks[0], tokens, neighbours=neighbours), ref) > 1e-3


# ------------------------------------------------------------------------------------------
# Tokenizers

def _hf_tokenizer_dir(d, with_meta=True):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["<pad>", "</s>", "<s>", "<unk>"])
    tk.train_from_iterator(["the river flows to the sea", "a fact about the river Thames"] * 20, trainer)
    os.makedirs(d, exist_ok=True)
    tk.save(os.path.join(d, "tokenizer.json"))
    if with_meta:
        with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
            json.dump({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
                       "add_bos_token": True}, f)
    return d


def test_hf_tokenizer_with_the_models_special_ids(tmp_path):
    from megatron_retro.data.tokenizer import HFTokenizer, check_vocab, load_tokenizer
    from megatron_retro.errors import UserError

    tok = load_tokenizer(_hf_tokenizer_dir(str(tmp_path / "t")))
    assert isinstance(tok, HFTokenizer)
    assert (tok.pad, tok.eos, tok.eod, tok.bos, tok.unk, tok.add_bos) == (0, 1, 1, 2, 3, True)
    ids = tok.encode("the river")
    assert ids and tok.bos not in ids and tok.encode_batch(["the river"]) == [ids]
    assert tok.decode(ids).replace(" ", "") == "theriver"
    assert tok.megatron.eod == 1
    with pytest.raises(UserError, match=r"tokenizer .*tokenizer.json has \d+ tokens but checkpoint ck was built "
                                         r"for a vocabulary of 262144"):
        check_vocab(tok, 262144, "ck")
    with pytest.raises(UserError, match="names no eos_token"):
        load_tokenizer(_hf_tokenizer_dir(str(tmp_path / "bare"), with_meta=False))


def test_sentencepiece_with_other_special_ids(tmp_path):
    import sentencepiece as spm

    from megatron_retro.data.tokenizer import SentencePieceTokenizer, load_tokenizer

    path = str(tmp_path / "sp.model")
    spm.SentencePieceTrainer.train(sentence_iterator=iter(["the river flows to the sea"] * 50), model_prefix=path[:-6],
                                   vocab_size=40, pad_id=-1, unk_id=0, bos_id=2, eos_id=1, minloglevel=2,
                                   hard_vocab_limit=False)
    tok = load_tokenizer(path)
    assert isinstance(tok, SentencePieceTokenizer)
    assert (tok.unk, tok.eos, tok.bos, tok.pad, tok.eod) == (0, 1, 2, 1, 1)  # no pad: pads with eos
    assert tok.decode(tok.encode("the river")) == "the river"


def test_qa_prompt_starts_with_bos_when_the_model_has_one():
    import numpy as np

    from megatron_retro.data.qa_prompts import QALayout

    layout = QALayout(arch="gpt", seq_length=32, answer_tokens=4, eod=1, pad=0, bos=2)
    prompt = layout.prompt([7, 8, 9], np.array([[5, 6, 0, 0]]))
    assert prompt[-6:].tolist() == [2, 5, 6, 7, 8, 9]
    assert QALayout(arch="gpt", seq_length=32, answer_tokens=4, eod=1, pad=0).prompt([7], np.zeros((1, 2)))[-2:].tolist() == [1, 7]
