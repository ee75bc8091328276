"""Fused GLIF forward and backward: the whole time loop inside one Triton launch each.

Launches. :func:`glif_fwd` is one launch (spikes, final membrane, final spike and,
when asked, the membrane stream). :func:`glif_bwd` is two: the reverse-time kernel,
then one small finish kernel that sums the per-program partial gradients in a fixed
order (no atomics: bitwise reproducible) and writes every parameter gradient, the
whole ``d_conduct`` included. A zero initial state and absent output gradients are
``constexpr`` flags, not filled tensors.

Data layout. One time step of ``x`` (``[T, *step_shape]``) is viewed as
``[outer, C, inner]`` around ``channel_dim`` (``outer = prod(step_shape[:cd])``,
``inner = prod(step_shape[cd + 1:])``). When every parameter is layer-wise
(``[]``, conduct ``[T_rows]``) the view is ``[outer, 1, prod(step_shape[cd:])]``;
a layer-wise parameter among channel-wise ones is read with channel stride 0 and
its gradient summed over channels. Each program owns a tile of that view for the
whole time loop, keeps the neuron state in registers (compute dtype: float32, or
float64 for float64 input) and walks time with pointer increments. A tile is
filled along the axes in order of increasing memory stride, so the contiguous
memory axis is also the contiguous tile axis: ``[B, C, H, W]`` (channel-first)
gets the inner axis, ``[B, N, C]`` (channel-last) the channel axis, capped so that
a tile spans at least ``_MIN_POSITIONS`` positions (which bounds the partial
gradient buffers).

Streaming backward. The backward tile is NW warp sub-tiles (each exactly one warp's
worth of elements) stacked along the outer or the inner axis. The conduct gradient
of every step is reduced over a warp's own sub-tile only (register adds and warp
shuffles, no block barrier) and written as a per-warp partial; every other
parameter gradient is accumulated in registers and reduced across the block once,
after the loop. ``bench/static_report.py`` checks the compiled sm_90 code (Triton 3.6 and
3.8 both; their layout choices differ, so the sub-tiles are reshapes of one 3-D tile) for
barriers inside the time loop, spills and vector widths.

Strides. ``x``, ``grad_spike`` and ``grad_u_seq`` are read through their strides
(slices, transposes that keep the view mergeable, stride-0 expanded gradients);
``v0``, ``s0``, ``grad_v_last`` and ``grad_s_last`` likewise as ``[outer, C, inner]``.
Only when ``tensor.view(T, outer, C, inner)`` is impossible (dims that cannot be
merged, e.g. a transpose inside ``step_shape[cd + 1:]``) is that one tensor copied
with ``.contiguous()``. Outputs are allocated contiguous, and ``u_seq`` is read with
the output strides (a non-contiguous one is copied). Index arithmetic is int64.
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

# Tile configuration per (kernel, layout class, bytes per element of x): elements per thread
# and warps. Chosen without a GPU, then measured on an H200 (bench/gpu_tune.py,
# bench/results/gpu_tune/): at most 5 % slower than the best of 1-8 elements x 2-16 warps,
# except the channel-last float32 backward (8 % behind 8 elements per thread). Four
# elements per thread (16-byte float32 accesses; two float64), also for 16-bit inputs: their
# membranes are stored in float32, at most 16 bytes a store, and a wider 16-bit load would
# need a layout change, with block barriers, inside the loop. The forward holds little across
# its loop and takes eight warps; the backward about ten tile-shaped values plus its pointer
# tiles, so four. The sm_90 static report (bench/results/static/) shows the registers each
# costs, no spills, no barrier in the loop. "cf" is channel-first (the contiguous memory axis
# is not the channel), "cl" channel-last.
_CONFIG = {
    ("fwd", "cf", 2): (4, 8),
    ("fwd", "cf", 4): (4, 8),
    ("fwd", "cf", 8): (2, 8),
    ("fwd", "cl", 2): (4, 8),
    ("fwd", "cl", 4): (4, 8),
    ("fwd", "cl", 8): (2, 8),
    ("bwd", "cf", 2): (4, 4),
    ("bwd", "cf", 4): (4, 4),
    ("bwd", "cf", 8): (2, 4),
    ("bwd", "cl", 2): (4, 4),
    ("bwd", "cl", 4): (4, 4),
    ("bwd", "cl", 8): (2, 4),
}
_WARP_SIZE = 32  # lanes per warp (tests shrink it to get tiny tiles under the interpreter)
_MIN_POSITIONS = 16  # fewest positions (non-channel elements) a tile or warp sub-tile spans
_N_PARAM_ROWS = 7  # alpha, beta, gamma, tau, v_threshold, linear_decay, v_subreset
_FINISH_ROWS, _FINISH_C = 8, 128  # the finish kernel's [rows, channels] load tile

# glif_bwd accepts u_seq=None and then recomputes the membrane from x (a forward sweep that
# keeps one checkpoint per _SEGMENT steps, then each step replayed from its checkpoint in
# registers): the forward need not store the membrane stream for training.
BWD_RECOMPUTES_U = True
_SEGMENT = 4

_GATE_SOFT, _GATE_HARD, _GATE_COARSE = 0, 1, 2
# Constants used inside kernels must be constexpr globals.
_HALF_PI = tl.constexpr(math.pi / 2.0)
_INV_SQRT_PI = tl.constexpr(1.0 / math.sqrt(math.pi))
# Every buffer a launcher hands to a kernel is allocated through one of these two (tests
# poison both with NaN).
_empty = torch.empty
_CONTIGUOUS = torch.contiguous_format


def _empty_as(t: torch.Tensor) -> torch.Tensor:
    """A contiguous uninitialised tensor of ``t``'s shape, dtype and device (``empty_like``
    costs about half the host time of ``torch.empty(shape, dtype=, device=)``)."""
    return torch.empty_like(t, memory_format=_CONTIGUOUS)


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


@triton.jit
def _tile_offsets(
    OUTER, C, INNER, N_CB, N_IB, BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr
):
    """This program's tile: int64 index vectors along o, c, i, the channel mask, the 3-D mask
    and pid_p (the program's index among the position blocks)."""
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
def _load_state(ptr, offs_o, offs_c, offs_i, s_o, s_c, s_i, mask, HAS: tl.constexpr, CDT,
                BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr):  # fmt: skip
    """A step-shaped tile in the compute dtype, or zeros where the tensor is absent."""
    if HAS:
        return tl.load(
            ptr + _offsets3(offs_o, offs_c, offs_i, s_o, s_c, s_i), mask=mask, other=0.0
        ).to(CDT)
    return tl.zeros([BLOCK_O, BLOCK_C, BLOCK_I], CDT)


@triton.jit
def _membrane(v, s, x, coef_d, coef_g, coef_l, coef_k, coef_r):
    """One step's membrane (the forward and the backward's recomputation share this code,
    so that they round alike)."""
    return coef_d * v * (1.0 - coef_g * s) - coef_l + coef_k * x - coef_r * s


@triton.jit(do_not_specialize=["T", "t0"])
def _glif_fwd_kernel(
    x_ptr, v0_ptr, s0_ptr,
    alpha_ptr, beta_ptr, gamma_ptr, tau_ptr, vth_ptr, vl_ptr, vr_ptr, k_ptr,
    spike_ptr, u_ptr, vlast_ptr, slast_ptr,
    T, t0, OUTER, C, INNER, N_CB, N_IB,
    sx_t, sx_o, sx_c, sx_i,
    sv_o, sv_c, sv_i,
    ss_o, ss_c, ss_i,
    sp_alpha, sp_beta, sp_gamma, sp_tau, sp_vth, sp_vl, sp_vr, sk_t, sk_c,
    so_t, so_o, so_c,
    GATE_MODE: tl.constexpr, STORE_U: tl.constexpr, HAS_V0: tl.constexpr, HAS_S0: tl.constexpr,
    CDT: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr,
):  # fmt: skip
    offs_o, offs_c, offs_i, mask_c, mask, _pid_p = _tile_offsets(
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

    v = _load_state(v0_ptr, offs_o, offs_c, offs_i, sv_o, sv_c, sv_i, mask, HAS_V0, CDT,
                    BLOCK_O, BLOCK_C, BLOCK_I)  # fmt: skip
    s = _load_state(s0_ptr, offs_o, offs_c, offs_i, ss_o, ss_c, ss_i, mask, HAS_S0, CDT,
                    BLOCK_O, BLOCK_C, BLOCK_I)  # fmt: skip

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
        u = _membrane(v, s, x, coef_d, coef_g, coef_l, coef_k[None, :, None], coef_r)
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
    tl.store(slast_ptr + out_off, s.to(slast_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _coef_k(k, b, GATE_MODE: tl.constexpr):
    """The integration coefficient from the conductance row ``k``: ``1 - b (1 - k)``, or
    ``k`` in coarse mode."""
    if GATE_MODE == 2:
        out = k
    else:
        out = 1.0 - b * (1.0 - k)
    return out


@triton.jit
def _warp_sums(
    t, NW: tl.constexpr, SPLIT_O: tl.constexpr,
    BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr,
):  # fmt: skip
    """``[BLOCK_O, BLOCK_C, BLOCK_I] -> [NW, BLOCK_C]``: each warp's sub-tile summed over its
    positions. Warp ``w`` owns the ``w``-th of NW equal slices along o (``SPLIT_O``) or i, so
    the reshape moves no data and the sums need only the warp's own lanes (no barrier)."""
    if SPLIT_O:
        t4 = tl.reshape(t, [NW, BLOCK_O // NW, BLOCK_C, BLOCK_I])
        out = tl.sum(tl.sum(t4, axis=3), axis=1)
    else:
        t4 = tl.reshape(t, [BLOCK_O, BLOCK_C, NW, BLOCK_I // NW])
        out = tl.trans(tl.sum(tl.sum(t4, axis=3), axis=0))
    return out


@triton.jit
def _sum_but_channel(t):
    """``[BO, BC, BI] -> [BC]`` (crosses warps: only after the time loop)."""
    return tl.sum(tl.sum(t, axis=2), axis=0)


@triton.jit(do_not_specialize=["T", "t0"])
def _glif_bwd_kernel(
    gsp_ptr, gvl_ptr, gsl_ptr, gu_ptr, x_ptr, v0_ptr, s0_ptr, u_ptr,
    alpha_ptr, beta_ptr, gamma_ptr, tau_ptr, vth_ptr, vl_ptr, vr_ptr, k_ptr,
    dx_ptr, dv0_ptr, ds0_ptr, dpar_ptr, dk_ptr, ck_ptr,
    T, t0, OUTER, C, INNER, N_CB, N_IB, C_PAD,
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
    HAS_GSP: tl.constexpr, HAS_GV: tl.constexpr, HAS_GS: tl.constexpr, HAS_GU: tl.constexpr,
    HAS_V0: tl.constexpr, HAS_S0: tl.constexpr, RECOMPUTE: tl.constexpr, SEG: tl.constexpr,
    CDT: tl.constexpr, NW: tl.constexpr, SPLIT_O: tl.constexpr, LANES: tl.constexpr,
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
        coef_l_c = v_l
        coef_r_c = v_r
    else:
        a, sa = _gate(_load_param(alpha_ptr, offs_c, sp_alpha, mask_c, CDT), GATE_MODE)
        b, sb = _gate(_load_param(beta_ptr, offs_c, sp_beta, mask_c, CDT), GATE_MODE)
        g, sgm = _gate(_load_param(gamma_ptr, offs_c, sp_gamma, mask_c, CDT), GATE_MODE)
        coef_d_c = 1.0 - a * (1.0 - tau)
        coef_g_c = g
        coef_l_c = (1.0 - a) * v_l
        coef_r_c = (1.0 - g) * v_r
    coef_l = coef_l_c[None, :, None]
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
    acc_beta = tl.zeros([NW, BLOCK_C], CDT)  # per warp: sum_t (1 - k_t) * sum du_t * x_t

    v0 = _load_state(v0_ptr, offs_o, offs_c, offs_i, sv_o, sv_c, sv_i, mask, HAS_V0, CDT,
                     BLOCK_O, BLOCK_C, BLOCK_I)  # fmt: skip
    s0 = _load_state(s0_ptr, offs_o, offs_c, offs_i, ss_o, ss_c, ss_i, mask, HAS_S0, CDT,
                     BLOCK_O, BLOCK_C, BLOCK_I)  # fmt: skip
    gv = _load_state(gvl_ptr, offs_o, offs_c, offs_i, sgv_o, sgv_c, sgv_i, mask, HAS_GV, CDT,
                     BLOCK_O, BLOCK_C, BLOCK_I)  # fmt: skip
    # the final spike's gradient enters as dL/ds_{T-1} from the future
    gs = _load_state(gsl_ptr, offs_o, offs_c, offs_i, sgsl_o, sgsl_c, sgsl_i, mask, HAS_GS, CDT,
                     BLOCK_O, BLOCK_C, BLOCK_I)  # fmt: skip

    # Pointers start at t = T - 1 and step backwards.
    last = T.to(tl.int64) - 1
    out_off = _offsets3(offs_o, offs_c, offs_i, so_o, so_c, 1)
    u_ptrs = u_ptr + out_off + last * so_t
    dx_ptrs = dx_ptr + out_off + last * so_t
    x_ptrs = x_ptr + _offsets3(offs_o, offs_c, offs_i, sx_o, sx_c, sx_i) + last * sx_t
    if HAS_GSP:
        gs_ptrs = gsp_ptr + _offsets3(offs_o, offs_c, offs_i, sgs_o, sgs_c, sgs_i) + last * sgs_t
    if HAS_GU:
        gu_ptrs = gu_ptr + _offsets3(offs_o, offs_c, offs_i, sgu_o, sgu_c, sgu_i) + last * sgu_t
    k_ptrs = k_ptr + (t0.to(tl.int64) + last) * sk_t + offs_c * sk_c
    # Per-warp conduct partials: row pid_p * NW + warp of a [rows, T, C_PAD] buffer. The
    # store is [NW, LANES * BLOCK_C] with consecutive addresses along its second axis (only
    # the first BLOCK_C real, the rest masked; the launcher sizes LANES to one warp's lanes
    # times the channels each thread holds): the compiler then gives warp w's row to the
    # lanes of warp w that already hold those sums, whatever its tie-breaking between axes
    # (no exchange between threads: no shared memory, no barrier in the loop).
    dk_rows = pid_p * NW + tl.arange(0, NW)[:, None]
    col = tl.arange(0, LANES * BLOCK_C)[None, :]
    c_first = (tl.program_id(0).to(tl.int64) % N_CB) * BLOCK_C
    dk_ptrs = dk_ptr + (dk_rows * T + last) * C_PAD + c_first + col
    dk_mask = (col < BLOCK_C) & (c_first + col < C)

    x_off = _offsets3(offs_o, offs_c, offs_i, sx_o, sx_c, sx_i)
    k_first = k_ptr + t0.to(tl.int64) * sk_t + offs_c * sk_c
    if RECOMPUTE:
        # No stored membrane: a forward sweep keeps the membrane entering every segment of
        # SEG steps (checkpoint row m: after step (m + 1) * SEG - 1, in a [rows, *step]
        # buffer laid out like one output step); the reverse pass replays each step's
        # segment from its checkpoint in registers.
        v = v0
        s = s0
        for t in range(T):
            kf = tl.sigmoid(tl.load(k_first + t * sk_t, mask=mask_c, other=0.0).to(CDT))
            coef_kf = _coef_k(kf, b, GATE_MODE)[None, :, None]
            xf = tl.load(x_ptr + x_off + t * sx_t, mask=mask, other=0.0).to(CDT)
            v = _membrane(v, s, xf, coef_d, coef_g, coef_l, coef_kf, coef_r)
            s = tl.where(v - theta >= 0.0, 1.0, 0.0).to(CDT)
            row = (t + 1) // SEG - 1
            is_ck = ((t + 1) % SEG == 0) & (t + 1 < T)
            tl.store(ck_ptr + out_off + row.to(tl.int64) * so_t, v, mask=mask & is_ck)
    else:
        u = tl.load(u_ptrs, mask=mask, other=0.0).to(CDT)
    for it in range(T):
        if RECOMPUTE:
            t = T - 1 - it
            seg = t // SEG  # replay steps seg * SEG .. t - 1 from the checkpoint before them
            ck = tl.load(
                ck_ptr + out_off + (seg - 1).to(tl.int64) * so_t, mask=mask & (seg > 0), other=0.0
            )
            u_prev = tl.where(seg > 0, ck.to(CDT), v0)
            s_prev = tl.where(seg > 0, tl.where(ck - theta >= 0.0, 1.0, 0.0).to(CDT), s0)
            for j in range(seg * SEG, t):
                kj = tl.sigmoid(tl.load(k_first + j * sk_t, mask=mask_c, other=0.0).to(CDT))
                coef_kj = _coef_k(kj, b, GATE_MODE)[None, :, None]
                xj = tl.load(x_ptr + x_off + j * sx_t, mask=mask, other=0.0).to(CDT)
                u_prev = _membrane(u_prev, s_prev, xj, coef_d, coef_g, coef_l, coef_kj, coef_r)
                s_prev = tl.where(u_prev - theta >= 0.0, 1.0, 0.0).to(CDT)
        else:
            has_prev = it < T - 1  # t > 0: the previous state is read from u_seq, else v0, s0
            u_prev = tl.load(u_ptrs - so_t, mask=mask & has_prev, other=0.0).to(CDT)
            s_prev = tl.where(u_prev - theta >= 0.0, 1.0, 0.0).to(CDT)
            u_prev = tl.where(has_prev, u_prev, v0)
            s_prev = tl.where(has_prev, s_prev, s0)

        k = tl.sigmoid(tl.load(k_ptrs, mask=mask_c, other=0.0).to(CDT))
        coef_k = _coef_k(k, b, GATE_MODE)
        x = tl.load(x_ptrs, mask=mask, other=0.0).to(CDT)
        if RECOMPUTE:
            u = _membrane(u_prev, s_prev, x, coef_d, coef_g, coef_l, coef_k[None, :, None], coef_r)
        if HAS_GSP:
            ds = tl.load(gs_ptrs, mask=mask, other=0.0).to(CDT) + gs
        else:
            ds = gs
        sg_ds = _surrogate(u - theta, alpha_sg, SURROGATE, CDT) * ds
        du = gv + sg_ds
        if HAS_GU:
            du += tl.load(gu_ptrs, mask=mask, other=0.0).to(CDT)
        du = tl.where(mask, du, 0.0)
        sg_ds = tl.where(mask, sg_ds, 0.0)

        hr = 1.0 - coef_g * s_prev
        tl.store(dx_ptrs, (coef_k[None, :, None] * du).to(dx_ptr.dtype.element_ty), mask=mask)
        # conduct: reduced within each warp's sub-tile only (no block barrier in the loop)
        dk_w = _warp_sums(du * x, NW, SPLIT_O, BLOCK_O, BLOCK_C, BLOCK_I)  # [NW, BLOCK_C]
        dk_row = tl.broadcast_to(dk_w[:, None, :], [NW, LANES, BLOCK_C])
        tl.store(dk_ptrs, tl.reshape(dk_row, [NW, LANES * BLOCK_C]), mask=dk_mask)
        if GATE_MODE != 2:
            acc_beta += dk_w * (1.0 - k)[None, :]

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
            gs = tl.zeros([BLOCK_O, BLOCK_C, BLOCK_I], CDT)
        else:
            gs = du * (-coef_g * coef_d * u_prev - coef_r)
        u = u_prev

        u_ptrs -= so_t
        dx_ptrs -= so_t
        x_ptrs -= sx_t
        if HAS_GSP:
            gs_ptrs -= sgs_t
        if HAS_GU:
            gu_ptrs -= sgu_t
        k_ptrs -= sk_t
        dk_ptrs -= C_PAD

    if HAS_V0:  # a zero state given as None has no gradient slot
        tl.store(dv0_ptr + out_off, gv.to(dv0_ptr.dtype.element_ty), mask=mask)
    if HAS_S0:
        tl.store(ds0_ptr + out_off, gs.to(ds0_ptr.dtype.element_ty), mask=mask)

    sum_d = _sum_but_channel(acc_d)  # dD
    sum_us = _sum_but_channel(acc_us)  # dGh = -D * sum_us
    sum_du = _sum_but_channel(acc_du)  # dL = -sum_du
    sum_s = _sum_but_channel(acc_s)  # dR = -sum_s
    sum_th = _sum_but_channel(acc_th)  # dtheta = -sum_th

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
        d_beta = -tl.sum(acc_beta, axis=0) * sb * (1.0 - sb)
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


@triton.jit
def _sum_rows(
    ptr, col, row_stride, R, offs_c, mask_c, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr
):
    """``sum_r ptr[r * row_stride + col + c]`` over ``r < R`` for the channels ``offs_c``,
    in a fixed order (deterministic)."""
    rows = tl.arange(0, BLOCK_R).to(tl.int64)
    acc = tl.zeros([BLOCK_R, BLOCK_C], ptr.dtype.element_ty)
    for r0 in range(0, R, BLOCK_R):
        r = r0 + rows
        m = (r < R)[:, None] & mask_c[None, :]
        acc += tl.load(ptr + (r * row_stride + col)[:, None] + offs_c[None, :], mask=m, other=0.0)
    return tl.sum(acc, axis=0)


@triton.jit
def _finish_param(dpar_ptr, j, out_ptr, pid_c, N_CSUB, C, R, LW: tl.constexpr,
                  BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):  # fmt: skip
    """Parameter ``j``'s gradient: the sum of its rows in ``dpar`` (``[R, 7, C]``); a
    layer-wise (``LW``) parameter's is also summed over the channels."""
    total = tl.zeros([], dpar_ptr.dtype.element_ty)
    for cs in range(N_CSUB):
        offs_c = (pid_c * N_CSUB + cs) * BLOCK_C + tl.arange(0, BLOCK_C)
        mask_c = offs_c < C
        val = _sum_rows(dpar_ptr, j * C, 7 * C, R, offs_c, mask_c, BLOCK_R, BLOCK_C)
        if LW:
            total += tl.sum(tl.where(mask_c, val, 0.0))
        else:
            tl.store(out_ptr + offs_c, val.to(out_ptr.dtype.element_ty), mask=mask_c)
    if LW:
        tl.store(out_ptr, total.to(out_ptr.dtype.element_ty))


@triton.jit(do_not_specialize=["T", "t0", "T_ROWS"])
def _glif_finish_kernel(
    dpar_ptr, dk_ptr, beta_ptr, k_ptr,
    g_alpha, g_beta, g_gamma, g_tau, g_vth, g_vl, g_vr, g_k,
    T, t0, T_ROWS, C, C_PAD, R_PAR, R_K, N_CSUB,
    sp_beta, sk_t, sk_c, sdk_t, sdk_c,
    GATE_MODE: tl.constexpr, LW_BITS: tl.constexpr, CDT: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Finish the backward: program ``(cb, r)`` with ``r < T`` writes ``d_conduct`` row
    ``t0 + r`` for channel block ``cb`` from the per-warp partials ``dk`` (``[R_K, T, C_PAD]``);
    ``r == T`` writes the seven other parameter gradients from ``dpar`` (``[R_PAR, 7, C]``)
    and zeroes the ``d_conduct`` rows outside ``t0 … t0 + T - 1``. Bit ``j`` of ``LW_BITS``
    marks parameter ``j`` (7: conduct) as layer-wise: its gradient is summed over channels
    (then the grid has one channel block and ``N_CSUB`` sub-blocks)."""
    pid_c = tl.program_id(0).to(tl.int64)
    r = tl.program_id(1).to(tl.int64)
    if r < T:
        t = t0.to(tl.int64) + r
        total = tl.zeros([], CDT)
        for cs in range(N_CSUB):
            offs_c = (pid_c * N_CSUB + cs) * BLOCK_C + tl.arange(0, BLOCK_C)
            mask_c = offs_c < C
            row_stride = T.to(tl.int64) * C_PAD
            dk = _sum_rows(dk_ptr, r * C_PAD, row_stride, R_K, offs_c, mask_c, BLOCK_R, BLOCK_C)
            k = tl.sigmoid(
                tl.load(k_ptr + t * sk_t + offs_c * sk_c, mask=mask_c, other=0.0).to(CDT)
            )
            if GATE_MODE == 2:
                val = dk * k * (1.0 - k)
            else:
                b, _sb = _gate(_load_param(beta_ptr, offs_c, sp_beta, mask_c, CDT), GATE_MODE)
                val = dk * b * k * (1.0 - k)
            if (LW_BITS >> 7) & 1:
                total += tl.sum(tl.where(mask_c, val, 0.0))
            else:
                tl.store(g_k + t * sdk_t + offs_c, val.to(g_k.dtype.element_ty), mask=mask_c)
        if (LW_BITS >> 7) & 1:
            tl.store(g_k + t * sdk_t, total.to(g_k.dtype.element_ty))
    else:
        _finish_param(dpar_ptr, 0, g_alpha, pid_c, N_CSUB, C, R_PAR, LW_BITS & 1, BLOCK_R, BLOCK_C)
        _finish_param(dpar_ptr, 1, g_beta, pid_c, N_CSUB, C, R_PAR, (LW_BITS >> 1) & 1,
                      BLOCK_R, BLOCK_C)  # fmt: skip
        _finish_param(dpar_ptr, 2, g_gamma, pid_c, N_CSUB, C, R_PAR, (LW_BITS >> 2) & 1,
                      BLOCK_R, BLOCK_C)  # fmt: skip
        _finish_param(dpar_ptr, 3, g_tau, pid_c, N_CSUB, C, R_PAR, (LW_BITS >> 3) & 1,
                      BLOCK_R, BLOCK_C)  # fmt: skip
        _finish_param(dpar_ptr, 4, g_vth, pid_c, N_CSUB, C, R_PAR, (LW_BITS >> 4) & 1,
                      BLOCK_R, BLOCK_C)  # fmt: skip
        _finish_param(dpar_ptr, 5, g_vl, pid_c, N_CSUB, C, R_PAR, (LW_BITS >> 5) & 1,
                      BLOCK_R, BLOCK_C)  # fmt: skip
        _finish_param(dpar_ptr, 6, g_vr, pid_c, N_CSUB, C, R_PAR, (LW_BITS >> 6) & 1,
                      BLOCK_R, BLOCK_C)  # fmt: skip
        # d_conduct rows this call did not touch are zero
        for tr in range(T_ROWS):
            outside = (tr < t0) | (tr >= t0 + T)
            for cs in range(N_CSUB):
                offs_c = (pid_c * N_CSUB + cs) * BLOCK_C + tl.arange(0, BLOCK_C)
                m = (offs_c < C) & outside
                zero = tl.zeros([BLOCK_C], g_k.dtype.element_ty)
                tl.store(g_k + tr * sdk_t + offs_c * sdk_c, zero, mask=m)


# --------------------------------------------------------------------------- host side


# Plain integer helpers: triton.cdiv / next_power_of_2 are constexpr functions in recent
# Triton, with a wrapper that costs microseconds a call on the launch path.
def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _tl_dtype(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _geometry(step_shape: torch.Size, channel_dim: int, channelwise: bool) -> tuple[int, int, int]:
    """``(outer, C, inner)`` of one step's ``[outer, C, inner]`` view."""
    nd = len(step_shape)
    if not -nd <= channel_dim < nd:
        raise ValueError(
            f"channel_dim {channel_dim} is out of range for a step of shape {tuple(step_shape)}"
        )
    channel_dim %= nd
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


def _axis_order(sizes: tuple[int, int, int], strides: tuple[int, ...]) -> list[int]:
    """Axes of ``[outer, C, inner]`` by increasing memory stride (size-1 axes last)."""
    return sorted(range(3), key=lambda ax: (strides[ax] if sizes[ax] > 1 else math.inf, -ax))


def _config(kernel: str, sizes: tuple[int, int, int], strides: tuple[int, ...], x_dtype) -> tuple:
    """``(elements per thread, warps)`` from :data:`_CONFIG` for this layout class."""
    layout = "cl" if _axis_order(sizes, strides)[0] == 1 else "cf"
    return _CONFIG[(kernel, layout, x_dtype.itemsize)]


def _blocks(
    sizes: tuple[int, int, int], strides: tuple[int, ...], tile: int
) -> tuple[int, int, int]:
    """``(BLOCK_O, BLOCK_C, BLOCK_I)``: fill ``tile`` along the axes by increasing stride of x,
    the channel axis capped at ``tile / _MIN_POSITIONS``."""
    blocks = [1, 1, 1]
    budget = tile
    c_cap = max(1, tile // _MIN_POSITIONS)
    for ax in _axis_order(sizes, strides):
        cap = min(budget, c_cap) if ax == 1 else budget
        blocks[ax] = min(_next_pow2(sizes[ax]), cap)
        budget //= blocks[ax]
    return blocks[0], blocks[1], blocks[2]


@functools.lru_cache(maxsize=1024)
def _fwd_launch(sizes: tuple[int, int, int], strides: tuple[int, ...], x_dtype) -> tuple:
    """The forward's launch geometry for one ``[outer, C, inner]`` layout (cached: the
    host work of a launch is paid once per shape): ``(warps, BLOCK_O, BLOCK_C, BLOCK_I,
    channel blocks, inner blocks, grid)``."""
    outer, C, inner = sizes
    ept, warps = _config("fwd", sizes, strides, x_dtype)
    bo, bc, bi = _blocks(sizes, strides, ept * _WARP_SIZE * warps)
    n_cb, n_ib = _cdiv(C, bc), _cdiv(inner, bi)
    return warps, bo, bc, bi, n_cb, n_ib, (_cdiv(outer, bo) * n_ib * n_cb,)


@functools.lru_cache(maxsize=1024)
def _bwd_launch(sizes: tuple[int, int, int], strides: tuple[int, ...], x_dtype) -> tuple:
    """The backward's launch geometry for one layout (cached): ``(warps, BLOCK_C,
    SPLIT_O, BLOCK_O, BLOCK_I, LANES, channel blocks, inner blocks, programs per channel
    block, padded C)``."""
    outer, C, inner = sizes
    cdt = _compute_dtype(x_dtype)
    ept, warps = _config("bwd", sizes, strides, x_dtype)
    bo, bc, bi = _blocks(sizes, strides, ept * _WARP_SIZE)  # one warp's sub-tile
    split_o = inner <= bi  # stack the warps' sub-tiles along inner while it has room
    bo_t, bi_t = (bo * warps, bi) if split_o else (bo, bi * warps)  # the program's tile
    # channels per thread in the sub-tile: a vector along C in channel-last layouts
    c_vec = min(bc, ept, 16 // cdt.itemsize)
    lanes = max(1, _WARP_SIZE * (c_vec if _axis_order(sizes, strides)[0] == 1 else 1) // bc)
    n_cb = _cdiv(C, bc)
    n_ib = _cdiv(inner, bi_t)
    n_p = _cdiv(outer, bo_t) * n_ib
    c_pad = _cdiv(C, 16) * 16  # aligned rows: 16-byte per-warp partial stores
    return warps, bc, split_o, bo_t, bi_t, lanes, n_cb, n_ib, n_p, c_pad


def _param_strides(params: tuple[torch.Tensor, ...], C: int, channelwise: bool) -> list[int]:
    """Channel stride of each raw ``[C]``/``[]`` parameter (0 for a layer-wise one)."""
    out = []
    for p in params:
        st = p.stride()  # () for a layer-wise parameter: one call answers both questions
        if st:
            # (plain int tests: torch.Size == tuple is slow, through symbolic shapes)
            if len(st) != 1 or p.shape[0] != C:
                raise ValueError(
                    f"a [C] parameter must have the input's {C} channels at channel_dim, "
                    f"got shape {tuple(p.shape)}"
                )
            out.append(st[0])
        else:
            out.append(0)
    return out


def _conduct_strides(conduct: torch.Tensor, C: int, t0: int, t_end: int) -> tuple[int, int]:
    if conduct.dim() not in (1, 2) or t0 < 0 or conduct.shape[0] < t_end:
        raise ValueError(
            f"conduct must be [T_rows, C] or [T_rows] with rows {t0}..{t_end - 1}, "
            f"got shape {tuple(conduct.shape)}"
        )
    if conduct.dim() == 1:  # layer-wise (also among channel-wise parameters)
        return conduct.stride(0), 0
    if conduct.shape[1] != C:
        raise ValueError(f"conduct must be [T_rows, {C}], got shape {tuple(conduct.shape)}")
    return conduct.stride(0), conduct.stride(1)


_FLOAT_DTYPES = frozenset((torch.float16, torch.bfloat16, torch.float32, torch.float64))


def _check_call(x: torch.Tensor, gate_mode: int) -> None:
    if x.dtype not in _FLOAT_DTYPES:
        raise ValueError(
            f"x must be a floating tensor (float16, bfloat16, float32, float64), got {x.dtype}"
        )
    if x.dim() < 2:
        raise ValueError(f"x must be [T, *step_shape], got shape {tuple(x.shape)}")
    if gate_mode not in (0, 1, 2):
        raise ValueError(f"gate_mode must be 0 (soft), 1 (hard) or 2 (coarse), got {gate_mode}")


def _check_steps(x: torch.Tensor, named: tuple) -> None:
    """Step-shaped tensors (None: absent) of an input without elements, which no kernel
    reads: checked here, so that none is returned or copied with another shape."""
    for name, t in named:
        if t is not None and t.shape != x.shape[1:]:
            raise ValueError(
                f"{name} must have one step's shape {tuple(x.shape[1:])}, got {tuple(t.shape)}"
            )


def _is_channelwise(*params: torch.Tensor) -> bool:
    return any(p.dim() > 0 for p in params)


@functools.lru_cache(maxsize=1024)
def _shapes(shape: torch.Size, channel_dim: int, channelwise: bool) -> tuple:
    """For ``x`` of ``shape`` (``[T, *step_shape]``): ``(step_shape as a tuple, [outer, C,
    inner], the contiguous strides of [T, outer, C, inner])``; cached per shape (plain
    tuples also allocate faster than a ``torch.Size``)."""
    step = tuple(shape[1:])
    outer, C, inner = _geometry(step, channel_dim, channelwise)
    return step, (outer, C, inner), (outer * C * inner, C * inner, inner, 1)


def _seq4(t: torch.Tensor, shape3: tuple[int, int, int], strides4: tuple[int, ...]):
    """``(t, its strides as [T, outer, C, inner])`` for a ``[T, *step_shape]`` tensor whose
    contiguous strides as that view are ``strides4``: a contiguous ``t`` needs no view
    object (the kernels take a pointer and strides); otherwise :func:`_view` (a copy only
    when the strides cannot be merged)."""
    if t.is_contiguous():
        return t, strides4
    t4 = _view(t, (t.shape[0], *shape3))
    return t4, t4.stride()


def _state3(t: torch.Tensor | None, shape3: tuple[int, int, int], step_shape, name: str):
    """A step-shaped tensor as ``[outer, C, inner]`` and its strides; ``None`` stays None."""
    if t is None:
        return None, (0, 0, 0)
    if tuple(t.shape) != tuple(step_shape):
        raise ValueError(
            f"{name} must have one step's shape {tuple(step_shape)}, got {tuple(t.shape)}"
        )
    t3 = _view(t, shape3)
    return t3, t3.stride()


def glif_fwd(
    x: torch.Tensor,
    v0: torch.Tensor | None,
    s0: torch.Tensor | None,
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
    store_u: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """GLIF forward over ``T`` steps in one launch.

    Args:
        x: input ``[T, *step_shape]`` (float16/bfloat16/float32/float64, any strides).
        v0, s0: initial membrane and previous spike, ``step_shape``; ``None`` means zero
            (a compile-time flag: nothing is allocated or read).
        alpha, beta, gamma: raw gates ``[C]`` or ``[]`` (not read for ``gate_mode=2``).
        tau, v_threshold, linear_decay, v_subreset: raw parameters ``[C]`` or ``[]``.
        conduct: raw conductance ``[T_rows, C]`` or ``[T_rows]``; step ``t`` uses row ``t0 + t``.
        t0: first conduct row. channel_dim: channel axis of ``step_shape`` (non-negative).
        gate_mode: 0 soft, 1 hard (straight-through), 2 coarse (GLIF_f, no gates).
        store_u: also return every membrane ``u_t`` (:func:`glif_bwd` reads it unless
            :data:`BWD_RECOMPUTES_U`).

    Returns:
        ``(spike_seq, v_last, s_last, u_seq)``: spikes like ``x`` (its dtype, contiguous);
        the final membrane and final spike, ``step_shape`` in the compute dtype (float64 for
        float64 input, else float32), both written by the kernel; ``u_seq``
        ``[T, *step_shape]`` in the compute dtype, or None without ``store_u``.
        Each ``x``/``v0``/``s0`` whose strides cannot be merged into the
        ``[T, outer, C, inner]`` view is copied once with ``.contiguous()``.

    Example::

        >>> C = 4; raw = torch.zeros(C, device="cuda")
        >>> spike, v, s, _ = glif_fwd(torch.rand(3, 2, C, device="cuda"), None, None,
        ...     *[raw] * 7, torch.zeros(3, C, device="cuda"), t0=0, channel_dim=1,
        ...     gate_mode=0, store_u=False)
    """
    _check_call(x, gate_mode)
    T = x.shape[0]
    cdt = _compute_dtype(x.dtype)
    dev = x.device
    spike = _empty_as(x)
    u_seq = _empty(x.shape, dtype=cdt, device=dev) if store_u else None
    if T == 0 or x.numel() == 0:  # no step: the state is unchanged
        _check_steps(x, (("v0", v0), ("s0", s0)))
        state = [
            torch.zeros(x.shape[1:], dtype=cdt, device=dev) if t is None else t.to(cdt, copy=True)
            for t in (v0, s0)
        ]
        return spike, state[0].contiguous(), state[1].contiguous(), u_seq

    params = (alpha, beta, gamma, tau, v_threshold, linear_decay, v_subreset)
    if gate_mode == _GATE_COARSE:
        params = (tau, tau, tau, *params[3:])  # the gates are never read
    channelwise = _is_channelwise(*params) or conduct.dim() == 2
    step_shape, shape3, cs4 = _shapes(x.shape, channel_dim, channelwise)
    outer, C, inner = shape3
    v_last = _empty(step_shape, dtype=cdt, device=dev)
    s_last = _empty(step_shape, dtype=cdt, device=dev)
    sp = _param_strides(params, C, channelwise)
    sk = _conduct_strides(conduct, C, t0, t0 + T)

    x4, xs4 = _seq4(x, shape3, cs4)
    v3, sv = _state3(v0, shape3, step_shape, "v0")
    s3, ss = _state3(s0, shape3, step_shape, "s0")
    warps, bo, bc, bi, n_cb, n_ib, grid = _fwd_launch(shape3, xs4[1:], x.dtype)
    _glif_fwd_kernel[grid](
        x4, x4 if v3 is None else v3, x4 if s3 is None else s3, *params, conduct,
        spike, u_seq if store_u else spike, v_last, s_last,
        T, t0, outer, C, inner, n_cb, n_ib,
        *xs4, *sv, *ss, *sp, *sk,
        outer * C * inner, C * inner, inner,
        GATE_MODE=gate_mode, STORE_U=store_u, HAS_V0=v3 is not None, HAS_S0=s3 is not None,
        CDT=_tl_dtype(cdt), BLOCK_O=bo, BLOCK_C=bc, BLOCK_I=bi, num_warps=warps,
    )  # fmt: skip
    return spike, v_last, s_last, u_seq


def glif_bwd(
    grad_spike: torch.Tensor | None,
    grad_v_last: torch.Tensor | None,
    grad_s_last: torch.Tensor | None,
    grad_u_seq: torch.Tensor | None,
    x: torch.Tensor,
    v0: torch.Tensor | None,
    s0: torch.Tensor | None,
    u_seq: torch.Tensor | None,
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
) -> tuple[torch.Tensor, ...]:
    """GLIF backward over ``T`` steps (reverse time) in two launches: the reverse-time
    kernel, then the finish kernel that reduces the partial parameter gradients.

    Args:
        grad_spike: gradient of ``spike_seq``, ``[T, *step_shape]``, any strides (stride-0
            expanded included), or ``None`` (zero).
        grad_v_last, grad_s_last: gradients of the final membrane and final spike
            (``step_shape``; ``grad_s_last`` enters unrounded, in any float dtype), or ``None``.
        grad_u_seq: gradient of ``u_seq`` (``[T, *step_shape]``) or ``None`` (zero).
        x: the forward's input. v0, s0: its initial state, or ``None`` (zero).
        u_seq: the forward's membrane stream ``[T, *step_shape]`` (compute dtype), or
            ``None``: the kernel then recomputes it from ``x`` (:data:`BWD_RECOMPUTES_U`;
            one more read of ``x`` and a checkpoint every ``_SEGMENT`` steps instead of
            the stored stream).
        alpha … conduct, t0, channel_dim, gate_mode: as in :func:`glif_fwd`.
        surrogate_id: 0 sigmoid, 1 atan, 2 piecewise_quadratic, 3 piecewise_exp,
            4 soft_sign, 5 super_spike, 6 erf, 7 rect (:mod:`sj_glif.surrogates`);
            ``sg_alpha`` its ``alpha`` (used in the compute dtype, passed as float32).
        detach_reset: no gradient through ``s_{t-1}`` in the reset terms.

    Returns:
        ``(dx, dv0, ds0, d_alpha, d_beta, d_gamma, d_tau, d_v_threshold, d_linear_decay,
        d_v_subreset, d_conduct)``: ``dx`` like ``x`` (contiguous), ``dv0``/``ds0``
        ``step_shape`` in the compute dtype (None where ``v0``/``s0`` is None: a zero state
        has no gradient, and none is computed), and each parameter gradient a tensor of its
        own (no views of a shared buffer), shaped and typed like its parameter: zeros for
        the gates in coarse mode, ``d_conduct`` rows outside ``t0 … t0 + T - 1`` zero.
    """
    _check_call(x, gate_mode)
    if not 0 <= surrogate_id <= 7:
        raise ValueError(f"surrogate_id must be 0..7, got {surrogate_id}")
    T = x.shape[0]
    if u_seq is not None and u_seq.shape != x.shape:
        raise ValueError(
            f"u_seq must have the input's shape {tuple(x.shape)}, got {tuple(u_seq.shape)}"
        )
    cdt = _compute_dtype(x.dtype)
    dev = x.device
    params = (alpha, beta, gamma, tau, v_threshold, linear_decay, v_subreset)
    grads = [_empty_as(p) for p in (*params, conduct)]
    dx = _empty_as(x)
    # a zero state given as None has no gradient: None, nothing allocated or written
    dv0 = None if v0 is None else _empty(x.shape[1:], dtype=cdt, device=dev)
    ds0 = None if s0 is None else _empty(x.shape[1:], dtype=cdt, device=dev)
    if T == 0 or x.numel() == 0:  # no step: v_last is v0 and s_last is s0
        _check_steps(x, (("v0", v0), ("s0", s0), ("grad_v_last", grad_v_last),
                         ("grad_s_last", grad_s_last)))  # fmt: skip
        for g in (dx, *grads):
            g.zero_()
        for d, g in ((dv0, grad_v_last), (ds0, grad_s_last)):
            if d is not None:
                d.zero_() if g is None else d.copy_(g)
        return dx, dv0, ds0, *grads

    kernel_params = params
    if gate_mode == _GATE_COARSE:
        kernel_params = (tau, tau, tau, *params[3:])  # the gates are never read
    channelwise = _is_channelwise(*params) or conduct.dim() == 2
    step_shape, shape3, cs4 = _shapes(x.shape, channel_dim, channelwise)
    outer, C, inner = shape3
    sp = _param_strides(kernel_params, C, channelwise)
    sk = _conduct_strides(conduct, C, t0, t0 + T)

    x4, xs4 = _seq4(x, shape3, cs4)
    recompute = u_seq is None
    if recompute:  # checkpoint rows laid out like output steps; at least one row to point at
        u4 = _empty((max(_cdiv(T, _SEGMENT) - 1, 1), *shape3), dtype=cdt, device=dev)
    else:
        u4 = u_seq.contiguous()  # the kernel reads u_seq with the output strides
    seq = [(None, (0, 0, 0, 0))] * 2  # grad_spike, grad_u_seq and their strides
    for i, (name, t) in enumerate((("grad_spike", grad_spike), ("grad_u_seq", grad_u_seq))):
        if t is not None:
            if t.shape != x.shape:
                raise ValueError(
                    f"{name} must have the input's shape {tuple(x.shape)}, got {tuple(t.shape)}"
                )
            seq[i] = _seq4(t, shape3, cs4)
    (gs4, sgs), (gu4, sgu) = seq
    v3, sv = _state3(v0, shape3, step_shape, "v0")
    s3, ss = _state3(s0, shape3, step_shape, "s0")
    gv3, sgv = _state3(grad_v_last, shape3, step_shape, "grad_v_last")
    gsl3, sgsl = _state3(grad_s_last, shape3, step_shape, "grad_s_last")

    warps, bc, split_o, bo_t, bi_t, lanes, n_cb, n_ib, n_p, c_pad = _bwd_launch(
        shape3, xs4[1:], x.dtype
    )
    dpar = _empty((n_p, _N_PARAM_ROWS, C), dtype=cdt, device=dev)
    dk = _empty((n_p * warps, T, c_pad), dtype=cdt, device=dev)
    _glif_bwd_kernel[(n_p * n_cb,)](
        x4 if gs4 is None else gs4, x4 if gv3 is None else gv3,
        x4 if gsl3 is None else gsl3, x4 if gu4 is None else gu4,
        x4, x4 if v3 is None else v3, x4 if s3 is None else s3, x4 if recompute else u4,
        *kernel_params, conduct,
        dx, dv0 if v3 is not None else dx, ds0 if s3 is not None else dx, dpar, dk, u4,
        T, t0, outer, C, inner, n_cb, n_ib, c_pad,
        *sgs, *sgv, *sgsl, *sgu, *xs4, *sv, *ss, *sp, *sk,
        outer * C * inner, C * inner, inner,
        float(sg_alpha),
        GATE_MODE=gate_mode, SURROGATE=surrogate_id, DETACH_RESET=detach_reset,
        HAS_GSP=gs4 is not None, HAS_GV=gv3 is not None, HAS_GS=gsl3 is not None,
        HAS_GU=gu4 is not None, HAS_V0=v3 is not None, HAS_S0=s3 is not None,
        RECOMPUTE=recompute, SEG=_SEGMENT,
        CDT=_tl_dtype(cdt), NW=warps, SPLIT_O=split_o, LANES=lanes,
        BLOCK_O=bo_t, BLOCK_C=bc, BLOCK_I=bi_t, num_warps=warps,
    )  # fmt: skip

    lw_bits = sum(1 << j for j, p in enumerate(params) if p.dim() == 0)
    lw_bits |= (conduct.dim() == 1) << 7
    block_c = min(_next_pow2(C), _FINISH_C)
    mixed = lw_bits != 0 and C > 1  # a layer-wise gradient sums over every channel block
    n_csub = _cdiv(C, block_c) if mixed else 1
    d_k = grads[7]
    _glif_finish_kernel[(1 if mixed else _cdiv(C, block_c), T + 1)](
        dpar, dk, kernel_params[1], conduct, *grads,
        T, t0, conduct.shape[0], C, c_pad, n_p, n_p * warps, n_csub,
        sp[1], *sk, d_k.stride(0), d_k.stride(1) if d_k.dim() == 2 else 0,
        GATE_MODE=gate_mode, LW_BITS=lw_bits, CDT=_tl_dtype(cdt),
        BLOCK_R=_FINISH_ROWS, BLOCK_C=block_c, num_warps=4,
    )  # fmt: skip
    return dx, dv0, ds0, *grads
