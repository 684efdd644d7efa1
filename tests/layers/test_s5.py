"""ssm.S5 / ssm.S5PTD against a float64 sequential MIMO recurrence and the dense systems
their initializations diagonalize."""

import math

import pytest
import torch
from reference import run_steps
from tolerances import assert_close, assert_close_summed

import ssm
from ssm.hippo import normal_part, ptd_legs, transition

C128, F64 = torch.complex128, torch.float64
H = 5


def discrete64(layer):
    """(Λ̄ (m,), B̄ (m, H), C (channels, H, m)) in complex128 from layer.continuous()."""
    dt, Lam, B, C = (t.detach().to(C128) for t in layer.continuous())
    if layer.disc == "zoh":
        Lam_bar = torch.exp(dt * Lam)
        B_bar = ((Lam_bar - 1) / Lam)[:, None] * B
    else:
        Lam_bar = (1 + dt * Lam / 2) / (1 - dt * Lam / 2)
        B_bar = (dt / (1 - dt * Lam / 2))[:, None] * B
    return Lam_bar, B_bar, C


def mimo_recurrence(Lam_bar, B_bar, C, u, scale, reverse=False):
    """h_t = Λ̄ h_{t∓1} + B̄ u_t (h = 0 before the first step), y_t = scale · Re(C h_t)."""
    u = u.to(F64)
    Bsz, L, _ = u.shape
    h = torch.zeros(Bsz, Lam_bar.shape[0], dtype=C128)
    ys = [None] * L
    for t in (range(L - 1, -1, -1) if reverse else range(L)):
        h = Lam_bar * h + u[:, t].to(C128) @ B_bar.T
        ys[t] = scale * (h @ C.T).real
    return torch.stack(ys, dim=1) if L else torch.zeros(Bsz, 0, C.shape[0], dtype=F64)


def expected_output(layer, x):
    Lam_bar, B_bar, C = discrete64(layer)
    s = 2.0 if layer.conj_sym else 1.0
    y = mimo_recurrence(Lam_bar, B_bar, C[0], x, s) + layer.D.detach().to(F64) * x.to(F64)
    if layer.bidirectional:
        y = y + mimo_recurrence(Lam_bar, B_bar, C[1], x, s, reverse=True)
    return y


CONFIGS = [
    dict(d_state=8),
    dict(d_state=8, disc="bilinear"),
    dict(d_state=12, blocks=3),
    dict(d_state=8, conj_sym=False),
    dict(d_state=8, clip_eigs=True, C_init="complex_normal"),
    dict(d_state=6, blocks=2, init="ptd", conj_sym=False),
    dict(d_state=5, init="ptd", conj_sym=False, disc="bilinear"),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("L", [1, 19, 64])
def test_forward_matches_sequential_recurrence_float64(cfg, bidirectional, L):
    torch.manual_seed(0)
    layer = ssm.S5(H, bidirectional=bidirectional, **cfg).double()
    x = torch.randn(2, L, H, dtype=F64)
    y = layer(x)
    assert y.shape == x.shape and y.dtype == F64
    assert_close(y, expected_output(layer, x))


@pytest.mark.parametrize("cfg", CONFIGS[:2] + CONFIGS[5:6], ids=["zoh", "bilinear", "ptd"])
def test_forward_float32_agrees_with_float64(cfg):
    torch.manual_seed(1)
    layer = ssm.S5(H, **cfg)
    x = torch.randn(3, 100, H)
    y = layer(x)
    assert y.dtype == torch.float32
    assert_close(y, expected_output(layer, x), dtype=torch.float32)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_step_matches_forward(cfg):
    torch.manual_seed(2)
    layer = ssm.S5(H, **cfg).double().eval()
    x = torch.randn(2, 23, H, dtype=F64)
    state = layer.init_state(2)
    assert state.shape == (2, layer.n_modes) and state.is_complex() and not state.abs().any()
    with torch.no_grad():
        assert_close(run_steps(layer, x), layer(x))


def test_conj_sym_equals_the_full_conjugate_system():
    torch.manual_seed(3)
    layer = ssm.S5(H, d_state=8).double()
    full = ssm.S5(H, d_state=8, conj_sym=False).double()
    with torch.no_grad():
        for name, half in (("Lambda_real", layer.Lambda_real), ("log_dt", layer.log_dt)):
            getattr(full, name).copy_(torch.cat([half, half]))
        full.Lambda_imag.copy_(torch.cat([layer.Lambda_imag, -layer.Lambda_imag]))
        B = torch.view_as_complex(layer.B)
        C = torch.view_as_complex(layer.C)
        full.B.copy_(torch.view_as_real(torch.cat([B, B.conj()])))
        full.C.copy_(torch.view_as_real(torch.cat([C, C.conj()], dim=-1)))
        full.D.copy_(layer.D)
    x = torch.randn(2, 31, H, dtype=F64)
    assert_close(layer(x), full(x))


def _continuous_kernel(layer, t):
    """sum_n C_n B_n exp(λ_n t) for every (output, input) pair: complex (T, H, H)."""
    _, Lam, B, C = (p.detach().to(C128) for p in layer.continuous())
    return torch.einsum("hn,nt,nk->thk", C[0], torch.exp(Lam[:, None] * t.to(C128)), B)


@pytest.mark.parametrize("blocks", [1, 2])
def test_hippo_n_init_diagonalizes_the_normal_part_of_legs(blocks):
    """With conj_sym, 2 Re(sum C B e^{λt}) = C₀ exp(t S) B₀ for S = blockdiag(HiPPO-N)."""
    torch.manual_seed(4)
    P = 8
    layer = ssm.S5(H, d_state=P, blocks=blocks).double()
    S = torch.block_diag(*[normal_part("legs", P // blocks)] * blocks)
    V = torch.block_diag(*[ssm.hippo.nplr("legs", P // blocks, B_clip=None)[3]] * blocks)
    _, _, B, C = (p.detach().to(C128) for p in layer.continuous())
    B0 = 2 * (V @ B).real  # (P, H): the real input matrix the layer was built from
    C0 = 2 * (C[0] @ V.mH).real  # (H, P)
    t = torch.tensor([0.0, 0.1, 0.5, 2.0], dtype=F64)
    dense = torch.stack([C0 @ torch.linalg.matrix_exp(s * S) @ B0 for s in t])
    # parameters are stored in float32, so the identity holds to float32 precision
    assert_close(2 * _continuous_kernel(layer, t).real, dense, dtype=torch.float32)


@pytest.mark.parametrize("C_init, C_fan_in", [("lecun_normal", "PH"), ("trunc_standard_normal", "P")])
@pytest.mark.parametrize("conj_sym", [True, False])
def test_b_and_c_are_drawn_at_s5s_scale(C_init, C_fan_in, conj_sym):
    """S5's draws (JAX lecun_normal, fan-in = the second-to-last axis times the leading ones):
    B₀ (P, H) real of variance 1/P; C₀ complex, Re and Im of variance 1/(P·H) (one (H, P, 2)
    draw) or 1/P (a (1, P, 2) draw per row). The eigenbasis has unit vectors, so
    E|B̃|² = 1/P and E|C̃|² = 2/fan_in."""
    torch.manual_seed(11)
    Hb, P = 64, 16
    layer = ssm.S5(Hb, d_state=P, C_init=C_init, conj_sym=conj_sym).double()
    _, _, B, C = (p.detach().to(C128) for p in layer.continuous())
    fan_in = P * Hb if C_fan_in == "PH" else P
    assert B.abs().square().mean().item() == pytest.approx(1 / P, rel=0.15)
    assert C.abs().square().mean().item() == pytest.approx(2 / fan_in, rel=0.15)
    assert C.imag.abs().mean() > 0.3 * C.real.abs().mean()  # C₀ is complex, not only its basis


def test_ptd_init_diagonalizes_perturbed_legs_with_real_B():
    torch.manual_seed(5)
    P = 8
    layer = ssm.S5PTD(H, d_state=P).double()
    Lam, V, Vinv = ptd_legs(P)
    _, Lam_layer, B, C = (p.detach().to(C128) for p in layer.continuous())
    assert_close(Lam_layer, Lam, dtype=torch.float32)
    B0, C0 = V @ B, C[0] @ Vinv  # C₀ is complex, as S5 draws it
    assert B0.imag.abs().max() < 1e-5 * B0.abs().max()
    assert C0.imag.abs().max() > 0.1 * C0.abs().max()
    A_pert = V @ torch.diag(Lam) @ Vinv
    A_legs, _ = transition("legs", P)
    rel = torch.linalg.matrix_norm(A_pert - A_legs, ord=2) / torch.linalg.matrix_norm(A_legs, ord=2)
    assert rel < 0.2
    t = torch.tensor([0.0, 0.05, 0.3], dtype=F64)
    dense = torch.stack([C0 @ torch.linalg.matrix_exp(s * A_pert) @ B0 for s in t])
    assert_close(_continuous_kernel(layer, t), dense, dtype=torch.float32)


def test_dt_is_log_uniform_per_mode_and_step_rescale_scales_it():
    torch.manual_seed(6)
    layer = ssm.S5(H, d_state=4000, blocks=1000, dt_min=1e-3, dt_max=1e-1)
    dt = layer.continuous()[0].detach()
    assert dt.shape == (2000,)
    pos = (dt.log() - math.log(1e-3)) / (math.log(1e-1) - math.log(1e-3))
    assert pos.min() >= -1e-6 and pos.max() <= 1 + 1e-6
    assert abs((pos < 0.5).double().mean().item() - 0.5) < 0.05
    layer.step_rescale = 2.0
    assert_close(layer.continuous()[0], 2 * dt)


def test_clip_eigs_clamps_the_real_part():
    torch.manual_seed(7)
    layer = ssm.S5(H, d_state=4, clip_eigs=True)
    with torch.no_grad():
        layer.Lambda_real.fill_(0.3)
    assert (layer.continuous()[1].real <= -1e-4).all()
    assert (ssm.S5(H, d_state=4).continuous()[1].real < 0).all()


def test_gradients_reach_every_parameter():
    torch.manual_seed(8)
    layer = ssm.S5(H, d_state=8, bidirectional=True)
    layer(torch.randn(2, 16, H)).square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_lr_hints_and_frozen_parameters():
    layer = ssm.S5(H, d_state=4, lr={"A": 1e-3, "dt": 0.0, "B": None})
    params = dict(layer.named_parameters())
    assert params["Lambda_real"]._optim == {"lr": 1e-3, "weight_decay": 0.0}
    assert params["B"]._optim == {"weight_decay": 0.0}
    assert "log_dt" not in params and "log_dt" in dict(layer.named_buffers())
    assert not hasattr(params["C"], "_optim")
    # "A" is Λ, both its real and imaginary parts; "dt" is Δ alone
    assert params["Lambda_imag"]._optim == {"lr": 1e-3, "weight_decay": 0.0}
    frozen_A = ssm.S5(H, d_state=4, lr={"A": 0.0, "dt": 2e-3})
    assert {"Lambda_real", "Lambda_imag"} <= set(dict(frozen_A.named_buffers()))
    assert frozen_A.log_dt._optim == {"lr": 2e-3, "weight_decay": 0.0}


def test_defaults_are_the_documented_ones():
    """S5(d_model, d_state) is S5(d_model, d_state, blocks=1, init="hippo_n", conj_sym=True,
    disc="zoh", bidirectional=False, clip_eigs=False, dt_min=1e-3, dt_max=1e-1)."""
    explicit = dict(blocks=1, init="hippo_n", conj_sym=True, disc="zoh", bidirectional=False, clip_eigs=False,
                    dt_min=1e-3, dt_max=1e-1)
    torch.manual_seed(30)
    default = ssm.S5(H, 8).double()
    torch.manual_seed(30)
    documented = ssm.S5(H, 8, **explicit).double()
    assert default.state_dict().keys() == documented.state_dict().keys()
    for name, value in documented.state_dict().items():
        torch.testing.assert_close(default.state_dict()[name], value, rtol=0, atol=0, msg=name)
    with torch.no_grad():
        default.Lambda_real.fill_(0.2)  # clip_eigs would clamp it
        documented.Lambda_real.fill_(0.2)
    x = torch.randn(2, 9, H, dtype=F64)
    torch.testing.assert_close(default(x), documented(x), rtol=0, atol=0)


def test_s5ptd_is_s5_with_ptd_and_no_conjugate_symmetry():
    layer = ssm.S5PTD(H, d_state=6, blocks=2)
    assert layer.init == "ptd" and not layer.conj_sym and layer.n_modes == 6
    with pytest.raises(TypeError, match="fixed"):
        ssm.S5PTD(H, d_state=6, conj_sym=True)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(d_state=8, init="ptd"), "conj_sym=False"),
        (dict(d_state=6, blocks=2), "even block size"),
        (dict(d_state=8, blocks=3), "not divisible"),
        (dict(d_state=8, init="legs"), "init must be one of"),
        (dict(d_state=8, disc="euler"), "disc must be one of"),
        (dict(d_state=8, C_init="zeros"), "C_init must be one of"),
        (dict(d_state=0), "positive integer"),
        (dict(d_state=8, dt_min=0.1, dt_max=0.01), "dt_min"),
        (dict(d_state=8, step_rescale=0.0), "step_rescale"),  # Δ = 0: B̄ = 0, the SSM would output nothing
        (dict(d_state=8, step_rescale=-1.0), "step_rescale"),
    ],
)
def test_invalid_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ssm.S5(H, **kwargs)


def test_bad_inputs_and_bidirectional_step_raise():
    layer = ssm.S5(H, d_state=4)
    with pytest.raises(ValueError, match=r"\(batch, length, 5\)"):
        layer(torch.randn(2, 7, H + 1))
    with pytest.raises(ValueError, match=r"\(batch, 5\)"):
        layer.step(torch.randn(2, 3, H), layer.init_state(2))
    with pytest.raises(RuntimeError, match="bidirectional"):
        ssm.S5(H, d_state=4, bidirectional=True).init_state(1)


def test_opt_config_places_b_c_d_and_dt_in_their_groups():
    def hints(**kw):
        layer = ssm.S5(H, d_state=4, lr=1e-3, **kw)
        return {n: getattr(p, "_optim", None) for n, p in layer.named_parameters()}

    ssm_group = {"lr": 1e-3, "weight_decay": 0.0}
    standard = hints()
    assert standard["B"] == ssm_group and standard["log_dt"] == ssm_group
    assert standard["C"] is None and standard["D"] is None
    assert hints(opt_config="BandCdecay")["B"] == {"lr": 1e-3}
    assert hints(opt_config="BfastandCdecay")["B"] is None
    no_decay = hints(opt_config="noBCdecay")
    assert no_decay["B"] == no_decay["C"] == no_decay["D"] == ssm_group
    assert hints(dt_global=True)["log_dt"] is None
    with pytest.raises(ValueError, match="opt_config"):
        ssm.S5(H, d_state=4, opt_config="fast")
    # BandCdecay: B at the SSM lr with the global weight decay (the group used to lack a
    # weight_decay, so AdamW applied its own default 0.01)
    layer = ssm.S5(H, d_state=4, lr=1e-3, opt_config="BandCdecay")
    optimizer = torch.optim.AdamW(ssm.optim.param_groups(layer, weight_decay=0.06), lr=1e-2)
    (group,) = [g for g in optimizer.param_groups if any(p is layer.B for p in g["params"])]
    assert group["lr"] == 1e-3 and group["weight_decay"] == 0.06


@pytest.mark.parametrize("cls", [ssm.S5, ssm.S5PTD])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_computes_the_scan_in_the_parameter_dtype(cls, dtype):
    """Autocast used to turn u @ B̄ into half precision, which cannot form the complex B̄u
    (bf16: an error; fp16: complex32, rejected by the scan)."""
    torch.manual_seed(0)
    layer = cls(4, 8)
    x = torch.randn(2, 16, 4)
    expected = layer(x)
    state = layer.init_state(2)
    with torch.autocast("cpu", dtype=dtype):
        y = layer(x)
        y_t, _ = layer.step(x[:, 0], state)
        half = layer(x.to(dtype))  # e.g. after an autocast Linear
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    torch.testing.assert_close(y_t, expected[:, 0], rtol=1e-5, atol=1e-5)
    assert half.dtype == dtype and torch.isfinite(half).all()
    y.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------
# Gradients against an independent float64 oracle built from the raw stored parameters.


def raw_parameter_oracle(layer, params, x):
    """y of the layer from its raw tensors as stored (``params``: Lambda_real, Lambda_imag,
    log_dt, B, C, D, float64 leaves), by the dense discretizations of math.md §1.1 / §6 and a
    plain sequential recurrence in complex128 (nothing from the layer or ``kernels``):

        Λ = diag(min(Λ_re, -1e-4) [clip_eigs] + i Λ_im),  Δ = diag(exp(log_dt) · step_rescale)
        ZOH:      Ā = exp(ΔΛ) (Λ diagonal),   B̄ = (ΔΛ)⁻¹ (Ā - I) Δ B
        bilinear: Ā = (I - ΔΛ/2)⁻¹(I + ΔΛ/2),  B̄ = (I - ΔΛ/2)⁻¹ Δ B
        h_t = Ā h_{t-1} + B̄ u_t,  y_t = s Re(C[0] h_t) + D u_t  (+ s Re(C[1] h'_t), the scan
        run backwards from the end, when bidirectional), s = 2 with conj_sym else 1.
    """
    re, im = params["Lambda_real"], params["Lambda_imag"]
    if layer.clip_eigs:
        re = torch.where(re < -1e-4, re, torch.full_like(re, -1e-4))
    m = re.shape[0]
    Lam = torch.diag(torch.complex(re, im))
    Dt = torch.diag(torch.exp(params["log_dt"]) * layer.step_rescale).to(C128)
    B = torch.complex(params["B"][..., 0], params["B"][..., 1])  # (m, H)
    C = torch.complex(params["C"][..., 0], params["C"][..., 1])  # (channels, H, m)
    eye = torch.eye(m, dtype=C128)
    if layer.disc == "zoh":
        # exp of the diagonal entries (torch.linalg.matrix_exp loses ~1e-9 on complex input)
        A_bar = torch.diag(torch.exp((Dt @ Lam).diagonal()))
        B_bar = torch.linalg.solve(Dt @ Lam, (A_bar - eye) @ Dt @ B)
    else:
        A_bar = torch.linalg.solve(eye - Dt @ Lam / 2, eye + Dt @ Lam / 2)
        B_bar = torch.linalg.solve(eye - Dt @ Lam / 2, Dt @ B)
    s = 2.0 if layer.conj_sym else 1.0
    u = x.to(C128)
    Bsz, L, _ = x.shape

    def scan(Cc, times):
        h = torch.zeros(m, Bsz, dtype=C128)
        ys = [None] * L
        for t in times:
            h = A_bar @ h + B_bar @ u[:, t].T
            ys[t] = s * (Cc @ h).real.T
        return torch.stack(ys, 1)

    y = scan(C[0], range(L)) + params["D"] * x
    if layer.bidirectional:
        y = y + scan(C[1], range(L - 1, -1, -1))
    return y


GRAD_CONFIGS = [
    (ssm.S5, dict(d_state=10)),
    (ssm.S5, dict(d_state=12, blocks=3, disc="bilinear")),
    (ssm.S5, dict(d_state=6, conj_sym=False)),
    (ssm.S5, dict(d_state=8, blocks=2, conj_sym=False, disc="bilinear", clip_eigs=True)),
    (ssm.S5, dict(d_state=10, clip_eigs=True, C_init="complex_normal", step_rescale=1.7)),
    (ssm.S5, dict(d_state=6, blocks=3, C_init="trunc_standard_normal")),
    (ssm.S5PTD, dict(d_state=5)),
    (ssm.S5PTD, dict(d_state=6, blocks=3, disc="bilinear")),
    (ssm.S5PTD, dict(d_state=9, blocks=3, clip_eigs=True)),
]


@pytest.mark.parametrize(
    "cls, cfg", GRAD_CONFIGS,
    ids=[f"{c.__name__}-" + "-".join(f"{k}={v}" for k, v in cfg.items()) for c, cfg in GRAD_CONFIGS],
)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_gradients_match_the_raw_parameter_oracle_float64(cls, cfg, bidirectional):
    """d(random scalar loss) w.r.t. x and every parameter equals autograd through the dense
    float64 oracle (a zoh B̄ whose gradient misses ∂/∂Λ of the 1/Λ, say, is caught by
    Lambda_real / Lambda_imag)."""
    torch.manual_seed(9)
    Hx, L = 3, 13
    layer = cls(Hx, bidirectional=bidirectional, **cfg).double()
    with torch.no_grad():  # break the init's symmetries (equal Re Λ, ...); keep Re Λ < 0
        layer.Lambda_real.copy_(-(layer.Lambda_real.abs() * (1 + 0.3 * torch.rand_like(layer.Lambda_real))))
        layer.Lambda_real.sub_(0.05 * torch.rand_like(layer.Lambda_real))
        layer.B.add_(0.1 * torch.randn_like(layer.B))
    # with clip_eigs some modes are clamped (no gradient to their Re Λ), others not; a real
    # clamped mode would have |ΔΛ| ~ 1e-6, where the oracle's exp(ΔΛ) - 1 cancels
    clamped = (torch.arange(layer.n_modes) % 2 == 0) & (layer.Lambda_imag.detach().abs() > 0.1)
    if layer.clip_eigs:
        assert clamped.any() and (~clamped).any()
        with torch.no_grad():
            layer.Lambda_real[clamped] = 0.2
    params = dict(layer.named_parameters())
    assert set(params) == {"Lambda_real", "Lambda_imag", "log_dt", "B", "C", "D"}
    leaves = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
    x = torch.randn(2, L, Hx, dtype=F64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    w = torch.randn(2, L, Hx, dtype=F64)

    y = layer(x)
    y_ref = raw_parameter_oracle(layer, leaves, x_ref)
    assert_close(y, y_ref)
    (y * w).sum().backward()
    (y_ref * w).sum().backward()
    assert_close_summed(x.grad, x_ref.grad, msg=lambda m: f"d/dx: {m}")
    for name, p in params.items():
        assert_close_summed(p.grad, leaves[name].grad, msg=lambda m, name=name: f"d/d{name}: {m}")
    if layer.clip_eigs:
        grad = params["Lambda_real"].grad
        assert not grad[clamped].any() and grad[~clamped].abs().min() > 0


def test_trunc_standard_normal_C_init_matches_the_raw_parameter_oracle():
    """C_init="trunc_standard_normal": C = C₀ V with C₀ complex, Re and Im lecun-normal draws
    (truncated at ±2σ, variance 1/P) per row; the forward agrees with the oracle."""
    torch.manual_seed(10)
    P = 8
    layer = ssm.S5(H, d_state=P, C_init="trunc_standard_normal", bidirectional=True, conj_sym=False).double()
    params = {n: p.detach() for n, p in layer.named_parameters()}
    x = torch.randn(2, 17, H, dtype=F64)
    assert_close(layer(x), raw_parameter_oracle(layer, params, x))
    from ssm.layers.s5 import block_eigenbasis

    _, V, Vinv = block_eigenbasis("hippo_n", P, False)  # the basis itself is checked above
    C = torch.view_as_complex(params["C"].contiguous()).to(C128)
    C0 = C @ Vinv.to(C128)  # (2, H, P): the complex draw it was built from (float32 storage)
    std = math.sqrt(1 / P) / 0.87962566103423978
    assert C0.real.abs().max() <= 2 * std * (1 + 1e-4) and C0.imag.abs().max() <= 2 * std * (1 + 1e-4)
    assert 0.2 / P < C0.real.var().item() < 5.0 / P and 0.2 / P < C0.imag.var().item() < 5.0 / P
