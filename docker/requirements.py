#!/usr/bin/env python
"""Print the pinned runtime requirements an image installs, from setup.py's install_requires.

    python docker/requirements.py gpu|cpu [--setup setup.py]

setup.py is the one list of pins.  ``gpu`` (NGC PyTorch base) drops torch and triton, which the
base image provides in its own CUDA builds (install.sh freezes them as constraints), and swaps
faiss-cpu for faiss-gpu of the same version (one module name, never both).  ``cpu`` keeps the
list as it is (torch is installed first from the CPU wheel in the build context).
"""
from __future__ import annotations

import argparse
import ast
import os
import re
import sys

FROM_BASE_IMAGE = ("torch", "triton")


def install_requires(setup_py: str) -> list[str]:
    """The literal install_requires list of the setup() call (read, not executed)."""
    tree = ast.parse(open(setup_py, encoding="utf-8").read(), setup_py)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup":
            for kw in node.keywords:
                if kw.arg == "install_requires":
                    return list(ast.literal_eval(kw.value))
    raise SystemExit(f"{setup_py}: no literal install_requires in setup()")


def name_of(req: str) -> str:
    return re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].strip().lower().replace("_", "-")


def for_image(reqs: list[str], mode: str) -> list[str]:
    if mode == "cpu":
        return list(reqs)
    out = []
    for req in reqs:
        name = name_of(req)
        if name in FROM_BASE_IMAGE:
            continue
        out.append(req.replace("faiss-cpu", "faiss-gpu", 1) if name == "faiss-cpu" else req)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["gpu", "cpu"])
    p.add_argument("--setup", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "setup.py"))
    args = p.parse_args(argv)
    sys.stdout.write("".join(r + "\n" for r in for_image(install_requires(args.setup), args.mode)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
