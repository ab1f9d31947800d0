"""Models built from megatron-core layer specs: GPT (and RETRO, which fills the cross-attention slot).

Public API (import the submodules; this package imports nothing on its own):

* ``gpt.build_gpt_model(model, parallel, vocab_size, ...)`` -> this rank's model chunks
* ``retro`` (package): ``build_retro_model``, ``RetroModel``, ``payload_length``
* specs: ``gpt_local_spec.get_gpt_layer_local_spec``, ``gpt_spec.get_gpt_layer_spec`` /
  ``get_gpt_block_spec`` / ``resolve_layer_backend``, ``gemma3_spec`` (Gemma 3 layers)
* ``transformer_config.make_transformer_config``, ``rope``, ``norm.SequenceParallelNorm``,
  ``sdpa_attention.SDPAttention``, ``output_loss`` / ``fused_loss`` (fused output layer + loss)
* checkpoints of other formats: ``hf_llama`` / ``hf_gemma3`` (HF tensor rules), ``hf_files``,
  ``gguf_reader``
"""
