"""SpaceTime (Zhang et al., 2023): companion-SSM encoder blocks and a closed-loop decoder."""

from __future__ import annotations

import torch
from torch import nn

from ssm.layers._checks import check_positive_ints, check_window
from ssm.layers.closed_loop import ClosedLoopCompanionSSM, ClosedLoopShiftSSM
from ssm.layers.companion import CompanionSSM, ResidualSSM
from ssm.losses import REGRESSION_LOSSES, regression_loss

VARIATES = ("independent", "joint")
DECODERS = {"companion": ClosedLoopCompanionSSM, "shift": ClosedLoopShiftSSM}


class SpaceTimeBlock(nn.Module):
    """One encoder block on (B, L, d_model), as SpaceTime builds it (no norms):

        z = ResidualSSM(u)  (first block; fixed differencing / moving-average filters) or u
        s = CompanionSSM(z)
        out = z + s + W Dropout(GELU(s)) + w_0
    """

    def __init__(
        self, d_model: int, d_state: int, n_kernels: int, dropout: float, preprocess: bool,
        max_avg_window: int = 64, norm_order: int = 1,
    ) -> None:
        super().__init__()
        self.preprocess = ResidualSSM(d_model, max_avg_window) if preprocess else None
        self.ssm = CompanionSSM(d_model, d_state, n_kernels=n_kernels, norm_order=norm_order)
        self.mlp = nn.Sequential(nn.GELU(), nn.Dropout(dropout), nn.Linear(d_model, d_model))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        z = u if self.preprocess is None else self.preprocess(u)
        s = self.ssm(z)
        return z + s + self.mlp(s)


class SpaceTime(nn.Module):
    """SpaceTime forecaster: (B, lag, V) -> (B, horizon, n_targets) by a closed-loop decoder.

        embedding   each series repeated over d_model channels (``variates="independent"``:
                    every series is its own sample through shared weights) or a linear map
                    of the V series to d_model (``"joint"``)
        encoder     n_encoder_blocks × :class:`SpaceTimeBlock` (the first with ResidualSSM
                    preprocessing and ``n_kernels`` companion kernel sets, later ones with
                    one set per channel)
        decoder     :class:`ssm.ClosedLoopCompanionSSM` (or the shift variant): the forecast of
                    any horizon from the last lag state, y_{n+i} = cᵀ(A + b kᵀ)^i x_n
        head        Linear(Dropout(GELU(·))) to one output per series (or n_targets for "joint");
                    ``head=False`` reads the decoder's channels directly (needs d_model = 1
                    per series)

    ``n_encoder_blocks=0, d_model=1, head=False`` leaves a single closed-loop layer on the
    raw series: the one-layer companion forecaster of the AR(p) experiment.

    Defaults are the paper's ETT configuration (d_model 128, d = 64, 16 encoder kernel sets,
    dropout 0.25, one encoder block: the README command's ``--n_blocks 1``).

    ``forward(x)`` returns ``(forecast, aux)`` with the training losses beside the horizon
    loss (math reference §8.3), computed on the decoder's open-loop pass over the window:

        aux["lag"]           ℓ(head(y_open)[t-1], series[t])   (one step ahead, t ∈ [burn_in, lag))
        aux["decoder_input"] ℓ(û_open[t-1], z[t])              (the decoder's own next-input guess)

    where ℓ is ``aux_loss`` (SpaceTime: RMSE) and z the encoder output; unlike the reference
    code they are used in every epoch; a window too short to score (lag <= burn_in) gives an
    empty ``aux``. The reference's lag term has one pair more, head(y_open)[lag-1] against
    series[lag], the first value after the window: that prediction is the forecast's first
    step, which the horizon loss already scores, and the model is not given the future (nor
    do the data hold it for series that are inputs only), so here the term stops at the
    window's end: lag - burn_in pairs instead of lag - burn_in + 1. ``aux_losses=False`` makes ``forward`` return the forecast alone;
    :meth:`forecast` takes any horizon.

    Args:
        lag, horizon: window and default forecast lengths (any lag works at call time).
        n_variates: input series V.
        n_targets: forecast the last n_targets series (Informer puts the target last);
            None: all of them.
        d_model, d_state, n_kernels, n_encoder_blocks, dropout, max_avg_window, norm_order:
            the architecture above (``n_encoder_blocks`` may be 0).
        decoder: "companion" or "shift" (a = 0, b = e_1 fixed).
        decoder_kernels: kernel sets of the decoder (None: one per channel).
        decoder_norm_order, decoder_init_std: the decoder's normalization (default
            ``norm_order``) and init scale (1 as in SpaceTime).
        head: the output MLP (False: identity).
        variates: "independent" or "joint".
        aux_loss: "rmse", "mse" or "mae".
        burn_in: first window position scored by the aux losses (None: min(d_state, lag - 1)).
    """

    def __init__(
        self,
        lag: int,
        horizon: int,
        n_variates: int = 1,
        n_targets: int | None = None,
        d_model: int = 128,
        d_state: int = 64,
        n_kernels: int = 16,
        n_encoder_blocks: int = 1,
        decoder: str = "companion",
        decoder_kernels: int | None = None,
        decoder_norm_order: int | None = None,
        decoder_init_std: float = 1.0,
        head: bool = True,
        dropout: float = 0.25,
        max_avg_window: int = 64,
        norm_order: int = 1,
        variates: str = "independent",
        aux_loss: str = "rmse",
        aux_losses: bool = True,
        burn_in: int | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        check_positive_ints(name, lag=lag, horizon=horizon, n_variates=n_variates, d_model=d_model,
                            d_state=d_state, n_kernels=n_kernels)
        if isinstance(n_encoder_blocks, bool) or int(n_encoder_blocks) != n_encoder_blocks or n_encoder_blocks < 0:
            raise ValueError(f"{name}: n_encoder_blocks must be a non-negative integer, got {n_encoder_blocks!r}")
        if decoder not in DECODERS:
            raise ValueError(f"{name}: decoder must be one of {sorted(DECODERS)}, got {decoder!r}")
        if n_targets is not None and not 1 <= n_targets <= n_variates:
            raise ValueError(f"{name}: n_targets must be in [1, n_variates = {n_variates}], got {n_targets}")
        if variates not in VARIATES:
            raise ValueError(f"{name}: variates must be one of {VARIATES}, got {variates!r}")
        if aux_loss not in REGRESSION_LOSSES:
            raise ValueError(f"{name}: aux_loss must be one of {REGRESSION_LOSSES}, got {aux_loss!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{name}: dropout must be in [0, 1), got {dropout}")
        if burn_in is not None:
            check_positive_ints(name, burn_in=burn_in)
        self.lag, self.horizon, self.n_variates = int(lag), int(horizon), int(n_variates)
        self.n_targets = n_variates if n_targets is None else int(n_targets)
        self.d_model, self.d_state, self.variates = int(d_model), int(d_state), variates
        self.aux_loss, self.aux_losses, self.burn_in = aux_loss, bool(aux_losses), burn_in
        self.embedding = nn.Linear(self.n_variates, d_model) if variates == "joint" else None
        self.encoder = nn.ModuleList(
            SpaceTimeBlock(d_model, d_state, n_kernels if i == 0 else d_model, dropout, preprocess=i == 0,
                           max_avg_window=max_avg_window, norm_order=norm_order)
            for i in range(n_encoder_blocks)
        )
        self.decoder = DECODERS[decoder](
            d_model, d_state, n_kernels=decoder_kernels,
            norm_order=norm_order if decoder_norm_order is None else decoder_norm_order, init_std=decoder_init_std,
        )
        n_out = self.n_targets if variates == "joint" else 1
        if head:
            self.head = nn.Sequential(nn.GELU(), nn.Dropout(dropout), nn.Linear(d_model, n_out))
        elif d_model != n_out:
            raise ValueError(f"{name}: head=False needs d_model equal to the outputs per sample ({n_out}), got {d_model}")
        else:
            self.head = nn.Identity()

    def _check(self, x: torch.Tensor) -> None:
        check_window(x, self.n_variates, type(self).__name__, module=self)

    def _series(self, x: torch.Tensor) -> torch.Tensor:
        """The sequences the network runs on: (B·V, lag, 1) or, for "joint", (B, lag, V)."""
        if self.variates == "joint":
            return x
        return x.transpose(1, 2).reshape(-1, x.shape[1], 1)

    def _encode(self, series: torch.Tensor) -> torch.Tensor:
        z = self.embedding(series) if self.embedding is not None else series.expand(-1, -1, self.d_model)
        for block in self.encoder:
            z = block(z)
        return z

    def _decode(self, z: torch.Tensor, horizon: int, batch: int) -> torch.Tensor:
        """Encoder output (B', lag, d_model) -> forecast (B, horizon, n_targets)."""
        y = self.head(self.decoder(z, horizon))
        if self.variates == "independent":
            y = y.reshape(batch, self.n_variates, horizon).transpose(1, 2)
        return y[..., -self.n_targets:]

    def forecast(self, x: torch.Tensor, horizon: int | None = None) -> torch.Tensor:
        """The forecast (B, horizon, n_targets) after the window x (B, lag, V)."""
        self._check(x)
        horizon = self.horizon if horizon is None else horizon
        check_positive_ints(type(self).__name__, horizon=horizon)
        return self._decode(self._encode(self._series(x)), int(horizon), x.shape[0])

    def forward(self, x: torch.Tensor):
        """``(forecast (B, horizon, n_targets), {"lag": ..., "decoder_input": ...})`` (``{}`` for
        a window too short to score), or the forecast alone with ``aux_losses=False``."""
        self._check(x)
        series = self._series(x)
        z = self._encode(series)
        forecast = self._decode(z, self.horizon, x.shape[0])
        lag = x.shape[1]
        start = min(self.d_state, lag - 1) if self.burn_in is None else self.burn_in
        if not self.aux_losses:
            return forecast
        if not 1 <= start < lag:  # nothing to score, but the same (forecast, aux) shape of result
            return forecast, {}
        y_open, u_hat = self.decoder.open_loop(z)
        target = series if self.variates == "independent" else series[..., -self.n_targets:]
        aux = {
            "lag": regression_loss(self.head(y_open[:, start - 1 : lag - 1]), target[:, start:], self.aux_loss),
            "decoder_input": regression_loss(u_hat[:, start - 1 : lag - 1], z[:, start:], self.aux_loss),
        }
        return forecast, aux

