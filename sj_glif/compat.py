"""Everything that differs between the SpikingJelly releases sj-glif supports.

sj-glif runs on SpikingJelly >= 2.0 and on 0.0.0.0.14, the release most published
SNN code pins. The differences GLIF meets, all handled here by feature tests on the
public API (never by parsing version strings, never through private modules):

- **Node contract.** 2.0's ``MemoryModule`` routes ``single_step_forward`` through the
  functional contract (``materialize_states``, ``single_step_functional_forward``),
  which :class:`~sj_glif.GLIFNode` implements. 0.0.0.0.14's ``BaseNode`` instead runs
  ``neuronal_charge`` / ``neuronal_fire`` / ``neuronal_reset`` and keeps a ``backend``
  property that only accepts ``supported_backends``. :class:`NodeCompat` is an empty
  class under 2.0; under 0.0.0.0.14 it supplies 2.0's single-step path, ``v_seq``
  handling and a GLIF ``backend`` property, so that one ``GLIFNode`` serves both.
- **Backends.** 0.0.0.0.14's ``functional.set_backend(net, name)`` sets ``m.backend``
  on modules whose ``supported_backends`` list ``name``. GLIF lists its own backends
  (:data:`sj_glif.ops.BACKENDS`) and ``"cupy"``; ``"cupy"`` (published code's way of
  saying "fast") selects ``"auto"`` (Triton on CUDA) and says so once per process.
  2.0 has no ``set_backend`` and no ``backend`` on its modules; nothing changes there.
- **Surrogates.** 0.0.0.0.14 has no ``surrogate.Rect`` (the official GLIF surrogate)
  or ``surrogate.SuperSpike``. :data:`Rect` and :data:`SuperSpike` are SpikingJelly's
  classes where they exist and sj-glif's equivalents (:class:`SjGlifRect`,
  :class:`SjGlifSuperSpike`, same forward, backward and ``alpha`` default as 2.0's)
  otherwise; :mod:`sj_glif.surrogates` fuses either.
- **Registries.** 2.0's ``functional.invalidate_reset_cache`` and the vision config
  registry (``distributed.vision.config.register_neuron_class``) do not exist in
  0.0.0.0.14 (it caches no module list and has no config registry).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import spikingjelly
import torch
from spikingjelly.activation_based import base, functional, neuron, surrogate
from torch import nn

__all__ = [
    "EXTRA_NODE_BACKENDS",
    "HAS_FUNCTIONAL_CONTRACT",
    "HAS_GATED_LIF",
    "HAS_SET_BACKEND",
    "HAS_VISION_CONFIG",
    "NodeCompat",
    "Rect",
    "SPIKINGJELLY_VERSION",
    "SjGlifRect",
    "SjGlifSuperSpike",
    "SuperSpike",
    "gated_lif_class",
    "invalidate_reset_cache",
    "vision_config_register",
]

try:
    SPIKINGJELLY_VERSION: str = version("spikingjelly")
except PackageNotFoundError:  # a source checkout on sys.path
    SPIKINGJELLY_VERSION = "unknown"

#: 2.0's explicit-state contract; absent in 0.0.0.0.14
HAS_FUNCTIONAL_CONTRACT: bool = hasattr(base.MemoryModule, "single_step_functional_forward")
#: 0.0.0.0.14's ``functional.set_backend``; absent in 2.0
HAS_SET_BACKEND: bool = hasattr(functional, "set_backend")
#: SpikingJelly's own ``neuron.GatedLIFNode`` (2.0 only)
HAS_GATED_LIF: bool = hasattr(neuron, "GatedLIFNode")
#: 2.0's vision config registry
HAS_VISION_CONFIG: bool = (
    importlib.util.find_spec("spikingjelly.activation_based.distributed") is not None
    and importlib.util.find_spec("spikingjelly.activation_based.distributed.vision.config")
    is not None
)


def gated_lif_class() -> type[nn.Module] | None:
    """SpikingJelly's ``neuron.GatedLIFNode``, or None where it does not exist (0.0.0.0.14)."""
    return getattr(neuron, "GatedLIFNode", None)


def invalidate_reset_cache(net: nn.Module) -> None:
    """Tell ``functional.reset_net`` that modules of ``net`` were replaced.

    2.0 caches each network's module list (``functional.invalidate_reset_cache``);
    0.0.0.0.14 walks ``net.modules()`` on every call, so there is nothing to do there.
    """
    fn = getattr(functional, "invalidate_reset_cache", None)
    if fn is not None:
        fn(net)


def vision_config_register() -> Any:
    """2.0's ``distributed.vision.config.register_neuron_class``, or None (0.0.0.0.14)."""
    if not HAS_VISION_CONFIG:
        return None
    from spikingjelly.activation_based.distributed.vision.config import register_neuron_class

    return register_neuron_class


# ---------------------------------------------------------------------- surrogates


def _heaviside(z: torch.Tensor) -> torch.Tensor:
    return (z >= 0).to(z)  # SpikingJelly's H: 1 where z >= 0


class _SpikeFn(torch.autograd.Function):
    """``H(z)`` forward; backward: the surrogate class's ``backward(grad, z, alpha)``."""

    @staticmethod
    def forward(z: torch.Tensor, alpha: float, surrogate_cls: type) -> torch.Tensor:
        return _heaviside(z)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        ctx.save_for_backward(inputs[0])
        ctx.alpha, ctx.surrogate_cls = inputs[1], inputs[2]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (z,) = ctx.saved_tensors
        return ctx.surrogate_cls.backward(grad, z, ctx.alpha), None, None


class SjGlifRect(surrogate.SurrogateFunctionBase):
    """Rectangular-window surrogate, SpikingJelly 2.0's ``surrogate.Rect`` for releases
    without it (the surrogate the official GLIF code trained with).

    Forward (``spiking=True``): ``H(z) = 1 if z >= 0 else 0``. Backward:
    ``alpha * 1[|z| < 0.5 / alpha]`` (default ``alpha=1.0``: 1 where ``|z| < 0.5``).
    ``spiking=False`` gives the primitive ``clamp(alpha z + 0.5, 0, 1)``, as 2.0's.
    Use it as :data:`sj_glif.surrogates.Rect`, which is SpikingJelly's own class where
    one exists.
    """

    def __init__(self, alpha: float = 1.0, spiking: bool = True) -> None:
        super().__init__(alpha=alpha, spiking=spiking)

    @staticmethod
    def spiking_function(x: torch.Tensor, alpha: float) -> torch.Tensor:
        return _SpikeFn.apply(x, alpha, SjGlifRect)

    @staticmethod
    def primitive_function(x: torch.Tensor, alpha: float) -> torch.Tensor:
        return torch.clamp(alpha * x + 0.5, min=0.0, max=1.0)

    @staticmethod
    def backward(grad_output: torch.Tensor, x: torch.Tensor, alpha: float) -> torch.Tensor:
        return alpha * (x.abs() < 0.5 / alpha).to(x) * grad_output


class SjGlifSuperSpike(surrogate.SurrogateFunctionBase):
    """SuperSpike surrogate (Zenke & Ganguli 2018), SpikingJelly 2.0's
    ``surrogate.SuperSpike`` for releases without it.

    Forward (``spiking=True``): ``H(z)``. Backward: ``alpha / (|z| + 1)^2`` (default
    ``alpha=1.0``). Like 2.0's, it has no primitive function: ``spiking=False`` raises.
    """

    def __init__(self, alpha: float = 1.0, spiking: bool = True) -> None:
        super().__init__(alpha=alpha, spiking=spiking)

    @staticmethod
    def spiking_function(x: torch.Tensor, alpha: float) -> torch.Tensor:
        return _SpikeFn.apply(x, alpha, SjGlifSuperSpike)

    @staticmethod
    def primitive_function(x: torch.Tensor, alpha: float) -> torch.Tensor:
        raise NotImplementedError("SuperSpike has no primitive function (spiking=False)")

    @staticmethod
    def backward(grad_output: torch.Tensor, x: torch.Tensor, alpha: float) -> torch.Tensor:
        return alpha * grad_output / (x.abs() + 1.0) ** 2


#: the rectangular surrogate: SpikingJelly's ``surrogate.Rect`` if it has one, else sj-glif's
Rect: type[nn.Module] = getattr(surrogate, "Rect", SjGlifRect)
#: the SuperSpike surrogate: SpikingJelly's ``surrogate.SuperSpike`` if present, else sj-glif's
SuperSpike: type[nn.Module] = getattr(surrogate, "SuperSpike", SjGlifSuperSpike)


# ---------------------------------------------------------------------- the node

_CUPY_NOTE_SHOWN = False
# frames in these folders are skipped when the warning picks the line it points at
_LIBRARY_DIRS = tuple(os.path.dirname(m.__file__) + os.sep for m in (torch, spikingjelly)) + (
    os.path.dirname(__file__) + os.sep,
)


def _user_stacklevel() -> int:
    """``stacklevel`` for a warning raised here that points at the first frame outside
    torch, SpikingJelly and sj-glif (``set_backend``'s or the constructor's caller)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_LIBRARY_DIRS):
        frame, level = frame.f_back, level + 1
    return level


def _note_cupy_once() -> None:
    global _CUPY_NOTE_SHOWN
    if _CUPY_NOTE_SHOWN:
        return
    _CUPY_NOTE_SHOWN = True
    warnings.warn(
        "GLIFNode does not use SpikingJelly's CuPy kernels: backend='cupy' selects GLIF's "
        "fastest path, backend='auto' (fused Triton kernels on CUDA, PyTorch on the CPU). "
        "Shown once per process.",
        UserWarning,
        stacklevel=_user_stacklevel(),
    )


class _LegacyNodeCompat:
    """SpikingJelly 0.0.0.0.14 glue for GLIFNode (mixed in before ``neuron.BaseNode``).

    Supplies what 2.0's ``MemoryModule`` / ``BaseNode`` give GLIFNode there: the
    single-step forward through the functional contract (with ``v_seq`` appended per step
    when ``store_v_seq``), ``v_seq`` as a plain attribute (0.0.0.0.14 makes it a memory,
    which would break the fixed ``(v, spike, step)`` state), and a ``backend`` property
    that knows GLIF's backends instead of checking for CuPy/Lava libraries.
    """

    @property
    def supported_backends(self) -> tuple[str, ...]:
        """GLIF's backends (``sj_glif.ops.BACKENDS``) and ``"cupy"`` (= ``"auto"``)."""
        from .ops import BACKENDS

        return (*BACKENDS, "cupy")

    @property
    def backend(self) -> str:
        return self.__dict__.get("_glif_backend", "auto")

    @backend.setter
    def backend(self, value: str) -> None:
        from .ops import BACKENDS

        if value == "cupy":
            _note_cupy_once()
            value = "auto"
        if value not in BACKENDS:
            raise ValueError(
                f"GLIFNode backend must be one of {(*BACKENDS, 'cupy')}, got {value!r}"
            )
        self.__dict__["_glif_backend"] = value

    @property
    def store_v_seq(self) -> bool:
        return self.__dict__.get("_store_v_seq", False)

    @store_v_seq.setter
    def store_v_seq(self, value: bool) -> None:
        self.__dict__["_store_v_seq"] = value
        self.v_seq = None

    def reset(self) -> None:
        super().reset()
        self.v_seq = None

    def detach(self) -> None:
        super().detach()
        if isinstance(self.v_seq, torch.Tensor):
            self.v_seq = self.v_seq.detach()

    def single_step_forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        inputs = (x, *args)
        states = self.materialize_states(inputs, tuple(self._memories.values()), "s")
        outputs, new_states = self.single_step_functional_forward(inputs, states, **kwargs)
        for name, value in zip(self._memories, new_states, strict=True):
            self._memories[name] = value
        if self.store_v_seq:
            v = self.v.unsqueeze(0)
            prev = self.v_seq
            same = isinstance(prev, torch.Tensor) and (
                prev.shape[1:] == v.shape[1:] and prev.device == v.device
            )
            self.v_seq = torch.cat((prev, v)) if same and prev.dtype == v.dtype else v.clone()
        return outputs[0]


#: backend names GLIFNode accepts beyond ``sj_glif.ops.BACKENDS``: ``"cupy"`` under 0.0.0.0.14
#: (published builders pass ``backend="cupy"`` to every neuron); none under 2.0
EXTRA_NODE_BACKENDS: tuple[str, ...] = () if HAS_FUNCTIONAL_CONTRACT else ("cupy",)


class _NodeCompat:
    """SpikingJelly >= 2.0: GLIFNode needs no glue."""


#: base class GLIFNode mixes in before ``neuron.BaseNode``: empty under SpikingJelly 2.0,
#: the 0.0.0.0.14 glue (:class:`_LegacyNodeCompat`) there
NodeCompat: type = _NodeCompat if HAS_FUNCTIONAL_CONTRACT else _LegacyNodeCompat
