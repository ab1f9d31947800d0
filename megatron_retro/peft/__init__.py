"""Parameter-efficient fine-tuning for GPT (and RETRO) under TP/PP: one module per method.

Methods register in :mod:`megatron_retro.peft.registry`: ``lora``, ``qlora``, ``adapter``
(Houlsby serial), ``parallel_adapter``, ``ptuning``, ``prompt``, ``prefix``, ``ia3``.  The TP
sharding rule lives in :mod:`megatron_retro.peft.tp_rule`; target selection (module-path
patterns x megatron linear types) in :mod:`megatron_retro.peft.targets`.
"""
from megatron_retro.peft.api import (apply_peft, config_from_dict, config_to_dict, load_peft_state_dict,
                                     make_peft_config, merge_peft, peft_method_count, peft_state_dict,
                                     trainable_parameters)
from megatron_retro.peft.grads import install_peft_grad_reduction, peft_finalize_model_grads
from megatron_retro.peft.registry import get_method, method_names, register_peft_method

__all__ = ["apply_peft", "peft_state_dict", "load_peft_state_dict", "merge_peft", "make_peft_config",
           "config_from_dict", "config_to_dict", "peft_method_count", "trainable_parameters",
           "install_peft_grad_reduction", "peft_finalize_model_grads", "get_method", "method_names",
           "register_peft_method"]
