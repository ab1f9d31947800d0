"""Models built from megatron-core layer specs: GPT (and RETRO, which fills the cross-attention slot)."""
