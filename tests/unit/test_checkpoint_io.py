"""The checkpoint file layer shared by training checkpoints and PEFT adapters (parallel/checkpoint_io.py)."""
import os

import pytest

from megatron_retro.errors import RuntimeFailure, UserError
from megatron_retro.parallel.checkpoint_io import first_mismatch, read_json_record, write_files_atomic


def test_a_failed_file_set_keeps_the_previous_set_and_no_temporary(tmp_path):
    write_files_atomic(str(tmp_path), {"a.json": "old a", "b.bin": lambda tmp: open(tmp, "w").write("old b")}, "thing")

    def fails(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise OSError(28, "No space left on device", tmp)

    with pytest.raises(RuntimeFailure) as info:
        write_files_atomic(str(tmp_path), {"a.json": "new a", "b.bin": fails}, "thing")
    assert str(info.value) == f"{tmp_path}: cannot save thing: no space left on device"
    assert sorted(os.listdir(tmp_path)) == ["a.json", "b.bin"]        # no .tmp left, nothing renamed
    assert (tmp_path / "a.json").read_text() == "old a" and (tmp_path / "b.bin").read_text() == "old b"


def test_records_and_mismatches_are_one_line(tmp_path):
    with pytest.raises(UserError, match=r"/x: not a thing \(no rec\.json\)$"):
        read_json_record(str(tmp_path / "x"), "rec.json", "a thing", "thing record")
    (tmp_path / "rec.json").write_text('{\n "a": 1,\n}')
    with pytest.raises(UserError, match=r"rec\.json:3: corrupt thing record \("):
        read_json_record(str(tmp_path), "rec.json", "a thing", "thing record")
    assert first_mismatch({"a": 1, "b": 2}, {"a": 1, "b": 3}, ("a", "b")) == "b"
    assert first_mismatch({"a": 1}, {"a": 1, "b": 3}, ("a", "b")) is None   # only what was recorded counts
