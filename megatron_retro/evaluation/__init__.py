"""Evaluation: answers (EM, F1, ROUGE-L), generation, the experiment grid, tables, the RAG suite.

Public API (import the submodules; this package imports nothing on its own):

* ``answer_eval``: ``evaluate(cfg, load, adapter)`` (`megatron-retro evaluate`),
  ``evaluate_model``, ``load_for_eval``, ``write_eval``
* ``generation.generate`` (KV-cached greedy decoding; RETRO retrieves at chunk boundaries),
  ``pipeline_generation.generate_pipelined`` (several pipeline stages)
* ``metrics``: ``exact_match``, ``token_f1``, ``rouge_l``, ``score_all``
* ``experiment.run_experiment(exp)`` (`megatron-retro experiment`), ``experiment.plan_lines``; its
  phases ``experiment_retrieval`` (``prepare_retrieval``, ``Services``) and ``experiment_cells``
  (``pretrain_base``, ``run_cell``); ``experiment_config`` (``ExperimentConfig``), ``grid_runs``
  (``grid``, ``model_config``, ``run_pretrain``, ``is_writer``, ``log``), ``experiment_suites``,
  ``perplexity_study``
* ``score_cells`` (``ScoreRow``, ``aggregate`` -> ``Cell``), ``findings`` (``findings``, ``Floor``,
  ``band_verdict``), ``plots.build_figure``, ``tables`` (``markdown_table``, ``write_report``,
  ``write_score_rows`` / ``read_score_rows``)
* ``rag_suite.evaluate_rag`` / ``run_suite``, ``rag_metrics``, ``rag_report``
"""
