"""Fourier-mode noise on SSM layer inputs: the formula, the hooks, the spike frequency, and the
task's noisy test metrics."""

import functools
import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ssm
from ssm.robustness import FourierModeNoise, channel_timescale, inject_noise, spike_frequency
from ssm.training.task import SequenceClassificationTask


def test_noise_is_one_fourier_mode_per_channel_with_uniform_amplitude():
    layer = ssm.S4D(3, d_state=4)
    x = torch.randn(2, 50, 3, dtype=torch.float64)
    noisy = FourierModeNoise(7.5, amplitude=0.2, generator=torch.Generator().manual_seed(1))(layer, x)
    U = torch.rand(2, 1, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    dt = torch.exp(layer.log_dt.detach()).double()
    t = torch.linspace(0, 1, 50, dtype=torch.float64)[:, None] * (dt * 49)  # linspace(0, Δ(L-1), L)
    torch.testing.assert_close(noisy - x, 0.2 * U * torch.cos(7.5 * t))


def test_inject_noise_hooks_every_ssm_layer_and_only_inside_the_block():
    torch.manual_seed(0)
    model = ssm.SequenceClassifier(
        d_model=4, n_layers=3, layer=functools.partial(ssm.S4D, d_state=4), d_output=2, d_input=1
    ).eval()
    x = torch.randn(2, 16, 1)
    clean = model(x)
    seen = []
    noise = FourierModeNoise(3.0, amplitude=1.0)

    def recording(layer, inp):
        seen.append(layer)
        return noise(layer, inp)

    with inject_noise(model, recording) as layers:
        noisy = model(x)
    assert len(layers) == 3 and seen == layers
    assert not torch.allclose(clean, noisy)
    torch.testing.assert_close(model(x), clean)
    with pytest.raises(ValueError, match="no SSM layer"):
        with inject_noise(torch.nn.Linear(2, 2), noise):
            pass


def test_channel_timescale_of_s4d_and_s5():
    s4d = ssm.S4D(5, d_state=4)
    torch.testing.assert_close(channel_timescale(s4d), torch.exp(s4d.log_dt))
    s5 = ssm.S5(5, d_state=4)
    dt = s5.continuous()[0]
    torch.testing.assert_close(channel_timescale(s5), torch.exp(dt.log().mean()).expand(5))


def test_spike_frequency_finds_the_dominant_resonance():
    """One mode with a large output weight resonates at ω = Im λ."""
    torch.manual_seed(0)
    layer = ssm.S4D(2, d_state=16, init="lin")  # λ_n = -1/2 + iπn
    with torch.no_grad():
        layer.C.zero_()
        layer.C[..., 5, 0] = 1.0
    omega = spike_frequency(layer, min_frequency=1.0)
    assert abs(omega - 5 * math.pi) < 0.05


def test_task_reports_noisy_test_accuracy():
    torch.manual_seed(0)
    model = ssm.SequenceClassifier(
        d_model=4, n_layers=1, layer=functools.partial(ssm.S4D, d_state=4), d_output=2, d_input=1
    )
    x, y = torch.randn(8, 12, 1), torch.randint(2, (8,))
    loader = DataLoader(TensorDataset(x, y, torch.full((8,), 12)), batch_size=4)
    task = SequenceClassificationTask(
        model, 2, optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.1),
        test_noise={"frequency": "spike", "amplitude": 5.0},
    )
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (metrics,) = trainer.test(task, dataloaders=loader, verbose=False)
    assert {"test/acc", "test/acc_noisy", "test/loss", "test/loss_noisy"} <= set(metrics)
    assert metrics["test/loss"] != metrics["test/loss_noisy"]
    with pytest.raises(ValueError, match="frequency"):
        SequenceClassificationTask(model, 2, optimizer=None, test_noise={"frequency": "high"})
    assert SequenceClassificationTask(model, 2, optimizer=None, test_noise={"frequency": None}).test_noise is None



def test_test_noise_takes_every_frequency_from_zero_up():
    """frequency is a number >= 0: ω = 0 (a constant offset a·U on every input) is a frequency,
    a negative one is refused."""
    layer = ssm.S4D(4, d_state=4)
    task = SequenceClassificationTask(layer, 2, optimizer=None, test_noise={"frequency": 0})
    assert task.test_noise["frequency"] == 0
    with pytest.raises(ValueError, match="frequency must be a number >= 0"):
        SequenceClassificationTask(layer, 2, optimizer=None, test_noise={"frequency": -1.0})


class _Data(L.LightningDataModule):
    def __init__(self, n_test):
        super().__init__()
        gen = torch.Generator().manual_seed(3)
        self.train = TensorDataset(torch.randn(8, 12, 1, generator=gen), torch.randint(2, (8,), generator=gen),
                                   torch.full((8,), 12))
        self.test = TensorDataset(torch.randn(n_test, 12, 1, generator=gen),
                                  torch.randint(2, (n_test,), generator=gen), torch.full((n_test,), 12))

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=4)

    def val_dataloader(self):
        return DataLoader(self.train, batch_size=4)

    def test_dataloader(self):
        return DataLoader(self.test, batch_size=4)  # 7 examples: an uneven last batch


def noisy_classifier(dropout=0.0):
    return ssm.SequenceClassifier(d_model=4, n_layers=1, layer=functools.partial(ssm.S4D, d_state=4), d_output=2,
                                  d_input=1, dropout=dropout)


def test_every_epoch_evaluates_the_test_split_clean_and_noisy_after_each_validation():
    """experiments.md §8: every epoch the test set is evaluated with the noise (and clean);
    the logged values are exact over the split (uneven last batch)."""
    torch.manual_seed(0)
    model = noisy_classifier()
    noise = {"frequency": 3.0, "amplitude": 5.0, "every_epoch": True}
    task = SequenceClassificationTask(model, 2, optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.1),
                                      test_noise=noise)
    seen = []

    class Record(L.Callback):
        def on_train_epoch_end(self, trainer, module):  # after the epoch's validation
            seen.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test_epoch/")})

    calls, evaluate = [], task._test_epoch
    task._test_epoch = lambda: (calls.append(task.current_epoch), evaluate())
    data = _Data(7)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        max_epochs=2, callbacks=[Record()], enable_checkpointing=False)
    trainer.fit(task, datamodule=data)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert calls == [0, 1]  # once per epoch, not in the sanity check
    assert len(seen) == 2 and all(set(epoch) == {f"test_epoch/{m}{t}" for m in ("acc", "loss") for t in ("", "_noisy")}
                                  for epoch in seen)
    x, y, lengths = data.test.tensors
    model.eval()
    with torch.no_grad():
        clean = model(x, lengths)
        with inject_noise(model, FourierModeNoise(3.0, 5.0)):
            noisy = model(x, lengths)
    assert metrics["test_epoch/acc"] == pytest.approx((clean.argmax(-1) == y).float().mean().item())
    assert metrics["test_epoch/loss"] == pytest.approx(torch.nn.functional.cross_entropy(clean, y).item(), rel=1e-5)
    # the noise amplitude is random per (sample, channel): the noisy loss differs, by a similar amount
    noisy_loss = torch.nn.functional.cross_entropy(noisy, y).item()
    assert metrics["test_epoch/loss_noisy"] != pytest.approx(metrics["test_epoch/loss"])
    assert abs(metrics["test_epoch/loss_noisy"] - noisy_loss) < 0.5 * abs(noisy_loss - metrics["test_epoch/loss"]) + 1e-3
    with pytest.raises(ValueError, match="every_epoch"):
        SequenceClassificationTask(model, 2, optimizer=None, test_noise={"frequency": 1.0, "every_epoch": "yes"})


def test_the_per_epoch_test_pass_restores_mode_and_leaves_gradients_and_training_unchanged():
    """Called from training mode it returns in training mode with the gradients as they were,
    and a seeded run with dropout ends with the same weights with or without it (it restores
    the random state its loader and noise draw from)."""
    finals = []
    for every_epoch in (False, True):
        torch.manual_seed(0)
        task = SequenceClassificationTask(noisy_classifier(dropout=0.3), 2,
                                          optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.1),
                                          test_noise={"frequency": 3.0, "every_epoch": every_epoch})
        trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                            max_epochs=3, enable_checkpointing=False, num_sanity_val_steps=0)
        trainer.fit(task, datamodule=_Data(7))
        finals.append(torch.cat([p.detach().flatten() for p in task.parameters()]))
    torch.testing.assert_close(finals[0], finals[1], rtol=0, atol=0)
    task.train()
    for p in task.parameters():
        p.grad = torch.full_like(p, 0.5)
    task.log = lambda *args, **kwargs: None  # outside the trainer's loops: only the pass itself
    task._test_epoch()
    assert task.training and all(bool((p.grad == 0.5).all()) for p in task.parameters())


def test_the_per_epoch_test_pass_converts_batches_to_the_trainer_precision():
    """Under precision="64-true" the model is float64: the test batches go through the
    precision plugin as Lightning's own loops do (they stayed float32 and were refused)."""
    torch.manual_seed(0)
    task = SequenceClassificationTask(noisy_classifier(), 2, optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.1),
                                      test_noise={"frequency": 3.0, "every_epoch": True})
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        max_epochs=1, enable_checkpointing=False, precision="64-true")
    trainer.fit(task, datamodule=_Data(7))
    assert {"test_epoch/acc", "test_epoch/acc_noisy"} <= set(trainer.callback_metrics)


def test_layer_transfer_of_s5_is_the_dense_hippo_n_system_it_was_built_from():
    """S5 (conj_sym, 2 blocks) at init: G = C₀ (iω - blockdiag(S))⁻¹ B₀ with B₀ = 2 Re(V B),
    C₀ = 2 Re(C Vᴴ) the real matrices the layer diagonalized."""
    from ssm.hippo import nplr, normal_part
    from ssm.transfer import layer_transfer, transfer_function

    torch.manual_seed(0)
    layer = ssm.S5(3, d_state=8, blocks=2).double()
    _, _, B, C = (t.detach().to(torch.complex128) for t in layer.continuous())
    V = torch.block_diag(*[nplr("legs", 4, B_clip=None)[3]] * 2)
    B0, C0 = 2 * (V @ B).real, 2 * (C[0] @ V.mH).real
    S = torch.block_diag(*[normal_part("legs", 4)] * 2)
    omega = torch.logspace(-2, 2, 50, dtype=torch.float64)
    expected = transfer_function(S, B0, C0, omega)
    torch.testing.assert_close(layer_transfer(layer, omega), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", [lambda: ssm.S4D(2, d_state=6, init="legs"), lambda: ssm.S4PTD(2, d_state=5)])
def test_layer_transfer_of_diagonal_layers_is_the_fourier_transform_of_the_kernel(make):
    """G_h(iω) = ∫ K_h(t) e^{-iωt} dt with K_h(t) = the continuous kernel, by quadrature."""
    from ssm.transfer import layer_transfer

    torch.manual_seed(1)
    layer = make().double()
    _, A, B, C = (t.detach().to(torch.complex128) for t in layer.continuous())
    scale = 2.0  # 2 Re: S4D's conjugate pairs, and S4-PTD's all-mode sum as its paper's code takes it
    t = torch.linspace(0, 60, 600001, dtype=torch.float64)
    omega = torch.tensor([0.0, 0.7, 3.0], dtype=torch.float64)
    for h in range(2):
        K = scale * ((C[0, h] * B[h])[:, None] * torch.exp(A[h][:, None] * t)).sum(0).real
        for j, w in enumerate(omega):
            integral = torch.trapezoid(K * torch.exp(-1j * w * t), t)
            assert abs(layer_transfer(layer, omega)[h, j] - integral) < 1e-3 * (1 + abs(integral))


def test_layer_transfer_rejects_layers_without_a_continuous_modal_form():
    from ssm.transfer import layer_transfer

    with pytest.raises(TypeError, match="no continuous"):
        layer_transfer(ssm.DSS(2, d_state=4), torch.tensor([1.0]))
    with pytest.raises(TypeError, match="no continuous"):
        layer_transfer(torch.nn.Linear(2, 2), torch.tensor([1.0]))


def test_noise_values_must_be_finite():
    for kwargs in (dict(frequency=float("inf")), dict(frequency=1.0, amplitude=float("inf")),
                   dict(frequency=float("nan"))):
        with pytest.raises(ValueError, match="finite"):
            FourierModeNoise(**kwargs)


def test_noise_reaches_an_input_given_by_name():
    torch.manual_seed(0)
    layer = ssm.S4D(3, d_state=8)
    x = torch.randn(2, 5, 3)
    with inject_noise(layer, FourierModeNoise(10.0, generator=torch.Generator().manual_seed(1))):
        positional = layer(x)
    with inject_noise(layer, FourierModeNoise(10.0, generator=torch.Generator().manual_seed(1))):
        named = layer(x=x)
    torch.testing.assert_close(named, positional)
    assert not torch.allclose(named, layer(x))
    with inject_noise(layer, FourierModeNoise(10.0)), pytest.raises(ValueError, match="floating"):
        layer(torch.ones(2, 5, 3, dtype=torch.long))


def test_channel_timescale_of_mamba_is_the_geometric_mean_of_the_resting_delta():
    """Guards channel_timescale(Mamba): exp(mean_e log softplus(b_dt[e])) for every input channel."""
    torch.manual_seed(2)
    layer = ssm.Mamba(3, d_state=4).double()
    with torch.no_grad():
        layer.dt_proj.bias.copy_(torch.linspace(-4.0, 2.0, layer.d_inner, dtype=torch.float64))
    logs = [math.log(math.log1p(math.exp(b))) for b in layer.dt_proj.bias.tolist()]
    expected = math.exp(sum(logs) / len(logs))
    torch.testing.assert_close(channel_timescale(layer), torch.full((3,), expected, dtype=torch.float64))


def test_spike_frequency_defaults_search_above_N_up_to_4N2_and_average_the_channels():
    """Guards spike_frequency's defaults: grid up to 4·N², only ω >= N, gain averaged over channels (not one)."""
    layer = ssm.S4D(2, d_state=16, init="lin").double()  # N = 16: default band [16, 1024]
    with torch.no_grad():
        layer.C.zero_()
        layer.log_A_real.fill_(math.log(0.5))  # Re λ = -1/2: a single mode peaks at 2 |C B| at ω = Im λ
        layer.A_imag[:, :3] = torch.tensor([5.0, 600.0, 300.0], dtype=torch.float64)
        layer.C[0, 0, 0, 0] = 10.0  # channel 0: a tall spike at 5 < N (outside the default band)
        layer.C[0, 0, 1, 0] = 1.0  # channel 0: height 2 at 600
        layer.C[0, 1, 2, 0] = 3.0  # channel 1: height 6 at 300 > N² = 256 (channel mean 3 beats 1)
    assert abs(spike_frequency(layer) - 300.0) < 0.2
    assert abs(spike_frequency(layer, min_frequency=1.0) - 5.0) < 0.05


def test_fourier_noise_is_additive_and_carries_no_gradient_into_the_layer():
    """Guards FourierModeNoise's backward: d noisy / d x = 1, and the Δ it reads (log_dt) gets no gradient."""
    torch.manual_seed(6)
    layer = ssm.S4D(3, d_state=4).double()
    x = torch.randn(2, 9, 3, dtype=torch.float64, requires_grad=True)
    noisy = FourierModeNoise(40.0, amplitude=0.5, generator=torch.Generator().manual_seed(2))(layer, x)
    grads = torch.autograd.grad(noisy.sum(), [x, layer.log_dt], allow_unused=True)
    torch.testing.assert_close(grads[0], torch.ones_like(x), rtol=0, atol=0)
    assert grads[1] is None or bool((grads[1] == 0).all())


def test_inject_noise_keeps_the_other_positional_arguments():
    """Guards the pre-hook: only the first argument is noised; a positional mask still reaches the layer."""
    torch.manual_seed(7)
    layer = ssm.Mamba(4, d_state=2, bidirectional=True).double()
    x = torch.randn(2, 6, 4, dtype=torch.float64)
    mask = (torch.arange(6)[None, :] < torch.tensor([6, 3])[:, None]).unsqueeze(-1)
    shift = lambda module, inp: inp + 0.5  # noqa: E731  (a deterministic "noise")
    with inject_noise(layer, shift):
        hooked = layer(x, mask)
    expected = layer(x + 0.5, mask)
    torch.testing.assert_close(hooked, expected, rtol=0, atol=0)
    assert not torch.allclose(expected[1, :3], layer(x + 0.5)[1, :3])  # the mask matters for this input
