"""`index build` / `index eval` and the multi-rank build (2 gloo processes on loopback)."""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from megatron_retro.retrieval import commands
from megatron_retro.retrieval.build import build_index
from megatron_retro.retrieval.sharding import load_manifest
from retrieval_testlib import assert_same_index


def _cli(argv):
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_cli_build_and_eval(store, tmp_path, capsys):
    out = tmp_path / "idx"
    assert _cli(["index", "build", "--store", str(store.path), "--out", str(out), "--embedder", "hash:32",
                 "--factory", "ivf-flat", "--nlist", "8", "--shards", "3"]) == 0
    manifest = load_manifest(out)
    assert manifest["num_shards"] == 3 and manifest["ntotal"] == len(store) and manifest["embedder"] == "hash:32"
    capsys.readouterr()
    assert _cli(["index", "eval", "--index-dir", str(out), "--embeddings", str(out / "embeddings.npy"),
                 "--queries", "50", "--k", "5", "--nprobe", "8"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["recall_at_k"] > 0.95  # nprobe = nlist: IVF-Flat is exact up to ties


@pytest.mark.distributed
def test_parallel_build_equals_single_process_build(store, tmp_path):
    single = tmp_path / "single"
    build_index(str(store.path), str(single), "hash:32", "ivf-flat", num_shards=2, nlist=8)
    par = tmp_path / "par"
    env = dict(os.environ, WORLD_SIZE="2", GLOO_SOCKET_IFNAME="lo", MASTER_ADDR="127.0.0.1")
    init = f"file://{tmp_path / 'rendezvous'}"
    cmd = [sys.executable, "-m", "megatron_retro.retrieval.parallel_build", "--store", str(store.path),
           "--out", str(par), "--embedder", "hash:32", "--factory", "ivf-flat", "--nlist", "8",
           "--init-method", init]
    procs = [subprocess.Popen(cmd, env=dict(env, RANK=str(r)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for r in range(2)]
    outs = [p.communicate(timeout=240)[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert_same_index(single, par, store)


def test_cli_chunks_from_jsonl(tokenizer, corpus, tmp_path, monkeypatch, capsys):
    import types

    # the real tokenizer comes from megatron_retro.data (another part); this stands in for it
    fake = types.ModuleType("megatron_retro.data")
    fake.load_tokenizer = lambda path: tokenizer
    monkeypatch.setitem(sys.modules, "megatron_retro.data", fake)
    docs = tmp_path / "documents.jsonl"
    docs.write_text("\n".join(json.dumps({"id": d, "title": t, "text": text}) for d, t, text in corpus[:5]) + "\n")
    out = tmp_path / "chunks"
    assert _cli(["index", "chunks", "--documents", str(docs), "--tokenizer", "x", "--out", str(out),
                 "--chunk-length", "16", "--neighbour-length", "32"]) == 0
    from megatron_retro.retrieval.chunk_store import ChunkStore

    s = ChunkStore(out)
    assert s.num_docs == 5 and set(s.doc_ids(np.arange(len(s)))) == {d for d, _, _ in corpus[:5]}
    assert s.text(0) == tokenizer.decode(tokenizer.encode(corpus[0][2])[:16])
    docs.write_text('{"id": 1, "text": "a b"}\n{"id": 2}\n')
    from megatron_retro.errors import UserError
    with pytest.raises(UserError, match=r"documents.jsonl:2: expected a JSON object with a 'text' field"):
        _cli(["index", "chunks", "--documents", str(docs), "--tokenizer", "x", "--out", str(tmp_path / "c2")])
