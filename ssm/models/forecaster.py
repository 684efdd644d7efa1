"""Multivariate forecaster around a (time × variates) mixer such as :class:`ssm.Chimera`."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ssm.layers._checks import check_positive_ints, check_window
from ssm.optim import KeepsOptimHints, set_hint


class MultivariateForecaster(KeepsOptimHints):
    """Forecast ``horizon`` steps of V series from their last ``lag`` steps.

        tokens  e[t, v] = x[t, v] · w + p_v                 (B, lag, V, d_model): a value
                                                            embedding plus a learned
                                                            embedding per variate
        blocks  e ← e + Dropout(layer(LayerNorm(e)))        n_layers times
        head    ŷ[h, v] = wᵀ LayerNorm(Σ_t W[h, t] e[t, v]) + b   (a linear map over time,
                                                            then over channels)

    Args:
        d_model: channels per (time, variate) token.
        n_layers: residual blocks.
        layer: factory ``layer(d_model) -> nn.Module`` on (B, L, V, d_model), e.g.
            ``functools.partial(ssm.Chimera, d_state=16)``.
        lag, horizon: input and output lengths.
        n_variates: V input series.
        n_targets: forecast the last ``n_targets`` variates (Informer's "MS" puts the target
            last); None forecasts all of them.
        dropout: on the residual branches.

    ``forward(x)``: x (B, lag, V) -> (B, horizon, n_targets or V).
    """

    def __init__(
        self,
        d_model: int,
        n_layers: int,
        layer: Callable[[int], nn.Module],
        lag: int,
        horizon: int,
        n_variates: int,
        n_targets: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        check_positive_ints(name, d_model=d_model, n_layers=n_layers, lag=lag, horizon=horizon, n_variates=n_variates)
        if n_targets is not None and not 1 <= n_targets <= n_variates:
            raise ValueError(f"{name}: n_targets must be in [1, n_variates = {n_variates}], got {n_targets}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{name}: dropout must be in [0, 1), got {dropout}")
        self.lag, self.horizon, self.n_variates = int(lag), int(horizon), int(n_variates)
        self.n_targets = n_targets
        self.value_embedding = nn.Linear(1, d_model)
        self.variate_embedding = nn.Parameter(torch.randn(self.n_variates, d_model) * 0.02)
        set_hint(self, "variate_embedding", {"weight_decay": 0.0})  # an embedding: no weight decay
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(n_layers))
        self.layers = nn.ModuleList(layer(d_model) for _ in range(n_layers))
        self.dropout = nn.Dropout(dropout)
        self.time_head = nn.Linear(self.lag, self.horizon)
        self.head_norm = nn.LayerNorm(d_model)
        self.channel_head = nn.Linear(d_model, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_window(x, self.n_variates, type(self).__name__, lag=self.lag, module=self)
        e = self.value_embedding(x[..., None]) + self.variate_embedding  # (B, L, V, C)
        for norm, layer in zip(self.norms, self.layers):
            e = e + self.dropout(layer(norm(e)))
        e = self.time_head(e.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (B, horizon, V, C)
        y = self.channel_head(self.head_norm(e)).squeeze(-1)  # (B, horizon, V)
        return y if self.n_targets is None else y[..., -self.n_targets:]


class PaddedForecaster(nn.Module):
    """Forecast by masking (S4's forecasting setup): the window x (B, lag, V) followed by
    ``horizon`` zeros goes through a sequence layer on (B, L, V), and its last ``horizon``
    outputs are the forecast,

        ŷ = layer([x; 0_{horizon}])[:, lag:],

    so an LTI layer forecasts with its free response: ŷ_{n+i} = Σ_{j<n} K_{n+i-j} x_j.

    Args:
        layer: factory ``layer(n_variates) -> nn.Module`` on (B, L, n_variates), e.g.
            ``functools.partial(ssm.S4D, d_state=8)``.
        lag, horizon: window and forecast lengths.
        n_variates: V series (the layer's channels).
        n_targets: forecast the last n_targets series (None: all).
    """

    def __init__(
        self, layer: Callable[[int], nn.Module], lag: int, horizon: int, n_variates: int = 1,
        n_targets: int | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        check_positive_ints(name, lag=lag, horizon=horizon, n_variates=n_variates)
        if n_targets is not None and not 1 <= n_targets <= n_variates:
            raise ValueError(f"{name}: n_targets must be in [1, n_variates = {n_variates}], got {n_targets}")
        self.lag, self.horizon, self.n_variates = int(lag), int(horizon), int(n_variates)
        self.n_targets = n_variates if n_targets is None else int(n_targets)
        self.layer = layer(self.n_variates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_window(x, self.n_variates, type(self).__name__, module=self)
        padded = torch.nn.functional.pad(x, (0, 0, 0, self.horizon))
        return self.layer(padded)[:, x.shape[1]:, -self.n_targets:]
