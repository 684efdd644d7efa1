"""Sequence layers: (batch, length, d_model) in, same shape out."""

from ssm.layers.diagonal import DiagonalSSM
from ssm.layers.dss import DSS
from ssm.layers.mamba import Mamba, MambaState
from ssm.layers.s4d import S4D
from ssm.layers.s4ptd import S4PTD
from ssm.layers.s5 import S5, S5PTD

__all__ = ["DSS", "DiagonalSSM", "Mamba", "MambaState", "S4D", "S4PTD", "S5", "S5PTD"]
