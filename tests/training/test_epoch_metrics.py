"""The tasks log epoch metrics once per epoch: each is the metric over every batch of the
epoch (not a mean of per-batch values), and nothing carries over into the next epoch."""

import functools

from distributed_epoch_end import Recorder, epoch_end_on_two_processes
import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics import MeanMetric, MeanSquaredError

import ssm
from ssm.training.epoch_metrics import log_epoch_metrics
from ssm.training.forecasting import ForecastingTask
from ssm.training.task import SequenceClassificationTask


def test_log_epoch_metrics_logs_computes_resets_and_skips_unused_metrics():
    used, unused = MeanMetric(), MeanMetric()
    used.update(torch.tensor([1.0, 2.0]))
    used.update(torch.tensor([6.0]))
    module = Recorder()
    log_epoch_metrics(module, {"a/x": used, "a/y": unused}, prog_bar=["a/x"])
    assert module.logged == {"a/x": (3.0, {"prog_bar": True, "sync_dist": True})}
    assert used.update_count == 0  # reset for the next epoch
    log_epoch_metrics(module, {"a/x": used})
    assert module.logged["a/x"][0] == 3.0  # nothing new logged from an empty epoch


def _trainer():
    return L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)


class Scaled(nn.Module):
    """``scale * x``: the test changes ``scale`` between evaluations."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x, lengths=None):
        return self.scale * x


def _loader(*tensors, batch_size, with_lengths=False):
    collate = (lambda items: (*torch.utils.data.default_collate(items), None)) if with_lengths else None
    return DataLoader(TensorDataset(*tensors), batch_size=batch_size, collate_fn=collate)


def test_classification_accuracy_is_over_the_whole_epoch_and_resets():
    torch.manual_seed(0)
    logits = torch.randn(23, 4)  # batches of 10, 10 and 3: unequal, so a mean of batch accuracies differs
    y = torch.randint(0, 4, (23,))
    y[:5] = logits[:5].argmax(-1)
    loader = _loader(logits, y, batch_size=10, with_lengths=True)
    model = Scaled()
    task = SequenceClassificationTask(model, n_classes=4, optimizer=None)
    (first,) = _trainer().validate(task, loader, verbose=False)
    assert first["val/acc"] == pytest.approx(float((logits.argmax(-1) == y).float().mean()))
    # the loss too is the mean over the examples, not over the batches
    assert first["val/loss"] == pytest.approx(F.cross_entropy(logits.double(), y).item(), rel=1e-5)
    with torch.no_grad():
        model.scale.fill_(-1.0)  # flips every prediction to the smallest logit
    (second,) = _trainer().validate(task, loader, verbose=False)
    assert second["val/acc"] == pytest.approx(float((logits.argmin(-1) == y).float().mean()))
    assert second["val/loss"] == pytest.approx(F.cross_entropy(-logits.double(), y).item(), rel=1e-5)
    assert "val/seq_acc" not in second  # one target per sequence: no sequence accuracy


def test_classification_batches_without_lengths_are_unpadded_batches():
    """(x, y) batches, e.g. from a TensorDataset, give what (x, y, None) batches give; any
    other batch form is refused by name."""
    torch.manual_seed(3)
    logits, y = torch.randn(13, 4), torch.randint(0, 4, (13,))
    task = SequenceClassificationTask(Scaled(), n_classes=4, optimizer=None)
    (pairs,) = _trainer().validate(task, _loader(logits, y, batch_size=5), verbose=False)
    (triples,) = _trainer().validate(task, _loader(logits, y, batch_size=5, with_lengths=True), verbose=False)
    assert pairs == triples and pairs["val/acc"] == pytest.approx(float((logits.argmax(-1) == y).float().mean()))
    with pytest.raises(ValueError, match=r"\(x, y\) or \(x, y, lengths\), got a tuple of 1"):
        task._unpack((logits,))


def test_classification_sequence_accuracy_counts_sequences_with_every_token_right():
    torch.manual_seed(1)
    logits = torch.randn(7, 3, 5)  # (B, K, classes)
    y = logits.argmax(-1)
    y[1, 0] = (y[1, 0] + 1) % 5
    y[4, 2] = (y[4, 2] + 1) % 5
    task = SequenceClassificationTask(Scaled(), n_classes=5, optimizer=None)
    (metrics,) = _trainer().validate(task, _loader(logits, y, batch_size=3, with_lengths=True), verbose=False)
    assert metrics["val/acc"] == pytest.approx(19 / 21)
    assert metrics["val/seq_acc"] == pytest.approx(5 / 7)


def test_forecasting_errors_are_over_the_whole_epoch_and_reset():
    torch.manual_seed(2)
    x, y = torch.randn(23, 4, 2), torch.randn(23, 4, 2)
    loader = _loader(x, y, batch_size=10)
    model = Scaled()
    task = ForecastingTask(model, optimizer=None, data_transform="none")
    for scale in (1.0, 0.5):
        with torch.no_grad():
            model.scale.fill_(scale)
        (metrics,) = _trainer().validate(task, loader, verbose=False)
        err = scale * x - y
        assert metrics["val/mse"] == pytest.approx(float(err.square().mean()), rel=1e-5)
        assert metrics["val/mae"] == pytest.approx(float(err.abs().mean()), rel=1e-5)
        assert metrics["val/rmse"] == pytest.approx(float(err.square().mean().sqrt()), rel=1e-5)


def test_training_metrics_are_logged_per_epoch():
    x, y = torch.randn(12, 4, 1), torch.randn(12, 4, 1)
    task = ForecastingTask(Scaled(), optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.0),
                           data_transform="none")
    trainer = L.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False)
    trainer.fit(task, _loader(x, y, batch_size=5))
    err = x - y
    assert float(trainer.callback_metrics["train/mse"]) == pytest.approx(float(err.square().mean()), rel=1e-5)
    assert isinstance(task.metrics["train_mse"], MeanSquaredError) and task.metrics["train_mse"].update_count == 0


def test_a_process_without_batches_still_joins_the_collective_compute(tmp_path):
    """compute() reduces across processes: a process that saw no batch must take part (or the
    others wait on it forever) and logs the same value; a metric no process updated is skipped."""
    context = torch.multiprocessing.get_context("spawn")
    results = context.SimpleQueue()
    init_file = tmp_path / "rendezvous"
    processes = [context.Process(target=epoch_end_on_two_processes, args=(rank, str(init_file), results))
                 for rank in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [process.exitcode for process in processes] == [0, 0]
    logged = dict(results.get() for _ in processes)
    assert logged == {0: {"val/x": 3.0}, 1: {"val/x": 3.0}}


class RecordsLengths(nn.Module):
    """The identity on logits that keeps the ``lengths`` of every call."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.seen = []

    def forward(self, x, lengths=None):
        self.seen.append(lengths)
        return self.scale * x


def test_classification_batches_pass_their_lengths_to_the_model():
    """(x, y, lengths) batches reach the model as model(x, lengths); (x, y) ones with None."""
    torch.manual_seed(4)
    logits, y, lengths = torch.randn(7, 3), torch.randint(0, 3, (7,)), torch.arange(1, 8)
    model = RecordsLengths()
    task = SequenceClassificationTask(model, n_classes=3, optimizer=None)
    _trainer().validate(task, DataLoader(TensorDataset(logits, y, lengths), batch_size=4), verbose=False)
    assert len(model.seen) == 2 and torch.equal(torch.cat(model.seen), lengths)
    model.seen.clear()
    _trainer().validate(task, DataLoader(TensorDataset(logits, y), batch_size=4), verbose=False)
    assert model.seen == [None, None]


@pytest.mark.parametrize("batch", [(1, 2, 3, 4), [1, 2, 3, 4], (1, 2, 3, 4, 5)])
def test_classification_batches_of_more_than_three_parts_are_refused(batch):
    """Only (x, y) and (x, y, lengths) are batches; a fourth part (a mask, an index) is not
    silently taken for something else."""
    kind = type(batch).__name__
    with pytest.raises(ValueError, match=rf"\(x, y\) or \(x, y, lengths\), got a {kind} of {len(batch)}"):
        SequenceClassificationTask._unpack(batch)


def test_the_per_epoch_test_pass_takes_batches_without_lengths():
    """test_noise.every_epoch evaluates a test loader of (x, y) batches (a TensorDataset of
    two tensors), as the final test does; the clean accuracy is the model's on the split."""
    class Pairs(L.LightningDataModule):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(5)
            self.train = TensorDataset(torch.randn(6, 10, 1, generator=g), torch.randint(2, (6,), generator=g))
            self.test = TensorDataset(torch.randn(5, 10, 1, generator=g), torch.randint(2, (5,), generator=g))

        def train_dataloader(self):
            return DataLoader(self.train, batch_size=3)

        def val_dataloader(self):
            return DataLoader(self.train, batch_size=3)

        def test_dataloader(self):
            return DataLoader(self.test, batch_size=3)

    torch.manual_seed(0)
    model = ssm.SequenceClassifier(d_model=4, n_layers=1, layer=functools.partial(ssm.S4D, d_state=4), d_output=2,
                                   d_input=1)
    task = SequenceClassificationTask(model, 2, optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.0),
                                      test_noise={"frequency": 3.0, "amplitude": 1.0, "every_epoch": True})
    data = Pairs()
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(task, datamodule=data)
    x, y = data.test.tensors
    with torch.no_grad():
        expected = (model.eval()(x).argmax(-1) == y).float().mean().item()
    assert float(trainer.callback_metrics["test_epoch/acc"]) == pytest.approx(expected)
    assert "test_epoch/acc_noisy" in trainer.callback_metrics
