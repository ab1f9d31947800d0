"""SentencePiece tokenizer trained offline on the bundled corpus, and its wrapper.

Special ids are fixed: pad=0 ``<pad>``, unk=1 ``<unk>``, bos=2 ``<s>``, eos=3 ``</s>``;
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
from typing import Iterable, List, Sequence

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
    tmp = model_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(model.getvalue())
    os.replace(tmp, model_path)
    return Tokenizer(model_path)


class Tokenizer:
    """Encode/decode with the bundled SentencePiece model; ids as documented above."""

    def __init__(self, path: str) -> None:
        import sentencepiece as spm

        if not os.path.isfile(path):
            raise UserError(f"{path}: tokenizer file not found")
        self.path = os.path.abspath(path)
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.Load(self.path)
        except (RuntimeError, OSError) as e:
            raise UserError(f"{path}: not a valid SentencePiece model "
                            f"({str(e).splitlines()[0][:120]})") from None
        for name, want, got in (("pad", PAD, self.sp.pad_id()), ("unk", UNK, self.sp.unk_id()),
                                ("bos", BOS, self.sp.bos_id()), ("eos", EOS, self.sp.eos_id())):
            if got != want:
                raise UserError(f"{path}: {name} id is {got}, expected {want} "
                                f"(not a megatron_retro tokenizer)")
        self._megatron = None

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


def load_tokenizer(path: str) -> Tokenizer:
    """The tokenizer stored at ``path``; UserError if missing or not a valid model."""
    return Tokenizer(path)
