"""Evaluation: generation with (RETRO) or without retrieval; task metrics live beside it."""
