"""RETRO from a GPT checkpoint: decoder weights come from the GPT, cross-attention + encoder are
new; with the attention gate (tanh, starting at 0) the RETRO computes exactly the GPT's logits."""
import pytest
import torch

from megatron_retro.config import load_config

VOCAB, NS = 200, 32
COMMON = ["model.num_layers=4", "model.hidden_size=64", "model.num_attention_heads=4", "model.ffn_hidden_size=128",
          f"model.seq_length={NS}", "model.rotary_percent=0.5", "train.micro_batch_size=1", "train.steps=2",
          "train.lr_warmup_steps=0"]
RETRO = ["model.arch=retro", "retro.chunk_length=8", "retro.num_neighbours=2", "retro.neighbour_length=16",
         "retro.retrieval_layers=[2,4]", "retro.attention_gate=true"]


def test_retro_from_gpt_checkpoint(tmp_path):
    from megatron_retro.errors import UserError
    from megatron_retro.models.global_params import init_by_global_name
    from megatron_retro.models.gpt import build_gpt_model
    from megatron_retro.models.retro import build_retro_model
    from megatron_retro.parallel.initialize import initialize_parallel
    from megatron_retro.training.checkpointing import save_checkpoint
    from megatron_retro.training.engine import Engine
    from megatron_retro.training.pretrain import model_record
    from megatron_retro.training.retro_from_gpt import load_gpt_into_retro
    from megatron_retro.training.retro_step import RetroEngine

    gpt_cfg = load_config(None, COMMON)
    initialize_parallel(gpt_cfg.parallel, seed=1)
    gpt = build_gpt_model(gpt_cfg.model, gpt_cfg.parallel, vocab_size=VOCAB)
    init_by_global_name(gpt, seed=2, std=0.1)
    gpt_engine = Engine(gpt_cfg, gpt, forward_step=None)
    path = save_checkpoint(str(tmp_path / "gpt"), 1, gpt_engine, {"model": model_record(gpt_cfg, VOCAB)})

    retro_cfg = load_config(None, COMMON + RETRO)
    retro = build_retro_model(retro_cfg.model, retro_cfg.retro, retro_cfg.parallel, vocab_size=VOCAB)
    init_by_global_name(retro, seed=99, std=0.1)  # everything differs from the GPT before loading
    engine = RetroEngine(retro_cfg, retro)
    fresh = load_gpt_into_retro(path, engine, retro_cfg)
    assert fresh and all(".cross_attention." in name for name in fresh)

    gpt_params = dict(gpt[0].named_parameters())
    for name, p in retro[0].named_parameters():
        if ".cross_attention." in name:
            continue
        assert torch.equal(p, gpt_params[name]), name
    gates = [m.gate for m in retro[0].modules() if getattr(m, "gate", None) is not None]
    assert len(gates) == 2
    for g in gates:  # init_by_global_name set the gates; a fresh RETRO-from-GPT starts them at 0
        g.data.zero_()

    tokens = torch.randint(0, VOCAB, (2, NS), generator=torch.Generator().manual_seed(0))
    neighbours = torch.randint(0, VOCAB, (2, NS // 8, 2, 16), generator=torch.Generator().manual_seed(1))
    pos = torch.arange(NS).expand(2, NS)
    gpt[0].eval()
    retro[0].eval()
    with torch.no_grad():
        a = gpt[0](tokens, pos, None)
        b = retro[0](tokens, pos, None, neighbours=neighbours)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)

    bad = load_config(None, COMMON + RETRO + ["model.hidden_size=32"])
    with pytest.raises(UserError, match="hidden_size"):
        load_gpt_into_retro(path, engine, bad)
