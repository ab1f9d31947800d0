"""Helpers shared by the ops tests (a uniquely named module: every tests/ folder has a conftest)."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_pretrain_args(data_dir: str, steps: int = 3) -> list[str]:
    """`megatron-retro pretrain` arguments of a seconds-long run on the small data set."""
    return ["--steps", str(steps),
            "model.num_layers=2", "model.hidden_size=64", "model.num_attention_heads=4",
            "model.seq_length=64", "train.micro_batch_size=2", "train.global_batch_size=4",
            "train.lr_warmup_steps=1", "train.eval_interval=0", "train.eval_iters=1",
            "checkpoint.save_interval=0", f"data.dir={data_dir}", "data.num_entities=60",
            "data.vocab_size=512", "data.seed=3", "data.split=90,10,0"]


def run_cli(args, env=None, timeout=600):
    """Run `python -m megatron_retro.cli ...` in its own session; raise with its output on failure."""
    full_env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "megatron_retro.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=REPO, start_new_session=True)
    if proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc
