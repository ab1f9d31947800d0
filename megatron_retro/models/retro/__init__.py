"""RETRO on megatron-core: a GPT whose retrieval layers fill the ``cross_attention`` slot.

- ``spec.py``: decoder layer specs (GPT spec + chunked cross-attention on retrieval layers) and
  the neighbour encoder's block spec.
- ``cross_attention.py``: the decoder's chunked cross-attention (runs the encoder on the first
  retrieval layer) and the encoder's neighbour-to-chunk cross-attention.
- ``payload.py``: the inter-stage pipeline payload (hidden states + neighbour context).
- ``model.py``: ``RetroModel`` (a megatron ``GPTModel``); ``builder.py``: ``build_retro_model`` /
  ``build_retro_chunk`` (ours, or megatron-core 0.15's layout from ``mcore_spec.py``).
"""
from megatron_retro.models.retro.builder import build_retro_chunk, build_retro_model  # noqa: F401
from megatron_retro.models.retro.model import RetroModel  # noqa: F401
from megatron_retro.models.retro.payload import payload_length  # noqa: F401
