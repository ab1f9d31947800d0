"""The one-pass RoPE (models/rope.py) equals megatron-core's unfused RoPE, forward and backward,
on strided inputs, partial rotation and odd sizes; the model's attention is routed through it and
the other cases still reach megatron's own function."""
import pytest
import torch
from megatron.core.models.common.embeddings.rope_utils import _apply_rotary_pos_emb_bshd

from megatron_retro.models import rope


@pytest.mark.parametrize("hd,rot", [(64, 64), (64, 32), (10, 6)])
def test_matches_megatron_forward_and_backward(hd, rot):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(17, 3, 2, 3 * hd, generator=g, dtype=torch.float64)   # q is a strided slice of it
    freqs = torch.randn(17, 1, 1, rot, generator=g, dtype=torch.float64)    # not [θ, θ]: halves differ
    dout = torch.randn(17, 3, 2, hd, generator=g, dtype=torch.float64)
    outs = []
    for fn in (lambda t: _apply_rotary_pos_emb_bshd(t, freqs, mscale=1.3), lambda t: rope.rotary(t, freqs, 1.3)):
        x = base.clone().requires_grad_()
        y = fn(x[..., hd:2 * hd])
        y.backward(dout)
        outs.append((y.detach(), x.grad))
    torch.testing.assert_close(outs[1][0], outs[0][0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(outs[1][1], outs[0][1], rtol=1e-12, atol=1e-12)


def test_installed_into_attention_and_falls_back_for_other_cases(monkeypatch):
    from types import SimpleNamespace

    from megatron.core.transformer import attention

    rope.install()
    assert attention.apply_rotary_pos_emb is rope.apply_rotary_pos_emb
    calls = []
    monkeypatch.setitem(rope._MEGATRON, "apply_rotary_pos_emb", lambda *a, **k: calls.append(1) or a[0])
    cfg = SimpleNamespace(apply_rope_fusion=False, rotary_interleaved=True, multi_latent_attention=False)
    t, f = torch.randn(4, 1, 2, 8), torch.randn(4, 1, 1, 8)
    rope.apply_rotary_pos_emb(t, f, cfg)                         # interleaved: megatron's
    assert calls == [1]
    cfg.rotary_interleaved = False
    rope.apply_rotary_pos_emb(t, f, cfg)                         # plain: ours
    rope.apply_rotary_pos_emb(t, f, cfg, cu_seqlens=torch.tensor([0, 4]))   # packed: megatron's
    assert calls == [1, 1]


def test_cpu_output_is_stored_in_the_attention_layout():
    """[s, b, h, hn] values, [b, h, s, hn]-contiguous memory: SDPA's permute + contiguous is free."""
    t, f = torch.randn(6, 2, 3, 8), torch.randn(6, 1, 1, 8)
    y = rope.rotary(t, f)
    assert y.shape == t.shape and y.permute(1, 2, 0, 3).is_contiguous()
    torch.testing.assert_close(y, _apply_rotary_pos_emb_bshd(t, f))
