"""Data: the bundled corpus (prepared from ``synthetic/``), its tokenizer, megatron indexed datasets,
QA prompts and the real task loaders (``tasks/``).

Public entry points (import from the submodules; this package imports nothing heavy):
- ``prepare.prepare_bundled_data(dir, num_entities, vocab_size, seed, split) -> BundledData``
  and ``prepare.load_bundled_data(dir, ...)``, ``prepare.resolve_data(data_config)``
- ``stats.heldout_tokens(bundle, "valid")``, ``stats.unigram_entropy(ids)``,
  ``stats.unigram_cross_entropy(train_ids, eval_ids, vocab_size)``, ``stats.retrieval_coverage``,
  ``stats.blind_baseline_em``
- ``tokenizer.load_tokenizer(path) -> Tokenizer`` (``.megatron`` for GPTDatasetConfig)
- ``indexed.build_gpt_datasets(prefix, tokenizer, seq_length, split, num_samples, seed)``
- ``qa_prompts``: the QA sample layout of GPT and RETRO prompts
- ``synthetic/``: the encyclopedia generator (``synthetic.encyclopedia.generate(num_entities, seed)``,
  ``read_documents / read_qa``) and the RAG splits built from it; see its package docstring
"""
