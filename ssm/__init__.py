"""Structured state-space sequence layers.

``from ssm import S4D`` gives a layer on (batch, length, d_model) tensors; ``ssm.hippo``
holds the initializations, ``ssm.blocks`` and ``ssm.models`` the residual blocks and
backbones, ``ssm.optim`` the per-parameter optimizer groups, ``ssm.transfer`` transfer functions and
``ssm.robustness`` the Fourier-mode noise evaluation, ``ssm.token_dynamics`` the
convergent/divergent scenario criterion for Mamba layers, ``ssm.scan_orders`` the 2D
scan orders (row/column-major, nested S-shaped) as permutations. Training code lives in
``ssm.training`` and is imported only by ``train.py``.
"""

from ssm import hippo, optim, robustness, scan_orders, token_dynamics, transfer
from ssm.blocks import ResidualBlock, SequenceBackbone
from ssm.layers import DSS, SS2D, Chimera, Mamba, Mamba2D, NSSMamba, S4D, S4PTD, S5, S5PTD
from ssm.models import ImageClassifier, MultivariateForecaster, SequenceClassifier

__all__ = [
    "DSS", "SS2D", "Chimera", "ImageClassifier", "Mamba", "Mamba2D", "MultivariateForecaster", "NSSMamba",
    "ResidualBlock", "S4D", "S4PTD", "S5", "S5PTD", "SequenceBackbone", "SequenceClassifier",
    "hippo", "optim", "robustness", "scan_orders", "token_dynamics", "transfer",
]
