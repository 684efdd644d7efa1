"""The one table of comparison tolerances used by the tests, keyed by dtype."""

from __future__ import annotations

import torch

# dtype -> (rtol, atol)
TOLERANCES = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-4, 1e-5),
    torch.float16: (5e-3, 5e-3),
    torch.bfloat16: (3e-2, 5e-2),
}
_COMPLEX_TO_REAL = {torch.complex128: torch.float64, torch.complex64: torch.float32}


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """(rtol, atol) for ``dtype`` (complex dtypes use their real counterpart)."""
    return TOLERANCES[_COMPLEX_TO_REAL.get(dtype, dtype)]


def assert_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    dtype: torch.dtype | None = None,
    msg: str | None = None,
) -> None:
    """Compare with the tolerance of ``dtype`` (default: ``actual``'s dtype).

    Both sides are compared on CPU in float64 (complex128 for complex inputs), so a
    low-precision GPU result can be checked directly against a float64 oracle on CPU.
    """
    dtype = actual.dtype if dtype is None else dtype
    rtol, atol = tolerance(dtype)
    wide = torch.complex128 if (actual.is_complex() or expected.is_complex()) else torch.float64
    torch.testing.assert_close(
        actual.detach().to("cpu", wide), expected.detach().to("cpu", wide), rtol=rtol, atol=atol, msg=msg
    )


def assert_close_summed(
    actual: torch.Tensor,
    expected: torch.Tensor,
    dtype: torch.dtype | None = None,
    msg: str | None = None,
) -> None:
    """Like :func:`assert_close` for results that are sums of many terms of either sign
    (e.g. the gradient of a parameter shared over batch and time, or of a long scan): an
    entry that cancels to near zero keeps the absolute error of the large terms, so the
    atol is raised to rtol times the largest expected entry."""
    dtype = actual.dtype if dtype is None else dtype
    rtol, atol = tolerance(dtype)
    scale = expected.detach().abs().max().item() if expected.numel() else 0.0
    wide = torch.complex128 if (actual.is_complex() or expected.is_complex()) else torch.float64
    torch.testing.assert_close(
        actual.detach().to("cpu", wide), expected.detach().to("cpu", wide), rtol=rtol, atol=max(atol, rtol * scale), msg=msg
    )


def assert_rounded_once(actual: torch.Tensor, exact: torch.Tensor, dtype: torch.dtype) -> None:
    """Every entry of a half-precision ``actual`` within one spacing of ``dtype`` of the float64
    ``exact`` (eps·|exact|, plus 1e-5 of the largest |exact|): what a result computed in
    float32 and rounded once to ``dtype`` keeps, and one accumulated in ``dtype`` throughout
    misses by far (the dtype's comparison tolerance above cannot tell the two apart)."""
    exact = exact.detach().to("cpu", torch.float64)
    bound = torch.finfo(dtype).eps * exact.abs() + 1e-5 * exact.abs().max()
    error = (actual.detach().to("cpu", torch.float64) - exact).abs()
    assert bool((error <= bound).all()), f"error up to {float((error / bound).max()):.3g} spacings of {dtype}"
