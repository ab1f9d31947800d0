"""A battery of bad inputs through the real command line (``megatron_retro.cli.main``, in-process):
each case checks the exit code (2 bad input, 1 runtime failure), that the failure is one line
``megatron-retro <cmd>: error: ...`` naming the file/field/endpoint and the constraint, and that
every file that existed before (checkpoints, adapter, index, chunk store, data) is byte-identical
afterwards.

One module-scoped world is made once through the same CLI: a bundled data dir, a GPT pretrained
for 2 steps (checkpoints at steps 1 and 2), a LoRA adapter fine-tuned on step 2, a chunk store and
a hash-embedder index.  While it is made, every read of a RunConfig field is recorded
(``test_every_run_config_field_is_read``).
"""
from __future__ import annotations

import re
import shutil
import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from megatron_retro import cli
from hardening_testlib import fill_disk, small_tmpfs, tree_digest

GPT_TINY = str(Path(__file__).resolve().parents[2] / "configs" / "models" / "gpt-tiny.yaml")
CORPUS = ["data.num_entities=40", "data.vocab_size=512", "data.seed=3", "data.split=80,20,0"]
TINY = ["model.num_layers=2", "model.hidden_size=32", "model.num_attention_heads=2", "model.seq_length=64",
        "train.micro_batch_size=2", "train.eval_interval=1", "train.eval_iters=1", "train.lr_warmup_steps=1",
        "checkpoint.save_interval=1"]
QA = ["qa.embedder=hash:32", "qa.seq_length=160", "qa.train_examples=8", "qa.max_answer_tokens=4",
      "qa.passage_length=32", "qa.chunk_length=16", "qa.num_passages=2", "qa.eval_batch_size=2"]
RETRO = ["model.arch=retro", "retro.chunk_length=32", "retro.neighbour_length=64", "retro.retrieval_layers=[2]",
         "retro.encoder_num_layers=1", "retro.embedder=hash:32"]


# ------------------------------------------------------------------------------------------
# Recording which RunConfig fields the code reads

def _section_classes():
    import dataclasses
    import typing

    from megatron_retro.config import RunConfig

    hints = typing.get_type_hints(RunConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(RunConfig) if dataclasses.is_dataclass(hints[f.name])}


_GENERIC_READERS = ("/dataclasses.py", "/copy.py", "/reprlib.py")  # asdict, replace, deepcopy, repr
_VALIDATION = {"__post_init__", "_check_retro", "_build", "to_dict"}  # the config package reading its own fields


def _read_by_code(frame) -> bool:
    """True when the attribute read at ``frame`` comes from code that uses the value: the first frame
    outside the config package is not dataclasses/copy machinery, and the chain does not pass through the
    config's own validation or serialisation (its properties such as ``ffn_size`` count as
    reads by their caller)."""
    while frame is not None:
        name = frame.f_code.co_filename
        if "/megatron_retro/config/" in name:
            if frame.f_code.co_name in _VALIDATION:
                return False
            frame = frame.f_back
            continue
        return not name.endswith(_GENERIC_READERS)
    return False


class FieldReads:
    """Patches ``__getattribute__`` of RunConfig and its sections; records (section, field) reads
    made by code outside the config package and the dataclasses/copy machinery (to_dict, validation, repr)."""

    def __init__(self):
        self.reads: set[tuple[str, str]] = set()
        self.classes = {"": None, **_section_classes()}

    def __enter__(self):
        import dataclasses

        from megatron_retro.config import RunConfig

        self.classes[""] = RunConfig
        for section, cls in self.classes.items():
            names = {f.name for f in dataclasses.fields(cls)}
            cls.__getattribute__ = self._recorder(section, names)
        return self

    def _recorder(self, section, names):
        reads = self.reads

        def getattribute(obj, name):
            if name in names and (section, name) not in reads and _read_by_code(sys._getframe(1)):
                reads.add((section, name))
            return object.__getattribute__(obj, name)
        return getattribute

    def __exit__(self, *exc):
        for cls in self.classes.values():
            del cls.__getattribute__


# ------------------------------------------------------------------------------------------
# The world

def run(argv, capsys):
    """(exit code, stderr lines) of ``megatron-retro ARGV`` run in this process."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        code = e.code
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip() and " note: " not in line]


def _main(argv) -> int:
    return cli.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    w = SimpleNamespace(root=root, data=root / "data", base=root / "base", ft=root / "ft", store=root / "store",
                        index=root / "index")
    data = [f"data.dir={w.data}", *CORPUS]
    with FieldReads() as recorder:
        assert _main(["data", "prepare", "--dir", w.data, "--num-entities", "40", "--vocab-size", "512",
                         "--seed", "3", "--split", "80,20,0", "--quiet"]) == 0
        assert _main(["pretrain", "--no-progress", "--out", w.base, "--steps", "2", *TINY, *data]) == 0
        w.ckpt1, w.ckpt2 = w.base / "checkpoints" / "iter_0000001", w.base / "checkpoints" / "iter_0000002"
        assert _main(["finetune", "--no-progress", "--peft", "lora", "--base", w.ckpt2, "--out", w.ft,
                         "--steps", "2", *TINY, *data, *QA]) == 0
        w.adapter = w.ft / "adapter"
        assert _main(["evaluate", "--no-progress", "--load", w.ckpt2, "--adapter", w.adapter,
                         "--out", root / "eval", "qa.eval_examples=2", *TINY, *data, *QA]) == 0
        assert _main(["pretrain", "--no-progress", "--out", root / "retro", "--steps", "1", *TINY, *RETRO,
                         *data]) == 0
        assert _main(["plan", "--config", GPT_TINY, "--vocab-size", "512", "--json"]) == 0
    w.reads = recorder.reads
    assert _main(["index", "chunks", "--documents", w.data / "documents.jsonl", "--tokenizer",
                     w.data / "tokenizer.model", "--out", w.store, "--chunk-length", "16",
                     "--neighbour-length", "32"]) == 0
    assert _main(["index", "build", "--store", w.store, "--out", w.index, "--embedder", "hash:32"]) == 0
    w.data_args, w.run_args = data, [*TINY, *data]
    return w


# ------------------------------------------------------------------------------------------
# The cases: (id, argv(w, tmp) -> list, exit code, regex the one error line must match after
# "megatron-retro <cmd>: error: "; setup(w, tmp) may create bad files in tmp first)

def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _truncate_shard(ckpt):
    shard = sorted(p for p in ckpt.iterdir() if p.name.endswith(".distcp"))[0]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 3])
    return ckpt


def _state_edit(ckpt, text):
    (ckpt / "state.json").write_text(text)
    return ckpt


def _other_store(w, tmp):
    assert _main(["index", "chunks", "--documents", w.data / "documents.jsonl", "--tokenizer", w.data / "tokenizer.model",
                  "--out", tmp / "s8", "--chunk-length", "8", "--neighbour-length", "16"]) == 0
    return tmp / "s8"


def _taken_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    _taken_port.sockets.append(s)  # kept open for the case
    return s.getsockname()[1]


_taken_port.sockets = []

PRETRAIN = ["pretrain", "--no-progress", "--steps", "1"]
CASES = [
    # --- the command line itself
    ("abbreviated option", lambda w, t: ["pretrain", "--step", "1"], 2,
     r"^megatron-retro pretrain: error: unrecognized arguments: --step$"),
    ("abbreviated sub-option", lambda w, t: ["index", "build", "--stor", w.store, "--out", t / "i"], 2,
     r"^megatron-retro index build: error: the following arguments are required: --store$"),
    ("unknown subcommand", lambda w, t: ["peft", "merj"], 2, r"^megatron-retro peft: error: argument <tool>: invalid choice: 'merj'"),
    ("extra argument to a leaf command", lambda w, t: ["peft", "methods", "--all"], 2,
     r"^megatron-retro peft methods: error: unrecognized arguments: --all$"),
    ("bad integer flag", lambda w, t: ["pretrain", "--tp", "two"], 2,
     r"^megatron-retro pretrain: error: argument --tp: invalid int value: 'two'$"),
    # --- config files and overrides
    ("duplicate YAML key", lambda w, t: ["config", "--config", _write(t / "dup.yaml", "train:\n  steps: 5\n  lr: 0.1\n  steps: 7\n")],
     2, r"dup\.yaml:4: duplicate key 'steps' \(first given on line 2; YAML would silently keep only the last value\)$"),
    ("duplicate YAML section", lambda w, t: ["config", "--config", _write(t / "dup2.yaml", "model:\n  num_layers: 2\nmodel:\n  num_layers: 4\n")],
     2, r"dup2\.yaml:3: duplicate key 'model'"),
    ("duplicate key in an inherited file", lambda w, t: ["config", "--config", _write(t / "top.yaml", "inherit: base.yaml\n")
                                                           if _write(t / "base.yaml", "train:\n  lr: 1\n  lr: 2\n") else None],
     2, r"base\.yaml:3: duplicate key 'lr'"),
    ("unknown config key", lambda w, t: ["config", "--config", _write(t / "k.yaml", "train:\n  step: 5\n")], 2,
     r"k\.yaml:2: train\.step: unknown key"),
    ("wrong type", lambda w, t: ["config", "train.lr=fast"], 2, r"train\.lr: expected a number, got str 'fast'"),
    ("missing config file", lambda w, t: ["pretrain", "--config", t / "nope.yaml"], 2, r"nope\.yaml: config file not found$"),
    ("malformed YAML", lambda w, t: ["config", "--config", _write(t / "m.yaml", "model: [1, 2\n")], 2, r"m\.yaml:\d+: malformed YAML"),
    ("override without =", lambda w, t: ["config", "model.num_layers"], 2, r"override 'model.num_layers': expected section\.key=value$"),
    ("negative steps", lambda w, t: ["config", "--steps", "-1"], 2, r"train\.steps=-1: must be >= 1$"),
    ("heads not divisible by tp", lambda w, t: ["config", "--tp", "3", "model.num_attention_heads=4"], 2,
     r"model\.num_attention_heads=4: must be divisible by parallel\.tp=3$"),
    ("model.vocab_size vs the tokenizer", lambda w, t: [*PRETRAIN, "--out", t / "r", *w.run_args, "model.vocab_size=1000"], 2,
     r"model\.vocab_size=1000: the tokenizer of this run has 512 tokens"),
    ("duplicate key in a PEFT config", lambda w, t: ["finetune", "--peft-config", _write(t / "p.yaml", "method: lora\nrank: 4\nrank: 8\n"),
                                                     "--base", w.ckpt2, "--out", t / "f", *w.run_args, *QA], 2,
     r"p\.yaml:3: duplicate key 'rank'"),
    # --- data
    ("empty documents file", lambda w, t: ["index", "chunks", "--documents", _write(t / "empty.jsonl", "\n\n"), "--tokenizer",
                                           w.data / "tokenizer.model", "--out", t / "s"], 2,
     r"--documents .*empty\.jsonl: no documents \(the file has no JSON lines\)$"),
    ("documents that are all empty", lambda w, t: ["index", "chunks", "--documents", _write(t / "blank.jsonl", '{"text": ""}\n'),
                                                   "--tokenizer", w.data / "tokenizer.model", "--out", t / "s"], 2,
     r"/s: nothing to store: no document has any tokens \(1 documents given\)$"),
    ("malformed documents line", lambda w, t: ["index", "chunks", "--documents", _write(t / "bad.jsonl", '{"text": "a"}\nnope\n'),
                                               "--tokenizer", w.data / "tokenizer.model", "--out", t / "s"], 2,
     r"bad\.jsonl:2: expected a JSON object with a 'text' field"),
    ("missing documents file", lambda w, t: ["index", "chunks", "--documents", t / "none.jsonl", "--tokenizer",
                                             w.data / "tokenizer.model", "--out", t / "s"], 2, r"none\.jsonl: No such file or directory$"),
    ("chunk store over an existing one", lambda w, t: ["index", "chunks", "--documents", w.data / "documents.jsonl", "--tokenizer",
                                                       w.data / "tokenizer.model", "--out", w.store], 2, r"/store: already exists"),
    ("data dir built for another vocabulary", lambda w, t: [*PRETRAIN, "--out", t / "r", *TINY, f"data.dir={w.data}",
                                                            "data.num_entities=40", "data.vocab_size=1024", "data.seed=3",
                                                            "data.split=80,20,0"], 2,
     r"/data: prepared for vocab_size=512, this run asks for vocab_size=1024 \(data\.\*\); not regenerating it because "
     r"it also holds '[^']+' built from it"),
    ("indexed data prefix missing", lambda w, t: [*PRETRAIN, "--out", t / "r", *TINY, "data.source=indexed",
                                                  f"data.prefix={t / 'nothing'}"], 2, r"nothing"),
    ("task file missing", lambda w, t: ["tasks", "check", "--task", "nq", "--path", t / "nq.jsonl"], 2, r"nq\.jsonl"),
    ("task file empty", lambda w, t: ["tasks", "check", "--task", "bundled", "--path", _write(t / "qa.jsonl", "")], 2, r"qa\.jsonl"),
    # --- checkpoints
    ("base checkpoint missing", lambda w, t: ["finetune", "--peft", "lora", "--base", t / "none", "--out", t / "f",
                                              *w.run_args, *QA], 2, r"/none: not a complete checkpoint \(no state\.json\)$"),
    ("corrupt state.json", lambda w, t: ["finetune", "--peft", "lora", "--base",
                                         _state_edit(_copy(w.ckpt2, t / "c"), '{\n "step": 2,\n oops\n}'), "--out", t / "f",
                                         *w.run_args, *QA], 2, r"state\.json:3: corrupt checkpoint state"),
    ("truncated checkpoint shard", lambda w, t: ["finetune", "--peft", "lora", "--base", _truncate_shard(_copy(w.ckpt2, t / "c")),
                                                 "--out", t / "f", *w.run_args, *QA], 2,
     r"/c: cannot load checkpoint: EOFError: unexpected end of file \(a file of the checkpoint is truncated\)$"),
    ("checkpoint of another model", lambda w, t: ["evaluate", "--load", w.ckpt2, "--out", t / "e", *w.run_args, *QA,
                                                  "model.hidden_size=48"], 2,
     r"checkpoint is for another model: model\.hidden_size=32 there, 48 in this run$"),
    ("resume from a checkpoint of another model", lambda w, t: [*PRETRAIN, "--out", t / "r", *w.run_args, "model.hidden_size=48",
                                                                f"checkpoint.load={w.ckpt2}"], 2, r"checkpoint is for another model"),
    ("checkpoint dir is a file", lambda w, t: [*PRETRAIN, "--out", t / "r", *w.run_args,
                                               f"checkpoint.dir={_write(t / 'file', 'x')}"], 1,
     r"/file: cannot save checkpoint iter_0000001: "),
    # --- PEFT
    ("unknown PEFT method", lambda w, t: ["finetune", "--peft", "lorax", "--base", w.ckpt2, "--out", t / "f", *w.run_args, *QA], 2,
     r"peft\.method='lorax': unknown PEFT method \(known: "),
    ("PEFT option without =", lambda w, t: ["finetune", "--peft", "lora", "--peft-opt", "rank", "--base", w.ckpt2, "--out", t / "f",
                                            *w.run_args, *QA], 2, r"--peft-opt 'rank': expected key=value"),
    ("missing PEFT config", lambda w, t: ["finetune", "--peft-config", t / "none.yaml", "--base", w.ckpt2, "--out", t / "f",
                                          *w.run_args, *QA], 2, r"--peft-config .*none\.yaml: no such file$"),
    ("adapter missing", lambda w, t: ["evaluate", "--load", w.ckpt2, "--adapter", t / "none", "--out", t / "e", *w.run_args, *QA], 2,
     r"/none: not an adapter checkpoint \(no adapter_config\.json\)$"),
    ("adapter on another base of the same shape", lambda w, t: ["evaluate", "--load", w.ckpt1, "--adapter", w.adapter,
                                                                "--out", t / "e", *w.run_args, *QA], 2,
     r"/adapter: adapter was trained on base .*iter_0000002 \(weights sha256:[0-9a-f]{12}\), not on .*iter_0000001 "
     r"\(weights sha256:[0-9a-f]{12}\): same shapes, other weights$"),
    ("adapter merged onto another base", lambda w, t: ["peft", "merge", "--base", w.ckpt1, "--adapter", w.adapter,
                                                       "--merged-out", t / "m", *w.run_args], 2, r"adapter was trained on base"),
    ("adapter for another model shape", lambda w, t: ["evaluate", "--load", w.ckpt2, "--adapter", w.adapter, "--out", t / "e",
                                                      *w.run_args, *QA, "model.num_attention_heads=4"], 2,
     r"checkpoint is for another model: model\.num_attention_heads=2 there, 4 in this run$"),
    # --- retrieval index and service
    ("index rebuilt with another embedder", lambda w, t: ["index", "build", "--store", w.store, "--out", w.index,
                                                          "--embedder", "hash:64"], 2,
     r"/index: holds an index built with embedder 'hash:32(:0)?' \(dim 32\); refusing to rebuild it with --embedder 'hash:64'"),
    ("index rebuilt from another chunk store", lambda w, t: ["index", "build", "--store", _other_store(w, t), "--out", w.index,
                                                             "--embedder", "hash:32"], 2,
     r"/index: holds an index of chunk store [0-9a-f]{12}, --store .*/s8 is [0-9a-f]{12} \(its cached embeddings belong"),
    ("index build from a missing store", lambda w, t: ["index", "build", "--store", t / "none", "--out", t / "i", "--embedder",
                                                       "hash:32"], 2, r"none"),
    ("serve a directory that is not an index", lambda w, t: ["serve", "--shard", "0/1", "--index-dir", t], 2,
     r"no manifest\.json \(not an index directory"),
    ("serve a shard the index does not have", lambda w, t: ["serve", "--shard", "0/2", "--index-dir", w.index], 2,
     r"--shard 0/2: .*/index was built with 1 shards$"),
    ("serve a bad shard spec", lambda w, t: ["serve", "--shard", "2/2", "--index-dir", w.index], 2, r"need 0 <= I < N"),
    ("serve on a taken port", lambda w, t: ["serve", "--shard", "0/1", "--index-dir", w.index, "--port", _taken_port()], 2,
     r"--host 127\.0\.0\.1 --port \d+: cannot bind 127\.0\.0\.1:\d+ \(the port is taken"),
    ("serve off loopback without a token", lambda w, t: ["serve", "--shard", "0/1", "--index-dir", w.index, "--host", "0.0.0.0"], 2,
     r"--host 0\.0\.0\.0: refusing to serve on a non-loopback address without an auth token"),
    ("serve off loopback without TLS", lambda w, t: ["serve", "--shard", "0/1", "--index-dir", w.index, "--host", "0.0.0.0",
                                                     "--token-file", _write(t / "tok", "secret")], 2,
     r"--host 0\.0\.0\.0: refusing to serve without TLS on a non-loopback address .*--insecure"),
    ("serve with an empty token file", lambda w, t: ["serve", "--shard", "0/1", "--index-dir", w.index, "--token-file",
                                                     _write(t / "tok", "")], 2, r"--token-file .*tok: file is empty$"),
    ("TLS cert without key", lambda w, t: ["serve", "--shard", "0/1", "--index-dir", w.index, "--tls-cert", t / "c.pem"], 2,
     r"--tls-cert and --tls-key: give both or neither$"),
    # --- planning
    ("plan without a vocabulary", lambda w, t: ["plan", "--config", GPT_TINY], 2,
     r"model\.vocab_size is not set \(pass --vocab-size\)$"),
]


@pytest.mark.parametrize("name,argv,code,pattern", CASES, ids=[c[0] for c in CASES])
def test_bad_input(world, tmp_path, capsys, monkeypatch, name, argv, code, pattern):
    monkeypatch.delenv("MEGATRON_RETRO_RETRIEVAL_TOKEN", raising=False)
    monkeypatch.delenv("MEGATRON_RETRO_DEBUG", raising=False)
    before = tree_digest(world.root)
    args = argv(world, tmp_path)
    try:
        got, lines = run(args, capsys)
    finally:
        while _taken_port.sockets:
            _taken_port.sockets.pop().close()
    assert got == code, (got, lines)
    assert lines, "no error line"
    prefix = "megatron-retro "
    error = lines[-1]
    assert error.startswith(prefix) and ": error: " in error, lines
    usage = lines[:-1]
    # Only argparse errors print more: the usage of the (sub)command that failed, then the one line.
    assert not usage or usage[0].startswith(f"usage: {error.split(': error: ')[0]}"), lines
    message = error if pattern.startswith("^megatron-retro ") else error.split(": error: ", 1)[1]
    assert re.search(pattern, message), f"{message!r} does not match {pattern!r}"
    after = tree_digest(world.root)
    changed = sorted(p for p, h in before.items() if after.get(p) != h)
    assert not changed, f"changed or removed: {changed}"
    assert not [p for p in after if ".tmp" in p and p not in before], "temporary files left behind"


def test_full_disk_through_the_cli(world, tmp_path, capsys):
    """Resume from step 1 on a full disk: step 2's save fails with one line, exit 1; step 1's
    checkpoint and ``latest`` stay byte-identical and no temporary directory is left."""
    with small_tmpfs(tmp_path / "full", "4m") as mount:
        ckpts = mount / "ckpts"
        _copy(world.ckpt1, ckpts / "iter_0000001")
        (ckpts / "latest").write_text("iter_0000001\n")
        before = tree_digest(ckpts)
        fill_disk(mount, sum(p.stat().st_size for p in (ckpts / "iter_0000001").rglob("*") if p.is_file()) // 2)
        code, lines = run(["pretrain", "--no-progress", "--steps", "2", "--out", tmp_path / "run", *world.run_args,
                           f"checkpoint.dir={ckpts}", "train.eval_interval=0"], capsys)
        assert code == 1, lines
        assert lines == [f"megatron-retro pretrain: error: {ckpts}: cannot save checkpoint iter_0000002: "
                         "no space left on device"], lines
        assert tree_digest(ckpts) == before


def test_debug_shows_the_traceback(world, tmp_path, capsys):
    with pytest.raises(Exception, match="duplicate key"):
        cli.main(["--debug", "config", "--config", str(_write(tmp_path / "d.yaml", "a: 1\na: 2\n"))])


def test_warmup_longer_than_the_run_is_clamped_with_a_note(capsys):
    assert cli.main(["config", "--steps", "5", "train.lr_warmup_steps=10"]) == 0
    out, err = capsys.readouterr()
    assert "lr_warmup_steps: 4" in out
    assert "megatron-retro: note: train.lr_warmup_steps=10 clamped to 4 (train.steps=5 is shorter than the warm-up)" in err


def test_every_parser_takes_exact_option_names():
    parser = cli.build_parser()
    todo, seen = [parser], 0
    while todo:
        p = todo.pop()
        seen += 1
        assert p.allow_abbrev is False, p.prog
        for action in p._actions:
            if hasattr(action, "choices") and isinstance(action.choices, dict):
                todo.extend(action.choices.values())
    assert seen > 20


# ------------------------------------------------------------------------------------------
# Every RunConfig field is read by the code the world ran (no grep: reads are recorded)

# Fields the world's runs do not reach, each with the reason and where it is read instead.
NOT_REACHED = {
    ("data", "prefix"): "source=indexed only (the world uses the bundled data; tests/unit/test_data_indexed.py)",
    ("retrieval", "endpoints"): "retrieval.mode=service only: the gRPC neighbour source "
                                "(tests/integration/test_retrieval_feed.py)",
    ("retrieval", "timeout"): "retrieval.mode=service only (tests/integration/test_retrieval_feed.py)",
    ("retrieval", "token_file"): "retrieval.mode=service only (tests/integration/test_retrieval_feed.py)",
    ("data", "copy_max_span"): "data.copy_share > 0 only: read by training/data_setup.build_pretrain_data for the "
                               "copy mix (tests/unit/test_copy_mix.py)",
    ("data", "copy_vocab"): "data.copy_share > 0 only: read by training/data_setup.build_pretrain_data for the "
                            "copy mix (tests/unit/test_copy_mix.py)",
    ("model", "global_attn_every"): "model.sliding_window set only: Gemma 3 local/global layers "
                                    "(tests/unit/test_gemma3_tiny.py)",
    ("model", "rotary_base_local"): "model.sliding_window set only: the local layers' RoPE base "
                                    "(tests/unit/test_gemma3_tiny.py)",
}


def test_every_run_config_field_is_read(world):
    import dataclasses

    from megatron_retro.config import RunConfig

    fields = {("", f.name) for f in dataclasses.fields(RunConfig) if (f.name not in _section_classes())}
    for section, cls in _section_classes().items():
        fields |= {(section, f.name) for f in dataclasses.fields(cls)}
    unknown = set(NOT_REACHED) - fields
    assert not unknown, f"NOT_REACHED names fields that do not exist: {sorted(unknown)}"
    stale = sorted(set(NOT_REACHED) & world.reads)
    assert not stale, f"NOT_REACHED lists fields the runs do read (remove them from the list): {stale}"
    unread = sorted(f for f in fields - world.reads - set(NOT_REACHED))
    assert not unread, f"RunConfig fields nothing read in data prepare/pretrain/finetune/evaluate/RETRO/plan: {unread}"


@pytest.mark.parametrize("command", [["finetune", "--peft", "lora", "--base"], ["evaluate", "--load"]])
def test_missing_checkpoint_is_refused_before_any_data_work(tmp_path, capsys, command):
    """A missing base is named before the data directory is generated or the task corpus embedded."""
    fresh = tmp_path / "fresh-data"
    got, lines = run([*command, tmp_path / "none", "--out", tmp_path / "o", *TINY, f"data.dir={fresh}", *QA], capsys)
    assert got == 2 and re.search(r"/none: not a complete checkpoint \(no state\.json\)$", lines[-1]), lines
    assert not fresh.exists(), "data was prepared before the checkpoint was checked"
