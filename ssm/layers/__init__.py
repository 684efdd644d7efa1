"""Sequence layers: (batch, length, d_model) in, same shape out."""

from ssm.layers.diagonal import DiagonalSSM
from ssm.layers.dss import DSS
from ssm.layers.s4d import S4D

__all__ = ["DSS", "DiagonalSSM", "S4D"]
