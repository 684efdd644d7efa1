"""ssm.Mamba's token-dynamics options (positive-definite S_Cᵀ S_B, importance reordering),
ssm.layers.softsort and the scenario criterion in ssm.token_dynamics."""

import math

import pytest
import torch
import torch.nn.functional as F
from reference import check_gradients_against_reference, run_steps
from tolerances import assert_close

import ssm
from config_helpers import compose_config
from kernels import selective_scan
from ssm.layers.mamba import PositiveDefiniteProjection
from ssm.layers.softsort import soft_sort
from ssm.token_dynamics import predict_scenario, scenario_table, summary

F64 = torch.float64


def randomize(layer, scale=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return layer


# ---------------------------------------------------------------- defaults are untouched


@pytest.mark.parametrize("option", [{"reorder_tokens": True}, {"reorder_tokens": True, "bidirectional": True}])
def test_reorder_option_draws_the_other_parameters_unchanged(option):
    torch.manual_seed(3)
    plain = ssm.Mamba(6, d_state=4, **{k: v for k, v in option.items() if k == "bidirectional"})
    torch.manual_seed(3)
    with_option = ssm.Mamba(6, d_state=4, **option)
    theirs = with_option.state_dict()
    for name, value in plain.state_dict().items():
        assert torch.equal(value, theirs[name]), name
    assert set(theirs) - set(plain.state_dict()) <= {"importance.weight", "importance_b.weight"}


def test_options_off_by_default():
    layer = ssm.Mamba(4)
    assert not layer.positive_definite and not layer.reorder_tokens and layer.io_spectrum is None
    assert isinstance(layer.x_proj, torch.nn.Linear) and not hasattr(layer, "importance")


# ---------------------------------------------------------------- refinement 1


def test_positive_definite_projection_structure():
    proj = randomize(PositiveDefiniteProjection(d_inner=7, dt_rank=2, d_state=3).double(), scale=1.0)
    W = proj.weight
    S_delta, S_B, S_C = W[:2], W[2:5], W[5:8]
    assert torch.equal(S_delta, proj.dt_weight)
    U = torch.zeros(3, 7, dtype=F64)
    for n in range(3):
        U[n, n] = 1.0
        U[n, n + 1 :] = proj.P[n, n + 1 :]
    lam = torch.log1p(torch.exp(proj.d)) + 0.7
    assert_close(S_C, U)
    assert_close(S_B, lam[:, None] * U)
    M = S_C.T @ S_B
    assert_close(M, M.T)
    eig = torch.linalg.eigvalsh(M)
    assert eig.min() >= -1e-10 * eig.max()
    assert int((eig > 1e-8 * eig.max()).sum()) == 3  # rank N


def test_positive_definite_starts_at_lambda_one():
    proj = PositiveDefiniteProjection(8, 1, 4)
    assert_close(F.softplus(proj.d) + 0.7, torch.ones(4))


def test_positive_definite_layer_never_convergent_and_trains():
    for seed in range(5):
        layer = randomize(ssm.Mamba(3, d_state=4, expand=2, positive_definite=True).double(), scale=2.0, seed=seed)
        report = predict_scenario(layer)
        assert report.n_negative == 0 and report.scenario == "divergent"
        assert report.symmetric_eigenvalues.min() >= -1e-9 * report.symmetric_eigenvalues.abs().max()
    x = torch.randn(2, 9, 3, dtype=F64)
    layer(x).square().sum().backward()
    for name in ("dt_weight", "P", "d"):
        grad = getattr(layer.x_proj, name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_positive_definite_step_matches_forward():
    torch.manual_seed(1)
    layer = randomize(ssm.Mamba(5, d_state=3, positive_definite=True).double(), scale=0.3).eval()
    x = torch.randn(2, 7, 5, dtype=F64)
    with torch.no_grad():
        assert_close(run_steps(layer, x), layer(x))


def test_positive_definite_needs_enough_channels():
    with pytest.raises(ValueError, match="d_inner"):
        ssm.Mamba(2, d_state=8, expand=2, positive_definite=True)


@pytest.mark.parametrize("spectrum, signs", [("negative", [-1, -1, -1, -1, -1]), ("mixed", [1, 1, 1, -1, -1])])
def test_control_projections_have_the_chosen_signs(spectrum, signs):
    proj = randomize(PositiveDefiniteProjection(d_inner=9, dt_rank=1, d_state=5, spectrum=spectrum).double(), 1.0)
    W = proj.weight
    S_B, S_C = W[1:6], W[6:11]
    lam = torch.tensor(signs, dtype=F64) * (torch.log1p(torch.exp(proj.d)) + 0.7)
    assert_close(S_B, lam[:, None] * S_C)
    # Uᵀ diag(λ) U with U of full row rank: the nonzero eigenvalues have the signs of λ (Sylvester).
    eig = torch.linalg.eigvalsh(S_C.T @ S_B)
    tol = 1e-8 * eig.abs().max()
    assert int((eig > tol).sum()) == signs.count(1) and int((eig < -tol).sum()) == signs.count(-1)


@pytest.mark.parametrize("spectrum, scenario", [("positive", "divergent"), ("negative", "convergent"),
                                                ("mixed", "divergent")])
def test_io_spectrum_decides_the_predicted_scenario(spectrum, scenario):
    for seed in range(3):
        layer = randomize(ssm.Mamba(4, d_state=4, io_spectrum=spectrum).double(), scale=2.0, seed=seed)
        report = predict_scenario(layer)
        assert report.scenario == scenario
        assert (report.n_negative > 0) == (spectrum != "positive")


def test_positive_definite_is_io_spectrum_positive():
    torch.manual_seed(5)
    a = ssm.Mamba(6, d_state=4, positive_definite=True)
    torch.manual_seed(5)
    b = ssm.Mamba(6, d_state=4, io_spectrum="positive")
    assert a.positive_definite and b.positive_definite and a.io_spectrum == b.io_spectrum == "positive"
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_negative_spectrum_step_matches_forward_and_trains():
    torch.manual_seed(2)
    layer = randomize(ssm.Mamba(5, d_state=3, io_spectrum="negative").double(), scale=0.3).eval()
    x = torch.randn(2, 6, 5, dtype=F64)
    with torch.no_grad():
        assert_close(run_steps(layer, x), layer(x))
    layer(x).square().sum().backward()
    assert layer.x_proj.d.grad.abs().sum() > 0


def test_io_spectrum_errors():
    with pytest.raises(ValueError, match="io_spectrum must be one of"):
        ssm.Mamba(4, io_spectrum="definite")
    with pytest.raises(ValueError, match="positive_definite=True means"):
        ssm.Mamba(4, positive_definite=True, io_spectrum="negative")
    with pytest.raises(ValueError, match="spectrum must be one of"):
        PositiveDefiniteProjection(8, 1, 4, spectrum="zero")


# ---------------------------------------------------------------- soft sort


def test_soft_sort_rows_sum_to_one_and_hardens():
    scores = torch.tensor([[0.3, -1.0, 2.0, 0.9]], dtype=F64)
    P = soft_sort(scores, tau=1.0)
    assert_close(P.sum(-1), torch.ones(1, 4, dtype=F64))
    hard = soft_sort(scores, tau=1e-4)
    order = torch.tensor([2, 3, 0, 1])
    assert_close(hard[0], torch.eye(4, dtype=F64)[order])
    v = torch.randn(1, 4, 2, dtype=F64)
    assert_close(hard @ v, v[:, order])


def test_masked_soft_sort_sorts_only_the_valid_entries_into_the_valid_positions():
    torch.manual_seed(0)
    scores = torch.randn(2, 7, dtype=F64, requires_grad=True)
    valid = torch.tensor([[1, 1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 1, 1]], dtype=torch.bool)  # right, left padding
    P = soft_sort(scores, tau=0.7, valid=valid)
    for b in range(2):
        idx = valid[b].nonzero().squeeze(-1)
        alone = soft_sort(scores[b, idx], tau=0.7)
        assert_close(P[b][idx][:, idx], alone)  # the valid block is the soft sort of the valid scores
        assert (P[b][~valid[b]] == 0).all() and (P[b][:, ~valid[b]] == 0).all()
    P.square().sum().backward()
    assert torch.isfinite(scores.grad).all()
    assert (scores.grad[~valid] == 0).all() and (scores.grad[valid] != 0).all()
    assert_close(soft_sort(scores, 0.7, torch.ones_like(valid)), soft_sort(scores, 0.7))
    with pytest.raises(ValueError, match="bool mask"):
        soft_sort(scores, valid=valid.double())


@pytest.mark.parametrize("tau", [0.3, 1.0, 2.5])
def test_soft_sort_at_a_finite_temperature_is_its_formula(tau):
    """P[r, c] = exp(-|s_c - s_(r)| / τ) / Σ_c' exp(-|s_c' - s_(r)| / τ), s_(r) the r-th largest,
    written out entry by entry (the other tests only check the τ -> 0 limit)."""
    scores = torch.tensor([[0.3, -1.0, 2.0, 0.9, 0.3]], dtype=F64)
    ordered = sorted(scores[0].tolist(), reverse=True)
    expected = torch.zeros(1, 5, 5, dtype=F64)
    for r in range(5):
        weights = [math.exp(-abs(s - ordered[r]) / tau) for s in scores[0].tolist()]
        for c in range(5):
            expected[0, r, c] = weights[c] / sum(weights)
    assert_close(soft_sort(scores, tau), expected)


def test_soft_sort_rejects_bad_arguments():
    with pytest.raises(ValueError, match="tau"):
        soft_sort(torch.randn(3), tau=0.0)
    with pytest.raises(ValueError, match="scores"):
        soft_sort(torch.arange(3))


# ---------------------------------------------------------------- refinement 2


def hard_reordered_forward(layer, u):
    """Independent check at τ -> 0: sort the convolved tokens by increasing score, run the
    plain scan (float64 reference) on the sorted sequence, put the outputs back, gate."""
    L = u.shape[1]
    x, z = layer.in_proj(u).transpose(1, 2).chunk(2, dim=1)
    x = F.silu(layer.conv1d(x)[..., :L])
    r, N = layer.dt_rank, layer.d_state

    def project(x):
        xdbl = x.transpose(1, 2) @ layer.x_proj.weight.T
        delta = (xdbl[..., :r] @ layer.dt_proj.weight.T).transpose(1, 2)
        return delta, xdbl[..., r : r + N].transpose(1, 2), xdbl[..., r + N :].transpose(1, 2)

    delta, _, _ = project(x)
    scores = ((delta + layer.dt_proj.bias[:, None]).transpose(1, 2) @ layer.importance.weight.T).squeeze(-1)
    order = scores.argsort(dim=-1)  # least important first
    xs = torch.stack([x[b][:, order[b]] for b in range(x.shape[0])])
    delta, B, C = project(xs)
    y_sorted = selective_scan(
        xs, delta, -torch.exp(layer.A_log), B, C, layer.D, delta_bias=layer.dt_proj.bias, delta_softplus=True,
        backend="reference",
    )
    y = torch.empty_like(y_sorted)
    for b in range(x.shape[0]):
        y[b][:, order[b]] = y_sorted[b]
    return layer.out_proj((y * F.silu(z)).transpose(1, 2))


def test_reorder_tokens_matches_hard_sort_at_small_tau():
    torch.manual_seed(4)
    layer = randomize(ssm.Mamba(4, d_state=3, reorder_tokens=True, reorder_tau=1e-6).double(), scale=0.5)
    with torch.no_grad():
        layer.importance.weight.mul_(10.0)  # well separated scores
    u = torch.randn(2, 6, 4, dtype=F64)
    with torch.no_grad():
        assert_close(layer(u), hard_reordered_forward(layer, u))


def soft_reordered_oracle(params, u, layer, tau):
    """The reorder_tokens layer from its definition at a finite τ, float64, one token and one step
    at a time, from the raw parameters: conv → SiLU → scores s = w·(W_dt δ + b_dt) → for each
    sequence P[r, c] = exp(-|v_c - v_(r)|/τ) / Σ_c' exp(-|v_c' - v_(r)|/τ) with v = -s and v_(r) its
    r-th largest → x' = P x → the plain selective scan of x' → Pᵀ back → gate → out_proj."""
    p = params
    E, N, R, K = layer.d_inner, layer.d_state, layer.dt_rank, layer.d_conv
    xz = u @ p["in_proj.weight"].T
    x, z = xz[..., :E], xz[..., E:]
    Bsz, L, _ = x.shape
    w = p["conv1d.weight"][:, 0, :]  # tap k multiplies x[t - (K - 1 - k)]
    xc = p["conv1d.bias"].expand(Bsz, L, E)
    for k in range(K):
        lag = K - 1 - k
        if lag < L:
            xc = xc + torch.cat([torch.zeros(Bsz, lag, E, dtype=F64), w[:, k] * x[:, : L - lag]], dim=1)
    xc = xc * torch.sigmoid(xc)
    A = -torch.exp(p["A_log"])

    def project(v):  # (L, E) -> W_dt δ (L, E), B (L, N), C (L, N)
        dbc = v @ p["x_proj.weight"].T
        return dbc[:, :R] @ p["dt_proj.weight"].T, dbc[:, R : R + N], dbc[:, R + N :]

    outs = []
    for b in range(Bsz):
        pre, _, _ = project(xc[b])
        v = -((pre + p["dt_proj.bias"]) @ p["importance.weight"].T)[:, 0]  # (L,)
        ordered = torch.sort(v, descending=True).values
        rows = []
        for r in range(L):
            e = torch.exp(-(v - ordered[r]).abs() / tau)
            rows.append(e / e.sum())
        P = torch.stack(rows)  # (L, L)
        xs = P @ xc[b]
        pre, Bm, Cm = project(xs)
        delta = torch.log1p(torch.exp(pre + p["dt_proj.bias"]))
        h = torch.zeros(E, N, dtype=F64)
        ys = []
        for t in range(L):
            h = torch.exp(delta[t, :, None] * A) * h + (delta[t] * xs[t])[:, None] * Bm[t]
            ys.append((h * Cm[t]).sum(-1) + p["D"] * xs[t])
        y = P.T @ torch.stack(ys)  # back to the original order
        outs.append(y * z[b] * torch.sigmoid(z[b]))
    return torch.stack(outs) @ p["out_proj.weight"].T


def test_reorder_tokens_forward_and_gradients_match_a_float64_soft_sort_oracle():
    """Guards the soft reordering at a finite τ (the other checks use τ -> 0 or only see nonzero
    gradients): output and the gradient of x and every parameter, importance included, against
    the loop oracle."""
    torch.manual_seed(7)
    layer = randomize(ssm.Mamba(4, d_state=3, reorder_tokens=True, reorder_tau=0.7).double(), scale=0.5)
    names = {"in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight",
             "dt_proj.bias", "A_log", "D", "out_proj.weight", "importance.weight"}
    check_gradients_against_reference(
        layer, lambda params, x: soft_reordered_oracle(params, x, layer, 0.7), L=6, names=names
    )


def test_reorder_tokens_gradients_and_no_step():
    torch.manual_seed(5)
    layer = ssm.Mamba(4, d_state=3, reorder_tokens=True, bidirectional=True, positive_definite=True)
    u = torch.randn(2, 5, 4)
    y = layer(u)
    assert y.shape == u.shape and torch.isfinite(y).all()
    y.square().sum().backward()
    for name in ("importance.weight", "importance_b.weight", "x_proj.P", "x_proj_b.d"):
        grad = layer.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    causal = ssm.Mamba(4, d_state=3, reorder_tokens=True)
    with pytest.raises(RuntimeError, match="reorder_tokens"):
        causal.init_state(2)
    with pytest.raises(RuntimeError, match="reorder_tokens"):
        causal.step(u[:, 0], (torch.zeros(2, 8, 4), torch.zeros(2, 8, 3)))


@pytest.mark.parametrize("bidirectional", [False, True])
def test_reorder_tokens_sorts_a_padded_sequence_as_it_sorts_it_alone(bidirectional):
    """With a padding mask only the valid tokens are soft-sorted, so every valid output
    equals the output of the unpadded sequence (the padding was mixed into them before)."""
    torch.manual_seed(6)
    layer = randomize(ssm.Mamba(4, d_state=3, reorder_tokens=True, bidirectional=bidirectional).double(), scale=0.5)
    u = torch.randn(3, 9, 4, dtype=F64)
    lengths = torch.tensor([9, 4, 1])
    mask = (torch.arange(9)[None, :] < lengths[:, None]).unsqueeze(-1)
    with torch.no_grad():
        batched = layer(u, mask=mask)
        for b in range(3):
            n = int(lengths[b])
            torch.testing.assert_close(batched[b : b + 1, :n], layer(u[b : b + 1, :n]), rtol=1e-12, atol=1e-12)


def test_reorder_tau_must_be_positive():
    with pytest.raises(ValueError, match="reorder_tau"):
        ssm.Mamba(4, reorder_tokens=True, reorder_tau=0.0)


# ---------------------------------------------------------------- the scenario criterion


def one_dimensional_layer(s_B: float, s_C: float):
    layer = ssm.Mamba(1, d_state=1, expand=1, dt_rank=1).double()
    with torch.no_grad():
        layer.x_proj.weight.copy_(torch.tensor([[0.3], [s_B], [s_C]], dtype=F64))
    return layer


@pytest.mark.parametrize("s_B, s_C, scenario", [(2.0, -1.0, "convergent"), (2.0, 1.0, "divergent"),
                                                (-0.5, -3.0, "divergent"), (0.0, 1.0, "degenerate")])
def test_one_dimensional_criterion_is_the_sign_of_mu(s_B, s_C, scenario):
    report = predict_scenario(one_dimensional_layer(s_B, s_C))
    assert report.mu == pytest.approx(s_B * s_C)
    assert report.scenario == scenario


def test_wide_layers_by_eigenvalue_signs():
    layer = randomize(ssm.Mamba(3, d_state=2).double(), scale=1.0)
    r, N = layer.dt_rank, layer.d_state
    with torch.no_grad():
        S_C = layer.x_proj.weight[r + N :]
        layer.x_proj.weight[r : r + N] = -2.0 * S_C  # M = -2 S_Cᵀ S_C: negative semidefinite, rank 2
    report = predict_scenario(layer)
    assert (report.scenario, report.n_negative, report.n_positive, report.n_zero) == ("convergent", 2, 0, 4)
    assert report.mu is None
    with torch.no_grad():
        layer.x_proj.weight[r] *= -1.0  # one B row flipped: one positive direction appears
    assert predict_scenario(layer).scenario == "divergent"


def test_scenario_table_walks_a_model():
    model = ssm.SequenceClassifier(8, 2, lambda d: ssm.Mamba(d, d_state=4, bidirectional=True), d_output=3,
                                   d_input=1, output="none")
    reports = scenario_table(model)
    assert len(reports) == 4 and all(r.scenario in ("convergent", "divergent", "degenerate") for r in reports)
    assert "backward scan" in summary(model)
    with pytest.raises(TypeError, match="Mamba"):
        predict_scenario(ssm.S4D(4))
    assert summary(torch.nn.Linear(2, 2)) == "no Mamba layers found"


def test_config_turns_the_options_on():
    cfg = compose_config("model=mamba", "model.layer.positive_definite=true", "model.layer.reorder_tokens=true")
    assert cfg.model.layer.positive_definite and cfg.model.layer.reorder_tokens


def test_predict_scenario_rejects_what_it_cannot_answer():
    from ssm.token_dynamics import predict_scenario

    layer = ssm.Mamba(8, d_state=4)
    for rtol in (-1.0, 1.0, 2.0):
        with pytest.raises(ValueError, match="rtol must be in"):
            predict_scenario(layer, rtol=rtol)
    with pytest.raises(ValueError, match="needs a bidirectional layer"):
        predict_scenario(layer, backward=True)
    with torch.no_grad():
        layer.x_proj.weight[layer.dt_rank, 0] = float("nan")  # a row of S_B
    with pytest.raises(ValueError, match="NaN or inf"):
        predict_scenario(layer)


# ---------------------------------------------------------------- the criterion, entry by entry


def test_input_output_matrix_is_S_C_transpose_S_B_entry_by_entry_for_each_scan():
    """Guards token_dynamics.input_output_matrix: M[i, j] = Σ_n S_C[n, i] S_B[n, j] from x_proj (x_proj_b backward)."""
    from ssm.token_dynamics import input_output_matrix

    torch.manual_seed(3)
    layer = ssm.Mamba(2, d_state=3, dt_rank=2, bidirectional=True).double()
    for proj, backward in ((layer.x_proj, False), (layer.x_proj_b, True)):
        W = proj.weight.tolist()  # rows: dt_rank of Δ, then N of B, then N of C
        E = layer.d_inner
        expected = torch.tensor([[sum(W[2 + 3 + n][i] * W[2 + n][j] for n in range(3)) for j in range(E)]
                                 for i in range(E)], dtype=torch.float64)
        torch.testing.assert_close(input_output_matrix(layer, backward=backward), expected, rtol=1e-12, atol=1e-14)


def test_scenario_report_holds_sorted_eigenvalues_symmetric_part_and_counts_at_rtol():
    """Guards predict_scenario: ascending Re eig(M), eigvalsh((M + Mᵀ)/2), and sign counts at rtol·max|eig|."""
    import numpy as np

    from ssm.token_dynamics import predict_scenario

    torch.manual_seed(4)
    layer = ssm.Mamba(3, d_state=2, dt_rank=1).double()
    with torch.no_grad():
        layer.x_proj.weight.normal_()
    W = layer.x_proj.weight.detach().numpy()
    M = W[3:5].T @ W[1:3]
    assert np.abs(M - M.T).max() > 0.1  # a non-symmetric M: its symmetric part has other eigenvalues
    eig = np.sort(np.linalg.eigvals(M).real)
    sym = np.linalg.eigvalsh((M + M.T) / 2)
    for rtol in (1e-8, 0.6):
        report = predict_scenario(layer, rtol=rtol)
        np.testing.assert_allclose(report.eigenvalues.numpy(), eig, atol=1e-10)
        np.testing.assert_allclose(report.symmetric_eigenvalues.numpy(), sym, atol=1e-10)
        tol = rtol * np.abs(eig).max()
        counts = (int((eig > tol).sum()), int((eig < -tol).sum()), int((np.abs(eig) <= tol).sum()))
        assert (report.n_positive, report.n_negative, report.n_zero) == counts
    assert predict_scenario(layer, rtol=0.6).n_zero > predict_scenario(layer).n_zero  # rtol matters here


def test_scenario_table_reports_the_backward_scan_from_its_own_projection_at_the_given_rtol():
    """Guards scenario_table: the second report of a bidirectional layer is of x_proj_b, and rtol is passed on."""
    from ssm.token_dynamics import scenario_table

    torch.manual_seed(5)
    model = ssm.SequenceClassifier(3, 1, lambda d: ssm.Mamba(d, d_state=2, dt_rank=1, bidirectional=True),
                                   d_output=2, d_input=1, output="none").double()
    layer = model.backbone.blocks[0].layer
    E = layer.d_inner
    # rows [S_Δ; S_B; S_C] with S_C = [e_0; e_1], so M = S_Cᵀ S_B = diag(s_0, s_1, 0, ...)
    for proj, (s0, s1) in ((layer.x_proj, (30.0, 2.0)), (layer.x_proj_b, (-2.0, 1.5))):
        W = torch.zeros(5, E, dtype=torch.float64)
        W[0] = 0.1
        W[1, 0], W[2, 1] = s0, s1
        W[3, 0], W[4, 1] = 1.0, 1.0
        with torch.no_grad():
            proj.weight.copy_(W)
    forward, backward = scenario_table(model, rtol=0.5)
    zeros = torch.zeros(E - 2, dtype=torch.float64)
    for report, nonzero in ((forward, [2.0, 30.0]), (backward, [-2.0, 1.5])):
        expected = torch.cat([zeros, torch.tensor(nonzero, dtype=torch.float64)]).sort().values
        torch.testing.assert_close(report.eigenvalues, expected)
    # the tolerance is relative: at rtol 0.5, 2 < 0.5 * 30 counts as zero; 1.5 > 0.5 * 2 does not
    assert (forward.n_positive, forward.n_negative, forward.n_zero) == (1, 0, E - 1)
    assert (backward.n_positive, backward.n_negative, backward.n_zero) == (1, 1, E - 2)
    assert (backward.scenario, forward.scenario) == ("divergent", "divergent")
    assert backward.name.endswith("(backward scan)") and not forward.name.endswith("(backward scan)")



def test_the_criterion_runs_in_float64_for_a_float32_layer():
    """Guards the widening in input_output_matrix: M and the reported eigenvalues are float64
    for a float32 layer too, M being the float64 product of the float32 weights."""
    from ssm.token_dynamics import input_output_matrix

    torch.manual_seed(6)
    layer = ssm.Mamba(3, d_state=2, dt_rank=1, bidirectional=True)
    assert layer.x_proj.weight.dtype == torch.float32
    for backward, proj in ((False, layer.x_proj), (True, layer.x_proj_b)):
        W = proj.weight.detach().double()
        M = input_output_matrix(layer, backward=backward)
        assert M.dtype == F64 and not M.requires_grad
        torch.testing.assert_close(M, W[3:5].T @ W[1:3], rtol=1e-15, atol=1e-15)
        report = predict_scenario(layer, backward=backward)
        assert report.eigenvalues.dtype == report.symmetric_eigenvalues.dtype == F64
