"""The eager PyTorch implementation of the GLIF op (CPU, and CUDA without Triton).

A vectorised loop over time with a hand-written reverse-time backward. The forward
runs in place into preallocated step buffers; the backward recomputes the membrane
from the input, so training keeps only ``x`` and the initial state alive (unless the
caller asked for the membrane stream).

``torch_fwd`` / ``torch_bwd`` take and return what the ``sj_glif::glif_fwd`` /
``sj_glif::glif_bwd`` ops of :mod:`sj_glif.ops` do, except that an output that does not
exist (the membranes unless ``store_u``, the gradient of a state given as None) is None
where the ops return an empty tensor.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .reference import channel_view, compute_dtype
from .surrogates import surrogate_grad

__all__ = ["torch_bwd", "torch_fwd"]


def _coefficients(
    alpha: Tensor,
    beta: Tensor,
    gamma: Tensor,
    tau: Tensor,
    v_threshold: Tensor,
    linear_decay: Tensor,
    v_subreset: Tensor,
    conduct_rows: Tensor,
    gate_mode: int,
    cdt: torch.dtype,
) -> dict[str, Tensor]:
    """Per-channel coefficients of ``u = D v (1 - Gh s) - L + K_t x - R s`` and the
    sigmoids the backward chain rule needs. ``conduct_rows`` are the rows in use."""
    sig = {
        n: torch.sigmoid(p.to(cdt))
        for n, p in (
            ("tau", tau),
            ("theta", v_threshold),
            ("vl", linear_decay),
            ("vr", v_subreset),
            ("k", conduct_rows),
        )
    }
    if gate_mode == 2:
        one = torch.ones((), dtype=cdt, device=tau.device)
        c = dict(D=sig["tau"], Gh=one, L=sig["vl"], R=sig["vr"], K=sig["k"])
    else:
        for n, p in (("a", alpha), ("b", beta), ("g", gamma)):
            sig["s" + n] = torch.sigmoid(p.to(cdt))
            sig[n] = (p > 0).to(cdt) if gate_mode == 1 else sig["s" + n]
        a, b, g = sig["a"], sig["b"], sig["g"]
        c = dict(
            D=1 - a * (1 - sig["tau"]),
            Gh=g,
            L=(1 - a) * sig["vl"],
            R=(1 - g) * sig["vr"],
            K=1 - b * (1 - sig["k"]),
        )
    c["GhD"] = c["Gh"] * c["D"]
    c["theta"] = sig["theta"]
    c["sig"] = sig
    return c


def _channel_sum(t: Tensor, cd: int, layerwise: bool) -> Tensor:
    """Sum a step-shaped tensor over every axis but the channel (all axes if layer-wise)."""
    if layerwise:
        return t.sum()
    dims = [d for d in range(t.dim()) if d != cd]
    return t.sum(dims) if dims else t.clone()  # callers reuse t as scratch


_FLOAT_DTYPES = frozenset((torch.float16, torch.bfloat16, torch.float32, torch.float64))
_PARAM_NAMES = ("alpha", "beta", "gamma", "tau", "v_threshold", "linear_decay", "v_subreset")


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def check_op_args(x, v0, s0, params, conduct, t0, channel_dim, gate_mode,
                  like_x=(), like_step=()) -> None:  # fmt: skip
    """Raise ValueError, saying what was expected and what came, unless the raw op
    arguments fit ``x`` ``[T, *step]``: the seven ``params`` ``[C]`` or ``[]`` (tau's
    shape; the gates may be None in coarse mode), ``conduct`` ``[T_rows, C]`` or
    ``[T_rows]`` with rows ``t0 … t0 + T - 1``, ``v0``/``s0`` and the named tensors of
    ``like_step`` one step's shape (None: absent), those of ``like_x`` ``x``'s shape. The
    op is public (``torch.ops.sj_glif``): this path would otherwise broadcast a wrong
    shape silently."""
    if x.dtype not in _FLOAT_DTYPES:
        raise ValueError(
            f"x must be a floating tensor (float16, bfloat16, float32, float64), got {x.dtype}"
        )
    if x.dim() < 2:
        raise ValueError(f"x must be [T, *step_shape], got shape {_shape(x)}")
    nd = x.dim() - 1
    if not -nd <= channel_dim < nd:
        raise ValueError(
            f"channel_dim {channel_dim} is out of range for a step of shape {_shape(x)[1:]}"
        )
    if gate_mode not in (0, 1, 2):
        raise ValueError(f"gate_mode must be 0 (soft), 1 (hard) or 2 (coarse), got {gate_mode}")
    tau = params[3]
    if tau.dim() > 1:
        raise ValueError(f"tau must be [C] or [] (layer-wise), got shape {_shape(tau)}")
    for name, p in zip(_PARAM_NAMES, params, strict=True):
        if p is None:
            if name in ("alpha", "beta", "gamma") and gate_mode == 2:
                continue
            raise ValueError(f"parameter {name} is required for gate_mode {gate_mode}")
        if p.shape != tau.shape:
            raise ValueError(
                f"parameter {name} must have tau's shape {_shape(tau)}, got {_shape(p)}"
            )
    step = x.shape[1:]
    if tau.dim() == 1:
        C, cd = tau.shape[0], channel_dim % nd
        if step[cd] != C:
            raise ValueError(
                f"the parameters have {C} channels but x of shape {_shape(x)} has "
                f"{step[cd]} at channel_dim {channel_dim} of its step"
            )
        if conduct.dim() != 2 or conduct.shape[1] != C:
            raise ValueError(f"conduct must be [T_rows, {C}], got shape {_shape(conduct)}")
    elif conduct.dim() != 1:
        raise ValueError(f"conduct must be [T_rows] (layer-wise), got shape {_shape(conduct)}")
    T = x.shape[0]
    if t0 < 0 or t0 + T > conduct.shape[0]:
        raise ValueError(f"conduct has {conduct.shape[0]} rows, steps {t0}..{t0 + T - 1} requested")
    for name, t in (("v0", v0), ("s0", s0), *like_step):
        if t is not None and t.shape != step:
            raise ValueError(f"{name} must have one step's shape {_shape(x)[1:]}, got {_shape(t)}")
    for name, t in like_x:
        if t is not None and t.shape != x.shape:
            raise ValueError(f"{name} must have the input's shape {_shape(x)}, got {_shape(t)}")


def torch_fwd(x, v0, s0, alpha, beta, gamma, tau, v_threshold, linear_decay, v_subreset,
               conduct, t0, channel_dim, gate_mode, store_u, spikes=True):  # fmt: skip
    """``(spike_seq, v_last, s_last, u_seq)``; ``v0``/``s0`` None are a zero state (its
    terms are skipped at step 0, no zero tensor is made); ``u_seq`` is None without
    ``store_u``, and ``spike_seq`` None without ``spikes`` (the backward's recompute)."""
    if spikes:  # (the backward's recompute: checked there)
        check_op_args(x, v0, s0, (alpha, beta, gamma, tau, v_threshold, linear_decay,
                                  v_subreset), conduct, t0, channel_dim, gate_mode)  # fmt: skip
    # Per step, in place into preallocated step buffers: on the CPU a fresh step-sized
    # tensor per op costs more than the arithmetic (allocator page faults).
    # u = D (1 - Gh s) v - R s + K_t x_t - L
    T, nd, cdt = x.shape[0], x.dim() - 1, compute_dtype(x.dtype)
    c = _coefficients(alpha, beta, gamma, tau, v_threshold, linear_decay, v_subreset,
                      conduct[t0 : t0 + T], gate_mode, cdt)  # fmt: skip
    D, GhD, L, R, theta = (
        channel_view(c[n], nd, channel_dim) for n in ("D", "GhD", "L", "R", "theta")
    )
    spike_seq = torch.empty_like(x, memory_format=torch.contiguous_format) if spikes else None
    u_seq = torch.empty(x.shape, dtype=cdt, device=x.device) if store_u else None
    v = None if v0 is None else v0.to(cdt)
    if s0 is None:
        s = torch.empty(x.shape[1:], dtype=cdt, device=x.device)  # written at step 0
    else:
        s = s0.to(cdt, memory_format=torch.contiguous_format, copy=True)  # v_last contiguous
    decay = torch.empty_like(s)
    neg_l = -L
    pair = None if store_u else (torch.empty_like(s), torch.empty_like(s))
    for t in range(T):
        u = u_seq[t] if store_u else pair[t % 2]
        k_x = (channel_view(c["K"][t], nd, channel_dim), x[t].to(cdt))
        if t == 0 and v0 is None:  # zero membrane: no decay term
            torch.addcmul(neg_l, *k_x, out=u)
            if s0 is not None:
                u.addcmul_(R, s, value=-1)
        elif t == 0 and s0 is None:  # zero previous spike: no reset terms
            torch.addcmul(neg_l, D, v, out=u)
            u.addcmul_(*k_x)
        else:
            torch.addcmul(D, GhD, s, value=-1, out=decay)  # D (1 - Gh s): finite for v = +-inf
            torch.addcmul(neg_l, decay, v, out=u)
            u.addcmul_(R, s, value=-1)
            u.addcmul_(*k_x)
        torch.ge(u, theta, out=s)  # a float out: far cheaper on the CPU than a bool round trip
        if spikes:
            spike_seq[t].copy_(s)
        v = u
    v_last = v.clone() if store_u else v
    return spike_seq, v_last, s, u_seq


def _surrogate_grad_(u: Tensor, theta: Tensor, sid: int, alpha: float, a: Tensor, b: Tensor):
    """``(g, scale)`` with ``sg(u - theta) = scale * g``, computed in the scratch buffers
    ``a``/``b`` with as few passes as possible for the common surrogates."""
    if sid == 0:  # alpha * sig (1 - sig), sig = sigmoid(alpha (u - theta))
        torch.add(theta * -alpha, u, alpha=alpha, out=a).sigmoid_()
        return torch.addcmul(a, a, a, value=-1, out=b), alpha
    torch.sub(u, theta, out=a)
    if sid == 7:  # alpha where |z| < 0.5 / alpha
        return a.abs_().lt_(0.5 / alpha), alpha
    return surrogate_grad(a, sid, alpha), 1.0


def torch_bwd(grad_spike, grad_v_last, grad_s_last, grad_u_seq, x, v0, s0, u_seq, alpha, beta,
               gamma, tau, v_threshold, linear_decay, v_subreset, conduct, t0, channel_dim,
               gate_mode, surrogate_id, sg_alpha, detach_reset):  # fmt: skip
    """The 11 input gradients (see :mod:`sj_glif.ops`); ``v0``/``s0`` None are a zero
    state, ``grad_spike`` (like the other incoming gradients) None is zero, ``u_seq``
    None or empty is recomputed from ``x``."""
    stored = u_seq is not None and u_seq.numel() > 0
    check_op_args(
        x, v0, s0, (alpha, beta, gamma, tau, v_threshold, linear_decay, v_subreset), conduct,
        t0, channel_dim, gate_mode,
        like_x=(("grad_spike", grad_spike), ("grad_u_seq", grad_u_seq),
                ("u_seq", u_seq if stored else None)),
        like_step=(("grad_v_last", grad_v_last), ("grad_s_last", grad_s_last)),
    )  # fmt: skip
    T, nd, cdt = x.shape[0], x.dim() - 1, compute_dtype(x.dtype)
    if not stored:  # the torch path keeps no membrane: recompute it
        params = (alpha, beta, gamma, tau, v_threshold, linear_decay, v_subreset, conduct)
        u_seq = torch_fwd(x, v0, s0, *params, t0, channel_dim, gate_mode, True, False)[3]
    layerwise = tau.dim() == 0
    c = _coefficients(alpha, beta, gamma, tau, v_threshold, linear_decay, v_subreset,
                      conduct[t0 : t0 + T], gate_mode, cdt)  # fmt: skip
    D, GhD, R, theta = (channel_view(c[n], nd, channel_dim) for n in ("D", "GhD", "R", "theta"))
    dx = torch.empty_like(x, memory_format=torch.contiguous_format)

    def buf() -> Tensor:
        return torch.zeros(x.shape[1:], dtype=cdt, device=x.device)

    def csum(a: Tensor) -> Tensor:
        return _channel_sum(a, channel_dim, layerwise)

    # du: dL/du_t (starts as the gradient of the final membrane); gs_neg: -dL/ds_t from
    # the future. Per-channel sums are reduced every step (a reduction only reads its
    # input, cheaper than accumulating elementwise), except acc_ups.
    du = (
        grad_v_last.to(cdt, memory_format=torch.contiguous_format, copy=True)
        if grad_v_last is not None
        else buf()
    )
    gs_neg, sg, ds, dup, tmp, s_prev, acc_ups = (buf() for _ in range(7))
    if grad_s_last is not None:  # the final spike's gradient: dL/ds_{T-1} from the future
        gs_neg.sub_(grad_s_last)
    sums_up, sums_u, sums_us, sums_th, d_k = [], [], [], [], []
    for t in range(T - 1, -1, -1):
        if t > 0:
            u_prev = u_seq[t - 1]
            torch.ge(u_prev, theta, out=s_prev)
        else:
            u_prev = buf() if v0 is None else v0.to(cdt)
            if s0 is None:
                s_prev.zero_()
            else:
                s_prev.copy_(s0)
        g, scale = _surrogate_grad_(u_seq[t], theta, surrogate_id, sg_alpha, sg, tmp)
        if grad_spike is None:
            torch.mul(gs_neg, g, out=ds).neg_()
        else:
            torch.sub(grad_spike[t], gs_neg, out=ds).mul_(g)  # sg * ds / scale
        sums_th.append(csum(ds) * scale)
        du.add_(ds, alpha=scale)  # du = gv + sg * ds
        if grad_u_seq is not None:
            du.add_(grad_u_seq[t])
        torch.mul(du, channel_view(c["K"][t], nd, channel_dim), out=dx[t])
        d_k.append(csum(torch.mul(du, x[t], out=tmp)))
        sums_up.append(csum(torch.mul(du, u_prev, out=dup)))
        acc_ups.addcmul_(dup, s_prev)
        sums_u.append(csum(du))
        sums_us.append(csum(torch.mul(du, s_prev, out=tmp)))
        if detach_reset:
            gs_neg.zero_()
        else:  # -ds_{t-1} = du (Gh D u_prev + R)
            torch.mul(du, R, out=gs_neg)
            gs_neg.addcmul_(dup, GhD)
        # gv_{t-1} = du D (1 - Gh s_prev) = D du - Gh D du s_prev
        du.mul_(D).addcmul_(tmp, GhD, value=-1)

    def total(sums: list[Tensor]) -> Tensor:
        return torch.stack(sums).sum(0)

    s_ups = csum(acc_ups)
    sums = {
        "D": total(sums_up) - c["Gh"] * s_ups,  # sum du u_prev (1 - Gh s_prev)
        "Gh": -c["D"] * s_ups,
        "L": -total(sums_u),
        "R": -total(sums_us),
        "theta": -total(sums_th),
        "K": torch.stack(d_k[::-1]),
    }
    grads = _raw_grads(sums, c, gate_mode)
    d_conduct = torch.zeros_like(conduct)
    d_conduct[t0 : t0 + T] = grads.pop("conduct")
    params = dict(alpha=alpha, beta=beta, gamma=gamma, tau=tau, v_threshold=v_threshold,
                  linear_decay=linear_decay, v_subreset=v_subreset)  # fmt: skip
    out = [grads[n].to(p.dtype) if n in grads else torch.zeros_like(p) for n, p in params.items()]
    # a zero state given as None has no gradient: None
    dv0 = du if v0 is not None else None
    ds0 = gs_neg.neg_() if s0 is not None else None
    return (dx, dv0, ds0, *out, d_conduct)


def _raw_grads(sums: dict[str, Tensor], c: dict, gate_mode: int) -> dict[str, Tensor]:
    """Chain rule from the coefficient gradients (summed per channel) to the raw
    parameters; every effective value is ``sigmoid(raw)`` (hard gates: straight-through)."""
    sig = c["sig"]

    def dsig(v: Tensor) -> Tensor:
        return v * (1 - v)

    g = {"v_threshold": sums["theta"] * dsig(sig["theta"])}
    if gate_mode == 2:
        g["tau"] = sums["D"] * dsig(sig["tau"])
        g["linear_decay"] = sums["L"] * dsig(sig["vl"])
        g["v_subreset"] = sums["R"] * dsig(sig["vr"])
        g["conduct"] = sums["K"] * dsig(sig["k"])
        return g
    a, b, gm = sig["a"], sig["b"], sig["g"]
    g["alpha"] = (-sums["D"] * (1 - sig["tau"]) - sums["L"] * sig["vl"]) * dsig(sig["sa"])
    g["tau"] = sums["D"] * a * dsig(sig["tau"])
    g["linear_decay"] = sums["L"] * (1 - a) * dsig(sig["vl"])
    g["gamma"] = (sums["Gh"] - sums["R"] * sig["vr"]) * dsig(sig["sg"])
    g["v_subreset"] = sums["R"] * (1 - gm) * dsig(sig["vr"])
    g["beta"] = -(sums["K"] * (1 - sig["k"])).sum(0) * dsig(sig["sb"])
    g["conduct"] = sums["K"] * b * dsig(sig["k"])
    return g
