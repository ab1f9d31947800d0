"""glibc's allocator controls (``malloc_trim``, ``mallopt``) through ctypes; None off glibc."""
from __future__ import annotations

import ctypes
import ctypes.util
from typing import Callable, Optional


def libc_function(name: str) -> Optional[Callable]:
    """The C library's function ``name`` (int arguments, int result), or None where there is none."""
    lib = ctypes.util.find_library("c")
    try:
        fn = getattr(ctypes.CDLL(lib), name) if lib else None
    except (OSError, AttributeError):
        return None
    if fn is not None:
        fn.restype = ctypes.c_int
    return fn
