"""RETRO model (single process): chunked cross-attention against a per-token loop, encoder
cross-attention against a per-neighbour loop, causality, payload round trip, config errors."""
import math

import pytest
import torch

from megatron_retro.config import ConfigError, load_config

M, K, R, NS = 8, 2, 16, 32
BASE = ["model.arch=retro", "model.num_layers=4", "model.hidden_size=64", "model.num_attention_heads=4",
        "model.ffn_hidden_size=128", f"model.seq_length={NS}", "model.rotary_percent=0.5",
        f"retro.chunk_length={M}", f"retro.num_neighbours={K}", f"retro.neighbour_length={R}",
        "retro.retrieval_layers=[2,4]"]


@pytest.fixture(scope="module")
def model():
    from megatron_retro.models.global_params import init_by_global_name
    from megatron_retro.models.retro import build_retro_model
    from megatron_retro.parallel.initialize import initialize_parallel

    cfg = load_config(None, BASE + ["model.add_bias_linear=true", "retro.attention_gate=true"])
    initialize_parallel(cfg.parallel, seed=3)
    chunks = build_retro_model(cfg.model, cfg.retro, cfg.parallel, vocab_size=200)
    init_by_global_name(chunks, seed=5, std=0.1)
    chunks[0].eval()
    return chunks[0]


def _inputs(seed, bs=2):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 200, (bs, NS), generator=g)
    neighbours = torch.randint(0, 200, (bs, NS // M, K, R), generator=g)
    return tokens, neighbours


def _logits(model, tokens, neighbours):
    pos = torch.arange(tokens.shape[1]).expand_as(tokens)
    with torch.no_grad():
        return model(tokens, pos, None, neighbours=neighbours)  # [bs, ns, vocab]


def test_chunked_cross_attention_matches_per_token_loop(model):
    ca = model.decoder.layers[3].cross_attention
    bs, l, h, hd, d = 2, NS // M, 4, 16, 64
    g = torch.Generator().manual_seed(0)
    x = torch.randn(NS, bs, d, generator=g)
    ctx = torch.randn(R, K * l * bs, d, generator=g)
    with torch.no_grad():
        out = ca.attend(x, ctx)
        q = (x @ ca.linear_q.weight.T + ca.linear_q.bias).view(NS, bs, h, hd)
        kv = (ctx @ ca.linear_kv.weight.T + ca.linear_kv.bias).view(R, K * l * bs, h, 2, hd)
        expected = torch.zeros(NS, bs, d)
        for b in range(bs):
            for t in range(M - 1, NS):
                c = (t - (M - 1)) // M
                cols = [(j * l + c) * bs + b for j in range(K)]
                keys = kv[:, cols, :, 0].reshape(R * K, h, hd)
                vals = kv[:, cols, :, 1].reshape(R * K, h, hd)
                heads = []
                for hh in range(h):
                    p = torch.softmax(keys[:, hh] @ q[t, b, hh] / math.sqrt(hd), dim=0)
                    heads.append(p @ vals[:, hh])
                expected[t, b] = torch.cat(heads) @ ca.linear_proj.weight.T + ca.linear_proj.bias
        expected = expected * torch.tanh(ca.gate)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert out[: M - 1].abs().max() == 0  # before the first complete chunk: nothing, not even a bias


def test_encoder_cross_attention_matches_per_neighbour_loop(model):
    enc_ca = model.decoder.layers[1].cross_attention.encoder.layers[0].cross_attention
    l, bs, h, hd, d = NS // M, 2, 4, 16, 64
    g = torch.Generator().manual_seed(1)
    nb = torch.randn(R, K * l * bs, d, generator=g)
    chunks = torch.randn(M, l * bs, d, generator=g)
    with torch.no_grad():
        out, bias = enc_ca(nb, key_value_states=chunks)
        q = (nb @ enc_ca.linear_q.weight.T + enc_ca.linear_q.bias).view(R, K * l * bs, h, hd)
        kv = (chunks @ enc_ca.linear_kv.weight.T + enc_ca.linear_kv.bias).view(M, l * bs, h, 2, hd)
        for col in [0, 5, K * l * bs - 1]:
            chunk_col = col % (l * bs)  # neighbour j of (chunk c, sample b) sits at (j·l + c)·bs + b
            heads = [torch.softmax(q[:, col, hh] @ kv[:, chunk_col, hh, 0].T / math.sqrt(hd), -1)
                     @ kv[:, chunk_col, hh, 1] for hh in range(h)]
            expected = torch.cat(heads, -1) @ enc_ca.linear_proj.weight.T
            torch.testing.assert_close(out[:, col], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("j", [0, 2])
def test_causality_neighbours_of_chunk_j(model, j):
    """Changing the neighbours of chunk j changes no logit before chunk j's last token, and does
    change the logits from that token on (within the next chunk)."""
    tokens, neighbours = _inputs(7)
    other = neighbours.clone()
    other[:, j] = torch.randint(0, 200, other[:, j].shape, generator=torch.Generator().manual_seed(9))
    a, b = _logits(model, tokens, neighbours), _logits(model, tokens, other)
    first = j * M + M - 1
    assert torch.equal(a[:, :first], b[:, :first])
    assert (a[:, first:first + M] - b[:, first:first + M]).abs().amax(dim=-1).min() > 1e-6


def test_causality_future_tokens(model):
    """The encoder reads the decoder's chunk states: a later token must still not leak backwards."""
    tokens, neighbours = _inputs(8)
    other = tokens.clone()
    t = 13
    other[:, t] = (other[:, t] + 1) % 200
    a, b = _logits(model, tokens, neighbours), _logits(model, other, neighbours)
    assert torch.equal(a[:, :t], b[:, :t])
    assert not torch.equal(a[:, t:], b[:, t:])


def test_payload_round_trip():
    from megatron_retro.models.retro import payload

    hidden, ctx = torch.randn(NS, 3, 5), torch.randn(R, K * (NS // M) * 3, 5)
    packed = payload.pack(hidden, ctx)
    assert packed.shape[0] == payload.payload_length(NS, M, K, R)
    lengths = payload.split_lengths(packed.shape[0], 1, M, K, R)
    h2, c2 = payload.unpack(packed, *lengths)
    assert torch.equal(h2, hidden) and torch.equal(c2, ctx)
    half = payload.split_lengths(packed.shape[0] // 2, 2, M, K, R)
    assert half == (NS // 2, R // 2)


@pytest.mark.parametrize("override, message", [
    ("model.seq_length=30", "model.seq_length=30: must be a multiple of retro.chunk_length=8"),
    ("retro.retrieval_layers=[5]", "retro.retrieval_layers=[5]: must be in [1, model.num_layers=4]"),
    ("retro.neighbour_length=4", "retro.neighbour_length=4: must be >= retro.chunk_length=8"),
    ("retro.retrieval_layers=null", "retro.retrieval_layers: none with model.num_layers=4"),
])
def test_config_errors(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(None, BASE + [override])


def test_default_retrieval_layers():
    from megatron_retro.config import RetroConfig

    assert RetroConfig().layer_numbers(12) == [6, 9, 12]
    assert RetroConfig().layer_numbers(24) == [9, 12, 15, 18, 21, 24]


def test_retro_layers_route_through_the_cca_kernel_dispatch(model, monkeypatch):
    """The decoder's chunked cross-attention goes through megatron_retro.kernels'
    chunked_cross_attention (Triton on CUDA): count the calls and check what it dispatches to."""
    import megatron_retro.models.retro.cross_attention as ca_module
    from megatron_retro.kernels import chunked_cross_attention

    calls = []

    def counting(q, k, v, *args, **kwargs):
        calls.append((q.shape, k.shape, kwargs.get("chunk_length")))
        return chunked_cross_attention(q, k, v, *args, **kwargs)

    monkeypatch.setattr(ca_module, "chunked_cross_attention", counting)
    tokens, neighbours = _inputs(11)
    _logits(model, tokens, neighbours)
    assert len(calls) == 2  # one per retrieval layer (2 and 4)
    import importlib

    cca = importlib.import_module("megatron_retro.kernels.chunked_cross_attention")
    q_shape, k_shape, m = calls[0]
    assert m == M
    decision = cca.chunked_cross_attention_dispatch(torch.zeros(q_shape), torch.zeros(k_shape),
                                                    torch.zeros(k_shape), chunk_length=m)
    assert decision.use_triton == torch.cuda.is_available(), decision.reason
    assert decision.reason
