"""Every PEFT method on a tiny GPT and a tiny RETRO (one process): only its parameters train, the
trainable count equals the method's formula, the loss falls on a small task, adapter state
round-trips, merging keeps the logits.  (TP/PP equivalence: tests/distributed/test_peft_matrix.py.)"""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "distributed"))
from peft_cases import (METHOD_CASES, MODEL_OVERRIDES, RETRO_LORA_TARGETS, RETRO_METHOD_CASES,  # noqa: E402
                        RETRO_OVERRIDES, SEQ, VOCAB, PatternRetroTokens, PatternTokens, RandomRetroTokens)

from megatron_retro.config import load_config  # noqa: E402

TRAIN = ["train.micro_batch_size=2", "train.global_batch_size=4", "train.lr=1e-2", "train.min_lr=1e-2",
         "train.lr_warmup_steps=0", "train.steps=12", "train.clip_grad=0", "train.weight_decay=0"]
ARCHS = {"gpt": (MODEL_OVERRIDES, METHOD_CASES), "retro": (RETRO_OVERRIDES, RETRO_METHOD_CASES)}
CASES = [(arch, m) for arch in ARCHS for m in ARCHS[arch][1]]


@pytest.fixture(scope="module")
def configs():
    from megatron_retro.parallel.initialize import initialize_parallel

    cfgs = {arch: load_config(None, overrides + TRAIN) for arch, (overrides, _) in ARCHS.items()}
    initialize_parallel(cfgs["gpt"].parallel, seed=3)
    return cfgs


def build(cfg, method=None, options=None, seed=11, std=0.05):
    from megatron_retro.models.global_params import init_by_global_name
    from megatron_retro.models.gpt import build_gpt_model
    from megatron_retro.models.retro import build_retro_model
    from megatron_retro.peft import apply_peft, make_peft_config

    if cfg.model.arch == "retro":
        chunks = build_retro_model(cfg.model, cfg.retro, cfg.parallel, vocab_size=VOCAB)
    else:
        chunks = build_gpt_model(cfg.model, cfg.parallel, vocab_size=VOCAB)
    init_by_global_name(chunks, seed=seed, std=std)
    peft_cfg = None
    if method:
        peft_cfg = make_peft_config(method, options)
        apply_peft(chunks, peft_cfg)
    return chunks, peft_cfg


def logits(chunks):
    torch.manual_seed(0)
    tokens = torch.randint(0, VOCAB, (2, SEQ))
    pos = torch.arange(SEQ)[None].expand(2, -1)
    extra = {}
    if hasattr(chunks[0], "embed_neighbours"):
        extra["neighbours"] = torch.stack([RandomRetroTokens()[i]["neighbours"] for i in range(2)])
    chunks[0].eval()
    with torch.no_grad():
        return chunks[0](tokens, pos, None, **extra)


def engine_for(cfg, chunks):
    from megatron_retro.training.engine import Engine
    from megatron_retro.training.gpt_step import gpt_forward_step
    from megatron_retro.training.retro_step import RetroEngine

    if cfg.model.arch == "retro":
        return RetroEngine(cfg, chunks), PatternRetroTokens()
    return Engine(cfg, chunks, gpt_forward_step), PatternTokens()


@pytest.mark.parametrize("arch,method", CASES, ids=[f"{a}-{m}" for a, m in CASES])
def test_method_trains_only_its_params_and_learns(configs, arch, method):
    from megatron_retro.peft import get_method, install_peft_grad_reduction, peft_method_count, trainable_parameters
    from megatron_retro.training.batches import step_microbatches

    cfg = configs[arch]
    chunks, peft_cfg = build(cfg, method, ARCHS[arch][1][method])
    prefix = get_method(method).prefix
    trainable = trainable_parameters(chunks)
    assert trainable and all(any(part.startswith(prefix) for part in n.split(".")) for n, _ in trainable)
    assert all(p.dtype == torch.float32 for _, p in trainable)
    retro = cfg.retro if arch == "retro" else None
    assert sum(p.numel() for _, p in trainable) == peft_method_count(peft_cfg, cfg.model, retro)
    frozen_before = {n: p.detach().clone() for n, p in chunks[0].named_parameters() if not p.requires_grad}

    engine, data = engine_for(cfg, chunks)
    install_peft_grad_reduction(engine)
    losses = [engine.train_step(step_microbatches(data, 0, 4, 2, 1, 0)).loss for _ in range(12)]
    print(arch, method, [round(x, 3) for x in losses])
    assert min(losses[-3:]) < losses[0] - 0.1, losses  # same batch every step: a deterministic fall
    for n, p in chunks[0].named_parameters():
        if n in frozen_before:
            assert torch.equal(p, frozen_before[n]), f"frozen {n} changed"


@pytest.mark.parametrize("arch,method", CASES, ids=[f"{a}-{m}" for a, m in CASES])
def test_state_dict_round_trip_and_merge(configs, arch, method, tmp_path):
    from megatron_retro.models.global_params import init_by_global_name
    from megatron_retro.peft import get_method, merge_peft
    from megatron_retro.peft.checkpoint import load_adapter, save_adapter

    cfg = configs[arch]
    chunks, peft_cfg = build(cfg, method, ARCHS[arch][1][method], seed=5)  # QLoRA quantises this base
    init_by_global_name(chunks, seed=5, std=0.05)  # non-trivial adapter values; base as build(seed=5)
    ref = logits(chunks)
    save_adapter(str(tmp_path / "a"), chunks, peft_cfg)
    other, _ = build(cfg, seed=5)
    assert not torch.allclose(logits(other), ref)
    load_adapter(str(tmp_path / "a"), other)
    torch.testing.assert_close(logits(other), ref, rtol=1e-5, atol=1e-5)
    if get_method(method).merge is not None:
        merge_peft(other)
        assert not [n for n, _ in other[0].named_parameters() if n.rsplit(".", 1)[-1].startswith(("lora_", "ia3_"))]
        assert not [n for n, _ in other[0].named_buffers() if n.rsplit(".", 1)[-1].startswith("qlora_")]
        torch.testing.assert_close(logits(other), ref, rtol=1e-4, atol=1e-4)


def test_retro_parts_are_targeted_separately(configs):
    """Encoder, decoder cross-attention, pre- and post-decoder: each pattern selects exactly its part."""
    from megatron_retro.peft import trainable_parameters

    cfg = configs["retro"]
    expected = {
        "pre_decoder": {"decoder.layers.0.self_attention.linear_qkv", "decoder.layers.1.self_attention.linear_qkv",
                        "decoder.layers.0.mlp.linear_fc2", "decoder.layers.1.mlp.linear_fc2"},
        "post_decoder": {"decoder.layers.2.mlp.linear_fc1", "decoder.layers.3.mlp.linear_fc1"},
        "cross_attention": {f"decoder.layers.{i}.cross_attention.linear_{x}" for i in (1, 3) for x in ("q", "kv")},
        "encoder": {f"decoder.layers.1.cross_attention.encoder.layers.{j}.{part}.linear_proj"
                    for j in (0, 1) for part in ("self_attention", "cross_attention")},
    }
    for part, targets in RETRO_LORA_TARGETS.items():
        exclude = ["*.encoder.*"] if part != "encoder" else []
        chunks, _ = build(cfg, "lora", {"rank": 2, "targets": targets, "exclude": exclude})
        got = {n.rsplit(".", 1)[0] for n, _ in trainable_parameters(chunks)}
        assert got == expected[part], part
