"""Tokenizers: one interface over SentencePiece models, HF ``tokenizers`` files and the
tokenizer embedded in a GGUF, with the special ids each model has.

Every tokenizer has ``encode`` / ``encode_batch`` / ``decode`` / ``piece``, ``vocab_size`` and
the special ids ``pad unk bos eos eod`` (``eod``, appended to every document, is ``eos``; a model
without a pad token pads with ``eos``) plus ``add_bos`` (prepend ``bos`` to a sequence, as
Gemma and Llama were trained) and ``megatron`` (the object megatron-core's GPTDataset needs).
``load_tokenizer(path)`` picks the kind from the path: ``*.json`` or a directory holding
``tokenizer.json`` -> :class:`HFTokenizer`, ``*.gguf`` -> :func:`gguf_tokenizer` (converted once
to ``tokenizer.json`` beside it), anything else -> SentencePiece (:class:`Tokenizer` when it has
the bundled ids, :class:`SentencePieceTokenizer` otherwise).

The bundled tokenizer (trained offline on the bundled corpus) has fixed special ids: pad=0 ``<pad>``, unk=1 ``<unk>``, bos=2 ``<s>``, eos=3 ``</s>``;
``eod`` (the end-of-document token appended to every document of the indexed dataset) is eos.
The model is BPE with byte fallback (any UTF-8 text encodes; no ``<unk>`` in practice), digits
split one per token, identity normalisation and whitespace kept as is, so that
``decode(encode(text)) == text`` exactly, newlines included.

``Tokenizer.megatron`` gives the megatron-core tokenizer (``megatron.core.tokenizers`` GPT
tokenizer over the same model file) that ``GPTDatasetConfig(tokenizer=...)`` needs.
"""
from __future__ import annotations

import io
import os
from typing import Iterable, List, Optional, Sequence

from megatron_retro.errors import UserError

PAD, UNK, BOS, EOS = 0, 1, 2, 3


def train_tokenizer(texts: Iterable[str], model_path: str, vocab_size: int = 4096,
                    model_type: str = "bpe") -> "Tokenizer":
    """Train on ``texts`` (one document each), write ``model_path``, return the tokenizer.

    Deterministic: the same texts and settings give the same model bytes.
    """
    import sentencepiece as spm

    if vocab_size < 64:
        raise UserError(f"vocab_size={vocab_size}: must be >= 64")
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size,
            model_type=model_type, byte_fallback=True, character_coverage=1.0,
            pad_id=PAD, unk_id=UNK, bos_id=BOS, eos_id=EOS,
            pad_piece="<pad>", unk_piece="<unk>", bos_piece="<s>", eos_piece="</s>",
            user_defined_symbols=["\n"], split_digits=True,
            normalization_rule_name="identity", remove_extra_whitespaces=False,
            max_sentence_length=1 << 22, num_threads=1, minloglevel=2)
    except RuntimeError as e:
        msg = str(e).split("] ")[-1].strip()
        raise UserError(f"tokenizer training failed for vocab_size={vocab_size}: {msg}") from None
    from megatron_retro.io_atomic import write_bytes_atomic

    write_bytes_atomic(model_path, model.getvalue())
    return Tokenizer(model_path)


def _load_sentencepiece(path: str):
    """(absolute path, loaded SentencePieceProcessor); UserError naming a missing or bad file."""
    import sentencepiece as spm

    if not os.path.isfile(path):
        raise UserError(f"{path}: tokenizer file not found")
    sp = spm.SentencePieceProcessor()
    try:
        sp.Load(os.path.abspath(path))
    except (RuntimeError, OSError) as e:
        raise UserError(f"{path}: not a valid SentencePiece model "
                        f"({str(e).splitlines()[0][:120]})") from None
    return os.path.abspath(path), sp


class Tokenizer:
    """Encode/decode with the bundled SentencePiece model; ids as documented above."""

    def __init__(self, path: str) -> None:
        self.path, self.sp = _load_sentencepiece(path)
        for name, want, got in (("pad", PAD, self.sp.pad_id()), ("unk", UNK, self.sp.unk_id()),
                                ("bos", BOS, self.sp.bos_id()), ("eos", EOS, self.sp.eos_id())):
            if got != want:
                raise UserError(f"{path}: {name} id is {got}, expected {want} "
                                f"(not a megatron_retro tokenizer)")
        self._megatron = None

    add_bos = False  # the bundled corpus is trained without a bos token

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    pad = property(lambda self: PAD)
    unk = property(lambda self: UNK)
    bos = property(lambda self: BOS)
    eos = property(lambda self: EOS)
    eod = property(lambda self: EOS)

    def encode(self, text: str) -> List[int]:
        return self.sp.encode(text)

    def encode_batch(self, texts: Sequence[str]) -> List[List[int]]:
        return self.sp.encode(list(texts))

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode([int(i) for i in ids])

    def piece(self, token_id: int) -> str:
        return self.sp.id_to_piece(int(token_id))

    @property
    def megatron(self):
        """megatron-core's GPT tokenizer over the same model (for GPTDatasetConfig)."""
        if self._megatron is None:
            from megatron.core.tokenizers import MegatronTokenizer

            self._megatron = MegatronTokenizer.from_pretrained(
                self.path, metadata_path={"library": "sentencepiece", "model_type": "gpt"})
        return self._megatron


def load_tokenizer(path: str):
    """The tokenizer stored at ``path`` (any kind, see the module docstring); UserError if missing
    or not a valid model."""
    return load_any_tokenizer(path)


# ------------------------------------------------------------------------------------------
# Any model's tokenizer

class _MegatronAdapter:
    """What megatron-core's GPTDataset reads from a tokenizer (eod, pad, vocab_size)."""

    def __init__(self, tok) -> None:
        self.eod, self.pad, self.vocab_size = tok.eod, tok.pad, tok.vocab_size
        self.unique_identifiers = {"class": type(tok).__name__, "path": tok.path}

    def tokenize(self, text: str) -> List[int]:
        raise NotImplementedError("GPTDataset reads pre-tokenised indexed data")


class SentencePieceTokenizer(Tokenizer):
    """Any SentencePiece model, with the special ids it declares (absent pad -> eos)."""

    def __init__(self, path: str, add_bos: bool = False) -> None:  # noqa: D107 (no strict id check)
        self.path, self.sp = _load_sentencepiece(path)
        if self.sp.eos_id() < 0:
            raise UserError(f"{path}: the SentencePiece model has no eos token (needed as end of document)")
        self.add_bos = add_bos
        self._megatron = None

    pad = property(lambda self: self.sp.pad_id() if self.sp.pad_id() >= 0 else self.sp.eos_id())
    unk = property(lambda self: self.sp.unk_id())
    bos = property(lambda self: self.sp.bos_id())
    eos = property(lambda self: self.sp.eos_id())
    eod = property(lambda self: self.sp.eos_id())

    @property
    def megatron(self):
        if self._megatron is None:
            self._megatron = _MegatronAdapter(self)
        return self._megatron


HF_META = "tokenizer_config.json"


class HFTokenizer:
    """An HF ``tokenizers`` model (``tokenizer.json``); special ids from ``tokenizer_config.json``
    beside it (``bos_token`` / ``eos_token`` / ``pad_token`` / ``unk_token``, ``add_bos_token``)."""

    def __init__(self, path: str) -> None:
        import json

        from tokenizers import Tokenizer as _HF

        if os.path.isdir(path):
            path = os.path.join(path, "tokenizer.json")
        if not os.path.isfile(path):
            raise UserError(f"{path}: tokenizer file not found")
        self.path = os.path.abspath(path)
        try:
            self.tk = _HF.from_file(self.path)
        except Exception as e:  # tokenizers raises a bare Exception on bad JSON / schema
            raise UserError(f"{path}: not a valid HF tokenizers file ({str(e).splitlines()[0][:120]})") from None
        meta_path = os.path.join(os.path.dirname(self.path), HF_META)
        meta = {}
        if os.path.isfile(meta_path):
            with open(meta_path, encoding="utf-8") as f:
                meta = json.load(f)
        ids = {}
        for name in ("bos", "eos", "pad", "unk"):
            token = meta.get(f"{name}_token")
            if isinstance(token, dict):
                token = token.get("content")
            ids[name] = self.tk.token_to_id(token) if isinstance(token, str) else None
        if ids["eos"] is None:
            raise UserError(f"{meta_path}: names no eos_token of {path} (needed as end of document)")
        self._ids = ids
        if "add_bos_token" in meta:
            add_bos = bool(meta["add_bos_token"])
        else:  # the file's post-processor decides (Gemma's prepends <bos>)
            add_bos = self.tk.encode("a", add_special_tokens=True).ids[:1] == [ids["bos"]]
        self.add_bos = add_bos and ids["bos"] is not None
        self._megatron = None

    @property
    def vocab_size(self) -> int:
        return self.tk.get_vocab_size(with_added_tokens=True)

    pad = property(lambda self: self._ids["pad"] if self._ids["pad"] is not None else self._ids["eos"])
    unk = property(lambda self: self._ids["unk"] if self._ids["unk"] is not None else self.pad)
    bos = property(lambda self: self._ids["bos"] if self._ids["bos"] is not None else -1)
    eos = property(lambda self: self._ids["eos"])
    eod = property(lambda self: self._ids["eos"])

    def encode(self, text: str) -> List[int]:
        return self.tk.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> List[List[int]]:
        return [e.ids for e in self.tk.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tk.decode([int(i) for i in ids], skip_special_tokens=False)

    def piece(self, token_id: int) -> str:
        return self.tk.id_to_token(int(token_id))

    @property
    def megatron(self):
        if self._megatron is None:
            self._megatron = _MegatronAdapter(self)
        return self._megatron


def gguf_tokenizer(path: str, out_dir: Optional[str] = None) -> HFTokenizer:
    """The tokenizer embedded in a GGUF file, converted (transformers' GGUF converter) to
    ``tokenizer.json`` + ``tokenizer_config.json`` in ``out_dir`` (default: beside the file)."""
    out_dir = out_dir or os.path.splitext(os.path.abspath(path))[0] + ".tokenizer"
    if not os.path.isfile(os.path.join(out_dir, "tokenizer.json")):
        save_gguf_tokenizer(path, out_dir)
    return HFTokenizer(out_dir)


def save_gguf_tokenizer(path: str, out_dir: str) -> None:
    """Write the GGUF's tokenizer as ``tokenizer.json`` (+ config) in ``out_dir`` (needs the `hf` extra)."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: GGUF file not found")
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise UserError(f"{path}: reading a GGUF tokenizer needs transformers (pip install megatron_retro[hf])") from None
    try:
        tok = AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(path)), gguf_file=os.path.basename(path))
    except Exception as e:
        raise UserError(f"{path}: cannot read its tokenizer ({str(e).splitlines()[0][:160]})") from None
    from megatron_retro.io_atomic import atomic_dir

    with atomic_dir(out_dir) as tmp:
        tok.save_pretrained(tmp)


def load_any_tokenizer(path: str):
    """The tokenizer at ``path`` (SentencePiece, tokenizer.json / its directory, or a GGUF)."""
    if os.path.isdir(path) or path.endswith(".json"):
        return HFTokenizer(path)
    if path.endswith(".gguf"):
        return gguf_tokenizer(path)
    try:
        return Tokenizer(path)
    except UserError as e:
        if "not a megatron_retro tokenizer" not in str(e):
            raise
        return SentencePieceTokenizer(path)


def check_vocab(tokenizer, model_vocab: int, checkpoint: str) -> None:
    """A tokenizer whose ids do not fit the checkpoint's vocabulary: one line naming both."""
    if tokenizer.vocab_size != model_vocab:
        raise UserError(f"tokenizer {tokenizer.path} has {tokenizer.vocab_size} tokens but checkpoint "
                        f"{checkpoint} was built for a vocabulary of {model_vocab}: use the model's own tokenizer")
