"""``GLIFNode``: the Gated LIF neuron as a SpikingJelly 2.0 node."""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from spikingjelly.activation_based import neuron, surrogate
from torch import Tensor, nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter, is_lazy

from .compat import EXTRA_NODE_BACKENDS, NodeCompat
from .ops import BACKENDS, check_inputs, glif_multi_step, implementation_for
from .reference import GATE_MODES, compute_dtype

__all__ = ["GLIFNode"]

_PARAMS = ("alpha", "beta", "gamma", "tau", "v_threshold", "linear_decay", "v_subreset", "conduct")
_GATES = ("alpha", "beta", "gamma")
_DIM = {"C": "channels", "T": "T"}  # names in checkpoint-shape messages

# keywords other SpikingJelly neurons take that have no meaning for GLIF, with the reason
_FOREIGN_KWARGS = {
    "v_threshold": "GLIF learns its threshold per channel in (0, 1); use init_v_threshold=",
    "tau": "GLIF learns its decay per channel; use init_tau= (the decay factor in (0, 1))",
    "v_reset": "GLIF's reset is a learned mix of hard and soft reset (gate gamma); "
    "there is no fixed v_reset",
    "decay_input": "GLIF gates its input with the learned conductance (beta, conduct)",
    "inplane": "use channels= (or channel_wise=False for layer-wise GLIF)",
}


def _is_bool(x: object) -> bool:
    """Python and NumPy booleans (``np.bool_`` is not a ``numbers.Integral``, so this is
    the only way it passes the checks below)."""
    return isinstance(x, bool) or (type(x).__module__ == "numpy" and "bool" in type(x).__name__)


def _real(x: object, name: str) -> float:
    """``x`` as a Python float: any real number (Python or NumPy scalar), not a bool."""
    if not isinstance(x, numbers.Real) or _is_bool(x):
        raise TypeError(f"{name} must be a real number, got {x!r} ({type(x).__name__})")
    return float(x)


def _int(x: object, name: str) -> int:
    """``x`` as a Python int: any integer (Python or NumPy scalar), not a bool."""
    if not isinstance(x, numbers.Integral) or _is_bool(x):
        raise TypeError(f"{name} must be an int, got {x!r} ({type(x).__name__})")
    return int(x)


def _flag(x: object, name: str) -> bool:
    if not _is_bool(x):
        raise TypeError(f"{name} must be a bool, got {x!r} ({type(x).__name__})")
    return bool(x)


def _logit(p: object, name: str) -> float:
    p = _real(p, name)
    if not 0.0 < p < 1.0:
        raise ValueError(
            f"{name} is a value after sigmoid and must be a float in (0, 1), got {p!r}"
        )
    return math.log(p / (1.0 - p))


class GLIFNode(LazyModuleMixin, NodeCompat, neuron.BaseNode):
    """Gated LIF neuron (Yao et al., NeurIPS 2022), channel-wise or layer-wise.

    Each time step (``a, b, g`` gates, all effective values ``sigmoid(raw)``)::

        u_t = (1 - a(1 - tau)) u_{t-1} (1 - g s_{t-1}) - (1 - a) V_L
              + (1 - b(1 - k_t)) x_t - (1 - g) V_R s_{t-1}
        s_t = H(u_t - theta)          # H(z) = 1 if z >= 0 (SpikingJelly's convention)

    Use it wherever SpikingJelly takes a neuron class, e.g.
    ``spiking_resnet18(spiking_neuron=GLIFNode, T=4, surrogate_function=surrogate.Rect())``.

    Constructor arguments: see :meth:`__init__` (``help(GLIFNode)`` shows them).

    Shapes: 's' mode input ``[*step]``, 'm' mode ``[T, *step]``; channel at ``channel_dim``
    of the step. Spikes come out in the input dtype; the state (``v``, ``spike``) is
    float32 (float64 for float64 input). Memories: ``v``, ``spike``, ``step``.

    Lazy parameters follow PyTorch's lazy modules: run one forward (or
    :func:`sj_glif.materialize`) before creating the optimizer, compiling, or wrapping
    in DistributedDataParallel (:func:`sj_glif.prepare_ddp`).

    Checkpoints (``load_state_dict``): what the node knows must match, what it does not
    know is adopted. It knows its layout (channel-wise ``[C]`` / ``conduct [T, C]`` or
    layer-wise ``[]`` / ``[T]``) from construction, and ``T`` and ``channels`` once
    given at construction or materialized; a lazy node takes the unknown ones from the
    checkpoint (all its parameters must agree on them), so lazy and materialized nodes
    accept and refuse the same checkpoints. A refusal (``RuntimeError``, also with
    ``strict=False``, as PyTorch does for size mismatches) names the key, the
    checkpoint's shape and the expected one, and leaves the node as it was. Lazy
    parameters the checkpoint lacks (``strict=False``) get their initial values at the
    adopted shapes.

    Bad input raises before anything changes: parameters, ``v``, ``spike`` and ``step``
    stay as they were (a lazy node stays lazy). Defined edge cases: an empty batch
    (``B = 0``) returns empty spikes and advances ``step``; a NaN input gives no spike
    (``NaN >= theta`` is false) and a NaN membrane; ``+inf`` spikes with membrane
    ``+inf``; ``-inf`` gives no spike and membrane ``-inf``. A non-finite membrane
    stays so (NaN, or +-inf with +inf spiking every step) until ``reset()``.

    Example::

        >>> node = GLIFNode(step_mode="m")
        >>> node(torch.rand(4, 2, 8, 5, 5)).shape       # T=4, C=8 inferred
        torch.Size([4, 2, 8, 5, 5])
    """

    cls_to_become = None

    def __init__(
        self,
        T: int | None = None,
        channels: int | None = None,
        *,
        channel_wise: bool = True,
        channel_dim: int = 1,
        init_tau: float = 0.25,
        init_v_threshold: float = 0.5,
        init_linear_decay: float | None = None,
        init_v_subreset: float | None = None,
        init_conduct: float = 0.5,
        init_gate_range: float = 0.1,
        gate_mode: str = "soft",
        surrogate_function: Any = None,
        detach_reset: bool = False,
        step_mode: str = "s",
        store_v_seq: bool = False,
        backend: str = "auto",
        **kwargs: Any,
    ) -> None:
        """Build a GLIF node; ``channels`` and ``T`` may be left to the first input.

        Numbers may be Python or NumPy scalars (stored as Python ``int``/``float``).
        Every argument is checked here: a wrong type raises ``TypeError``, a wrong value
        ``ValueError``, each naming what was expected and what came.

        Args:
            T: number of time steps; ``conduct`` has one row per step. ``None`` (default):
                inferred from the first multi-step input's length ('s' mode requires T).
                Model builders that pass their own ``T`` to the model (Spikformer's)
                must not get it in the neuron's kwargs too (see :mod:`sj_glif.plugins`).
            channels: channel count; ``None`` (default): inferred from the first input.
            channel_wise: per-channel parameters ``[C]`` (default True) or layer-wise ``[]``.
            channel_dim: channel axis of one step's tensor (default 1: ``[B, C, H, W]`` and
                ``[B, C]``; -1 for token layouts ``[B, N, C]``).
            init_tau: initial decay factor tau (default 0.25).
            init_v_threshold: initial threshold theta (default 0.5).
            init_linear_decay: initial V_L (default ``init_v_threshold / (2 T)``).
            init_v_subreset: initial soft-reset amount V_R (default ``init_v_threshold``).
            init_conduct: initial conductance k_t (default 0.5).
            init_gate_range: raw gates are drawn from U(-r, r) (default 0.1, so gates ~ 0.5).
            gate_mode: ``"soft"`` (default), ``"hard"`` (binary gates, straight-through),
                ``"static_soft"``, ``"static_hard"`` (frozen gates), or ``"coarse"`` (GLIF_f:
                no gates).
            surrogate_function: SpikingJelly surrogate (default ``surrogate.Sigmoid()``).
                Sigmoid, ATan, PiecewiseQuadratic, PiecewiseExp, SoftSign, SuperSpike, Erf and
                Rect are fused; any other runs the autograd reference (with a warning).
                Pass an instance (``surrogate.ATan()``), not the class.
            detach_reset: detach the previous spike in the reset terms (default False).
            step_mode: ``"s"`` (default) or ``"m"``.
            store_v_seq: keep the membrane sequence in ``self.v_seq`` (default False).
            backend: ``"auto"`` (default: Triton on CUDA, the fused C++ loop on the CPU),
                ``"triton"``, ``"cpp"`` or ``"torch"``; under SpikingJelly
                0.0.0.0.14 also ``"cupy"``, which means ``"auto"`` (see :mod:`sj_glif.compat`).
        """
        for key in kwargs:
            hint = _FOREIGN_KWARGS.get(key, "not a GLIFNode argument")
            raise TypeError(f"GLIFNode got an unexpected keyword argument {key!r}: {hint}")
        if T is not None:
            T = _int(T, "T")
            if T < 1:
                raise ValueError(f"T must be a positive int or None, got {T}")
        if channels is not None:
            channels = _int(channels, "channels")
            if channels < 1:
                raise ValueError(f"channels must be a positive int or None, got {channels}")
        channel_wise = _flag(channel_wise, "channel_wise")
        channel_dim = _int(channel_dim, "channel_dim")
        if not isinstance(gate_mode, str) or gate_mode not in GATE_MODES:
            raise ValueError(f"gate_mode must be one of {GATE_MODES}, got {gate_mode!r}")
        if not isinstance(backend, str) or backend not in (*BACKENDS, *EXTRA_NODE_BACKENDS):
            raise ValueError(
                f"backend must be one of {(*BACKENDS, *EXTRA_NODE_BACKENDS)}, got {backend!r}"
            )
        detach_reset = _flag(detach_reset, "detach_reset")
        store_v_seq = _flag(store_v_seq, "store_v_seq")
        if not isinstance(step_mode, str) or step_mode not in ("s", "m"):
            raise ValueError(f"step_mode must be 's' or 'm', got {step_mode!r}")
        if isinstance(surrogate_function, type):
            raise TypeError(
                f"surrogate_function must be a surrogate instance, e.g. "
                f"surrogate.{surrogate_function.__name__}(), got the class "
                f"{surrogate_function.__name__} itself"
            )
        if surrogate_function is not None and not callable(surrogate_function):
            raise TypeError(
                "surrogate_function must be a SpikingJelly surrogate instance such as "
                f"surrogate.Sigmoid(), got {surrogate_function!r}"
            )
        init_gate_range = _real(init_gate_range, "init_gate_range")
        if not 0.0 <= init_gate_range < math.inf:
            raise ValueError(f"init_gate_range must be a finite float >= 0, got {init_gate_range}")
        raw_init = {
            "tau": _logit(init_tau, "init_tau"),
            "v_threshold": _logit(init_v_threshold, "init_v_threshold"),
            "v_subreset": _logit(
                init_v_threshold if init_v_subreset is None else init_v_subreset,
                "init_v_subreset",
            ),
            "conduct": _logit(init_conduct, "init_conduct"),
        }
        if init_linear_decay is not None:
            raw_init["linear_decay"] = _logit(init_linear_decay, "init_linear_decay")
        super().__init__(
            v_threshold=1.0,  # BaseNode wants a float; replaced by the learnable parameter
            v_reset=None,
            surrogate_function=surrogate.Sigmoid() if surrogate_function is None
            else surrogate_function,
            detach_reset=detach_reset,
            step_mode=step_mode,
            store_v_seq=store_v_seq,
        )  # fmt: skip
        del self.v_threshold
        self.register_memory("spike", 0.0)
        self.register_memory("step", 0)
        self.channel_wise = channel_wise
        self.channel_dim = channel_dim
        self.gate_mode = gate_mode
        self.backend = backend
        self.init_gate_range = init_gate_range
        self._init_v_threshold = _real(init_v_threshold, "init_v_threshold")
        self._raw_init = raw_init
        self._T = T
        self._channels = channels if channel_wise else None

        for name in _PARAMS:
            if gate_mode == "coarse" and name in _GATES:
                self.register_parameter(name, None)
                continue
            frozen = gate_mode.startswith("static") and name in _GATES
            self.register_parameter(name, UninitializedParameter(requires_grad=not frozen))
        self._materialize(channels=self._channels, T=T)

    # ------------------------------------------------------------------ shapes

    @property
    def T(self) -> int | None:
        """Time steps (rows of ``conduct``), or None until known."""
        return self._T if is_lazy(self.conduct) else self.conduct.shape[0]

    @property
    def channels(self) -> int | None:
        """Channel count (None if layer-wise or not yet known)."""
        if not self.channel_wise:
            return None
        return self._channels if is_lazy(self.tau) else self.tau.shape[0]

    def _materialize(self, channels: int | None, T: int | None) -> None:
        """Materialize whichever lazy parameters ``channels`` and ``T`` determine."""
        if self.channel_wise and channels is None:
            return
        cshape = (channels,) if self.channel_wise else ()
        # never inference tensors: a first call under torch.inference_mode() must not
        # leave parameters that autograd can never use again
        with torch.inference_mode(False), torch.no_grad():
            for name in _PARAMS:
                p = getattr(self, name)
                if p is None or not is_lazy(p):
                    continue
                if name == "conduct" or (name == "linear_decay" and name not in self._raw_init):
                    if T is None:
                        continue
                if name == "conduct":
                    p.materialize((T, *cshape))
                else:
                    p.materialize(cshape)
                if name in _GATES:
                    p.uniform_(-self.init_gate_range, self.init_gate_range)
                elif name == "linear_decay" and name not in self._raw_init:
                    p.fill_(_logit(self._init_v_threshold / (2 * T), "init_linear_decay"))
                else:
                    p.fill_(self._raw_init[name])

    def _check_input(self, x: Tensor, step_mode: str) -> None:
        """Checks done before lazy initialisation, so a bad first call changes nothing."""
        if not isinstance(x, Tensor):
            raise TypeError(f"GLIFNode input must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(
                "GLIFNode input must be a floating tensor (float16, bfloat16, float32, "
                f"float64), got {x.dtype}"
            )
        if step_mode == "m" and x.dim() >= 1 and x.shape[0] == 0:
            raise ValueError(
                f"GLIFNode got a sequence with no time steps (shape {tuple(x.shape)}); "
                "expected [T, *step] with T >= 1"
            )
        step_nd = x.dim() - (1 if step_mode == "m" else 0)
        if step_nd < 1:
            want = "[T, *step]" if step_mode == "m" else "[*step]"
            raise ValueError(
                f"GLIFNode in step_mode={step_mode!r} expects {want} with at least one step "
                f"dimension, got shape {tuple(x.shape)}"
            )
        if self.channel_wise and not -step_nd <= self.channel_dim < step_nd:
            raise ValueError(
                f"channel_dim={self.channel_dim} is out of range for a step of shape "
                f"{tuple(x.shape[x.dim() - step_nd :])} "
                f"(expected {-step_nd} <= channel_dim < {step_nd})"
            )
        # the channel count is checked before the state's shape: the clearer error (an
        # isinstance test, not self.channels, so that torch.compile traces it; tau read from
        # _parameters: nn.Module.__getattr__ is slow per step)
        tau = self._parameters["tau"]
        if self.channel_wise and not isinstance(tau, UninitializedParameter):
            channels = tau.shape[0]
            got = x.shape[x.dim() - step_nd + self.channel_dim % step_nd]
            if got != channels:
                raise ValueError(
                    f"GLIFNode expected {channels} channels at channel_dim={self.channel_dim} "
                    f"of the step shape, got input of shape {tuple(x.shape)} ({got} there)"
                )

    def initialize_parameters(self, x: Tensor, *args: Any, **kwargs: Any) -> None:
        """Lazy-module hook: infer ``channels`` and ``T`` from the first input."""
        if not self.has_uninitialized_params():
            return
        mode = self.step_mode
        self._check_input(x, mode)
        step = x[0] if mode == "m" else x
        channels = self.channels
        if self.channel_wise and channels is None:
            channels = step.shape[self.channel_dim]
            if channels == 0:
                raise ValueError(
                    f"GLIFNode cannot infer its channel count from an input with 0 channels "
                    f"at channel_dim={self.channel_dim} (shape {tuple(x.shape)}); expected at "
                    "least 1 channel there"
                )
        T = self.T
        if T is None:
            if mode != "m":
                raise ValueError(
                    "GLIFNode in single-step mode needs T (the number of time steps) at "
                    "construction, e.g. GLIFNode(T=4); only multi-step mode infers it"
                )
            T = x.shape[0]
        lazy = [n for n, p in self._parameters.items() if p is not None and is_lazy(p)]
        self._materialize(channels=channels, T=T)
        try:  # validate this first call now, so that a call that fails leaves the node lazy
            check_inputs(
                x if mode == "m" else x.unsqueeze(0),
                self.params(),
                self.channel_dim if self.channel_wise else 0,
                0,
                self.gate_mode,
            )
            implementation_for(x.device, self.backend, self.surrogate_function)
        except Exception:
            self._unmaterialize(lazy)
            raise

    def _unmaterialize(self, names: list[str]) -> None:
        """Make the parameters ``names`` lazy again (undo a materialization whose forward
        failed), re-arming PyTorch's lazy-module hooks if they were already removed."""
        for name in names:
            p = self._parameters[name]
            with torch.inference_mode(False):
                lazy = UninitializedParameter(p.requires_grad, p.device, p.dtype)
            self._parameters[name] = lazy
        if names and not hasattr(self, "_initialize_hook"):
            self._load_hook = self._register_load_state_dict_pre_hook(self._lazy_load_hook)
            self._initialize_hook = self.register_forward_pre_hook(
                self._infer_parameters, with_kwargs=True
            )

    def has_uninitialized_params(self) -> bool:
        """Whether any parameter is still lazy (an ``isinstance`` test, which
        ``torch.compile`` traces; PyTorch's version calls ``is_lazy``, which it cannot)."""
        # (type(p) is ...: isinstance goes through Parameter's Python __instancecheck__)
        return any(type(p) is UninitializedParameter for p in self._parameters.values())

    # ------------------------------------------------------------------ checkpoints

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        """Load this node's part of a checkpoint, after checking its shapes.

        What the node already knows must match the checkpoint: its layout (channel-wise
        ``[C]``, ``conduct [T, C]``, or layer-wise ``[]``, ``conduct [T]``), and ``T`` and
        ``channels`` when they were given at construction or fixed by materializing.
        What it does not know yet is adopted from the checkpoint, so a lazy node and a
        materialized one with the same known shapes accept and refuse the same
        checkpoints. A refusal names the key, the checkpoint's shape and the expected one
        (``load_state_dict`` raises ``RuntimeError`` with it, also with ``strict=False``,
        as PyTorch does for size mismatches) and leaves the node as it was. Keys the
        checkpoint lacks are PyTorch's business (``strict=True`` raises after loading the
        rest, ``strict=False`` reports them); the node's lazy parameters that the
        checkpoint lacks get their initial values at the adopted shapes, so the node is
        never left half lazy with shapes that disagree.
        """
        problem, channels, T = self._checkpoint_shapes(state_dict, prefix)
        if problem is not None:
            error_msgs.append(problem)
            return
        with torch.inference_mode(False):  # lazy parameters materialize as normal tensors
            super()._load_from_state_dict(
                state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                error_msgs,
            )  # fmt: skip
        if self.has_uninitialized_params() and (channels is not None or T is not None):
            if channels is not None and self.channel_wise:
                self._channels = channels
            if T is not None:
                self._T = T
            self._materialize(channels=self.channels, T=self.T)

    def _checkpoint_shapes(
        self, state_dict: dict[str, Any], prefix: str
    ) -> tuple[str | None, int | None, int | None]:
        """``(problem, channels, T)``: a one-line refusal (or None), and the channel count
        and time steps the checkpoint's shapes and this node's known ones agree on."""
        cw = self.channel_wise
        known = {"C": self.channels, "T": self.T}
        found: dict[str, tuple[int, str]] = {}  # "C"/"T" -> (value, key it came from)
        node = f"GLIFNode(T={known['T']}, " + (
            f"channels={known['C']})" if cw else "channel_wise=False)"
        )

        def want(name: str) -> str:
            c = str(found.get("C", (known["C"] or "C",))[0])
            t = str(found.get("T", (known["T"] or "T",))[0])
            if name == "conduct":
                return f"[{t}, {c}]" if cw else f"[{t}]"
            return f"[{c}]" if cw else "[]"

        for name, p in self._parameters.items():
            value = state_dict.get(prefix + name)
            if p is None or not isinstance(value, Tensor) or is_lazy(value):
                continue  # absent, or not a tensor: PyTorch's own checks report it
            key, shape = prefix + name, list(value.shape)
            refusal = f"cannot load {key} of shape {shape} into {node}: expected {want(name)}"
            rank = (2 if cw else 1) if name == "conduct" else (1 if cw else 0)
            if len(shape) != rank:
                if cw and len(shape) == rank - 1:
                    hint = "; the checkpoint is layer-wise: build GLIFNode(channel_wise=False)"
                elif not cw and len(shape) == rank + 1:
                    hint = "; the checkpoint is channel-wise: build GLIFNode(channel_wise=True)"
                else:
                    hint = ""
                layout = "channel-wise" if cw else "layer-wise"
                return f"{refusal} (this node is {layout}){hint}", None, None
            dims = {"T": shape[0]} if name == "conduct" else {}
            if cw:
                dims["C"] = shape[-1]
            for dim, size in dims.items():
                if known[dim] is not None and size != known[dim]:
                    return f"{refusal} ({_DIM[dim]}={known[dim]} is fixed in this node)", None, None
                if dim in found and size != found[dim][0]:
                    source = f"{_DIM[dim]}={found[dim][0]} from {found[dim][1]}"
                    return f"{refusal} ({source} of the same checkpoint)", None, None
                found.setdefault(dim, (size, key))
        channels = found.get("C", (known["C"],))[0]
        T = found.get("T", (known["T"],))[0]
        return None, channels, T

    def reset(self) -> None:
        """SpikingJelly's ``reset``: every memory back to its reset value, ``v_seq`` None.
        When every reset value is a number (the default; immutable, so assigning it is the
        reset) without SpikingJelly's per-key checks and deep copies: one GLIF step costs
        a few microseconds of host time less."""
        memories, values = self._memories, self._memories_rv
        state = self.__dict__
        if "v_seq" in state and all(type(values[k]) in (int, float) for k in memories):
            for key in memories:
                memories[key] = values[key]
            state["v_seq"] = None
            return
        super().reset()

    # ------------------------------------------------------------------ functional contract

    def params(self) -> dict[str, Tensor | None]:
        """The raw parameters by name (gates are None in ``"coarse"`` mode)."""
        ps = self._parameters  # (a dict lookup: nn.Module.__getattr__ is slow per step)
        return {name: ps[name] if name in ps else getattr(self, name) for name in _PARAMS}

    def materialize_states(
        self, inputs: tuple[Tensor, ...], states: tuple[object, ...], step_mode: str
    ) -> tuple[object, ...]:
        x = inputs[0]
        self._check_input(x, step_mode)
        step = x[0] if step_mode == "m" else x
        cdt = compute_dtype(x.dtype)
        v, spike, t = states
        return (
            self._state(v, step, cdt, "v"),
            self._state(spike, step, cdt, "spike"),
            t,
        )

    @staticmethod
    def _state(value: object, step: Tensor, cdt: torch.dtype, name: str) -> Tensor:
        if isinstance(value, (int, float)):
            return torch.full(step.shape, float(value), dtype=cdt, device=step.device)
        if not isinstance(value, Tensor):
            raise TypeError(f"state {name} must be a tensor or a float, got {type(value)}")
        if value.shape != step.shape:
            raise ValueError(
                f"GLIFNode state {name} has shape {tuple(value.shape)} but one input step has "
                f"shape {tuple(step.shape)}; call functional.reset_net(net) between "
                "independent batches"
            )
        return value.to(device=step.device, dtype=cdt)

    def _run(self, x_seq: Tensor, states: tuple[object, ...], store_v_seq: bool):
        if self.has_uninitialized_params():
            raise RuntimeError(
                "GLIFNode has lazy parameters that are not materialized yet: call the module "
                "once (or sj_glif.materialize(model, example_input)) before functional use"
            )
        v, spike, t = states
        # a surrogate module is read from _modules: nn.Module.__getattr__ is slow per step
        sg = self._modules.get("surrogate_function")
        out = glif_multi_step(
            x_seq,
            v,
            spike,
            **self.params(),
            t0=int(t),
            channel_dim=self.channel_dim if self.channel_wise else 0,
            gate_mode=self.gate_mode,
            surrogate_function=self.surrogate_function if sg is None else sg,
            detach_reset=self.detach_reset,
            store_v_seq=store_v_seq,
            backend=self.backend,
        )
        s_last = out.s_last
        if s_last._base is not None:  # a view of spike_seq; SpikingJelly's detach()
            s_last = s_last.clone()  # (detach_net, truncated BPTT) detaches memories in place
        return out, (out.v_last, s_last, int(t) + x_seq.shape[0])

    def single_step_functional_forward(
        self, inputs: tuple[Tensor, ...], states: tuple[object, ...], **kwargs: object
    ) -> tuple[tuple[Tensor, ...], tuple[object, ...]]:
        out, new_states = self._run(inputs[0].unsqueeze(0), states, store_v_seq=False)
        return (out.spike_seq[0],), new_states

    def multi_step_functional_forward(
        self, inputs: tuple[Tensor, ...], states: tuple[object, ...], **kwargs: object
    ) -> tuple[tuple[Tensor, ...], tuple[object, ...]]:
        out, new_states = self._run(inputs[0], states, store_v_seq=False)
        return (out.spike_seq,), new_states

    def multi_step_forward(self, x_seq: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        self._check_input(x_seq, "m")
        v, spike, t = self._memories.values()
        # a fresh (numeric) state goes to the op as a number: a zero state costs no tensor
        fresh = [isinstance(m, (int, float)) and not isinstance(m, bool) for m in (v, spike)]
        if all(fresh):
            states = (v, spike, t)
        else:
            step, cdt = x_seq[0], compute_dtype(x_seq.dtype)
            states = tuple(
                m if new else self._state(m, step, cdt, name)
                for m, new, name in ((v, fresh[0], "v"), (spike, fresh[1], "spike"))
            ) + (t,)
        out, new_states = self._run(x_seq, states, store_v_seq=self.store_v_seq)
        for name, value in zip(self._memories, new_states, strict=True):
            self._memories[name] = value
        if self.store_v_seq:
            self.v_seq = out.v_seq
        return out.spike_seq

    def extra_repr(self) -> str:
        shape = f"channels={self.channels}" if self.channel_wise else "layer_wise"
        return (
            f"T={self.T}, {shape}, channel_dim={self.channel_dim}, gate_mode={self.gate_mode!r}, "
            f"detach_reset={self.detach_reset}, step_mode={self.step_mode!r}, "
            f"backend={self.backend!r}, surrogate={self.surrogate_function}"
        )

    # ------------------------------------------------------------------ interop

    @classmethod
    def from_gated_lif(cls, node: nn.Module, **kwargs: Any) -> GLIFNode:
        """A GLIFNode with the parameters (copied) and surrogate of SpikingJelly's
        ``GatedLIFNode`` ``node``. ``kwargs`` override GLIFNode arguments (a ``T`` or
        ``channels`` that disagrees with ``node``'s parameters raises ``RuntimeError``
        naming both shapes).

        Raises:
            TypeError: ``node`` is not a SpikingJelly ``GatedLIFNode``.
        """
        gated = getattr(neuron, "GatedLIFNode", None)
        if gated is None or not isinstance(node, gated):
            raise TypeError(
                "from_gated_lif expects a SpikingJelly neuron.GatedLIFNode, got "
                f"{type(node).__name__}; for other neurons use sj_glif.swap_neurons"
            )
        tau = node.tau
        args: dict[str, Any] = dict(
            T=node.T,
            channels=tau.shape[0] if tau.dim() == 1 else None,
            channel_wise=tau.dim() == 1,
            surrogate_function=node.surrogate_function,
            step_mode=node.step_mode,
        )
        args.update(kwargs)
        new = cls(**args)
        new.load_state_dict(node.state_dict())
        return new.to(tau.device)
