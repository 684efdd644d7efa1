"""ssm.optim.param_groups: SSM hints, no-decay parameters, frozen tensors."""

import copy
import functools

import pytest
import torch
from torch import nn

import ssm
from ssm.optim import param_groups


def classifier(norm="layer", lr=1e-3, n_tokens=11, d_input=None):
    return ssm.SequenceClassifier(
        d_model=4,
        n_layers=2,
        layer=functools.partial(ssm.S4D, d_state=4, lr=lr),
        d_output=3,
        n_tokens=n_tokens,
        d_input=d_input,
        norm=norm,
    )


def expected_partition(model):
    """(ssm, no_decay, decay) parameter id sets, from module types and names."""
    ssm_ids, no_decay, decay = set(), set(), set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if isinstance(module, ssm.S4D) and name in ("log_dt", "log_A_real", "A_imag", "B"):
                ssm_ids.add(id(p))
            elif isinstance(module, (nn.LayerNorm, nn.BatchNorm1d, nn.Embedding)) or name == "bias":
                no_decay.add(id(p))
            else:
                decay.add(id(p))
    return ssm_ids, no_decay, decay


def group_ids(group):
    return {id(p) for p in group["params"]}


@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_groups_split_ssm_no_decay_and_decay(norm):
    torch.manual_seed(0)
    model = classifier(norm=norm, lr=2e-3)
    groups = param_groups(model, weight_decay=0.1)
    ssm_ids, no_decay, decay = expected_partition(model)
    assert ssm_ids and no_decay and decay
    by_ids = {frozenset(group_ids(g)): g for g in groups}
    assert set(by_ids) == {frozenset(ssm_ids), frozenset(no_decay), frozenset(decay)}
    assert by_ids[frozenset(ssm_ids)]["lr"] == 2e-3
    assert by_ids[frozenset(ssm_ids)]["weight_decay"] == 0.0
    assert by_ids[frozenset(no_decay)]["weight_decay"] == 0.0
    assert "lr" not in by_ids[frozenset(no_decay)]
    assert by_ids[frozenset(decay)]["weight_decay"] == 0.1
    assert "lr" not in by_ids[frozenset(decay)]


def test_embedding_norm_and_bias_get_no_weight_decay():
    torch.manual_seed(1)
    model = classifier(norm="layer")
    groups = param_groups(model, weight_decay=0.3)
    decayed = set().union(*(group_ids(g) for g in groups if g["weight_decay"] > 0))
    assert id(model.encoder.weight) not in decayed
    assert id(model.head.bias) not in decayed
    assert id(model.backbone.final_norm.weight) not in decayed
    assert id(model.backbone.blocks[0].norm.weight) not in decayed
    assert id(model.head.weight) in decayed
    assert id(model.backbone.blocks[0].layer.C) in decayed
    assert id(model.backbone.blocks[0].layer.D) in decayed



@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_decay_norms_and_biases_decays_everything_without_a_hint(norm):
    """S5's code puts every parameter without an SSM lr in its AdamW group, norms, biases and
    the encoder included (its "norm" key never matches a leaf); the SSM hints keep theirs."""
    torch.manual_seed(1)
    model = classifier(norm=norm)
    groups = param_groups(model, weight_decay=0.3, decay_norms_and_biases=True)
    decayed = set().union(*(group_ids(g) for g in groups if g["weight_decay"] == 0.3 and "lr" not in g))
    norm_params = list(model.backbone.blocks[0].norm.parameters())
    assert len(norm_params) == 2
    for p in (model.encoder.weight, model.head.bias, *norm_params, model.head.weight, model.backbone.blocks[0].layer.C):
        assert id(p) in decayed
    hinted = [g for g in groups if "lr" in g]
    assert hinted and all(g["weight_decay"] == 0.0 for g in hinted)  # the layer's own hints win
    assert {id(p) for g in groups for p in g["params"]} == {id(p) for p in model.parameters() if p.requires_grad}

@pytest.mark.parametrize("norm", ["layer", "batch", "none"])
@pytest.mark.parametrize("lr", [1e-3, None, {"dt": 1e-3, "A": 2e-3, "B": 0.0}])
def test_every_trainable_parameter_in_exactly_one_group(norm, lr):
    torch.manual_seed(2)
    model = classifier(norm=norm, lr=lr)
    groups = param_groups(model, weight_decay=0.05)
    listed = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(listed) == sorted(trainable)
    assert all(g["params"] for g in groups)


def test_frozen_parameters_are_left_out():
    torch.manual_seed(3)
    model = classifier()
    model.head.weight.requires_grad_(False)
    model.backbone.blocks[1].layer.log_dt.requires_grad_(False)
    listed = {id(p) for g in param_groups(model, weight_decay=0.1) for p in g["params"]}
    assert id(model.head.weight) not in listed
    assert id(model.backbone.blocks[1].layer.log_dt) not in listed
    assert id(model.backbone.blocks[0].layer.log_dt) in listed


def test_distinct_lr_hints_get_distinct_groups():
    torch.manual_seed(4)
    layer = ssm.S4D(3, d_state=4, lr={"dt": 1e-3, "A": 2e-3, "B": 3e-3})
    groups = param_groups(layer, weight_decay=0.1)
    by_lr = {g.get("lr"): group_ids(g) for g in groups}
    assert by_lr[1e-3] == {id(layer.log_dt)}
    assert by_lr[2e-3] == {id(layer.log_A_real), id(layer.A_imag)}
    assert by_lr[3e-3] == {id(layer.B)}
    for g in groups:
        if "lr" in g:
            assert g["weight_decay"] == 0.0


def test_optimizer_applies_hint_lr_and_global_lr_for_none_hint():
    torch.manual_seed(5)
    layer = ssm.S4D(3, d_state=4, lr={"dt": 1e-3, "A": None, "B": None})
    opt = torch.optim.AdamW(param_groups(layer, weight_decay=0.2), lr=5e-2)
    lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}
    assert lr_of[id(layer.log_dt)] == (1e-3, 0.0)
    assert lr_of[id(layer.log_A_real)] == (5e-2, 0.0)
    assert lr_of[id(layer.B)] == (5e-2, 0.0)
    assert lr_of[id(layer.C)] == (5e-2, 0.2)


def test_adamw_step_leaves_lr_zero_buffers_unchanged():
    torch.manual_seed(6)
    model = classifier(lr=0.0)
    frozen = {
        name: buf.clone()
        for name, buf in model.named_buffers()
        if name.split(".")[-1] in ("log_dt", "log_A_real", "A_imag", "B")
    }
    assert len(frozen) == 8  # 4 tensors in each of 2 layers
    C_before = model.backbone.blocks[0].layer.C.detach().clone()
    opt = torch.optim.AdamW(param_groups(model, weight_decay=0.5), lr=0.1)
    x = torch.randint(0, 11, (4, 9))
    nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 0])).backward()
    opt.step()
    buffers = dict(model.named_buffers())
    for name, before in frozen.items():
        assert torch.equal(buffers[name], before), name
    assert not torch.equal(model.backbone.blocks[0].layer.C, C_before)


def _groups_by_param(model):
    return {id(p): {k: v for k, v in g.items() if k != "params"} for g in param_groups(model, 0.1) for p in g["params"]}


@pytest.mark.parametrize("make", [
    lambda: ssm.S4D(4, 8, lr=1e-3), lambda: ssm.DSS(4, 8, lr=1e-3), lambda: ssm.S5(4, 8, lr=1e-3),
    lambda: ssm.CompanionSSM(4, d_state=8, lr=1e-3), lambda: ssm.Mamba(8, d_state=4, lr=1e-3),
    lambda: ssm.SS2D(8, d_state=4, lr=1e-3),
])
@pytest.mark.parametrize("how", ["deepcopy", "assign", "to_empty"])
def test_hints_survive_copies_that_make_new_parameters(make, how):
    """deepcopy, load_state_dict(assign=True) and to_empty put new Parameter objects on the
    module (deepcopied Parameters lose their attributes): the groups must not change."""
    torch.manual_seed(0)
    model = make()
    if how == "deepcopy":
        copied = copy.deepcopy(model)
    elif how == "assign":
        copied = make()
        copied.load_state_dict({k: v.clone() for k, v in model.state_dict().items()}, assign=True)
    else:
        copied = copy.deepcopy(model).to_empty(device="cpu")
    names = dict(model.named_parameters())
    expected = {name: _groups_by_param(model)[id(p)] for name, p in names.items() if p.requires_grad}
    got_groups = _groups_by_param(copied)
    got = {name: got_groups[id(p)] for name, p in copied.named_parameters() if p.requires_grad}
    assert got == expected
    assert any("lr" in settings for settings in got.values())
    for module_name, module in model.named_modules():
        other = copied.get_submodule(module_name)
        for name in module._parameters:
            assert ssm.optim.get_hint(other, name) == ssm.optim.get_hint(module, name)


LR_LAYERS = {
    "S4D": (functools.partial(ssm.S4D, 4, d_state=4), ("dt", "A", "B")),
    "S4PTD": (functools.partial(ssm.S4PTD, 4, d_state=4), ("dt", "A", "B")),
    "DSS": (functools.partial(ssm.DSS, 4, d_state=4), ("dt", "A")),
    "S5": (functools.partial(ssm.S5, 4, d_state=4), ("A", "dt", "B")),
    "Mamba": (functools.partial(ssm.Mamba, 4, d_state=2), ("A", "D", "dt")),
    "SS2D": (functools.partial(ssm.SS2D, 4, d_state=2), ("A", "D", "dt")),
    "CompanionSSM": (functools.partial(ssm.CompanionSSM, 4, d_state=4), ("a", "b", "c")),
    "ClosedLoopCompanionSSM": (functools.partial(ssm.ClosedLoopCompanionSSM, 4, d_state=4), ("a", "b", "c", "k")),
}


@pytest.mark.parametrize("name", LR_LAYERS)
@pytest.mark.parametrize("bad", [-1e-3, float("nan"), float("inf"), "0.001", True])
def test_bad_lr_hints_raise(name, bad):
    """A negative lr would ascend the loss, NaN poisons the weights; both used to be stored."""
    make, keys = LR_LAYERS[name]
    with pytest.raises(ValueError, match="lr must be"):
        make(lr=bad)
    with pytest.raises(ValueError, match="lr must be"):
        make(lr={keys[0]: bad})


@pytest.mark.parametrize("name", LR_LAYERS)
def test_lr_dict_keys_are_checked_and_valid_hints_pass(name):
    make, keys = LR_LAYERS[name]
    with pytest.raises(ValueError, match=r"unknown lr key\(s\) \['dT'\]"):  # a typo used to be ignored
        make(lr={"dT": 1e-3})
    for lr in (None, 0, 0.0, 2e-3, {key: 1e-3 for key in keys}, {keys[-1]: None}, {}):
        make(lr=lr)


def test_embeddings_and_rms_norms_get_no_weight_decay():
    """MultivariateForecaster's per-variate embedding is a plain Parameter, and RMSNorm was
    missing from the no-decay norms: both got the global weight decay."""
    model = ssm.MultivariateForecaster(8, 1, functools.partial(ssm.Chimera, d_state=2, period=2), lag=6,
                                       horizon=2, n_variates=3)
    model.extra = nn.RMSNorm(8)
    decay = {id(p) for g in param_groups(model, weight_decay=0.1) if g["weight_decay"] > 0 for p in g["params"]}
    assert id(model.variate_embedding) not in decay and id(model.extra.weight) not in decay
    assert id(model.value_embedding.weight) in decay  # a Linear's weight keeps it


def test_a_hint_without_weight_decay_takes_the_global_weight_decay():
    """Guards param_groups for register(weight_decay=None): the group gets the weight_decay argument (lr hint kept)."""
    from ssm.optim import get_hint, register

    module = nn.Module()
    register(module, "lr_only", torch.randn(3), lr=1e-3, weight_decay=None)
    register(module, "plain", torch.randn(3), lr=None, weight_decay=None)
    register(module, "no_decay", torch.randn(3), lr=None, weight_decay=0.0)
    register(module, "frozen", torch.randn(3), lr=0.0)
    assert get_hint(module, "lr_only") == {"lr": 1e-3} and get_hint(module, "plain") is None
    assert "frozen" in dict(module.named_buffers())
    settings = {id(p): {k: v for k, v in g.items() if k != "params"} for g in param_groups(module, 0.25)
                for p in g["params"]}
    assert settings == {
        id(module.lr_only): {"lr": 1e-3, "weight_decay": 0.25},
        id(module.plain): {"weight_decay": 0.25},
        id(module.no_decay): {"weight_decay": 0.0},
    }


def test_zero_weight_decay_hints_also_set_mamba_ssms_flag():
    """Code that groups parameters the mamba_ssm way (``_no_weight_decay``) leaves A_log and D undecayed."""
    from ssm.optim import set_hint

    layer = ssm.Mamba(8, d_state=4)
    flagged = {name for name, p in layer.named_parameters() if getattr(p, "_no_weight_decay", False)}
    assert flagged == {"A_log", "D"}
    set_hint(layer, "D", {"lr": 1e-3})  # a later hint with decay clears the flag
    assert not hasattr(layer.D, "_no_weight_decay")


@pytest.mark.parametrize("make", [lambda: ssm.S4D(4, d_state=4), lambda: ssm.S5(4, d_state=4), lambda: ssm.Mamba(4),
                                  lambda: ssm.Chimera(8, d_state=2, period=2),
                                  lambda: ssm.SequenceClassifier(4, 1, functools.partial(ssm.DSS, d_state=4), 3,
                                                                 n_tokens=5)],
                         ids=["s4d", "s5", "mamba", "chimera", "classifier-of-dss"])
@pytest.mark.parametrize("how", ["deepcopy", "assign-load"])
def test_hint_attributes_come_back_after_copies_and_assign_loads(make, how):
    """The attribute forms (S4's _optim, mamba_ssm's _no_weight_decay) are what other code's
    grouping reads; Parameter copies drop them."""
    model = make()

    def attributes(m):
        return {n: (getattr(p, "_optim", None), getattr(p, "_no_weight_decay", False)) for n, p in m.named_parameters()}

    expected = attributes(model)
    assert any(flag for _, flag in expected.values())
    if how == "deepcopy":
        other = copy.deepcopy(model)
    else:
        other = make()
        other.load_state_dict({k: v.clone() for k, v in model.state_dict().items()}, assign=True)
    assert attributes(other) == expected
