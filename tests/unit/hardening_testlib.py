"""Helpers of the hardening tests: what "byte-identical afterwards" compares."""
import contextlib
import hashlib
import os
import subprocess

import pytest


def tree_digest(root) -> dict:
    """{relative path: sha256} of every file under ``root``."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


@contextlib.contextmanager
def small_tmpfs(mount, size: str = "2m"):
    """A tmpfs of ``size`` mounted at ``mount`` (CI runs as root); the test is skipped, with the
    reason, where mounting is impossible."""
    os.makedirs(mount, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_disk(mount, leave: int) -> None:
    """Write a filler file so that about ``leave`` bytes stay free on ``mount``'s file system."""
    st = os.statvfs(mount)
    with open(os.path.join(mount, "filler"), "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
