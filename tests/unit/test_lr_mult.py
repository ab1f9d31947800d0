"""train.lr_mult: the megatron optimizer's param groups carry train.lr / train.min_lr times the last
matching multiplier for exactly the matched parameters (full training and LoRA), megatron's standard
no-weight-decay groups survive, the scheduler decays each group between its own bounds, and a
pattern that matches nothing (or a malformed entry) is one clear line."""
import pytest

from engine_testlib import tiny_engine
from megatron_retro.config import ConfigError, load_config
from megatron_retro.errors import UserError

LR, MIN_LR = 1e-2, 1e-3
SPLIT = ["train.lr=1e-2", "train.min_lr=1e-3", "train.lr_mult=[linear_proj=0.1,layers.0.=1,linear_fc1=3]"]


def _expected_mult(name):
    """Written out independently of training/lr_mult.py: the last matching entry wins."""
    if "linear_fc1" in name:
        return 3.0
    if "layers.0." in name:
        return 1.0
    return 0.1 if "linear_proj" in name else 1.0


def _group_of(engine):
    return {id(p): g for g in engine.optimizer.param_groups for p in g["params"]}


@pytest.mark.parametrize("method", [None, "lora"])
def test_param_groups_carry_the_multiplied_rates(method):
    engine, batches = tiny_engine("gpt", SPLIT, method)
    groups = _group_of(engine)
    named = [(n, p) for c in engine.chunks for n, p in c.named_parameters() if p.requires_grad]
    mults = set()
    for name, p in named:
        g, mult = groups[id(p)], _expected_mult(name)
        mults.add(mult)
        assert (g["max_lr"], g["min_lr"]) == pytest.approx((LR * mult, MIN_LR * mult)), name
        assert g["wd_mult"] == (0.0 if p.dim() == 1 or name.endswith(".bias") else 1.0), name
    assert mults == {0.1, 1.0, 3.0}            # every kind of match occurs in the tiny model
    for _ in range(2):
        engine.train_step(batches)
    for name, p in named:                       # the schedule scales each group by its own bounds
        assert groups[id(p)]["lr"] == pytest.approx(LR * _expected_mult(name) * 2 / 10), name


def test_a_pattern_matching_no_trainable_parameter_is_one_line():
    with pytest.raises(UserError, match=r"^train\.lr_mult: pattern 'final_layernorm' matches no trainable"):
        tiny_engine("gpt", ["train.lr_mult=[lora=2,final_layernorm=0.5]"], "lora")   # norms frozen under LoRA


@pytest.mark.parametrize("entry", ["linear_proj", "=2", "linear_proj=0", "linear_proj=x"])
def test_malformed_entry_names_the_field(entry):
    with pytest.raises(ConfigError, match=r"^train\.lr_mult entry .*expected SUBSTR=M with M a number > 0$"):
        load_config(None, [f"train.lr_mult=[{entry}]"])
