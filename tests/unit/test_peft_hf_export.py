"""Our GPT base converted to HF LlamaForCausalLM plus our LoRA exported in HF peft's format,
loaded with `peft.PeftModel.from_pretrained`, gives our logits."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "distributed"))
from peft_cases import MODEL_OVERRIDES, SEQ, VOCAB  # noqa: E402

pytest.importorskip("peft", reason="HF export parity needs `pip install peft` (see BENCHMARKS.md / report)")


def test_exported_lora_matches_our_logits(tmp_path):
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    from megatron_retro.config import load_config
    from megatron_retro.models.global_params import init_by_global_name
    from megatron_retro.models.gpt import build_gpt_model
    from megatron_retro.parallel.initialize import initialize_parallel
    from megatron_retro.peft import apply_peft, make_peft_config, peft_state_dict
    from megatron_retro.peft.hf_export import export_hf, full_model_state

    cfg = load_config(None, MODEL_OVERRIDES + ["model.rotary_percent=1.0"])
    initialize_parallel(cfg.parallel, seed=3)
    chunks = build_gpt_model(cfg.model, cfg.parallel, vocab_size=VOCAB)
    lora = make_peft_config("lora", {"rank": 4, "alpha": 8.0})
    apply_peft(chunks, lora)
    init_by_global_name(chunks, seed=13, std=0.05)  # base and LoRA (B != 0)
    torch.manual_seed(0)
    tokens = torch.randint(0, VOCAB, (2, SEQ))
    chunks[0].eval()
    with torch.no_grad():
        ours = chunks[0](tokens, torch.arange(SEQ)[None].expand(2, -1), None)  # [b, s, V]

    out = export_hf(str(tmp_path), cfg.model, VOCAB, full_model_state(chunks), peft_state_dict(chunks), lora)
    assert out["lora_modules"] == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    hf = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(out["base"]), out["adapter"]).eval()
    with torch.no_grad():
        theirs = hf(input_ids=tokens).logits
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)
    with hf.disable_adapter(), torch.no_grad():
        assert not torch.allclose(hf(input_ids=tokens).logits, ours, atol=1e-3)  # the adapter matters
