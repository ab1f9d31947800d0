"""The one-op kernels of the Gemma 3 LoRA step against slow compositions of torch ops, forward and
backward, odd shapes: RMSNorm (plain and zero-centred, weight trained or frozen), GeGLU-tanh, and
the blocked causal / sliding-window GQA attention (against SDPA with an explicit mask); and that
the local spec takes the blocked attention only where it applies."""
import pytest
import torch
import torch.nn.functional as F

from megatron_retro.models.block_attention import block_causal_attention
from megatron_retro.models.rmsnorm import RMSNormFunction
from megatron_retro.models.swiglu import geglu_tanh


def _grads(fn, inputs, dy):
    leaves = [t.detach().clone().requires_grad_(t.requires_grad) for t in inputs]
    y = fn(*leaves)
    y.backward(dy)
    return [y.detach()] + [t.grad for t in leaves if t.requires_grad]


def _close(a, b, tol):
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=tol, atol=tol)


def _rms_ref(x, w, eps, offset):   # Gemma's / Llama's RMSNorm composed from torch ops
    xf = x.float() if x.dtype != torch.float64 else x
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (y * (w.to(xf.dtype) + offset)).to(x.dtype)


@pytest.mark.parametrize("offset", [0.0, 1.0])
@pytest.mark.parametrize("train_w", [True, False])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_rms_norm_function(offset, train_w, dtype, tol):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 3, 41, generator=g, dtype=dtype).mul_(3).requires_grad_()
    w = torch.randn(41, generator=g, dtype=dtype).requires_grad_(train_w)
    dy = torch.randn(7, 3, 41, generator=g, dtype=dtype)
    _close(_grads(lambda a, b: RMSNormFunction.apply(a, b, 1e-6, offset), (x, w), dy),
           _grads(lambda a, b: _rms_ref(a, b, 1e-6, offset), (x, w), dy), tol)


def test_geglu_tanh_matches_megatron_glu():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(9, 3, 2 * 41, generator=g, dtype=torch.float64).mul_(3).requires_grad_()
    dy = torch.randn(9, 3, 41, generator=g, dtype=torch.float64)

    def ref(t):
        gate, up = torch.chunk(t, 2, dim=-1)
        return F.gelu(gate, approximate="tanh") * up
    _close(_grads(geglu_tanh, (x,), dy), _grads(ref, (x,), dy), 1e-12)


def _sdpa_ref(q, k, v, scale, window):   # [s, b, np|ng, hn] -> [s, b, np·hn], explicit boolean mask
    s, b, np_, hn = q.shape
    pos = torch.arange(s)
    allowed = pos[None, :] <= pos[:, None]
    if window is not None:
        allowed &= (pos[:, None] - pos[None, :]) <= window
    o = F.scaled_dot_product_attention(q.permute(1, 2, 0, 3), k.permute(1, 2, 0, 3), v.permute(1, 2, 0, 3),
                                       attn_mask=allowed, scale=scale, enable_gqa=True)
    return o.permute(2, 0, 1, 3).reshape(s, b, np_ * hn)


@pytest.mark.parametrize("keep_probs", [False, True], ids=["recompute", "keep"])
@pytest.mark.parametrize("s,b,np_,ng,hn,window,block", [(41, 2, 4, 1, 16, None, 9), (41, 2, 6, 2, 8, 5, 8),
                                                        (9, 3, 2, 2, 4, None, 64), (33, 1, 4, 2, 8, 40, 16),
                                                        (70, 2, 3, 3, 8, None, 16), (48, 2, 4, 2, 8, None, 16),
                                                        (32, 3, 2, 2, 8, 6, 8)])   # the last two: whole blocks
def test_block_attention_matches_sdpa(s, b, np_, ng, hn, window, block, keep_probs):
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(s, b, n, hn, generator=g, dtype=torch.float64).requires_grad_() for n in (np_, ng, ng))
    dy = torch.randn(s, b, np_ * hn, generator=g, dtype=torch.float64)
    _close(_grads(lambda *t: block_causal_attention(*t, 0.3, window, block, keep_probs), (q, k, v), dy),
           _grads(lambda *t: _sdpa_ref(*t, 0.3, window), (q, k, v), dy), 1e-11)



@pytest.mark.parametrize("s,b,np_,ng,hn,window,block", [(48, 2, 4, 2, 8, None, 16), (41, 2, 6, 2, 8, 5, 8)])
def test_block_attention_accumulated_dkv_shares_match_sdpa(monkeypatch, s, b, np_, ng, hn, window, block):
    """dK/dV accumulated into the key slice (DKV_SHARES_BATCHED off; on by default and covered by
    the test above): causal whole blocks and a window."""
    import megatron_retro.models.block_attention as ba
    monkeypatch.setattr(ba, "DKV_SHARES_BATCHED", False)
    test_block_attention_matches_sdpa(s, b, np_, ng, hn, window, block, True)

def test_local_spec_takes_block_attention_only_where_it_applies(monkeypatch):
    from megatron.core.transformer.enums import AttnMaskType

    import megatron_retro.models.sdpa_attention as sa
    from megatron_retro.config import load_config
    from megatron_retro.models.gpt import build_gpt_model
    from megatron_retro.parallel.initialize import initialize_parallel

    cfg = load_config(None, ["model.num_layers=1", "model.hidden_size=32", "model.num_attention_heads=4",
                             "model.num_query_groups=1", "model.ffn_hidden_size=24", "model.seq_length=80",
                             "model.attention_backend=sdpa"])
    initialize_parallel(cfg.parallel, seed=1)
    attn = build_gpt_model(cfg.model, cfg.parallel, vocab_size=64, precision="fp32")[0] \
        .decoder.layers[0].self_attention.core_attention
    calls = []
    monkeypatch.setattr(sa, "block_causal_attention", lambda *a, **kw: calls.append(kw) or block_causal_attention(*a, **kw))
    q, k, v = torch.randn(80, 2, 4, 8), torch.randn(80, 2, 1, 8), torch.randn(80, 2, 1, 8)
    out = attn(q, k, v, None, AttnMaskType.causal)
    assert calls == [{"keep_probs": False}]                          # grouped queries: P recomputed
    plain = attn(q[:8], k[:8], v[:8], None, AttnMaskType.causal)     # shorter than a block: SDPA
    assert len(calls) == 1
    torch.testing.assert_close(out, _sdpa_ref(q, k, v, attn.softmax_scale, None), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain, out[:8], rtol=1e-5, atol=1e-5)
    k4, v4 = torch.randn(80, 2, 4, 8), torch.randn(80, 2, 4, 8)     # one query head per key head: P kept
    torch.testing.assert_close(attn(q, k4, v4, None, AttnMaskType.causal), _sdpa_ref(q, k4, v4, attn.softmax_scale, None),
                               rtol=1e-5, atol=1e-5)
    assert calls[1:] == [{"keep_probs": True}]
    monkeypatch.setattr(sa, "KEEP_PROBS_MAX_BYTES", 4 * 2 * 4 * 80 * 80 // 2 - 1)   # P kept would exceed it: SDPA
    torch.testing.assert_close(attn(q, k4, v4, None, AttnMaskType.causal), _sdpa_ref(q, k4, v4, attn.softmax_scale, None),
                               rtol=1e-5, atol=1e-5)
    assert len(calls) == 2
    attn(q, k, v, None, AttnMaskType.causal)                         # grouped queries keep nothing: blocked
    assert len(calls) == 3


def test_whole_tiny_gemma3_fast_ops_equal_hf_and_the_slow_ops(tmp_path, monkeypatch):
    """A tiny random Gemma 3 (1 KV head, window 5) at 80 tokens (> one attention block), imported:
    logits equal transformers'; LoRA loss and every LoRA gradient equal those of the same model
    with the composed RMSNorm, megatron's GeGLU and SDPA attention."""
    pytest.importorskip("transformers")
    from gemma3_cases import VOCAB, hf_gemma3_logits, make_hf_gemma3, relative_error

    import megatron_retro.models.rmsnorm as norm
    import megatron_retro.models.sdpa_attention as sa
    import megatron_retro.models.swiglu as sw
    from megatron_retro.config import ParallelConfig, load_config
    from megatron_retro.models.gpt import build_gpt_model
    from megatron_retro.parallel.initialize import destroy_parallel, initialize_parallel
    from megatron_retro.peft import apply_peft, make_peft_config
    from megatron_retro.training.checkpointing import load_checkpoint
    from megatron_retro.training.hf_convert import import_hf
    from megatron_retro.training.pretrain import model_record
    from types import SimpleNamespace

    make_hf_gemma3(str(tmp_path / "hf"))
    import_hf(str(tmp_path / "hf"), str(tmp_path / "ckpt"), ParallelConfig())
    destroy_parallel()
    cfg = load_config(str(tmp_path / "ckpt" / "model.yaml"), [])
    initialize_parallel(cfg.parallel, seed=1)
    (model,) = chunks = build_gpt_model(cfg.model, cfg.parallel, vocab_size=VOCAB, precision="fp32")
    load_checkpoint(str(tmp_path / "ckpt" / "iter_0000000"), SimpleNamespace(chunks=chunks), model_record(cfg, VOCAB),
                    with_optimizer=False)
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, VOCAB, (2, 81), generator=g)
    pos = torch.arange(80).expand(2, 80)
    model.eval()
    with torch.no_grad():
        ours = model(tokens[:, :-1], pos, None)[..., :VOCAB]
    assert relative_error(ours, hf_gemma3_logits(str(tmp_path / "hf"), tokens[:, :-1])) < 1e-5

    apply_peft(chunks, make_peft_config("lora", {"rank": 4, "alpha": 8.0}))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_b" in name:
                p.normal_(0.0, 0.05, generator=g)   # B = 0 would leave A's gradient 0
    model.train()
    mask = (torch.rand(2, 80, generator=g) < 0.3).float()

    def loss_and_grads():
        model.zero_grad(set_to_none=True)
        loss = (model(tokens[:, :-1], pos, None, labels=tokens[:, 1:], loss_mask=mask) * mask).sum()
        loss.backward()
        return [loss.detach()] + [p.grad.clone() for p in model.parameters() if p.requires_grad]

    calls = []
    monkeypatch.setattr(sa, "block_causal_attention", lambda *a, **kw: calls.append(kw) or block_causal_attention(*a, **kw))
    fast = loss_and_grads()
    assert len(calls) == cfg.model.num_layers
    monkeypatch.setattr(sa.SDPAttention, "_block_path", lambda *a: False)
    monkeypatch.setattr(norm.FastRMSNorm, "forward", lambda self, x: _rms_ref(x, self.weight, self.eps, self.offset))
    monkeypatch.setattr(sw.SwiGLUMLP, "_plain_glu", lambda self: None)
    slow = loss_and_grads()
    assert len(fast) == len(slow) > 1 + 4 * cfg.model.num_layers
    _close(fast, slow, 2e-5)
