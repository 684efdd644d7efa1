"""Why PTD: conditioning of the LegS eigenbasis and transfer-function errors (CPU, float64).

    python -m bench.ptd_theory [--sizes 8 16 32 64 128] [--rel-size 0.05] [--out bench/results]

1. Conditioning. κ₂ of the unit-column eigenvector matrix V of HiPPO-LegS, of the normal
   part HiPPO-N (unitary, κ = 1) and of ``ssm.hippo.ptd`` (with ||E||_2/||A||_2, the number
   of repaired eigenvalues and the time taken). For LegS the float64 eigensolver only gives
   a value limited by rounding (it saturates near 1e20), so the table also gives exact
   bounds: LegS is lower triangular with eigenvalues -(k+1), its right and left eigenvectors
   are sqrt(2n+1) times rational numbers (a two-term recurrence), and the eigenvalue
   condition numbers κ(λ_k) = |w_k| |v_k| / |w_k v_k| are computed in exact rational
   arithmetic. With unit columns, max_k κ(λ_k) <= κ₂(V) <= κ_F(V) = sqrt(N sum_k κ(λ_k)²).
2. Transfer functions G(iω) = C (iω - A)⁻¹ B with B = B_LegS = sqrt(2n+1):
   - G_LegS: A = A_LegS (dense solves);
   - G_S4D: the diagonalized normal part S = A_LegS + P Pᵀ (S4D-LegS), with B/2 (the
     scaling under which S4D-LegS approximates LegS: G_S4D(0) = G_LegS(0)) and, as a second
     row, with B itself (the s4 repository's init, which drops the 1/2);
   - G_PTD: C Ṽ (iω - Λ)⁻¹ Ṽ⁻¹ B from ``ptd``.
   The grid is log-spaced from 1e-2 to 10 N², plus the frequencies Im λ > 0 of the S4D and
   PTD poles (where the spikes peak; a log grid alone would step over them). C is either
   N(0, 1) (seed 0) or e_0, for which G_LegS(iω) = 1/(1 + iω) exactly. Errors
   sup |G - G_LegS| are reported per band, absolute and relative to sup |G_LegS| in the
   same band: low ω < N, mid N <= ω < ω_S/2 and high ω >= ω_S/2, with ω_S = max Im λ(S)
   ≈ 0.32 N² the top S4D-LegS pole.

Prints Markdown tables and writes them (and JSON) to --out; saves a figure of the transfer
functions for the largest N when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from fractions import Fraction
from pathlib import Path

import torch

from ssm.hippo import normal_part, nplr, ptd, transition
from ssm.transfer import plot_transfer, transfer_function

C128 = torch.complex128


def legs_eigen_condition_log10(N: int) -> list[float]:
    """log10 κ(λ_k), k = 0 .. N-1, for HiPPO-LegS, in exact rational arithmetic.

    Right eigenvector of λ_k = -(k+1): v[n] = sqrt(2n+1) u[n] (n >= k), u[k] = 1 and
    (k - n) u[n] = sum_{k<=j<n} (2j+1) u[j]. Left: w[j] = sqrt(2j+1) y[j] (j <= k), y[k] = 1
    and (k - j) y[j] = sum_{j<n<=k} (2n+1) y[n]. Then w_k v_k = 2k+1 and
    κ(λ_k)² = (sum (2n+1) u[n]²)(sum (2j+1) y[j]²) / (2k+1)².
    """
    out = []
    for k in range(N):
        u, partial, right = Fraction(1), Fraction(0), Fraction(2 * k + 1)
        for n in range(k + 1, N):
            partial += (2 * n - 1) * u
            u = partial / (k - n)
            right += (2 * n + 1) * u * u
        y, partial, left = Fraction(1), Fraction(0), Fraction(2 * k + 1)
        for j in range(k - 1, -1, -1):
            partial += (2 * j + 3) * y
            y = partial / (k - j)
            left += (2 * j + 1) * y * y
        kappa_sq = right * left / (2 * k + 1) ** 2
        out.append(0.5 * (math.log10(kappa_sq.numerator) - math.log10(kappa_sq.denominator)))
    return out


def eig_kappa(M: torch.Tensor) -> float:
    """κ₂ of the float64 eigenvector matrix of M, columns normalized."""
    _, V = torch.linalg.eig(M)
    s = torch.linalg.svdvals(V / torch.linalg.vector_norm(V, dim=0))
    return (s[0] / s[-1]).item()


def conditioning_row(N: int, rel_size: float, seed: int) -> tuple[dict, tuple]:
    A, _ = transition("legs", N)
    logs = legs_eigen_condition_log10(N)
    top = max(logs)
    log_kappa_f = 0.5 * math.log10(N) + top + 0.5 * math.log10(sum(10 ** (2 * (x - top)) for x in logs))
    Lam, V, Vinv, info = ptd(A, rel_size, seed=seed, force_stable=True, return_info=True)
    row = {
        "N": N,
        "legs_eig_float64": eig_kappa(A),
        "legs_log10_lower": top,
        "legs_log10_upper": log_kappa_f,
        "hippo_n": eig_kappa(normal_part("legs", N)),
        "ptd_kappa": info["kappa"],
        "ptd_rel_perturbation": info["rel_perturbation"],
        "ptd_n_repaired": info["n_repaired"],
        "ptd_max_real": info["max_real"],
        "ptd_max_imag": info["max_imag"],
        "ptd_seconds": info["seconds"],
    }
    return row, (Lam, V, Vinv)


def s4d_legs(N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All N eigenpairs (Λ, V unitary) of the LegS normal part, from ``nplr`` and conjugates."""
    Lam, _, _, V = nplr("legs", N, B_clip=None)
    return torch.cat([Lam, Lam.conj()]), torch.cat([V, V.conj()], dim=1)


def transfer_rows(N: int, ptd_modes: tuple, points: int) -> tuple[list[dict], dict]:
    A, B = transition("legs", N)
    Lam_s, V_s = s4d_legs(N)
    Lam_p, V_p, Vinv_p = ptd_modes
    omega_s = Lam_s.imag.max().item()
    top = 10.0 * N * N
    poles = torch.cat([Lam_s.imag, Lam_p.imag])
    extra = poles[(poles > 1e-2) & (poles < top)]
    omega = torch.cat([torch.logspace(-2, math.log10(top), points, dtype=torch.float64), extra]).sort().values
    bands = {
        "low": omega < N,
        "mid": (omega >= N) & (omega < omega_s / 2),
        "high": omega >= omega_s / 2,
    }
    e0 = torch.zeros(N, dtype=torch.float64)
    e0[0] = 1.0
    Cs = {"N(0,1)": torch.randn(N, dtype=torch.float64, generator=torch.Generator().manual_seed(0)), "e_0": e0}
    Bc = B.to(C128)
    rows, curves = [], {}
    for c_name, C in Cs.items():
        Cc = C.to(C128)
        G_legs = transfer_function(A, B, C, omega)
        models = {
            "S4D-LegS (B/2)": transfer_function(Lam_s, V_s.mH @ Bc / 2, Cc @ V_s, omega),
            "S4D-LegS (B)": transfer_function(Lam_s, V_s.mH @ Bc, Cc @ V_s, omega),
            "PTD": transfer_function(Lam_p, Vinv_p @ Bc, Cc @ V_p, omega),
        }
        if c_name == "N(0,1)":
            curves = {"LegS": G_legs, **models}
        for name, G in models.items():
            err = (G - G_legs).abs()
            row = {"N": N, "C": c_name, "model": name, "omega_s": omega_s}
            for band, mask in bands.items():
                if mask.any():
                    ref = G_legs[mask].abs().max().item()
                    row[f"{band}_abs"] = err[mask].max().item()
                    row[f"{band}_rel"] = row[f"{band}_abs"] / ref
                else:
                    row[f"{band}_abs"] = row[f"{band}_rel"] = None
            above = omega >= N
            row["peak_omega"] = omega[above][err[above].argmax()].item()
            row["dc_rel"] = (err[0] / G_legs[0].abs()).item()
            rows.append(row)
    return rows, {"omega": omega, "curves": curves}


def fmt(x: float | None, spec: str = ".2g") -> str:
    return "—" if x is None else format(x, spec)


def render(cond: list[dict], transfer: list[dict], args) -> str:
    lines = [
        (f"# PTD theory checks (CPU, {platform.processor() or platform.machine()}, float64, "
        f"{time.strftime('%Y-%m-%d')})"),
        "",
        (f"`python -m bench.ptd_theory --sizes {' '.join(map(str, args.sizes))} --rel-size {args.rel_size} "
        f"--seed {args.seed} --points {args.points}`"),
        "",
        "## Conditioning of the eigenvector matrix (unit columns)",
        "",
        ("κ₂(V) of LegS from the float64 eigensolver is limited by rounding (it cannot exceed ~1e20); "
        "the exact bounds max_k κ(λ_k) <= κ₂(V) <= sqrt(N Σ_k κ(λ_k)²) use exact rational "
        "eigenvectors. PTD: `ssm.hippo.ptd(A_LegS)` with the stated ‖E‖₂/‖A‖₂ target, after the "
        "Re λ ← -|Re λ| repair."),
        "",
        ("| N | LegS κ₂ (float64 eig) | LegS κ₂ exact bounds | HiPPO-N κ₂ | PTD κ₂ | PTD ‖E‖₂/‖A‖₂ "
        "| repaired | PTD max Re λ | PTD max \\|Im λ\\| | PTD time (s) |"),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in cond:
        lines.append(
            f"| {r['N']} | {r['legs_eig_float64']:.2e} | [1e{r['legs_log10_lower']:.1f}, "
            f"1e{r['legs_log10_upper']:.1f}] | {r['hippo_n']:.3f} | {r['ptd_kappa']:.2f} | "
            f"{r['ptd_rel_perturbation']:.4f} | {r['ptd_n_repaired']} | {r['ptd_max_real']:.2f} | "
            f"{r['ptd_max_imag']:.4g} | {r['ptd_seconds']:.1f} |"
        )
    lines += [
        "",
        "## Transfer-function error sup |G - G_LegS| per band",
        "",
        ("Bands: low ω < N, mid N <= ω < ω_S/2, high ω_S/2 <= ω <= 10 N², ω_S = max Im λ of the "
        "normal part. Each cell: absolute error / relative to sup |G_LegS| over the band. "
        "\"peak ω\": where the error peaks for ω >= N. B = sqrt(2n+1); C ~ N(0,1) (seed 0) or "
        "C = e_0 (G_LegS = 1/(1+iω))."),
        "",
        "| N | C | model | ω_S | ω = 1e-2 (rel) | low | mid | high | peak ω |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in transfer:
        cells = [f"{fmt(r[f'{b}_abs'])} / {fmt(r[f'{b}_rel'])}" if r[f"{b}_abs"] is not None else "—"
                 for b in ("low", "mid", "high")]
        lines.append(
            f"| {r['N']} | {r['C']} | {r['model']} | {r['omega_s']:.4g} | {fmt(r['dc_rel'])} | "
            f"{' | '.join(cells)} | {r['peak_omega']:.4g} |"
        )
    return "\n".join(lines + ["", "## Summary (computed from the rows above)", ""] + summary(transfer))


def summary(transfer: list[dict]) -> list[str]:
    def pick(model, key):
        return [r[key] for r in transfer if r["model"] == model and r[key] is not None]

    def span(values, spec=".2g"):
        lo, hi = format(min(values), spec), format(max(values), spec)
        return lo if lo == hi else f"{lo}–{hi}"

    s4d, s4d_b, p = "S4D-LegS (B/2)", "S4D-LegS (B)", "PTD"
    at_top = sum(abs(r["peak_omega"] - r["omega_s"]) <= 1e-9 * r["omega_s"] for r in transfer if r["model"] == s4d)
    ratio = [a / b for a, b in zip(pick(s4d, "high_abs"), pick(p, "high_abs"))]
    return [
        (f"- S4D-LegS (B/2): the error above ω = N peaks exactly at ω_S, the top pole of the normal "
        f"part, in {at_top} of {len(pick(s4d, 'peak_omega'))} rows; its high-band error is "
        f"{span(pick(s4d, 'high_abs'))} in absolute terms, {span(pick(s4d, 'high_rel'))} × sup |G_LegS|."),
        (f"- PTD in the high band: {span(pick(p, 'high_rel'))} × sup |G_LegS|, {span(ratio, '.0f')} times smaller "
        "than S4D-LegS (B/2)."),
        (f"- Low band (ω < N): PTD {span(pick(p, 'low_rel'))} × sup |G_LegS| against S4D-LegS (B/2) "
        f"{span(pick(s4d, 'low_rel'))}; at ω = 1e-2 PTD is off by {span(pick(p, 'dc_rel'))} of |G_LegS| "
        f"and S4D-LegS (B/2) by {span(pick(s4d, 'dc_rel'))}. PTD is not better at low frequencies: "
        "LegS's low-frequency response is very sensitive to E."),
        (f"- S4D-LegS (B), the s4 init without the 1/2: off by {span(pick(s4d_b, 'dc_rel'))} at ω = 1e-2 "
        "(twice the DC gain); same poles with doubled residues, so its spikes are twice as high."),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    parser.add_argument("--rel-size", type=float, default=0.05, help="PTD target ||E||_2 / ||A||_2")
    parser.add_argument("--seed", type=int, default=0, help="PTD seed")
    parser.add_argument("--points", type=int, default=2000, help="log-spaced frequencies")
    parser.add_argument("--out", type=Path, default=None, help="directory for the .md/.json/.png results")
    args = parser.parse_args()

    ptd(transition("legs", 2)[0])  # first call imports the optimizer machinery: keep it out of the timings
    cond, transfer, figure = [], [], None
    for N in args.sizes:
        row, modes = conditioning_row(N, args.rel_size, args.seed)
        cond.append(row)
        rows, figure = transfer_rows(N, modes, args.points)
        transfer += rows
        print(f"N = {N}: PTD κ₂ = {row['ptd_kappa']:.2f} in {row['ptd_seconds']:.1f} s", flush=True)
    table = render(cond, transfer, args)
    print(table)
    if args.out is None:
        return
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"ptd-theory-cpu-{time.strftime('%Y-%m-%d')}"
    stem.with_suffix(".md").write_text(table + "\n")
    payload = {"settings": vars(args) | {"out": str(args.out)}, "conditioning": cond, "transfer": transfer}
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {stem}.md and .json")
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        print("matplotlib not installed: no figure")
        return
    ax = plot_transfer(figure["omega"], figure["curves"], title=f"HiPPO-LegS, N = {args.sizes[-1]}, C ~ N(0, 1)")
    ax.figure.savefig(stem.with_suffix(".png"), dpi=120, bbox_inches="tight")
    print(f"wrote {stem}.png")


if __name__ == "__main__":
    main()
