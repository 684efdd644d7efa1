"""A process of a two-process gloo group calling ``log_epoch_metrics`` (started with the spawn
method, so this module imports only what the worker needs)."""

import datetime

import torch
import torch.distributed as dist
from torchmetrics import MeanMetric

from ssm.training.epoch_metrics import log_epoch_metrics


class Recorder:
    """Stands in for a LightningModule: records what ``log`` receives."""

    def __init__(self):
        self.logged = {}

    def log(self, name, value, **kwargs):
        self.logged[name] = (float(value), kwargs)


def epoch_end_on_two_processes(rank: int, init_file: str, results) -> None:
    """Rank 0 saw batches of the split, rank 1 none; puts ``(rank, {name: logged value})``."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))
    try:
        seen, never = MeanMetric(), MeanMetric()
        if rank == 0:
            seen.update(torch.tensor([1.0, 2.0, 6.0]))
        module = Recorder()
        log_epoch_metrics(module, {"val/x": seen, "val/y": never})
        results.put((rank, {name: value for name, (value, _) in module.logged.items()}))
    finally:
        dist.destroy_process_group()
