"""prepare_bundled_data: layout, idempotency, atomicity, errors; unigram entropy; the CLI."""
import argparse
import json
import math
import os

import numpy as np
import pytest

from megatron_retro.data import prepare as prep
from megatron_retro.data.synthetic.encyclopedia import document_split, read_documents, read_qa
from megatron_retro.data.indexed import read_documents_tokens
from megatron_retro.data.prepare import load_bundled_data, prepare_bundled_data
from megatron_retro.data.stats import heldout_tokens, unigram_cross_entropy, unigram_entropy
from megatron_retro.data.tokenizer import load_tokenizer
from megatron_retro.errors import UserError

ARGS = dict(num_entities=40, vocab_size=400, seed=11, split="80,10,10")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("bundle") / "data")
    return prepare_bundled_data(d, progress=False, **ARGS)


def _mtimes(d):
    return {os.path.join(r, n): os.stat(os.path.join(r, n)).st_mtime_ns
            for r, _, ns in os.walk(d) for n in ns}


def test_layout_and_manifest(bundle):
    assert not bundle.reused
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(bundle.dir).st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's 0700
    for path in [bundle.documents, bundle.facts, bundle.tokenizer, bundle.manifest,
                 bundle.prefix + ".bin", bundle.prefix + ".idx", *bundle.qa.values()]:
        assert os.path.isfile(path), path
    m = json.load(open(bundle.manifest))
    assert m["params"] == {**ARGS}
    assert set(m["files"]) == {"documents.jsonl", "facts.jsonl", "qa/train.jsonl",
                               "qa/valid.jsonl", "qa/test.jsonl", "tokenizer.model",
                               "text_document.bin", "text_document.idx"}
    docs = read_documents(bundle.documents)
    st = bundle.stats
    assert st["documents"] == len(docs) and st["entities"] == 40
    assert st["tokens"] == sum(len(t) for t in read_documents_tokens(bundle.prefix))
    assert sum(st["tokens_per_split"].values()) == st["tokens"]
    assert sum(st["qa_per_split"].values()) == sum(len(read_qa(p)) for p in bundle.qa.values())
    assert 0 < st["unigram_entropy_train_nats"] < math.log(400)


def test_second_call_reuses_files(bundle):
    before = _mtimes(bundle.dir)
    again = prepare_bundled_data(bundle.dir, progress=False, **ARGS)
    assert again.reused and _mtimes(bundle.dir) == before
    assert load_bundled_data(bundle.dir, **ARGS).reused


def test_tokenizer_trained_on_train_documents_only(bundle):
    tok = load_tokenizer(bundle.tokenizer)
    docs = read_documents(bundle.documents)
    stored = read_documents_tokens(bundle.prefix)
    for doc, ids in zip(docs, stored):
        assert ids.tolist() == tok.encode(doc.text) + [tok.eod]
    # held-out text is unseen by the tokenizer: retraining on all documents differs
    from megatron_retro.data.tokenizer import train_tokenizer
    other = train_tokenizer([d.text for d in docs], os.path.join(bundle.dir, "..", "all.model"),
                            400)
    assert open(other.path, "rb").read() != open(bundle.tokenizer, "rb").read()


def test_heldout_tokens_are_the_valid_documents(bundle):
    docs = read_documents(bundle.documents)
    b, e = document_split(len(docs), ARGS["split"])[1]
    assert all(d.split == "valid" for d in docs[b:e])
    want = np.concatenate(read_documents_tokens(bundle.prefix, range(b, e)))
    got = heldout_tokens(bundle, "valid")
    assert got.dtype == np.int64 and np.array_equal(got, want)
    assert len(heldout_tokens(bundle, "test")) == bundle.stats["tokens_per_split"]["test"]
    with pytest.raises(UserError, match="which='dev'"):
        heldout_tokens(bundle, "dev")


def test_unigram_entropy():
    assert unigram_entropy([5, 6, 7, 8] * 10) == pytest.approx(math.log(4))
    assert unigram_entropy([3] * 9) == pytest.approx(0.0)
    p = np.array([0.5, 0.25, 0.25])
    assert unigram_entropy([0, 0, 1, 2]) == pytest.approx(float(-(p * np.log(p)).sum()))
    # cross-entropy: add-one smoothed train counts [3, 1, 0] + 1 over vocab 3 -> [4, 2, 1] / 7
    assert unigram_cross_entropy([0, 0, 0, 1], [0, 2], 3) == \
        pytest.approx(-(math.log(4 / 7) + math.log(1 / 7)) / 2)


def test_other_parameters_regenerate(tmp_path):
    d = str(tmp_path / "data")
    first = prepare_bundled_data(d, progress=False, **ARGS)
    docs1 = open(first.documents).read()
    second = prepare_bundled_data(d, progress=False, **{**ARGS, "seed": 12})
    assert not second.reused and open(second.documents).read() != docs1
    assert second.params["seed"] == 12
    with pytest.raises(UserError, match=r"manifest.json: prepared with seed=12, expected 11"):
        load_bundled_data(d, **ARGS)
    # a changed or truncated file is detected, and a later prepare repairs it
    raw = open(second.facts, "rb").read()
    open(second.facts, "wb").write(raw[:-1] + b"x")
    with pytest.raises(UserError, match=r"facts.jsonl: changed since it was written"):
        load_bundled_data(d)
    open(second.documents, "r+b").truncate(1000)
    with pytest.raises(UserError, match=r"documents.jsonl: 1000 bytes, the manifest says \d+ "
                                        r"\(truncated"):
        load_bundled_data(d)
    assert not prepare_bundled_data(d, progress=False, **{**ARGS, "seed": 12}).reused
    assert load_bundled_data(d, seed=12).reused
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n or ".old-" in n]


def test_crash_mid_write_leaves_no_manifest_and_is_regenerated(tmp_path, monkeypatch):
    d = str(tmp_path / "data")

    def boom(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing the indexed dataset")

    import megatron_retro.data.indexed as indexed
    monkeypatch.setattr(indexed, "write_indexed", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare_bundled_data(d, progress=False, **ARGS)
    monkeypatch.undo()
    assert not os.path.exists(d)  # nothing half-written where the data belongs
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]
    # a directory a killed run left without manifest (e.g. an older, non-atomic writer)
    os.makedirs(os.path.join(d, "qa"))
    open(os.path.join(d, "documents.jsonl"), "w").write('{"id": 0, "tit')
    with pytest.raises(UserError, match=r"data: no manifest.json"):
        load_bundled_data(d)
    fresh = prepare_bundled_data(d, progress=False, **ARGS)
    assert not fresh.reused and len(read_documents(fresh.documents)) == fresh.stats["documents"]


def test_kill_between_renames_leaves_no_half_written_dir(tmp_path, monkeypatch):
    d = str(tmp_path / "data")
    prepare_bundled_data(d, progress=False, **ARGS)
    real_replace = os.replace
    calls = []

    def replace_then_die(src, dst):
        calls.append((src, dst))
        if dst == d and ".tmp-" in src:  # old dir already moved aside, new one not yet in
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(prep.os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        prepare_bundled_data(d, progress=False, **{**ARGS, "seed": 99})
    monkeypatch.undo()
    # the data dir is absent (not half-written); the next call regenerates it cleanly
    assert any(src == d for src, _ in calls) and not os.path.exists(d)
    again = prepare_bundled_data(d, progress=False, **{**ARGS, "seed": 99})
    assert not again.reused and load_bundled_data(d, seed=99)
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n or ".old-" in n]


def test_refuses_foreign_directory_and_bad_manifest(tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match=r"mine: not a bundled data directory .*thesis.tex"):
        prepare_bundled_data(str(d), progress=False, **ARGS)
    assert (d / "thesis.tex").read_text() == "precious"
    e = tmp_path / "broken"
    e.mkdir()
    (e / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match=r"broken/manifest.json: invalid JSON"):
        load_bundled_data(str(e))
    # prepare treats an unreadable manifest as an interrupted run and regenerates
    assert not prepare_bundled_data(str(e), progress=False, **ARGS).reused


@pytest.mark.parametrize("kwargs,match", [
    ({"num_entities": 3}, "num_entities=3: must be >= 10"),
    ({"vocab_size": 8}, "vocab_size=8: must be >= 64"),
    ({"split": "1,x,1"}, "split='1,x,1'"),
    ({"vocab_size": 50000}, "vocab_size=50000: .*Vocabulary size too high"),
])
def test_bad_parameters(tmp_path, kwargs, match):
    with pytest.raises(UserError, match=match):
        prepare_bundled_data(str(tmp_path / "d"), progress=False, **{**ARGS, **kwargs})
    assert not os.path.exists(tmp_path / "d" / "manifest.json")


def test_cli_prepare_prints_paths_and_stats(bundle, capsys):
    from megatron_retro.data import commands

    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "prepare", "--dir", bundle.dir, "--num-entities", "40",
                              "--vocab-size", "400", "--seed", "11", "--split", "80,10,10",
                              "--quiet"])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert "(reused)" in out and bundle.tokenizer in out and bundle.prefix in out
    assert f"{bundle.stats['documents']} documents, {bundle.stats['tokens']} tokens" in out
    assert "unigram entropy: train" in out


def test_resolve_data_from_data_config(bundle, tmp_path):
    from megatron_retro.config import DataConfig
    from megatron_retro.data.prepare import resolve_data

    cfg = DataConfig(dir=bundle.dir, num_entities=40, vocab_size=400, seed=11, split="80,10,10")
    data = resolve_data(cfg)
    assert data.reused and data.prefix == bundle.prefix and data.tokenizer == bundle.tokenizer
    indexed = DataConfig(source="indexed", prefix=bundle.prefix, tokenizer=bundle.tokenizer,
                         dir=str(tmp_path))
    data = resolve_data(indexed)
    assert data.prefix == bundle.prefix and data.tokenizer == bundle.tokenizer
    missing = DataConfig(source="indexed", prefix=str(tmp_path / "none"), dir=str(tmp_path))
    with pytest.raises(UserError, match=r"none.idx: indexed dataset file not found"):
        resolve_data(missing)
    no_tok = DataConfig(source="indexed", prefix=bundle.prefix, dir=str(tmp_path))
    with pytest.raises(UserError, match=r"tokenizer.model: tokenizer file not found"):
        resolve_data(no_tok)


def test_cli_bad_input_is_one_line_error(tmp_path, monkeypatch, capsys):
    from megatron_retro import cli

    monkeypatch.setattr(cli, "COMMAND_MODULES", ["megatron_retro.data.commands"])
    d = tmp_path / "notes"
    d.mkdir()
    (d / "todo.txt").write_text("keep me")
    code = cli.main(["data", "prepare", "--dir", str(d), "--num-entities", "40",
                     "--vocab-size", "400", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("megatron-retro data prepare: error: ") and "todo.txt" in err
    code = cli.main(["data", "prepare", "--dir", str(tmp_path / "x"), "--num-entities", "2"])
    assert code == 2 and "num_entities=2: must be >= 10" in capsys.readouterr().err


def test_unwritable_location(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a directory")
    with pytest.raises(UserError, match=r"file/data: cannot create the data directory there"):
        prepare_bundled_data(str(blocker / "data"), progress=False, **ARGS)
