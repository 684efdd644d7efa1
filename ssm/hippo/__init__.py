"""HiPPO matrices and the initializations derived from them.

- ``ssm.hippo.matrices``: ``transition`` (legs, legt, fout), ``low_rank``, ``normal_part``,
  ``nplr`` and the diagonal initializations of S4D (``diagonal_init``, ``diagonal_B_init``).
- ``ssm.hippo.perturb``: ``ptd`` (perturb-then-diagonalize), ``ptd_stats`` and the cached
  ``ptd_legs``.
"""

from ssm.hippo.matrices import (
    DIAGONAL_INITS,
    MEASURES,
    diagonal_B_init,
    diagonal_init,
    low_rank,
    normal_part,
    nplr,
    transition,
)
from ssm.hippo.perturb import PTD_VERSION, ptd, ptd_legs, ptd_stats

__all__ = [
    "DIAGONAL_INITS", "MEASURES", "PTD_VERSION", "diagonal_B_init", "diagonal_init", "low_rank",
    "normal_part", "nplr", "ptd", "ptd_legs", "ptd_stats", "transition",
]
