"""Data: the bundled synthetic encyclopedia, its tokenizer, megatron indexed datasets.

Public entry points (import from the submodules; this package imports nothing heavy):
- ``prepare.prepare_bundled_data(dir, num_entities, vocab_size, seed, split) -> BundledData``
  and ``prepare.load_bundled_data(dir, ...)``, ``prepare.resolve_data(data_config)``
- ``prepare.heldout_tokens(bundle, "valid")``, ``prepare.unigram_entropy(ids)``,
  ``prepare.unigram_cross_entropy(train_ids, eval_ids, vocab_size)``
- ``tokenizer.load_tokenizer(path) -> Tokenizer`` (``.megatron`` for GPTDatasetConfig)
- ``indexed.build_gpt_datasets(prefix, tokenizer, seq_length, split, num_samples, seed)``
- ``encyclopedia.generate(num_entities, seed)``, ``encyclopedia.read_documents / read_qa``
"""
