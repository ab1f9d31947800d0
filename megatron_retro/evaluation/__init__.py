"""Evaluation: generation (GPT, and RETRO with retrieval at chunk boundaries), metrics (EM, F1, ROUGE-L), result tables and plots."""
