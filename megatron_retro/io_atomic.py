"""Atomic writes: a reader sees the old file (or directory) or the complete new one, never a part.

Every writer of the project goes through here:

* ``atomic_file(path, write)``: ``write(tmp)`` fills a temporary file beside ``path`` (same
  filesystem), which is then renamed over ``path``; the usual file mode (not mkstemp's 0600);
  the temporary file is removed if ``write`` fails;
* ``write_text_atomic(path, text)``, ``write_bytes_atomic(path, data)`` (flushed to disk first)
  and ``save_figure_atomic(fig, path)``; ``text_writer(text)`` the ``write`` of the first;
* ``atomic_dir(out)``: a context manager yielding a temporary directory beside ``out`` that
  replaces ``out`` (and whatever was there) when the block ends without error, or is removed.

Checkpoints keep their own directory protocol (training/checkpointing.py: ``iter_*.tmp`` renamed
in, ``latest`` written last) and the bundled data its two-rename swap (data/prepare.py); both write
their single files through ``write_text_atomic``.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator


def atomic_file(path: str | os.PathLike, write: Callable[[str], object], suffix: str = ".tmp") -> str:
    """Call ``write(tmp_path)`` for a temp file beside ``path``, then rename it into place.

    ``suffix`` ends the temporary name (writers that append their own extension unless the name
    has it, such as ``np.savez``, pass that extension)."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=suffix, dir=d)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)     # mkstemp makes 0600; give the usual file mode
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _synced(data, mode: str, **open_kwargs) -> Callable[[str], None]:
    """A ``write(tmp)`` that writes ``data`` and flushes it to disk."""
    def write(tmp: str) -> None:
        with open(tmp, mode, **open_kwargs) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return write


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> str:
    """``data`` as the new content of ``path``; returns ``path``."""
    return atomic_file(path, _synced(data, "wb"))


def text_writer(text: str) -> Callable[[str], None]:
    """A ``write(tmp)`` of ``text`` (UTF-8) flushed to disk, for :func:`atomic_file` and for the
    checkpoint file sets (parallel/checkpoint_io.py)."""
    return _synced(text, "w", encoding="utf-8")


def write_text_atomic(path: str | os.PathLike, text: str) -> str:
    """``text`` (UTF-8) as the new content of ``path``; returns ``path``."""
    return atomic_file(path, text_writer(text))


def save_figure_atomic(fig, path: str | os.PathLike, dpi: int = 120) -> str:
    """A matplotlib figure as a PNG at ``path``; returns ``path``."""
    return atomic_file(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike) -> Iterator[Path]:
    """Yield a new empty directory beside ``out``; on success it replaces ``out``, else it is removed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
