"""Continuous-time transfer functions of linear state-space systems.

For ``x'(t) = A x(t) + B u(t)``, ``y(t) = C x(t)`` the transfer function on the imaginary
axis is

    G(iω) = C (iω I - A)⁻¹ B,

the gain and phase the system applies to an input ``u(t) = e^{iωt}``. For a diagonal
``A = diag(λ)`` it is the sum of first-order terms

    G(iω) = sum_n C_n B_n / (iω - λ_n),

which is how the diagonal layers (S4D, S4-PTD, S5) see their spectrum: a mode with a small
``|Re λ_n|`` makes a spike of height about ``|C_n B_n| / |Re λ_n|`` at ``ω = Im λ_n``.
"""

from __future__ import annotations

import itertools

import torch

__all__ = ["layer_transfer", "plot_transfer", "transfer_function"]

_C128 = torch.complex128

# Dense solves are done in chunks of frequencies holding at most this many matrix entries.
_CHUNK_ENTRIES = 1 << 22


def _as_matrix(x: torch.Tensor, name: str, N: int, state_dim: int) -> torch.Tensor:
    """B (N,) or (N, H_in) -> (N, H_in); C (N,) or (H_out, N) -> (H_out, N), complex128."""
    if x.dim() not in (1, 2) or x.shape[state_dim if x.dim() == 2 else 0] != N:
        want = "(N,) or (N, H_in)" if name == "B" else "(N,) or (H_out, N)"
        raise ValueError(f"transfer_function: expected {name} of shape {want} with N = {N}, got {tuple(x.shape)}")
    x = x.to(_C128)
    if x.dim() == 1:
        return x[:, None] if name == "B" else x[None, :]
    return x


def transfer_function(
    A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, omega: torch.Tensor
) -> torch.Tensor:
    """``G(iω) = C (iω I - A)⁻¹ B`` on a grid of real angular frequencies.

    Args:
        A: the state matrix, either dense ``(N, N)`` (real or complex) or diagonal, given as
            the 1-D tensor ``(N,)`` of its eigenvalues ``λ``.
        B: ``(N,)`` (one input) or ``(N, H_in)``.
        C: ``(N,)`` (one output) or ``(H_out, N)``.
        omega: real ``(W,)`` angular frequencies ω (the evaluation points are ``s = iω``).

    Returns:
        complex128 tensor. If both ``B`` and ``C`` are 1-D it has shape ``(W,)``:
        ``G[w] = C (iω_w - A)⁻¹ B``. Otherwise it has shape ``(H_out, H_in, W)``, a 1-D ``B``
        counting as ``H_in = 1`` and a 1-D ``C`` as ``H_out = 1``:
        ``G[o, i, w] = C[o] (iω_w - A)⁻¹ B[:, i]``.

    The dense form solves ``(iω_w I - A) X = B`` for every ω with an LU factorization (never
    forming the inverse, which matters for the very non-normal HiPPO matrices); it costs
    ``O(W N³)``. The diagonal form is the closed form ``sum_n C[o, n] B[n, i] / (iω - λ_n)``
    in ``O(W N H_in H_out)``. Everything is computed in complex128, on ``A``'s device.

    Raises:
        ValueError: if ``A`` is not 1-D or square 2-D, if ``B`` or ``C`` does not match the
            state size ``N``, or if ``omega`` is not a real 1-D tensor.
    """
    A = torch.as_tensor(A)
    B = torch.as_tensor(B, device=A.device)
    C = torch.as_tensor(C, device=A.device)
    omega = torch.as_tensor(omega, device=A.device)
    if A.dim() not in (1, 2) or (A.dim() == 2 and A.shape[0] != A.shape[1]):
        raise ValueError(f"transfer_function: expected A of shape (N, N) or (N,), got {tuple(A.shape)}")
    if omega.dim() != 1 or omega.is_complex():
        raise ValueError(f"transfer_function: expected real omega of shape (W,), got {omega.dtype} {tuple(omega.shape)}")
    N = A.shape[0]
    if N == 0:
        raise ValueError("transfer_function: A has no states (N = 0)")
    squeeze = B.dim() == 1 and C.dim() == 1
    Bm = _as_matrix(B, "B", N, state_dim=0)
    Cm = _as_matrix(C, "C", N, state_dim=1)
    s = 1j * omega.to(torch.float64)

    if A.dim() == 1:
        R = 1.0 / (s[None, :] - A.to(_C128)[:, None])  # (N, W)
        G = torch.einsum("onw,ni->oiw", Cm[:, :, None] * R[None], Bm)
    else:
        A = A.to(_C128)
        eye = torch.eye(N, dtype=_C128, device=A.device)
        chunk = max(1, _CHUNK_ENTRIES // (N * N))
        parts = []
        for sc in s.split(chunk):
            X = torch.linalg.solve(sc[:, None, None] * eye - A, Bm.expand(len(sc), -1, -1))
            parts.append(Cm @ X)  # (w, H_out, H_in)
        G = torch.cat(parts).permute(1, 2, 0)
    return G[0, 0] if squeeze else G


def plot_transfer(
    omega: torch.Tensor,
    curves: dict[str, torch.Tensor],
    ax=None,
    title: str | None = None,
    xlabel: str = "ω",
    ylabel: str = "|G(iω)|",
    **line_kwargs,
):
    """Draw ``|G(iω)|`` of several transfer functions on log-log axes.

    Args:
        omega: real ``(W,)`` frequencies.
        curves: label -> complex (or real) tensor whose last dimension is ``W``; a tensor
            with leading dimensions (e.g. ``(H_out, H_in, W)``) draws one line per entry,
            labelled ``label[o, i]``.
        ax: matplotlib axes to draw on; a new figure is made if None.
        title, xlabel, ylabel: axis texts.
        **line_kwargs: passed to every ``ax.loglog`` call (e.g. ``linewidth``).

    Returns:
        The matplotlib axes.

    Raises:
        ImportError: if matplotlib is not installed (it is not a dependency of ``ssm``).
        ValueError: if a curve's last dimension is not ``W``.
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("plot_transfer needs matplotlib, which ssm does not install: pip install matplotlib (or the plot extra: pip install -e '.[plot]')") from err
    omega = torch.as_tensor(omega).detach().cpu().to(torch.float64)
    W = omega.shape[-1]
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    for label, G in curves.items():
        G = torch.as_tensor(G).detach().cpu()
        if G.shape[-1] != W:
            raise ValueError(f"plot_transfer: curve {label!r} has shape {tuple(G.shape)}, expected last dimension {W}")
        if G.dim() == 1:
            ax.loglog(omega.numpy(), G.abs().numpy(), label=label, **line_kwargs)
            continue
        for idx in itertools.product(*(range(d) for d in G.shape[:-1])):
            ax.loglog(omega.numpy(), G[idx].abs().numpy(), label=f"{label}{list(idx)}", **line_kwargs)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    ax.legend()
    return ax


_INTS = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def has_transfer(layer) -> bool:
    """Whether :func:`layer_transfer` can evaluate ``layer``: a diagonal SSM or S5 whose
    ``continuous()`` gives (Δ, Λ, B, C) (DSS parameterizes its kernel otherwise)."""
    from ssm.layers import S5, DiagonalSSM

    if not isinstance(layer, (S5, DiagonalSSM)) or not hasattr(layer, "continuous"):
        return False
    with torch.no_grad():
        return len(layer.continuous()) == 4


def layer_transfer(layer, omega: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Continuous-time transfer function of a layer's SSM (without the skip D) at s = iω.

    For the diagonal layers (S4D, S4-PTD) channel h has the kernel 2 Re sum_n w_n e^{λ_n t}
    with w = C·B over the stored modes (S4D: one per conjugate pair; S4-PTD: all N, its
    kernel being twice the perturbed LegS system's), so

        G_h(iω) = sum_n w_n / (iω - λ_n) + conj(w_n) / (iω - conj(λ_n))

    returned as complex128 (H, W). For S5 (modes λ shared by all channels) the MIMO response
    G_{hk}(iω) = s/2 · sum_n [C_{hn} B_{nk} / (iω - λ_n) + conj(C_{hn} B_{nk}) / (iω - conj λ_n)]
    (s = 2 with conjugate symmetry, else 1) is returned as (H_out, H_in, W). Uses the
    forward-direction C of a bidirectional layer; evaluated ``chunk`` frequencies at a time.
    """
    from ssm.layers import S5

    omega = torch.as_tensor(omega)
    if omega.dim() > 1 or omega.is_complex() or not (omega.is_floating_point() or omega.dtype in _INTS):
        raise ValueError(f"layer_transfer: expected real omega of shape (W,), got {omega.dtype} {tuple(omega.shape)}")
    omega = omega.to(torch.float64).reshape(-1)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"layer_transfer: chunk must be a positive integer, got {chunk!r}")
    if not has_transfer(layer):
        raise TypeError(f"layer_transfer: no continuous (Λ, B, C) form for {type(layer).__name__} "
                        "(S4D, S4PTD, S5 and S5PTD have one)")
    params = layer.continuous()
    _, lam, B, C = (t.detach().to(torch.complex128).cpu() for t in params)
    out = []
    for s in (1j * omega).split(chunk):
        if isinstance(layer, S5):
            C0 = C[0] * (layer.output_scale / 2)  # (H, n)
            R = 1.0 / (s[None, :] - lam[:, None])  # (n, w)
            Rc = 1.0 / (s[None, :] - lam.conj()[:, None])
            G = torch.einsum("hn,nw,nk->hkw", C0, R, B) + torch.einsum("hn,nw,nk->hkw", C0.conj(), Rc, B.conj())
        else:
            w = (C[0] * B).unsqueeze(-1)  # (H, n, 1)
            lam_ = lam.expand(w.shape[:-1]).unsqueeze(-1)
            G = (w / (s - lam_) + w.conj() / (s - lam_.conj())).sum(-2)
        out.append(G)
    return torch.cat(out, dim=-1)
