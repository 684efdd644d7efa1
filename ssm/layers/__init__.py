"""Sequence layers: (batch, length, d_model) in, same shape out (ClosedLoopCompanionSSM: the
lag window in, the forecast out); 2D layers (SS2D, NSSMamba, Mamba2D): (batch, height,
width, d_model); Chimera: (batch, length, variates, d_model)."""

from ssm.layers.chimera import Chimera
from ssm.layers.closed_loop import ClosedLoopCompanionSSM, ClosedLoopShiftSSM
from ssm.layers.companion import CompanionSSM, FixedKernelSSM, ResidualSSM, ShiftSSM
from ssm.layers.diagonal import DiagonalSSM
from ssm.layers.dss import DSS
from ssm.layers.mamba import Mamba, MambaState
from ssm.layers.mamba2d import Mamba2D
from ssm.layers.nss_mamba import NSSMamba
from ssm.layers.s4d import S4D
from ssm.layers.s4ptd import S4PTD
from ssm.layers.s5 import S5, S5PTD
from ssm.layers.ss2d import SS2D

__all__ = [
    "Chimera", "ClosedLoopCompanionSSM", "ClosedLoopShiftSSM", "CompanionSSM", "DSS", "DiagonalSSM", "FixedKernelSSM",
    "Mamba", "Mamba2D", "MambaState", "NSSMamba", "ResidualSSM", "S4D", "S4PTD", "S5", "S5PTD", "SS2D", "ShiftSSM",
]
