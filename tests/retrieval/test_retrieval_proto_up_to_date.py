"""The checked-in gRPC modules match what grpcio-tools generates from retrieval.proto."""
import pytest

from megatron_retro.retrieval.service import protogen


def test_generated_code_is_up_to_date(tmp_path):
    pytest.importorskip("grpc_tools")
    protogen.generate(tmp_path)
    for name in ("retrieval_pb2.py", "retrieval_pb2_grpc.py"):
        assert (tmp_path / name).read_text() == (protogen.HERE / name).read_text(), \
            f"{name} is stale: run python -m megatron_retro.retrieval.service.protogen"
