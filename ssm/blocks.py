"""Residual block around a sequence layer: norm, SSM, GELU, dropout, GLU output projection
(or nothing after the layer, for full mixers such as Mamba)."""

from __future__ import annotations

import inspect
from typing import Callable

import torch
from torch import nn

from ssm.layers._checks import check_choice, check_sequence, check_step_input, require
from ssm.padding import check_lengths, check_mask, padding_mask

NORMS = ("layer", "batch", "none")


class SequenceBatchNorm(nn.Module):
    """BatchNorm over the channels of a (batch, length, channels) tensor: ``bn``, an
    ``nn.BatchNorm1d(num_features)``, holds the parameters and running statistics, and its
    normalization is written out in tensor ops (:meth:`_normalize`); a subclass of it
    (SyncBatchNorm) runs its own kernel on the transposed input.

    The BatchNorm is a child module rather than the base class, so that converting a model
    for DDP (``SyncBatchNorm.convert_sync_batchnorm``, what ``trainer=ddp`` does on GPUs)
    replaces ``bn`` and keeps the transpose; a subclass was replaced whole, and the new
    SyncBatchNorm then normalized over the length axis. Checkpoints of the earlier layout
    (``norm.weight`` rather than ``norm.bn.weight``) still load. ``forward(x, mask)`` leaves
    right padding out of the batch statistics.
    """

    _STATE = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

    def __init__(self, num_features: int, **kwargs) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(num_features, **kwargs)
        self._register_load_state_dict_pre_hook(self._from_flat_keys)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, C) -> (B, L, C). With a (B, L, 1) padding ``mask`` (1 on valid steps) and
        batch statistics in use (training, or no running statistics), the mean and variance
        are taken over the valid steps only, so the amount of padding in a batch changes
        neither the valid outputs nor the running statistics; padded steps come out as 0.
        In eval mode every step is normalized by the running statistics, with or without it."""
        batch_statistics = self.bn.training or self.bn.running_mean is None
        valid = None if mask is None or not batch_statistics else mask.reshape(*x.shape[:2], 1).bool()
        if type(self.bn) is nn.BatchNorm1d:
            return self._normalize(x, valid, batch_statistics)
        # A subclass (SyncBatchNorm after DDP's conversion) runs its own kernel, which gathers
        # the statistics across processes, on the valid steps picked out (a data-dependent
        # count of rows).
        if valid is None:
            return self.bn(x.transpose(1, 2)).transpose(1, 2)
        out = x.new_zeros(x.shape)
        out[valid[..., 0]] = self.bn(x[valid[..., 0]])  # (steps, C)
        return out

    def _normalize(self, x: torch.Tensor, valid: torch.Tensor | None, batch_statistics: bool) -> torch.Tensor:
        """``nn.BatchNorm1d`` on x (B, L, C), written out in tensor ops. With batch statistics,
        over the n valid steps (``valid`` (B, L, 1) bool; None: every step):

            μ = Σ x / n,   σ² = Σ (x - μ)² / n,   y = (x - μ) / sqrt(σ² + eps) · weight + bias

        and 0 on the padding; in training the running statistics move by ``momentum``
        towards μ and the unbiased n/(n-1) σ² (a cumulative average when ``momentum`` is
        None), as BatchNorm1d's do. Otherwise μ and σ² are the running statistics. Half
        inputs are normalized in float32 (as BatchNorm1d does) and returned in their dtype.

        Written out rather than through ``F.batch_norm`` so that a compiled graph has no
        shape that depends on the mask, and no layout that torch's CPU batch_norm and its
        fake tensor disagree on (for a transposed input or output gradient the real kernel
        returns a contiguous tensor where the fake keeps the input's strides, and the graph
        then views it by strides it does not have)."""
        bn = self.bn
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        if not batch_statistics:
            y = (xf - bn.running_mean) * torch.rsqrt(bn.running_var + bn.eps)
            return (y * bn.weight + bn.bias if bn.affine else y).to(x.dtype)
        if valid is None:
            n = x.shape[0] * x.shape[1]
            if n <= 1:
                raise ValueError(f"SequenceBatchNorm: expected more than 1 step per channel when training, got {n}")
        else:
            xf = torch.where(valid, xf, 0.0)  # padding never enters, even if not finite
            n = valid.sum(dtype=xf.dtype)
            require(n > 1, ValueError, "SequenceBatchNorm: expected more than 1 valid step per channel when training")
        mean = xf.sum((0, 1)) / n
        centered = xf - mean if valid is None else torch.where(valid, xf - mean, 0.0)
        var = centered.square().sum((0, 1)) / n
        if bn.training and bn.track_running_stats:
            self._update_running_statistics(mean.detach(), var.detach() * (n / (n - 1)))
        y = centered * torch.rsqrt(var + bn.eps)
        if bn.affine:
            y = y * bn.weight + bn.bias
        return (y if valid is None else torch.where(valid, y, 0.0)).to(x.dtype)

    def _update_running_statistics(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        bn = self.bn
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            momentum = bn.momentum if bn.momentum is not None else 1.0 / bn.num_batches_tracked
            bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), momentum)
            bn.running_var.lerp_(unbiased_var.to(bn.running_var.dtype), momentum)

    @classmethod
    def _from_flat_keys(cls, state_dict, prefix, *args) -> None:
        for name in cls._STATE:
            if prefix + name in state_dict and prefix + "bn." + name not in state_dict:
                state_dict[prefix + "bn." + name] = state_dict.pop(prefix + name)


def apply_norm(norm: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``norm(x)``, handing the padding ``mask`` to a norm whose statistics span the batch
    (:class:`SequenceBatchNorm`); per-step norms (LayerNorm) need no mask."""
    return norm(x, mask) if isinstance(norm, SequenceBatchNorm) else norm(x)


def _norm_step(norm: nn.Module, x_t: torch.Tensor) -> torch.Tensor:
    """``norm`` on one time step x_t (B, C), as it acts on that step of a sequence: per-step
    norms act alike; :class:`SequenceBatchNorm` only with its running statistics (eval
    mode), since in training mode it normalizes over every step of the batch."""
    if not isinstance(norm, SequenceBatchNorm):
        return norm(x_t)
    _require_running_statistics(norm, "step()")
    return norm.bn(x_t)


def _require_running_statistics(norm: nn.Module, what: str) -> None:
    """A batch norm that a recurrent step will continue must use its running statistics."""
    if isinstance(norm, SequenceBatchNorm) and (norm.bn.training or norm.bn.running_mean is None):
        raise RuntimeError(
            f"{what} with a batch norm needs its running statistics: in training mode (or without "
            "running statistics) it normalizes over all steps of the batch, which a step does not "
            "see; call .eval() first, or use norm='layer'"
        )


def make_norm(kind: str, d_model: int) -> nn.Module:
    """``layer`` -> LayerNorm, ``batch`` -> BatchNorm over channels, ``none`` -> identity."""
    check_choice(kind, NORMS, "norm", "make_norm")
    if kind == "layer":
        return nn.LayerNorm(d_model)
    if kind == "batch":
        return SequenceBatchNorm(d_model)
    return nn.Identity()


OUTPUTS = ("glu", "half_glu1", "half_glu2", "none")


class ResidualBlock(nn.Module):
    """One residual block on (batch, length, d_model), with y = layer(x̃) and
    g = Dropout(GELU(y)):

        output="glu":        z = W₁g ⊙ σ(W₂g)     (one Linear to 2·d_model, then GLU)
        output="half_glu1":  z = g ⊙ σ(W g)       (S5's half_glu1)
        output="half_glu2":  z = y ⊙ σ(W g)       (S5's half_glu2)
        output="none":       z = y                (no activation, no projection: for a layer
                                                   that is a full mixer with its own
                                                   projections, e.g. ssm.Mamba)
        out = x + Dropout(z)        (out = Dropout(z) with residual=False)

    with x̃ = norm(x) for pre-norm, or x̃ = x and out ← norm(out) for post-norm.

    ``forward(x, mask)`` with a (B, L, 1) padding mask (1 on valid steps) zeroes x̃ on the
    padding before the layer (and hands ``mask`` to a layer whose forward takes one, e.g.
    ``ssm.Mamba``), so that a layer that looks ahead (bidirectional) sees a padded sequence
    exactly as the unpadded one.

    Args:
        d_model: channels.
        layer: a module (B, L, d_model) -> (B, L, d_model), e.g. ``ssm.S4D(d_model)``.
        norm: "layer", "batch" or "none".
        prenorm: normalize before the layer (True) or after the residual sum (False).
        dropout: dropout probability after the activation and on the residual branch.
        output: the gated output map, one of ``OUTPUTS``; "none" adds the layer's output
            to the residual directly (pre-norm: the Mamba block x + Mamba(norm(x))).
        residual: add the block's input to its output (False: a plain stack, as in the
            S4-PTD robustness protocol).
    """

    def __init__(
        self,
        d_model: int,
        layer: nn.Module,
        norm: str = "layer",
        prenorm: bool = True,
        dropout: float = 0.0,
        output: str = "glu",
        residual: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"ResidualBlock: dropout must be in [0, 1), got {dropout}")
        self.residual = bool(residual)
        self.output_kind = check_choice(output, OUTPUTS, "output", "ResidualBlock")
        self.d_model = d_model
        self.layer = layer
        self._layer_takes_mask = "mask" in inspect.signature(layer.forward).parameters
        self.norm = make_norm(norm, d_model)
        self.prenorm = prenorm
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        if output == "glu":
            self.output = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.GLU(dim=-1))
        elif output == "none":
            self.output = nn.Identity()
        else:
            self.output = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        check_sequence(x, self.d_model, "ResidualBlock", self)
        mask = check_mask(mask, x.shape[0], x.shape[1], "ResidualBlock")
        z = apply_norm(self.norm, x, mask) if self.prenorm else x
        if mask is None:
            y = self.layer(z)
        else:
            z = z * mask.to(z.dtype)
            y = self.layer(z, mask=mask) if self._layer_takes_mask else self.layer(z)
        x = self._combine(x, y)
        return x if self.prenorm else apply_norm(self.norm, x, mask)

    def _combine(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The output map and the residual sum (before a post-norm), step by step: x and the
        layer's output y are (..., d_model)."""
        if self.output_kind == "none":
            z = y
        else:
            g = self.dropout(self.activation(y))
            if self.output_kind == "glu":
                z = self.output(g)
            else:
                gate = torch.sigmoid(self.output(g))
                z = (g if self.output_kind == "half_glu1" else y) * gate
        return x + self.dropout(z) if self.residual else self.dropout(z)

    def init_state(self, batch_size: int, **kwargs):
        """The layer's zero state, ``layer.init_state(batch_size, **kwargs)`` (e.g. DSS's
        ``length``)."""
        return self.layer.init_state(batch_size, **kwargs)

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, object]:
        """(forward(x), the layer's state after x's last step) for a prompt x (B, L, d_model),
        with the layer's parallel prefill where it has one (see :mod:`ssm.prefill`). Like
        :meth:`step`, it refuses a batch norm in training mode (its state would continue
        batch statistics that no step sees)."""
        from ssm.prefill import prefill

        check_sequence(x, self.d_model, "ResidualBlock", self)
        _require_running_statistics(self.norm, "prefill()")
        z = apply_norm(self.norm, x, None) if self.prenorm else x
        y, state = prefill(self.layer, z)
        x = self._combine(x, y)
        return (x if self.prenorm else apply_norm(self.norm, x, None)), state

    def step(self, x_t: torch.Tensor, state) -> tuple:
        """One recurrent step, x_t (B, d_model) -> (out_t (B, d_model), new state): the block
        applied to one time step, with the layer's ``step``. Running it over a sequence from
        :meth:`init_state` gives ``forward`` (in eval mode, where dropout is off). A batch
        norm then normalizes by its running statistics; in training mode it would need the
        whole sequence's, so ``step`` refuses it."""
        check_step_input(x_t, self.d_model, "ResidualBlock", self)
        z = _norm_step(self.norm, x_t) if self.prenorm else x_t
        y, state = self.layer.step(z, state)
        x_t = self._combine(x_t, y)
        return (x_t if self.prenorm else _norm_step(self.norm, x_t)), state


class SequenceBackbone(nn.Module):
    """A stack of ``n_layers`` residual blocks, with a final norm when pre-norm.

    Args:
        d_model: channels.
        n_layers: number of blocks.
        layer: factory ``layer(d_model) -> nn.Module``, e.g. ``functools.partial(ssm.S4D, d_state=64)``.
        norm, prenorm, dropout, output, residual: as in :class:`ResidualBlock`.
    """

    def __init__(
        self,
        d_model: int,
        n_layers: int,
        layer: Callable[[int], nn.Module],
        norm: str = "layer",
        prenorm: bool = True,
        dropout: float = 0.0,
        output: str = "glu",
        residual: bool = True,
    ) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"SequenceBackbone: n_layers must be >= 1, got {n_layers}")
        if not callable(layer):
            raise TypeError("SequenceBackbone: layer must be a factory layer(d_model) -> nn.Module")
        self.d_model = d_model
        self.blocks = nn.ModuleList(
            ResidualBlock(d_model, layer(d_model), norm, prenorm, dropout, output, residual) for _ in range(n_layers)
        )
        self.final_norm = make_norm(norm, d_model) if prenorm else nn.Identity()

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, d_model) -> (B, L, d_model); ``lengths`` (B,) marks right padding, which no
        valid step then depends on (see :class:`ResidualBlock`)."""
        mask = None
        if lengths is not None:
            check_lengths(lengths, x.shape[0], x.shape[1], "SequenceBackbone")
            mask = padding_mask(lengths, x.shape[1], x.device)
        for block in self.blocks:
            x = block(x, mask)
        return apply_norm(self.final_norm, x, mask)

    def init_state(self, batch_size: int, **kwargs) -> list:
        """One zero state per block (a list), from each layer's ``init_state(batch_size, **kwargs)``."""
        return [block.init_state(batch_size, **kwargs) for block in self.blocks]

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, list]:
        """(forward(x), the block states after x's last step) for a prompt x (B, L, d_model):
        the prompt in one parallel pass per block, then :meth:`step` for the new tokens."""
        check_sequence(x, self.d_model, "SequenceBackbone", self)
        _require_running_statistics(self.final_norm, "prefill()")
        state = []
        for block in self.blocks:
            x, s = block.prefill(x)
            state.append(s)
        return apply_norm(self.final_norm, x, None), state

    def step(self, x_t: torch.Tensor, state: list) -> tuple[torch.Tensor, list]:
        """One recurrent step of the whole stack, x_t (B, d_model) -> (out_t (B, d_model), new
        states); over a sequence from :meth:`init_state` it gives ``forward`` (eval mode). For
        autoregressive generation: feed the prompt step by step, then each sampled token."""
        if not isinstance(state, (list, tuple)) or len(state) != len(self.blocks):
            got = f"{type(state).__name__} of length {len(state)}" if isinstance(state, (list, tuple)) \
                else type(state).__name__
            raise TypeError(f"SequenceBackbone: state must be the list of {len(self.blocks)} block states "
                            f"from init_state, got {got}")
        new_state = []
        for block, s in zip(self.blocks, state):
            x_t, s = block.step(x_t, s)
            new_state.append(s)
        return _norm_step(self.final_norm, x_t), new_state
