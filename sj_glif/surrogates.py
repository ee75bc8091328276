"""The surrogate gradients that sj-glif fuses, keyed by SpikingJelly class.

SpikingJelly surrogates are modules whose forward is the Heaviside step
``H(z) = 1 if z >= 0 else 0`` and whose backward is a closed form ``sg(z)``.
The eight listed here are compiled into the fused forward/backward (the torch
path of :mod:`sj_glif.ops` and the Triton kernels) by integer id, with their
``alpha``. Any other surrogate object runs the autograd reference instead.

:data:`Rect` (the official GLIF surrogate) and :data:`SuperSpike` are SpikingJelly's
classes where the installed release has them (2.0) and sj-glif's equivalents where it
does not (0.0.0.0.14; :class:`sj_glif.compat.SjGlifRect`, same forward, backward and
``alpha`` default); either is fused. ``GLIFNode(surrogate_function=sj_glif.surrogates.Rect())``
works under both releases.
"""

from __future__ import annotations

import math

import torch
from spikingjelly.activation_based import surrogate

from .compat import Rect, SjGlifRect, SjGlifSuperSpike, SuperSpike

__all__ = ["SURROGATES", "Rect", "SuperSpike", "fused_surrogate", "surrogate_grad"]

# id -> (surrogate class, short name). The ids are part of the kernel ABI.
SURROGATES: dict[int, tuple[type, str]] = {
    0: (surrogate.Sigmoid, "sigmoid"),
    1: (surrogate.ATan, "atan"),
    2: (surrogate.PiecewiseQuadratic, "piecewise_quadratic"),
    3: (surrogate.PiecewiseExp, "piecewise_exp"),
    4: (surrogate.SoftSign, "soft_sign"),
    5: (SuperSpike, "super_spike"),
    6: (surrogate.Erf, "erf"),
    7: (Rect, "rect"),
}
# sj-glif's own Rect and SuperSpike are fused under every release (they are the
# table's classes where SpikingJelly lacks them)
_ID_BY_CLASS = {cls: sid for sid, (cls, _) in SURROGATES.items()}
_ID_BY_CLASS.update({SjGlifSuperSpike: 5, SjGlifRect: 7})


def fused_surrogate(fn: object) -> tuple[int, float] | None:
    """Return ``(surrogate_id, alpha)`` if ``fn`` can be fused, else ``None``.

    Only exact instances of the eight classes in :data:`SURROGATES` (and of
    sj-glif's :class:`~sj_glif.compat.SjGlifRect` / ``SjGlifSuperSpike``) with
    ``spiking=True`` qualify (a subclass may change the backward, and
    ``spiking=False`` makes the forward continuous).
    """
    sid = _ID_BY_CLASS.get(type(fn))
    if sid is None or not getattr(fn, "spiking", True):
        return None
    return sid, float(fn.alpha)


def surrogate_grad(z: torch.Tensor, sid: int, alpha: float) -> torch.Tensor:
    """``sg(z)``: the derivative the surrogate ``sid`` substitutes for ``dH/dz``.

    Same formulas as SpikingJelly's ``*_backward`` functions; ``z = u - theta``.
    """
    if sid == 0:
        sig = torch.sigmoid(alpha * z)
        return alpha * sig * (1.0 - sig)
    if sid == 1:
        w = (math.pi / 2.0) * alpha * z
        return (alpha / 2.0) / (1.0 + w * w)
    if sid == 2:
        za = z.abs()
        return torch.where(za > 1.0 / alpha, torch.zeros_like(z), alpha - alpha * alpha * za)
    if sid == 3:
        return (alpha / 2.0) * torch.exp(-alpha * z.abs())
    if sid == 4:
        d = 1.0 / alpha + z.abs()
        return 1.0 / (2.0 * alpha * d * d)
    if sid == 5:
        d = z.abs() + 1.0
        return alpha / (d * d)
    if sid == 6:
        return (alpha / math.sqrt(math.pi)) * torch.exp(-((alpha * z) ** 2))
    if sid == 7:
        return alpha * (z.abs() < 0.5 / alpha).to(z.dtype)
    raise ValueError(f"unknown surrogate id {sid}; expected one of {sorted(SURROGATES)}")
