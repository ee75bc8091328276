"""``sj_glif.cpu``: the fused C++ CPU implementation (backend ``"cpp"``).

Oracle: ``sj_glif.reference.glif_reference`` (float64 autograd), and ``gradcheck`` on the
membranes. The library is built once per machine and cached on disk (the first test to
need it builds it; later processes and test runs load it), so these tests cost one build
per CI cache, not one per test.

Tolerances. float64: the C++ loop and the reference do the same float64 arithmetic in a
different order (fused multiply-adds, per-tile then per-item sums), so values agree to a
few ulps: 1e-12 on membranes, 1e-10 on gradients (sums over a batch and T steps).
Lower precision: data-derived, the C++ error against the float64 reference must be at
most twice the error of the reference itself run on the same low-precision input (plus a
floor of a few ulps of the dtype for values that the reference happens to get exact).
Spikes are compared exactly after asserting no membrane sits within rounding reach of
its threshold.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from spikingjelly.activation_based import surrogate
from test_ops import make_inputs, make_params  # the same random cases as the torch path

from sj_glif import GLIFNode, cpu, implementation_for
from sj_glif.ops import ENV_VAR, glif_multi_step
from sj_glif.reference import GATE_MODES, glif_reference
from sj_glif.surrogates import SURROGATES

F16, BF16, F32, F64 = torch.float16, torch.bfloat16, torch.float32, torch.float64
PARAMS = ("alpha", "beta", "gamma", "tau", "v_threshold", "linear_decay", "v_subreset", "conduct")
GATES = ("alpha", "beta", "gamma")
FUSED = {cls.__name__: cls for cls, _ in SURROGATES.values()}
TOL64 = (dict(rtol=1e-12, atol=1e-12), dict(rtol=1e-10, atol=1e-10))

# A machine without any C++ compiler runs only the fallback tests; wherever a compiler
# exists, a build failure fails these tests instead of skipping them.
_FALLBACK_TESTS = {
    "test_failed_build_falls_back_with_one_log_line",
    "test_missing_compiler_in_a_fresh_process",
}


@pytest.fixture(autouse=True)
def _needs_a_compiler(request):
    if (
        request.node.originalname not in _FALLBACK_TESTS
        and shutil.which(os.environ.get("CXX", "c++")) is None
    ):
        pytest.skip("no C++ compiler on this machine")


# --------------------------------------------------------------------------- helpers


def run(impl, x, v0, s0, params, channel_dim=1, store_v_seq=True, **kw):
    """``(spike_seq, v_seq or None, v_last, s_last)`` of ``impl`` ("cpp", "torch",
    "reference")."""
    if impl == "reference":
        cd = channel_dim % (x.dim() - 1)
        spikes, v_seq, v_last, s_last = glif_reference(x, v0, s0, **params, channel_dim=cd, **kw)
        return spikes, v_seq if store_v_seq else None, v_last, s_last
    out = glif_multi_step(x, v0, s0, **params, channel_dim=channel_dim, store_v_seq=store_v_seq,
                          backend=impl, **kw)  # fmt: skip
    return out.spike_seq, out.v_seq, out.v_last, out.s_last


def with_grads(impl, x, v0, s0, params, seed=99, **kw):
    """Outputs of ``impl`` and the gradients of one random-weighted scalar loss over all
    of them w.r.t. x, v0, s0 and every parameter (zeros where autograd never reached)."""
    x, v0, s0 = (t.detach().clone().requires_grad_() for t in (x, v0, s0))
    p = {n: None if t is None else t.detach().clone().requires_grad_() for n, t in params.items()}
    outs = run(impl, x, v0, s0, p, **kw)
    g = torch.Generator().manual_seed(seed)
    loss = 0
    for out in outs:
        if out is not None:
            loss = (
                loss
                + (out * (torch.rand(out.shape, generator=g, dtype=F64) - 0.5).to(out.dtype)).sum()
            )
    leaves = {"x": x, "v0": v0, "s0": s0, **{n: t for n, t in p.items() if t is not None}}
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    grads = {n: torch.zeros_like(t) if gr is None else gr
             for (n, t), gr in zip(leaves.items(), grads, strict=True)}  # fmt: skip
    return [None if o is None else o.detach() for o in outs], grads


def margin(v_seq, raw_theta, channel_dim):
    """Smallest |u_t - theta|: how close any neuron came to flipping its spike."""
    theta = torch.sigmoid(raw_theta.detach().to(v_seq.dtype))
    if theta.dim():
        shape = [1] * (v_seq.dim() - 1)
        shape[channel_dim] = -1
        theta = theta.reshape(shape)
    return float((v_seq - theta).abs().min())


def check_against_reference(x, v0, s0, params, channel_dim=1, store_v_seq=True, **kw):
    """float64: cpp outputs and gradients equal the reference's; returns the cpp grads."""
    outs, grads = with_grads("cpp", x, v0, s0, params, channel_dim=channel_dim,
                             store_v_seq=store_v_seq, **kw)  # fmt: skip
    ref_outs, ref_grads = with_grads("reference", x, v0, s0, params, channel_dim=channel_dim,
                                     store_v_seq=store_v_seq, **kw)  # fmt: skip
    cd = channel_dim % (x.dim() - 1)
    assert margin(ref_outs[1] if store_v_seq else run("reference", x, v0, s0, params,
                  channel_dim=channel_dim, **kw)[1], params["v_threshold"], cd) > 1e-9  # fmt: skip
    assert 0 < ref_outs[0].sum() < ref_outs[0].numel(), "the case should fire and not fire"
    assert outs[0].dtype == x.dtype and torch.equal(outs[0], ref_outs[0]), "spike_seq"
    for name, a, b in zip(("v_seq", "v_last", "s_last"), outs[1:], ref_outs[1:], strict=True):
        if b is None:
            assert a is None
            continue
        assert a.dtype == b.dtype, name
        torch.testing.assert_close(a, b, **TOL64[0], msg=name)
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], **TOL64[1], msg=f"grad {name}")
    return grads


# --------------------------------------------------------------------------- against the reference

T, STEP = 5, (2, 3, 2)  # [B, C, W], channel at 1
ROWS, T0 = T + 2, 2  # conduct has spare rows; the call uses rows 2..6


@pytest.mark.parametrize("sg_name", list(FUSED))
@pytest.mark.parametrize("detach_reset", [False, True], ids=["attached", "detach_reset"])
@pytest.mark.parametrize("gate_mode", GATE_MODES)
def test_cpp_matches_reference(gate_mode, detach_reset, sg_name):
    """float64, random initial state, t0 > 0, the training path (membranes recomputed in
    the backward): spikes, final state and the gradients of x, v0, s0 and all eight
    parameters; conduct rows outside t0..t0+T-1 get zero gradient."""
    params = make_params(3, ROWS, gate_mode=gate_mode, seed=1)
    x, v0, s0 = make_inputs((T, *STEP), seed=2)
    grads = check_against_reference(
        x, v0, s0, params, store_v_seq=False, t0=T0, gate_mode=gate_mode,
        surrogate_function=FUSED[sg_name](alpha=2.0), detach_reset=detach_reset,
    )  # fmt: skip
    assert torch.count_nonzero(grads["conduct"][:T0]) == 0
    assert torch.count_nonzero(grads["conduct"][T0:]) > 0
    if detach_reset:
        assert torch.count_nonzero(grads["s0"]) == 0


@pytest.mark.parametrize("gate_mode", GATE_MODES)
def test_cpp_stored_membranes_match_reference(gate_mode):
    """store_v_seq: the forward returns the membranes, the backward reads them (no
    recompute) and the loss has a gradient through v_seq too."""
    params = make_params(3, ROWS, gate_mode=gate_mode, seed=5)
    x, v0, s0 = make_inputs((T, *STEP), seed=6)
    check_against_reference(x, v0, s0, params, store_v_seq=True, t0=1, gate_mode=gate_mode,
                            surrogate_function=surrogate.ATan())  # fmt: skip


# (step shape, channel_dim, layer-wise): every tile kind of the C++ layout
LAYOUTS = [
    ((2, 3, 300), 1, False),  # channel-first, inner 300: one channel per tile, 2 tiles per row
    ((2, 3, 4, 5), 1, False),  # inner 20
    ((2, 4, 5, 3), -1, False),  # channel-last: channel-varying tiles
    ((2, 300), -1, False),  # channel-last, 300 channels: 2 tiles per row
    # channel-last, many rows: the sums of up to 8 tiles of one segment are added before
    # they are folded, in groups that end at work-item boundaries (2 and 3 segments per
    # row; and 6, over the 4 segments that are grouped, folded per tile)
    ((150, 300), -1, False),
    ((60, 600), -1, False),
    ((12, 1400), -1, False),
    ((64, 40, 8), 1, False),  # inner 8 < 16, channel-varying tiles over 320 positions
    ((3, 2, 4), 1, False),  # inner 4 < 16: channel-varying tiles over C * inner
    ((3, 5), 0, False),  # channel first in the step (outer = 1)
    ((2, 1, 7), 1, False),  # one channel
    ((2, 3, 4), 1, True),  # layer-wise
    ((2, 3, 4), -1, True),
]


@pytest.mark.parametrize(("step", "channel_dim", "layerwise"), LAYOUTS, ids=str)
def test_cpp_layouts_match_reference(step, channel_dim, layerwise):
    C = step[channel_dim]
    params = make_params(C, T, layerwise=layerwise, seed=3)
    x, v0, s0 = make_inputs((T, *step), seed=4, scale=3.0)
    check_against_reference(x, v0, s0, params, channel_dim=channel_dim, store_v_seq=False,
                            surrogate_function=surrogate.Sigmoid())  # fmt: skip


def test_cpp_single_step_and_empty_batch():
    params = make_params(3, 4, seed=8)
    x, v0, s0 = make_inputs((1, 2, 3, 2), seed=9)
    check_against_reference(x, v0, s0, params, t0=3, store_v_seq=False,
                            surrogate_function=surrogate.Rect())  # fmt: skip
    empty = torch.zeros(4, 0, 3, requires_grad=True)
    out = glif_multi_step(empty, **make_params(3, 4, dtype=F32), backend="cpp")
    assert out.spike_seq.shape == (4, 0, 3) and out.v_last.shape == (0, 3)
    (out.spike_seq.sum() + out.v_last.sum()).backward()
    assert empty.grad.shape == empty.shape


# --------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("dtype", [F32, F16, BF16], ids=str)
@pytest.mark.parametrize("channel_dim", [1, -1])
def test_cpp_low_precision_within_twice_the_reference_error(dtype, channel_dim):
    """Every output and gradient: |cpp - ref64| <= 2 |ref_lowp - ref64| + a few ulps,
    where ref_lowp is the reference run on the same low-precision input."""
    C = 4
    step = (2, C, 20) if channel_dim == 1 else (2, 20, C)
    sg = surrogate.Sigmoid(alpha=4.0)
    kw = dict(channel_dim=channel_dim, surrogate_function=sg, store_v_seq=True)
    for seed in range(11, 61):  # an input with no membrane within float32 reach of theta
        params = make_params(C, T, dtype=F32, seed=seed)
        params64 = {n: p.to(F64) for n, p in params.items()}
        x, v0, s0 = make_inputs((T, *step), dtype=dtype, seed=seed, scale=3.0)
        x64, v064, s064 = x.to(F64), v0.to(F64), s0.to(F64)
        v_seq = run("reference", x64, v064, s064, params64, **kw)[1]
        if margin(v_seq, params64["v_threshold"], channel_dim % 3) > 2e-5:
            break
    ref64, g64 = with_grads("reference", x64, v064, s064, params64, **kw)
    ref_lo, g_lo = with_grads("reference", x, v0, s0, params, **kw)
    got, g = with_grads("cpp", x, v0, s0, params, **kw)
    assert margin(ref64[1], params64["v_threshold"], channel_dim % 3) > 2e-5
    assert torch.equal(got[0], ref_lo[0]) and got[0].dtype == dtype, "spike_seq"
    floor = {F32: 1e-6, F16: 2e-3, BF16: 1.6e-2}[dtype]
    pairs = [("v_seq", got[1], ref_lo[1], ref64[1]), ("v_last", got[2], ref_lo[2], ref64[2])]
    pairs += [(f"grad {n}", g[n], g_lo[n], g64[n]) for n in g64]
    for name, a, lo, hi in pairs:
        hi = hi.to(F64)
        err = (a.to(F64) - hi).abs()
        bound = 2 * (lo.to(F64) - hi).abs() + floor * (1 + hi.abs())
        assert (err <= bound).all(), f"{name}: max excess {float((err - bound).max()):.3g}"


# --------------------------------------------------------------------------- state, chunks, layout


@pytest.mark.parametrize("detach_reset", [False, True])
def test_chunked_equals_one_call_with_gradients(detach_reset):
    """Three calls of 2, 1 and 3 steps carrying (v, s), with t0 advancing, equal one call
    of 6 steps: spikes, membranes and every gradient (through the chunk boundaries)."""
    params = make_params(3, 6, seed=21)
    x, v0, s0 = make_inputs((6, 2, 3, 4), seed=22)
    kw = dict(surrogate_function=surrogate.Sigmoid(), detach_reset=detach_reset)
    whole, g_whole = with_grads("cpp", x, v0, s0, params, **kw)

    def chunked(x, v0, s0, **p):
        v, s, spikes, vs, t0 = v0, s0, [], [], 0
        for n in (2, 1, 3):
            out = glif_multi_step(x[t0 : t0 + n], v, s, **p, t0=t0, store_v_seq=True,
                                  backend="cpp", **kw)  # fmt: skip
            spikes.append(out.spike_seq)
            vs.append(out.v_seq)
            v, s, t0 = out.v_last, out.s_last, t0 + n
        return torch.cat(spikes), torch.cat(vs), v, s

    leaves = [t.detach().clone().requires_grad_() for t in (x, v0, s0)]
    p = {n: t.detach().clone().requires_grad_() for n, t in params.items()}
    outs = chunked(*leaves, **p)
    g = torch.Generator().manual_seed(99)
    loss = sum((o * (torch.rand(o.shape, generator=g, dtype=F64) - 0.5)).sum() for o in outs)
    grads = torch.autograd.grad(loss, [*leaves, *p.values()])
    for a, b in zip(outs, whole, strict=True):
        torch.testing.assert_close(a, b, **TOL64[0])
    for name, a in zip(["x", "v0", "s0", *p], grads, strict=True):
        torch.testing.assert_close(a, g_whole[name], **TOL64[1], msg=name)


def test_non_contiguous_input_equals_contiguous():
    """A sliced and permuted input (read through one copy) gives bitwise the same outputs
    and gradients as its contiguous copy."""
    params = make_params(3, T, dtype=F32, seed=31)
    base = torch.randn(T, 2, 6, 5, 3, dtype=F32)
    x_nc = base[:, :, ::2].permute(0, 1, 4, 2, 3)  # [T, 2, C=3, 3, 5], non-contiguous
    assert not x_nc.is_contiguous()
    _, v0, s0 = make_inputs(x_nc.shape, dtype=F32, seed=32)
    a = with_grads("cpp", x_nc, v0, s0, params)
    b = with_grads("cpp", x_nc.contiguous(), v0, s0, params)
    for o1, o2 in zip(a[0], b[0], strict=True):
        assert torch.equal(o1, o2)
    for n in a[1]:
        assert torch.equal(a[1][n], b[1][n]), n


@pytest.mark.parametrize(
    ("step", "channel_dim"),
    [((4, 8, 32, 32), 1), ((4, 32 * 32, 8), -1), ((4, 96, 300), -1)],  # (last: 2 segments)
    ids=str,
)
def test_deterministic_and_thread_count_independent(step, channel_dim):
    """Two runs are bitwise equal, and so are runs on 1 and 2 threads: the per-channel
    sums are reduced in a fixed order that does not depend on the thread count. The
    input is large enough to be split across threads."""
    C = step[channel_dim]
    params = make_params(C, 4, dtype=F32, seed=41)
    x, v0, s0 = make_inputs((4, *step), dtype=F32, seed=42, scale=3.0)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (2, 2, 1):
            torch.set_num_threads(n)
            results.append(with_grads("cpp", x, v0, s0, params, channel_dim=channel_dim))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for o1, o2 in zip(results[0][0], other[0], strict=True):
            assert torch.equal(o1, o2)
        for n in results[0][1]:
            assert torch.equal(results[0][1][n], other[1][n]), n


# --------------------------------------------------------------------------- gradcheck
#
# Finite differences of spikes are 0 or a jump, never the surrogate gradient, so gradcheck
# checks the membranes (v_seq, v_last) on inputs whose membranes are all far from their
# threshold; with the reset attached the analytic membrane Jacobian includes the surrogate
# at u_{t-1}, which is 0 there only for compact-support surrogates (Rect,
# PiecewiseQuadratic); with detach_reset every surrogate is checked.


@functools.cache
def _gradcheck_case(gate_mode):
    for seed in range(2000):
        params = make_params(2, 3, gate_mode=gate_mode, seed=seed)
        x, v0, s0 = make_inputs((3, 2, 2), seed=seed, scale=4.0)
        spikes, v_seq, _, _ = run("reference", x, v0, s0, params, gate_mode=gate_mode,
                                  surrogate_function=surrogate.Rect())  # fmt: skip
        if margin(v_seq, params["v_threshold"], 1) > 0.3 and spikes[:-1].sum() >= 2:
            return params, x, v0, s0
    raise AssertionError("no gradcheck case found")


GC_CASES = [(m, False, "Rect") for m in ("soft", "coarse")] + [
    ("soft", False, "PiecewiseQuadratic"),
    ("soft", True, "Sigmoid"),
    ("soft", True, "Erf"),
    ("coarse", True, "ATan"),
]


@pytest.mark.parametrize(("gate_mode", "detach_reset", "sg_name"), GC_CASES, ids=str)
def test_gradcheck_membranes(gate_mode, detach_reset, sg_name):
    params, x, v0, s0 = _gradcheck_case(gate_mode)
    trainable = [n for n in PARAMS if gate_mode == "soft" or n not in GATES]
    fixed = {n: p for n, p in params.items() if n not in trainable}
    sg = FUSED[sg_name](alpha=4.0)
    diff_s0 = not detach_reset  # detach_reset cuts the s0 gradient on purpose

    def membranes(x, v0, *values):
        s0_ = values[0] if diff_s0 else s0
        values = values[1:] if diff_s0 else values
        values = dict(zip(trainable, values, strict=True))
        out = glif_multi_step(x, v0, s0_, **fixed, **values, gate_mode=gate_mode,
                              surrogate_function=sg, detach_reset=detach_reset,
                              store_v_seq=True, backend="cpp")  # fmt: skip
        return out.v_seq, out.v_last

    inputs = [x, v0, *([s0] if diff_s0 else []), *(params[n] for n in trainable)]
    inputs = [t.clone().requires_grad_() for t in inputs]
    assert torch.autograd.gradcheck(membranes, inputs, eps=1e-6, atol=1e-8, rtol=1e-6)


# --------------------------------------------------------------------------- launchers


def test_launchers_accept_none_for_zero_state_and_gradients():
    """v0/s0 None mean a zero state; every incoming gradient None means zero."""
    params = make_params(3, T, dtype=F32, seed=51)
    x, _, _ = make_inputs((T, 2, 3, 4), dtype=F32, seed=52)
    p = list(params.values())
    zeros = torch.zeros(x.shape[1:])
    args = (0, 1, 0)  # t0, channel_dim, gate_mode
    with torch.no_grad():
        a = cpu.cpp_fwd(x, None, None, *p, *args, True)
        b = cpu.cpp_fwd(x, zeros, zeros, *p, *args, True)
        for o1, o2 in zip(a, b, strict=True):
            assert torch.equal(o1, o2)
        flags = (*args, 0, 4.0, False)
        gs = torch.randn(x.shape)
        empty = x.new_empty(0)
        ga = cpu.cpp_bwd(gs, None, None, None, x, None, None, empty, *p, *flags)
        gb = cpu.cpp_bwd(gs, zeros, zeros, torch.zeros(x.shape), x, zeros, zeros, empty, *p,
                         *flags)  # fmt: skip
        for i, (o1, o2) in enumerate(zip(ga, gb, strict=True)):
            if i in (1, 2):  # dv0, ds0: no gradient for a state given as None
                assert o1 is None and o2.shape == x.shape[1:]
            else:
                assert torch.equal(o1, o2)
        none = cpu.cpp_bwd(None, None, None, None, x, None, None, empty, *p, *flags)
        assert none[1] is None and none[2] is None
        assert all(torch.count_nonzero(g) == 0 for g in (none[0], *none[3:]))


# Steps whose blocks end in partial vectors (the forward and the backward walk blocks of
# different widths, each with a remainder), channel-wise and channel-last.
RECOMPUTE_CASES = [((2, 5, 3, 7), 1), ((3, 40), -1), ((4, 3, 20), 1), ((3, 2, 37), 1)]


@pytest.mark.parametrize("dtype", [F32, F64, BF16], ids=str)
@pytest.mark.parametrize(("step", "channel_dim"), RECOMPUTE_CASES, ids=str)
def test_stored_and_recomputed_membranes_give_the_same_backward(dtype, step, channel_dim):
    """Bit for bit: the backward recomputes exactly the membranes the forward stored, so
    store_v_seq cannot change a gradient (with a fractional initial spike, every surrogate
    and both resets)."""
    C = step[channel_dim]
    for seed in range(3):
        params = make_params(C, 7, dtype=dtype, seed=53 + seed)
        x, v0, s0 = make_inputs((7, *step), dtype=dtype, seed=54 + seed)
        s0 = torch.rand(s0.shape, generator=torch.Generator().manual_seed(seed), dtype=s0.dtype)
        p = list(params.values())
        with torch.no_grad():
            u_seq = cpu.cpp_fwd(x, v0, s0, *p, 0, channel_dim, 0, True)[3]
            gs = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)).to(dtype)
            for sid in range(len(FUSED)):
                flags = (0, channel_dim, 0, sid, 2.0, bool(sid % 2))
                a = cpu.cpp_bwd(gs, None, None, None, x, v0, s0, u_seq, *p, *flags)
                b = cpu.cpp_bwd(gs, None, None, None, x, v0, s0, x.new_empty(0), *p, *flags)
                for k, (o1, o2) in enumerate(zip(a, b, strict=True)):
                    assert torch.equal(o1, o2), (seed, sid, k, (o1 - o2).abs().max())


@pytest.mark.parametrize(("step", "channel_dim"), [((4, 16, 128, 256), 1), ((8, 4096, 64), -1)])
def test_streamed_large_output_equals_plain_stores(step, channel_dim):
    """A spike output of 64 MiB or more is written with streaming stores (x86 with AVX):
    bit for bit what two halves of the batch give through plain stores."""
    T = 8
    x, v0, s0 = make_inputs((T, *step), dtype=F32, seed=71)
    assert x.numel() * x.element_size() >= 64 << 20  # the streamed path
    p = list(make_params(step[channel_dim], T, dtype=F32, seed=72).values())
    with torch.no_grad():
        whole = cpu.cpp_fwd(x, v0, s0, *p, 0, channel_dim, 0, False)
        halves = [
            cpu.cpp_fwd(x[:, i::2].contiguous(), v0[i::2], s0[i::2], *p, 0, channel_dim, 0, False)
            for i in (0, 1)
        ]
    assert halves[0][0].nbytes < 64 << 20  # plain stores
    for k, whole_k in enumerate(whole[:3]):  # spikes [T, B, ...], v_last and s_last [B, ...]
        joined = torch.empty_like(whole_k)
        batch = (slice(None),) if k == 0 else ()
        joined[(*batch, slice(0, None, 2))] = halves[0][k]
        joined[(*batch, slice(1, None, 2))] = halves[1][k]
        assert torch.equal(whole_k, joined), k


# --------------------------------------------------------------------------- the module


@pytest.mark.parametrize("step_mode", ["s", "m"])
def test_glif_node_cpp_matches_torch_backend(step_mode):
    """GLIFNode(backend="cpp") end to end: two multi-step calls (or T single steps) with a
    backward through both, against GLIFNode(backend="torch") with the same parameters."""
    torch.manual_seed(0)
    nodes = [GLIFNode(T=6, channels=4, step_mode=step_mode, backend=b) for b in ("cpp", "torch")]
    nodes[1].load_state_dict(nodes[0].state_dict())
    x = torch.rand(6, 3, 4, 5, 5) * 1.5
    results = []
    for node in nodes:
        xi = x.clone().requires_grad_()
        if step_mode == "m":
            out = torch.cat([node(xi[:2]), node(xi[2:])])
        else:
            out = torch.stack([node(xi[t]) for t in range(6)])
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        results.append((out.detach(), xi.grad, {n: p.grad for n, p in node.named_parameters()}))
    (o1, gx1, gp1), (o2, gx2, gp2) = results
    assert torch.equal(o1, o2)
    torch.testing.assert_close(gx1, gx2, rtol=1e-5, atol=1e-5)
    for n in gp1:
        torch.testing.assert_close(gp1[n], gp2[n], rtol=1e-4, atol=1e-4, msg=n)


def test_torch_compile_fullgraph_through_cpp():
    params = make_params(3, T, dtype=F32, seed=61)
    x, v0, s0 = make_inputs((T, 2, 3, 4), dtype=F32, seed=62)

    def f(x):
        return glif_multi_step(x, v0, s0, **params, backend="cpp").spike_seq

    torch._dynamo.reset()
    assert torch.equal(torch.compile(f, fullgraph=True)(x), f(x))


# --------------------------------------------------------------------------- choice and fallback


def test_implementation_for_cpp(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert implementation_for("cpu") == (
        "cpp",
        "backend='auto' on cpu: the fused C++ CPU implementation",
    )
    assert implementation_for("cpu", "cpp")[0] == "cpp"
    assert implementation_for("cpu", "torch")[0] == "torch"
    with pytest.raises(ValueError, match="runs on the CPU, got a tensor on cuda:0"):
        implementation_for("cuda:0", "cpp")
    monkeypatch.setenv(ENV_VAR, "cpp")
    name, reason = implementation_for("cpu", "torch")
    assert name == "cpp" and f"{ENV_VAR}=cpp" in reason
    monkeypatch.setenv(ENV_VAR, "torch")
    assert implementation_for("cpu", "cpp")[0] == "torch"


def test_failed_build_falls_back_with_one_log_line(monkeypatch, caplog):
    """In-process: a build failure is tried once, logged once, 'auto' runs the PyTorch
    path and says why, 'cpp' raises with the reason."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    calls = []

    def broken_build():
        calls.append(1)
        raise RuntimeError("Error building extension 'sj_glif_cpu'\nc++: error: no such compiler")

    saved = dict(cpu._result)
    monkeypatch.setattr(cpu, "_build", broken_build)
    cpu._result.clear()
    try:
        with caplog.at_level("WARNING", logger="sj_glif"):
            name, reason = implementation_for("cpu")
            assert name == "torch"
            assert "c++: error: no such compiler" in reason
            with pytest.raises(ValueError, match=r"unavailable: RuntimeError: c\+\+: error: no"):
                implementation_for("cpu", "cpp")
            params = make_params(3, T, dtype=F32, seed=71)
            x, _, _ = make_inputs((T, 2, 3), dtype=F32, seed=72)
            out = glif_multi_step(x, **params)  # auto: the PyTorch path
            ref = glif_multi_step(x, **params, backend="torch")
            assert torch.equal(out.spike_seq, ref.spike_seq)
        assert len(calls) == 1, "the build is tried once per process"
        lines = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
        assert len(lines) == 1 and "runs the PyTorch path" in lines[0]
        assert "\n" not in lines[0]
    finally:
        cpu._result.clear()
        cpu._result.update(saved)


def _python(code, env):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_missing_compiler_in_a_fresh_process(tmp_path):
    """A process whose C++ compiler does not exist: GLIF still runs (PyTorch path),
    implementation_for says why, and stderr has one line about it."""
    env = {**os.environ, "CXX": str(tmp_path / "no-such-c++"),
           "TORCH_EXTENSIONS_DIR": str(tmp_path / "ext"), "PYTHONPATH": os.getcwd()}  # fmt: skip
    env.pop(ENV_VAR, None)
    proc = _python(
        """
        import torch, sj_glif
        name, reason = sj_glif.implementation_for("cpu")
        node = sj_glif.GLIFNode(step_mode="m")
        out = node(torch.rand(3, 2, 4, 5))
        out.sum().backward()
        print(name, "|", reason)
        """,
        env,
    )
    assert proc.returncode == 0, proc.stderr
    name, reason = proc.stdout.strip().split(" | ")
    assert name == "torch" and "C++ implementation unavailable" in reason, reason
    lines = [ln for ln in proc.stderr.splitlines() if "unavailable" in ln]
    assert len(lines) == 1 and "runs the PyTorch path" in lines[0], proc.stderr


def test_cached_build_loads_without_building_in_a_new_process():
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    env.pop(ENV_VAR, None)
    proc = _python(
        """
        import logging, sj_glif
        logging.basicConfig(level=logging.INFO)
        print(sj_glif.implementation_for("cpu")[0])
        """,
        env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "cpp"
    assert "building" not in proc.stderr and "loaded" in proc.stderr, proc.stderr
