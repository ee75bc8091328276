"""Fused GLIF forward and backward: one Triton launch each, the whole time loop inside.

Data layout. One time step of ``x`` (``[T, *step_shape]``) is viewed as
``[outer, C, inner]`` around ``channel_dim`` (``outer = prod(step_shape[:cd])``,
``inner = prod(step_shape[cd + 1:])``). When every parameter is layer-wise
(``[]``, conduct ``[T_rows]``) the view is ``[outer, 1, prod(step_shape[cd:])]``;
a layer-wise parameter among channel-wise ones is read with channel stride 0 and
its gradient summed over channels.
Each program owns a 3-D tile ``[BLOCK_O, BLOCK_C, BLOCK_I]`` of that view for the
whole time loop, keeps the neuron state in registers (compute dtype: float32, or
float64 for float64 input) and walks time with pointer increments. The tile is
filled along the axes in order of increasing memory stride, so the contiguous
memory axis is also the contiguous tile axis: ``[B, C, H, W]`` (channel-first)
gets ``BLOCK_I`` large (``BLOCK_C = 1`` once ``inner`` fills the tile), ``[B, N, C]``
(channel-last) gets ``BLOCK_C`` up to ``tile / _MIN_POSITIONS`` and ``BLOCK_O`` for
the rest. The cap on ``BLOCK_C`` keeps at least ``_MIN_POSITIONS`` positions per
tile when the data has them, which bounds the parameter-gradient partial buffers
to about ``1/_MIN_POSITIONS`` of the input.

Parameter gradients. The backward program reduces its tile over positions and
writes the raw-parameter gradient (chain rule through the sigmoids applied in
the kernel, which is linear in the sums) to a ``[programs_p, 7, C]`` buffer
(``[programs_p, T, C]`` for ``conduct``); the launcher finishes with ``.sum(0)``.
No atomics: results are bitwise reproducible.

Strides. ``x``, ``grad_spike`` and ``grad_u_seq`` are read through their strides
(slices, transposes that keep the view mergeable, stride-0 expanded gradients);
``v0``, ``s0`` and ``grad_v_last`` likewise as ``[outer, C, inner]``. Only when
``tensor.view(T, outer, C, inner)`` is impossible (dims that cannot be merged,
e.g. a transpose inside ``step_shape[cd + 1:]``) is that one tensor copied with
``.contiguous()``. Outputs are allocated contiguous, and ``u_seq`` is read with the
output strides (a non-contiguous one is copied). Index arithmetic is int64.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

# Elements per program tile, warps, and the fewest positions a tile spans (module docstring).
# Forward: four elements per thread. The backward holds ~10 tile-shaped values (plus five
# 64-bit pointer tiles) across its time loop, so it gets two per thread: 72-113 registers on
# sm_90 in float32, no spills (a 1024-element tile needs ~190).
_FWD_TILE, _FWD_WARPS = 1024, 8
_BWD_TILE, _BWD_WARPS = 256, 4
_MIN_POSITIONS = 16
# Rows of the per-channel partial-gradient buffer.
_N_PARAM_ROWS = 7  # alpha, beta, gamma, tau, v_threshold, linear_decay, v_subreset

_GATE_SOFT, _GATE_HARD, _GATE_COARSE = 0, 1, 2
# Constants used inside kernels must be constexpr globals.
_HALF_PI = tl.constexpr(math.pi / 2.0)
_INV_SQRT_PI = tl.constexpr(1.0 / math.sqrt(math.pi))
# Every buffer a launcher hands to a kernel is allocated through this (tests poison it with NaN).
_empty = torch.empty


# --------------------------------------------------------------------------- kernels


@triton.jit
def _surrogate(z, alpha, SURROGATE: tl.constexpr, CDT: tl.constexpr):
    """sg(z): same formulas as ``sj_glif.surrogates.surrogate_grad``."""
    if SURROGATE == 0:  # sigmoid
        sig = tl.sigmoid(alpha * z)
        out = alpha * sig * (1.0 - sig)
    elif SURROGATE == 1:  # atan
        w = tl.full([], _HALF_PI, CDT) * alpha * z
        out = (alpha * 0.5) / (1.0 + w * w)
    elif SURROGATE == 2:  # piecewise_quadratic
        za = tl.abs(z)
        out = tl.where(za > 1.0 / alpha, 0.0, alpha - alpha * alpha * za)
    elif SURROGATE == 3:  # piecewise_exp
        out = (alpha * 0.5) * tl.exp(-alpha * tl.abs(z))
    elif SURROGATE == 4:  # soft_sign
        d = 1.0 / alpha + tl.abs(z)
        out = 1.0 / (2.0 * alpha * d * d)
    elif SURROGATE == 5:  # super_spike
        d = tl.abs(z) + 1.0
        out = alpha / (d * d)
    elif SURROGATE == 6:  # erf
        az = alpha * z
        out = alpha * tl.full([], _INV_SQRT_PI, CDT) * tl.exp(-(az * az))
    else:  # rect
        out = tl.where(tl.abs(z) < 0.5 / alpha, alpha, 0.0)
    return out.to(CDT)


@triton.jit
def _tile_offsets(
    OUTER, C, INNER, N_CB, N_IB, BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr
):
    """This program's tile: int64 index vectors along o, c, i, the 3-D mask, and pid_p."""
    pid = tl.program_id(0).to(tl.int64)
    pid_c = pid % N_CB
    pid_p = pid // N_CB
    pid_o = pid_p // N_IB
    pid_i = pid_p % N_IB
    offs_o = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_i = pid_i * BLOCK_I + tl.arange(0, BLOCK_I)
    mask_c = offs_c < C
    mask = (offs_o < OUTER)[:, None, None] & mask_c[None, :, None] & (offs_i < INNER)[None, None, :]
    return offs_o, offs_c, offs_i, mask_c, mask, pid_p


@triton.jit
def _offsets3(offs_o, offs_c, offs_i, s_o, s_c, s_i):
    return offs_o[:, None, None] * s_o + offs_c[None, :, None] * s_c + offs_i[None, None, :] * s_i


@triton.jit
def _load_param(ptr, offs_c, stride, mask_c, CDT: tl.constexpr):
    """A raw per-channel parameter (stride 0 for a layer-wise ``[]`` parameter), as CDT."""
    return tl.load(ptr + offs_c * stride, mask=mask_c, other=0.0).to(CDT)


@triton.jit
def _gate(raw, GATE_MODE: tl.constexpr):
    """(gate value, sigmoid(raw)): soft gates are the sigmoid, hard gates are 1[raw > 0]."""
    sig = tl.sigmoid(raw)
    if GATE_MODE == 1:
        val = tl.where(raw > 0.0, 1.0, 0.0).to(raw.dtype)
    else:
        val = sig
    return val, sig


@triton.jit(do_not_specialize=["T", "t0"])
def _glif_fwd_kernel(
    x_ptr, v0_ptr, s0_ptr,
    alpha_ptr, beta_ptr, gamma_ptr, tau_ptr, vth_ptr, vl_ptr, vr_ptr, k_ptr,
    spike_ptr, u_ptr, vlast_ptr,
    T, t0, OUTER, C, INNER, N_CB, N_IB,
    sx_t, sx_o, sx_c, sx_i,
    sv_o, sv_c, sv_i,
    ss_o, ss_c, ss_i,
    sp_alpha, sp_beta, sp_gamma, sp_tau, sp_vth, sp_vl, sp_vr, sk_t, sk_c,
    so_t, so_o, so_c,
    sg_alpha,
    GATE_MODE: tl.constexpr, STORE_U: tl.constexpr, CDT: tl.constexpr,
    BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr,
):  # fmt: skip
    offs_o, offs_c, offs_i, mask_c, mask, pid_p = _tile_offsets(
        OUTER, C, INNER, N_CB, N_IB, BLOCK_O, BLOCK_C, BLOCK_I
    )

    tau = tl.sigmoid(_load_param(tau_ptr, offs_c, sp_tau, mask_c, CDT))
    theta = tl.sigmoid(_load_param(vth_ptr, offs_c, sp_vth, mask_c, CDT))
    v_l = tl.sigmoid(_load_param(vl_ptr, offs_c, sp_vl, mask_c, CDT))
    v_r = tl.sigmoid(_load_param(vr_ptr, offs_c, sp_vr, mask_c, CDT))
    if GATE_MODE == 2:
        b = tl.zeros_like(tau)  # unused
        coef_d = tau
        coef_g = tl.full(tau.shape, 1.0, CDT)
        coef_l = v_l
        coef_r = v_r
    else:
        a, _sa = _gate(_load_param(alpha_ptr, offs_c, sp_alpha, mask_c, CDT), GATE_MODE)
        b, _sb = _gate(_load_param(beta_ptr, offs_c, sp_beta, mask_c, CDT), GATE_MODE)
        g, _sg = _gate(_load_param(gamma_ptr, offs_c, sp_gamma, mask_c, CDT), GATE_MODE)
        coef_d = 1.0 - a * (1.0 - tau)
        coef_g = g
        coef_l = (1.0 - a) * v_l
        coef_r = (1.0 - g) * v_r
    coef_d = coef_d[None, :, None]
    coef_g = coef_g[None, :, None]
    coef_l = coef_l[None, :, None]
    coef_r = coef_r[None, :, None]
    theta = theta[None, :, None]

    v = tl.load(v0_ptr + _offsets3(offs_o, offs_c, offs_i, sv_o, sv_c, sv_i), mask=mask, other=0.0)
    s = tl.load(s0_ptr + _offsets3(offs_o, offs_c, offs_i, ss_o, ss_c, ss_i), mask=mask, other=0.0)
    v = v.to(CDT)
    s = s.to(CDT)

    out_off = _offsets3(offs_o, offs_c, offs_i, so_o, so_c, 1)
    x_ptrs = x_ptr + _offsets3(offs_o, offs_c, offs_i, sx_o, sx_c, sx_i)
    spike_ptrs = spike_ptr + out_off
    u_ptrs = u_ptr + out_off
    k_ptrs = k_ptr + t0.to(tl.int64) * sk_t + offs_c * sk_c
    for _t in range(T):
        k = tl.sigmoid(tl.load(k_ptrs, mask=mask_c, other=0.0).to(CDT))
        if GATE_MODE == 2:
            coef_k = k
        else:
            coef_k = 1.0 - b * (1.0 - k)
        x = tl.load(x_ptrs, mask=mask, other=0.0).to(CDT)
        u = coef_d * v * (1.0 - coef_g * s) - coef_l + coef_k[None, :, None] * x - coef_r * s
        spike = tl.where(u - theta >= 0.0, 1.0, 0.0).to(CDT)
        tl.store(spike_ptrs, spike.to(spike_ptr.dtype.element_ty), mask=mask)
        if STORE_U:
            tl.store(u_ptrs, u.to(u_ptr.dtype.element_ty), mask=mask)
        v = u
        s = spike
        x_ptrs += sx_t
        spike_ptrs += so_t
        u_ptrs += so_t
        k_ptrs += sk_t
    tl.store(vlast_ptr + out_off, v.to(vlast_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["T", "t0"])
def _glif_bwd_kernel(
    gsp_ptr, gvl_ptr, gsl_ptr, gu_ptr, x_ptr, v0_ptr, s0_ptr, u_ptr,
    alpha_ptr, beta_ptr, gamma_ptr, tau_ptr, vth_ptr, vl_ptr, vr_ptr, k_ptr,
    dx_ptr, dv0_ptr, ds0_ptr, dpar_ptr, dk_ptr,
    T, t0, OUTER, C, INNER, N_CB, N_IB,
    sgs_t, sgs_o, sgs_c, sgs_i,
    sgv_o, sgv_c, sgv_i,
    sgsl_o, sgsl_c, sgsl_i,
    sgu_t, sgu_o, sgu_c, sgu_i,
    sx_t, sx_o, sx_c, sx_i,
    sv_o, sv_c, sv_i,
    ss_o, ss_c, ss_i,
    sp_alpha, sp_beta, sp_gamma, sp_tau, sp_vth, sp_vl, sp_vr, sk_t, sk_c,
    so_t, so_o, so_c,
    sg_alpha,
    GATE_MODE: tl.constexpr, SURROGATE: tl.constexpr, DETACH_RESET: tl.constexpr,
    HAS_GV: tl.constexpr, HAS_GS: tl.constexpr, HAS_GU: tl.constexpr, CDT: tl.constexpr,
    BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr,
):  # fmt: skip
    offs_o, offs_c, offs_i, mask_c, mask, pid_p = _tile_offsets(
        OUTER, C, INNER, N_CB, N_IB, BLOCK_O, BLOCK_C, BLOCK_I
    )
    alpha_sg = tl.cast(sg_alpha, CDT)

    tau = tl.sigmoid(_load_param(tau_ptr, offs_c, sp_tau, mask_c, CDT))
    theta_c = tl.sigmoid(_load_param(vth_ptr, offs_c, sp_vth, mask_c, CDT))
    v_l = tl.sigmoid(_load_param(vl_ptr, offs_c, sp_vl, mask_c, CDT))
    v_r = tl.sigmoid(_load_param(vr_ptr, offs_c, sp_vr, mask_c, CDT))
    if GATE_MODE == 2:
        a = tl.zeros_like(tau)
        b = tl.zeros_like(tau)
        g = tl.zeros_like(tau)
        sa = a
        sb = b
        sgm = g
        coef_d_c = tau
        coef_g_c = tl.full(tau.shape, 1.0, CDT)
        coef_r_c = v_r
    else:
        a, sa = _gate(_load_param(alpha_ptr, offs_c, sp_alpha, mask_c, CDT), GATE_MODE)
        b, sb = _gate(_load_param(beta_ptr, offs_c, sp_beta, mask_c, CDT), GATE_MODE)
        g, sgm = _gate(_load_param(gamma_ptr, offs_c, sp_gamma, mask_c, CDT), GATE_MODE)
        coef_d_c = 1.0 - a * (1.0 - tau)
        coef_g_c = g
        coef_r_c = (1.0 - g) * v_r
    coef_d = coef_d_c[None, :, None]
    coef_g = coef_g_c[None, :, None]
    coef_r = coef_r_c[None, :, None]
    theta = theta_c[None, :, None]

    # Tile-shaped accumulators, reduced over positions once after the loop.
    acc_d = tl.zeros([BLOCK_O, BLOCK_C, BLOCK_I], CDT)  # sum du * u_prev * (1 - Gh s_prev)
    acc_us = tl.zeros([BLOCK_O, BLOCK_C, BLOCK_I], CDT)  # sum du * u_prev * s_prev
    acc_du = tl.zeros([BLOCK_O, BLOCK_C, BLOCK_I], CDT)  # sum du
    acc_s = tl.zeros([BLOCK_O, BLOCK_C, BLOCK_I], CDT)  # sum du * s_prev
    acc_th = tl.zeros([BLOCK_O, BLOCK_C, BLOCK_I], CDT)  # sum sg * ds
    acc_beta = tl.zeros([BLOCK_C], CDT)  # sum_t dK_t * (1 - k_t)

    v0 = tl.load(v0_ptr + _offsets3(offs_o, offs_c, offs_i, sv_o, sv_c, sv_i), mask=mask, other=0.0)
    s0 = tl.load(s0_ptr + _offsets3(offs_o, offs_c, offs_i, ss_o, ss_c, ss_i), mask=mask, other=0.0)
    v0 = v0.to(CDT)
    s0 = s0.to(CDT)
    if HAS_GV:
        gv_off = _offsets3(offs_o, offs_c, offs_i, sgv_o, sgv_c, sgv_i)
        gv = tl.load(gvl_ptr + gv_off, mask=mask, other=0.0).to(CDT)
    else:
        gv = tl.zeros([BLOCK_O, BLOCK_C, BLOCK_I], CDT)
    if HAS_GS:  # the final spike's gradient enters as dL/ds_{T-1} from the future
        gsl_off = _offsets3(offs_o, offs_c, offs_i, sgsl_o, sgsl_c, sgsl_i)
        gs = tl.load(gsl_ptr + gsl_off, mask=mask, other=0.0).to(CDT)
    else:
        gs = tl.zeros([BLOCK_O, BLOCK_C, BLOCK_I], CDT)

    # Pointers start at t = T - 1 and step backwards.
    last = T.to(tl.int64) - 1
    out_off = _offsets3(offs_o, offs_c, offs_i, so_o, so_c, 1)
    u_ptrs = u_ptr + out_off + last * so_t
    dx_ptrs = dx_ptr + out_off + last * so_t
    x_ptrs = x_ptr + _offsets3(offs_o, offs_c, offs_i, sx_o, sx_c, sx_i) + last * sx_t
    gs_ptrs = gsp_ptr + _offsets3(offs_o, offs_c, offs_i, sgs_o, sgs_c, sgs_i) + last * sgs_t
    if HAS_GU:
        gu_ptrs = gu_ptr + _offsets3(offs_o, offs_c, offs_i, sgu_o, sgu_c, sgu_i) + last * sgu_t
    k_ptrs = k_ptr + (t0.to(tl.int64) + last) * sk_t + offs_c * sk_c
    dk_ptrs = dk_ptr + (pid_p * T + last) * C + offs_c

    u = tl.load(u_ptrs, mask=mask, other=0.0).to(CDT)
    for it in range(T):
        has_prev = it < T - 1  # t > 0: the previous state comes from u_seq, else from (v0, s0)
        u_prev = tl.load(u_ptrs - so_t, mask=mask & has_prev, other=0.0).to(CDT)
        s_prev = tl.where(u_prev - theta >= 0.0, 1.0, 0.0).to(CDT)
        u_prev = tl.where(has_prev, u_prev, v0)
        s_prev = tl.where(has_prev, s_prev, s0)

        k = tl.sigmoid(tl.load(k_ptrs, mask=mask_c, other=0.0).to(CDT))
        if GATE_MODE == 2:
            coef_k = k
        else:
            coef_k = 1.0 - b * (1.0 - k)
        x = tl.load(x_ptrs, mask=mask, other=0.0).to(CDT)
        ds = tl.load(gs_ptrs, mask=mask, other=0.0).to(CDT) + gs
        sg_ds = _surrogate(u - theta, alpha_sg, SURROGATE, CDT) * ds
        du = gv + sg_ds
        if HAS_GU:
            du += tl.load(gu_ptrs, mask=mask, other=0.0).to(CDT)
        du = tl.where(mask, du, 0.0)
        sg_ds = tl.where(mask, sg_ds, 0.0)

        hr = 1.0 - coef_g * s_prev
        tl.store(dx_ptrs, (coef_k[None, :, None] * du).to(dx_ptr.dtype.element_ty), mask=mask)
        dk = tl.sum(tl.sum(du * x, axis=2), axis=0)
        if GATE_MODE == 2:
            dk_raw = dk * k * (1.0 - k)
        else:
            dk_raw = dk * b * k * (1.0 - k)
            acc_beta += dk * (1.0 - k)
        tl.store(dk_ptrs, dk_raw, mask=mask_c)

        u_prev_du = du * u_prev
        acc_d += u_prev_du * hr
        acc_us += u_prev_du * s_prev
        acc_du += du
        acc_s += du * s_prev
        acc_th += sg_ds

        gv = du * coef_d * hr
        if DETACH_RESET:
            # s_{t-1} only reaches the loss through spike_seq: the carried gradient (from
            # grad_s_last) is used up at this step and nothing flows back through the reset
            gs = tl.zeros_like(gs)
        else:
            gs = du * (-coef_g * coef_d * u_prev - coef_r)
        u = u_prev

        u_ptrs -= so_t
        dx_ptrs -= so_t
        x_ptrs -= sx_t
        gs_ptrs -= sgs_t
        if HAS_GU:
            gu_ptrs -= sgu_t
        k_ptrs -= sk_t
        dk_ptrs -= C

    tl.store(dv0_ptr + out_off, gv.to(dv0_ptr.dtype.element_ty), mask=mask)
    tl.store(ds0_ptr + out_off, gs.to(ds0_ptr.dtype.element_ty), mask=mask)

    sum_d = tl.sum(tl.sum(acc_d, axis=2), axis=0)  # dD
    sum_us = tl.sum(tl.sum(acc_us, axis=2), axis=0)  # dGh = -D * sum_us
    sum_du = tl.sum(tl.sum(acc_du, axis=2), axis=0)  # dL = -sum_du
    sum_s = tl.sum(tl.sum(acc_s, axis=2), axis=0)  # dR = -sum_s
    sum_th = tl.sum(tl.sum(acc_th, axis=2), axis=0)  # dtheta = -sum_th

    d_gh = -coef_d_c * sum_us
    if GATE_MODE == 2:
        d_alpha = tl.zeros_like(sum_d)
        d_beta = tl.zeros_like(sum_d)
        d_gamma = tl.zeros_like(sum_d)
        d_tau = sum_d * tau * (1.0 - tau)
        d_vl = -sum_du * v_l * (1.0 - v_l)
        d_vr = -sum_s * v_r * (1.0 - v_r)
    else:
        d_alpha = (-(1.0 - tau) * sum_d + v_l * sum_du) * sa * (1.0 - sa)
        d_beta = -acc_beta * sb * (1.0 - sb)
        d_gamma = (d_gh + v_r * sum_s) * sgm * (1.0 - sgm)
        d_tau = sum_d * a * tau * (1.0 - tau)
        d_vl = -sum_du * (1.0 - a) * v_l * (1.0 - v_l)
        d_vr = -sum_s * (1.0 - g) * v_r * (1.0 - v_r)
    d_theta = -sum_th * theta_c * (1.0 - theta_c)

    row = dpar_ptr + pid_p * (7 * C) + offs_c
    tl.store(row, d_alpha, mask=mask_c)
    tl.store(row + C, d_beta, mask=mask_c)
    tl.store(row + 2 * C, d_gamma, mask=mask_c)
    tl.store(row + 3 * C, d_tau, mask=mask_c)
    tl.store(row + 4 * C, d_theta, mask=mask_c)
    tl.store(row + 5 * C, d_vl, mask=mask_c)
    tl.store(row + 6 * C, d_vr, mask=mask_c)


# --------------------------------------------------------------------------- host side


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _tl_dtype(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _geometry(step_shape: torch.Size, channel_dim: int, channelwise: bool) -> tuple[int, int, int]:
    """``(outer, C, inner)`` of one step's ``[outer, C, inner]`` view."""
    assert 0 <= channel_dim < len(step_shape), (channel_dim, tuple(step_shape))
    outer = math.prod(step_shape[:channel_dim])
    if channelwise:
        return outer, step_shape[channel_dim], math.prod(step_shape[channel_dim + 1 :])
    return outer, 1, math.prod(step_shape[channel_dim:])


def _view(t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``t.view(shape)``, or a contiguous copy when its strides cannot be merged into it."""
    try:
        return t.view(shape)
    except RuntimeError:
        return t.contiguous().view(shape)


def _blocks(
    outer: int, C: int, inner: int, strides: tuple[int, ...], tile: int
) -> tuple[int, int, int]:
    """``(BLOCK_O, BLOCK_C, BLOCK_I)``: fill ``tile`` along the axes by increasing stride of x."""
    sizes = (outer, C, inner)
    order = sorted(range(3), key=lambda ax: (strides[ax] if sizes[ax] > 1 else math.inf, -ax))
    blocks = [1, 1, 1]
    budget = tile
    c_cap = max(1, tile // _MIN_POSITIONS)
    for ax in order:
        cap = min(budget, c_cap) if ax == 1 else budget
        blocks[ax] = min(triton.next_power_of_2(sizes[ax]), cap)
        budget //= blocks[ax]
    return blocks[0], blocks[1], blocks[2]


def _param_strides(params: tuple[torch.Tensor, ...], C: int, channelwise: bool) -> list[int]:
    """Channel stride of each raw ``[C]``/``[]`` parameter (0 for a layer-wise one)."""
    out = []
    for p in params:
        if p.dim() == 0:
            out.append(0)
        else:
            assert channelwise and p.shape == (C,), (tuple(p.shape), C)
            out.append(p.stride(0))
    return out


def _conduct_strides(conduct: torch.Tensor, C: int, t_end: int) -> tuple[int, int]:
    assert conduct.dim() in (1, 2) and conduct.shape[0] >= t_end, (tuple(conduct.shape), t_end)
    if conduct.dim() == 1:
        return conduct.stride(0), 0
    assert conduct.shape[1] == C, (tuple(conduct.shape), C)
    return conduct.stride(0), conduct.stride(1)


def _is_channelwise(*params: torch.Tensor) -> bool:
    return any(p.dim() > 0 for p in params)


def glif_fwd(
    x: torch.Tensor,
    v0: torch.Tensor,
    s0: torch.Tensor,
    alpha: torch.Tensor,
    beta: torch.Tensor,
    gamma: torch.Tensor,
    tau: torch.Tensor,
    v_threshold: torch.Tensor,
    linear_decay: torch.Tensor,
    v_subreset: torch.Tensor,
    conduct: torch.Tensor,
    *,
    t0: int,
    channel_dim: int,
    gate_mode: int,
    surrogate_id: int,
    sg_alpha: float,
    store_u: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GLIF forward over ``T`` steps in one launch.

    Args:
        x: input ``[T, *step_shape]`` (float16/bfloat16/float32/float64, any strides).
        v0, s0: initial membrane and previous spike, ``step_shape``.
        alpha, beta, gamma: raw gates ``[C]`` or ``[]`` (ignored for ``gate_mode=2``).
        tau, v_threshold, linear_decay, v_subreset: raw parameters ``[C]`` or ``[]``.
        conduct: raw conductance ``[T_rows, C]`` or ``[T_rows]``; step ``t`` uses row ``t0 + t``.
        t0: first conduct row. channel_dim: channel axis of ``step_shape``.
        gate_mode: 0 soft, 1 hard (straight-through), 2 coarse (GLIF_f, no gates).
        surrogate_id, sg_alpha: unused by the forward (kept for a uniform signature).
        store_u: also return every membrane ``u_t`` (needed by :func:`glif_bwd`).

    Returns:
        ``(spike_seq, v_last, u_seq)``: spikes like ``x`` (its dtype), the final membrane
        ``step_shape`` and ``u_seq`` ``[T, *step_shape]`` in the compute dtype (float64
        for float64 input, else float32); ``u_seq`` is ``torch.empty(0)`` without ``store_u``.
        Each ``x``/``v0``/``s0`` whose strides cannot be merged into the
        ``[T, outer, C, inner]`` view is copied once with ``.contiguous()``.
    """
    del surrogate_id, sg_alpha
    assert x.dim() >= 2 and gate_mode in (0, 1, 2)
    T, step_shape = x.shape[0], x.shape[1:]
    assert v0.shape == step_shape and s0.shape == step_shape, (v0.shape, s0.shape, step_shape)
    cdt = _compute_dtype(x.dtype)
    dev = x.device
    spike = _empty(x.shape, dtype=x.dtype, device=dev)
    u_seq = _empty(x.shape if store_u else (0,), dtype=cdt, device=dev)
    if T == 0 or x.numel() == 0:
        return spike, v0.to(cdt, copy=True).contiguous(), u_seq
    v_last = _empty(step_shape, dtype=cdt, device=dev)

    coarse = gate_mode == _GATE_COARSE
    if coarse:
        alpha = beta = gamma = tau  # placeholders are never read
    params = (alpha, beta, gamma, tau, v_threshold, linear_decay, v_subreset)
    channelwise = _is_channelwise(*params, conduct[0])
    outer, C, inner = _geometry(step_shape, channel_dim, channelwise)
    sp = _param_strides(params, C, channelwise)
    sk = _conduct_strides(conduct, C, t0 + T)

    x4 = _view(x, (T, outer, C, inner))
    v3 = _view(v0, (outer, C, inner))
    s3 = _view(s0, (outer, C, inner))
    bo, bc, bi = _blocks(outer, C, inner, x4.stride()[1:], _FWD_TILE)
    n_cb, n_ib = triton.cdiv(C, bc), triton.cdiv(inner, bi)
    grid = (triton.cdiv(outer, bo) * n_ib * n_cb,)
    _glif_fwd_kernel[grid](
        x4, v3, s3, *params, conduct,
        spike, u_seq if store_u else spike, v_last,
        T, t0, outer, C, inner, n_cb, n_ib,
        *x4.stride(), *v3.stride(), *s3.stride(), *sp, *sk,
        outer * C * inner, C * inner, inner,
        0.0,
        GATE_MODE=gate_mode, STORE_U=store_u, CDT=_tl_dtype(cdt),
        BLOCK_O=bo, BLOCK_C=bc, BLOCK_I=bi, num_warps=_FWD_WARPS,
    )  # fmt: skip
    return spike, v_last, u_seq


def glif_bwd(
    grad_spike: torch.Tensor,
    grad_v_last: torch.Tensor | None,
    grad_u_seq: torch.Tensor | None,
    x: torch.Tensor,
    v0: torch.Tensor,
    s0: torch.Tensor,
    u_seq: torch.Tensor,
    alpha: torch.Tensor,
    beta: torch.Tensor,
    gamma: torch.Tensor,
    tau: torch.Tensor,
    v_threshold: torch.Tensor,
    linear_decay: torch.Tensor,
    v_subreset: torch.Tensor,
    conduct: torch.Tensor,
    *,
    t0: int,
    channel_dim: int,
    gate_mode: int,
    surrogate_id: int,
    sg_alpha: float,
    detach_reset: bool,
    grad_s_last: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """GLIF backward over ``T`` steps in one launch (reverse time).

    Args:
        grad_spike: ``[T, *step_shape]``, the gradient of ``spike_seq`` (that of the final
            spike state folded into ``grad_spike[T - 1]`` by the caller); any strides,
            stride-0 expanded included.
        grad_v_last: gradient of ``v_last`` (``step_shape``) or ``None`` (zero).
        grad_u_seq: gradient of ``u_seq`` (``[T, *step_shape]``) or ``None`` (zero).
        x, v0, s0, u_seq: the forward's inputs and its stored membranes.
        alpha … conduct, t0, channel_dim, gate_mode: as in :func:`glif_fwd`.
        surrogate_id: 0 sigmoid, 1 atan, 2 piecewise_quadratic, 3 piecewise_exp,
            4 soft_sign, 5 super_spike, 6 erf, 7 rect (:mod:`sj_glif.surrogates`);
            ``sg_alpha`` its ``alpha`` (used in the compute dtype, passed as float32).
        detach_reset: no gradient through ``s_{t-1}`` in the reset terms.
        grad_s_last: gradient of the final spike state (``step_shape``, compute dtype) or
            ``None``; equivalent to adding it to ``grad_spike[T - 1]`` but without rounding
            it to a 16-bit input dtype.

    Returns:
        ``(dx, dv0, ds0, d_alpha, d_beta, d_gamma, d_tau, d_v_threshold, d_linear_decay,
        d_v_subreset, d_conduct)``: ``dx`` like ``x``, ``dv0``/``ds0`` ``step_shape`` in the
        compute dtype, each parameter gradient shaped and typed like its parameter (zeros
        for the gates in coarse mode; ``d_conduct`` rows outside ``t0 … t0 + T - 1`` are 0).
    """
    assert x.dim() >= 2 and gate_mode in (0, 1, 2) and 0 <= surrogate_id <= 7
    T, step_shape = x.shape[0], x.shape[1:]
    assert grad_spike.shape == x.shape and u_seq.shape == x.shape, (grad_spike.shape, u_seq.shape)
    assert v0.shape == step_shape and s0.shape == step_shape, (v0.shape, s0.shape, step_shape)
    cdt = _compute_dtype(x.dtype)
    dev = x.device
    coarse = gate_mode == _GATE_COARSE
    gate_grads = [torch.zeros_like(p) for p in (alpha, beta, gamma)] if coarse else None
    if coarse:
        alpha = beta = gamma = tau  # placeholders are never read
    params = (alpha, beta, gamma, tau, v_threshold, linear_decay, v_subreset)

    dx = _empty(x.shape, dtype=x.dtype, device=dev)
    if T == 0 or x.numel() == 0:
        dx.zero_()
        dv0 = torch.zeros(step_shape, dtype=cdt, device=dev)
        ds0 = torch.zeros(step_shape, dtype=cdt, device=dev)
        if grad_v_last is not None:  # with no step, v_last is v0 and s_last is s0
            dv0.copy_(grad_v_last)
        if grad_s_last is not None:
            ds0.copy_(grad_s_last)
        grads = [torch.zeros_like(p) for p in params]
        if gate_grads is not None:
            grads[:3] = gate_grads
        return dx, dv0, ds0, *grads, torch.zeros_like(conduct)

    channelwise = _is_channelwise(*params, conduct[0])
    outer, C, inner = _geometry(step_shape, channel_dim, channelwise)
    sp = _param_strides(params, C, channelwise)
    sk = _conduct_strides(conduct, C, t0 + T)

    shape4, shape3 = (T, outer, C, inner), (outer, C, inner)
    x4 = _view(x, shape4)
    gs4 = _view(grad_spike, shape4)
    u4 = _view(u_seq, shape4)
    if not u4.is_contiguous():
        u4 = u4.contiguous()  # the kernel reads u_seq with the output strides
    v3 = _view(v0, shape3)
    s3 = _view(s0, shape3)
    has_gu, has_gv, has_gs = (
        grad_u_seq is not None,
        grad_v_last is not None,
        grad_s_last is not None,
    )
    if has_gu:
        assert grad_u_seq.shape == x.shape, (grad_u_seq.shape, x.shape)
        gu4 = _view(grad_u_seq, shape4)
    if has_gv:
        assert grad_v_last.shape == step_shape, (grad_v_last.shape, step_shape)
        gv3 = _view(grad_v_last, shape3)
    if has_gs:
        assert grad_s_last.shape == step_shape, (grad_s_last.shape, step_shape)
        gsl3 = _view(grad_s_last, shape3)

    bo, bc, bi = _blocks(outer, C, inner, x4.stride()[1:], _BWD_TILE)
    n_cb, n_ib = triton.cdiv(C, bc), triton.cdiv(inner, bi)
    n_p = triton.cdiv(outer, bo) * n_ib
    dv0 = _empty(step_shape, dtype=cdt, device=dev)
    ds0 = _empty(step_shape, dtype=cdt, device=dev)
    dpar = _empty((n_p, _N_PARAM_ROWS, C), dtype=cdt, device=dev)
    dk = _empty((n_p, T, C), dtype=cdt, device=dev)
    _glif_bwd_kernel[(n_p * n_cb,)](
        gs4, gv3 if has_gv else gs4, gsl3 if has_gs else gs4, gu4 if has_gu else gs4,
        x4, v3, s3, u4,
        *params, conduct,
        dx, dv0, ds0, dpar, dk,
        T, t0, outer, C, inner, n_cb, n_ib,
        *gs4.stride(),
        *(gv3.stride() if has_gv else (0, 0, 0)),
        *(gsl3.stride() if has_gs else (0, 0, 0)),
        *(gu4.stride() if has_gu else (0, 0, 0, 0)),
        *x4.stride(), *v3.stride(), *s3.stride(), *sp, *sk,
        outer * C * inner, C * inner, inner,
        float(sg_alpha),
        GATE_MODE=gate_mode, SURROGATE=surrogate_id, DETACH_RESET=detach_reset,
        HAS_GV=has_gv, HAS_GS=has_gs, HAS_GU=has_gu, CDT=_tl_dtype(cdt),
        BLOCK_O=bo, BLOCK_C=bc, BLOCK_I=bi, num_warps=_BWD_WARPS,
    )  # fmt: skip

    dpar = dpar.sum(0)  # [7, C]
    grads = [(dpar[j] if p.dim() > 0 else dpar[j].sum()).to(p.dtype) for j, p in enumerate(params)]
    if gate_grads is not None:
        grads[:3] = gate_grads
    d_conduct = torch.zeros(conduct.shape, dtype=cdt, device=dev)
    dk = dk.sum(0)  # [T, C]
    d_conduct[t0 : t0 + T] = dk if conduct.dim() == 2 else dk.sum(1)
    return dx, dv0, ds0, *grads, d_conduct.to(conduct.dtype)
