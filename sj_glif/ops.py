"""The op boundary: validation, implementation choice, torch.library ops, autograd.

``glif_multi_step`` is the one public functional entry. It runs one of four
implementations of the same math (:mod:`sj_glif.reference`):

- ``"triton"``: the fused kernels of :mod:`sj_glif.kernels.glif` (CUDA; on the CPU
  only under Triton's interpreter, ``TRITON_INTERPRET=1``);
- ``"cpp"``: a fused C++ loop for the CPU (:mod:`sj_glif.cpu`), built on first use;
- ``"torch"``: a vectorised PyTorch loop with a hand-written reverse-time backward
  (:mod:`sj_glif.torch_path`); it saves the input for backward and recomputes the
  membrane, not an autograd graph per step;
- ``"reference"``: autograd through the surrogate object, for surrogates that are
  not among the eight fused ones (:mod:`sj_glif.surrogates`). A warning says so.

The first three sit behind one ``torch.library`` op pair, ``sj_glif::glif_fwd`` and
``sj_glif::glif_bwd``, with fake (meta) implementations and registered autograd, so
``torch.compile`` traces through GLIF without a graph break; eager calls take a plain
``autograd.Function`` around the same implementations (less host work).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.autograd import forward_ad as fwAD

from . import cpu
from .reference import GATE_MODES, compute_dtype, glif_reference
from .surrogates import fused_surrogate, surrogate_grad
from .torch_path import torch_bwd, torch_fwd

__all__ = [
    "BACKENDS",
    "ENV_VAR",
    "GLIFOutput",
    "glif_multi_step",
    "implementation_for",
]

BACKENDS = ("auto", "triton", "torch", "cpp")
ENV_VAR = "SJ_GLIF_IMPLEMENTATION"
PARAM_NAMES = (
    "alpha",
    "beta",
    "gamma",
    "tau",
    "v_threshold",
    "linear_decay",
    "v_subreset",
    "conduct",
)
# gate_mode name -> kernel id (static modes differ only in that the gates are detached)
_GATE_IDS = {"soft": 0, "static_soft": 0, "hard": 1, "static_hard": 1, "coarse": 2}
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class GLIFOutput(NamedTuple):
    """Result of :func:`glif_multi_step`.

    spike_seq: ``[T, *step]`` in the input dtype. v_last, s_last: final membrane and
    spike, ``step`` shape, compute dtype (float32; float64 for float64 input).
    v_seq: membranes ``[T, *step]`` (compute dtype) when ``store_v_seq``, else None.
    """

    spike_seq: Tensor
    v_last: Tensor
    s_last: Tensor
    v_seq: Tensor | None


# --------------------------------------------------------------------------- choice


_HAS_TRITON = importlib.util.find_spec("triton") is not None  # (found, not imported)


def _triton_available() -> bool:
    return _HAS_TRITON


def _interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@torch.compiler.assume_constant_result
def _env_backend() -> str:
    return os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"


@torch.compiler.assume_constant_result
def _cpp_unavailable() -> str:
    """Why the fused C++ CPU implementation cannot run ("" if it can); builds it on the
    first call of the process (sj_glif.cpu caches the outcome)."""
    return cpu.unavailable_reason() or ""


def implementation_for(
    device: torch.device | str,
    backend: str = "auto",
    surrogate_function: object | None = None,
) -> tuple[str, str]:
    """Which implementation GLIF uses on ``device``, and why.

    Args:
        device: the device of the input, e.g. ``"cuda:0"`` or ``torch.device("cpu")``.
        backend: ``"auto"`` (default: Triton on CUDA; on the CPU the fused C++
            implementation if it builds, else the PyTorch path), ``"triton"``, ``"torch"``
            or ``"cpp"`` (the fused C++ CPU implementation, built on first use); the
            environment variable ``SJ_GLIF_IMPLEMENTATION`` (same values), when set to
            anything but ``auto``, overrides it.
        surrogate_function: the surrogate in use; ``None`` means a fused one.

    Returns:
        ``(name, reason)`` with name one of ``"triton"``, ``"cpp"``, ``"torch"``,
        ``"reference"``.

    Raises:
        ValueError: unknown backend, or ``"triton"``/``"cpp"`` requested where it cannot run
            (for ``"cpp"``: not a CPU tensor, or the build failed; the message says why).

    Example::

        >>> implementation_for("cpu")
        ('cpp', "backend='auto' on cpu: the fused C++ CPU implementation")
    """
    name, why = _choose(torch.device(device), backend, surrogate_function)
    return name, why()


def _choose(
    device: torch.device, backend: str, surrogate_function: object | None
) -> tuple[str, Callable[[], str]]:
    """:func:`implementation_for` with the reason as a function: per call, formatting the
    reason would cost more host time than choosing."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    env = _env_backend()
    if env not in BACKENDS:
        raise ValueError(f"{ENV_VAR} must be one of {BACKENDS}, got {env!r}")
    source = f"backend={backend!r}" if env == "auto" else f"{ENV_VAR}={env}"
    if env != "auto":
        backend = env
    if surrogate_function is not None and fused_surrogate(surrogate_function) is None:
        return (
            "reference",
            lambda: (
                f"{type(surrogate_function).__name__} is not one of the fused surrogates: "
                "autograd through the PyTorch reference"
            ),
        )
    if backend == "torch":
        return "torch", lambda: f"{source}: the PyTorch path"
    if backend == "cpp":
        if device.type != "cpu":
            raise ValueError(f"{source} runs on the CPU, got a tensor on {device}")
        why = _cpp_unavailable()
        if why:
            raise ValueError(f"{source} but the fused C++ CPU implementation is unavailable: {why}")
        return "cpp", lambda: f"{source}: the fused C++ CPU implementation"
    if backend == "triton":
        if not _triton_available():
            raise ValueError(f"{source} but triton is not installed")
        if device.type == "cuda":
            return "triton", lambda: f"{source} on {device}"
        if _interpreter_on():
            return (
                "triton",
                lambda: f"{source} on {device}: Triton interpreter (TRITON_INTERPRET=1)",
            )
        raise ValueError(
            f"{source} needs a CUDA tensor, got one on {device} "
            "(set TRITON_INTERPRET=1 to run the kernels on the CPU, slowly)"
        )
    if device.type == "cuda":
        if _triton_available():
            return "triton", lambda: f"{source} on {device}: fused Triton kernels"
        return "torch", lambda: f"{source} on {device}: triton is not installed, the PyTorch path"
    if device.type == "cpu":
        why = _cpp_unavailable()
        if not why:
            return "cpp", lambda: f"{source} on cpu: the fused C++ CPU implementation"
        return (
            "torch",
            lambda: f"{source} on cpu: the PyTorch path (C++ implementation unavailable: {why})",
        )
    return "torch", lambda: f"{source} on {device.type}: the PyTorch path (Triton runs on CUDA)"


# --------------------------------------------------------------------------- implementations


@functools.cache
def _kernels():
    from .kernels import glif  # noqa: PLC0415  (imports triton; only when used)

    return glif


@functools.cache
def _triton_bwd_recomputes_u() -> bool:
    """Whether the Triton backward recomputes the membrane (accepts ``u_seq=None``)."""
    return bool(getattr(_kernels(), "BWD_RECOMPUTES_U", False))


def _fwd_impl(x, v0, s0, alpha, beta, gamma, tau, v_threshold, linear_decay, v_subreset,
              conduct, t0, channel_dim, gate_mode, surrogate_id, sg_alpha, detach_reset,
              store_u, impl):  # fmt: skip
    """The forward of every fused implementation: ``(spike_seq, v_last, s_last, u_seq)``.
    ``v0``/``s0`` None mean a zero state; ``u_seq`` is None without ``store_u`` (nothing
    allocated: only the custom op, whose schema has no optional outputs, makes an empty
    placeholder of it)."""
    args = (x, v0, s0, alpha, beta, gamma, tau, v_threshold, linear_decay, v_subreset, conduct)
    if impl == "triton":
        # one launch; s_last (compute dtype) is written by the kernel, so that its gradient
        # reaches the backward unrounded by a 16-bit spike dtype
        return _kernels().glif_fwd(
            *args, t0=t0, channel_dim=channel_dim, gate_mode=gate_mode, store_u=store_u
        )
    if impl == "cpp":
        return cpu.cpp_fwd(*args, t0, channel_dim, gate_mode, store_u)
    return torch_fwd(*args, t0, channel_dim, gate_mode, store_u)


def _bwd_impl(grad_spike, grad_v_last, grad_s_last, grad_u_seq, x, v0, s0, u_seq, alpha, beta,
              gamma, tau, v_threshold, linear_decay, v_subreset, conduct, t0, channel_dim,
              gate_mode, surrogate_id, sg_alpha, detach_reset, impl):  # fmt: skip
    """The backward of every fused implementation: the 11 input gradients ``(dx, dv0,
    ds0, d_alpha … d_v_subreset, d_conduct)``; a None incoming gradient is zero. ``dv0``
    / ``ds0`` are None where ``v0`` / ``s0`` is None: a zero state has no gradient, and no
    implementation computes one (the custom op turns them into empty placeholders)."""
    params = (alpha, beta, gamma, tau, v_threshold, linear_decay, v_subreset, conduct)
    if impl == "triton":
        # two launches; every gradient is a tensor of its own (outputs may not alias). A
        # membrane stream not stored (None, or the op's empty placeholder) is recomputed.
        stored = u_seq if u_seq is not None and u_seq.numel() > 0 else None
        out = _kernels().glif_bwd(
            grad_spike, grad_v_last, grad_s_last, grad_u_seq, x, v0, s0, stored, *params,
            t0=t0, channel_dim=channel_dim, gate_mode=gate_mode, surrogate_id=surrogate_id,
            sg_alpha=sg_alpha, detach_reset=detach_reset,
        )  # fmt: skip
    elif impl == "cpp":
        out = cpu.cpp_bwd(grad_spike, grad_v_last, grad_s_last, grad_u_seq, x, v0, s0, u_seq,
                          *params, t0, channel_dim, gate_mode, surrogate_id, sg_alpha,
                          detach_reset)  # fmt: skip
    else:
        out = torch_bwd(grad_spike, grad_v_last, grad_s_last, grad_u_seq, x, v0, s0, u_seq,
                         *params, t0, channel_dim, gate_mode, surrogate_id, sg_alpha,
                         detach_reset)  # fmt: skip
    return list(out)


# --------------------------------------------------------------------------- torch.library


def _placeholder(t: Tensor | None, x: Tensor) -> Tensor:
    """``t``, or for an output that does not exist (None) an empty tensor in the compute
    dtype: the ops' schemas have no optional outputs."""
    return x.new_empty(0, dtype=compute_dtype(x.dtype)) if t is None else t


@torch.library.custom_op("sj_glif::glif_fwd", mutates_args=())
def _glif_fwd_op(
    x: Tensor,
    v0: Tensor | None,
    s0: Tensor | None,
    alpha: Tensor,
    beta: Tensor,
    gamma: Tensor,
    tau: Tensor,
    v_threshold: Tensor,
    linear_decay: Tensor,
    v_subreset: Tensor,
    conduct: Tensor,
    t0: int,
    channel_dim: int,
    gate_mode: int,
    surrogate_id: int,
    sg_alpha: float,
    detach_reset: bool,
    store_u: bool,
    impl: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    spike_seq, v_last, s_last, u_seq = _fwd_impl(
        x, v0, s0, alpha, beta, gamma, tau, v_threshold, linear_decay, v_subreset, conduct,
        t0, channel_dim, gate_mode, surrogate_id, sg_alpha, detach_reset, store_u, impl,
    )  # fmt: skip
    return spike_seq, v_last, s_last, _placeholder(u_seq, x)


@_glif_fwd_op.register_fake
def _(x, v0, s0, alpha, beta, gamma, tau, v_threshold, linear_decay, v_subreset, conduct, t0,
      channel_dim, gate_mode, surrogate_id, sg_alpha, detach_reset, store_u, impl):  # fmt: skip
    cdt = compute_dtype(x.dtype)
    u_seq = x.new_empty(x.shape, dtype=cdt) if store_u else x.new_empty(0, dtype=cdt)
    spike_seq = torch.empty_like(x, memory_format=torch.contiguous_format)
    state = [x.new_empty(x.shape[1:], dtype=cdt) for _ in range(2)]
    return spike_seq, *state, u_seq


@torch.library.custom_op("sj_glif::glif_bwd", mutates_args=())
def _glif_bwd_op(
    grad_spike: Tensor | None,
    grad_v_last: Tensor | None,
    grad_s_last: Tensor | None,
    grad_u_seq: Tensor | None,
    x: Tensor,
    v0: Tensor | None,
    s0: Tensor | None,
    u_seq: Tensor | None,
    alpha: Tensor,
    beta: Tensor,
    gamma: Tensor,
    tau: Tensor,
    v_threshold: Tensor,
    linear_decay: Tensor,
    v_subreset: Tensor,
    conduct: Tensor,
    t0: int,
    channel_dim: int,
    gate_mode: int,
    surrogate_id: int,
    sg_alpha: float,
    detach_reset: bool,
    impl: str,
) -> list[Tensor]:
    grads = _bwd_impl(grad_spike, grad_v_last, grad_s_last, grad_u_seq, x, v0, s0, u_seq,
                      alpha, beta, gamma, tau, v_threshold, linear_decay, v_subreset, conduct,
                      t0, channel_dim, gate_mode, surrogate_id, sg_alpha, detach_reset,
                      impl)  # fmt: skip
    grads[1], grads[2] = _placeholder(grads[1], x), _placeholder(grads[2], x)
    return grads


@_glif_bwd_op.register_fake
def _(grad_spike, grad_v_last, grad_s_last, grad_u_seq, x, v0, s0, u_seq, alpha, beta, gamma, tau,
      v_threshold, linear_decay, v_subreset, conduct, t0, channel_dim, gate_mode, surrogate_id,
      sg_alpha, detach_reset, impl):  # fmt: skip
    params = (alpha, beta, gamma, tau, v_threshold, linear_decay, v_subreset, conduct)
    cdt = compute_dtype(x.dtype)  # both implementations return contiguous state gradients
    step = [x.new_empty(x.shape[1:] if st is not None else 0, dtype=cdt) for st in (v0, s0)]
    dx = torch.empty_like(x, memory_format=torch.contiguous_format)
    return [dx, *step] + [torch.empty_like(p) for p in params]


# --------------------------------------------------------------------------- autograd

_GATE_NAMES = {0: "soft", 1: "hard", 2: "coarse"}  # kernel id -> reference gate_mode
_N_FLAGS = 8  # t0, channel_dim, gate_mode, surrogate_id, sg_alpha, detach_reset, store_u, impl


def _backward_core(saved, flags, grads, bwd):
    """The 11 input gradients of the fused forward, from its saved tensors ``(x, v0, s0,
    u_seq, *8 params)``, its flags and the 4 incoming gradients; ``bwd`` is the fused
    backward (the op under ``torch.compile``, the plain function in eager mode)."""
    x, v0, s0, u_seq, *params = saved
    t0, cd, gate_mode, sid, sg_alpha, detach, store_u, impl = flags
    grad_spike, grad_v_last, grad_s_last, grad_u_seq = grads
    if not store_u:  # the membrane output is None (the op's empty placeholder): no gradient
        grad_u_seq = None
    if torch.is_grad_enabled() and not torch.compiler.is_compiling():
        # backward(create_graph=True): a backward that is itself differentiable
        return _reference_backward(x, v0, s0, params, flags, grad_spike, grad_v_last,
                                   grad_s_last, grad_u_seq)  # fmt: skip
    if impl == "triton" and not store_u:
        if not _triton_bwd_recomputes_u():
            raise RuntimeError(
                "sj_glif::glif_fwd ran the Triton kernels with store_u=False, which keeps no "
                "membrane for backward; call glif_multi_step (it sets store_u when needed)"
            )
        u_seq = None
    grads = bwd(grad_spike, grad_v_last, grad_s_last, grad_u_seq, x, v0, s0, u_seq, *params,
                t0, cd, gate_mode, sid, sg_alpha, detach, impl)  # fmt: skip
    # a zero state given as None has no gradient (the op returns placeholders for it)
    if v0 is None:
        grads[1] = None
    if s0 is None:
        grads[2] = None
    return grads


def _reference_backward(x, v0, s0, params, flags, *grads):
    """Input gradients with a graph (for double backward): autograd through the
    reference, recomputed from the saved inputs, with the fused surrogate's formula."""
    t0, cd, gate_mode, sid, sg_alpha, detach = flags[:6]
    inputs = [x, v0, s0, *params]
    wrt = [i for i, t in enumerate(inputs) if t is not None and t.requires_grad]
    result: list[Tensor | None] = [None] * len(inputs)
    outs = [(o, g) for o, g in zip(range(4), grads, strict=True) if g is not None]
    if not wrt or not outs:
        return result
    zero = x.new_zeros((), dtype=compute_dtype(x.dtype))
    with torch.enable_grad():
        spike_seq, v_seq, v_last, s_last = glif_reference(
            x, zero if v0 is None else v0, zero if s0 is None else s0, *params,
            surrogate_function=lambda z: _SurrogateSpike.apply(z, sid, sg_alpha),
            t0=t0, channel_dim=cd, gate_mode=_GATE_NAMES[gate_mode], detach_reset=detach,
        )  # fmt: skip
    produced = (spike_seq, v_last, s_last, v_seq)
    got = torch.autograd.grad(
        [produced[o] for o, _ in outs],
        [inputs[i] for i in wrt],
        [g for _, g in outs],
        create_graph=True,
        allow_unused=True,
    )
    for i, g in zip(wrt, got, strict=True):
        result[i] = g
    return result


def _setup_context(ctx, inputs, output):
    x, v0, s0, *params = inputs[:-_N_FLAGS]
    ctx.save_for_backward(x, v0, s0, output[3], *params)
    ctx.flags = tuple(inputs[-_N_FLAGS:])
    ctx.set_materialize_grads(False)


def _op_backward(ctx, grad_spike, grad_v_last, grad_s_last, grad_u_seq):
    incoming = (grad_spike, grad_v_last, grad_s_last, grad_u_seq)
    grads = _backward_core(ctx.saved_tensors, ctx.flags, incoming, _glif_bwd_op)
    return (*grads, *(None,) * _N_FLAGS)


_glif_fwd_op.register_autograd(_op_backward, setup_context=_setup_context)


class _GLIFFunction(torch.autograd.Function):
    """The eager-mode twin of ``sj_glif::glif_fwd`` with its autograd: the same
    implementations without the custom-op boundary, which costs more host time than
    the rest of a step (``bench/host_overhead.py``). ``torch.compile`` uses the op."""

    # the flags travel as one tuple argument: each argument of apply costs host time
    @staticmethod
    def forward(ctx, x, v0, s0, alpha, beta, gamma, tau, v_threshold, linear_decay, v_subreset,
                conduct, flags):  # fmt: skip
        args = (x, v0, s0, alpha, beta, gamma, tau, v_threshold, linear_decay, v_subreset, conduct)
        out = _fwd_impl(*args, *flags)
        ctx.save_for_backward(x, v0, s0, out[3], alpha, beta, gamma, tau, v_threshold,
                              linear_decay, v_subreset, conduct)  # fmt: skip
        ctx.flags = flags
        ctx.set_materialize_grads(False)
        return tuple(out)

    @staticmethod
    def backward(ctx, grad_spike, grad_v_last, grad_s_last, grad_u_seq):
        incoming = (grad_spike, grad_v_last, grad_s_last, grad_u_seq)
        grads = _backward_core(ctx.saved_tensors, ctx.flags, incoming, _bwd_impl)
        return (*grads, None)


class _SurrogateSpike(torch.autograd.Function):
    """``H(z)`` with a fused surrogate's derivative, for every autograd mode: backward
    (itself differentiable), forward mode (``jvp``) and ``torch.func`` transforms."""

    generate_vmap_rule = True

    @staticmethod
    def forward(z: Tensor, sid: int, alpha: float) -> Tensor:
        return (z >= 0).to(z.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, ctx.sid, ctx.alpha = inputs
        ctx.save_for_backward(z)
        ctx.save_for_forward(z)

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        return grad * surrogate_grad(z, ctx.sid, ctx.alpha), None, None

    @staticmethod
    def jvp(ctx, z_t, *_):
        (z,) = ctx.saved_tensors
        return z_t * surrogate_grad(z, ctx.sid, ctx.alpha)


# --------------------------------------------------------------------------- public entry

_warned_surrogates: set[type] = set()


def _warn_unfused(fn: object) -> None:
    if type(fn) in _warned_surrogates:
        return
    _warned_surrogates.add(type(fn))
    warnings.warn(
        f"sj_glif: surrogate {type(fn).__name__} is not one of the fused surrogates "
        "(Sigmoid, ATan, PiecewiseQuadratic, PiecewiseExp, SoftSign, SuperSpike, Erf, Rect "
        "with spiking=True); GLIF runs the PyTorch reference with autograd through it, "
        "which is slower and keeps an autograd graph per step.",
        stacklevel=3,
    )


def _got(value: object) -> str:
    """``type (value)`` for an error message, the value shortened."""
    text = repr(value)
    return f"{type(value).__name__} ({text if len(text) <= 40 else text[:37] + '...'})"


def _as_int(value: object, name: str) -> int:
    """A Python or NumPy integer (not a bool) as an int, else a TypeError naming ``name``."""
    if type(value) is int:
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    raise TypeError(f"{name} must be an int, got {_got(value)}")


def _as_bool(value: object, name: str) -> bool:
    if type(value) is bool:
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    raise TypeError(f"{name} must be a bool (True or False), got {_got(value)}")


def _check_surrogate(fn: object) -> None:
    if isinstance(fn, type):
        raise TypeError(
            f"surrogate_function must be a surrogate instance, e.g. {fn.__name__}(), "
            f"got the class {fn.__name__} itself"
        )
    if not callable(fn):
        raise TypeError(
            f"surrogate_function must be a SpikingJelly surrogate instance such as "
            f"surrogate.Sigmoid(), got {_got(fn)}"
        )


def check_inputs(
    x_seq: Tensor,
    params: dict[str, Tensor | None],
    channel_dim: int,
    t0: int,
    gate_mode: str,
) -> int:
    """Validate a multi-step call; return ``channel_dim`` normalised to a non-negative
    index of one step's shape. Raises TypeError/ValueError saying what was expected."""
    if not isinstance(x_seq, Tensor):
        raise TypeError(f"x_seq must be a torch.Tensor, got {_got(x_seq)}")
    if x_seq.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"GLIF input must be a floating tensor (float16, bfloat16, float32, float64), "
            f"got {x_seq.dtype}"
        )
    channel_dim = _as_int(channel_dim, "channel_dim")
    t0 = _as_int(t0, "t0")
    if type(gate_mode) is not str:
        raise TypeError(f"gate_mode must be a str, one of {GATE_MODES}, got {_got(gate_mode)}")
    if gate_mode not in GATE_MODES:
        raise ValueError(f"gate_mode must be one of {GATE_MODES}, got {gate_mode!r}")
    if x_seq.dim() < 2:
        raise ValueError(
            f"x_seq must be [T, *step_shape] with at least one step dimension, "
            f"got shape {tuple(x_seq.shape)}"
        )
    if x_seq.shape[0] == 0:
        raise ValueError("x_seq has no time steps (shape[0] == 0); expected T >= 1")
    step_nd = x_seq.dim() - 1
    if not -step_nd <= channel_dim < step_nd:
        raise ValueError(
            f"channel_dim={channel_dim} is out of range for a step of shape "
            f"{tuple(x_seq.shape[1:])} (expected {-step_nd} <= channel_dim < {step_nd})"
        )
    cd = channel_dim % step_nd
    device = x_seq.device
    for name, p in params.items():
        if p is None:
            if gate_mode != "coarse":
                raise ValueError(f"parameter {name} is required for gate_mode={gate_mode!r}")
        elif not isinstance(p, Tensor):
            raise TypeError(
                f"parameter {name} must be a floating torch.Tensor ([C] or [], conduct "
                f"[T_rows, C] or [T_rows]), got {_got(p)}"
            )
        elif not p.is_floating_point():
            raise TypeError(f"parameter {name} must be a floating torch.Tensor, got {p.dtype}")
        elif p.device != device:
            raise ValueError(
                f"parameter {name} is on {p.device} but the input is on {device}; "
                "move the module (or the input) so both are on one device"
            )
    tau = params["tau"]
    layerwise = tau.dim() == 0
    want = () if layerwise else tau.shape
    for name, p in params.items():
        if p is None:
            continue
        if name == "conduct":
            if p.dim() != len(want) + 1 or p.shape[1:] != want:
                expected = "[T_rows]" if layerwise else f"[T_rows, {want[0]}]"
                raise ValueError(f"conduct must have shape {expected}, got {list(p.shape)}")
        elif p.shape != want:
            raise ValueError(
                f"parameter {name} must have shape {list(want)} like tau, got {list(p.shape)}"
            )
    if not layerwise and x_seq.shape[1 + cd] != want[0]:
        raise ValueError(
            f"expected {want[0]} channels at channel_dim={channel_dim} of the step shape, got "
            f"input of shape {tuple(x_seq.shape)} ({x_seq.shape[1 + cd]} there)"
        )
    rows = params["conduct"].shape[0]
    T = x_seq.shape[0]
    if t0 < 0 or t0 + T > rows:
        raise ValueError(
            f"this call covers time steps {t0}..{t0 + T - 1} but conduct has {rows} rows "
            f"(T={rows}); call reset() between sequences or build the neuron with a larger T"
        )
    return cd


def _autograd_mode(tensors: tuple[Tensor | None, ...]) -> str | None:
    """``"forward"`` when forward-mode AD is live (a dual input, ``torch.func.jvp``,
    ``jacfwd``), ``"functorch"`` under another ``torch.func`` transform, else None."""
    if fwAD._current_level >= 0 and any(
        t is not None and fwAD.unpack_dual(t).tangent is not None for t in tensors
    ):
        return "forward"
    if torch._C._are_functorch_transforms_active():
        return "forward" if fwAD._current_level >= 0 else "functorch"
    return None


def glif_multi_step(
    x_seq: Tensor,
    v0: Tensor | float = 0.0,
    s0: Tensor | float = 0.0,
    *,
    alpha: Tensor | None,
    beta: Tensor | None,
    gamma: Tensor | None,
    tau: Tensor,
    v_threshold: Tensor,
    linear_decay: Tensor,
    v_subreset: Tensor,
    conduct: Tensor,
    t0: int = 0,
    channel_dim: int = 1,
    gate_mode: str = "soft",
    surrogate_function: object | None = None,
    detach_reset: bool = False,
    store_v_seq: bool = False,
    backend: str = "auto",
) -> GLIFOutput:
    """Run GLIF over a sequence: the functional multi-step entry.

    Args:
        x_seq: input current ``[T, *step_shape]``; float16/bfloat16/float32/float64.
        v0: initial membrane, ``step_shape`` tensor (a ``[]`` one is broadcast) or a
            number (default 0.0; zero costs no tensor).
        s0: previous spike before step 0, like ``v0`` (default 0.0).
        alpha, beta, gamma: raw gates ``[C]`` (channel-wise) or ``[]`` (layer-wise);
            ignored (may be None) for ``gate_mode="coarse"``.
        tau, v_threshold, linear_decay, v_subreset: raw membrane parameters, same shape.
        conduct: raw conductance ``[T_rows, C]`` or ``[T_rows]``; step ``t`` uses row ``t0+t``.
        t0: first row of ``conduct`` to use (default 0; an int, NumPy integers too);
            ``t0 + T`` must not exceed ``T_rows``.
        channel_dim: channel axis of one step's tensor (default 1: ``[B, C, ...]``; -1 for
            ``[B, N, C]``); an int.
        gate_mode: ``"soft"`` (default), ``"hard"``, ``"static_soft"``, ``"static_hard"``, or
            ``"coarse"`` (GLIF_f).
        surrogate_function: a SpikingJelly surrogate instance (default ``surrogate.Sigmoid()``).
        detach_reset: detach the previous spike in both reset terms (default False).
        store_v_seq: also return the membrane sequence (default False).
        backend: ``"auto"`` (default), ``"triton"``, ``"cpp"`` or ``"torch"``; see
            :func:`implementation_for`.

    Returns:
        :class:`GLIFOutput` ``(spike_seq, v_last, s_last, v_seq)``.

    Raises:
        TypeError / ValueError: an argument of the wrong type, shape, device or value; the
            message names it, what was expected and what came.
        NotImplementedError: forward-mode AD with a surrogate that is not fused (see below).

    Autograd modes. A first-order backward (``loss.backward()``, ``torch.autograd.grad``)
    runs the fused backward. Every other mode gives the derivatives of the reference
    (:func:`sj_glif.reference.glif_reference` under plain autograd, the spec), with the
    surrogate's derivative in place of ``dH/dz``; these paths run the reference and keep
    an autograd graph per step, so they are slower:

    - double backward (``torch.autograd.grad(..., create_graph=True)``, then a backward
      through that gradient, e.g. a gradient penalty): supported for every surrogate.
      The backward, asked for a graph, recomputes the sequence through the reference.
      Piecewise-constant surrogates (Rect, PiecewiseQuadratic) have a zero derivative
      almost everywhere, so their second-order terms through the spike are zero, as in
      the reference.
    - ``torch.func`` reverse transforms (``grad``, ``vjp``, ``jacrev``, ``vmap``): supported
      for every surrogate; under a transform the call runs the reference.
    - forward mode (``torch.func.jvp``, ``jacfwd``, ``hessian``, ``torch.autograd.forward_ad``
      dual tensors): supported for the eight fused surrogates; the tangent of a spike is
      ``sg(u - theta)`` times that of ``u - theta``, the Jacobian the backward uses, so
      ``jacfwd`` equals ``jacrev``. Any other surrogate raises NotImplementedError at the
      call: SpikingJelly's surrogates define no forward-mode derivative.

    Example::

        >>> C = 4; raw = torch.zeros(C)
        >>> out = glif_multi_step(torch.rand(3, 2, C), alpha=raw, beta=raw, gamma=raw,
        ...     tau=raw, v_threshold=raw, linear_decay=raw, v_subreset=raw,
        ...     conduct=torch.zeros(3, C))
        >>> out.spike_seq.shape
        torch.Size([3, 2, 4])
    """
    if surrogate_function is None:
        fused: tuple[int, float] | None = _DEFAULT_SURROGATE
    else:
        _check_surrogate(surrogate_function)
        fused = fused_surrogate(surrogate_function)
    detach_reset = _as_bool(detach_reset, "detach_reset")
    store_v_seq = _as_bool(store_v_seq, "store_v_seq")
    params = dict(alpha=alpha, beta=beta, gamma=gamma, tau=tau, v_threshold=v_threshold,
                  linear_decay=linear_decay, v_subreset=v_subreset, conduct=conduct)  # fmt: skip
    cd = check_inputs(x_seq, params, channel_dim, t0, gate_mode)
    t0 = _as_int(t0, "t0")
    # a fused surrogate decides nothing in implementation_for: pass None (no module needed)
    impl = _choose(x_seq.device, backend, None if fused else surrogate_function)[0]
    cdt = compute_dtype(x_seq.dtype)
    step_shape = x_seq.shape[1:]
    v0 = _state(v0, step_shape, cdt, x_seq.device, "v0")
    s0 = _state(s0, step_shape, cdt, x_seq.device, "s0")
    if gate_mode.startswith("static"):
        params.update(alpha=alpha.detach(), beta=beta.detach(), gamma=gamma.detach())

    mode = (
        None if torch.compiler.is_compiling() else _autograd_mode((x_seq, v0, s0, *params.values()))
    )
    if impl == "reference" or mode is not None:
        if mode == "forward":
            if fused is None:
                raise NotImplementedError(
                    f"sj_glif: forward-mode AD (torch.func.jvp, jacfwd, dual tensors) needs one "
                    f"of the fused surrogates; {type(surrogate_function).__name__} defines no "
                    "forward-mode derivative. Use reverse mode (backward, torch.func.grad, "
                    "jacrev) or a fused surrogate such as surrogate.Sigmoid()"
                )
            spike_fn = functools.partial(_surrogate_spike, sid=fused[0], alpha=fused[1])
        elif fused is not None and impl != "reference":
            spike_fn = functools.partial(_surrogate_spike, sid=fused[0], alpha=fused[1])
        else:
            _warn_unfused(surrogate_function)
            spike_fn = surrogate_function
        zero = x_seq.new_zeros((), dtype=cdt)
        spike_seq, v_seq, v_last, s_last = glif_reference(
            x_seq, zero if v0 is None else v0, zero if s0 is None else s0, **params,
            surrogate_function=spike_fn, t0=t0, channel_dim=cd, gate_mode=gate_mode,
            detach_reset=detach_reset,
        )  # fmt: skip
        return GLIFOutput(spike_seq, v_last, s_last, v_seq if store_v_seq else None)

    if gate_mode == "coarse":  # the gates are never read: any tensor of the right shape
        placeholder = params["tau"].detach()
        params.update(alpha=placeholder, beta=placeholder, gamma=placeholder)
    sid, sg_alpha = fused
    needs_grad = torch.is_grad_enabled() and (
        x_seq.requires_grad
        or (v0 is not None and v0.requires_grad)
        or (s0 is not None and s0.requires_grad)
        or any(p.requires_grad for p in params.values())
    )
    # every backward (Triton, C++, PyTorch) recomputes the membrane from the input, so
    # training keeps only x (and a non-zero initial state) alive: the membrane stream is
    # stored only when asked for
    store_u = bool(store_v_seq)
    args = (x_seq, v0, s0, *params.values(), t0, cd, _GATE_IDS[gate_mode], sid, sg_alpha,
            detach_reset, store_u, impl)  # fmt: skip
    if torch.compiler.is_compiling():  # the op: torch.compile sees GLIF as one node
        spike_seq, v_last, s_last, u_seq = _glif_fwd_op(*args)
    elif needs_grad:
        spike_seq, v_last, s_last, u_seq = _GLIFFunction.apply(*args[:11], args[11:])
    else:
        spike_seq, v_last, s_last, u_seq = _fwd_impl(*args)
    return GLIFOutput(spike_seq, v_last, s_last, u_seq if store_v_seq else None)


_DEFAULT_SURROGATE = (0, 4.0)  # surrogate.Sigmoid(): id 0, alpha 4


def _surrogate_spike(z: Tensor, sid: int, alpha: float) -> Tensor:
    return _SurrogateSpike.apply(z, sid, alpha)


def _state(value: object, shape: torch.Size, cdt: torch.dtype, device, name: str) -> Tensor | None:
    """An initial state as a ``shape`` tensor in ``cdt``, or None for a zero number."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    ):
        if value == 0:
            return None
        return torch.full(shape, float(value), dtype=cdt, device=device)
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a tensor or a float, got {_got(value)}")
    if value.device != device:
        raise ValueError(f"{name} is on {value.device} but the input is on {device}")
    if value.shape != shape:
        if value.dim() == 0:
            return value.to(cdt).expand(shape).contiguous()
        raise ValueError(
            f"{name} must have the shape of one step, {tuple(shape)}, got {tuple(value.shape)}"
        )
    return value.to(cdt)
