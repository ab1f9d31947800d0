"""GGUF files (llama.cpp's format) as an HF-named, dequantised checkpoint: Gemma 3 only.

``GGUFCheckpoint(path)`` reads the header with the ``gguf`` package, refuses other architectures
and truncated files (one line naming the file), and offers what ``HFCheckpoint`` offers:
``config`` (a transformers ``Gemma3TextConfig``-shaped dict), ``get(hf_name)`` (fp32, read and
dequantised lazily, one tensor at a time) and ``check(expected_shapes)``.

Conventions undone here (llama.cpp's convert_hf_to_gguf applies them on the way in):
- GGUF lists dimensions fastest-first: a [V, d] HF weight is stored as shape (d, V).
- Gemma's RMSNorm multiplies by (1 + w); llama.cpp stores 1 + w, HF stores w, so 1 is
  subtracted from every ``*norm.weight`` (as transformers' GGUF loader does).
- Gemma 3's local-layer RoPE base (10 000), its 5:1 local:global pattern and the attention
  scale (1/sqrt(head_dim)) are not in the file: llama.cpp hard-codes them for ``gemma3``, so do we.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from megatron_retro.errors import UserError

SUPPORTED = ("gemma3",)
GEMMA3_LOCAL_ROPE_BASE = 10000.0
GEMMA3_SLIDING_PATTERN = 6  # every 6th layer attends globally

# GGUF tensor name (inside block i: "blk.{i}.") -> HF Gemma3ForCausalLM name (inside "model.layers.{i}.")
GEMMA3_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "post_attention_norm.weight": "post_attention_layernorm.weight",
    "ffn_norm.weight": "pre_feedforward_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
    "post_ffw_norm.weight": "post_feedforward_layernorm.weight",
}
GEMMA3_GLOBAL_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight"}


def _hf_name(gguf_name: str) -> str | None:
    if gguf_name in GEMMA3_GLOBAL_NAMES:
        return GEMMA3_GLOBAL_NAMES[gguf_name]
    if gguf_name.startswith("blk."):
        index, _, rest = gguf_name[4:].partition(".")
        if rest in GEMMA3_LAYER_NAMES:
            return f"model.layers.{index}.{GEMMA3_LAYER_NAMES[rest]}"
    return None


class GGUFCheckpoint:
    """One GGUF file: ``config`` (HF-style dict) and its tensors under HF names, dequantised to fp32."""

    def __init__(self, path: str):
        if not os.path.isfile(path):
            raise UserError(f"{path}: GGUF file not found")
        self.directory = self.path = path
        self.config_path = path
        try:
            from gguf import GGUFReader
        except ImportError:
            raise UserError(f"{path}: reading GGUF files needs the gguf package "
                            f"(pip install megatron_retro[hf])") from None
        try:
            self.reader = GGUFReader(path)
        except Exception as e:  # a cut header or tensor data: ValueError (reshape of the memmap) / IndexError
            raise UserError(f"{path}: not a readable GGUF file (truncated or corrupt: "
                            f"{type(e).__name__}: {str(e)[:100]})") from None
        self.arch = self._field("general.architecture")
        if self.arch not in SUPPORTED:
            raise UserError(f"{path}: general.architecture={self.arch!r}: only {', '.join(SUPPORTED)} "
                            f"GGUF files can be imported")
        self.tensors = {}
        for t in self.reader.tensors:
            name = _hf_name(t.name)
            if name is None:
                raise UserError(f"{path}: tensor {t.name} is not part of a Gemma 3 model")
            self.tensors[name] = t
        self.files = {name: path for name in self.tensors}
        self.config = self._gemma3_config()

    def _field(self, key: str, default=None):
        field = self.reader.fields.get(key)
        if field is None:
            if default is None:
                raise UserError(f"{self.path}: GGUF metadata has no {key}")
            return default
        return field.contents()

    def _gemma3_config(self) -> dict:
        a = self.arch
        layers = int(self._field(f"{a}.block_count"))
        head_dim = int(self._field(f"{a}.attention.key_length"))
        tokens = self.reader.fields.get("tokenizer.ggml.tokens")
        vocab = len(tokens.data) if tokens is not None else int(self.tensors["model.embed_tokens.weight"].shape[1])
        return {
            "model_type": "gemma3_text", "architectures": ["Gemma3ForCausalLM"],
            "vocab_size": vocab, "hidden_size": int(self._field(f"{a}.embedding_length")),
            "intermediate_size": int(self._field(f"{a}.feed_forward_length")),
            "num_hidden_layers": layers, "num_attention_heads": int(self._field(f"{a}.attention.head_count")),
            "num_key_value_heads": int(self._field(f"{a}.attention.head_count_kv")), "head_dim": head_dim,
            "rms_norm_eps": float(self._field(f"{a}.attention.layer_norm_rms_epsilon")),
            "max_position_embeddings": int(self._field(f"{a}.context_length")),
            "sliding_window": int(self._field(f"{a}.attention.sliding_window")),
            "layer_types": ["full_attention" if (i + 1) % GEMMA3_SLIDING_PATTERN == 0 else "sliding_attention"
                            for i in range(layers)],
            "rope_parameters": {
                "full_attention": {"rope_type": "default", "rope_theta": float(self._field(f"{a}.rope.freq_base"))},
                "sliding_attention": {"rope_type": "default", "rope_theta": GEMMA3_LOCAL_ROPE_BASE}},
            "query_pre_attn_scalar": head_dim, "hidden_activation": "gelu_pytorch_tanh",
            "tie_word_embeddings": True, "attention_bias": False,
            "attn_logit_softcapping": None, "final_logit_softcapping": None,
            "bos_token_id": int(self._field("tokenizer.ggml.bos_token_id", 2)),
            "eos_token_id": int(self._field("tokenizer.ggml.eos_token_id", 1)),
            "pad_token_id": int(self._field("tokenizer.ggml.padding_token_id", 0)),
        }

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(n) for n in reversed(self.tensors[name].shape))

    def get(self, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        from gguf import dequantize

        if name not in self.tensors:
            raise UserError(f"{self.path}: the GGUF file has no tensor for {name}")
        t = self.tensors[name]
        data = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(self.shape(name))
        if name.endswith("norm.weight"):
            data = data - 1.0  # llama.cpp stores Gemma's 1 + w
        return torch.from_numpy(np.ascontiguousarray(data)).to(dtype)

    def check(self, expected: dict[str, tuple[int, ...]], ignored_suffixes: tuple[str, ...] = ()) -> None:
        missing = sorted(set(expected) - set(self.tensors))
        if missing:
            raise UserError(f"{self.path}: tensor for {missing[0]} is missing ({len(missing)} in all)")
        for name, want in expected.items():
            if self.shape(name) != tuple(want):
                raise UserError(f"{self.path}: tensor for {name} has shape {self.shape(name)}, "
                                f"the metadata implies {tuple(want)}")
