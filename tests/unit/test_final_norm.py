"""``model.final_norm=false`` (models/gpt.py ``drop_final_norm``): GPT and RETRO feed the last
layer's residual stream straight to the output layer — the logits equal the output layer applied
to the last layer's output — and the default keeps megatron's final norm."""
import pytest
import torch

from megatron_retro.config import load_config

GPT = ["model.num_layers=2", "model.hidden_size=32", "model.num_attention_heads=2",
       "model.ffn_hidden_size=48", "model.seq_length=16", "model.attention_backend=sdpa"]
RETRO = GPT + ["model.arch=retro", "retro.chunk_length=8", "retro.num_neighbours=1",
               "retro.neighbour_length=8", "retro.retrieval_layers=[2]", "retro.encoder_num_layers=1"]


def _build(overrides):
    from megatron_retro.models.gpt import build_gpt_model
    from megatron_retro.models.retro import build_retro_model
    from megatron_retro.parallel.initialize import initialize_parallel

    cfg = load_config(None, overrides)
    initialize_parallel(cfg.parallel, seed=1)
    if cfg.model.arch == "retro":
        return build_retro_model(cfg.model, cfg.retro, cfg.parallel, vocab_size=64, precision="fp32")[0]
    return build_gpt_model(cfg.model, cfg.parallel, vocab_size=64, precision="fp32")[0]


@pytest.mark.parametrize("base", [GPT, RETRO], ids=["gpt", "retro"])
def test_logits_read_the_residual_stream_without_a_final_norm(base):
    model = _build(base + ["model.final_norm=false"]).eval()
    assert model.decoder.final_layernorm is None
    assert not any(name.startswith("decoder.final_layernorm") for name, _ in model.named_parameters())
    seen = []
    model.decoder.layers[-1].register_forward_hook(lambda mod, inp, out: seen.append(out[0]))
    tokens = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))   # [b, s]
    kwargs = {"neighbours": torch.randint(0, 64, (2, 2, 1, 8))} if "model.arch=retro" in base else {}
    with torch.no_grad():
        logits = model(tokens, torch.arange(16).expand_as(tokens), None, **kwargs)   # [b, s, vocab]
        ref = model.output_layer(seen[-1])[0].transpose(0, 1)                        # [s, b, v] -> [b, s, v]
    torch.testing.assert_close(logits, ref[..., :logits.shape[-1]])


def test_default_keeps_the_final_norm():
    assert isinstance(_build(GPT).decoder.final_layernorm, torch.nn.Module)
