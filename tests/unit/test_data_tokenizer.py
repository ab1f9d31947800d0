"""SentencePiece tokenizer: exact round trip, fixed special ids, megatron adapter, bad files."""
import hashlib

import pytest

from megatron_retro.data.synthetic.encyclopedia import generate
from megatron_retro.data.tokenizer import BOS, EOS, PAD, UNK, load_tokenizer, train_tokenizer
from megatron_retro.errors import UserError


@pytest.fixture(scope="module")
def texts():
    return [d.text for d in generate(60, seed=3).documents]


@pytest.fixture(scope="module")
def tok(texts, tmp_path_factory):
    return train_tokenizer(texts, str(tmp_path_factory.mktemp("tok") / "t.model"), 512)


def test_round_trip_is_exact(tok, texts):
    for t in texts:
        assert tok.decode(tok.encode(t)) == t
    odd = "Ünïcode ☯ 日本語  two  spaces\n\nand\ttab 0123456789 émigré\n"
    assert tok.decode(tok.encode(odd)) == odd
    assert UNK not in tok.encode(odd)  # byte fallback, never <unk>
    assert tok.encode_batch(texts[:3]) == [tok.encode(t) for t in texts[:3]]


def test_special_ids_and_vocab(tok):
    assert (tok.pad, tok.unk, tok.bos, tok.eos, tok.eod) == (PAD, UNK, BOS, EOS, EOS)
    assert [tok.piece(i) for i in (PAD, UNK, BOS, EOS)] == ["<pad>", "<unk>", "<s>", "</s>"]
    assert tok.vocab_size == 512
    ids = tok.encode("In 1743, 56 people")
    assert all(len(tok.piece(i).strip("▁")) <= 1 for i in ids if tok.piece(i).strip("▁").isdigit())


def test_training_is_deterministic(texts, tmp_path):
    a = train_tokenizer(texts, str(tmp_path / "a.model"), 512)
    b = train_tokenizer(texts, str(tmp_path / "b.model"), 512)
    digest = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()  # noqa: E731
    assert digest(a.path) == digest(b.path)


def test_megatron_tokenizer_agrees(tok, texts):
    m = tok.megatron
    assert m.vocab_size == tok.vocab_size
    assert (m.eod, m.pad, m.bos) == (tok.eod, tok.pad, tok.bos)
    assert m.tokenize(texts[0]) == tok.encode(texts[0])
    assert m.detokenize(tok.encode(texts[1])) == texts[1]


def test_load_errors(tmp_path, tok):
    with pytest.raises(UserError, match=r"nope.model: tokenizer file not found"):
        load_tokenizer(str(tmp_path / "nope.model"))
    bad = tmp_path / "corrupt.model"
    bad.write_bytes(open(tok.path, "rb").read()[:100])
    with pytest.raises(UserError, match=r"corrupt.model: not a valid SentencePiece model"):
        load_tokenizer(str(bad))
    garbage = tmp_path / "garbage.model"
    garbage.write_text("this is not a model\n")
    with pytest.raises(UserError, match=r"garbage.model: not a valid SentencePiece model"):
        load_tokenizer(str(garbage))
    assert load_tokenizer(tok.path).encode("abc") == tok.encode("abc")


def test_vocab_too_large_or_small(texts, tmp_path):
    with pytest.raises(UserError, match=r"vocab_size=100000: .*Vocabulary size too high"):
        train_tokenizer(texts[:5], str(tmp_path / "x.model"), 100000)
    with pytest.raises(UserError, match=r"vocab_size=10: must be >= 64"):
        train_tokenizer(texts[:5], str(tmp_path / "y.model"), 10)
    assert not (tmp_path / "x.model").exists()
