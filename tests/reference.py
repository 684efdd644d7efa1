"""Float64 oracles for the tests, written from the math and independent of the library.

Everything here runs in float64 / complex128 with plain Python loops (or one loop per lag),
so each result can be read off the defining formula:

- convolutions act on (B, H, L) tensors, like ``kernels.fftconv``;
- recurrences act on (B, L, H) tensors, like the sequence layers.
"""

from __future__ import annotations

import torch

F64 = torch.float64
C128 = torch.complex128


def causal_conv_loop(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None = None) -> torch.Tensor:
    """y[b, h, t] = sum_{s <= t} k[h, t - s] u[b, h, s] + D[h] u[b, h, t].

    u (B, H, L), k (H, L), D (H,) or None; returns float64 (B, H, L). One loop over the lag
    j = t - s: the lag-j term adds k[h, j] u[b, h, t - j] to every t >= j.
    """
    u, k = u.to(F64), k.to(F64)
    L = u.shape[-1]
    y = torch.zeros_like(u)
    for j in range(L):
        y[..., j:] += k[:, j, None] * u[..., : L - j]
    if D is not None:
        y += D.to(F64)[:, None] * u
    return y


def two_sided_conv_loop(
    u: torch.Tensor, k0: torch.Tensor, k1: torch.Tensor, D: torch.Tensor | None = None
) -> torch.Tensor:
    """Causal part with k0 plus y[b, h, t] += sum_{s > t} k1[h, s - t - 1] u[b, h, s].

    The anti-causal lag j = s - t - 1 adds k1[h, j] u[b, h, t + j + 1] to every t < L - j - 1.
    """
    u, k1 = u.to(F64), k1.to(F64)
    L = u.shape[-1]
    y = causal_conv_loop(u, k0, D)
    for j in range(L - 1):
        y[..., : L - j - 1] += k1[:, j, None] * u[..., j + 1 :]
    return y


def diagonal_recurrence(
    Abar: torch.Tensor,
    Bbar: torch.Tensor,
    C: torch.Tensor,
    u: torch.Tensor,
    D: torch.Tensor | None = None,
    scale: float = 2.0,
) -> torch.Tensor:
    """Sequential diagonal SSM on u (B, L, H), complex128 state (B, H, n):

        x_t = Abar ⊙ x_{t-1} + Bbar ⊙ u_t,   x_{-1} = 0
        y_t = scale · Re(sum_n C_n x_{t,n}) + D ⊙ u_t

    Abar, Bbar, C: complex (H, n). Returns float64 (B, L, H).
    """
    Abar, Bbar, C = Abar.to(C128), Bbar.to(C128), C.to(C128)
    u = u.to(F64)
    Bsz, L, H = u.shape
    x = torch.zeros(Bsz, H, Abar.shape[-1], dtype=C128)
    ys = []
    for t in range(L):
        x = Abar * x + Bbar * u[:, t, :, None]
        y = scale * (C * x).sum(-1).real
        if D is not None:
            y = y + D.to(F64) * u[:, t]
        ys.append(y)
    return torch.stack(ys, dim=1) if ys else torch.zeros(Bsz, 0, H, dtype=F64)


def backward_recurrence(
    Abar: torch.Tensor,
    Bbar: torch.Tensor,
    C: torch.Tensor,
    u: torch.Tensor,
    D: torch.Tensor | None = None,
    scale: float = 2.0,
) -> torch.Tensor:
    """Anti-causal diagonal SSM on u (B, L, H), run from the end:

        b_{L-1} = 0,   b_t = Abar ⊙ b_{t+1} + Bbar ⊙ u_{t+1}
        y_t = scale · Re(sum_n C_n b_{t,n}) (+ D ⊙ u_t if D is given)

    so that y_t = sum_{s > t} scale · Re(C Abar^{s-t-1} Bbar) u_s. Returns float64 (B, L, H).
    """
    Abar, Bbar, C = Abar.to(C128), Bbar.to(C128), C.to(C128)
    u = u.to(F64)
    Bsz, L, H = u.shape
    b = torch.zeros(Bsz, H, Abar.shape[-1], dtype=C128)
    ys = [None] * L
    for t in range(L - 1, -1, -1):
        if t < L - 1:
            b = Abar * b + Bbar * u[:, t + 1, :, None]
        y = scale * (C * b).sum(-1).real
        if D is not None:
            y = y + D.to(F64) * u[:, t]
        ys[t] = y
    return torch.stack(ys, dim=1) if L else torch.zeros(Bsz, 0, H, dtype=F64)


def kernel_by_powers(
    Abar: torch.Tensor, Bbar: torch.Tensor, C: torch.Tensor, L: int, scale: float = 2.0
) -> torch.Tensor:
    """K[h, l] = scale · Re(sum_n C_n Abar_n^l Bbar_n), powers by repeated multiplication.

    Abar, Bbar, C: complex (H, n). Returns float64 (H, L).
    """
    Abar, Bbar, C = Abar.to(C128), Bbar.to(C128), C.to(C128)
    power = torch.ones_like(Abar)
    cols = []
    for _ in range(L):
        cols.append(scale * (C * power * Bbar).sum(-1).real)
        power = power * Abar
    return torch.stack(cols, dim=-1) if cols else torch.zeros(Abar.shape[0], 0, dtype=F64)


def linear_recurrence(
    a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None, reverse: bool = False
) -> torch.Tensor:
    """h[:, t] = a[:, t] h[:, t-1] + b[:, t], h[:, -1] = h0 (0 if None), over b (B, L, P).

    With ``reverse`` the steps run t = L-1 .. 0 from h[:, L] = h0: h[:, t] = a[:, t] h[:, t+1] + b[:, t].
    a is (B, L, P) or (P,); h0 is (B, P). Everything is widened to complex128 and the result
    is complex128, or float64 when a, b and h0 are all real. Differentiable by autograd.
    """
    real = not (a.is_complex() or b.is_complex() or (h0 is not None and h0.is_complex()))
    wide = F64 if real else C128
    a, b = a.to(wide), b.to(wide)
    Bsz, L, P = b.shape
    if a.dim() == 1:
        a = a.expand(Bsz, L, P)
    state = torch.zeros(Bsz, P, dtype=wide) if h0 is None else h0.to(wide)
    states = [None] * L
    order = range(L - 1, -1, -1) if reverse else range(L)
    for t in order:
        state = a[:, t] * state + b[:, t]
        states[t] = state
    return torch.stack(states, dim=1) if L else torch.zeros(Bsz, 0, P, dtype=wide)


def run_steps(layer, x: torch.Tensor, **init_kwargs) -> torch.Tensor:
    """The layer's recurrence over x (B, L, H): ``step`` from ``init_state``; (B, L, H)."""
    state = layer.init_state(x.shape[0], **init_kwargs)
    ys = []
    for t in range(x.shape[1]):
        y, state = layer.step(x[:, t], state)
        ys.append(y)
    return torch.stack(ys, dim=1)


def linear_scan_inputs(B, L, P, dtype=C128, a_dtype=None, const=False, h0=True, mag=(0.5, 1.0)):
    """Inputs of ``linear_scan`` on CPU: a with |a| uniform in ``mag`` (random phases when
    complex), (B, L, P) or (P,) if ``const``; b (B, L, P) and h0 (B, P) (or None) ~ N(0, 1)."""
    a_dtype = dtype if a_dtype is None else a_dtype
    shape = (P,) if const else (B, L, P)
    lo, hi = mag
    a = lo + (hi - lo) * torch.rand(shape, dtype=F64)
    if a_dtype.is_complex:
        a = a * torch.exp(1j * 3.0 * torch.randn(shape, dtype=F64))
    b = torch.randn(B, L, P, dtype=C128 if dtype.is_complex else F64)
    h = torch.randn(B, P, dtype=b.dtype) if h0 else None
    return a.to(a_dtype), b.to(dtype), None if h is None else h.to(dtype)



def constant_a_near_unit_circle(L: int, P: int = 4, seed: int = 8):
    """complex64 (a (P,) with 1 - |a| log-uniform in [1e-7, 1e-5], b (1, L, P), a cotangent
    weight (1, L, P)): a constant a whose rounding would add up coherently along L."""
    gen = torch.Generator().manual_seed(seed)
    mag = 1 - 10 ** (-7 + 2 * torch.rand(P, generator=gen, dtype=F64))
    a = torch.polar(mag, (2 * torch.rand(P, generator=gen, dtype=F64) - 1) * torch.pi).to(torch.complex64)
    b = torch.randn(1, L, P, generator=gen, dtype=torch.complex64)
    weight = torch.randn(1, L, P, generator=gen, dtype=torch.complex64)
    return a, b, weight


def scan_errors_against_complex128(a, b, weight, reverse: bool, backend: str, device="cpu") -> tuple[float, ...]:
    """Relative errors (h, grad a, grad b) of ``linear_scan`` on ``backend`` against the
    complex128 torch path on the same values (gradients of Re Σ h·w); each is
    max |ours - ref| / max |ref|."""
    from kernels import linear_scan

    results = []
    for dtype, where, path in ((a.dtype, device, backend), (C128, "cpu", "torch")):
        a_, b_ = a.to(device=where, dtype=dtype).requires_grad_(), b.to(device=where, dtype=dtype).requires_grad_()
        h = linear_scan(a_, b_, reverse=reverse, backend=path)
        grads = torch.autograd.grad((h * weight.to(device=where, dtype=dtype)).real.sum(), (a_, b_))
        results.append([t.detach().cpu().to(C128) for t in (h, *grads)])
    return tuple(((got - ref).abs().max() / ref.abs().max()).item() for got, ref in zip(*results))


def companion_kernel_by_powers(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, L: int) -> torch.Tensor:
    """K[i, k] = c[i]ᵀ A_i^k b[i] with A_i = S + a[i] e_dᵀ built densely and powered by
    ``torch.linalg.matrix_power``: float64 (n, L), differentiable in a, b and c."""
    a, b, c = a.to(F64), b.to(F64), c.to(F64)
    n, d = a.shape
    A = torch.zeros(n, d, d, dtype=F64)
    for j in range(d - 1):
        A[:, j + 1, j] = 1.0
    A = A + torch.nn.functional.pad(a.unsqueeze(-1), (d - 1, 0))  # a in the last column
    cols = [torch.einsum("ni,nij,nj->n", c, torch.linalg.matrix_power(A, k), b) for k in range(L)]
    return torch.stack(cols, -1) if cols else torch.zeros(n, 0, dtype=F64)


# --- Layer gradients against an oracle built from the raw parameters -------------------------


def leaf_parameters(layer) -> dict[str, torch.Tensor]:
    """Float64 leaf copies of the layer's parameters exactly as stored, requiring grad."""
    return {name: p.detach().to(F64).clone().requires_grad_(True) for name, p in layer.named_parameters()}


def zoh_by_matrix_exp(dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor):
    """(Ā, B̄) of diagonal modes from exp([[ΔA, ΔB], [0, 0]]) = [[Ā, B̄], [0, 1]]."""
    dtA, dtB = dt * A, dt * B
    zero = torch.zeros_like(dtA)
    M = torch.stack([torch.stack([dtA, dtB], -1), torch.stack([zero, zero], -1)], -2)
    E = torch.linalg.matrix_exp(M)
    return E[..., 0, 0], E[..., 0, 1]


def bilinear_explicit(dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor):
    """(Ā, B̄) = ((1 + ΔA/2)/(1 - ΔA/2), ΔB/(1 - ΔA/2))."""
    dtA = dt * A
    return (1 + dtA / 2) / (1 - dtA / 2), dt * B / (1 - dtA / 2)


def check_gradients_against_reference(layer, reference, L: int, run=None, batch: int = 2, names=None) -> None:
    """The output and the gradients of a random loss sum(g ⊙ y) w.r.t. x and every parameter
    of the float64 ``layer`` (output ``run(layer, x)``, default its forward) match autograd
    through ``reference(params, x)`` on float64 copies of the raw parameters
    (:func:`leaf_parameters`); ``names``, if given, is the exact set of parameter names."""
    from tolerances import assert_close, assert_close_summed

    params = leaf_parameters(layer)
    if names is not None:
        assert set(params) == set(names), sorted(params)
    x = torch.randn(batch, L, layer.d_model, dtype=F64, requires_grad=True)
    g = torch.randn(batch, L, layer.d_model, dtype=F64)
    y = layer(x) if run is None else run(layer, x)
    (g * y).sum().backward()
    x_ref = x.detach().clone().requires_grad_(True)
    y_ref = reference(params, x_ref)
    (g * y_ref).sum().backward()
    assert_close(y, y_ref, msg=lambda m: f"output: {m}")
    assert_close(x.grad, x_ref.grad, msg=lambda m: f"grad x: {m}")
    for name, p in layer.named_parameters():
        assert p.grad is not None, name
        assert_close_summed(p.grad, params[name].grad, msg=lambda m, name=name: f"grad {name}: {m}")
