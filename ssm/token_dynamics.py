"""Which token-dynamics scenario a Mamba layer is in (Vo et al., "Demystifying the Token
Dynamics of Deep Selective State Space Models", ICLR 2025).

The paper takes the continuous-time limit of a deep stack of selective scans (depth as time)
and proves, for one-dimensional tokens, that exactly one of two things happens, decided by
the sign of μ = S_Cᵀ S_B, where S_B and S_C are the rows of the input projection that produce
B and C:

- μ < 0: every token converges to zero (at rate O(1/√t)); the paper finds this hurts accuracy;
- μ > 0: every token diverges (slowly, O((ln t)^l), or in finite time, depending on Δ), and
  different tokens at different rates.

That theorem is the 1-D case only. For wider tokens the paper illustrates the 2-D case: all
eigenvalues of S_Cᵀ S_B negative -> convergence, at least one positive -> divergence.
:func:`predict_scenario` applies that reading to the (E × E) matrix M = S_Cᵀ S_B of a Mamba
layer; for E > 1 it is a heuristic extension, not a theorem, and M has rank <= N, so most of
its eigenvalues are zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

SCENARIOS = ("convergent", "divergent", "degenerate")


@dataclass(frozen=True)
class ScenarioReport:
    """What the criterion says about one layer (and one scan direction).

    scenario: "divergent" if some eigenvalue of M = S_Cᵀ S_B has a positive real part beyond
        the tolerance, "convergent" if none does and at least one is negative, "degenerate"
        if all are zero within it.
    eigenvalues: real parts of the eigenvalues of M, ascending (float64, length E).
    symmetric_eigenvalues: eigenvalues of (M + Mᵀ)/2, ascending.
    n_positive, n_negative, n_zero: counts of ``eigenvalues`` by sign, with the tolerance
        ``rtol`` times the largest magnitude.
    mu: the scalar μ of the paper's theorem when E == 1, else None.
    name: the module's name in the model ("layer" for a bare layer; " (backward scan)" is
        appended for the backward direction of a bidirectional layer).
    """

    scenario: str
    eigenvalues: torch.Tensor
    symmetric_eigenvalues: torch.Tensor
    n_positive: int
    n_negative: int
    n_zero: int
    mu: float | None
    name: str = ""

    def __str__(self) -> str:
        mu = "" if self.mu is None else f", mu={self.mu:.4g}"
        return (
            f"{self.name or 'layer'}: {self.scenario} (eigenvalues of S_C^T S_B: {self.n_positive} positive, "
            f"{self.n_negative} negative, {self.n_zero} zero; max {self.eigenvalues[-1].item():.4g}, "
            f"min {self.eigenvalues[0].item():.4g}{mu})"
        )


def input_output_matrix(layer: nn.Module, backward: bool = False) -> torch.Tensor:
    """M = S_Cᵀ S_B (E, E) in float64 from a Mamba layer's (effective) x_proj weight, whose
    rows are [S_Δ (dt_rank); S_B (N); S_C (N)]; ``backward`` reads the reversed scan's x_proj."""
    x_proj = layer.x_proj_b if backward else layer.x_proj
    W = x_proj.weight.detach().to(torch.float64)
    r, N = layer.dt_rank, layer.d_state
    S_B, S_C = W[r : r + N], W[r + N : r + 2 * N]
    return S_C.T @ S_B


def predict_scenario(layer: nn.Module, rtol: float = 1e-8, backward: bool = False, name: str = "") -> ScenarioReport:
    """The token-dynamics scenario of a :class:`ssm.Mamba` layer by the sign of the
    eigenvalues of S_Cᵀ S_B (see the module docstring for what is theorem and what is not)."""
    for attr in ("x_proj", "dt_rank", "d_state"):
        if not hasattr(layer, attr):
            raise TypeError(f"predict_scenario: expected an ssm.Mamba layer, got {type(layer).__name__}")
    if not 0 <= rtol < 1:
        raise ValueError(f"predict_scenario: rtol must be in [0, 1), got {rtol}")
    if backward and not getattr(layer, "bidirectional", False):
        raise ValueError("predict_scenario: backward=True needs a bidirectional layer (it has no backward scan)")
    M = input_output_matrix(layer, backward)
    if not bool(torch.isfinite(M).all()):
        raise ValueError("predict_scenario: the layer's x_proj holds NaN or inf")
    eig = torch.linalg.eigvals(M).real.sort().values
    sym = torch.linalg.eigvalsh((M + M.T) / 2)
    tol = rtol * max(eig.abs().max().item(), 1e-300)
    n_pos = int((eig > tol).sum())
    n_neg = int((eig < -tol).sum())
    n_zero = eig.numel() - n_pos - n_neg
    scenario = "divergent" if n_pos else "convergent" if n_neg else "degenerate"
    mu = M.item() if M.numel() == 1 else None
    return ScenarioReport(scenario, eig, sym, n_pos, n_neg, n_zero, mu, name)


def scenario_table(model: nn.Module, rtol: float = 1e-8) -> list[ScenarioReport]:
    """One report per Mamba layer (and scan direction) found in ``model``, in module order."""
    from ssm.layers.mamba import Mamba

    reports = []
    for module_name, module in model.named_modules():
        if isinstance(module, Mamba):
            label = module_name or "layer"
            reports.append(predict_scenario(module, rtol, name=label))
            if module.bidirectional:
                reports.append(predict_scenario(module, rtol, backward=True, name=label + " (backward scan)"))
    return reports


def summary(model: nn.Module, rtol: float = 1e-8) -> str:
    """Printable lines, one per report of :func:`scenario_table`."""
    reports = scenario_table(model, rtol)
    if not reports:
        return "no Mamba layers found"
    return "\n".join(str(r) for r in reports)


__all__ = ["SCENARIOS", "ScenarioReport", "input_output_matrix", "predict_scenario", "scenario_table", "summary"]
