"""The GPU path compiles: every kernel, as the launchers would start it on CUDA, is compiled for
sm_80 (Triton → PTX → cubin with the ptxas bundled in the triton wheel) on this CPU machine, and
fits: shared memory below the 99 KiB of sm_86/89 parts, no register spills in bf16."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

EXPECTED = {"_lora_fwd_kernel", "_lora_bwd_dx_kernel", "_lora_bwd_da_kernel", "_nf4_dequant_kernel",
            "_lora_bwd_db_kernel", "_cca_fwd_kernel", "_cca_bwd_kernel"}


@pytest.mark.slow
def test_all_kernels_compile_for_sm80_without_spills():
    code = textwrap.dedent("""
        import json, torch
        from megatron_retro.kernels.gpu_compile_check import compile_all
        print(json.dumps(compile_all(torch.bfloat16, 80)))
    """)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    assert {r["kernel"] for r in rows} == EXPECTED
    for r in rows:
        assert r["shared_bytes"] <= 99 * 1024, r
        assert r["stack_bytes"] == 0, r
