"""megatron_retro.io_atomic: a failed write leaves the old content and no temporary behind."""
import os

import pytest

from megatron_retro.io_atomic import atomic_dir, atomic_file, write_text_atomic


def test_text_replaces_content_with_the_usual_mode(tmp_path):
    path = tmp_path / "sub" / "a.json"
    write_text_atomic(path, "old")
    write_text_atomic(path, "new ü")
    umask = os.umask(0)
    os.umask(umask)
    assert path.read_text(encoding="utf-8") == "new ü"
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
    assert os.listdir(path.parent) == ["a.json"]


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "a.txt"
    write_text_atomic(path, "old")

    def half(tmp):
        with open(tmp, "w") as f:
            f.write("ne")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_file(path, half)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_suffix_ends_the_temporary_name(tmp_path):
    seen = []
    atomic_file(tmp_path / "c.npz", lambda tmp: (seen.append(tmp), open(tmp, "w").close()), suffix=".npz")
    assert seen[0].endswith(".npz") and os.listdir(tmp_path) == ["c.npz"]


def test_directory_replaces_the_old_one_or_is_removed(tmp_path):
    out = tmp_path / "store"
    with atomic_dir(out) as tmp:
        (tmp / "x").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "y").write_text("2")
            raise RuntimeError("killed")
    assert sorted(os.listdir(out)) == ["x"] and os.listdir(tmp_path) == ["store"]
    with atomic_dir(out) as tmp:
        (tmp / "z").write_text("3")
    assert sorted(os.listdir(out)) == ["z"]
