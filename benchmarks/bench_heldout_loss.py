"""Does the tiny GPT learn the bundled corpus?  Held-out loss after a CPU budget of minutes vs the
unigram baselines of the same held-out documents.

    python benchmarks/bench_heldout_loss.py                       # configs/models/gpt-tiny.yaml
    python benchmarks/bench_heldout_loss.py --steps 200 --out runs/heldout

Runs `pretrain` in this process (TP1), then prints one JSON line: wall time, final train and
held-out loss (nats/token), the held-out unigram entropy (the best context-free model fit on the
held-out text itself) and the unigram cross-entropy of a model fit on the training documents.
"""
from __future__ import annotations

import argparse
import json
import math
import time
import warnings

warnings.filterwarnings("ignore")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/models/gpt-tiny.yaml")
    ap.add_argument("--steps", type=int, default=None, help="override train.steps")
    ap.add_argument("--out", default="runs/bench-heldout")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()

    from megatron_retro.config import load_config
    from megatron_retro.data.prepare import resolve_data
    from megatron_retro.data.stats import heldout_tokens, unigram_cross_entropy, unigram_entropy
    from megatron_retro.parallel.initialize import destroy_parallel
    from megatron_retro.training.pretrain import pretrain

    overrides = list(args.overrides) + [f"out_dir={args.out}", "checkpoint.resume=false"]
    if args.steps:
        overrides.append(f"train.steps={args.steps}")
    cfg = load_config(args.config, overrides)
    data = resolve_data(cfg.data)
    valid = heldout_tokens(data, "valid")
    train = heldout_tokens(data, "train")
    t0 = time.perf_counter()
    result = pretrain(cfg, progress=False)
    wall = time.perf_counter() - t0
    destroy_parallel()
    vocab = cfg.data.vocab_size
    print(json.dumps({
        "config": args.config, "steps": cfg.train.steps, "wall_s": round(wall, 1),
        "tokens_seen": cfg.train.steps * cfg.train.micro_batch_size * cfg.model.seq_length,
        "train_loss": round(result.last_loss, 4), "heldout_loss": round(result.valid_loss, 4),
        "heldout_unigram_entropy": round(unigram_entropy(valid), 4),
        "unigram_cross_entropy_train_to_heldout": round(unigram_cross_entropy(train, valid, vocab), 4),
        "uniform": round(math.log(vocab), 4),
        "heldout_tokens": int(valid.size),
    }))


if __name__ == "__main__":
    main()
