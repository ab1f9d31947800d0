"""RETRO in `plan --recommend`: PEFT formula counts against a built RETRO with the method applied,
RETRO costs more than its GPT at the same layout, recomputation is picked only where memory needs
it, and the CLI works."""
import json

import pytest
import yaml

from megatron_retro.config import load_config
from megatron_retro.planning.peft_counts import METHODS
from megatron_retro.planning.recommend import plan_layout, recommend, stage_params

from ops_testlib import REPO, run_cli

VOCAB = 512
TINY = ["model.num_layers=4", "model.hidden_size=64", "model.num_attention_heads=4", "model.seq_length=32",
        "retro.chunk_length=16", "retro.neighbour_length=24", "retro.retrieval_layers=[2,4]"]


@pytest.mark.parametrize("method", [m for m in METHODS if m != "full"])
def test_peft_formula_counts_match_a_built_retro(method):
    """The planner's trainable counts (decoder + encoder layers) equal apply_peft's with the
    project's default configs (configs/peft/<method>.yaml)."""
    from megatron_retro.models.retro import build_retro_model
    from megatron_retro.parallel.initialize import destroy_parallel, initialize_parallel
    from megatron_retro.peft import apply_peft, make_peft_config
    from megatron_retro.planning.peft_counts import peft_trainable

    cfg = load_config(f"{REPO}/configs/models/retro-tiny.yaml", TINY)
    with open(f"{REPO}/configs/peft/{method}.yaml") as f:
        options = yaml.safe_load(f)
    options.pop("method")
    initialize_parallel(cfg.parallel, seed=0, env={})
    try:
        chunks = build_retro_model(cfg.model, cfg.retro, cfg.parallel, VOCAB, precision="fp32")
        apply_peft(chunks, make_peft_config(method, options))
        built = sum(p.numel() for c in chunks for p in c.parameters() if p.requires_grad)
    finally:
        destroy_parallel()
    planned = sum(peft_trainable(cfg.model, method, s.peft_layers, 1, first_stage=s.pp_rank == 0)
                  for s in stage_params(cfg.model, VOCAB, 1, 1, cfg.retro))
    assert planned == built


def test_retro_costs_more_than_its_gpt_and_recomputes_only_when_it_must():
    retro_cfg = load_config(f"{REPO}/configs/models/retro-48.7b.yaml")
    gpt_cfg = load_config(f"{REPO}/configs/models/gpt-42.7b.yaml")
    vocab = gpt_cfg.model.vocab_size
    for method in ("full", "lora"):
        r = plan_layout(retro_cfg.model, vocab, method, 16, 8, 2, 1, False, retro=retro_cfg.retro)
        g = plan_layout(gpt_cfg.model, vocab, method, 16, 8, 2, 1, False)
        assert r.memory.weights > g.memory.weights and r.step_time_s > g.step_time_s
        assert r.activations_no_recompute > g.activations_no_recompute
        best = recommend(retro_cfg.model, vocab, method, 64, retro=retro_cfg.retro)
        assert best is not None and not best.recompute and best.memory.total <= 80e9 * 0.9
    # RETRO recomputes like GPT (train.recompute=full works for it): picked where nothing else fits
    tight = recommend(retro_cfg.model, vocab, "full", 64, retro=retro_cfg.retro, gpu_memory_gb=24)
    assert tight is not None and tight.recompute and tight.memory.total <= 24e9 * 0.9
    # more neighbours -> more encoder tokens -> more activation memory and time
    more = load_config(f"{REPO}/configs/models/retro-48.7b.yaml", ["retro.num_neighbours=5"])
    r2 = plan_layout(more.model, vocab, "lora", 16, 8, 2, 1, False, retro=more.retro)
    r1 = plan_layout(retro_cfg.model, vocab, "lora", 16, 8, 2, 1, False, retro=retro_cfg.retro)
    assert r2.activations_no_recompute > r1.activations_no_recompute and r2.step_time_s > r1.step_time_s
    assert r2.memory.weights == r1.memory.weights


def test_cli_plan_and_recommend_on_retro_configs():
    cfg = f"{REPO}/configs/models/retro-903m.yaml"
    rows = json.loads(run_cli(["plan", "--config", cfg, "--recommend", "--gpus", "8", "--json"]).stdout)
    assert [r["method"] for r in rows] == list(METHODS)
    assert all(r["plan"]["tp"] * r["plan"]["pp"] * r["plan"]["dp"] == 8 and not r["plan"]["recompute"] for r in rows)
    plan = json.loads(run_cli(["plan", "--config", cfg, "--tp", "2", "--pp", "4", "--json"]).stdout)
    gpt = json.loads(run_cli(["plan", "--config", f"{REPO}/configs/models/gpt-843m.yaml", "--tp", "2", "--pp", "4",
                              "--json"]).stdout)
    assert plan["params_total"] > gpt["params_total"]
    acts = [s["memory_gib"]["full"]["activations"] for s in plan["stages"]]
    gpt_acts = [s["memory_gib"]["full"]["activations"] for s in gpt["stages"]]
    assert all(a > b for a, b in zip(acts, gpt_acts))  # the neighbour context rides through every stage


def test_context_activations_stop_after_the_last_retrieval_layer():
    """The neighbour context is part of a stage's input only up to the last retrieval layer's stage
    (models/retro/payload.py): a later stage's RETRO activations lack exactly the context term."""
    from megatron_retro.planning import retro_terms

    cfg = load_config(f"{REPO}/configs/models/retro-tiny.yaml", TINY + ["retro.retrieval_layers=[2]"])
    stages = [retro_terms.stage_retro(cfg.model, cfg.retro, 1, n, n, lambda model, tp: 0) for n in (1, 2, 3, 4)]
    assert [s.carries_context for s in stages] == [True, True, False, False]
    args = (cfg.retro, 32, 2, 64, 1, 3, False, False, 4, None)
    rho = cfg.retro.num_neighbours * cfg.retro.neighbour_length / cfg.retro.chunk_length
    context = 2 * rho * 32 * 2 * 64 * 4 / 2 * 3                   # 2·rho·sbh per micro-batch, 3 in flight
    assert retro_terms.retro_activation_bytes(stages[0], *args) == pytest.approx(context)   # no CCA, no encoder
    assert retro_terms.retro_activation_bytes(stages[2], *args) == 0.0
