"""Training: pretraining / fine-tuning loops on megatron-core schedules, optimizer, checkpoints."""
