"""Structured state-space sequence layers.

``from ssm import S4D`` gives a layer on (batch, length, d_model) tensors; ``ssm.hippo``
holds the initializations, ``ssm.blocks`` and ``ssm.models`` the residual blocks and
backbones, ``ssm.optim`` the per-parameter optimizer groups. Training code lives in
``ssm.training`` and is imported only by ``train.py``.
"""

from ssm import hippo, optim
from ssm.blocks import ResidualBlock, SequenceBackbone
from ssm.layers import DSS, S4D
from ssm.models import SequenceClassifier

__all__ = ["DSS", "ResidualBlock", "S4D", "SequenceBackbone", "SequenceClassifier", "hippo", "optim"]
