"""The op boundary: validation, implementation choice, torch.library ops, autograd.

``glif_multi_step`` is the one public functional entry. It runs one of three
implementations of the same math (:mod:`sj_glif.reference`):

- ``"triton"``: the fused kernels of :mod:`sj_glif.kernels.glif` (CUDA; on the CPU
  only under Triton's interpreter, ``TRITON_INTERPRET=1``);
- ``"torch"``: a vectorised PyTorch loop with a hand-written reverse-time backward
  (:mod:`sj_glif.torch_path`); it saves the input for backward and recomputes the
  membrane, not an autograd graph per step;
- ``"reference"``: autograd through the surrogate object, for surrogates that are
  not among the eight fused ones (:mod:`sj_glif.surrogates`). A warning says so.

The first two are one ``torch.library`` op pair, ``sj_glif::glif_fwd`` and
``sj_glif::glif_bwd``, with fake (meta) implementations and registered autograd, so
``torch.compile`` traces through GLIF without a graph break.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from typing import NamedTuple

import torch
from spikingjelly.activation_based import surrogate as sj_surrogate
from torch import Tensor

from . import cpu
from .reference import GATE_MODES, compute_dtype, glif_reference
from .surrogates import fused_surrogate
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


def _triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


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
    device = torch.device(device)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    env = _env_backend()
    if env not in BACKENDS:
        raise ValueError(f"{ENV_VAR} must be one of {BACKENDS}, got {env!r}")
    source = f"backend={backend!r}"
    if env != "auto":
        backend, source = env, f"{ENV_VAR}={env}"
    if surrogate_function is not None and fused_surrogate(surrogate_function) is None:
        return (
            "reference",
            f"{type(surrogate_function).__name__} is not one of the fused surrogates: "
            "autograd through the PyTorch reference",
        )
    if backend == "torch":
        return "torch", f"{source}: the PyTorch path"
    if backend == "cpp":
        if device.type != "cpu":
            raise ValueError(f"{source} runs on the CPU, got a tensor on {device}")
        why = _cpp_unavailable()
        if why:
            raise ValueError(f"{source} but the fused C++ CPU implementation is unavailable: {why}")
        return "cpp", f"{source}: the fused C++ CPU implementation"
    if backend == "triton":
        if not _triton_available():
            raise ValueError(f"{source} but triton is not installed")
        if device.type == "cuda":
            return "triton", f"{source} on {device}"
        if _interpreter_on():
            return "triton", f"{source} on {device}: Triton interpreter (TRITON_INTERPRET=1)"
        raise ValueError(
            f"{source} needs a CUDA tensor, got one on {device} "
            "(set TRITON_INTERPRET=1 to run the kernels on the CPU, slowly)"
        )
    if device.type == "cuda":
        if _triton_available():
            return "triton", f"{source} on {device}: fused Triton kernels"
        return "torch", f"{source} on {device}: triton is not installed, the PyTorch path"
    if device.type == "cpu":
        why = _cpp_unavailable()
        if not why:
            return "cpp", f"{source} on cpu: the fused C++ CPU implementation"
        return "torch", f"{source} on cpu: the PyTorch path (C++ implementation unavailable: {why})"
    return "torch", f"{source} on {device.type}: the PyTorch path (Triton runs on CUDA)"


# --------------------------------------------------------------------------- torch.library


def _kernels():
    from .kernels import glif  # noqa: PLC0415  (imports triton; only when used)

    return glif


@torch.library.custom_op("sj_glif::glif_fwd", mutates_args=())
def _glif_fwd_op(
    x: Tensor,
    v0: Tensor,
    s0: Tensor,
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
    args = (x, v0, s0, alpha, beta, gamma, tau, v_threshold, linear_decay, v_subreset, conduct)
    if impl == "triton":
        spike_seq, v_last, u_seq = _kernels().glif_fwd(
            *args,
            t0=t0,
            channel_dim=channel_dim,
            gate_mode=gate_mode,
            surrogate_id=surrogate_id,
            sg_alpha=sg_alpha,
            store_u=store_u,
        )
        # s_last is an output of its own (compute dtype) so that its gradient reaches the
        # backward unrounded by a 16-bit spike dtype
        s_last = spike_seq[-1].to(compute_dtype(x.dtype), copy=True)
        return spike_seq, v_last, s_last, u_seq
    if impl == "cpp":
        return cpu.cpp_fwd(*args, t0, channel_dim, gate_mode, store_u)
    return torch_fwd(*args, t0, channel_dim, gate_mode, store_u)


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
    grad_spike: Tensor,
    grad_v_last: Tensor | None,
    grad_s_last: Tensor | None,
    grad_u_seq: Tensor | None,
    x: Tensor,
    v0: Tensor,
    s0: Tensor,
    u_seq: Tensor,
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
    params = (alpha, beta, gamma, tau, v_threshold, linear_decay, v_subreset, conduct)
    if impl == "triton":
        out = _kernels().glif_bwd(
            grad_spike,
            grad_v_last,
            grad_u_seq,
            x,
            v0,
            s0,
            u_seq,
            *params,
            grad_s_last=grad_s_last,
            t0=t0,
            channel_dim=channel_dim,
            gate_mode=gate_mode,
            surrogate_id=surrogate_id,
            sg_alpha=sg_alpha,
            detach_reset=detach_reset,
        )
        # the launcher returns the seven [C] gradients as views of one reduced buffer;
        # a custom op's outputs may not alias each other
        out = [*out[:3], *(g.clone() for g in out[3:10]), out[10]]
    elif impl == "cpp":
        out = cpu.cpp_bwd(grad_spike, grad_v_last, grad_s_last, grad_u_seq, x, v0, s0, u_seq,
                          *params, t0, channel_dim, gate_mode, surrogate_id, sg_alpha,
                          detach_reset)  # fmt: skip
    else:
        out = torch_bwd(grad_spike, grad_v_last, grad_s_last, grad_u_seq, x, v0, s0, u_seq,
                         *params, t0, channel_dim, gate_mode, surrogate_id, sg_alpha,
                         detach_reset)  # fmt: skip
    return list(out)


@_glif_bwd_op.register_fake
def _(grad_spike, grad_v_last, grad_s_last, grad_u_seq, x, v0, s0, u_seq, alpha, beta, gamma, tau,
      v_threshold, linear_decay, v_subreset, conduct, t0, channel_dim, gate_mode, surrogate_id,
      sg_alpha, detach_reset, impl):  # fmt: skip
    params = (alpha, beta, gamma, tau, v_threshold, linear_decay, v_subreset, conduct)
    cdt = compute_dtype(x.dtype)  # both implementations return contiguous state gradients
    step = [x.new_empty(x.shape[1:], dtype=cdt) for _ in range(2)]
    dx = torch.empty_like(x, memory_format=torch.contiguous_format)
    return [dx, *step] + [torch.empty_like(p) for p in params]


def _setup_context(ctx, inputs, output):
    (x, v0, s0, *params, t0, channel_dim, gate_mode, sid, sg_alpha, detach, store_u, impl) = inputs
    ctx.save_for_backward(x, v0, s0, output[3], *params)
    ctx.flags = (t0, channel_dim, gate_mode, sid, sg_alpha, detach, impl)
    ctx.stored_u = store_u
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_spike, grad_v_last, grad_s_last, grad_u_seq):
    x, v0, s0, u_seq, *params = ctx.saved_tensors
    if not ctx.stored_u and ctx.flags[-1] == "triton":
        raise RuntimeError(
            "sj_glif::glif_fwd ran the Triton kernels with store_u=False, which keeps no "
            "membrane for backward; call glif_multi_step (it sets store_u when needed)"
        )
    if grad_spike is None:
        grad_spike = torch.zeros_like(x)
    if not ctx.stored_u:  # the membrane output is an empty placeholder: no gradient to it
        grad_u_seq = None
    grads = _glif_bwd_op(grad_spike, grad_v_last, grad_s_last, grad_u_seq, x, v0, s0, u_seq,
                         *params, *ctx.flags)  # fmt: skip
    return (*grads, None, None, None, None, None, None, None, None)


_glif_fwd_op.register_autograd(_backward, setup_context=_setup_context)


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
        raise TypeError(f"x_seq must be a torch.Tensor, got {type(x_seq).__name__}")
    if x_seq.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"GLIF input must be a floating tensor (float16, bfloat16, float32, float64), "
            f"got {x_seq.dtype}"
        )
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
    tau = params["tau"]
    layerwise = tau.dim() == 0
    C = 1 if layerwise else tau.shape[0]
    for name, p in params.items():
        if p is None:
            if gate_mode != "coarse":
                raise ValueError(f"parameter {name} is required for gate_mode={gate_mode!r}")
            continue
        if not isinstance(p, Tensor) or not p.is_floating_point():
            raise TypeError(f"parameter {name} must be a floating torch.Tensor, got {p!r}")
        if p.device != x_seq.device:
            raise ValueError(
                f"parameter {name} is on {p.device} but the input is on {x_seq.device}; "
                "move the module (or the input) so both are on one device"
            )
        want = () if layerwise else (C,)
        if name == "conduct":
            if p.dim() != len(want) + 1 or tuple(p.shape[1:]) != want:
                expected = "[T_rows]" if layerwise else f"[T_rows, {C}]"
                raise ValueError(f"conduct must have shape {expected}, got {list(p.shape)}")
        elif tuple(p.shape) != want:
            raise ValueError(
                f"parameter {name} must have shape {list(want)} like tau, got {list(p.shape)}"
            )
    if not layerwise and x_seq.shape[1 + cd] != C:
        raise ValueError(
            f"expected {C} channels at channel_dim={channel_dim} of the step shape, got input "
            f"of shape {tuple(x_seq.shape)} ({x_seq.shape[1 + cd]} there)"
        )
    rows = params["conduct"].shape[0]
    T = x_seq.shape[0]
    if t0 < 0 or t0 + T > rows:
        raise ValueError(
            f"this call covers time steps {t0}..{t0 + T - 1} but conduct has {rows} rows "
            f"(T={rows}); call reset() between sequences or build the neuron with a larger T"
        )
    return cd


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
        v0: initial membrane, ``step_shape`` tensor or a float (default 0.0).
        s0: previous spike before step 0, ``step_shape`` tensor or a float (default 0.0).
        alpha, beta, gamma: raw gates ``[C]`` (channel-wise) or ``[]`` (layer-wise);
            ignored (may be None) for ``gate_mode="coarse"``.
        tau, v_threshold, linear_decay, v_subreset: raw membrane parameters, same shape.
        conduct: raw conductance ``[T_rows, C]`` or ``[T_rows]``; step ``t`` uses row ``t0+t``.
        t0: first row of ``conduct`` to use (default 0); ``t0 + T`` must not exceed ``T_rows``.
        channel_dim: channel axis of one step's tensor (default 1: ``[B, C, ...]``; -1 for
            ``[B, N, C]``).
        gate_mode: ``"soft"`` (default), ``"hard"``, ``"static_soft"``, ``"static_hard"``, or
            ``"coarse"`` (GLIF_f).
        surrogate_function: a SpikingJelly surrogate (default ``surrogate.Sigmoid()``).
        detach_reset: detach the previous spike in both reset terms (default False).
        store_v_seq: also return the membrane sequence (default False).
        backend: ``"auto"`` (default), ``"triton"`` or ``"torch"``; see :func:`implementation_for`.

    Returns:
        :class:`GLIFOutput` ``(spike_seq, v_last, s_last, v_seq)``.

    Example::

        >>> C = 4; raw = torch.zeros(C)
        >>> out = glif_multi_step(torch.rand(3, 2, C), alpha=raw, beta=raw, gamma=raw,
        ...     tau=raw, v_threshold=raw, linear_decay=raw, v_subreset=raw,
        ...     conduct=torch.zeros(3, C))
        >>> out.spike_seq.shape
        torch.Size([3, 2, 4])
    """
    if surrogate_function is None:
        surrogate_function = sj_surrogate.Sigmoid()
    params = dict(alpha=alpha, beta=beta, gamma=gamma, tau=tau, v_threshold=v_threshold,
                  linear_decay=linear_decay, v_subreset=v_subreset, conduct=conduct)  # fmt: skip
    cd = check_inputs(x_seq, params, channel_dim, t0, gate_mode)
    impl, _ = implementation_for(x_seq.device, backend, surrogate_function)
    cdt = compute_dtype(x_seq.dtype)
    step_shape = x_seq.shape[1:]
    v0 = _state(v0, step_shape, cdt, x_seq.device, "v0")
    s0 = _state(s0, step_shape, cdt, x_seq.device, "s0")
    if gate_mode.startswith("static"):
        params.update(alpha=alpha.detach(), beta=beta.detach(), gamma=gamma.detach())

    if impl == "reference":
        _warn_unfused(surrogate_function)
        spike_seq, v_seq, v_last, s_last = glif_reference(
            x_seq, v0, s0, **params, surrogate_function=surrogate_function, t0=t0,
            channel_dim=cd, gate_mode=gate_mode, detach_reset=detach_reset,
        )  # fmt: skip
        return GLIFOutput(spike_seq, v_last, s_last, v_seq if store_v_seq else None)

    if gate_mode == "coarse":
        placeholder = tau.detach().new_zeros(tau.shape)
        params.update(alpha=placeholder, beta=placeholder, gamma=placeholder)
    sid, sg_alpha = fused_surrogate(surrogate_function)
    needs_grad = torch.is_grad_enabled() and (
        x_seq.requires_grad
        or v0.requires_grad
        or s0.requires_grad
        or any(p.requires_grad for p in params.values())
    )
    # the Triton backward reads the saved membrane stream; the torch backward recomputes
    # it from the input, so training keeps only x (and the initial state) alive
    store_u = bool(store_v_seq or (needs_grad and impl == "triton"))
    spike_seq, v_last, s_last, u_seq = _glif_fwd_op(
        x_seq, v0, s0, *params.values(), t0, cd, _GATE_IDS[gate_mode], sid, sg_alpha,
        detach_reset, store_u, impl,
    )  # fmt: skip
    return GLIFOutput(spike_seq, v_last, s_last, u_seq if store_v_seq else None)


def _state(value: Tensor | float, shape: torch.Size, cdt: torch.dtype, device, name: str) -> Tensor:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.full(shape, float(value), dtype=cdt, device=device)
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a tensor or a float, got {type(value).__name__}")
    if value.device != device:
        raise ValueError(f"{name} is on {value.device} but the input is on {device}")
    if value.shape != shape:
        if value.dim() == 0:
            return value.to(cdt).expand(shape).contiguous()
        raise ValueError(
            f"{name} must have the shape of one step, {tuple(shape)}, got {tuple(value.shape)}"
        )
    return value.to(cdt)
