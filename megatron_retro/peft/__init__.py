"""Parameter-efficient fine-tuning for GPT (and RETRO) under TP/PP: one module per method.

Methods register in :mod:`megatron_retro.peft.registry`: ``lora``, ``qlora``, ``adapter``
(Houlsby serial), ``parallel_adapter``, ``ptuning``, ``prompt``, ``prefix``, ``ia3``.  The TP
sharding rule lives in :mod:`megatron_retro.peft.tp_rule`; target selection (module-path
patterns x megatron linear types) in :mod:`megatron_retro.peft.targets`.

Public API (``from megatron_retro.peft import ...``, see ``__all__``): ``make_peft_config``,
``apply_peft``, ``peft_state_dict`` / ``load_peft_state_dict``, ``merge_peft``,
``config_from_dict`` / ``config_to_dict``, ``trainable_parameters``, ``peft_method_count``; the
registry's ``get_method`` / ``method_names`` / ``register_peft_method``; gradient reduction
``install_peft_grad_reduction`` / ``peft_finalize_model_grads``.
"""
# Imported on first use (PEP 562): `megatron-retro --help` and `peft methods` must not pay for
# torch/megatron-core just because the CLI registers this package's commands.
_EXPORTS = {
    "megatron_retro.peft.api": ("apply_peft", "config_from_dict", "config_to_dict", "load_peft_state_dict",
                                "make_peft_config", "merge_peft", "peft_method_count", "peft_state_dict",
                                "trainable_parameters"),
    "megatron_retro.peft.grads": ("install_peft_grad_reduction", "peft_finalize_model_grads"),
    "megatron_retro.peft.registry": ("get_method", "method_names", "register_peft_method"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["apply_peft", "peft_state_dict", "load_peft_state_dict", "merge_peft", "make_peft_config",
           "config_from_dict", "config_to_dict", "peft_method_count", "trainable_parameters",
           "install_peft_grad_reduction", "peft_finalize_model_grads", "get_method", "method_names",
           "register_peft_method"]
