"""Input validation shared by the layers: clear messages that name the expected shape."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping

import torch

from kernels._length import check_length


def autocast_enabled(device_type: str) -> bool:
    """Whether torch.autocast is on for this device type (it then picks compute dtypes)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:  # a device type autocast does not know (meta)
        return False


def require(condition: torch.Tensor, error: type[Exception], message: str,
            detail: Callable[[], str] | None = None) -> None:
    """Raise ``error(message)`` unless the bool tensor ``condition`` holds; in eager mode
    ``detail()``, when given, is appended (e.g. the offending values, read from the device
    only on failure). While TorchDynamo traces, an assertion in the graph instead (a
    RuntimeError with ``message`` when it fails): reading the value would sync with the device
    and break the graph."""
    if torch.compiler.is_compiling():
        torch._assert_async(condition, message)
    elif not bool(condition):
        raise error(message if detail is None else f"{message}, {detail()}")


def check_input_dtype(x: torch.Tensor, module: torch.nn.Module | None, layer: str, name: str = "x") -> None:
    """Require ``x`` in the dtype of ``module``'s floating parameters (buffers for a layer
    without any, e.g. fixed filters), as ``nn.Linear`` does, unless autocast is on for x's
    device. (A float64 input to a float32 layer would otherwise come back float64 but only
    float32-accurate.)"""
    if module is None:
        return
    tensors = itertools.chain(module.parameters(), module.buffers())
    param = next((p for p in tensors if p.is_floating_point()), None)
    if param is None or x.dtype == param.dtype or autocast_enabled(x.device.type):
        return
    raise TypeError(
        f"{layer}: {name} is {x.dtype} but the layer's parameters are {param.dtype}; convert one "
        f"(layer.to({x.dtype}) or {name}.to({param.dtype})), or run under torch.autocast"
    )


def check_sequence(x: torch.Tensor, channels: int, layer: str, module: torch.nn.Module | None = None) -> None:
    """Require a floating (batch, length, channels) tensor, in ``module``'s dtype if given."""
    if not torch.is_tensor(x):
        raise TypeError(f"{layer}: expected a tensor, got {type(x).__name__}")
    if x.dim() != 3 or x.shape[-1] != channels:
        raise ValueError(
            f"{layer}: expected x of shape (batch, length, {channels}), got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"{layer}: expected a floating-point x, got {x.dtype}")
    check_input_dtype(x, module, layer)


def check_window(x: torch.Tensor, n_variates: int, model: str, lag: int | None = None,
                 module: torch.nn.Module | None = None) -> None:
    """Require a floating (batch, lag, n_variates) forecasting window with lag >= 1 (exactly
    ``lag`` steps when given), in ``module``'s dtype if given."""
    expected_lag = "lag" if lag is None else lag
    if (not torch.is_tensor(x) or x.dim() != 3 or x.shape[-1] != n_variates or x.shape[1] < 1
            or (lag is not None and x.shape[1] != lag)):
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"{model}: expected x of shape (batch, {expected_lag}, {n_variates}), got {shape}")
    if not x.is_floating_point():
        raise TypeError(f"{model}: expected a floating-point x, got {x.dtype}")
    check_input_dtype(x, module, model)


def check_step_input(x_t: torch.Tensor, channels: int, layer: str, module: torch.nn.Module | None = None) -> None:
    """Require a floating (batch, channels) tensor, in ``module``'s dtype if given."""
    if not torch.is_tensor(x_t) or x_t.dim() != 2 or x_t.shape[-1] != channels:
        shape = tuple(x_t.shape) if torch.is_tensor(x_t) else type(x_t).__name__
        raise ValueError(f"{layer}: expected x_t of shape (batch, {channels}), got {shape}")
    if not x_t.is_floating_point():
        raise TypeError(f"{layer}: expected a floating-point x_t, got {x_t.dtype}")
    check_input_dtype(x_t, module, layer, "x_t")


def check_kernel_length(L, layer: str):
    """``kernel(L)``'s length: a non-negative integer, as the kernel ops take it (a kernel of
    length L has shape (H, L); L = 0 gives an empty one), checked by the ops' own
    :func:`kernels._length.check_length`: returns L, an integral float as an int."""
    return check_length(L, f"{layer}.kernel")


def check_batch_size(batch_size, layer: str) -> int:
    """``init_state``'s batch size: a non-negative integer (an integral float passes)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, float)) or int(batch_size) != batch_size \
            or batch_size < 0:
        raise ValueError(f"{layer}.init_state: batch_size must be a non-negative integer, got {batch_size!r}")
    return int(batch_size)


def check_state(state, shape: tuple, dtype: torch.dtype, device: torch.device, layer: str,
                what: str = "state") -> None:
    """Require the recurrent ``state`` to be what ``init_state`` makes now: a tensor of
    ``shape``, ``dtype`` and ``device``. A state of another batch size would broadcast, and one
    made before the layer was cast (``.double()``) would silently keep the old precision."""
    if not torch.is_tensor(state):
        raise TypeError(f"{layer}: the {what} must be a tensor from init_state, got {type(state).__name__}")
    problems = []
    if tuple(state.shape) != tuple(shape):
        problems.append(f"shape {tuple(state.shape)}, expected {tuple(shape)}")
    if state.dtype != dtype:
        problems.append(f"dtype {state.dtype}, expected {dtype}")
    if state.device != torch.device(device):
        problems.append(f"device {state.device}, expected {device}")
    if problems:
        raise ValueError(
            f"{layer}: the {what} has " + "; ".join(problems)
            + " (make it with init_state(batch_size) after moving or casting the layer)"
        )


def check_choice(value: str, choices: tuple[str, ...], name: str, layer: str) -> str:
    if value not in choices:
        raise ValueError(f"{layer}: {name} must be one of {choices}, got {value!r}")
    return value


def check_causal(bidirectional: bool, layer: str) -> None:
    """A bidirectional layer has no causal recurrent step: raise before ``step``/``init_state``."""
    if bidirectional:
        raise RuntimeError(
            f"{layer}: a bidirectional layer looks at future inputs and has no "
            "causal recurrent step; build it with bidirectional=False to use step()"
        )


class NoRecurrentStep:
    """For layers that see the whole input at once (2D scans, scans across variates):
    ``init_state`` and ``step`` raise an error that says so, instead of an AttributeError.
    Subclasses set ``no_step_reason``."""

    no_step_reason = "it looks at the whole input at once"

    def init_state(self, *args, **kwargs):
        self._refuse_step()

    def step(self, *args, **kwargs):
        self._refuse_step()

    def _refuse_step(self):
        raise RuntimeError(f"{type(self).__name__} has no recurrent step: {self.no_step_reason}; use forward()")


def check_image(x: torch.Tensor, channels: int, layer: str, module: torch.nn.Module | None = None) -> None:
    """Require a floating (batch, height, width, channels) tensor, in ``module``'s dtype if given."""
    if not torch.is_tensor(x):
        raise TypeError(f"{layer}: expected a tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[-1] != channels:
        raise ValueError(f"{layer}: expected x of shape (batch, height, width, {channels}), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{layer}: expected a floating-point x, got {x.dtype}")
    check_input_dtype(x, module, layer)


def check_positive_ints(layer: str, **values) -> None:
    """Require every value to be a positive integer (an integral float passes, a bool does not)."""
    for arg, value in values.items():
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{layer}: {arg} must be a positive integer, got {value!r}")


def resolve_dt_rank(dt_rank: int | str, d_model: int, layer: str) -> int:
    """The rank of a Δ projection: "auto" is ceil(d_model / 16) (the Mamba default)."""
    if dt_rank == "auto":
        dt_rank = math.ceil(d_model / 16)
    if isinstance(dt_rank, bool) or not isinstance(dt_rank, int) or dt_rank < 1:
        raise ValueError(f"{layer}: dt_rank must be 'auto' or a positive integer, got {dt_rank!r}")
    return dt_rank


def check_lr(lr, keys: tuple[str, ...], layer: str):
    """Require an optimizer hint ``lr`` that is None, a finite number >= 0, or a mapping
    from some of ``keys`` to such values (a mistyped key would be silently ignored, a
    negative lr would ascend the loss). Returns ``lr``."""

    def valid(value) -> bool:
        if value is None:
            return True
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return math.isfinite(value) and value >= 0

    allowed = f"None, a finite number >= 0, or a dict with keys from {list(keys)}"
    values = [lr]
    if isinstance(lr, Mapping):
        unknown = [k for k in lr if k not in keys]
        if unknown:
            raise ValueError(f"{layer}: unknown lr key(s) {unknown}; lr must be {allowed}")
        values = list(lr.values())
    if not all(valid(value) for value in values):
        raise ValueError(f"{layer}: lr must be {allowed}, got {lr!r}")
    return lr
