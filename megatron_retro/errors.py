"""Errors that report bad user input (files, checkpoints, data) in one line naming the problem.

:func:`describe_failure` is the one place that turns any exception reaching the CLI into an
exit code and a single line: bad input (``UserError``, ``ConfigError``, a missing or unreadable
file) exits 2; a runtime failure (a full disk, an unreachable service, anything unexpected)
exits 1.  The traceback is shown only with ``--debug``.
"""
from __future__ import annotations

import errno

# Exit codes of the CLI.
EXIT_USER = 2      # the input is wrong: fix the command, config or file named in the message
EXIT_RUNTIME = 1   # the input is fine but the run failed (disk full, service down, a bug)


class UserError(Exception):
    """Bad input from the user: the message names the file, field or constraint at fault."""


class RuntimeFailure(RuntimeError):
    """A run that failed for a reason outside the input (disk full, peer died); one-line message."""


# OSErrors that mean "the path you gave is wrong" rather than "the machine failed".
_USER_ERRNOS = {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.EEXIST,
                errno.ENAMETOOLONG}


def one_line(text: str) -> str:
    """Collapse a (possibly multi-line) message to one line, losing no words."""
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


def os_error_line(e: OSError, what: str = "") -> str:
    """``<file>: <what>: <strerror>`` with ENOSPC spelled "no space left on device"."""
    where = e.filename or what or "?"
    reason = "no space left on device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
    return f"{where}: {what + ': ' if what and e.filename else ''}{reason}"


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` (or what it wraps) is ENOSPC, also from libraries that report it as text
    (safetensors: ``IoError(Os { code: 28, ... })``)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if getattr(exc, "errno", None) == errno.ENOSPC:
            return True
        text = str(exc)
        if "No space left on device" in text or "[Errno 28]" in text or "code: 28" in text:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def describe_failure(exc: BaseException) -> tuple[int, str]:
    """(exit code, one-line message) for an exception that reached the command line."""
    from megatron_retro.config import ConfigError  # a leaf module; no import circle

    if isinstance(exc, (UserError, ConfigError)):
        return EXIT_USER, one_line(exc)
    if isinstance(exc, RuntimeFailure):
        return EXIT_RUNTIME, one_line(exc)
    if isinstance(exc, OSError) and exc.errno is not None:
        code = EXIT_USER if exc.errno in _USER_ERRNOS else EXIT_RUNTIME
        return code, one_line(os_error_line(exc))
    if isinstance(exc, MemoryError):
        return EXIT_RUNTIME, "out of memory"
    first = one_line(exc) or "(no message)"
    return EXIT_RUNTIME, f"{type(exc).__name__}: {first} (rerun with --debug for the traceback)"
