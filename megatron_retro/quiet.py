"""One place that silences the warnings megatron-core and torch print on every CPU run although
they mean nothing on this path (no Apex / Transformer Engine on CPU, a deprecated
``cuda_graph_scope`` default, ShardedTensor and DCP ``load_state_dict`` FutureWarnings from
dist_checkpointing; transformers' own deprecated call inside ``save_pretrained`` on HF export;
megatron's hint that TE's fused core attention needs no ``core_attn`` recompute, shown with local
attention too; megatron's log line "Unknown MLP type" for the local spec's SwiGLUMLP, a subclass of
its MLP built with the same default TP group).

Only these exact messages are filtered; anything else still shows.  Called once by the CLI
before any command runs; library users may call it too.
"""
from __future__ import annotations

import logging
import warnings

# (message regex, category, module regex): see the module docstring for why each is harmless.
KNOWN_NOISE = (
    (r"Transformer Engine and Apex are not installed", UserWarning, r"megatron\."),
    (r".*Apex is not installed", UserWarning, r"megatron\."),
    (r".*cuda_graph_scope", DeprecationWarning, r""),
    (r".*cuda_graph_scope", UserWarning, r"megatron\."),
    (r".*ShardedTensor", FutureWarning, r""),
    (r".*torch\.distributed\._shard", FutureWarning, r""),
    (r"`load_state_dict` is deprecated", FutureWarning, r"megatron\."),  # dist_checkpointing's DCP call
    (r"`is_gradient_checkpointing` is deprecated", FutureWarning, r"transformers\."),  # inside save_pretrained
    # model.recompute_modules=[core_attn] with our local/SDPA attention: the TE-fused hint does not apply
    (r"If you are using transformer_engine as the transformer implementation", UserWarning, r"megatron\."),
)


# (logger, message prefix) of log records (not warnings) that mean nothing here
KNOWN_LOG_NOISE = (("megatron.core.transformer.transformer_layer", "Unknown MLP type"),)


class _DropPrefix(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def quiet_known_warnings() -> None:
    """Install the filters (idempotent: warnings.filterwarnings skips an identical filter)."""
    for message, category, module in KNOWN_NOISE:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name, prefix in KNOWN_LOG_NOISE:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropPrefix) and f.prefix == prefix for f in logger.filters):
            logger.addFilter(_DropPrefix(prefix))
