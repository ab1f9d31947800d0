"""Prepare the bundled data directory: corpus, QA, tokenizer, indexed dataset, manifest.

``prepare_bundled_data(dir, num_entities, vocab_size, seed, split)`` is idempotent and atomic:
- everything is written into a temporary sibling directory, the manifest last, and the
  directory then replaces ``dir`` with two renames (old ``dir`` aside, new one in); a killed
  run leaves ``dir`` as it was, or absent (killed between the renames), never half-written
  with a manifest; leftovers of killed runs are deleted by the next call;
- ``manifest.json`` records the generator version, the parameters, file sizes and SHA-256
  hashes and corpus statistics; a later call with the same parameters whose files still match
  reuses them, any other call regenerates;
- an existing ``dir`` that is neither empty nor a bundled data directory (unknown files, no
  manifest) is never overwritten (UserError);
- concurrent calls (e.g. several ranks) serialise on ``<dir>.lock``.

Layout of ``dir``::

    manifest.json  documents.jsonl  facts.jsonl  qa/{train,valid,test}.jsonl
    tokenizer.model  text_document.{bin,idx}  cache/ (megatron index cache, made later)

The tokenizer is trained on the train documents only, so held-out text is unseen by it too.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, Optional

from megatron_retro.data.synthetic.encyclopedia import (GENERATOR_VERSION, READING_VERSION, SPLITS, document_split,
                                              generate, parse_split, write_documents,
                                              write_facts, write_qa)
from megatron_retro.data.stats import heldout_stream, retrieval_coverage, unigram_cross_entropy, unigram_entropy
from megatron_retro.errors import UserError
from megatron_retro.io_atomic import write_text_atomic

MANIFEST = "manifest.json"
PREFIX = "text_document"
# Files (and folders) a bundled data directory may hold; anything else means "not ours".
_KNOWN = {MANIFEST, "documents.jsonl", "facts.jsonl", "qa", "tokenizer.model",
          PREFIX + ".bin", PREFIX + ".idx", "cache"}


@dataclass
class BundledData:
    """Paths of a prepared bundled data directory (all absolute) and its manifest."""

    dir: str
    documents: str
    facts: str
    qa: Dict[str, str]          # "train" / "valid" / "test" -> qa/<split>.jsonl
    tokenizer: str
    prefix: str                 # megatron indexed dataset prefix (.bin/.idx)
    manifest: str
    params: Dict[str, object] = field(default_factory=dict)
    stats: Dict[str, object] = field(default_factory=dict)
    reused: bool = False

    @property
    def first_article(self) -> int:
        """Documents before this id are reading-practice documents (kept out of QA retrieval)."""
        return int(self.stats.get("reading_documents", 0))


def _paths(d: str, manifest: dict, reused: bool) -> BundledData:
    d = os.path.abspath(d)
    return BundledData(
        dir=d, documents=os.path.join(d, "documents.jsonl"),
        facts=os.path.join(d, "facts.jsonl"),
        qa={s: os.path.join(d, "qa", f"{s}.jsonl") for s in SPLITS},
        tokenizer=os.path.join(d, "tokenizer.model"), prefix=os.path.join(d, PREFIX),
        manifest=os.path.join(d, MANIFEST), params=dict(manifest.get("params", {})),
        stats=dict(manifest.get("stats", {})), reused=reused)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _params(num_entities: int, vocab_size: int, seed: int, split: str, reading: int = 0) -> dict:
    out = {"num_entities": int(num_entities), "vocab_size": int(vocab_size), "seed": int(seed),
           "split": ",".join(p.strip() for p in str(split).split(","))}
    if reading:  # absent when 0: data prepared before the option existed stays valid
        out["reading"] = int(reading)
        out["reading_version"] = READING_VERSION
    return out


def read_manifest(d: str) -> Optional[dict]:
    """The manifest of ``d``, or None if there is none; UserError if it is not valid JSON."""
    path = os.path.join(d, MANIFEST)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            m = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: invalid JSON ({e})") from None
    if not isinstance(m, dict) or not isinstance(m.get("files"), dict):
        raise UserError(f"{path}: not a bundled-data manifest (no 'files' table)")
    return m


def _files_match(d: str, manifest: dict) -> Optional[str]:
    """None if every file listed in the manifest exists with its hash, else the first problem."""
    for rel, info in manifest["files"].items():
        path = os.path.join(d, rel)
        if not os.path.isfile(path):
            return f"{path}: missing"
        size = os.path.getsize(path)
        if size != info.get("bytes"):
            return (f"{path}: {size} bytes, the manifest says {info.get('bytes')} "
                    f"(truncated or changed since it was written)")
        if _sha256(path) != info.get("sha256"):
            return f"{path}: changed since it was written (SHA-256 mismatch)"
    return None


def load_bundled_data(d: str, num_entities: Optional[int] = None,
                      vocab_size: Optional[int] = None, seed: Optional[int] = None,
                      split: Optional[str] = None, verify: bool = True) -> BundledData:
    """An already prepared ``d``; UserError if incomplete, corrupt, or prepared with other
    parameters than the ones given (None = do not check that parameter)."""
    manifest = read_manifest(d)
    if manifest is None:
        raise UserError(f"{d}: no {MANIFEST} (not prepared, or preparation was interrupted); "
                        f"run `megatron-retro data prepare --dir {d}`")
    want = {"num_entities": num_entities, "vocab_size": vocab_size, "seed": seed,
            "split": None if split is None else _params(10, 64, 0, split)["split"]}
    have = manifest.get("params", {})
    for key, value in want.items():
        if value is not None and have.get(key) != value:
            raise UserError(f"{os.path.join(d, MANIFEST)}: prepared with {key}={have.get(key)!r}, "
                            f"expected {value!r}; run `megatron-retro data prepare` again")
    if manifest.get("generator_version") != GENERATOR_VERSION:
        raise UserError(f"{os.path.join(d, MANIFEST)}: generator version "
                        f"{manifest.get('generator_version')!r}, this code writes "
                        f"{GENERATOR_VERSION}; prepare the data again")
    if verify:
        problem = _files_match(d, manifest)
        if problem:
            raise UserError(problem)
    return _paths(d, manifest, reused=True)


def _check_replaceable(d: str, manifest: Optional[dict] = None, params: Optional[dict] = None) -> None:
    if not os.path.exists(d):
        return
    if not os.path.isdir(d):
        raise UserError(f"{d}: exists and is not a directory")
    unknown = sorted(set(os.listdir(d)) - _KNOWN)
    if not unknown:
        return
    have = (manifest or {}).get("params") or {}
    diff = [k for k in sorted(params or {}) if k in have and have[k] != params[k]]
    if diff:  # a bundled directory, prepared with other parameters, that other outputs now depend on
        asked = ", ".join(f"{k}={params[k]!r}" for k in diff)
        built = ", ".join(f"{k}={have[k]!r}" for k in diff)
        raise UserError(f"{d}: prepared for {built}, this run asks for {asked} (data.*); not regenerating it "
                        f"because it also holds {unknown[0]!r} built from it: use the same parameters or "
                        f"another data.dir")
    raise UserError(f"{d}: not a bundled data directory (contains {unknown[0]!r}); "
                    f"refusing to overwrite it, choose another --dir")


def prepare_bundled_data(d: str, num_entities: int = 1500, vocab_size: int = 4096,
                         seed: int = 1234, split: str = "98,2,0",
                         progress: bool = True, reading: int = 0) -> BundledData:
    """Generate (or reuse) the bundled data in ``d``; see the module docstring."""
    parse_split(split)
    if num_entities < 10:
        raise UserError(f"num_entities={num_entities}: must be >= 10")
    if vocab_size < 64:
        raise UserError(f"vocab_size={vocab_size}: must be >= 64")
    if reading < 0:
        raise UserError(f"reading={reading}: must be >= 0")
    params = _params(num_entities, vocab_size, seed, split, reading)
    d = os.path.abspath(d)
    try:
        os.makedirs(os.path.dirname(d), exist_ok=True)
        lock = open(d + ".lock", "w")
    except OSError as e:
        raise UserError(f"{d}: cannot create the data directory there ({e.strerror})") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            manifest = read_manifest(d)
        except UserError:
            manifest = None  # an unreadable manifest is regenerated like a missing one
        if (manifest is not None and manifest.get("params") == params
                and manifest.get("generator_version") == GENERATOR_VERSION
                and _files_match(d, manifest) is None):
            return _paths(d, manifest, reused=True)
        _check_replaceable(d, manifest, params)
        _remove_leftovers(d)
        tmp = tempfile.mkdtemp(prefix=os.path.basename(d) + ".tmp-", dir=os.path.dirname(d))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the data dir is not
        try:
            manifest = _build(tmp, params, progress)
            _swap_in(tmp, d)
        finally:
            if os.path.exists(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
        return _paths(d, manifest, reused=False)


def _remove_leftovers(d: str) -> None:
    """Delete temporary siblings of ``d`` that killed runs left (we hold the lock)."""
    parent, base = os.path.dirname(d), os.path.basename(d)
    for name in os.listdir(parent):
        if name.startswith(base + ".tmp-") or name.startswith(base + ".old-"):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def _swap_in(tmp: str, d: str) -> None:
    """Replace ``d`` by the finished ``tmp`` (renames only; the old copy is deleted after)."""
    old = None
    if os.path.exists(d):
        old = tempfile.mkdtemp(prefix=os.path.basename(d) + ".old-", dir=os.path.dirname(d))
        os.rmdir(old)
        os.replace(d, old)
    os.replace(tmp, d)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def _build(tmp: str, params: dict, progress: bool) -> dict:
    import importlib

    from megatron_retro.data.indexed import write_indexed
    from megatron_retro.data.tokenizer import train_tokenizer

    importlib.import_module("megatron.core.datasets.indexed_dataset")  # slow first import: kept out of the timings
    times = {}
    t_start = t0 = time.time()
    enc = generate(params["num_entities"], params["seed"], params["split"], params.get("reading", 0))
    write_documents(enc.documents, os.path.join(tmp, "documents.jsonl"))
    write_facts(enc.facts, os.path.join(tmp, "facts.jsonl"))
    os.makedirs(os.path.join(tmp, "qa"))
    for s in SPLITS:
        write_qa([q for q in enc.qa if q.split == s], os.path.join(tmp, "qa", f"{s}.jsonl"))
    times["generate_s"] = round(time.time() - t0, 3)

    t0 = time.time()
    texts = [doc.text for doc in enc.documents]
    tok = train_tokenizer([doc.text for doc in enc.documents if doc.split == "train"],
                          os.path.join(tmp, "tokenizer.model"), params["vocab_size"])
    times["tokenizer_s"] = round(time.time() - t0, 3)

    t0 = time.time()
    n_docs, n_tokens = write_indexed(texts, tok, os.path.join(tmp, PREFIX), progress=progress)
    times["indexed_s"] = round(time.time() - t0, 3)

    ranges = document_split(n_docs, params["split"])
    split_tokens = {s: int(len(heldout_stream(os.path.join(tmp, PREFIX), params["split"], s)))
                    for s in SPLITS}
    train_ids = heldout_stream(os.path.join(tmp, PREFIX), params["split"], "train")
    valid_ids = heldout_stream(os.path.join(tmp, PREFIX), params["split"], "valid")
    stats = {
        "documents": n_docs, "tokens": n_tokens, "characters": sum(len(t) for t in texts),
        "reading_documents": enc.first_article,
        "entities": len(enc.entities), "facts": len(enc.facts),
        "documents_per_split": {s: e - b for s, (b, e) in zip(SPLITS, ranges)},
        "tokens_per_split": split_tokens,
        "qa_per_split": {s: sum(q.split == s for q in enc.qa) for s in SPLITS},
        **retrieval_coverage(enc),
        "unigram_entropy_train_nats": round(unigram_entropy(train_ids), 4),
        "unigram_entropy_valid_nats": round(unigram_entropy(valid_ids), 4),
        "unigram_cross_entropy_valid_nats": round(
            unigram_cross_entropy(train_ids, valid_ids, tok.vocab_size), 4),
        **times,
    }
    stats["total_s"] = round(time.time() - t_start, 3)  # + hashing below
    files = {}
    for root, _, names in os.walk(tmp):
        for name in sorted(names):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, tmp)
            files[rel] = {"bytes": os.path.getsize(path), "sha256": _sha256(path)}
    manifest = {"generator_version": GENERATOR_VERSION, "params": params,
                "files": dict(sorted(files.items())), "stats": stats}
    write_text_atomic(os.path.join(tmp, MANIFEST), json.dumps(manifest, indent=1))
    return manifest


def retokenized_prefix(data: BundledData) -> str:
    """The bundled documents tokenized with ``data.tokenizer`` (a model's own, e.g. an imported
    Gemma's), cached in ``<dir>/tok-<sha of the tokenizer files>/``; the bundled tokenizer's own
    corpus is returned as is. Documents start with bos when the tokenizer adds one."""
    from megatron_retro.data.indexed import write_indexed
    from megatron_retro.data.tokenizer import load_tokenizer

    tok = load_tokenizer(data.tokenizer)
    files = [tok.path] + [os.path.join(os.path.dirname(tok.path), n) for n in ("tokenizer_config.json",)]
    h = hashlib.sha256()
    for f in files:
        if os.path.isfile(f):
            h.update(_sha256(f).encode())
    own = os.path.join(data.dir, "tokenizer.model")
    if os.path.isfile(own) and _sha256(own) == _sha256(tok.path):
        return data.prefix
    out = os.path.join(data.dir, f"tok-{h.hexdigest()[:12]}")
    prefix = os.path.join(out, PREFIX)
    if not os.path.isfile(prefix + ".idx"):
        with open(data.documents, encoding="utf-8") as f:
            texts = [json.loads(line)["text"] for line in f if line.strip()]
        tmp = out + f".tmp-{os.getpid()}"
        os.makedirs(tmp, exist_ok=True)
        write_indexed(texts, tok, os.path.join(tmp, PREFIX), progress=False)
        try:
            os.replace(tmp, out)
        except OSError:  # another process finished first: keep its copy
            shutil.rmtree(tmp, ignore_errors=True)
    return prefix


def resolve_data(cfg) -> BundledData:
    """Prepare (source='bundled') or check (source='indexed') the data of a DataConfig-like
    object (fields source, dir, prefix, tokenizer, num_entities, vocab_size, seed, split)."""
    if cfg.source == "bundled":
        data = prepare_bundled_data(cfg.dir, cfg.num_entities, cfg.vocab_size, cfg.seed,
                                    cfg.split, progress=False, reading=getattr(cfg, "reading_docs", 0))
        if cfg.tokenizer:
            data.tokenizer = os.path.abspath(cfg.tokenizer)
            data.prefix = retokenized_prefix(data)
        return data
    from megatron_retro.data.indexed import open_indexed

    open_indexed(cfg.prefix)
    tok = cfg.tokenizer or os.path.join(cfg.dir, "tokenizer.model")
    if not os.path.isfile(tok):
        raise UserError(f"{tok}: tokenizer file not found (set data.tokenizer)")
    return BundledData(dir=os.path.abspath(cfg.dir), documents="", facts="", qa={},
                       tokenizer=os.path.abspath(tok), prefix=os.path.abspath(cfg.prefix),
                       manifest="", params={"split": cfg.split, "seed": cfg.seed})

