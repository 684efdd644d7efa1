"""Selective copying and induction heads: generators, datasets, the data module, last_k pooling
and the per-token targets of the task."""

import numpy as np
import pytest
import torch

from ssm.data import synthetic
from ssm.models import SequenceClassifier
from ssm.models.pooling import pool
from ssm.training.data import SyntheticDataModule
from ssm.training.task import SequenceClassificationTask


def test_selective_copy_targets_are_the_data_tokens_in_order():
    ds = synthetic.SelectiveCopyDataset(50, seq_len=40, n_memorize=5, vocab_size=6, seed=3)
    marker = synthetic.marker_token(6)
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (45,) and y.shape == (5,) and x.dtype == y.dtype == torch.int64
        context = x[:40]
        data = context[context != synthetic.BLANK]
        assert len(data) == 5 and ((1 <= data) & (data <= 6)).all()
        assert torch.equal(y, data - 1)
        assert (x[40:] == marker).all() and (context != marker).all()


def test_positions_random_with_variable_spacing_else_first():
    variable = synthetic.SelectiveCopyDataset(30, seq_len=50, n_memorize=4, vocab_size=5)
    fixed = synthetic.SelectiveCopyDataset(30, seq_len=50, n_memorize=4, vocab_size=5, variable_spacing=False)
    spreads = set()
    for i in range(30):
        positions = torch.nonzero(variable[i][0][:50]).flatten()
        spreads.add(tuple(positions.tolist()))
        assert torch.equal(torch.nonzero(fixed[i][0][:50]).flatten(), torch.arange(4))
    assert len(spreads) > 25  # random positions differ between samples


def test_samples_are_deterministic_and_splits_differ():
    a = synthetic.SelectiveCopyDataset(10, seq_len=32, n_memorize=3, seed=1, split="train")
    b = synthetic.SelectiveCopyDataset(10, seq_len=32, n_memorize=3, seed=1, split="train")
    val = synthetic.SelectiveCopyDataset(10, seq_len=32, n_memorize=3, seed=1, split="val")
    other_seed = synthetic.SelectiveCopyDataset(10, seq_len=32, n_memorize=3, seed=2, split="train")
    for i in range(10):
        assert torch.equal(a[i][0], b[i][0])
    assert any(not torch.equal(a[i][0], val[i][0]) for i in range(10))
    assert any(not torch.equal(a[i][0], other_seed[i][0]) for i in range(10))
    assert not torch.equal(a[0][0], a[1][0])


def test_induction_heads_target_follows_the_first_trigger():
    ds = synthetic.InductionHeadsDataset(40, seq_len=30, vocab_size=7, seed=5)
    trigger = synthetic.marker_token(7)
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (31,) and y.shape == (1,)
        hits = torch.nonzero(x == trigger).flatten().tolist()
        assert len(hits) == 2 and hits[1] == 30 and hits[0] <= 28
        assert y.item() == x[hits[0] + 1].item() - 1


@pytest.mark.parametrize("kwargs, match", [
    (dict(n=4, seq_len=3, n_memorize=4), "n_memorize"),
    (dict(n=4, seq_len=8, n_memorize=0), "n_memorize"),
    (dict(n=4, vocab_size=0), "vocab_size"),
    (dict(n=4, split="dev"), "split"),
])
def test_invalid_parameters_are_reported(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthetic.SelectiveCopyDataset(**kwargs)


def test_index_out_of_range():
    with pytest.raises(IndexError):
        synthetic.InductionHeadsDataset(3, seq_len=8)[3]


def test_data_module_shapes_and_batches():
    dm = SyntheticDataModule("selective_copy", seq_len=20, n_memorize=3, vocab_size=5, n_train=10, n_val=4,
                             n_test=4, batch_size=4)
    dm.setup()
    assert (dm.n_tokens, dm.n_classes, dm.n_predict) == (7, 5, 3)
    x, y, lengths = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 23) and y.shape == (4, 3) and lengths is None
    ih = SyntheticDataModule("induction_heads", seq_len=20, vocab_size=5, n_train=4, n_val=4, n_test=4)
    assert ih.n_predict == 1
    with pytest.raises(ValueError, match="task"):
        SyntheticDataModule("copying")


def test_last_k_pooling():
    x = torch.arange(2 * 6 * 1, dtype=torch.float32).reshape(2, 6, 1)
    assert torch.equal(pool(x, mode="last_k", k=2), x[:, 4:])
    got = pool(x, torch.tensor([3, 6]), mode="last_k", k=2)
    assert torch.equal(got[0], x[0, 1:3]) and torch.equal(got[1], x[1, 4:6])
    with pytest.raises(ValueError, match="k"):
        pool(x, mode="last_k", k=7)
    with pytest.raises(ValueError, match="lengths"):
        pool(x, torch.tensor([1, 6]), mode="last_k", k=2)


def test_task_trains_on_per_token_targets_and_rejects_mismatched_logits():
    model = SequenceClassifier(8, 1, lambda d: torch.nn.Identity(), d_output=5, n_tokens=7, pooling="last_k",
                               n_predict=3, output="none")
    task = SequenceClassificationTask(model, n_classes=5, optimizer=lambda m: torch.optim.SGD(m.parameters(), 0.1))
    task.log = lambda *args, **kwargs: None
    x = torch.randint(0, 7, (4, 10))
    y = torch.randint(0, 5, (4, 3))
    loss = task._shared_step((x, y, None), "train")
    logits = model(x)
    assert logits.shape == (4, 3, 5)
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 5), y.reshape(-1))
    torch.testing.assert_close(loss, expected)
    seq = task.seq_metrics["train_seq_acc"].compute()
    assert seq == (logits.argmax(-1) == y).all(-1).float().mean()
    mean_pooled = SequenceClassifier(8, 1, lambda d: torch.nn.Identity(), d_output=5, n_tokens=7, output="none")
    task = SequenceClassificationTask(mean_pooled, n_classes=5, optimizer=None)
    with pytest.raises(ValueError, match="last_k"):
        task._shared_step((x, y, None), "train")


def test_rng_is_numpy_seed_sequence():
    # the (seed, split, index) triple fully determines a sample
    first = synthetic.selective_copy_sample(np.random.default_rng([0, 0, 5]), 16, 2, 4)
    again = synthetic.SelectiveCopyDataset(6, seq_len=16, n_memorize=2, vocab_size=4)[5]
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
