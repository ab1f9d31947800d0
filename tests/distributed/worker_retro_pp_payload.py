"""torchrun worker (4 ranks): RETRO's pipeline payload shrinks after the last retrieval layer, and
greedy generation under PP2 equals PP1's token for token (GPT and RETRO).

Payload: a 4-layer RETRO with one retrieval layer (2).  Every boundary after layer 2 must carry
the hidden states alone [ns(/tp), bs, d]; a boundary before it the full payload
[ns + r·k·l (/tp), bs, d].  The expected layout per boundary is written out here by hand (not
derived from the code under test), the bytes are counted where megatron's p2p hands tensors to
torch.distributed (isend / irecv, and batched P2POps if any), and loss and
gradients are compared with TP1xPP1 for the same weights and data.

Generation: GPT, RETRO with its retrieval layer on the second stage (context crosses the boundary)
and on the first (it does not); PP2 generates through the pipeline schedule, PP1 with the KV
cache.  Rank 0 prints RESULT lines.
"""
import json
import sys
import warnings

warnings.filterwarnings("ignore")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from megatron.core.pipeline_parallel import p2p_communication  # noqa: E402

from megatron_retro.config import load_config  # noqa: E402
from megatron_retro.models.global_params import assemble_full, init_by_global_name, worst_relative_error  # noqa: E402
from megatron_retro.parallel.initialize import initialize_parallel  # noqa: E402
from worker_retro_equivalence import GBS, K, M, R, SEQ, run_layout  # noqa: E402

D = 64                                   # the worker's model.hidden_size
FULL, HIDDEN = SEQ + R * K * (SEQ // M), SEQ   # payload rows with / without the neighbour context
# (layout, expected rows sent over boundary i -> i+1 of the model chunks in pipeline order)
LAYOUTS = [
    (dict(tp=1, pp=2), [HIDDEN]),                       # layer 2 on stage 0: no context crosses
    (dict(tp=2, pp=2, sp=True), [HIDDEN]),
    (dict(tp=1, pp=4), [FULL, HIDDEN, HIDDEN]),        # layer 2 on stage 1
    (dict(tp=1, pp=2, vpp=2), [FULL, FULL, FULL]),      # interleaved: one declared shape, the full payload
]


class P2PBytes:
    """Counts bytes this rank sends to the next / previous stage, and all bytes torch.distributed
    sends point-to-point (payloads, gradients and shape messages)."""

    def __init__(self):
        self.next = self.prev = self.torch_sent = 0
        self.next_rows = set()
        communicate = p2p_communication.P2PCommunicator._communicate
        isend, batch, p2p_op = dist.isend, dist.batch_isend_irecv, dist.P2POp
        counter = self

        def counted_communicate(comm, *, tensor_send_next, tensor_send_prev, **kw):
            if tensor_send_next is not None:
                counter.next += tensor_send_next.numel() * tensor_send_next.element_size()
                counter.next_rows.add(tensor_send_next.shape[0])
            if tensor_send_prev is not None:
                counter.prev += tensor_send_prev.numel() * tensor_send_prev.element_size()
            return communicate(comm, tensor_send_next=tensor_send_next, tensor_send_prev=tensor_send_prev, **kw)

        def counted_isend(tensor, *args, **kw):
            counter.torch_sent += tensor.numel() * tensor.element_size()
            return isend(tensor, *args, **kw)

        def real_op(op, *args, **kw):   # megatron builds P2POp(torch.distributed.isend, ...): torch's own
            return p2p_op(isend if op is counted_isend else op, *args, **kw)

        def counted_batch(ops):
            counter.torch_sent += sum(op.tensor.numel() * op.tensor.element_size() for op in ops if op.op is isend)
            return batch(ops)

        p2p_communication.P2PCommunicator._communicate = counted_communicate
        dist.isend, dist.batch_isend_irecv, dist.P2POp = counted_isend, counted_batch, real_op


def payload_case(counter, ref_loss, ref_full, layout, boundaries):
    from megatron.core import parallel_state as ps

    counter.next = counter.prev = counter.torch_sent = 0
    counter.next_rows = set()
    _, loss, grads = run_layout(layout, retrieval="[2]")
    tp, pp, vpp = layout["tp"], layout["pp"], layout.get("vpp", 1)
    sp = tp if layout.get("sp") else 1
    micro = GBS // (4 // (tp * pp))                   # micro-batches of size 1 per pipeline
    rank, expected, expected_prev = ps.get_pipeline_model_parallel_rank(), 0, 0
    for v in range(vpp):       # this rank's chunk c = v·pp + rank: payload out over c, gradient back over c-1
        c = v * pp + rank
        if c < len(boundaries):
            expected += boundaries[c] // sp * D * 4 * micro
        if c > 0:
            expected_prev += boundaries[c - 1] // sp * D * 4 * micro
    worst_grad, _ = worst_relative_error(grads, ref_full)
    loss_err = abs(loss - ref_loss) / abs(ref_loss) if loss is not None else 0.0
    shape_msgs = counter.torch_sent - counter.next - counter.prev   # 3 int64 per message (interleaved)
    row = {"rank": dist.get_rank(), "sent_next": counter.next, "expected_next": expected,
           "sent_prev": counter.prev, "expected_prev": expected_prev, "rows_next": sorted(counter.next_rows), "shape_bytes": shape_msgs}
    rows = [None] * dist.get_world_size()
    dist.all_gather_object(rows, row)
    stats = torch.tensor([worst_grad, loss_err], dtype=torch.float64)
    dist.all_reduce(stats, op=dist.ReduceOp.MAX)
    if dist.get_rank() == 0:
        print("RESULT " + json.dumps({"case": "payload", "layout": layout, "ranks": rows, "ref_loss": ref_loss,
                                      "grad_rel_err": stats[0].item(), "loss_rel_err": stats[1].item()}), flush=True)


def generation_case(arch, retrieval, pp):
    from megatron_retro.evaluation.generation import generate
    from megatron_retro.evaluation.pipeline_generation import generate_pipelined
    from megatron_retro.training.finetune import build_model

    vocab = 200
    overrides = [f"parallel.pp={pp}", "model.num_layers=4", f"model.hidden_size={D}", "model.num_attention_heads=4",
                 "model.ffn_hidden_size=128", "model.seq_length=64", "model.rotary_percent=0.5",
                 "train.precision=fp32"]
    if arch == "retro":
        overrides += ["model.arch=retro", f"retro.chunk_length={M}", f"retro.num_neighbours={K}",
                      f"retro.neighbour_length={R}", f"retro.retrieval_layers=[{retrieval}]"]
    cfg = load_config(None, overrides)
    initialize_parallel(cfg.parallel, seed=3)
    chunks = build_model(cfg, vocab)
    init_by_global_name(chunks, seed=5, std=0.2)
    prompts = torch.randint(4, vocab, (3, 2 * M - 3), generator=torch.Generator().manual_seed(11))
    nb = torch.randint(4, vocab, (3, 1, K, R), generator=torch.Generator().manual_seed(12))
    # the prompt's one complete chunk has neighbours nb; later chunks get pad neighbours (id 0),
    # as generate_pipelined gives them, so the 8 new tokens cross into chunk 1 on both paths
    if pp == 1:
        calls = []

        def retriever(chunk):
            calls.append(chunk)
            return nb.numpy() if len(calls) == 1 else torch.zeros_like(nb).numpy()
        out = generate(chunks[0], prompts, 8, vocab, retriever=retriever if arch == "retro" else None)
    else:
        out = generate_pipelined(chunks, prompts, 8, vocab, neighbours=nb if arch == "retro" else None,
                                 chunk_length=M)
    if dist.get_rank() == 0:
        print("RESULT " + json.dumps({"case": "generate", "arch": arch, "retrieval": retrieval, "pp": pp,
                                      "tokens": out.tolist()}), flush=True)


def main():
    if "payload" in sys.argv[1:]:
        counter = P2PBytes()
        _, ref_loss, ref = run_layout(dict(tp=1, pp=1), retrieval="[2]")
        ref_full = assemble_full(ref)
        for layout, boundaries in LAYOUTS:
            payload_case(counter, ref_loss, ref_full, layout, boundaries)
    if "generate" in sys.argv[1:]:
        for arch, retrieval in (("gpt", None), ("retro", 3), ("retro", 2)):
            for pp in (1, 2):
                generation_case(arch, retrieval, pp)
    dist.barrier()


if __name__ == "__main__":
    main()
