"""``model.smear_keys`` (models/key_smear.py through SDPAttention): each self-attention key is
sigmoid(a_g)·k_t + (1 - sigmoid(a_g))·k_{t-1} per key/value group, checked against a per-position
loop and a softmax written out by hand, on the SDPA and the blocked GQA paths, for KV-cached
decoding and prefix tuning; the spec refuses it where it cannot apply and keeps it off by default.
(TP/SP sharding of the per-group logits: tests/distributed/test_gpt_equivalence.py.)"""
import math

import pytest
import torch

import test_final_norm
from megatron_retro.errors import UserError

GPT = test_final_norm.GPT + ["model.num_attention_heads=4"]
RETRO = test_final_norm.RETRO + ["model.num_attention_heads=4"]
_build = test_final_norm._build


def _slow_smear(key, logit):
    """The definition, one position and one group at a time."""
    out = torch.empty_like(key)
    for t in range(key.shape[0]):
        for g in range(key.shape[2]):
            w = 1.0 / (1.0 + math.exp(-float(logit[g])))
            prev = key[t - 1, :, g] if t > 0 else torch.zeros_like(key[t, :, g])
            out[t, :, g] = w * key[t, :, g] + (1 - w) * prev
    return out


def _slow_attention(q, k, v, scale):
    """q [sq, b, np, hn], k/v [sk, b, ng, hn] -> [sq, b, np*hn]; causal, queries = last sq keys."""
    sq, b, np_, hn = q.shape
    sk, ng = k.shape[0], k.shape[2]
    out = torch.zeros(sq, b, np_, hn, dtype=torch.float64)
    for h in range(np_):
        g = h // (np_ // ng)
        for i in range(sq):
            keys = k[: sk - sq + i + 1, :, g].double()                                   # [n, b, hn]
            p = torch.softmax((keys * q[i, :, h].double()).sum(-1) * scale, dim=0)       # [n, b]
            out[i, :, h] = (p[..., None] * v[: sk - sq + i + 1, :, g].double()).sum(0)
    return out.reshape(sq, b, np_ * hn)


def _core_attention(model):
    return model.decoder.layers[0].self_attention.core_attention


def test_smear_equals_the_definition():
    from megatron_retro.models.key_smear import smear_keys

    key = torch.randn(7, 2, 3, 5, dtype=torch.float64)   # [sk, b, ng, hn]
    logit = torch.tensor([-1.5, 0.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(smear_keys(key, logit), _slow_smear(key, logit))


@pytest.mark.parametrize("groups,seq", [(4, 12), (2, 80)], ids=["sdpa-mha", "blocked-gqa"])
def test_core_attention_attends_with_smeared_keys(groups, seq):
    attn = _core_attention(_build(GPT + ["model.smear_keys=true", f"model.num_query_groups={groups}"]))
    assert attn.key_smear.shape == (groups,)
    with torch.no_grad():
        attn.key_smear.copy_(torch.linspace(-2.0, 2.0, groups))
    g = torch.Generator().manual_seed(0)
    q = torch.randn(seq, 2, 4, 8, generator=g)          # [sq, b, np, hn]
    k, v = (torch.randn(seq, 2, groups, 8, generator=g) for _ in range(2))
    out = attn(q, k, v, None)
    ref = _slow_attention(q, _slow_smear(k, attn.key_smear.detach()), v, attn.softmax_scale)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
    # KV-cached decoding: the last query against every cached (unsmeared) key gives the same row
    torch.testing.assert_close(attn(q[-1:], k, v, None), out[-1:], atol=1e-5, rtol=1e-5)


def test_prefix_keys_are_not_smeared():
    attn = _core_attention(_build(GPT + ["model.smear_keys=true"]))
    attn.prefix_keys = 3   # as peft/prefix.py sets it
    g = torch.Generator().manual_seed(1)
    q = torch.randn(6, 1, 4, 8, generator=g)
    k, v = (torch.randn(9, 1, 4, 8, generator=g) for _ in range(2))   # 3 prefix keys + 6 positions
    smeared = torch.cat([k[:3], _slow_smear(k[3:], attn.key_smear.detach())])
    torch.testing.assert_close(attn(q, k, v, None).double(), _slow_attention(q, smeared, v, attn.softmax_scale),
                               atol=1e-5, rtol=1e-5)


def test_off_by_default_and_decoder_only_in_retro():
    assert not any("key_smear" in n for n, _ in _build(GPT).named_parameters())
    names = [n for n, _ in _build(RETRO + ["model.smear_keys=true"]).named_parameters() if "key_smear" in n]
    assert len(names) == 2 and not any("encoder" in n for n in names), names   # bidirectional encoder: none


def test_refused_without_sdpa():
    with pytest.raises(UserError, match="model.smear_keys=true: needs the SDPA core attention"):
        _build(GPT + ["model.smear_keys=true", "model.attention_backend=unfused"])
