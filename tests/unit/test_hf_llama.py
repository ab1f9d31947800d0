"""HF Llama mapping (models/hf_llama.py), file checks (models/hf_files.py) and their refusals,
plus a single-process `hf import` / `hf export` CLI round trip of a tied-embedding model."""
import json
import os

import pytest
import torch

from hf_llama_cases import SEQ, VOCAB, fixed_tokens, hf_logits, make_hf_llama, relative_error
from megatron_retro.config import ModelConfig
from megatron_retro.errors import UserError
from megatron_retro.models.gpt import padded_vocab_size
from megatron_retro.models.hf_llama import (base_to_llama, check_llama_compatible, hf_shapes, join_qkv,
                                            llama_model_config, llama_tensor_for, split_qkv, vocab_divisor)

GQA = ModelConfig(num_layers=2, hidden_size=32, num_attention_heads=4, num_query_groups=2, ffn_hidden_size=48,
                  vocab_size=100, make_vocab_size_divisible_by=64)


def llama_json(**changes) -> dict:
    base = {"model_type": "llama", "vocab_size": 320, "hidden_size": 64, "intermediate_size": 96,
            "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 8,
            "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "hidden_act": "silu",
            "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}, "tie_word_embeddings": False}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def test_qkv_split_follows_megatron_group_layout():
    # 2 groups, 2 query heads per group, head width 1: rows per group are [q q | k | v].
    cfg = ModelConfig(hidden_size=4, num_attention_heads=4, num_query_groups=2, kv_channels=1)
    fused = torch.tensor([[0.], [1.], [10.], [20.], [2.], [3.], [11.], [21.]])
    q, k, v = split_qkv(fused, cfg)
    assert q.flatten().tolist() == [0, 1, 2, 3] and k.flatten().tolist() == [10, 11]
    assert v.flatten().tolist() == [20, 21]
    assert torch.equal(join_qkv(q, k, v, cfg), fused)


def _our_state(cfg: ModelConfig, padded: int, vocab: int) -> dict:
    g = torch.Generator().manual_seed(0)
    d, f, hn = cfg.hidden_size, cfg.ffn_size, cfg.head_dim
    qkv = (cfg.num_attention_heads + 2 * cfg.num_query_groups) * hn
    state = {"embedding.word_embeddings.weight": torch.randn(padded, d, generator=g),
             "output_layer.weight": torch.randn(padded, d, generator=g),
             "decoder.final_layernorm.weight": torch.randn(d, generator=g)}
    for name in ("embedding.word_embeddings.weight", "output_layer.weight"):
        state[name][vocab:] = 0  # megatron's padding rows
    for i in range(cfg.num_layers):
        p = f"decoder.layers.{i}."
        state.update({p + "self_attention.linear_qkv.layer_norm_weight": torch.randn(d, generator=g),
                      p + "self_attention.linear_qkv.weight": torch.randn(qkv, d, generator=g),
                      p + "self_attention.linear_proj.weight": torch.randn(d, cfg.num_attention_heads * hn, generator=g),
                      p + "mlp.linear_fc1.layer_norm_weight": torch.randn(d, generator=g),
                      p + "mlp.linear_fc1.weight": torch.randn(2 * f, d, generator=g),
                      p + "mlp.linear_fc2.weight": torch.randn(d, f, generator=g)})
    return state


def test_one_table_maps_both_ways():
    padded = padded_vocab_size(100, GQA.make_vocab_size_divisible_by, 1)
    assert padded == 128
    ours = _our_state(GQA, padded, 100)
    hf = base_to_llama(ours, GQA, 100)
    assert {k: tuple(v.shape) for k, v in hf.items()} == hf_shapes(GQA, 100)
    assert torch.equal(hf["model.layers.1.mlp.up_proj.weight"], ours["decoder.layers.1.mlp.linear_fc1.weight"][48:])
    for name, t in ours.items():
        assert torch.equal(llama_tensor_for(name, hf.__getitem__, GQA, padded), t), name


def test_unknown_parameter_is_refused():
    with pytest.raises(UserError, match="decoder.layers.0.cross_attention.linear_q.weight has no Llama counterpart"):
        llama_tensor_for("decoder.layers.0.cross_attention.linear_q.weight", {}.__getitem__, GQA, 128)


@pytest.mark.parametrize("vocab, divisor", [(32000, 250), (320, 5), (128256, 1002), (50257, 128)])
def test_vocab_divisor_keeps_the_table_tp_independent(vocab, divisor):
    assert vocab_divisor(vocab) == divisor
    sizes = {padded_vocab_size(vocab, divisor, tp) for tp in (1, 2, 4, 8)}
    if divisor != 128:
        assert sizes == {vocab}
    else:  # an odd vocabulary: megatron's padding, which depends on TP
        assert len(sizes) > 1 and min(sizes) > vocab


@pytest.mark.parametrize("hf", [
    llama_json(),
    llama_json(rope_parameters=None, rope_theta=500000.0, rope_scaling=None),  # transformers 4.x style
])
def test_config_translation(hf):
    cfg = llama_model_config(hf, "config.json")
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_query_groups) == (4, 64, 8, 2)
    assert (cfg.ffn_size, cfg.head_dim, cfg.vocab_size, cfg.rotary_base) == (96, 8, 320, 500000)
    assert (cfg.activation, cfg.normalization, cfg.rotary_percent, cfg.untie_embeddings) == ("swiglu", "RMSNorm", 1.0, True)
    assert cfg.norm_epsilon == 1e-5 and cfg.seq_length == 64


@pytest.mark.parametrize("hf, message", [
    (llama_json(model_type="mistral"), "model_type='mistral': only 'llama'"),
    (llama_json(hidden_act="gelu"), "hidden_act='gelu'"),
    (llama_json(attention_bias=True), "attention_bias=True"),
    (llama_json(mlp_bias=True), "mlp_bias=True"),
    (llama_json(rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}),
     "rope_parameters.rope_type='llama3'"),
    (llama_json(rope_parameters=None, rope_theta=1e4, rope_scaling={"type": "linear", "factor": 2.0}),
     "rope_scaling.rope_type='linear'"),
    (llama_json(rope_parameters={"rope_type": "default", "rope_theta": 10000.5}), "rope_theta=10000.5"),
    (llama_json(num_hidden_layers=None), "missing field 'num_hidden_layers'"),
    (llama_json(num_key_value_heads=3), "num_query_groups=3: must divide"),
])
def test_config_refusals(hf, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace("[", r"\[")):
        llama_model_config(hf, "config.json")


@pytest.mark.parametrize("change, message", [
    ({"rotary_percent": 0.5}, "rotary_percent=1.0"), ({"activation": "gelu"}, "activation=swiglu"),
    ({"add_bias_linear": True}, "add_bias_linear=false"), ({"arch": "retro"}, "RETRO has no HF Llama"),
    ({"final_norm": False}, "final_norm=true"),
])
def test_export_refuses_non_llama_models(change, message):
    with pytest.raises(UserError, match=message):
        check_llama_compatible(ModelConfig(**change))


def _write_hf(directory, tensors: dict, config: dict):
    from safetensors.torch import save_file

    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
    if tensors:
        save_file(tensors, os.path.join(directory, "model.safetensors"))


def _hf_tensors(cfg: ModelConfig, vocab: int) -> dict:
    return {name: torch.zeros(shape) for name, shape in hf_shapes(cfg, vocab).items()}


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.pop("model.layers.1.mlp.up_proj.weight"), "tensor model.layers.1.mlp.up_proj.weight is missing"),
    (lambda t: t.update({"model.layers.0.self_attn.q_proj.bias": torch.zeros(64)}), "q_proj.bias is a bias"),
    (lambda t: t.update({"model.layers.0.self_attn.k_proj.weight": torch.zeros(8, 64)}),
     r"k_proj.weight has shape \(8, 64\), config.json implies \(16, 64\)"),
])
def test_checkpoint_file_refusals(tmp_path, edit, message):
    from megatron_retro.models.hf_files import HFCheckpoint
    from megatron_retro.models.hf_llama import HF_IGNORED_SUFFIXES

    config = llama_json()
    cfg = llama_model_config(config, "config.json")
    tensors = _hf_tensors(cfg, 320)
    edit(tensors)
    _write_hf(tmp_path, tensors, config)
    with pytest.raises(UserError, match=message):
        HFCheckpoint(str(tmp_path)).check(hf_shapes(cfg, 320), HF_IGNORED_SUFFIXES)


def test_pickles_and_broken_json_are_refused(tmp_path):
    from megatron_retro.models.hf_files import HFCheckpoint

    _write_hf(tmp_path / "bin", {}, llama_json())
    (tmp_path / "bin" / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(UserError, match="pytorch_model.bin is a pickle and is not loaded"):
        HFCheckpoint(str(tmp_path / "bin"))
    os.makedirs(tmp_path / "bad")
    (tmp_path / "bad" / "config.json").write_text('{\n "model_type": "llama",\n oops\n}')
    with pytest.raises(UserError, match=r"config.json:3: not valid JSON"):
        HFCheckpoint(str(tmp_path / "bad"))


def test_cli_import_export_tied_embeddings(tmp_path, capsys):
    """World size 1: `hf import` then `hf export`; logits of ours and of the exported HF model
    equal the original's (tied embeddings: no lm_head anywhere)."""
    pytest.importorskip("transformers", reason="needs `pip install -e .[hf]`")
    from types import SimpleNamespace

    from megatron_retro.cli import main
    from megatron_retro.config import ParallelConfig
    from megatron_retro.models.gpt import build_gpt_model
    from megatron_retro.parallel.initialize import destroy_parallel, initialize_parallel
    from megatron_retro.training.checkpointing import load_checkpoint, read_state
    from megatron_retro.training.hf_convert import model_config_from_record

    make_hf_llama(str(tmp_path / "hf"), tied=True, seed=1)
    tokens = fixed_tokens()
    ref = hf_logits(str(tmp_path / "hf"), tokens)
    assert main(["hf", "import", "--hf-dir", str(tmp_path / "hf"), "--out", str(tmp_path / "ckpt")]) == 0
    path = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["checkpoint"]
    record = read_state(path)["model"]
    assert record["untie_embeddings"] is False

    initialize_parallel(ParallelConfig(), seed=0)
    try:
        chunks = build_gpt_model(model_config_from_record(record, path), ParallelConfig(), VOCAB, precision="fp32")
        load_checkpoint(path, SimpleNamespace(chunks=chunks), record, with_optimizer=False)
        chunks[0].eval()
        with torch.no_grad():
            ours = chunks[0](tokens, torch.arange(SEQ)[None].expand(2, -1), None)  # [b, s, Vp]
    finally:
        destroy_parallel()
    assert relative_error(ours[..., :VOCAB], ref) <= 1e-5

    assert main(["hf", "export", "--load", str(tmp_path / "ckpt"), "--out", str(tmp_path / "out")]) == 0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["tie_word_embeddings"] is True
    assert relative_error(hf_logits(str(tmp_path / "out"), tokens), ref) <= 1e-5
    assert main(["hf", "import", "--hf-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    assert "no such HF checkpoint directory" in capsys.readouterr().err
