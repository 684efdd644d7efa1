"""Test-wide environment: Triton runs in its interpreter on CPU-only machines, W&B never
reaches the network (both must be set before triton / wandb are imported), and the PTD
factorizations are cached in a temporary folder, not in the user's cache."""

import os
import tempfile

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ["SSM_CACHE_DIR"] = tempfile.mkdtemp(prefix="ssm-test-cache-")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n K runs K worker processes: one intra-op thread each keeps them off each other's cores
    torch.set_num_threads(1)
