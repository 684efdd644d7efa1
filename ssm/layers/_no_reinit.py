"""mamba_ssm's ``_no_reinit`` flag on Δ biases, kept on copies of a layer.

A generic weight init (mamba_ssm's ``_init_weights``) zeroes every Linear bias except those
flagged ``_no_reinit``; zeroing Δ's bias would put every channel at Δ = softplus(0). The flag
is a Parameter attribute, which ``copy.deepcopy``, pickling and
``load_state_dict(..., assign=True)`` drop with the old Parameter objects, so the layers
record which parameters carry it and flag them again after each of these.
"""

from __future__ import annotations

from torch import nn

from ssm.optim import KeepsOptimHints


def mark_no_reinit(module: nn.Module, *names: str) -> None:
    """Flag ``module.get_parameter(name)._no_reinit = True`` for each dotted ``name`` now
    and after every load_state_dict; a :class:`KeepsNoReinit` module also after copies."""
    module._no_reinit_names = tuple(names)
    _flag(module)
    module.register_load_state_dict_post_hook(_after_load)


def _flag(module: nn.Module) -> None:
    for name in module.__dict__.get("_no_reinit_names", ()):
        module.get_parameter(name)._no_reinit = True


def _after_load(module: nn.Module, incompatible_keys) -> None:
    _flag(module)


class KeepsNoReinit(KeepsOptimHints):
    """Base of modules that call :func:`mark_no_reinit`: flags again after deepcopy/unpickling."""

    def __setstate__(self, state) -> None:
        super().__setstate__(state)
        _flag(self)
