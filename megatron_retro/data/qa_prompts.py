"""QA samples for GPT and RETRO from a question, its answer and its retrieved passages.

Notation: k passages of r tokens (a retrieved chunk and its continuation, pad-filled), v
virtual-token positions reserved for P-tuning / prompt tuning (0 otherwise), A answer budget
(answer tokens + end-of-text), m RETRO chunk length.

GPT (sequence S = model.seq_length, prompt P = S - A):
    [eod ... eod][passage 1][passage 2]...[Question: q Answer:] | answer eod | eod ...
    left-filled with eod to exactly P tokens, so every prompt ends at position P - 1 and a
    batch of prompts needs no padding mask.  The passages are cut from the end of the
    concatenation (the lowest-ranked first) when passages + question exceed P - v: the context
    budget.  RETRO (sequence S = m·(1 + ceil(A/m))):
    [eod ... eod][Question: q Answer:] | answer eod | eod ...
    the prompt fills the first chunk exactly, so every answer token is predicted from positions
    m-1 .. 2m-2, which attend to the neighbours of chunk 0 (RETRO's causal shift); every chunk
    gets the same k passages as neighbours [l, k, r], the same retrieved set GPT reads.

Loss only on the answer tokens and their end-of-text.  ``Truncation`` counts what was cut.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Sequence

import numpy as np

PROMPT_TEMPLATE = "Question: {question} Answer:"


@dataclass
class Truncation:
    """What the context budget cut, over the samples built so far."""

    samples: int = 0
    passages_cut: int = 0          # samples whose passages lost tokens
    passage_tokens_dropped: int = 0
    questions_cut: int = 0         # samples whose question lost tokens (left end)
    answers_cut: int = 0           # samples whose answer did not fit the answer budget

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class QALayout:
    """Where prompt and answer go: shared by fine-tuning samples and generation prompts."""

    arch: str                     # "gpt" | "retro"
    seq_length: int               # S
    answer_tokens: int            # A
    eod: int
    pad: int
    virtual_tokens: int = 0       # v
    chunk_length: int = 64        # m (RETRO)
    bos: int = -1                 # prepended to every prompt's text when >= 0 (models trained with bos)
    truncation: Truncation = field(default_factory=Truncation)

    def __post_init__(self) -> None:
        from megatron_retro.errors import UserError

        if self.arch == "retro":
            m = self.chunk_length
            self.seq_length = m * (1 + -(-self.answer_tokens // m))
        if self.prompt_length - self.virtual_tokens < 8:
            raise UserError(f"QA prompt of {self.prompt_length} tokens leaves no room for a question after "
                            f"{self.virtual_tokens} virtual tokens (raise model.seq_length or lower "
                            f"qa.max_answer_tokens)")

    @property
    def prompt_length(self) -> int:
        """P: tokens before the first answer token."""
        return self.chunk_length if self.arch == "retro" else self.seq_length - self.answer_tokens

    # ------------------------------------------------------------------------------------------
    def prompt(self, question_ids: Sequence[int], passages: np.ndarray) -> np.ndarray:
        """int64 [P]: the left-filled prompt; ``passages`` int64 [k, r] (GPT reads them inline)."""
        room = self.prompt_length - self.virtual_tokens - (self.bos >= 0)
        question = list(question_ids)
        if len(question) > room:
            self.truncation.questions_cut += 1
            question = question[len(question) - room:]
        body = question
        if self.arch == "gpt":
            context = [int(t) for t in np.asarray(passages).reshape(-1) if t != self.pad]
            budget = room - len(question)
            if len(context) > budget:
                self.truncation.passages_cut += 1
                self.truncation.passage_tokens_dropped += len(context) - budget
                context = context[:budget]
            body = context + question
        if self.bos >= 0:
            body = [self.bos] + body
        out = np.full(self.prompt_length, self.eod, dtype=np.int64)
        out[self.prompt_length - len(body):] = body
        return out

    def sample(self, question_ids: Sequence[int], answer_ids: Sequence[int], passages: np.ndarray) -> dict:
        """One fine-tuning item: tokens, labels, loss_mask, position_ids [S] (+ neighbours [l, k, r])."""
        self.truncation.samples += 1
        prompt = self.prompt(question_ids, passages)
        answer = list(answer_ids) + [self.eod]
        if len(answer) > self.answer_tokens:
            self.truncation.answers_cut += 1
            answer = answer[:self.answer_tokens]
        s, p = self.seq_length, self.prompt_length
        x = np.full(s + 1, self.eod, dtype=np.int64)
        x[:p] = prompt
        x[p:p + len(answer)] = answer
        loss_mask = np.zeros(s, dtype=np.float32)
        loss_mask[p - 1:p - 1 + len(answer)] = 1.0          # positions predicting the answer
        item = {"tokens": x[:s], "labels": x[1:], "loss_mask": loss_mask,
                "position_ids": np.arange(s, dtype=np.int64)}
        if self.arch == "retro":
            item["neighbours"] = self.neighbours(passages)
        return item

    def neighbours(self, passages: np.ndarray) -> np.ndarray:
        """int64 [l, k, r]: the question's passages as the neighbours of every chunk."""
        passages = np.asarray(passages, dtype=np.int64)
        l = self.seq_length // self.chunk_length
        return np.ascontiguousarray(np.broadcast_to(passages, (l,) + passages.shape))


OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def prompt_question(example) -> str:
    """The question as the prompt shows it: multiple-choice options (QuALITY) follow it as
    ``Options: (A) ... (B) ...``, so the model can answer with the text of one of them."""
    options = getattr(example, "options", None)
    if not options:
        return example.question
    return example.question + " Options: " + " ".join(f"({OPTION_LETTERS[i]}) {o}" for i, o in enumerate(options))


def encode_question(tokenizer, question: str) -> List[int]:
    return tokenizer.encode(PROMPT_TEMPLATE.format(question=" ".join(question.split())))


def encode_answer(tokenizer, answer: str) -> List[int]:
    return tokenizer.encode(" ".join(answer.split()))
