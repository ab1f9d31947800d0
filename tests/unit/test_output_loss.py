"""The chunked output-layer + cross-entropy op against plain torch, and the GPT / RETRO training
loss through it against megatron's output layer + vocab-parallel cross-entropy (TP1; the TP2 and
TP2+SP cases are in tests/distributed/test_output_loss_tp.py)."""
import pytest
import torch
import torch.nn.functional as F

from engine_testlib import main_grads, tiny_engine
from megatron_retro.models import output_loss
from megatron_retro.models.output_loss import linear_cross_entropy

NS, BS, D, V = 9, 3, 17, 41


def _inputs(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(NS, BS, D, generator=g, dtype=dtype)
    w = torch.randn(V, D, generator=g, dtype=dtype) * 0.5
    labels = torch.randint(0, V, (BS, NS), generator=g)
    return h, w, labels


def _reference(h, w, labels):
    logits = torch.einsum("sbd,vd->bsv", h, w)
    return F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1), reduction="none").view(BS, NS)


@pytest.mark.parametrize("mask_kind", ["none", "ones", "partial", "fractional"])
@pytest.mark.parametrize("upstream", ["mask", "arbitrary"])
def test_losses_and_grads_match_plain_cross_entropy(mask_kind, upstream):
    h, w, labels = _inputs()
    mask = {"none": None, "ones": torch.ones(BS, NS), "partial": (torch.arange(NS) % 3 != 0).double().expand(BS, NS),
            "fractional": torch.rand(BS, NS, generator=torch.Generator().manual_seed(1)).double() + 0.1}[mask_kind]
    eff = torch.ones(BS, NS, dtype=torch.float64) if mask is None else mask.double()
    coeff = eff * 0.37 if upstream == "mask" else torch.randn(BS, NS, dtype=torch.float64) * (eff != 0)
    h1, w1 = h.clone().requires_grad_(), w.clone().requires_grad_()
    ref = _reference(h1, w1, labels) * (eff != 0)
    (ref * coeff).sum().backward()
    h2, w2 = h.clone().requires_grad_(), w.clone().requires_grad_()
    out = linear_cross_entropy(h2, w2, labels, mask, chunk_elements=4 * V)   # 4 rows a block: 7 blocks
    (out * coeff).sum().backward()
    torch.testing.assert_close(out.double(), ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(h2.grad, h1.grad, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(w2.grad, w1.grad, rtol=1e-6, atol=1e-9)


def test_frozen_weight_gets_no_grad_and_logits_only_where_the_loss_is(monkeypatch):
    h, w, labels = _inputs(dtype=torch.float32)
    mask = torch.zeros(BS, NS)
    mask[:, -2:] = 1.0                               # "answer" tokens: 2 of 9 positions
    rows = []
    real = output_loss._softmax_block

    def counting(h_c, *args):
        rows.append(h_c.shape[0])
        return real(h_c, *args)

    monkeypatch.setattr(output_loss, "_softmax_block", counting)
    h1 = h.clone().requires_grad_()
    out = linear_cross_entropy(h1, w, labels, mask)
    out.sum().backward()
    assert sum(rows) == 2 * BS
    h2 = h.clone().requires_grad_()
    ref = (_reference(h2, w, labels) * mask)
    ref.sum().backward()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h1.grad, h2.grad, rtol=1e-5, atol=1e-7)
    assert w.grad is None


def test_bad_shapes_name_the_argument():
    h, w, labels = _inputs()
    with pytest.raises(ValueError, match="labels"):
        linear_cross_entropy(h, w, labels.t())
    with pytest.raises(ValueError, match="loss_mask"):
        linear_cross_entropy(h, w, labels, torch.ones(NS, BS))


# ------------------------------------------------------------------ models ---------------------
def _engine_grads(arch, overrides, method=None):
    """(fused, plain) (loss, {name: grad}) of one train batch, same weights and data."""
    engine, batches = tiny_engine(arch, overrides, method)
    out = {}
    for fused in (True, False):
        for c in engine.chunks:
            c.module.fused_output_loss = fused
            c.zero_grad_buffer()
        loss, _ = engine.forward_backward(batches)
        out[fused] = (loss, main_grads(engine))
    return out


@pytest.mark.parametrize("arch,overrides,method", [
    ("gpt", [], None),
    ("gpt", ["model.untie_embeddings=false"], None),
    ("gpt", [], "lora"),
    ("retro", [], None),
], ids=["gpt-full", "gpt-tied", "gpt-lora", "retro-full"])
def test_model_loss_and_grads_match_megatron_output_layer(arch, overrides, method):
    out = _engine_grads(arch, overrides, method)
    (lf, gf), (lp, gp) = out[True], out[False]
    assert abs(lf - lp) < 1e-5 * abs(lp)
    assert gf.keys() == gp.keys() and gf
    for name in gp:
        torch.testing.assert_close(gf[name], gp[name], rtol=2e-4, atol=2e-6, msg=name)


# ------------------------------------------------------------------ selective recompute --------
def _saved_bytes_and_grads(recompute_modules):
    from megatron_retro.config import load_config
    from megatron_retro.models.global_params import init_by_global_name
    from megatron_retro.models.gpt import build_gpt_model
    from megatron_retro.parallel.initialize import initialize_parallel

    cfg = load_config(None, ["model.num_layers=2", "model.hidden_size=32", "model.num_attention_heads=4",
                             "model.ffn_hidden_size=96", "model.seq_length=64", "train.precision=fp32",
                             f"model.recompute_modules={recompute_modules}"])
    initialize_parallel(cfg.parallel, seed=3)
    chunk = build_gpt_model(cfg.model, cfg.parallel, vocab_size=100)[0]
    init_by_global_name([chunk], seed=5)
    t = torch.randint(0, 100, (2, 65), generator=torch.Generator().manual_seed(0))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda x: saved.append(x.numel() * x.element_size()) or x,
                                                  lambda x: x):
        loss = chunk(t[:, :-1], torch.arange(64).expand(2, -1), None, labels=t[:, 1:]).sum()
    loss.backward()
    return loss.item(), sum(saved), {n: p.grad.clone() for n, p in chunk.named_parameters()}


def test_selective_recompute_same_grads_fewer_saved_bytes():
    loss0, bytes0, g0 = _saved_bytes_and_grads("[]")
    loss1, bytes1, g1 = _saved_bytes_and_grads("[mlp,core_attn]")
    assert loss1 == pytest.approx(loss0, rel=1e-6)
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], rtol=1e-5, atol=1e-7, msg=n)
    assert bytes1 < 0.6 * bytes0, (bytes1, bytes0)


def test_recompute_modules_bad_name_is_one_clear_line():
    from megatron_retro.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="model.recompute_modules"):
        load_config(None, ["model.recompute_modules=[attention]"])


def test_bf16_weights_accumulate_in_fp32():
    h, w, labels = _inputs(dtype=torch.float32)
    h1, w1 = h.clone().requires_grad_(), w.clone().requires_grad_()
    (_reference(h1, w1, labels)).sum().backward()
    h2, w2 = h.bfloat16().requires_grad_(), w.bfloat16().requires_grad_()
    out = linear_cross_entropy(h2, w2, labels, chunk_elements=4 * V)
    out.sum().backward()
    assert out.dtype == torch.float32 and h2.grad.dtype == w2.grad.dtype == torch.bfloat16
    torch.testing.assert_close(out, _reference(h, w, labels), rtol=3e-2, atol=3e-2)
    torch.testing.assert_close(h2.grad.float(), h1.grad, rtol=3e-2, atol=3e-2)
    torch.testing.assert_close(w2.grad.float(), w1.grad, rtol=3e-2, atol=3e-2)
