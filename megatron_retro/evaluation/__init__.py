"""Evaluation of generated answers: metrics (EM, F1, ROUGE-L) and result tables/plots."""
