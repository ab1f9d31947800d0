"""benchmarks/bench_kernels.py: the FLOP/byte floor arithmetic and its CPU-only report."""
import importlib.util
import pathlib
import sys

import torch

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "bench_kernels.py"


def load():
    spec = importlib.util.spec_from_file_location("bench_kernels", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_kernels"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_floor_arithmetic():
    bench = load()
    s = bench.LoraShape("tiny", M=2, K=3, N=4, R=1)
    assert s.flops(False) == 2 * 2 * 3 * 4 + 2 * 2 * 3 * 1 + 2 * 2 * 1 * 4
    # fused forward bytes: X, W, Y in bf16 + fp32 adapters + fp32 H
    assert s.bytes_fused(2, False) == 2 * (6 + 12 + 8) + 4 * (3 + 4) + 4 * 2
    assert s.bytes_unfused(2, False) > s.bytes_fused(2, False)
    c = bench.CcaShape("tiny", ns=130, bs=1, h=2, hd=8, k=2, r=3, m=64)
    assert (c.l, c.nk) == (3, 6)
    assert c.flops(False) == 4 * 64 * 6 * 8 * 3 * 1 * 2
    assert c.flops(True) == 3.5 * c.flops(False)


def test_cpu_report_states_that_timings_need_a_gpu(capsys):
    if torch.cuda.is_available():
        return  # on a GPU the same entry point times the kernels instead
    load().main(["--dtype", "bf16", "--markdown"])
    out = capsys.readouterr().out
    assert "timings need a GPU" in out
    rows = [line for line in out.splitlines() if line.startswith("| fused_lora") or
            line.startswith("| cca")]
    assert len(rows) == 2 * (5 + 3)  # fwd and fwd+bwd per shape
