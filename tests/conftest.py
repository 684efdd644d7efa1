"""Test-wide environment: Triton runs in its interpreter on CPU-only machines, and W&B never
reaches the network. Both must be set before triton / wandb are imported."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
