"""GPTModel whose training loss goes through the chunked output-layer + cross-entropy op.

megatron-core's ``GPTModel._postprocess`` runs the output ColumnParallelLinear over every token
(fp32 logits [ns, bs, v/tp] and their gradient of the same size) and then its vocab-parallel
cross-entropy.  With labels given, :class:`FusedOutputLossMixin` instead hands the final hidden
states, the output weight (or the tied embedding) and the loss mask to
:func:`megatron_retro.models.output_loss.linear_cross_entropy`: the same losses and gradients,
logits only for the rows whose loss is taken, one [c, v/tp] block at a time.  The input goes
through the output layer's own TP mapping first (SP all-gather, or copy-to-TP region), so the
communication is that of the plain path.

The plain path is kept, and taken, for logits (no labels), multi-token prediction, inference,
an output layer with a bias, an output layer whose forward was replaced or hooked (a PEFT method
on it), or ``fused_output_loss = False`` (``model.fused_output_loss=false``).
"""
from __future__ import annotations

from megatron.core.models.gpt import GPTModel
from megatron.core.tensor_parallel.mappings import (copy_to_tensor_model_parallel_region,
                                                    gather_from_sequence_parallel_region)

from megatron_retro.models.output_loss import linear_cross_entropy


class FusedOutputLossMixin:
    """Overrides ``_postprocess`` of a GPTModel (sub)class; see the module docstring."""

    fused_output_loss = True

    def _fusable(self, kwargs: dict) -> bool:
        if not (self.fused_output_loss and self.post_process and kwargs.get("labels") is not None):
            return False        # (no output layer at all on a non-last pipeline stage)
        layer = self.output_layer
        return (kwargs.get("inference_context") is None and not kwargs.get("mtp_in_postprocess")
                and self.config.mtp_num_layers is None and getattr(layer, "bias", None) is None
                and "forward" not in vars(layer) and not layer._forward_hooks and not layer._forward_pre_hooks)

    def _postprocess(self, *args, **kwargs):
        if args or not self._fusable(kwargs):
            return super()._postprocess(*args, **kwargs)
        layer = self.output_layer
        weight = self.shared_embedding_or_output_weight() if self.share_embeddings_and_output_weights \
            else layer.weight                                      # [v/tp, d]
        hidden = kwargs["hidden_states"]                           # [ns(/tp), bs, d]
        group = layer.tp_group
        if layer.sequence_parallel:
            hidden = gather_from_sequence_parallel_region(hidden, tensor_parallel_output_grad=True, group=group)
        elif group.size() > 1:
            hidden = copy_to_tensor_model_parallel_region(hidden, group=group)
        return linear_cross_entropy(hidden, weight, kwargs["labels"], kwargs.get("loss_mask"), tp_group=group)


class FusedLossGPTModel(FusedOutputLossMixin, GPTModel):
    """megatron-core GPTModel with the fused training loss (same parameters and checkpoints)."""
