"""Triton kernels (fused LoRA linear, chunked cross-attention) with torch references and dispatch."""
