"""`megatron-retro data prepare`: generate (or reuse) the bundled corpus, QA, tokenizer and
indexed dataset, and print their paths and corpus statistics. Heavy imports stay in handlers."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="bundled corpus, tokenizer, indexed dataset")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="<action>")
    p = sub.add_parser("prepare", help="generate or reuse the bundled data directory",
                       description=prepare.__doc__)
    p.add_argument("--dir", default="data/bundled", help="output directory (data.dir)")
    p.add_argument("--num-entities", type=int, default=1500,
                   help="entities in the generated encyclopedia (data.num_entities)")
    p.add_argument("--vocab-size", type=int, default=4096,
                   help="SentencePiece vocabulary size (data.vocab_size)")
    p.add_argument("--seed", type=int, default=1234, help="generator seed (data.seed)")
    p.add_argument("--split", default="98,2,0",
                   help="train,valid,test weights of the document split (data.split)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=prepare)


def prepare(args: argparse.Namespace) -> int:
    """Generate the synthetic encyclopedia, train the tokenizer on its train documents and
    write the megatron indexed dataset; reuses the directory when nothing changed."""
    from megatron_retro.data.prepare import prepare_bundled_data

    data = prepare_bundled_data(args.dir, args.num_entities, args.vocab_size, args.seed,
                                args.split, progress=not args.quiet)
    st = data.stats
    print(f"data dir:       {data.dir} ({'reused' if data.reused else 'generated'})")
    print(f"documents:      {data.documents}")
    print(f"facts:          {data.facts}")
    for split, path in data.qa.items():
        print(f"{'qa/' + split + ':':<16}{path} ({st['qa_per_split'][split]} pairs)")
    print(f"tokenizer:      {data.tokenizer} (vocab {data.params['vocab_size']})")
    print(f"indexed prefix: {data.prefix}")
    print(f"corpus:         {st['documents']} documents, {st['tokens']} tokens, "
          f"{st['entities']} entities, {st['facts']} facts")
    dps, tps = st["documents_per_split"], st["tokens_per_split"]
    print("split:          " + ", ".join(f"{s} {dps[s]} docs / {tps[s]} tokens" for s in dps))
    print(f"unigram entropy: train {st['unigram_entropy_train_nats']:.4f} nats/token, "
          f"valid {st['unigram_entropy_valid_nats']:.4f}; unigram cross-entropy on valid "
          f"{st['unigram_cross_entropy_valid_nats']:.4f}")
    print(f"retrieval:      {st['heldout_facts_in_train_docs']:.1%} of the "
          f"{st['heldout_facts']} facts in held-out documents are also in train documents; "
          f"{st['qa_with_train_gold_doc']:.1%} of QA pairs have a train gold document")
    lo, med, hi = st["docs_per_fact_min_median_max"]
    print(f"redundancy:     each fact in {lo}-{hi} documents (median {med}); question-blind "
          f"baseline EM on test QA {st['qa_blind_baseline_test_em']:.1%}")
    print(f"time:           generate {st['generate_s']} s, tokenizer {st['tokenizer_s']} s, "
          f"indexed {st['indexed_s']} s")
    return 0
