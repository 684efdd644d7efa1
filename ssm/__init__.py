"""Structured state-space sequence layers.

``from ssm import S4D`` gives a layer on (batch, length, d_model) tensors; ``ssm.hippo``
holds the initializations, ``ssm.blocks`` and ``ssm.models`` the residual blocks and
backbones, ``ssm.optim`` the per-parameter optimizer groups, ``ssm.prefill`` the prompt pass
before step-by-step decoding, ``ssm.transfer`` transfer functions and
``ssm.robustness`` the Fourier-mode noise evaluation, ``ssm.token_dynamics`` the
convergent/divergent scenario criterion for Mamba layers, ``ssm.scan_orders`` the 2D
scan orders (row/column-major, nested S-shaped) as permutations. Training code lives in
``ssm.training`` and is imported only by ``train.py`` and the training benchmarks in ``bench/``.
"""

from ssm import hippo, optim, prefill, robustness, scan_orders, token_dynamics, transfer
from ssm.blocks import ResidualBlock, SequenceBackbone
from ssm.layers import (
    DSS, SS2D, Chimera, ClosedLoopCompanionSSM, ClosedLoopShiftSSM, CompanionSSM, FixedKernelSSM, Mamba,
    Mamba2D, NSSMamba, ResidualSSM, S4D, S4PTD, S5, S5PTD, ShiftSSM,
)
from ssm.models import ImageClassifier, MultivariateForecaster, SequenceClassifier, SpaceTime

__all__ = [
    "DSS", "SS2D", "Chimera", "ClosedLoopCompanionSSM", "ClosedLoopShiftSSM", "CompanionSSM", "FixedKernelSSM",
    "ImageClassifier", "Mamba", "Mamba2D", "MultivariateForecaster", "NSSMamba", "ResidualBlock", "ResidualSSM",
    "S4D", "S4PTD", "S5", "S5PTD", "SequenceBackbone", "SequenceClassifier", "ShiftSSM", "SpaceTime",
    "hippo", "optim", "prefill", "robustness", "scan_orders", "token_dynamics", "transfer",
]
