"""Long-document tasks: passages retrieved from the example's own document (chunked, top-k by
cosine similarity against a brute-force reference), QuALITY options in the prompt, and the
QuALITY choice accuracy on a worked example."""
import numpy as np
import pytest

from megatron_retro.data.qa_prompts import prompt_question
from megatron_retro.data.tasks import load_task
from megatron_retro.data.tasks.example import QAExample
from megatron_retro.evaluation.metrics import choose_option
from megatron_retro.retrieval.embedder import HashingEmbedder
from megatron_retro.retrieval.own_document import OwnDocumentRetriever, document_passages

PAD = 0


class WordTokenizer:
    """One id per distinct word (0 = pad), decode joins words: enough to test the chunking."""

    def __init__(self):
        self.ids, self.words = {}, [""]

    def encode(self, text):
        out = []
        for w in text.split():
            if w not in self.ids:
                self.ids[w] = len(self.words)
                self.words.append(w)
            out.append(self.ids[w])
        return out

    def decode(self, ids):
        return " ".join(self.words[i] for i in ids if i)


def test_document_passages_chunk_and_continuation():
    chunks, passages = document_passages(list(range(1, 11)), m=4, r=6, pad=PAD)
    assert chunks == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]
    assert passages.tolist() == [[1, 2, 3, 4, 5, 6], [5, 6, 7, 8, 9, 10], [9, 10, 0, 0, 0, 0]]


def test_top_k_of_own_document_matches_brute_force():
    examples = list(load_task("narrativeqa", "tests/fixtures/tasks/longdoc/narrativeqa.jsonl"))
    tok, emb = WordTokenizer(), HashingEmbedder(256)
    got, picked = OwnDocumentRetriever(tok, emb, k=2, chunk_length=8, passage_length=16, pad=PAD).retrieve(
        [e.question for e in examples], [e.context for e in examples])
    assert got.shape == (len(examples), 2, 16) and picked.shape == (len(examples), 2)
    for i, ex in enumerate(examples):
        ids = tok.encode(ex.context)
        chunk_text = [tok.decode(ids[j:j + 8]) for j in range(0, len(ids), 8)]
        scores = emb.embed(chunk_text) @ emb.embed([ex.question])[0]        # reference, per example
        ref = sorted(range(len(scores)), key=lambda j: (-scores[j], j))[:2]
        assert picked[i].tolist() == ref
        assert got[i, 0, :8].tolist() == ids[ref[0] * 8:ref[0] * 8 + 8]
        # the retrieved passages hold the answer (its words are rare in the filler text)
        assert ex.answers[0].split()[-1] in tok.decode(got[i].reshape(-1).tolist())


def test_short_document_fills_with_pad_passages():
    tok = WordTokenizer()
    got, picked = OwnDocumentRetriever(tok, HashingEmbedder(16), k=3, chunk_length=4, passage_length=4,
                                       pad=PAD).retrieve(["where is it"], ["it is here now ok"])
    assert picked.tolist() == [[0, 1, -1]] or picked.tolist() == [[1, 0, -1]]
    assert (got[0, 2] == PAD).all() and got[0, :2].any()


def test_quality_options_in_prompt_and_choice_accuracy_worked_example():
    (ex, *_) = load_task("quality", "tests/fixtures/tasks/longdoc/quality.dev")
    assert prompt_question(ex) == ("Where did Captain Rhee hide the star chart? Options: (A) In a boot "
                                   "(B) Inside a hollow loaf of bread (C) Under the engine (D) In the cook's bag")
    assert prompt_question(QAExample("1", "Who?", ["x"], "nq_open")) == "Who?"
    # worked example: options of one question, gold = (B); four predictions
    options = ["Knitting", "Reading a map", "Sleeping", "Cooking fish"]
    preds = {"reading the map": 1,          # F1 vs "reading a map" = 1.0 (articles dropped)
             "(C)": 2,                      # a bare letter names the option
             "she was knitting": 0,         # F1 1/1.5 -> 0.67 vs Knitting, 0 elsewhere
             "pirates": -1}                 # no shared word: no choice
    assert {p: choose_option(p, options) for p in preds} == preds
    gold = 1
    accuracy = np.mean([choose_option(p, options) == gold for p in preds])
    assert accuracy == pytest.approx(0.25)
    assert choose_option("cooking or reading", options) == 1   # tie 0.4 / 0.4: the first option


def test_retro_reads_own_document_passages_as_neighbours():
    """The same passages GPT reads inline are every chunk's neighbours in a RETRO sample."""
    from megatron_retro.data.qa_prompts import QALayout
    from megatron_retro.training.qa_data import QASamples, QASplit

    examples = list(load_task("qmsum", "tests/fixtures/tasks/longdoc/qmsum.jsonl"))
    tok = WordTokenizer()
    passages, picked = OwnDocumentRetriever(tok, HashingEmbedder(64), k=2, chunk_length=8, passage_length=16,
                                            pad=PAD).retrieve([e.question for e in examples],
                                                              [e.context for e in examples])
    split = QASplit(examples, passages, picked, None)
    retro = QALayout(arch="retro", seq_length=0, answer_tokens=8, eod=1, pad=PAD, chunk_length=8)
    gpt = QALayout(arch="gpt", seq_length=64, answer_tokens=8, eod=1, pad=PAD, chunk_length=8)
    for i, item in enumerate(QASamples(retro, tok, split).items):
        assert item["neighbours"].shape == (2, 2, 16)                      # [l, k, r]
        assert (item["neighbours"] == passages[i]).all()
    first = QASamples(gpt, tok, split).items[0]["tokens"]
    body = [int(t) for t in passages[0].reshape(-1) if t != PAD]
    assert set(body[:8]) <= set(first.tolist())                           # GPT reads them inline
