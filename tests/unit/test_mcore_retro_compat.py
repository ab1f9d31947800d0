"""retro.megatron_compat against megatron-core 0.15.3's own RetroModel (tests/fixtures/mcore_retro,
written by tests/fixtures/make_mcore_retro_fixture.py): TP1 logits from its torch_dist checkpoint,
`retro import-mcore` end to end (TP1), and the one-line refusals.  TP2: tests/distributed."""
import json
import os
import shutil

import pytest
import torch

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures")
FIXTURE = os.path.join(FIXTURES, "mcore_retro")       # LayerNorm, GeLU, biases, learned positions, tied
VARIANTS = ["mcore_retro", "mcore_retro_rope"]          # + RoPE, SwiGLU, RMSNorm, no biases, untied
CKPT = os.path.join(FIXTURE, "iter_0000001")


def reference(variant: str = "mcore_retro") -> dict:
    from safetensors.torch import load_file

    return load_file(os.path.join(FIXTURES, variant, "reference.safetensors"))


def rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm())


def compat_logits(model, tokens, neighbours) -> torch.Tensor:
    """[bs, ns, vocab] (gathered over TP) of a compat RETRO, eval mode, causal mask."""
    ns = tokens.shape[1]
    pos = torch.arange(ns).expand_as(tokens)
    mask = torch.triu(torch.ones(1, 1, ns, ns, dtype=torch.bool), diagonal=1)
    model.eval()
    with torch.no_grad():
        return model(tokens, pos, mask, neighbours=neighbours, runtime_gather_output=True)


def load_variant(variant: str, parallel=None):
    """The fixture's megatron-core checkpoint loaded into a compat RETRO built at ``parallel``."""
    from megatron_retro.config import ParallelConfig
    from megatron_retro.models.retro import build_retro_model
    from megatron_retro.training.mcore_import import configs_from_args, load_mcore_weights, megatron_args

    ckpt = os.path.join(FIXTURES, variant, "iter_0000001")
    model_cfg, retro_cfg = configs_from_args(megatron_args(ckpt), ckpt)
    chunks = build_retro_model(model_cfg, retro_cfg, parallel or ParallelConfig(), vocab_size=model_cfg.vocab_size,
                               precision="fp32")
    load_mcore_weights(chunks, ckpt)
    return chunks[0]


@pytest.fixture(scope="module")
def models():
    from megatron_retro.config import ParallelConfig
    from megatron_retro.parallel.initialize import initialize_parallel

    initialize_parallel(ParallelConfig(), seed=1)
    return {variant: load_variant(variant) for variant in VARIANTS}


@pytest.fixture(scope="module")
def loaded(models):
    return models["mcore_retro"]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", ["full", "ragged"])
def test_tp1_logits_equal_megatron_core_015(models, variant, case):
    ref = reference(variant)
    got = compat_logits(models[variant], ref[f"tokens_{case}"], ref[f"neighbours_{case}"])
    assert got.shape == ref[f"logits_{case}"].shape
    assert rel_error(got, ref[f"logits_{case}"]) < 1e-5


def test_neighbours_matter(loaded):
    """The check bites: other neighbours (or none reaching the encoder) change the logits."""
    ref = reference()
    tokens, neighbours = ref["tokens_full"], ref["neighbours_full"]
    got = compat_logits(loaded, tokens, neighbours.roll(1, dims=2))  # swap the two neighbours' order
    assert rel_error(got, ref["logits_full"]) < 1e-5  # a chunk's neighbours are a set
    got = compat_logits(loaded, tokens, neighbours.roll(1, dims=1))  # other chunks' neighbours
    assert rel_error(got, ref["logits_full"]) > 1e-2


def test_generation_and_backward(loaded):
    """Greedy generation runs (no KV cache: the whole sequence each step, ragged lengths) and each
    token is the argmax of a forward over the sequence so far with the generator's neighbours
    (complete chunks: retrieved; the incomplete one: pad ids); a training backward reaches the encoder."""
    import numpy as np

    from megatron_retro.evaluation.generation import generate

    ref = reference()
    bank = ref["neighbours_full"][0, 0]                       # [k, r]

    def retriever(chunks):                                    # int64 [bs, 1, m] -> [bs, 1, k, r]
        return np.broadcast_to(bank.numpy(), (chunks.shape[0], 1) + tuple(bank.shape)).copy()

    prompts = ref["tokens_full"][:, :5]
    out = generate(loaded, prompts, 4, 128, retriever=retriever)
    assert out.shape == (2, 9)
    for n in range(5, 9):
        neighbours = torch.zeros(2, -(-n // 4), *bank.shape, dtype=torch.long)
        neighbours[:, :n // 4] = bank
        step = compat_logits(loaded, out[:, :n], neighbours)[:, -1].argmax(-1)
        assert torch.equal(step, out[:, n])
    loaded.train()
    pos = torch.arange(16).expand(2, 16)
    losses = loaded(ref["tokens_full"], pos, None, labels=ref["tokens_full"], neighbours=ref["neighbours_full"])
    losses.mean().backward()
    enc = loaded.decoder.layers[5].cross_attention.encoder.layers[0].cross_attention.attn.linear_q.weight
    assert enc.grad is not None and float(enc.grad.abs().sum()) > 0
    loaded.zero_grad()
    loaded.eval()


def test_import_mcore_end_to_end(loaded, tmp_path):
    """`retro import-mcore` (TP1) writes our checkpoint; it loads back and gives the fixture's logits."""
    from megatron_retro.cli import main
    from megatron_retro.config import ParallelConfig, RunConfig, TrainConfig, load_config
    from megatron_retro.models.retro import build_retro_model
    from megatron_retro.parallel.initialize import initialize_parallel
    from megatron_retro.training.checkpointing import load_checkpoint
    from megatron_retro.training.pretrain import model_record
    from megatron_retro.training.retro_step import RetroEngine

    out = tmp_path / "imported"
    assert main(["retro", "import-mcore", "--load", FIXTURE, "--out", str(out)]) == 0
    state = json.loads((out / "iter_0000000" / "state.json").read_text())
    assert state["mcore_import"]["iteration"] == 1 and state["model"]["retro"]["megatron_compat"] is True
    cfg = load_config(str(out / "model.yaml"))
    assert cfg.retro.megatron_compat and cfg.model.num_layers == 9
    cfg = RunConfig(model=cfg.model, retro=cfg.retro, parallel=ParallelConfig(), train=TrainConfig(steps=1, lr_warmup_steps=0))
    initialize_parallel(cfg.parallel, seed=2)
    chunks = build_retro_model(cfg.model, cfg.retro, cfg.parallel, vocab_size=cfg.model.vocab_size, precision="fp32")
    engine = RetroEngine(cfg, chunks)
    load_checkpoint(str(out / "iter_0000000"), engine, model_record(cfg, cfg.model.vocab_size), with_optimizer=False)
    ref = reference()
    got = compat_logits(chunks[0], ref["tokens_full"], ref["neighbours_full"])
    assert rel_error(got, ref["logits_full"]) < 1e-5


def test_import_mcore_refuses_other_checkpoints(tmp_path, capsys):
    from megatron_retro.cli import main

    # not a dist checkpoint
    assert main(["retro", "import-mcore", "--load", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "not a megatron dist checkpoint" in capsys.readouterr().err
    # a RETRO checkpoint of another shape: the config says 3 encoder layers
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {arch: retro, num_layers: 9, hidden_size: 32, num_attention_heads: 4, "
                   "ffn_hidden_size: 64, vocab_size: 128, make_vocab_size_divisible_by: 1, seq_length: 16, "
                   "activation: gelu, normalization: LayerNorm, position_embedding: learned_absolute, "
                   "untie_embeddings: false, add_bias_linear: true}\n"
                   "retro: {chunk_length: 4, num_neighbours: 2, neighbour_length: 8, encoder_num_layers: 3}\n")
    assert main(["retro", "import-mcore", "--load", FIXTURE, "--out", str(tmp_path / "o"), "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no tensor decoder.layers.5.cross_attention.encoder.layers.2." in err[0]
    # a tensor of another shape (ffn 48 instead of 64)
    bad.write_text(bad.read_text().replace("ffn_hidden_size: 64", "ffn_hidden_size: 48")
                   .replace("encoder_num_layers: 3", "encoder_num_layers: 2"))
    assert main(["retro", "import-mcore", "--load", FIXTURE, "--out", str(tmp_path / "o"), "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "linear_fc1.bias has shape (64,), the model needs (48,)" in err[0]
    # another dist-checkpoint backend
    other = tmp_path / "zarr"
    shutil.copytree(CKPT, other)
    (other / "metadata.json").write_text('{"sharded_backend": "zarr"}')
    assert main(["retro", "import-mcore", "--load", str(other), "--out", str(tmp_path / "o")]) == 2
    assert "only 'torch_dist'" in capsys.readouterr().err


def test_megatron_compat_config_refusals():
    from types import SimpleNamespace

    from megatron_retro.config import ConfigError, load_config
    from megatron_retro.errors import UserError
    from megatron_retro.models.retro.mcore_spec import build_mcore_retro_chunk

    base = ["model.arch=retro", "model.num_layers=9", "retro.megatron_compat=true"]
    with pytest.raises(ConfigError, match="retro.attention_gate: megatron-core 0.15 RETRO has no gate"):
        load_config(None, base + ["retro.attention_gate=true"])
    with pytest.raises(ConfigError, match="retro.retrieval_layers: megatron-core 0.15 RETRO places them"):
        load_config(None, base + ["retro.retrieval_layers=[2]"])
    cfg = load_config(None, base)
    for tf, match in ((SimpleNamespace(pipeline_model_parallel_size=2, sequence_parallel=False), "parallel.pp=2"),
                      (SimpleNamespace(pipeline_model_parallel_size=1, sequence_parallel=True), "sequence_parallel")):
        with pytest.raises(UserError, match=match):
            build_mcore_retro_chunk(cfg.model, cfg.retro, tf, 128, True, True)
