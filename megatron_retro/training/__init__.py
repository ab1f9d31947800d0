"""Training: pretraining / fine-tuning loops on megatron-core schedules, optimizer, checkpoints.

Public API (import the submodules; this package imports nothing on its own):

* ``pretrain.pretrain(cfg, ...) -> PretrainResult`` (GPT), ``retro_pretrain.pretrain_retro(cfg)``
* ``finetune.finetune(cfg, peft_cfg, adapter_dir) -> FinetuneResult``, ``finetune.load_model``,
  ``finetune.parameter_counts``, ``merge_adapter_checkpoint``, ``export_hf_checkpoint``
* ``engine.Engine`` (DDP-wrapped chunks, optimizer, ``train_step`` / ``evaluate``),
  ``retro_step.RetroEngine``; forward steps in ``gpt_step`` / ``retro_step``
* ``checkpointing``: ``save_checkpoint``, ``load_checkpoint``, ``newest_checkpoint``, ``read_state``
* ``metrics``: ``MetricsWriter`` (metrics.jsonl, TensorBoard), ``read_metrics``, ``plot_loss_curve``
* data of a run: ``data_setup`` (``PretrainData``, ``prepare_gpt_datasets``, ``rank0_first``),
  ``qa_data`` (QA samples with passages), ``retro_data`` / ``neighbour_feed`` (RETRO neighbours),
  ``rag_passages``, ``retrieval_db``, ``precompute.precompute_run``
* checkpoint conversion: ``hf_convert.import_hf / export_hf``, ``mcore_import.import_mcore``,
  ``retro_from_gpt.load_gpt_into_retro``
"""
