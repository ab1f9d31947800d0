"""HF Llama round trip: a random LlamaConfig model (GQA, SwiGLU, untied) saved with save_pretrained
(sharded safetensors) -> `hf import` at TP2xPP2 -> our logits equal HF's -> `hf export` read at
TP1xPP1 -> LlamaForCausalLM.from_pretrained gives the original logits and weights."""
import os

import pytest
import torch

from hf_llama_cases import fixed_tokens, hf_logits, make_hf_llama, relative_error
from launch import torchrun

pytestmark = pytest.mark.distributed
pytest.importorskip("transformers", reason="the HF round trip needs `pip install -e .[hf]`")


def test_hf_llama_import_tp2pp2_export_roundtrip(tmp_path):
    from safetensors.torch import save_file

    from megatron_retro.models.hf_files import HFCheckpoint

    make_hf_llama(str(tmp_path / "hf"), max_shard_size="100KB")
    tokens = fixed_tokens()
    ref = hf_logits(str(tmp_path / "hf"), tokens)
    save_file({"tokens": tokens, "logits": ref}, str(tmp_path / "ref.safetensors"))

    rows = torchrun(os.path.join(os.path.dirname(__file__), "worker_hf_roundtrip.py"), 4, str(tmp_path))
    assert len(rows) == 1, rows  # one last-stage, TP-rank-0 reporter
    (row,) = rows
    assert row["padded_vocab"] == row["vocab"] == 320  # no padding: reshardable across TP
    assert row["differs_before_load"] > 1e-2  # the comparison can fail
    assert row["import_rel_err"] <= 1e-5
    assert os.path.isfile(tmp_path / "exported" / "model.safetensors.index.json")  # sharded export

    back = hf_logits(str(tmp_path / "exported"), tokens)
    assert relative_error(back, ref) <= 1e-5
    original, exported = HFCheckpoint(str(tmp_path / "hf")), HFCheckpoint(str(tmp_path / "exported"))
    assert set(exported.files) == set(original.files)
    for name in original.files:
        assert torch.equal(exported.get(name), original.get(name)), name
