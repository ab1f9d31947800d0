"""Helpers of the hardening tests: what "byte-identical afterwards" compares."""
import hashlib
import os


def tree_digest(root) -> dict:
    """{relative path: sha256} of every file under ``root``."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out
