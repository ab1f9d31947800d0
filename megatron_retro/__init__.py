"""megatron_retro: parameter-efficient fine-tuning of GPT and RETRO with retrieval on megatron-core."""

__version__ = "0.1.0"
