"""The file layer of the one checkpoint writer, shared by training checkpoints
(``training/checkpointing.py``: megatron dist_checkpointing shards + ``state.json``) and PEFT
adapters (``peft/checkpoint.py``: ``adapter_model.safetensors`` + ``adapter_config.json``).

It sits below both (peft/ may not import training/) and holds what the two had written twice:

* ``rank()`` / ``barrier()``: rank 0 writes, every rank waits (world size 1 without a group);
* ``saving(directory, what, cleanup)``: any failure of a save becomes one
  :class:`RuntimeFailure` line ``<directory>: cannot save <what>: <reason>`` ("no space left on
  device" when that is the cause anywhere in the chain or the disk is full), after ``cleanup()``
  removed the partial files, so the previous checkpoint stays as it was;
* ``write_files_atomic(directory, files, what)``: several files written beside their final names
  (text through ``io_atomic.text_writer``), then renamed in, so a reader sees the old set or the
  new one;
* ``read_json_record(directory, name, kind, corrupt)``: the stored thing's JSON identity,
  ``<file>:<line>`` on a corrupt one and "not a ... checkpoint" when absent (``read_json``: the
  same for any JSON file, HF ``config.json`` included);
* ``first_mismatch(saved, current, fields)``: the first architecture field that differs between
  what a checkpoint was saved for and the model that consumes it (each caller words its refusal).
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import Callable, Iterable, Iterator, Optional, Union

import torch.distributed as dist

from megatron_retro.errors import RuntimeFailure, UserError, is_disk_full, one_line, os_error_line
from megatron_retro.io_atomic import text_writer

# Below this much free space a failed save is reported as a full disk (see :func:`failure_text`).
FULL_DISK_BYTES = 256 << 10


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def disk_full(directory: str) -> bool:
    """True when the file system holding ``directory`` has (almost) no free space left.

    dist_checkpointing writes shards in forked helper processes; when one hits ENOSPC, the error
    that comes back is torch's serializer complaining about a short write ("unexpected pos"), not
    the errno.  So a failed save also looks at the disk itself, before the partial files are
    removed."""
    path = directory
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    try:
        st = os.statvfs(path or ".")
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < FULL_DISK_BYTES


def failure_text(e: BaseException, directory: Optional[str] = None, loading: bool = False) -> str:
    """One line for a failed save/load, "no space left on device" when that is the cause anywhere in
    the chain (torch's CheckpointException wraps each rank's error in ``failures``) or when the
    disk holding ``directory`` is full."""
    seen, errors, todo = set(), [], [e]
    while todo:
        cur = todo.pop(0)
        if not isinstance(cur, BaseException) or id(cur) in seen:
            continue
        seen.add(id(cur))
        errors.append(cur)
        todo += [cur.__cause__, cur.__context__]
        for failure in (getattr(cur, "failures", None) or {}).values():  # rank -> (exception, stack)
            todo.append(failure[0] if isinstance(failure, tuple) else failure)
    if any(is_disk_full(x) for x in errors) or (directory and disk_full(directory)):
        return "no space left on device"
    # The innermost error says what went wrong; CheckpointException's own text is a traceback.
    inner = [x for x in errors if not getattr(x, "failures", None)] or errors
    first = (str(inner[0]).strip().splitlines() or [""])[0]
    if not first and loading and isinstance(inner[0], EOFError):
        first = "unexpected end of file (a file of the checkpoint is truncated)"
    return f"{type(inner[0]).__name__}: {one_line(first)[:300] or '(no message)'}"


@contextlib.contextmanager
def saving(directory: str, what: str, cleanup: Callable[[], None]) -> Iterator[None]:
    """Run a save; on any failure call ``cleanup()`` and raise one line naming ``directory``/``what``.
    An interrupt (Ctrl-C, SystemExit) is cleaned up too but passes through unchanged."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit):
        cleanup()
        raise
    except BaseException as e:  # torch raises BaseException subclasses (CheckpointException)
        if isinstance(e, OSError) and not is_disk_full(e) and not disk_full(directory):
            reason = os_error_line(e)
        else:
            reason = failure_text(e, directory)
        cleanup()
        raise RuntimeFailure(f"{directory}: cannot save {what}: {reason}") from e


def write_files_atomic(directory: str, files: dict[str, Union[str, Callable[[str], object]]], what: str) -> None:
    """Write ``files`` (name -> text, or a ``write(tmp_path)``) into ``directory``: each to
    ``<name>.tmp`` first, then all renamed in.  A failure leaves the previous files as they were,
    no temporary file, and raises one :class:`RuntimeFailure` line (see :func:`saving`)."""
    tmps = {name: os.path.join(directory, name + ".tmp") for name in files}

    def cleanup() -> None:
        for tmp in tmps.values():
            if os.path.exists(tmp):
                os.remove(tmp)

    with saving(directory, what, cleanup):
        for name, content in files.items():
            (text_writer(content) if isinstance(content, str) else content)(tmps[name])
    for name, tmp in tmps.items():
        os.replace(tmp, os.path.join(directory, name))


def read_json(path: str, missing: str, corrupt: str):
    """The parsed JSON file ``path``; one line when it is absent (``missing``, the whole message)
    or corrupt (``<path>:<line>: <corrupt> (<what the parser says>)``)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(missing) from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: {corrupt} ({e.msg})") from None


def read_json_record(directory: str, name: str, kind: str, corrupt: str) -> dict:
    """The JSON record ``directory/name`` of a stored thing; one line when it is absent
    (``<dir>: not <kind> (no <name>)``) or corrupt (``<file>:<line>: corrupt <corrupt> (...)``)."""
    return read_json(os.path.join(directory, name), f"{directory}: not {kind} (no {name})", f"corrupt {corrupt}")


def first_mismatch(saved: dict, current: dict, fields: Iterable[str]) -> Optional[str]:
    """The first of ``fields`` recorded in ``saved`` whose value differs in ``current``, else None."""
    for name in fields:
        if name in saved and saved.get(name) != current.get(name):
            return name
    return None
