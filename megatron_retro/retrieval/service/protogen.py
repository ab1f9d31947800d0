"""Regenerate retrieval_pb2.py / retrieval_pb2_grpc.py from retrieval.proto with grpcio-tools.

The generated modules are checked in so that ``pip install -e .`` needs no build step; a test
regenerates them into a temporary directory and checks they are up to date.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def generate(out_dir: Path = HERE) -> None:
    from grpc_tools import protoc
    import grpc_tools

    include = str(Path(grpc_tools.__file__).parent / "_proto")
    rc = protoc.main(["grpc_tools.protoc", f"-I{HERE}", f"-I{include}", f"--python_out={out_dir}",
                      f"--grpc_python_out={out_dir}", str(HERE / "retrieval.proto")])
    if rc != 0:
        raise RuntimeError(f"protoc failed with exit code {rc}")
    # grpc_tools emits a top-level `import retrieval_pb2`; make it package-relative.
    grpc_file = out_dir / "retrieval_pb2_grpc.py"
    text = re.sub(r"^import retrieval_pb2 as", "from . import retrieval_pb2 as", grpc_file.read_text(), flags=re.M)
    grpc_file.write_text(text)


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
