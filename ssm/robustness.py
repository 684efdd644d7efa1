"""Fourier-mode noise on the input of every SSM layer (the PTD robustness protocol).

Each SSM layer of a model gets, on every forward call, the input

    x[b, l, h] + amplitude · U_{b,h} · cos(ω Δ_h l),     U_{b,h} ~ Uniform[0, 1)

a single Fourier mode at continuous-time angular frequency ω, i.e. ω Δ_h radians per step
in channel h, with a random amplitude per (sample, channel) that is constant over time.
With ω at a spike of a diagonal layer's transfer function (see :func:`spike_frequency`),
S4D's output is dominated by the noise while S4-PTD, whose high-frequency modes are
strongly damped, is barely affected.

    with inject_noise(model, FourierModeNoise(frequency=325.4)):
        logits = model(x)
"""

from __future__ import annotations

import contextlib
import inspect
import math
from typing import Callable, Iterator

import torch
from torch import nn

from ssm.layers import S5, DiagonalSSM, Mamba

SSM_LAYERS: tuple[type[nn.Module], ...] = (DiagonalSSM, S5, Mamba)


def channel_timescale(layer: nn.Module) -> torch.Tensor:
    """Δ per channel, (H,): the layer's own Δ for S4D/DSS/S4-PTD; for S5, whose Δ is per
    state, the geometric mean of its Δ for every channel; for Mamba, whose Δ depends on the
    input and lives on the d_inner channels, the geometric mean of its resting Δ,
    softplus(b_dt) (Δ where the Δ projection is 0), for every input channel."""
    if isinstance(layer, S5):
        dt = layer.continuous()[0]
        return torch.exp(torch.log(dt).mean()).expand(layer.d_model)
    if isinstance(layer, Mamba):
        dt = torch.nn.functional.softplus(layer.dt_proj.bias)
        return torch.exp(torch.log(dt).mean()).expand(layer.d_model)
    if isinstance(layer, DiagonalSSM) and hasattr(layer, "log_dt"):
        return torch.exp(layer.log_dt)
    raise TypeError(f"no per-channel Δ known for {type(layer).__name__}")


class FourierModeNoise:
    """``noise(layer, x) -> x + amplitude · U · cos(frequency · Δ_h · l)`` on x (B, L, H).

    Args:
        frequency: ω, continuous-time angular frequency (radians per unit of Δ-time).
        amplitude: scale of the per-(sample, channel) uniform amplitude (0.1 in the protocol).
        generator: optional torch.Generator for the amplitudes (CPU), for reproducible runs.
    """

    def __init__(self, frequency: float, amplitude: float = 0.1, generator: torch.Generator | None = None):
        if not 0 <= frequency < math.inf:
            raise ValueError(f"FourierModeNoise: frequency must be finite and >= 0, got {frequency}")
        if not 0 <= amplitude < math.inf:
            raise ValueError(f"FourierModeNoise: amplitude must be finite and >= 0, got {amplitude}")
        self.frequency, self.amplitude, self.generator = float(frequency), float(amplitude), generator

    def __call__(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(x) or x.dim() != 3 or not x.is_floating_point():
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"FourierModeNoise: expected a floating (batch, length, channels) input, got {shape}")
        Bsz, L, H = x.shape
        dt = channel_timescale(layer).detach().to(device=x.device, dtype=torch.float64)
        steps = torch.arange(L, device=x.device, dtype=torch.float64)
        wave = torch.cos(self.frequency * steps[:, None] * dt[None, :])  # (L, H)
        amp = torch.rand(Bsz, 1, H, generator=self.generator, dtype=torch.float64)
        return x + (self.amplitude * amp.to(x.device) * wave).to(x.dtype)

    def __repr__(self) -> str:
        return f"FourierModeNoise(frequency={self.frequency}, amplitude={self.amplitude})"


@contextlib.contextmanager
def inject_noise(
    model: nn.Module, noise: Callable[[nn.Module, torch.Tensor], torch.Tensor]
) -> Iterator[list[nn.Module]]:
    """Add ``noise(layer, x)`` to the input of every SSM layer of ``model`` inside the block.

    Yields the list of layers that were hooked; raises if the model has none (a silent
    no-op would report clean accuracy as noisy). The input is the first argument of the
    layer's forward, given by position or by name; ``step`` calls are not noised.
    """
    layers = [m for m in model.modules() if isinstance(m, SSM_LAYERS)]
    if not layers:
        names = ", ".join(cls.__name__ for cls in SSM_LAYERS)
        raise ValueError(f"inject_noise: {type(model).__name__} has no SSM layer noise can be added to ({names} "
                         "and their subclasses)")

    def hook(layer, args, kwargs):
        if args:
            return (noise(layer, args[0]), *args[1:]), kwargs
        name = next(iter(inspect.signature(layer.forward).parameters))
        if name not in kwargs:
            return args, kwargs
        return args, {**kwargs, name: noise(layer, kwargs[name])}

    handles = [layer.register_forward_pre_hook(hook, with_kwargs=True) for layer in layers]
    try:
        yield layers
    finally:
        for handle in handles:
            handle.remove()


def spike_frequency(
    layer: nn.Module, omega: torch.Tensor | None = None, min_frequency: float | None = None
) -> float:
    """The angular frequency where the layer's channel-averaged gain |G_h(iω)| peaks.

    G_h is the continuous-time transfer function of channel h (``ssm.transfer.layer_transfer``).
    The search runs over ``omega`` (default: 20000 log-spaced points from 1e-1 to 4·N²) at
    ω >= ``min_frequency`` (default N, above the band where the signal is expected to live),
    which is where S4D's spikes sit (at the largest imaginary parts of its eigenvalues).
    """
    from ssm.transfer import layer_transfer

    N = layer.d_state
    if omega is not None:
        omega = torch.as_tensor(omega, dtype=torch.float64)
    if omega is None:
        omega = torch.logspace(-1, torch.log10(torch.tensor(4.0 * N * N)).item(), 20000, dtype=torch.float64)
    lo = N if min_frequency is None else min_frequency
    omega = omega[omega >= lo]
    if omega.numel() == 0:
        raise ValueError(f"spike_frequency: no frequency in the grid is >= {lo}")
    gain = layer_transfer(layer, omega).abs()
    gain = gain.reshape(-1, omega.numel()).mean(0)
    return float(omega[gain.argmax()])
