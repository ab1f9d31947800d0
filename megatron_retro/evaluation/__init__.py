"""Evaluation: answers (EM, F1, ROUGE-L), generation, the experiment grid, tables, the RAG suite.

Public API (import the submodules; this package imports nothing on its own):

* ``answer_eval``: ``evaluate(cfg, load, adapter)`` (`megatron-retro evaluate`),
  ``evaluate_model``, ``load_for_eval``, ``write_eval``
* ``generation.generate`` (KV-cached greedy decoding; RETRO retrieves at chunk boundaries),
  ``pipeline_generation.generate_pipelined`` (several pipeline stages)
* ``metrics``: ``exact_match``, ``token_f1``, ``rouge_l``, ``score_all``
* ``experiment.run_experiment(exp)`` (`megatron-retro experiment`), ``experiment_config``,
  ``grid_runs`` (``model_config``, ``run_pretrain``, ``is_writer``), ``perplexity_study``
* ``tables``: ``write_report``, ``aggregate``, ``findings``, ``band_verdict``
* ``rag_suite.evaluate_rag`` / ``run_suite``, ``rag_metrics``, ``rag_report``
"""
