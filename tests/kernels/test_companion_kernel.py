"""kernels.companion_kernel: K[i, k] = c[i]ᵀ A_i^k b[i] (torch methods and the reference)
against dense matrix powers in float64."""

import cmath
import importlib
import math

import pytest
import torch
from devices import backend_device
from reference import companion_kernel_by_powers
from tolerances import assert_close, assert_close_summed

import kernels
from kernels import companion_kernel
from kernels.companion_kernel import companion_kernel_squaring, companion_matrix, power_row
from kernels.companion_kernel.pytorch import singular_rows, x_power_mod

F64 = torch.float64
METHODS = ["fft", "series"]
# (n, d, L): L = 1, L < d, d = 1, odd d, L not a power of two, d > L with several folds.
SHAPES = [(3, 8, 20), (2, 12, 7), (4, 64, 40), (2, 1, 5), (3, 2, 1), (2, 5, 3), (3, 7, 129), (2, 16, 5), (1, 64, 1000)]


def inputs(n, d, dtype=F64, normalize=True, seed=0):
    """Random a, b, c (n, d); a scaled to ||a||_1 = 1 (SpaceTime's normalization) by default."""
    g = torch.Generator().manual_seed(seed)
    a, b, c = torch.randn(3, n, d, generator=g, dtype=F64)
    if normalize:
        a = a / a.abs().sum(-1, keepdim=True)
    return a.to(dtype), b.to(dtype), c.to(dtype)


def grads(a0, b0, c0, L, weight, **kwargs):
    """(K, grad a, grad b, grad c) of sum(K * weight)."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (a0, b0, c0)]
    K = companion_kernel(*leaves, L, **kwargs)
    (K * weight.to(K.dtype)).sum().backward()
    return [K.detach()] + [t.grad for t in leaves]


def oracle_grads(a0, b0, c0, L, weight):
    leaves = [t.detach().to(F64).requires_grad_(True) for t in (a0, b0, c0)]
    K = companion_kernel_by_powers(*leaves, L)
    (K * weight.to(F64)).sum().backward()
    return [K.detach()] + [t.grad for t in leaves]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n, d, L", SHAPES)
def test_forward_matches_matrix_powers_float64(n, d, L, method):
    a, b, c = inputs(n, d)
    K = companion_kernel(a, b, c, L, method=method)
    assert K.shape == (n, L) and K.dtype == F64
    assert_close_summed(K, companion_kernel_by_powers(a, b, c, L))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n, d, L", SHAPES)
def test_forward_float32_matches_float64_powers(n, d, L, method):
    a, b, c = inputs(n, d, torch.float32, seed=1)
    K = companion_kernel(a, b, c, L, method=method)
    assert K.dtype == torch.float32
    assert_close_summed(K, companion_kernel_by_powers(a, b, c, L), dtype=torch.float32)


@pytest.mark.parametrize("n, d, L", [(3, 8, 20), (2, 12, 7), (2, 1, 4), (3, 5, 33)])
def test_reference_and_squaring_match_matrix_powers(n, d, L):
    a, b, c = inputs(n, d, seed=2)
    expected = companion_kernel_by_powers(a, b, c, L)
    assert_close_summed(companion_kernel(a, b, c, L, backend="reference"), expected)
    assert_close_summed(companion_kernel_squaring(a, b, c, L), expected)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n, d, L", [(3, 8, 20), (2, 12, 7), (2, 1, 5), (3, 5, 1), (2, 6, 31)])
def test_gradients_match_matrix_powers(n, d, L, method):
    a, b, c = inputs(n, d, seed=3)
    weight = torch.randn(n, L, dtype=F64)
    for got, want in zip(grads(a, b, c, L, weight, method=method), oracle_grads(a, b, c, L, weight)):
        assert_close_summed(got, want)


@pytest.mark.parametrize("method", METHODS)
def test_float32_gradients_match(method):
    a, b, c = inputs(4, 16, torch.float32, seed=4)
    weight = torch.randn(4, 50)
    for got, want in zip(grads(a, b, c, 50, weight, method=method), oracle_grads(a, b, c, 50, weight)):
        assert_close_summed(got, want, dtype=torch.float32)


@pytest.mark.parametrize("method", METHODS)
def test_gradcheck(method):
    a, b, c = (t.requires_grad_(True) for t in inputs(2, 5, seed=5))
    assert torch.autograd.gradcheck(lambda a, b, c: companion_kernel(a, b, c, 13, method=method), (a, b, c))


def test_kernel_satisfies_the_characteristic_recurrence():
    """χ(A) = 0 with χ(z) = z^d - Σ_j a_j z^j, so K_{k+d} = Σ_j a_j K_{k+j}: a holds AR coefficients."""
    a, b, c = inputs(3, 6, seed=6)
    K = companion_kernel(a, b, c, 40)
    for k in range(40 - 6):
        torch.testing.assert_close(K[:, k + 6], (a * K[:, k : k + 6]).sum(-1), rtol=1e-10, atol=1e-12)


def test_shift_ssm_kernel_is_its_output_vector():
    """a = 0, b = e_0: A^k e_0 = e_k for k < d and 0 after, so K = c followed by zeros."""
    _, _, c = inputs(3, 6, seed=7)
    a = torch.zeros_like(c)
    b = torch.zeros_like(c)
    b[:, 0] = 1
    for method in METHODS:
        K = companion_kernel(a, b, c, 10, method=method)
        torch.testing.assert_close(K, torch.nn.functional.pad(c, (0, 4)), rtol=0, atol=1e-12)
        torch.testing.assert_close(companion_kernel(a, b, c, 4, method=method), c[:, :4], rtol=0, atol=1e-12)


def singular_batch(dtype=F64):
    """Rows with eigenvalues on the unit circle at roots of unity of L = 12, and generic rows:
    a = e_{d-1} (eigenvalue 1), a = e_0 (the d-th roots of unity; d = 6 divides 12), a = 0."""
    a, b, c = inputs(5, 6, seed=8)
    a[0] = 0
    a[0, -1] = 1
    a[1] = 0
    a[1, 0] = 1
    a[2] = 0
    return a.to(dtype), b.to(dtype), c.to(dtype)


def test_eigenvalues_at_roots_of_unity_fall_back_and_stay_exact():
    a, b, c = singular_batch()
    assert singular_rows(a, *_spectra(a, b, c, 12)).tolist() == [True, True, False, False, False]
    weight = torch.randn(5, 12, dtype=F64)
    for got, want in zip(grads(a, b, c, 12, weight), oracle_grads(a, b, c, 12, weight)):
        assert torch.isfinite(got).all()
        assert_close_summed(got, want)


@pytest.mark.parametrize("dtype, eps, bound", [(F64, 1e-8, 1e-12), (torch.float32, 1e-3, 5e-6)], ids=["float64", "float32"])
def test_rows_near_a_root_of_unity_fall_back_and_stay_exact(dtype, eps, bound):
    """Guards SINGULAR_TOL: eigenvalues within ~eps of L-th roots of unity (not on them) still send
    the row to the series method; the Sherman–Morrison ratio there loses ~rounding/eps."""
    a, b, c = inputs(3, 6, seed=12)
    a[0] = 0
    a[0, -1] = 1 - eps  # eigenvalue 1 - eps
    a[1] = 0
    a[1, 0] = 1 - eps  # eigenvalues (1 - eps)^(1/6) times the 6th roots of unity (6 divides L = 12)
    a, b, c = (t.to(dtype) for t in (a, b, c))
    assert singular_rows(a, *_spectra(a, b, c, 12))[:2].tolist() == [True, True]
    K = companion_kernel(a, b, c, 12, method="fft")
    truth = companion_kernel_by_powers(a, b, c, 12)  # on the inputs as given, in float64
    error = ((K.to(F64) - truth).abs().amax(-1) / truth.abs().amax(-1)).max().item()
    assert error < bound, error



def krylov_recurrence(a, b, c, L):
    """K_k = cᵀ x_k with x_0 = b, x_{k+1} = A x_k (shift down, a times the last entry)."""
    x, taps = b, []
    for _ in range(L):
        taps.append((c * x).sum(-1))
        x = torch.nn.functional.pad(x[:, :-1], (1, 0)) + a * x[:, -1:]
    return torch.stack(taps, -1)


@pytest.mark.parametrize("a_last", [0.99, 0.999, 0.9999])
@pytest.mark.parametrize("method", ["fft", "series"])
def test_float32_rows_near_a_unit_root_stay_as_accurate_as_a_float32_recurrence(a_last, method):
    """A persistent AR row (L1-normalized a ≈ a_last·e_d: an eigenvalue near z = 1) goes to the
    series method, whose 1/Q_rev has coefficients decaying like ρ^k: in float32 their ℓ1 norm
    ~ 1/(1-ρ) amplified the FFT rounding, to 10-100x a float32 recurrence's error in K and
    100-1000x in the gradients. The series method now runs in float64."""
    torch.manual_seed(21)
    d, L = 16, 1024
    noise = torch.randn(2, d, dtype=F64)
    a = (1 - a_last) * noise / noise.abs().sum(-1, keepdim=True)
    a[:, -1] = a_last
    a = a / a.abs().sum(-1, keepdim=True)
    b, c = torch.randn(2, d, dtype=F64), torch.randn(2, d, dtype=F64)
    weight = torch.randn(2, L, dtype=F64)
    inputs32 = [t.float().requires_grad_() for t in (a, b, c)]
    inputs64 = [t.detach().double().requires_grad_() for t in inputs32]  # the same rounded values
    K = companion_kernel(*inputs32, L, method=method)
    grads32 = torch.autograd.grad((K * weight.float()).sum(), inputs32)
    truth = krylov_recurrence(*inputs64, L)
    grads64 = torch.autograd.grad((truth * weight).sum(), inputs64)
    def rel(x, ref):
        return ((x.double() - ref).abs().max() / ref.abs().max()).item()
    assert rel(K, truth.detach()) < 1e-6
    for name, got, want in zip("abc", grads32, grads64):
        assert rel(got, want) < 1e-6, name

def test_float32_singular_rows_have_finite_gradients():
    a, b, c = singular_batch(torch.float32)
    weight = torch.randn(5, 12)
    for got, want in zip(grads(a, b, c, 12, weight), oracle_grads(a, b, c, 12, weight)):
        assert torch.isfinite(got).all()
        assert_close_summed(got, want, dtype=torch.float32)


def _spectra(a, b, c, L):
    from kernels.companion_kernel.pytorch import quadratic_form_spectra

    return quadratic_form_spectra(a, b, c - power_row(a, c, L), L), L


def test_growing_modes_fft_method():
    """With ||a||_1 > 1 (below the cancellation threshold) the spectral radius can exceed 1
    and K grows; such rows take the blocked recurrence and stay exact to the largest entry."""
    a, b, c = inputs(3, 6, seed=9)
    a = 3.5 * a  # ||a||_1 = 3.5 < SPECTRAL_MAX_L1[float64]
    assert torch.linalg.eigvals(companion_matrix(a)).abs().max() > 1.05
    expected = companion_kernel_by_powers(a, b, c, 30)
    assert expected.abs().max() > 10
    K = companion_kernel(a, b, c, 30, method="fft")
    torch.testing.assert_close(K, expected, rtol=1e-9, atol=1e-9 * expected.abs().max().item())


def _truth(a, b, c, L):
    """The sequential recurrence x ← A x in float64 on the inputs as given."""
    return kernels.companion_kernel(a.to(F64), b.to(F64), c.to(F64), L, backend="reference")


def _per_tap_error(K, truth):
    """max_k |K_k - truth_k| / |truth_k| over the taps that are not exact zeros."""
    nonzero = truth != 0
    return ((K.to(F64) - truth).abs()[nonzero] / truth.abs()[nonzero]).max().item()


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype, a, L", [
    (F64, [3.9], 64),  # ρ = 3.9 with ||a||_1 below 4: K_k = 3.9^k (the fft path gave -7e20 at k = 0)
    (torch.float32, [1.9], 64),  # float32 below 2: K_0 came out as -3e10
    (F64, [1.9, 0.9], 64),  # roots 1.9 and -1 (a root of unity: the series fallback, which amplified)
    (F64, [1.5, 1.5], 64),  # ρ ≈ 2.4: the series method was off by 6e5
    (torch.float32, [-0.3535, 0.552, 0.81], 2048),  # roots 1.01, 0.5, -0.7: K_2 was 8.6e9, not 1
])
def test_growing_kernels_keep_every_tap(dtype, a, L, method, backend):
    """A spectral radius >= 1 below the ||a||_1 threshold: the spectral formulas' rounding
    scales with max|K| ~ ρ^L and swamped the early taps; such rows take the blocked
    recurrence, exact tap by tap."""
    d = len(a)
    a = torch.tensor([a], dtype=dtype)
    b = torch.zeros(1, d, dtype=dtype)
    b[0, 0] = 1
    c = torch.zeros(1, d, dtype=dtype)
    c[0, -1 if d > 1 else 0] = 1
    truth = _truth(a, b, c, L)
    device = backend_device(backend)
    K = companion_kernel(a.to(device), b.to(device), c.to(device), L, backend=backend, method=method).cpu()
    assert _per_tap_error(K[:, :32], truth[:, :32]) < (1e-12 if dtype == F64 else 1e-5)
    torch.testing.assert_close(K.to(F64), truth, rtol=1e-5, atol=0.0)


def _stable_coefficients(roots):
    roots = torch.tensor(roots, dtype=torch.complex128)
    poly = torch.tensor([1.0 + 0j], dtype=torch.complex128)
    for r in roots:  # Π (z - r), highest degree first
        poly = torch.cat([poly, torch.zeros(1, dtype=poly.dtype)]) - r * torch.cat([torch.zeros(1, dtype=poly.dtype), poly])
    return -poly.real.flip(0)[:-1]  # χ(z) = z^d - Σ_j a_j z^j


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_stable_rows_with_large_coefficients_stay_accurate_in_float32(backend):
    """Roots inside the unit circle whose polynomial has ||a||_1 from 12 to 1e3: repeated
    squaring (the former route for such rows) multiplied rounding by ||A||^(2^j), a relative
    error of 0.2 at ||a||_1 = 12 and 1e10 or NaN beyond; the blocked recurrence in float64
    keeps them to float32 rounding."""
    g = torch.Generator().manual_seed(0)
    rows = [_stable_coefficients([0.9 * cmath.exp(s * t * 1j) for t in (0.1, 0.2) for s in (1, -1)])]
    for d in (12, 16, 24):
        r = 0.95 * (0.5 + 0.5 * torch.rand(d // 2, generator=g, dtype=F64))
        phase = torch.pi * torch.rand(d // 2, generator=g, dtype=F64)
        half = [complex(m * math.cos(p), m * math.sin(p)) for m, p in zip(r.tolist(), phase.tolist())]
        rows.append(_stable_coefficients(half + [z.conjugate() for z in half]))
    L, device = 256, backend_device(backend)
    for a in rows:
        d = a.shape[0]
        a = a[None].float()
        b, c = torch.randn(2, 1, d, generator=g).unbind(0)
        truth = _truth(a, b, c, L)
        K = companion_kernel(a.to(device), b.to(device), c.to(device), L, backend=backend).cpu()
        assert torch.isfinite(K).all()
        err = ((K.to(F64) - truth).abs().max() / truth.abs().max()).item()
        assert err < 1e-6, f"||a||_1 = {a.abs().sum():.3g}: relative error {err:.2e}"


def test_float32_rows_on_the_unit_circle_take_the_blocked_recurrence():
    """An undamped oscillation, a = [-1, 2 cos θ] (eigenvalues exp(±iθ), spectral radius exactly
    1, ||a||_1 <= 2): the fft formulas lose ~4e-6 of max|K| there in float32; rows with a
    spectral radius >= 1 take the blocked float64 recurrence, which keeps them to float32
    rounding of the result (~5e-8)."""
    g = torch.Generator().manual_seed(14)
    cos = torch.linspace(-0.5, 0.5, 11, dtype=F64)
    a = torch.stack([-torch.ones_like(cos), 2 * cos], -1).float()
    b, c = torch.randn(2, 11, 2, generator=g).unbind(0)
    for L in (16, 64):
        K = companion_kernel(a, b, c, L, method="fft")
        truth = _truth(a, b, c, L)
        error = ((K.to(F64) - truth).abs().amax(-1) / truth.abs().amax(-1)).max().item()
        assert error < 3e-7, f"L = {L}: relative error {error:.2e}"


@pytest.mark.parametrize("L", [1, 2])
def test_stable_float32_rows_just_above_the_l1_threshold_take_the_blocked_recurrence(L):
    """Guards SPECTRAL_MAX_L1[float32] = 2: stable rows with ||a||_1 of 3.1 and 3.4 are computed to
    float32 rounding (the fft formulas would lose ~3e-5 there)."""
    rows = [_stable_coefficients([0.6] * 3), _stable_coefficients([0.45] * 4)]
    g = torch.Generator().manual_seed(13)
    for a in rows:
        a = a[None].float()
        assert 3 < a.abs().sum() < 3.5
        b, c = torch.randn(2, 1, a.shape[1], generator=g).unbind(0)
        K = companion_kernel(a, b, c, L, method="fft")
        truth = companion_kernel_by_powers(a, b, c, L)
        error = ((K.to(F64) - truth).abs().max() / truth.abs().max()).item()
        assert error < 1e-6, f"||a||_1 = {a.abs().sum():.3g}: relative error {error:.2e}"


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("method", METHODS)
def test_float64_double_pole_next_to_a_unit_root_stays_exact(backend, method):
    """A stable row (radius 0.999) whose eigenvalue pair sits next to z = exp(2πi/L), with
    ||a||_1 = 3 (under float64's spectral limit of 4): the fft method finds it near-singular
    and handed it to the series method, whose Newton inversion amplified rounding along the
    double pole (relative error 1e20 at L = 8192); method="series" did the same. Such rows now
    take the blocked recurrence."""
    if backend == "triton" and method == "series":
        pytest.skip("the Triton backend is the fft method's spectral step")
    L, r = 4096, 0.999
    theta = 2 * math.pi / L
    device = backend_device(backend)
    a = torch.tensor([[-r * r, 2 * r * math.cos(theta)]], dtype=F64, device=device, requires_grad=True)
    b, c = torch.tensor([[1.0, 0.0]], dtype=F64), torch.tensor([[0.0, 1.0]], dtype=F64)
    K = companion_kernel(a, b.to(device), c.to(device), L, method=method, backend=backend).cpu()
    truth = companion_kernel_by_powers(a.detach().cpu(), b, c, L)
    assert ((K - truth).abs().max() / truth.abs().max()).item() < 1e-7  # the oracle too rounds over L steps
    w = torch.linspace(-1, 1, L, dtype=F64)
    grad = torch.autograd.grad((K * w).sum(), a)[0].cpu()
    a_ref = a.detach().cpu().requires_grad_(True)
    grad_ref = torch.autograd.grad((companion_kernel(a_ref, b, c, L, backend="reference") * w).sum(), a_ref)[0]
    assert ((grad - grad_ref).abs().max() / grad_ref.abs().max()).item() < 1e-7


def large_coefficient_batch(d, dtype):
    """Rows with ||a||_1 from 1 to 50 (around both dtypes' squaring thresholds) in one batch."""
    a, b, c = inputs(6, d, seed=4)
    a = a * torch.tensor([1.0, 1.9, 2.5, 3.9, 8.0, 50.0], dtype=F64)[:, None]
    return a.to(dtype), b.to(dtype), c.to(dtype)


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("d, L", [(16, 1), (16, 7), (64, 1), (64, 40), (5, 33)])
def test_large_coefficients_stay_exact(d, L, method, dtype):
    """Large ||a||_1 made both spectral formulas cancel catastrophically, wrong already at
    L = 1 (K = cᵀb); those rows take the blocked recurrence, the others keep their method."""
    a, b, c = large_coefficient_batch(d, dtype)
    K = companion_kernel(a, b, c, L, method=method)
    expected = companion_kernel_by_powers(a, b, c, L)
    for row in range(a.shape[0]):  # each row to its own scale: the rows grow at different rates
        assert_close_summed(K[row], expected[row], dtype=dtype, msg=f"row {row}")
    if L == 1:
        assert_close(K[:, 0], (b * c).sum(-1))


@pytest.mark.parametrize("method", METHODS)
def test_large_coefficients_gradients(method):
    a, b, c = large_coefficient_batch(9, F64)
    weight = torch.randn(6, 12, generator=torch.Generator().manual_seed(3), dtype=F64)
    weight = weight / companion_kernel_by_powers(a, b, c, 12).abs().amax(-1, keepdim=True)  # rows on one scale
    for got, want in zip(grads(a, b, c, 12, weight, method=method), oracle_grads(a, b, c, 12, weight)):
        assert_close_summed(got, want)


@pytest.mark.parametrize("L", [0, 1, 2, 5, 64, 1000, 4097])
def test_power_row_and_x_power_mod_match_matrix_power(L):
    a, _, c = inputs(3, 7, seed=10)
    A = torch.zeros(3, 7, 7, dtype=F64)
    for j in range(6):
        A[:, j + 1, j] = 1
    A[:, :, -1] += a
    AL = torch.linalg.matrix_power(A, L)
    torch.testing.assert_close(power_row(a, c, L), torch.einsum("ni,nij->nj", c, AL), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(x_power_mod(a, L), AL[:, :, 0], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_computed_in_float32(dtype):
    a, b, c = inputs(3, 8, dtype, seed=11)
    K = companion_kernel(a, b, c, 24)
    assert K.dtype == dtype
    assert_close_summed(K, companion_kernel_by_powers(a, b, c, 24), dtype=dtype)


def test_zero_length_gives_empty_kernel_with_zero_gradients():
    for backend in ("torch", "reference"):
        a, b, c = (t.requires_grad_(True) for t in inputs(3, 4))
        K = companion_kernel(a, b, c, 0, backend=backend)
        assert K.shape == (3, 0)
        K.sum().backward()
        assert all(t.grad is not None and not t.grad.any() for t in (a, b, c))


@pytest.mark.parametrize("norm", [0.5, 5.0])  # 5: every row takes the blocked float64 recurrence
@pytest.mark.parametrize("backend", ["triton", "torch", "reference"])
def test_length_one_gives_a_a_zero_gradient(backend, norm):
    """K_0 = cᵀb does not depend on a: its gradient is zero (to rounding), not missing."""
    a, b, c = (t.to(backend_device(backend)) for t in inputs(3, 4, seed=17))
    a = (a / a.abs().sum(-1, keepdim=True) * norm).requires_grad_(True)
    b, c = b.requires_grad_(True), c.requires_grad_(True)
    K = companion_kernel(a, b, c, 1, backend=backend)
    assert_close(K[:, 0], (b * c).detach().sum(-1))
    ga, gb, gc = torch.autograd.grad(K.sum(), (a, b, c))
    assert ga.abs().max() < 1e-12
    assert_close(gb, c.detach())
    assert_close(gc, b.detach())


@pytest.mark.parametrize("method", ["fft", "series"])
@pytest.mark.parametrize("backend", ["triton", "torch", "reference"])
def test_no_rows_gives_an_empty_kernel_with_a_gradient(backend, method):
    a = torch.zeros(0, 3, dtype=torch.float64, device=backend_device(backend), requires_grad=True)
    b, c = torch.zeros(2, 0, 3, dtype=torch.float64, device=backend_device(backend))
    K = companion_kernel(a, b, c, 5, backend=backend, method=method)
    assert K.shape == (0, 5) and K.dtype == torch.float64
    K.sum().backward()
    assert a.grad.shape == (0, 3)


def test_cpu_tensors_dispatch_to_torch(monkeypatch):
    """The default on CPU is the torch path (the other tests call the op without backend=,
    so they check the torch path only through this dispatch)."""
    a, b, c = inputs(2, 4)
    ck = importlib.import_module("kernels.companion_kernel")
    calls = []
    torch_path = ck._IMPLEMENTATIONS["torch"]
    monkeypatch.setitem(ck._IMPLEMENTATIONS, "torch", lambda *args, **kw: calls.append(1) or torch_path(*args, **kw))
    K = companion_kernel(a, b, c, 9)
    assert calls == [1] and torch.equal(K, torch_path(a, b, c, 9))
    with kernels.use_backend("reference"):
        companion_kernel(a, b, c, 9)
    assert calls == [1]


@pytest.mark.parametrize(
    "args, error, match",
    [
        ((torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 4), 5), ValueError, "one shape"),
        ((torch.zeros(3), torch.zeros(3), torch.zeros(3), 5), ValueError, r"\(n, d\)"),
        ((torch.zeros(2, 0), torch.zeros(2, 0), torch.zeros(2, 0), 5), ValueError, "d >= 1"),
        ((torch.zeros(2, 3), torch.zeros(2, 3, dtype=F64), torch.zeros(2, 3), 5), TypeError, "share a dtype"),
        ((torch.zeros(2, 3, dtype=torch.long),) * 3 + (5,), TypeError, "floating-point"),
        ((torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), -1), ValueError, "non-negative"),
        ((torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), 2.5), ValueError, "non-negative"),
        (([0.0], torch.zeros(2, 3), torch.zeros(2, 3), 5), TypeError, "must be a tensor"),
    ],
)
def test_bad_inputs_raise_clear_errors(args, error, match):
    with pytest.raises(error, match=match):
        companion_kernel(*args)


def test_unknown_method_raises():
    a, b, c = inputs(2, 3)
    with pytest.raises(ValueError, match="method must be one of"):
        companion_kernel(a, b, c, 5, method="krylov")


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_l1_normalized_rows_stay_on_the_series_method(monkeypatch, dtype):
    """The layers' a / ||a||_1 rounds to 1 + O(d eps), above 1 for many rows: those rows keep
    the series method (its bound holds to rounding), rather than leaving it row by row."""
    pytorch_impl = importlib.import_module("kernels.companion_kernel.pytorch")
    a, b, c = inputs(200, 64, dtype=dtype)
    assert (a.abs().sum(-1) > 1).any()

    def refuse(*args, **kwargs):
        raise AssertionError("an L1-normalized row took the blocked recurrence")

    monkeypatch.setattr(pytorch_impl, "companion_kernel_blocked", refuse)
    K = companion_kernel(a, b, c, 50, method="series", backend="torch")
    assert torch.isfinite(K).all()
