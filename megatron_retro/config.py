"""Typed run configuration: dataclasses validated once, loaded from YAML with file:line errors.

A run config is a YAML file with one mapping per section (``model``, ``parallel``, ``data``,
``train``, ``checkpoint``) plus ``out_dir``.  ``inherit: other.yaml`` (relative to the file)
merges another file underneath.  Every field carries a help string; every constraint is checked
once, in ``__post_init__``, and a broken one raises :class:`ConfigError` naming the field, the
value and the constraint (and the YAML file and line when the value came from a file).

This module is a leaf: it imports only the standard library and PyYAML.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import yaml


class ConfigError(ValueError):
    """A configuration value is missing, malformed or violates a constraint."""


def note(message: str) -> None:
    """Tell the user that a value was adjusted to fit another one (e.g. warm-up clamped to a short
    run): one ``megatron-retro: note:`` line on stderr, from rank 0 only."""
    import sys

    if os.environ.get("RANK", "0") == "0":
        print(f"megatron-retro: note: {message}", file=sys.stderr)


def cfg(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with a help string (listed by ``megatron-retro config --fields``)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass
class ModelConfig:
    """Architecture of a GPT (or RETRO) decoder built from megatron-core layer specs."""

    arch: Literal["gpt", "retro"] = cfg("gpt", "model family: 'gpt' or 'retro'")
    num_layers: int = cfg(2, "number of decoder transformer layers")
    hidden_size: int = cfg(128, "model width d")
    num_attention_heads: int = cfg(4, "attention heads; must divide hidden_size")
    num_query_groups: Optional[int] = cfg(None, "key/value head groups for GQA (None = MHA)")
    ffn_hidden_size: Optional[int] = cfg(None, "MLP inner width (None = 4*d, or 8/3*d rounded for SwiGLU)")
    kv_channels: Optional[int] = cfg(None, "per-head width (None = hidden_size / heads)")
    vocab_size: Optional[int] = cfg(None, "vocabulary size (None = taken from the tokenizer)")
    make_vocab_size_divisible_by: int = cfg(128, "pad the embedding table to a multiple of this times TP")
    seq_length: int = cfg(256, "training sequence length ns")
    activation: Literal["swiglu", "gelu", "squared_relu", "geglu_tanh"] = cfg(
        "swiglu", "MLP activation ('geglu_tanh' = gated tanh-GELU, Gemma's)")
    normalization: Literal["RMSNorm", "LayerNorm"] = cfg("RMSNorm", "normalisation layer type")
    norm_epsilon: float = cfg(1e-5, "epsilon of the normalisation layers")
    position_embedding: Literal["rope", "learned_absolute", "none"] = cfg("rope", "position encoding")
    rotary_percent: float = cfg(1.0, "fraction of each head's channels that get rotary embeddings")
    rotary_base: int = cfg(10000, "rotary embedding base")
    untie_embeddings: bool = cfg(True, "separate input embedding and output projection weights")
    add_bias_linear: bool = cfg(False, "biases in the linear layers")
    hidden_dropout: float = cfg(0.0, "dropout on residual branches")
    attention_dropout: float = cfg(0.0, "dropout on attention probabilities")
    init_method_std: float = cfg(0.02, "std of the normal weight initialisation")
    final_norm: bool = cfg(
        True, "normalise the last layer's output before the output layer; false = no final norm (the tiny "
              "models learn to copy from their context several times sooner without it: BENCHMARKS 'Study')")
    attention_backend: Literal["auto", "sdpa", "unfused", "te"] = cfg(
        "auto", "core attention: 'auto' = Transformer Engine if importable else torch SDPA")
    family: Literal["gpt", "gemma3"] = cfg(
        "gpt", "layer layout: 'gemma3' adds q/k RMSNorm, post-attention/post-MLP norms, (1+w) RMSNorm "
               "weights and sqrt(d)-scaled embeddings (models/gemma3_spec.py)")
    sliding_window: Optional[int] = cfg(None, "local attention: tokens a query sees, itself included (None = off)")
    global_attn_every: Optional[int] = cfg(
        None, "with sliding_window: every Nth layer (N, 2N, ...) attends globally, the others locally")
    rotary_base_local: Optional[int] = cfg(None, "RoPE base of the local (sliding-window) layers (None = rotary_base)")
    softmax_scale: Optional[float] = cfg(None, "attention score scale (None = 1/sqrt(head width))")

    recompute_modules: list[str] = cfg(
        [], "selective recompute: parts of every layer whose activations are recomputed in backward "
            "instead of kept, any of 'mlp', 'core_attn' (empty = none; train.recompute=true recomputes "
            "whole layers instead; megatron's 'layernorm' needs Transformer Engine)")
    fused_output_loss: bool = cfg(
        True, "training loss through the chunked output-layer + cross-entropy op (no full logits; logits "
              "only where the loss mask is set); false = megatron's output layer + vocab-parallel CE")

    def __post_init__(self) -> None:
        _require(self.sliding_window is None or self.sliding_window >= 1,
                 f"model.sliding_window={self.sliding_window}: must be >= 1")
        _require(self.global_attn_every is None or (self.global_attn_every >= 1 and self.sliding_window),
                 f"model.global_attn_every={self.global_attn_every}: must be >= 1 and needs model.sliding_window")
        _require(self.family != "gemma3" or self.normalization == "RMSNorm",
                 f"model.family=gemma3: needs model.normalization=RMSNorm (got {self.normalization})")
        _require(self.num_layers >= 1, f"model.num_layers={self.num_layers}: must be >= 1")
        _require(self.hidden_size >= 1, f"model.hidden_size={self.hidden_size}: must be >= 1")
        _require(self.num_attention_heads >= 1,
                 f"model.num_attention_heads={self.num_attention_heads}: must be >= 1")
        _require(self.hidden_size % self.num_attention_heads == 0 or self.kv_channels is not None,
                 f"model.hidden_size={self.hidden_size}: must be divisible by "
                 f"model.num_attention_heads={self.num_attention_heads} (or set model.kv_channels)")
        if self.num_query_groups is not None:
            _require(self.num_query_groups >= 1
                     and self.num_attention_heads % self.num_query_groups == 0,
                     f"model.num_query_groups={self.num_query_groups}: must divide "
                     f"model.num_attention_heads={self.num_attention_heads}")
        _require(self.seq_length >= 1, f"model.seq_length={self.seq_length}: must be >= 1")
        _require(0.0 < self.rotary_percent <= 1.0,
                 f"model.rotary_percent={self.rotary_percent}: must be in (0, 1]")
        for name in ("hidden_dropout", "attention_dropout"):
            value = getattr(self, name)
            _require(0.0 <= value < 1.0, f"model.{name}={value}: must be in [0, 1)")
        _require(self.vocab_size is None or self.vocab_size >= 2,
                 f"model.vocab_size={self.vocab_size}: must be >= 2")
        _require(self.init_method_std > 0, f"model.init_method_std={self.init_method_std}: must be > 0")
        bad = [m for m in self.recompute_modules if m not in ("mlp", "core_attn")]
        _require(not bad, f"model.recompute_modules={self.recompute_modules}: {bad} not in 'mlp', 'core_attn'")

    @property
    def head_dim(self) -> int:
        return self.kv_channels or self.hidden_size // self.num_attention_heads

    @property
    def gated_mlp(self) -> bool:
        """fc1 holds two ffn_size halves (gate and up): SwiGLU and Gemma's tanh-GeGLU."""
        return self.activation in ("swiglu", "geglu_tanh")

    @property
    def ffn_size(self) -> int:
        """MLP inner width; NVIDIA's SwiGLU GPTs use 8/3*d rounded up to a multiple of 64."""
        if self.ffn_hidden_size is not None:
            return self.ffn_hidden_size
        if self.activation == "swiglu":
            return int(math.ceil(8 * self.hidden_size / 3 / 64) * 64)
        return 4 * self.hidden_size


@dataclass
class ParallelConfig:
    """How the model is split; data parallel size is whatever the world size leaves."""

    tp: int = cfg(1, "tensor model parallel size")
    pp: int = cfg(1, "pipeline model parallel size")
    vpp: Optional[int] = cfg(None, "virtual pipeline chunks per stage (interleaved 1F1B); None = off")
    sequence_parallel: bool = cfg(False, "shard norm/dropout activations along the sequence (needs tp > 1)")
    backend: Literal["auto", "nccl", "gloo"] = cfg("auto", "collective backend: auto = nccl with CUDA else gloo")

    def __post_init__(self) -> None:
        for name in ("tp", "pp"):
            _require(getattr(self, name) >= 1, f"parallel.{name}={getattr(self, name)}: must be >= 1")
        if self.vpp is not None:
            _require(self.vpp >= 2 and self.pp >= 2,
                     f"parallel.vpp={self.vpp}: needs vpp >= 2 and parallel.pp >= 2 (pp={self.pp})")
        _require(not self.sequence_parallel or self.tp > 1,
                 f"parallel.sequence_parallel=true: needs parallel.tp > 1 (tp={self.tp})")

    def check_world(self, world_size: int) -> int:
        """Return the data-parallel size for ``world_size`` ranks, or raise naming the mismatch."""
        mp = self.tp * self.pp
        _require(world_size % mp == 0,
                 f"world size {world_size} is not divisible by parallel.tp*parallel.pp={self.tp}*{self.pp}={mp}")
        return world_size // mp


@dataclass
class DataConfig:
    """Where the training text and tokenizer come from."""

    source: Literal["bundled", "indexed"] = cfg(
        "bundled", "'bundled' = generate the synthetic encyclopedia; 'indexed' = use data.prefix")
    dir: str = cfg("data/bundled", "directory of the prepared data (corpus, tokenizer, indexed dataset)")
    prefix: Optional[str] = cfg(None, "megatron indexed-dataset prefix (.bin/.idx) for source=indexed")
    tokenizer: Optional[str] = cfg(None, "tokenizer model file (None = <data.dir>/tokenizer.model)")
    num_entities: int = cfg(1500, "entities in the generated encyclopedia (bundled source)")
    vocab_size: int = cfg(4096, "vocabulary of the tokenizer trained on the bundled corpus")
    seed: int = cfg(1234, "seed of the corpus generator and the sample shuffling")
    split: str = cfg("98,2,0", "train,valid,test weights of the document split")
    reading_docs: int = cfg(0, "bundled source: up to this many reading-practice documents (facts of an entity of a "
                               "separate fictional world, then questions on them answered from that passage) "
                               "added to the training text; 0 = none")

    def __post_init__(self) -> None:
        _require(self.source != "indexed" or bool(self.prefix),
                 "data.prefix: required when data.source=indexed")
        _require(self.num_entities >= 10, f"data.num_entities={self.num_entities}: must be >= 10")
        _require(self.vocab_size >= 64, f"data.vocab_size={self.vocab_size}: must be >= 64")
        _require(self.reading_docs >= 0, f"data.reading_docs={self.reading_docs}: must be >= 0")
        parts = self.split.split(",")
        ok = len(parts) == 3 and all(p.strip().replace(".", "", 1).isdigit() for p in parts)
        _require(ok and sum(float(p) for p in parts) > 0,
                 f"data.split={self.split!r}: must be three non-negative weights 'train,valid,test'")


@dataclass
class TrainConfig:
    """Optimisation schedule."""

    steps: int = cfg(100, "optimizer steps to run (total, including resumed ones)")
    micro_batch_size: int = cfg(4, "sequences per micro-batch per data-parallel rank")
    global_batch_size: Optional[int] = cfg(None, "sequences per step over all DP ranks (None = micro*dp)")
    lr: float = cfg(1e-3, "peak learning rate")
    min_lr: float = cfg(1e-4, "final learning rate of the decay")
    lr_warmup_steps: int = cfg(10, "linear warm-up steps")
    lr_decay_style: Literal["cosine", "linear", "constant"] = cfg("cosine", "decay after warm-up")
    weight_decay: float = cfg(0.01, "AdamW weight decay")
    adam_beta1: float = cfg(0.9, "Adam beta1")
    adam_beta2: float = cfg(0.95, "Adam beta2")
    adam_eps: float = cfg(1e-8, "Adam epsilon")
    clip_grad: float = cfg(1.0, "global gradient-norm clip (0 = off)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = cfg("auto", "auto = bf16 on CUDA, fp32 on CPU")
    seed: int = cfg(1234, "seed of weight init and dropout")
    log_interval: int = cfg(1, "steps between progress-bar / metrics updates")
    eval_interval: int = cfg(50, "steps between held-out evaluations (0 = only at the end)")
    eval_iters: int = cfg(4, "micro-batches per held-out evaluation")
    recompute: bool = cfg(False, "recompute activations of every layer in backward (each layer keeps only "
                                 "its input; selective recompute: model.recompute_modules)")

    def __post_init__(self) -> None:
        for name in ("steps", "micro_batch_size", "log_interval", "eval_iters"):
            _require(getattr(self, name) >= 1, f"train.{name}={getattr(self, name)}: must be >= 1")
        _require(self.global_batch_size is None or self.global_batch_size >= 1,
                 f"train.global_batch_size={self.global_batch_size}: must be >= 1")
        _require(self.lr > 0, f"train.lr={self.lr}: must be > 0")
        _require(0 <= self.min_lr <= self.lr, f"train.min_lr={self.min_lr}: must be in [0, train.lr={self.lr}]")
        _require(self.lr_warmup_steps >= 0, f"train.lr_warmup_steps={self.lr_warmup_steps}: must be >= 0")
        if self.lr_warmup_steps >= self.steps > 0 and self.lr_warmup_steps > 0:
            clamped = self.steps - 1
            note(f"train.lr_warmup_steps={self.lr_warmup_steps} clamped to {clamped} "
                 f"(train.steps={self.steps} is shorter than the warm-up)")
            self.lr_warmup_steps = clamped
        _require(self.clip_grad >= 0, f"train.clip_grad={self.clip_grad}: must be >= 0")
        _require(self.eval_interval >= 0, f"train.eval_interval={self.eval_interval}: must be >= 0")

    def num_microbatches(self, dp: int) -> int:
        """Gradient-accumulation steps for ``dp`` data-parallel ranks, or raise naming the mismatch."""
        gbs = self.global_batch_size or self.micro_batch_size * dp
        per_step = self.micro_batch_size * dp
        _require(gbs % per_step == 0,
                 f"train.global_batch_size={gbs}: must be divisible by train.micro_batch_size*dp="
                 f"{self.micro_batch_size}*{dp}={per_step}")
        return gbs // per_step


@dataclass
class CheckpointConfig:
    """Sharded, atomically written, resumable checkpoints."""

    dir: Optional[str] = cfg(None, "checkpoint directory (None = <out_dir>/checkpoints)")
    save_interval: int = cfg(0, "steps between checkpoints (0 = only at the end)")
    keep_last: int = cfg(2, "complete checkpoints kept; older ones are deleted")
    resume: bool = cfg(True, "continue from the newest complete checkpoint in checkpoint.dir")
    load: Optional[str] = cfg(None, "initialise weights from this checkpoint (e.g. a pretrained base)")

    def __post_init__(self) -> None:
        _require(self.save_interval >= 0, f"checkpoint.save_interval={self.save_interval}: must be >= 0")
        _require(self.keep_last >= 1, f"checkpoint.keep_last={self.keep_last}: must be >= 1")


@dataclass
class RetroConfig:
    """RETRO: chunked cross-attention to retrieved neighbours (read when model.arch=retro)."""

    chunk_length: int = cfg(64, "retro.chunk_length m: tokens per chunk (seq_length must be a multiple)")
    num_neighbours: int = cfg(2, "retro.num_neighbours k: neighbours retrieved per chunk")
    neighbour_length: int = cfg(128, "retro.neighbour_length r: tokens per neighbour (chunk + continuation)")
    retrieval_layers: Optional[list[int]] = cfg(
        None, "1-based decoder layers with chunked cross-attention (None = every 3rd from 6, from 9 "
              "when num_layers > 15); the first one also runs the encoder")
    encoder_num_layers: int = cfg(2, "layers of the bidirectional neighbour encoder")
    encoder_hidden_dropout: float = cfg(0.0, "dropout on the encoder's residual branches")
    encoder_attention_dropout: float = cfg(0.0, "dropout on the encoder's attention probabilities")
    attention_gate: bool = cfg(False, "scale each chunked cross-attention output by tanh(g), g a learned "
                                      "scalar starting at 0 (a RETRO from a GPT starts equal to the GPT)")
    retrieval_dir: Optional[str] = cfg(None, "retrieval index + chunk store directory for pretraining "
                                             "(None = <data.dir>/retro_index, built on first use)")
    embedder: str = cfg("minilm", "retrieval embedder: 'minilm' (all-MiniLM-L6-v2) or 'hash:<dim>'")
    exclude_same_doc: bool = cfg(True, "drop neighbours from the sample's own document (RETRO pretraining rule)")
    megatron_compat: bool = cfg(False, "the architecture of megatron-core 0.15's RetroModel (for its checkpoints, "
                                       "see `retro import-mcore` and docs/megatron-retro-compat.md); TP only")

    def __post_init__(self) -> None:
        for name in ("chunk_length", "num_neighbours", "neighbour_length", "encoder_num_layers"):
            _require(getattr(self, name) >= 1, f"retro.{name}={getattr(self, name)}: must be >= 1")
        _require(self.neighbour_length >= self.chunk_length,
                 f"retro.neighbour_length={self.neighbour_length}: must be >= retro.chunk_length="
                 f"{self.chunk_length} (a neighbour is its chunk plus a continuation)")
        for name in ("encoder_hidden_dropout", "encoder_attention_dropout"):
            value = getattr(self, name)
            _require(0.0 <= value < 1.0, f"retro.{name}={value}: must be in [0, 1)")
        if self.retrieval_layers is not None:
            _require(len(self.retrieval_layers) >= 1, "retro.retrieval_layers: must name at least one layer")
            _require(len(set(self.retrieval_layers)) == len(self.retrieval_layers),
                     f"retro.retrieval_layers={self.retrieval_layers}: duplicates")
        if self.megatron_compat:
            _require(not self.attention_gate, "retro.attention_gate: megatron-core 0.15 RETRO has no gate; "
                                              "turn it off with retro.megatron_compat=true")
            _require(self.retrieval_layers is None, "retro.retrieval_layers: megatron-core 0.15 RETRO places them "
                                                    "itself (every 3rd from 6, or 9); leave unset with megatron_compat")

    def layer_numbers(self, num_layers: int) -> list[int]:
        """1-based decoder layers holding chunked cross-attention, ascending."""
        if self.retrieval_layers is not None:
            return sorted(self.retrieval_layers)
        return list(range(6 if num_layers <= 15 else 9, num_layers + 1, 3))


@dataclass
class RetrievalConfig:
    """Where a run's neighbours / passages come from: the one ``retrieval:`` section.

    The database itself (chunk store + index) is the run's: ``retro.retrieval_dir`` (RETRO
    pretraining) or the QA task corpus's (``qa.retrieval_dir``); the service must serve that
    index (launch/retrieval_service.py writes the endpoints file).  ``store``, ``index_dir``,
    ``embedder``, ``k`` and ``exclude_same_doc`` are filled from the run when left unset
    (``megatron_retro.retrieval.config.open_neighbour_source`` checks what each mode needs).
    """

    mode: Literal["local", "service", "precomputed"] = cfg(
        "local", "local: search the index in this process; service: query the shard servers listed in "
                 "retrieval.endpoints; precomputed: read neighbours written by `megatron-retro index precompute`")
    endpoints: Optional[str] = cfg(None, "endpoints.json of the running retrieval service (mode=service)")
    timeout: float = cfg(30.0, "deadline of one search through the service, seconds")
    token_file: Optional[str] = cfg(None, "auth token file of the service (else env MEGATRON_RETRO_RETRIEVAL_TOKEN)")
    prefetch_depth: int = cfg(2, "training steps whose neighbours are fetched ahead, in background threads")
    precomputed: Optional[str] = cfg(None, "directory of precomputed neighbours (mode=precomputed; "
                                           "None = <retrieval db>/precomputed)")
    store: Optional[str] = cfg(None, "chunk store directory (None = the run's retrieval database)")
    index_dir: Optional[str] = cfg(None, "index directory (None = the run's retrieval database)")
    embedder: Optional[str] = cfg(None, "query embedder (None = retro.embedder / qa.embedder)")
    k: Optional[int] = cfg(None, "neighbours per chunk (None = retro.num_neighbours / qa.num_passages)")
    exclude_same_doc: Optional[bool] = cfg(None, "drop neighbours from the query's document "
                                                 "(None = retro.exclude_same_doc)")
    nprobe: Optional[int] = cfg(None, "local mode: IVF lists probed (None = as built)")

    def __post_init__(self) -> None:
        _require(self.mode in ("local", "service", "precomputed"),
                 f"retrieval.mode={self.mode!r}: must be one of local, service, precomputed")
        _require(self.mode != "service" or bool(self.endpoints),
                 "retrieval.endpoints: required when retrieval.mode=service")
        _require(self.timeout > 0, f"retrieval.timeout={self.timeout}: must be > 0")
        _require(self.prefetch_depth >= 1, f"retrieval.prefetch_depth={self.prefetch_depth}: must be >= 1")
        _require(self.k is None or self.k >= 1, f"retrieval.k={self.k}: must be >= 1")


RetrievalSection = RetrievalConfig  # the name used before the two retrieval configs became one


@dataclass
class QAConfig:
    """Question answering with retrieval (fine-tuning and evaluation): task, passages, prompt layout.

    GPT reads ``[retrieved passages] Question: q Answer:`` (left-padded to seq_length minus the
    answer budget); RETRO reads ``Question: q Answer:`` in its first chunk and the same passages
    as the neighbours of every chunk.
    """

    task: str = cfg("bundled", "QA task (see `megatron-retro tasks list`)")
    path: Optional[str] = cfg(None, "task file or directory (None = <data.dir>/qa, the bundled benchmark)")
    train_split: str = cfg("train", "split used for fine-tuning")
    eval_split: str = cfg("test", "split scored by `evaluate`")
    train_examples: int = cfg(0, "questions used for fine-tuning (0 = all)")
    eval_examples: int = cfg(0, "questions scored (0 = all)")
    num_passages: int = cfg(2, "k retrieved passages per question (RETRO: equals retro.num_neighbours)")
    passage_length: int = cfg(128, "tokens per passage, the retrieved chunk and its continuation "
                                   "(RETRO: equals retro.neighbour_length)")
    chunk_length: int = cfg(64, "tokens per retrievable chunk of the task corpus")
    max_answer_tokens: int = cfg(16, "answer tokens trained on and generated, end-of-text token included")
    seq_length: Optional[int] = cfg(None, "GPT QA sample length: passages + question + answer (None = "
                                          "model.seq_length); RETRO's is one chunk of question plus the answer")
    embedder: str = cfg("minilm", "embedder of questions and corpus chunks: 'minilm' or 'hash:<dim>'")
    retrieval_dir: Optional[str] = cfg(None, "chunk store + index of the task corpus (None = built under "
                                             "<data.dir> for the bundled task)")
    eval_batch_size: int = cfg(32, "questions generated at once on each data-parallel rank")
    refusal_fraction: float = cfg(0.0, "share of fine-tuning questions turned into negative-rejection samples: "
                                       "k distractor passages, answer 'not in the passages' (bundled task; 0 = off)")

    passages: str = cfg("auto", "where the k passages come from: 'document' = the top-k chunks of the "
                                "example's own document (NarrativeQA, QASPER, QuALITY, QMSum), 'index' = the "
                                "task corpus's retrieval index, 'auto' = document when the task has one")

    def __post_init__(self) -> None:
        _require(self.passages in ("auto", "document", "index"),
                 f"qa.passages={self.passages!r}: auto, document or index")
        for name in ("num_passages", "passage_length", "chunk_length", "max_answer_tokens", "eval_batch_size"):
            _require(getattr(self, name) >= 1, f"qa.{name}={getattr(self, name)}: must be >= 1")
        _require(self.seq_length is None or self.seq_length >= 16, f"qa.seq_length={self.seq_length}: must be >= 16")
        for name in ("train_examples", "eval_examples"):
            _require(getattr(self, name) >= 0, f"qa.{name}={getattr(self, name)}: must be >= 0 (0 = all)")
        _require(0.0 <= self.refusal_fraction < 1.0,
                 f"qa.refusal_fraction={self.refusal_fraction}: must be in [0, 1)")
        _require(self.passage_length >= self.chunk_length,
                 f"qa.passage_length={self.passage_length}: must be >= qa.chunk_length={self.chunk_length}")


@dataclass
class RunConfig:
    """Everything one run needs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    retro: RetroConfig = field(default_factory=RetroConfig)
    qa: QAConfig = field(default_factory=QAConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    out_dir: str = cfg("runs/default", "directory for metrics, plots and (by default) checkpoints")

    def __post_init__(self) -> None:
        _require(self.parallel.pp <= self.model.num_layers,
                 f"parallel.pp={self.parallel.pp}: must be <= model.num_layers={self.model.num_layers}")
        chunks = self.parallel.pp * (self.parallel.vpp or 1)
        _require(self.model.num_layers % chunks == 0,
                 f"model.num_layers={self.model.num_layers}: must be divisible by "
                 f"parallel.pp*vpp={chunks}")
        _require(self.model.num_attention_heads % self.parallel.tp == 0,
                 f"model.num_attention_heads={self.model.num_attention_heads}: must be divisible "
                 f"by parallel.tp={self.parallel.tp}")
        groups = self.model.num_query_groups or self.model.num_attention_heads
        # fewer KV heads than TP ranks (Gemma 3: one): megatron-core splits the fused QKV rows over
        # the ranks and all-gathers its output, so each KV head's gradient is summed exactly
        _require(groups % self.parallel.tp == 0 or self.parallel.tp % groups == 0,
                 f"model.num_query_groups={groups}: must be a multiple or a divisor of parallel.tp={self.parallel.tp}")
        _require(self.model.ffn_size % self.parallel.tp == 0,
                 f"model.ffn_hidden_size={self.model.ffn_size}: must be divisible by parallel.tp={self.parallel.tp}")
        if self.parallel.sequence_parallel:
            _require(self.model.seq_length % self.parallel.tp == 0,
                     f"model.seq_length={self.model.seq_length}: must be divisible by parallel.tp="
                     f"{self.parallel.tp} with sequence parallelism")
        if self.model.arch == "retro":
            self._check_retro()

    def _check_retro(self) -> None:
        retro, model, tp = self.retro, self.model, self.parallel.tp
        _require(model.seq_length % retro.chunk_length == 0,
                 f"model.seq_length={model.seq_length}: must be a multiple of retro.chunk_length={retro.chunk_length}")
        layers = retro.layer_numbers(model.num_layers)
        _require(len(layers) >= 1, f"retro.retrieval_layers: none with model.num_layers={model.num_layers} "
                                   f"(the default starts at layer 6); set retro.retrieval_layers")
        _require(all(1 <= n <= model.num_layers for n in layers),
                 f"retro.retrieval_layers={layers}: must be in [1, model.num_layers={model.num_layers}]")
        if self.parallel.sequence_parallel:
            for name in ("chunk_length", "neighbour_length"):
                _require(getattr(retro, name) % tp == 0,
                         f"retro.{name}={getattr(retro, name)}: must be divisible by parallel.tp={tp} "
                         f"with sequence parallelism")

    @property
    def checkpoint_dir(self) -> str:
        return self.checkpoint.dir or os.path.join(self.out_dir, "checkpoints")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# Loading: YAML -> nested dicts (with line marks) -> type-checked dataclasses.

_Marks = dict[tuple[str, ...], str]  # key path -> "file:line"


def _collect_marks(node: yaml.Node, path: tuple[str, ...], source: str, marks: _Marks) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key_path = path + (str(key_node.value),)
            marks[key_path] = f"{source}:{key_node.start_mark.line + 1}"
            _collect_marks(value_node, key_path, source, marks)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            marks[path + (str(i),)] = f"{source}:{item.start_mark.line + 1}"
            _collect_marks(item, path + (str(i),), source, marks)


def _read_yaml(path: str, marks: _Marks) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: config file not found")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    data = load_yaml_text(text, path)
    node = yaml.compose(text)  # parses: load_yaml_text succeeded (used for the file:line marks)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: the top level must be a mapping of sections, got {type(data).__name__}")
    own: _Marks = {}
    if node is not None:
        _collect_marks(node, (), path, own)
    base_name = data.pop("inherit", None)
    if base_name is not None:
        base_path = os.path.join(os.path.dirname(path), str(base_name))
        base = _read_yaml(base_path, marks)
        data = _deep_merge(base, data)
    marks.update(own)
    return data


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (plain YAML
    keeps the last value silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key: SafeLoader reports it itself
                continue
            if first != key_node.start_mark.line + 1:
                raise _DuplicateKey(key, first, key_node.start_mark.line + 1)
        return super().construct_mapping(node, deep)


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, first: int, line: int):
        super().__init__(f"duplicate key {key!r}")
        self.key, self.first, self.line = key, first, line


def load_yaml_text(text: str, path: str) -> Any:
    """Parse YAML ``text`` read from ``path``: safe types only, duplicate keys rejected, errors as one
    ConfigError line ``path:line: ...``."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except _DuplicateKey as e:
        raise ConfigError(f"{path}:{e.line}: duplicate key {e.key!r} (first given on line {e.first}; "
                          "YAML would silently keep only the last value)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: malformed YAML: {problem}") from None


def load_yaml_file(path: str, what: str = "YAML file") -> Any:
    """Read and parse a YAML file strictly (see :func:`load_yaml_text`); a missing file is one line."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except (IsADirectoryError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read {what}: {e.__class__.__name__}") from None
    return load_yaml_text(text, path)


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


_FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, allowed))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
            return float(value)  # YAML 1.1 reads 3e-4 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {type(value).__name__} {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        return value  # built by _build
    raise ConfigError(f"{where}: unsupported field type {_type_name(tp)}")


def _build(cls: type, data: dict, path: tuple[str, ...], marks: _Marks) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        key_path = path + (str(key),)
        dotted = ".".join(key_path)
        where = f"{marks[key_path]}: {dotted}" if key_path in marks else dotted
        if key not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"{where}: unknown key (known keys{' of ' + '.'.join(path) if path else ''}: {known})")
        tp = hints[key]
        value = _coerce(value, tp, where)
        if dataclasses.is_dataclass(tp):
            value = _build(tp, value, key_path, marks)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except ConfigError as e:
        # Point at the line of the field the message starts with, when it came from a file.
        message = str(e)
        key_path = tuple(message.split("=", 1)[0].split(":", 1)[0].strip().split("."))
        if key_path in marks and not message.startswith(marks[key_path]):
            raise ConfigError(f"{marks[key_path]}: {message}") from None
        raise


def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """``section.key=value`` -> (("section", "key"), parsed YAML scalar)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: expected section.key=value")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return tuple(key.split(".")), value


def apply_overrides(data: dict, overrides: list[str], marks: Optional[_Marks] = None) -> dict:
    for text in overrides:
        key_path, value = parse_override(text)
        node = data
        for part in key_path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part} is not a section")
            node = child
        node[key_path[-1]] = value
        if marks is not None:
            marks[key_path] = f"override '{text}'"
    return data


def load_config(path: Optional[str] = None, overrides: Optional[list[str]] = None) -> RunConfig:
    """Read ``path`` (optional), apply ``section.key=value`` overrides, validate, return a RunConfig."""
    marks: _Marks = {}
    data = _read_yaml(path, marks) if path else {}
    apply_overrides(data, list(overrides or []), marks)
    return config_from_dict(data, marks)


def config_from_dict(data: dict, marks: Optional[_Marks] = None) -> RunConfig:
    """Build and validate a RunConfig from nested dicts (``marks`` maps key paths to file:line)."""
    return _build(RunConfig, data, (), marks or {})


def load_dataclass(cls: type, path: str, overrides: Optional[list[str]] = None) -> Any:
    """Read a YAML file (with ``inherit:`` and overrides) into the dataclass ``cls``, errors at file:line.

    Fields typed ``list[Any]`` stay plain lists; ``build_item`` builds their entries."""
    marks: _Marks = {}
    data = _read_yaml(path, marks)
    apply_overrides(data, list(overrides or []), marks)
    obj = _build(cls, data, (), marks)
    obj._marks = marks
    return obj


def build_item(cls: type, data: Any, path: tuple[str, ...], marks: _Marks) -> Any:
    """One entry of a list-of-mappings field, built and validated like a section."""
    where = marks.get(path, ".".join(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {'.'.join(path)}: expected a mapping, got {type(data).__name__} {data!r}")
    try:
        return _build(cls, data, path, marks)
    except ConfigError as e:
        message = str(e)
        if path in marks and not re.match(r"^\S+:\d+: ", message):
            name = message.split("=", 1)[0].split(":", 1)[0].strip().split(".")[-1]
            raise ConfigError(f"{marks.get(path + (name,), marks[path])}: {message}") from None
        raise


def field_help(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, str, Any]]:
    """(dotted name, help, default) of every field, for ``megatron-retro config --fields``."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(field_help(tp, f"{prefix}{f.name}."))
        else:
            default = f.default if f.default is not dataclasses.MISSING else None
            rows.append((f"{prefix}{f.name}", f.metadata.get("help", ""), default))
    return rows
