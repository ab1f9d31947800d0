"""Memory / time planning for the paper's model sizes, from models built on the meta device.

Public API: ``plan.make_plan`` / ``format_plan`` (`megatron-retro plan`), ``recommend.recommend`` /
``plan_layout`` (TP/PP/DP layouts), ``memory``, ``param_count.count_parameters``,
``peft_counts.peft_trainable``, ``docs_table`` (docs/planner.md).
"""
