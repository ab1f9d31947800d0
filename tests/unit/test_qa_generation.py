"""Generation for QA: the pipeline-schedule path equals the KV-cached path on one stage (GPT and
RETRO); P-tuning's virtual tokens survive KV-cached decoding and never touch RETRO's neighbours."""
import numpy as np
import pytest
import torch

from megatron_retro.config import load_config

M, K, R, VOCAB = 8, 2, 16, 200
COMMON = ["model.num_layers=4", "model.hidden_size=64", "model.num_attention_heads=4", "model.ffn_hidden_size=128",
          "model.seq_length=64", "model.rotary_percent=0.5"]
RETRO = ["model.arch=retro", f"retro.chunk_length={M}", f"retro.num_neighbours={K}", f"retro.neighbour_length={R}",
         "retro.retrieval_layers=[2,4]"]


def _build(overrides, peft=None):
    from megatron_retro.models.global_params import init_by_global_name
    from megatron_retro.parallel.initialize import initialize_parallel
    from megatron_retro.peft import apply_peft, make_peft_config
    from megatron_retro.training.finetune import build_model

    cfg = load_config(None, overrides + ["train.precision=fp32"])
    initialize_parallel(cfg.parallel, seed=3)
    chunks = build_model(cfg, VOCAB)
    init_by_global_name(chunks, seed=5, std=0.2)
    if peft:
        apply_peft(chunks, make_peft_config(peft, {"num_virtual_tokens": 3, "encoder_hidden": 32}))
    return chunks[0]


def _prompts(bs=3, p=M):
    return torch.randint(4, VOCAB, (bs, p), generator=torch.Generator().manual_seed(11))


def _neighbours(bs=3):
    return torch.randint(4, VOCAB, (bs, 1, K, R), generator=torch.Generator().manual_seed(12))


@pytest.mark.parametrize("arch", ["gpt", "retro"])
def test_pipelined_generation_equals_kv_cached_generation(arch):
    from megatron_retro.evaluation.generation import generate
    from megatron_retro.evaluation.pipeline_generation import generate_pipelined

    model = _build(COMMON + (RETRO if arch == "retro" else []))
    prompts, nb = _prompts(), _neighbours()
    retriever = (lambda chunks: nb.numpy()) if arch == "retro" else None
    cached = generate(model, prompts, 7, VOCAB, retriever=retriever)
    piped = generate_pipelined([model], prompts, 7, VOCAB, neighbours=nb if arch == "retro" else None,
                               chunk_length=M)
    assert cached.shape == piped.shape == (3, M + 7)
    torch.testing.assert_close(piped, cached, rtol=0, atol=0)
    assert not torch.equal(cached[:, M:], cached[:1, M:].expand(3, -1))  # the rows really differ


def test_pipelined_generation_stops_rows_at_eod():
    from megatron_retro.evaluation.pipeline_generation import generate_pipelined

    model = _build(COMMON)
    prompts = _prompts()
    free = generate_pipelined([model], prompts, 6, VOCAB)
    eod = int(free[0, M + 1])                                  # row 0's second new token acts as eod
    out = generate_pipelined([model], prompts, 6, VOCAB, eod=eod)
    row = out[0, M:].tolist()
    assert row[:2] == free[0, M:M + 2].tolist() and set(row[2:]) <= {eod}


@pytest.mark.parametrize("arch", ["gpt", "retro"])
def test_ptuning_virtual_tokens_survive_kv_cached_decoding(arch):
    from megatron_retro.evaluation.generation import generate

    model = _build(COMMON + (RETRO if arch == "retro" else []), peft="ptuning")
    nb = _neighbours()
    retriever = (lambda chunks: nb.numpy()) if arch == "retro" else None
    prompts = _prompts()
    a = generate(model, prompts, 9, VOCAB, use_cache=True, retriever=retriever)
    b = generate(model, prompts, 9, VOCAB, use_cache=False, retriever=retriever)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # and the virtual tokens matter: without them the model answers differently
    model.ptuning_encoder.inputs.data.normal_(0, 5.0, generator=torch.Generator().manual_seed(1))
    c = generate(model, prompts, 9, VOCAB, use_cache=True, retriever=retriever)
    assert not torch.equal(a, c)


def test_ptuning_leaves_retro_neighbour_embeddings_alone():
    model = _build(COMMON + RETRO)
    nb = torch.randint(4, VOCAB, (2, 3, K, R), generator=torch.Generator().manual_seed(4))
    before = model.embed_neighbours(nb)                                   # [r, k·l·bs, d]
    tokens = nb[:, 0, 0, :M]
    emb_before = model.embedding(input_ids=tokens, position_ids=torch.arange(M).expand(2, -1))
    from megatron_retro.peft import apply_peft, make_peft_config

    apply_peft([model], make_peft_config("ptuning", {"num_virtual_tokens": 3, "encoder_hidden": 32}))
    torch.testing.assert_close(model.embed_neighbours(nb), before, rtol=0, atol=0)
    emb_after = model.embedding(input_ids=tokens, position_ids=torch.arange(M).expand(2, -1))  # [M, 2, d]
    assert not torch.allclose(emb_after[:3], emb_before[:3])              # decoder input: virtual tokens
    torch.testing.assert_close(emb_after[3:], emb_before[3:], rtol=0, atol=0)
