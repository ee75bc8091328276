"""The GLIF neuron in plain PyTorch: the executable form of the spec.

This module is the oracle every test compares against, and the path taken for
surrogate functions that sj-glif does not fuse (autograd through the surrogate
object). It favours readability over speed: one Python loop over time, autograd
for every gradient.

Update rule (``a, b, g`` gates; every effective value is ``sigmoid(raw)``)::

    d_t = 1 - a (1 - tau)
    u_t = d u_{t-1} (1 - g s_{t-1}) - (1 - a) V_L + (1 - b (1 - k_t)) x_t - (1 - g) V_R s_{t-1}
    s_t = H(u_t - theta),   H(z) = 1 if z >= 0 else 0   (SpikingJelly's convention)

GLIF_f ("coarse", no gates)::

    u_t = tau u_{t-1} (1 - s_{t-1}) - V_L + k_t x_t - V_R s_{t-1}
"""

from __future__ import annotations

from collections.abc import Callable

import torch

GATE_MODES = ("soft", "hard", "static_soft", "static_hard", "coarse")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """State/math dtype for an input dtype: float64 stays, everything else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def channel_view(p: torch.Tensor, step_ndim: int, channel_dim: int) -> torch.Tensor:
    """Reshape a ``[C]`` (or ``[]``) parameter so it broadcasts over one step's tensor.

    ``channel_dim`` indexes the step tensor (``[B, C, H, W]`` -> 1, ``[B, N, C]`` -> 2).
    """
    if p.dim() == 0:
        return p
    shape = [1] * step_ndim
    shape[channel_dim] = p.shape[0]
    return p.reshape(shape)


def gate(raw: torch.Tensor, hard: bool) -> torch.Tensor:
    """A gate value from its raw parameter.

    soft: ``sigmoid(raw)``. hard: ``1 if raw > 0 else 0`` in the forward pass, with
    the gradient of ``sigmoid(raw)`` (straight-through estimator).
    """
    soft = torch.sigmoid(raw)
    if not hard:
        return soft
    return soft + ((raw > 0).to(soft.dtype) - soft).detach()


def glif_reference(
    x_seq: torch.Tensor,
    v0: torch.Tensor,
    s0: torch.Tensor,
    alpha: torch.Tensor | None,
    beta: torch.Tensor | None,
    gamma: torch.Tensor | None,
    tau: torch.Tensor,
    v_threshold: torch.Tensor,
    linear_decay: torch.Tensor,
    v_subreset: torch.Tensor,
    conduct: torch.Tensor,
    *,
    surrogate_function: Callable[[torch.Tensor], torch.Tensor],
    t0: int = 0,
    channel_dim: int = 1,
    gate_mode: str = "soft",
    detach_reset: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run GLIF over a sequence with autograd.

    Args:
        x_seq: input ``[T, *step_shape]``, channel at ``channel_dim`` of the step shape.
        v0, s0: initial membrane and previous spike, ``step_shape`` (broadcastable).
        alpha, beta, gamma: raw gates ``[C]`` or ``[]``; unused (may be None) for ``"coarse"``.
        tau, v_threshold, linear_decay, v_subreset: raw membrane parameters ``[C]`` or ``[]``.
        conduct: raw conductance ``[T_rows, C]`` or ``[T_rows]``; step ``t`` uses row ``t0 + t``.
        surrogate_function: a SpikingJelly surrogate (or any ``z -> spike`` callable).
        t0: index of the first step in ``conduct`` (for chunked or single-step use).
        channel_dim: channel axis of one step's tensor (non-negative).
        gate_mode: one of :data:`GATE_MODES`. Static modes detach the gates.
        detach_reset: detach ``s_{t-1}`` in both reset terms.

    Returns:
        ``(spike_seq, v_seq, v_last, s_last)``: spikes ``[T, *step_shape]`` in the input
        dtype, membranes ``u_t`` ``[T, *step_shape]`` and the final state in the compute
        dtype (float32, or float64 for float64 input).
    """
    if gate_mode not in GATE_MODES:
        raise ValueError(f"gate_mode must be one of {GATE_MODES}, got {gate_mode!r}")
    cdt = compute_dtype(x_seq.dtype)
    nd = x_seq.dim() - 1

    def cv(p: torch.Tensor) -> torch.Tensor:
        return channel_view(torch.sigmoid(p.to(cdt)), nd, channel_dim)

    tau_v, theta, v_l, v_r = cv(tau), cv(v_threshold), cv(linear_decay), cv(v_subreset)
    if gate_mode == "coarse":
        a = b = g = None
    else:
        hard = gate_mode in ("hard", "static_hard")
        gates = [channel_view(gate(p.to(cdt), hard), nd, channel_dim) for p in (alpha, beta, gamma)]
        if gate_mode.startswith("static"):
            gates = [q.detach() for q in gates]
        a, b, g = gates

    v = v0.to(cdt)
    s = s0.to(cdt)
    spikes, vs = [], []
    for t in range(x_seq.shape[0]):
        k = cv(conduct[t0 + t])
        x = x_seq[t].to(cdt)
        s_r = s.detach() if detach_reset else s
        if gate_mode == "coarse":
            u = tau_v * v * (1 - s_r) - v_l + k * x - v_r * s_r
        else:
            d = 1 - a * (1 - tau_v)
            u = d * v * (1 - g * s_r) - (1 - a) * v_l + (1 - b * (1 - k)) * x - (1 - g) * v_r * s_r
        s = surrogate_function(u - theta)
        v = u
        spikes.append(s)
        vs.append(u)
    spike_seq = torch.stack(spikes).to(x_seq.dtype)
    v_seq = torch.stack(vs)
    return spike_seq, v_seq, v, s
