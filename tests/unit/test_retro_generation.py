"""Generation: greedy decoding with the KV cache equals decoding without it (GPT and RETRO);
RETRO retrieves once per completed chunk with that chunk as the query."""
import numpy as np
import pytest
import torch

from megatron_retro.config import load_config

M, K, R, VOCAB = 8, 2, 16, 200
COMMON = ["model.num_layers=4", "model.hidden_size=64", "model.num_attention_heads=4", "model.ffn_hidden_size=128",
          "model.seq_length=64", "model.rotary_percent=0.5", "model.num_query_groups=2"]
RETRO = ["model.arch=retro", f"retro.chunk_length={M}", f"retro.num_neighbours={K}", f"retro.neighbour_length={R}",
         "retro.retrieval_layers=[2,4]", "model.add_bias_linear=true", "retro.attention_gate=true"]


def _build(overrides):
    from megatron_retro.models.global_params import init_by_global_name
    from megatron_retro.models.gpt import build_gpt_model
    from megatron_retro.models.retro import build_retro_model
    from megatron_retro.parallel.initialize import initialize_parallel

    cfg = load_config(None, overrides)
    initialize_parallel(cfg.parallel, seed=3)
    if cfg.model.arch == "retro":
        chunks = build_retro_model(cfg.model, cfg.retro, cfg.parallel, vocab_size=VOCAB)
    else:
        chunks = build_gpt_model(cfg.model, cfg.parallel, vocab_size=VOCAB)
    init_by_global_name(chunks, seed=5, std=0.2)
    return chunks[0]


class RecordingRetriever:
    """Deterministic neighbours derived from the query chunk's tokens; records every query."""

    def __init__(self):
        self.queries = []

    def __call__(self, chunks):
        self.queries.append(chunks.copy())
        out = np.zeros((chunks.shape[0], 1, K, R), dtype=np.int64)
        for b in range(chunks.shape[0]):
            g = np.random.default_rng(int(chunks[b].sum()) * 7919 + int(chunks[b, 0, 0]))
            out[b, 0] = g.integers(0, VOCAB, (K, R))
        return out


def test_gpt_greedy_cache_equals_no_cache():
    from megatron_retro.evaluation.generation import generate

    model = _build(COMMON)
    prompts = torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(1))
    a = generate(model, prompts, 20, VOCAB, use_cache=True)
    b = generate(model, prompts, 20, VOCAB, use_cache=False)
    assert a.shape == (2, 25)
    assert torch.equal(a, b)


@pytest.mark.parametrize("prompt_len", [3, 13])
def test_retro_greedy_cache_equals_no_cache(prompt_len):
    from megatron_retro.evaluation.generation import generate

    model = _build(COMMON + RETRO)
    prompts = torch.randint(0, VOCAB, (2, prompt_len), generator=torch.Generator().manual_seed(2))
    cached, plain = RecordingRetriever(), RecordingRetriever()
    a = generate(model, prompts, 30, VOCAB, use_cache=True, retriever=cached)
    b = generate(model, prompts, 30, VOCAB, use_cache=False, retriever=plain)
    assert torch.equal(a, b)
    # one retrieval per completed chunk of the sequence fed to the model, query = that chunk
    fed = a.shape[1] - 1
    assert len(cached.queries) == fed // M
    for c, q in enumerate(cached.queries):
        assert np.array_equal(q[:, 0], a[:, c * M:(c + 1) * M].numpy())


def test_retro_neighbours_change_generation():
    """The retrieved neighbours matter (the test above would pass with CCA switched off)."""
    from megatron_retro.evaluation.generation import generate

    model = _build(COMMON + RETRO)
    prompts = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(3))
    a = generate(model, prompts, 12, VOCAB, retriever=RecordingRetriever())
    b = generate(model, prompts, 12, VOCAB, retriever=lambda c: np.zeros((c.shape[0], 1, K, R), dtype=np.int64))
    assert not torch.equal(a, b)


def test_sampling_is_seeded():
    from megatron_retro.evaluation.generation import generate

    model = _build(COMMON)
    prompts = torch.randint(0, VOCAB, (2, 4), generator=torch.Generator().manual_seed(4))
    a = generate(model, prompts, 10, VOCAB, greedy=False, temperature=1.5, top_k=20, seed=7)
    b = generate(model, prompts, 10, VOCAB, greedy=False, temperature=1.5, top_k=20, seed=7, use_cache=False)
    c = generate(model, prompts, 10, VOCAB, greedy=False, temperature=1.5, top_k=20, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("steps", [[5, 1, 1, 9, 1, 3, 12], [16, 1, 7, 8], [3, 3, 3, 3, 3, 3, 3, 3, 2]])
def test_cached_cross_attention_equals_the_whole_sequence(steps):
    """A retrieval layer's incremental path (new tokens at [offset, offset + s) against the chunks
    complete so far) gives the rows of its training path over the whole sequence, bias and gate
    included: one chunked cross-attention (kernels.chunked_cross_attention) serves both."""
    from megatron_retro.models.retro.cross_attention import RetroChunkedCrossAttention

    model = _build(COMMON + RETRO)
    cca = [mod for mod in model.modules() if isinstance(mod, RetroChunkedCrossAttention)][-1]
    cca.eval()
    with torch.no_grad():
        cca.gate.fill_(0.7)
    ns, bs, d = sum(steps), 2, 64
    l = -(-ns // M)
    g = torch.Generator().manual_seed(11)
    normed = torch.randn(ns, bs, d, generator=g)
    context = torch.randn(R, K * l * bs, d, generator=g)         # encoded neighbours, (k, l, bs) order
    with torch.no_grad():
        whole = cca.attend(normed, context)                      # [ns, bs, d]
        offset, rows = 0, []
        for s in steps:
            n = (offset + s) // M                                # chunks complete so far
            done = context.view(R, K, l, bs, d)[:, :, :n].reshape(R, K * n * bs, d)
            rows.append(cca._attend_positions(normed[offset:offset + s], done if n else None, offset, n))
            offset += s
    torch.testing.assert_close(torch.cat(rows), whole, rtol=1e-5, atol=1e-6)
    assert whole[M - 1:].abs().amax() > 0.1                      # the attending rows are not all zero
