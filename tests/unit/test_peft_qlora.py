"""QLoRA specifics in one process: NF4 storage against an independent reference written here from
the NF4 code table, the double-quantised scales' error bound, the freed full-precision weight and
the memory report, zero-B logits equal to the dequantised base, dequantisation in forward AND
backward (no saved full-precision weight), merge = dequantise + add, adapter reload re-quantises.
(Trainable-only-LoRA, trainable count, falling loss and the adapter round trip run for qlora in
test_peft_methods.py's matrix; TP/PP equivalence in tests/distributed/test_peft_matrix.py.)"""
import gc
import os
import sys
import weakref

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "distributed"))
sys.path.insert(0, os.path.dirname(__file__))
from peft_cases import MODEL_OVERRIDES, SEQ, VOCAB  # noqa: E402
from test_peft_methods import build, logits  # noqa: E402  (same tiny GPT, seed 11, std 0.05)

from megatron_retro.config import load_config  # noqa: E402
from megatron_retro.errors import UserError  # noqa: E402

# The 16 NF4 levels as printed in the QLoRA paper (appendix E), rounded to 4 decimals.
NF4_TABLE = [-1.0, -0.6962, -0.5251, -0.3949, -0.2844, -0.1848, -0.0911, 0.0,
             0.0796, 0.1609, 0.2461, 0.3379, 0.4407, 0.5626, 0.7230, 1.0]
HALF_GAP = max(b - a for a, b in zip(NF4_TABLE, NF4_TABLE[1:])) / 2  # 0.152, between -1 and -0.696


def reference_nf4(w: torch.Tensor, block: int):
    """Independent NF4: per block absmax, nearest table level, (codes, dequantised) in float64."""
    table = torch.tensor(NF4_TABLE, dtype=torch.float64)
    blocks = w.double().reshape(-1, block)
    absmax = blocks.abs().amax(1, keepdim=True)
    codes = ((blocks / absmax)[..., None] - table).abs().argmin(-1)
    return codes.reshape(-1), (table[codes] * absmax).reshape(w.shape), absmax.reshape(-1)


class Holder(torch.nn.Module):
    pass


def quantised(w, **options):
    from megatron_retro.peft.qlora import QLoraConfig, quantize_into

    module = Holder()
    module._qlora_layout = quantize_into(module, w, QLoraConfig(**options))
    return module


@pytest.fixture(scope="module")
def run_cfg():
    from megatron_retro.parallel.initialize import initialize_parallel

    cfg = load_config(None, MODEL_OVERRIDES)
    initialize_parallel(cfg.parallel, seed=3)
    return cfg


@pytest.mark.parametrize("shape,block", [((96, 64), 64), ((41, 9), 64), ((64, 128), 32)])
def test_nf4_matches_independent_reference_and_error_bound(shape, block):
    from megatron_retro.peft.qlora import dequantized_weight

    torch.manual_seed(0)
    w = torch.randn(shape)
    module = quantised(w, block_size=block, double_quant=False)
    n = w.numel()
    padded = torch.nn.functional.pad(w.reshape(-1), (0, -n % block))  # the storage pads to whole blocks
    codes, expected, absmax = reference_nf4(padded, block)
    packed = module.qlora_packed
    assert packed.dtype == torch.uint8 and packed.numel() == padded.numel() // 2
    ours = torch.stack([packed >> 4, packed & 15], 1).reshape(-1).long()  # element 2i in the high nibble
    # the table above is rounded to 4 decimals: only a value (almost) halfway between two levels
    # may get the other level
    table = torch.tensor(NF4_TABLE, dtype=torch.float64)
    normed = (padded.double().view(-1, block) / absmax[:, None]).reshape(-1)
    differ = ours != codes
    assert differ.float().mean().item() < 1e-3
    gap = ((normed - table[ours]).abs() - (normed - table[codes]).abs()).abs()
    assert (gap[differ] < 1e-4).all()
    deq = dequantized_weight(module)
    assert deq.shape == w.shape and deq.dtype == w.dtype
    same = ~differ[:n].reshape(shape)
    torch.testing.assert_close(deq.double()[same], expected[:n].reshape(shape)[same], rtol=0,
                               atol=1e-4 * absmax.max().item())
    # |w - deq| <= absmax of its block x the widest half-gap between adjacent levels (0.152)
    bound = (absmax.repeat_interleave(block)[:n] * HALF_GAP).reshape(shape) + 1e-6
    assert ((w.double() - deq.double()).abs() <= bound).all()
    assert (w - deq).abs().mean() < 0.1 * w.abs().mean()  # 4 bits: ~7% mean error on N(0, 1)


def test_double_quantised_scales_error_bound():
    from megatron_retro.peft.qlora import absmax_of, dequantized_weight

    torch.manual_seed(1)
    w = torch.randn(300, 64) * torch.linspace(0.1, 3.0, 300)[:, None]   # 300 blocks of 64: 2 scale blocks
    module = quantised(w, block_size=64, double_quant=True, scale_block_size=256)
    _, _, true_absmax = reference_nf4(w, 64)
    assert module.qlora_absmax_q.dtype == torch.int8 and module.qlora_absmax_q.numel() == 512
    assert module.qlora_absmax_s2.dtype == torch.float32 and module.qlora_absmax_s2.numel() == 2
    mean = true_absmax.mean()
    centred = torch.nn.functional.pad(true_absmax - mean, (0, 212)).view(2, 256)
    s2 = centred.abs().amax(1)
    torch.testing.assert_close(module.qlora_absmax_s2.double(), s2, rtol=1e-6, atol=0)
    err = (absmax_of(module).double() - true_absmax).abs()
    assert (err <= s2.repeat_interleave(256)[:300] / 254 * (1 + 1e-5) + 1e-6).all(), err.max()
    assert err.max() > 0  # the scales really are 8-bit
    # the weights then carry at most the single-quantisation error plus |level| x scale error <= 1
    deq = dequantized_weight(module)
    bound = true_absmax.repeat_interleave(64).view(300, 64) * HALF_GAP + err.repeat_interleave(64).view(300, 64)
    assert ((w.double() - deq.double()).abs() <= bound + 1e-5).all()


def test_qlora_frees_weights_and_reports_memory(run_cfg):
    from megatron_retro.peft.qlora import qlora_memory, quantized_nbytes

    chunks, _ = build(run_cfg)
    qkv = chunks[0].decoder.layers[0].self_attention.linear_qkv
    weak = weakref.ref(qkv.weight)
    fp_bytes = sum(m.weight.numel() * 4 for m in chunks[0].modules()
                   if type(m).__name__ in ("ColumnParallelLinear", "RowParallelLinear") and m is not chunks[0].output_layer)
    from megatron_retro.peft import apply_peft, make_peft_config

    apply_peft(chunks, make_peft_config("qlora", {"rank": 4}))
    gc.collect()
    assert weak() is None and qkv.weight is None
    assert not any("weight" == n.rsplit(".", 1)[-1] and "linear_" in n for n, _ in chunks[0].named_parameters())
    report = qlora_memory(chunks)
    packed = [(m.qlora_packed, m.qlora_absmax_q, m.qlora_absmax_s2, m.qlora_absmax_mean)
              for m in chunks[0].modules() if getattr(m, "_qlora_layout", None) is not None]
    assert report.modules == len(packed) == 16
    assert report.before_bytes == fp_bytes
    assert report.after_bytes == sum(t.numel() * t.element_size() for group in packed for t in group)
    assert report.after_bytes == sum(quantized_nbytes(m._qlora_layout.numel) for m in chunks[0].modules()
                                     if getattr(m, "_qlora_layout", None) is not None)
    assert report.saved_bytes == fp_bytes - report.after_bytes and report.after_bytes < fp_bytes / 7
    assert qkv.qlora_packed.numel() == 128 * 64 // 2  # qkv [(8 + 2·4)·8, 64]


def test_zero_b_logits_equal_base_with_dequantised_weights(run_cfg):
    from megatron_retro.peft.qlora import dequantized_weight

    chunks, _ = build(run_cfg, "qlora", {"rank": 4})
    base, _ = build(run_cfg)
    original = logits(base)
    changed = 0
    with torch.no_grad():
        for (name, module), (_, plain) in zip(chunks[0].named_modules(), base[0].named_modules()):
            if getattr(module, "_qlora_layout", None) is not None:
                w = dequantized_weight(module)
                changed += int(not torch.equal(w, plain.weight))
                plain.weight.copy_(w)
    assert changed == 16
    torch.testing.assert_close(logits(chunks), logits(base), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(logits(chunks), original, atol=1e-6)  # quantisation did change the model


def test_dequantised_in_forward_and_again_in_backward(run_cfg, monkeypatch):
    import megatron_retro.kernels as kernels
    from megatron_retro.peft.qlora import qlora_dispatch

    chunks, _ = build(run_cfg, "qlora", {"rank": 4})
    made = []
    real = kernels.nf4_dequantize

    def counting(*args, **kwargs):
        out = real(*args, **kwargs)
        made.append(weakref.ref(out))
        return out
    monkeypatch.setattr(kernels, "nf4_dequantize", counting)
    chunks[0].train()
    tokens = torch.randint(0, VOCAB, (2, SEQ))
    out = chunks[0](tokens, torch.arange(SEQ)[None].expand(2, -1), None)
    assert len(made) == 16
    gc.collect()
    assert all(ref() is None for ref in made), "a dequantised base weight is kept for backward"
    out.float().sum().backward()
    # dequantised again for each input gradient: all but layer 0's linear_qkv, whose input (the
    # frozen embedding, normed by a frozen norm) needs no gradient, so autograd saved no weight
    assert len(made) == 16 + 15
    assert chunks[0].decoder.layers[0].self_attention.linear_qkv.lora_b.grad.abs().sum() > 0  # B = 0: dA = 0
    decision = qlora_dispatch(chunks[0].decoder.layers[0].mlp.linear_fc1)
    assert not decision.use_triton and "CUDA" in decision.reason


def test_merge_is_dequantise_plus_delta(run_cfg):
    from megatron_retro.models.global_params import init_by_global_name
    from megatron_retro.peft import merge_peft
    from megatron_retro.peft.qlora import dequantized_weight

    chunks, _ = build(run_cfg, "qlora", {"rank": 4, "alpha": 8.0})
    init_by_global_name(chunks, seed=5, std=0.05)   # non-zero LoRA B; the NF4 base is untouched
    fc2 = chunks[0].decoder.layers[1].mlp.linear_fc2
    expected = dequantized_weight(fc2).double() + 2.0 * fc2.lora_b.double() @ fc2.lora_a.double()
    ref = logits(chunks)
    assert merge_peft(chunks) == 16
    assert isinstance(fc2.weight, torch.nn.Parameter) and not fc2.weight.requires_grad
    assert not hasattr(fc2, "qlora_packed") and "lora_a" not in fc2._parameters
    torch.testing.assert_close(fc2.weight.double(), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(logits(chunks), ref, rtol=1e-4, atol=1e-4)


def test_adapter_reload_requantises_the_base(run_cfg, tmp_path):
    from megatron_retro.peft import trainable_parameters
    from megatron_retro.peft.checkpoint import load_adapter, read_adapter_tensors, save_adapter

    chunks, cfg = build(run_cfg, "qlora", {"rank": 4})
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # non-trivial adapter values
        for _, p in trainable_parameters(chunks):
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    ref = logits(chunks)
    save_adapter(str(tmp_path / "a"), chunks, cfg)
    saved = read_adapter_tensors(str(tmp_path / "a"))
    assert len(saved) == 32 and all(k.rsplit(".", 1)[-1] in ("lora_a", "lora_b") for k in saved)  # no base inside
    other, _ = build(run_cfg)  # the full-precision base, as loaded from its checkpoint
    assert not torch.allclose(logits(other), ref, atol=1e-4)
    loaded = load_adapter(str(tmp_path / "a"), other)
    assert loaded.method == "qlora" and other[0].decoder.layers[0].self_attention.linear_qkv.weight is None
    torch.testing.assert_close(logits(other), ref, rtol=0, atol=0)  # quantisation is deterministic


def test_bad_qlora_options_are_one_line_errors():
    from megatron_retro.peft import make_peft_config

    for options, message in (({"block_size": 63}, "peft.block_size=63"),
                             ({"scale_block_size": 0}, "peft.scale_block_size=0"),
                             ({"rank": 0}, "peft.rank=0")):
        with pytest.raises(UserError) as err:
            make_peft_config("qlora", options)
        assert message in str(err.value) and "\n" not in str(err.value)


def test_apply_hands_the_freed_weights_back_to_the_os(run_cfg, monkeypatch):
    import sys

    import megatron_retro.peft.qlora as qlora

    calls = []
    monkeypatch.setattr(qlora, "release_freed_heap", lambda: calls.append(1) or True)
    chunks, _ = build(run_cfg)
    from megatron_retro.peft import apply_peft, make_peft_config

    apply_peft(chunks, make_peft_config("qlora", {"rank": 4}))
    assert calls == [1]
    monkeypatch.undo()
    assert qlora.release_freed_heap() is sys.platform.startswith("linux")   # glibc's malloc_trim ran
