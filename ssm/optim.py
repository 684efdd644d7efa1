"""Per-parameter optimizer settings and the one function that turns them into groups.

An SSM layer registers its core tensors (Δ, A, B) with :func:`register` and a hint such as
``{"lr": 1e-3, "weight_decay": 0.0}``; :func:`param_groups` makes one optimizer group per
distinct hint. ``lr=0`` registers the tensor as a buffer instead, i.e. frozen.

A hint is kept twice: as the parameter's ``_optim`` attribute (the convention of the S4
code base, which other code may read; a hint with weight decay 0 also sets mamba_ssm's
``_no_weight_decay = True``) and in its module's ``_optim_hints`` dict under the
parameter's name. Only the second survives ``copy.deepcopy`` (``nn.Parameter`` copies drop
attributes), ``load_state_dict(..., assign=True)`` and ``to_empty``, which all put new
Parameter objects on the module, so :func:`param_groups` reads it first; the attributes are
put back after an ``assign=True`` load and, for layers built on :class:`KeepsOptimHints`,
after a copy.
"""

from __future__ import annotations

import torch
from torch import nn

_NO_DECAY_MODULES = (nn.LayerNorm, nn.GroupNorm, nn.Embedding, nn.modules.batchnorm._NormBase) + (
    (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()
)


def register(
    module: nn.Module,
    name: str,
    tensor: torch.Tensor,
    lr: float | None = None,
    weight_decay: float | None = 0.0,
) -> None:
    """Register ``tensor`` on ``module`` as a parameter carrying its optimizer hint.

    ``lr=None`` keeps the optimizer's global learning rate; ``weight_decay=None`` keeps the
    global weight decay (with both None the parameter is a plain one, without a hint);
    ``lr=0`` registers a frozen buffer.
    """
    if lr == 0.0:
        module.register_buffer(name, tensor)
        return
    param = nn.Parameter(tensor)
    module.register_parameter(name, param)
    hint = {}
    if weight_decay is not None:
        hint["weight_decay"] = float(weight_decay)
    if lr is not None:
        hint["lr"] = float(lr)
    if hint:
        set_hint(module, name, hint)


def set_hint(module: nn.Module, name: str, hint: dict) -> None:
    """Attach optimizer settings ``hint`` (e.g. ``{"lr": 1e-3, "weight_decay": 0.0}``) to the
    parameter ``module.<name>``, where copies of the module keep them."""
    param = module._parameters.get(name)
    if param is None:
        raise KeyError(f"{type(module).__name__} has no parameter {name!r}")
    _attach(param, hint)
    if "_optim_hints" not in module.__dict__:
        module._optim_hints = {}
        module.register_load_state_dict_post_hook(_restore_after_load)  # load_state_dict(..., assign=True)
    module._optim_hints[name] = dict(hint)


def _attach(param: nn.Parameter, hint: dict) -> None:
    """The attribute forms of a hint: S4's ``_optim`` and mamba_ssm's ``_no_weight_decay``."""
    param._optim = dict(hint)
    if hint.get("weight_decay") == 0.0:  # the flag mamba_ssm's optimizer grouping reads
        param._no_weight_decay = True
    elif hasattr(param, "_no_weight_decay"):
        del param._no_weight_decay


def restore_hints(module: nn.Module) -> None:
    """Put the attribute forms of the hints of ``module`` and its submodules back on their
    parameters (after a copy or an ``assign=True`` load made new Parameter objects)."""
    for m in module.modules():
        for name, hint in m.__dict__.get("_optim_hints", {}).items():
            param = m._parameters.get(name)
            if param is not None:
                _attach(param, hint)


def _restore_after_load(module: nn.Module, incompatible_keys) -> None:
    restore_hints(module)


class KeepsOptimHints(nn.Module):
    """Base of modules that register hinted parameters: after ``copy.deepcopy`` or
    unpickling, the parameters of the module and its submodules carry their ``_optim`` and
    ``_no_weight_decay`` attributes again."""

    def __setstate__(self, state) -> None:
        super().__setstate__(state)
        restore_hints(self)


def get_hint(module: nn.Module, name: str) -> dict | None:
    """The optimizer hint of ``module.<name>`` (None without one), also on a copy."""
    hint = module.__dict__.get("_optim_hints", {}).get(name)
    if hint is None:
        hint = getattr(module._parameters.get(name), "_optim", None)
    return None if hint is None else dict(hint)


def param_groups(model: nn.Module, weight_decay: float = 0.0, decay_norms_and_biases: bool = False) -> list[dict]:
    """Optimizer groups for ``model``: the default group, a no-decay group, one per hint.

    - Parameters with a hint (their module's ``_optim_hints``, else their ``_optim``) go to a
      group with exactly those settings; a hint without a weight decay gets ``weight_decay``
      (not the optimizer's own default, 0.01 for AdamW).
    - Biases and the weights of norms and embeddings get weight decay 0 (s4's convention),
      unless ``decay_norms_and_biases``: then they decay like the rest, as in S5's code (its
      "regular" AdamW group takes every parameter without a hint).
    - Everything else gets ``weight_decay``.
    Frozen parameters (``requires_grad=False``) are left out.
    """
    no_decay = set() if decay_norms_and_biases else _no_decay_names(model)
    kept = {id(module._parameters[name]): hint for module in model.modules()
            for name, hint in module.__dict__.get("_optim_hints", {}).items()
            if module._parameters.get(name) is not None}
    decay, plain, hinted = [], [], {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        hint = kept.get(id(p), getattr(p, "_optim", None))
        if hint is not None:
            hinted.setdefault(tuple(sorted(hint.items())), []).append(p)
        elif name in no_decay or (name.endswith("bias") and not decay_norms_and_biases):
            plain.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if plain:
        groups.append({"params": plain, "weight_decay": 0.0})
    for key, params in hinted.items():
        groups.append({"params": params, "weight_decay": weight_decay, **dict(key)})
    return [g for g in groups if g["params"]]


def _no_decay_names(model: nn.Module) -> set[str]:
    names = set()
    for mod_name, module in model.named_modules():
        if isinstance(module, _NO_DECAY_MODULES):
            prefix = f"{mod_name}." if mod_name else ""
            names.update(prefix + n for n, _ in module.named_parameters(recurse=False))
    return names

