"""A custom op's fake (shape-only) outputs against its real ones, for the backward ops that
stand for the kernels' backwards under ``torch.compile``.

``torch.library.opcheck`` on a forward op runs its backward op only inside AOTAutograd, where
a fake gradient that disagrees with the real one goes unnoticed (aot_eager runs the real op;
the autograd engine casts a gradient to its input's dtype), and it compares dtypes, shapes and
storage offsets but not strides. A compiler that plans its buffers from the fake outputs
(inductor) reads such a real output wrongly. :func:`backward_op_calls` records the arguments
a backward op is called with; :func:`assert_fake_outputs_like_real` runs it on them, real and
fake."""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils import _pytree as pytree


def backward_op_calls(module, name: str, run) -> list[tuple]:
    """The arguments of every call of ``module.<name>`` (a backward op, which the module's
    registered autograd looks up when it runs) while ``run()`` runs."""
    op, calls = getattr(module, name), []

    def record(*args):
        calls.append(args)
        return op(*args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, name, record)
        run()
    assert calls, f"{name} was not called"
    return [(op, args) for args in calls]


def assert_fake_outputs_like_real(op, args) -> None:
    """``op(*args)`` and its fake outputs: the same shapes, dtypes, storage offsets and (where
    the layout matters: a dimension of more than one entry) strides."""
    real = op(*args)
    mode = FakeTensorMode()
    fake_args = pytree.tree_map_only(torch.Tensor, mode.from_tensor, args)
    with mode:
        fake = op(*fake_args)
    real, fake = (out if isinstance(out, (tuple, list)) else (out,) for out in (real, fake))
    assert len(real) == len(fake)
    for i, (r, f) in enumerate(zip(real, fake)):
        where = f"{op}: output {i}"
        assert (tuple(f.shape), f.dtype) == (tuple(r.shape), r.dtype), where
        if r.numel() > 1:
            assert f.storage_offset() == r.storage_offset(), where
            layout = [(f.stride(d), r.stride(d)) for d in range(r.dim()) if r.shape[d] > 1]
            assert all(a == b for a, b in layout), f"{where}: strides {f.stride()} promised, {r.stride()} given"
