"""``sj_glif.ops``: the public ``glif_multi_step``, ``implementation_for`` and the
``sj_glif::glif_fwd``/``glif_bwd`` torch.library ops, on the torch path.

The oracle is ``sj_glif.reference.glif_reference`` (checked against the spec in
``test_reference.py``). The Triton kernels are tested in ``test_kernels.py``.

Tolerances. float64: the torch path and the reference do the same float64 arithmetic
in a different order (fused multiply-adds, per-step channel sums), so O(1) values
agree to a few ulps; 1e-12 on membranes and 1e-10 on gradients (sums over a batch and
T steps of products of O(1) factors) leave a wide margin. float32: likewise a few
float32 ulps (1.2e-7) per step over T steps, hence 1e-5 on membranes and 1e-4 on
gradients. Spikes are compared exactly, after asserting that no membrane is within
rounding reach of its threshold (else an exact comparison would be luck).
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import torch
from spikingjelly.activation_based import surrogate
from torch.autograd.graph import saved_tensors_hooks

from sj_glif import cpu, ops
from sj_glif.ops import ENV_VAR, glif_multi_step, implementation_for
from sj_glif.reference import GATE_MODES, glif_reference
from sj_glif.surrogates import SURROGATES, fused_surrogate, surrogate_grad

F32, F64 = torch.float32, torch.float64
PARAMS = ("alpha", "beta", "gamma", "tau", "v_threshold", "linear_decay", "v_subreset", "conduct")
GATES = ("alpha", "beta", "gamma")
# keyed by SpikingJelly 2.0's class names (under 0.0.0.0.14, Rect and SuperSpike are sj-glif's
# SjGlifRect and SjGlifSuperSpike)
FUSED = {cls.__name__.removeprefix("SjGlif"): cls for cls, _ in SURROGATES.values()}
TOL = {
    F64: (dict(rtol=1e-12, atol=1e-12), dict(rtol=1e-10, atol=1e-10)),
    F32: (dict(rtol=1e-5, atol=1e-5), dict(rtol=1e-4, atol=1e-4)),
}


# --------------------------------------------------------------------------- helpers


def make_params(C, rows, *, layerwise=False, dtype=F64, seed=0, gate_mode="soft"):
    """Raw parameters ~U(-2, 2): every gate and value well inside (0, 1) but varied.
    Channel-wise ``[C]`` and conduct ``[rows, C]``, or layer-wise ``[]`` and ``[rows]``."""
    g = torch.Generator().manual_seed(seed)
    shape = () if layerwise else (C,)
    out = {}
    for name in PARAMS:
        size = (rows, *shape) if name == "conduct" else shape
        out[name] = (4 * torch.rand(size, generator=g, dtype=F64) - 2).to(dtype)
    if gate_mode == "coarse":
        out.update(alpha=None, beta=None, gamma=None)
    return out


def make_inputs(shape, *, dtype=F64, seed=0, scale=1.5):
    """``x [T, *step]`` in (-scale/4, 3 scale/4), a random ``v0`` and a 0/1 ``s0``."""
    g = torch.Generator().manual_seed(seed + 1000)
    x = scale * (torch.rand(shape, generator=g, dtype=F64) - 0.25)
    cdt = F64 if dtype == F64 else F32
    v0 = torch.rand(shape[1:], generator=g, dtype=F64) - 0.3
    s0 = (torch.rand(shape[1:], generator=g, dtype=F64) > 0.5).to(F64)
    return x.to(dtype), v0.to(cdt), s0.to(cdt)


def theta_view(raw_theta, v_seq, channel_dim):
    theta = torch.sigmoid(raw_theta.detach().to(v_seq.dtype))
    if theta.dim() == 0:
        return theta
    shape = [1] * (v_seq.dim() - 1)
    shape[channel_dim] = -1
    return theta.reshape(shape)


def margin(v_seq, raw_theta, channel_dim):
    """Smallest |u_t - theta|: how close any neuron came to flipping its spike."""
    return float((v_seq.detach() - theta_view(raw_theta, v_seq, channel_dim)).abs().min())


def call(impl, x, v0, s0, params, **kw):
    """``(spike_seq, v_seq, v_last, s_last)`` from the torch path or the reference."""
    if impl == "reference":
        kw.pop("store_v_seq", None)
        kw.pop("backend", None)
        cd = kw.pop("channel_dim", 1) % (x.dim() - 1)
        return glif_reference(x, v0, s0, **params, channel_dim=cd, **kw)
    kw.setdefault("backend", "torch")
    kw.setdefault("store_v_seq", True)
    out = glif_multi_step(x, v0, s0, **params, **kw)
    return out.spike_seq, out.v_seq, out.v_last, out.s_last


def loss_and_grads(outputs, leaves, seed=99, weight_dtype=None):
    """One scalar loss over every output with random weights (rounded to
    ``weight_dtype`` first, if given), and its gradients w.r.t. ``leaves`` (a leaf
    autograd never reached gets zeros)."""
    g = torch.Generator().manual_seed(seed)
    loss = 0
    for out in outputs:
        if out is not None:
            w = torch.rand(out.shape, generator=g, dtype=F64) - 0.5
            w = w.to(weight_dtype or out.dtype).to(out.dtype)
            loss = loss + (out * w).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    return {
        n: torch.zeros_like(t) if gr is None else gr
        for (n, t), gr in zip(leaves.items(), grads, strict=True)
    }


def leaves_of(x, v0, s0, params):
    """Make every input a fresh leaf that requires grad; returns (leaves, params)."""
    x, v0, s0 = (t.detach().clone().requires_grad_() for t in (x, v0, s0))
    params = {
        n: None if p is None else p.detach().clone().requires_grad_() for n, p in params.items()
    }
    leaves = {"x": x, "v0": v0, "s0": s0}
    leaves.update({n: p for n, p in params.items() if p is not None})
    return leaves, params


def compare(impl_a, impl_b, x, v0, s0, params, dtype, channel_dim=1, **kw):
    """Outputs and gradients of two implementations on the same inputs, compared."""
    results = []
    for impl in (impl_a, impl_b):
        leaves, p = leaves_of(x, v0, s0, params)
        outs = call(impl, leaves["x"], leaves["v0"], leaves["s0"], p, channel_dim=channel_dim, **kw)
        results.append((outs, loss_and_grads(outs, leaves)))
    (outs_a, grads_a), (outs_b, grads_b) = results
    cd = channel_dim % (x.dim() - 1)
    near = 1e-9 if dtype == F64 else 1e-4
    assert margin(outs_b[1], params["v_threshold"], cd) > near, "a membrane sits at threshold"
    assert 0 < outs_b[0].sum() < outs_b[0].numel(), "the case should fire and not fire"
    tol_fwd, tol_bwd = TOL[F64 if dtype == F64 else F32]
    assert outs_a[0].dtype == outs_b[0].dtype == x.dtype
    assert torch.equal(outs_a[0], outs_b[0]), "spike_seq"
    for name, a, b in zip(("v_seq", "v_last", "s_last"), outs_a[1:], outs_b[1:], strict=True):
        assert a.dtype == b.dtype, name
        torch.testing.assert_close(a, b, **tol_fwd, msg=name)
    for name in grads_b:
        torch.testing.assert_close(grads_a[name], grads_b[name], **tol_bwd, msg=f"grad {name}")
    return results


# --------------------------------------------------------------------------- torch vs reference

T, STEP = 5, (2, 3, 2)  # [B, C, W], channel at 1
ROWS, T0 = T + 2, 2  # conduct has spare rows; this call uses rows 2..6


@pytest.mark.parametrize("sg_name", list(FUSED))
@pytest.mark.parametrize("detach_reset", [False, True], ids=["attached", "detach_reset"])
@pytest.mark.parametrize("gate_mode", GATE_MODES)
def test_torch_path_matches_reference(gate_mode, detach_reset, sg_name):
    """float64, random initial state, t0 > 0: spikes, membranes, final state and the
    gradients of x, v0, s0 and all eight parameters (conduct rows outside t0..t0+T-1
    get zero gradient)."""
    params = make_params(3, ROWS, gate_mode=gate_mode, seed=1)
    x, v0, s0 = make_inputs((T, *STEP), seed=2)
    sg = FUSED[sg_name](alpha=2.0)
    (_, grads), _ = compare(
        "torch",
        "reference",
        x,
        v0,
        s0,
        params,
        F64,
        t0=T0,
        gate_mode=gate_mode,
        surrogate_function=sg,
        detach_reset=detach_reset,
    )
    assert torch.count_nonzero(grads["conduct"][:T0]) == 0
    assert torch.count_nonzero(grads["conduct"][T0:]) > 0
    if detach_reset:
        assert torch.count_nonzero(grads["s0"]) == 0


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("layerwise", [False, True], ids=["channelwise", "layerwise"])
@pytest.mark.parametrize("channel_dim", [1, -1])
@pytest.mark.parametrize("gate_mode", ["soft", "coarse"])
def test_torch_path_matches_reference_layouts_and_dtypes(gate_mode, channel_dim, layerwise, dtype):
    """Channel at axis 1 ``[T, B, C, W]`` or last ``[T, B, W, C]``; layer-wise
    parameters (``[]``, conduct ``[T_rows]``); float32 and float64."""
    C = 3
    step = (2, C, 2) if channel_dim == 1 else (2, 2, C)
    params = make_params(C, ROWS, layerwise=layerwise, dtype=dtype, gate_mode=gate_mode, seed=3)
    x, v0, s0 = make_inputs((T, *step), dtype=dtype, seed=4, scale=3.0)
    compare(
        "torch",
        "reference",
        x,
        v0,
        s0,
        params,
        dtype,
        channel_dim=channel_dim,
        t0=T0,
        gate_mode=gate_mode,
        surrogate_function=surrogate.Sigmoid(),
    )


def test_torch_path_strided_input_and_state():
    """Non-contiguous views (a [B, T, C] tensor transposed to [T, B, C], a transposed
    state) give the reference's results, and contiguous outputs."""
    params = make_params(3, T, seed=24)
    x, v0, s0 = make_inputs((T, 4, 3), seed=25, scale=3.0)
    x = x.transpose(0, 1).contiguous().transpose(0, 1)
    v0, s0 = (t.t().contiguous().t() for t in (v0, s0))
    assert not (x.is_contiguous() or v0.is_contiguous() or s0.is_contiguous())
    (outs, _), _ = compare(
        "torch",
        "reference",
        x,
        v0,
        s0,
        params,
        F64,
        channel_dim=-1,
        surrogate_function=surrogate.Sigmoid(),
    )
    assert all(o.is_contiguous() for o in outs)


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_torch_path_fires_at_exactly_threshold(dtype):
    """Same convention as the reference: spike iff u - theta >= 0. Hard gates a = 1,
    b = 0 make u_0 = x_0 exactly; theta = sigmoid(0) = 0.5."""
    half = torch.tensor(0.5, dtype=dtype)
    below = torch.nextafter(half, torch.tensor(0.0, dtype=dtype))
    x = torch.stack([half, below, half + 0.1, half - 0.1]).reshape(1, 4)
    one, zero = torch.ones((), dtype=dtype), torch.zeros((), dtype=dtype)
    out = glif_multi_step(
        x,
        alpha=one,
        beta=-one,
        gamma=one,
        tau=zero,
        v_threshold=zero,
        linear_decay=zero,
        v_subreset=zero,
        conduct=torch.zeros(1, dtype=dtype),
        channel_dim=0,
        gate_mode="hard",
        store_v_seq=True,
        backend="torch",
    )
    assert torch.equal(out.v_seq, x.to(out.v_seq.dtype))
    assert out.spike_seq[0].tolist() == [1, 0, 1, 0]


# --------------------------------------------------------------------------- surrogates


@pytest.mark.parametrize("alpha", [0.5, 4.0])
@pytest.mark.parametrize("sid", sorted(SURROGATES))
def test_fused_surrogate_formulas_match_spikingjelly_backward(sid, alpha):
    """``surrogate_grad`` (used by the torch path) equals SpikingJelly's own backward of
    the surrogate object, over z in [-3, 3]."""
    cls = SURROGATES[sid][0]
    fn = cls(alpha=alpha)
    assert fused_surrogate(fn) == (sid, alpha)
    z = torch.linspace(-3, 3, 601, dtype=F64)
    z = z[(z.abs() - 0.5 / alpha).abs() > 1e-9]  # skip Rect's / PiecewiseQuadratic's edges
    z = z[(z.abs() - 1 / alpha).abs() > 1e-9]
    zr = z.clone().requires_grad_()
    (want,) = torch.autograd.grad(fn(zr).sum(), zr)
    torch.testing.assert_close(surrogate_grad(z, sid, alpha), want, rtol=1e-12, atol=1e-14)


class SubclassedSigmoid(surrogate.Sigmoid):
    """A subclass may change the backward: not fused."""


def test_fused_surrogate_only_exact_classes_that_spike():
    assert fused_surrogate(surrogate.Sigmoid(spiking=False)) is None
    assert fused_surrogate(SubclassedSigmoid()) is None
    assert fused_surrogate(surrogate.NonzeroSignLogAbs()) is None
    assert fused_surrogate(surrogate.Rect(alpha=3.0)) == (7, 3.0)


UNFUSED = {
    # not NonzeroSignLogAbs: its backward is broken in SpikingJelly 0.0.0.0.14 (it passes a
    # tuple to its backward function)
    "QPseudoSpike": surrogate.QPseudoSpike,
    "Sigmoid(spiking=False)": functools.partial(surrogate.Sigmoid, spiking=False),
    "SubclassedSigmoid": SubclassedSigmoid,
}


def _ours(rec):
    return [w for w in rec if "sj_glif: surrogate" in str(w.message)]


@pytest.mark.parametrize("name", list(UNFUSED))
def test_unfused_surrogate_runs_the_reference_and_warns_once(name, monkeypatch):
    monkeypatch.setattr(ops, "_warned_surrogates", set())
    make = UNFUSED[name]
    assert implementation_for("cpu", "torch", make())[0] == "reference"
    params = make_params(3, T, seed=5)
    x, v0, s0 = make_inputs((T, *STEP), seed=6)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        results = compare("torch", "reference", x, v0, s0, params, F64, surrogate_function=make())
        call("torch", x, v0, s0, params, surrogate_function=make())  # a second instance
    ours = _ours(rec)
    assert len(ours) == 1, [str(w.message) for w in ours]
    assert type(make()).__name__ in str(ours[0].message)
    assert issubclass(ours[0].category, UserWarning)
    assert ours[0].filename == __file__, "the warning points at the caller of glif_multi_step"
    grads = results[0][1]
    for n in PARAMS:  # autograd reached every parameter
        assert torch.count_nonzero(grads[n]) > 0, n


def test_each_unfused_class_warns_once(monkeypatch):
    monkeypatch.setattr(ops, "_warned_surrogates", set())
    params = make_params(3, T, seed=5)
    x, v0, s0 = make_inputs((T, *STEP), seed=6)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        for make in (*UNFUSED.values(), *UNFUSED.values()):
            call("torch", x, v0, s0, params, surrogate_function=make())
    names = sorted(str(w.message).split()[2] for w in _ours(rec))
    assert names == ["QPseudoSpike", "Sigmoid", "SubclassedSigmoid"]


# --------------------------------------------------------------------------- gradcheck
#
# A spiking neuron's forward is piecewise constant in its spikes, so finite differences
# of spike outputs are 0 (or a jump), never the surrogate gradient: gradcheck cannot
# check the spike path. It checks the membrane outputs (v_seq, v_last) instead, with
# inputs chosen so that no membrane is near its threshold: then no spike flips under
# the eps perturbation and the membranes are a smooth function of every input.
#
# With the reset attached, u_t depends on s_{t-1}, and the analytic Jacobian of the
# membranes includes sg(u_{t-1} - theta): it equals the numerical one only when sg is 0
# there. So those cases use the compact-support surrogates (Rect, PiecewiseQuadratic)
# with every |u - theta| outside their window; with detach_reset the surrogate does not
# enter the membrane Jacobian, and all eight are run (a surrogate leaking into it would
# fail). The surrogate path itself (gradients of spike outputs, through sg) is checked
# against the reference's autograd, which is exact, in test_torch_path_matches_reference.
#
# Gates: hard gates are step functions of their raw value in the forward and
# straight-through in the backward, static gates are frozen on purpose, GLIF_f has none;
# so the gates are gradchecked in "soft" mode only (see test_hard_gates_* and
# test_static_modes_* for the others).

GC_SHAPE, GC_C, GC_WINDOW = (3, 2, 2), 2, 0.25  # T=3, [B=2, C=2]; Rect/PQ(alpha=4) support


@functools.cache
def _gradcheck_case(gate_mode: str):
    """Inputs for which every |u_t - theta| > 0.3 (outside the surrogate windows, far
    beyond eps), with spikes before the last step (so the reset is exercised)."""
    for seed in range(2000):
        params = make_params(GC_C, GC_SHAPE[0], gate_mode=gate_mode, seed=seed)
        x, v0, s0 = make_inputs(GC_SHAPE, seed=seed, scale=4.0)
        spikes, v_seq, _, _ = call(
            "reference", x, v0, s0, params, gate_mode=gate_mode, surrogate_function=surrogate.Rect()
        )
        if margin(v_seq, params["v_threshold"], 1) > GC_WINDOW + 0.05 and spikes[:-1].sum() >= 2:
            return params, x, v0, s0
    raise AssertionError("no gradcheck case found")


GC_CASES = [(m, False, sg) for m in GATE_MODES for sg in ("Rect", "PiecewiseQuadratic")] + [
    (m, True, sg) for m in GATE_MODES for sg in FUSED
]


@pytest.mark.parametrize(
    ("gate_mode", "detach_reset", "sg_name"),
    GC_CASES,
    ids=[f"{m}-{'detach' if d else 'attached'}-{s}" for m, d, s in GC_CASES],
)
def test_gradcheck_membranes(gate_mode, detach_reset, sg_name):
    params, x, v0, s0 = _gradcheck_case(gate_mode)
    trainable = [n for n in PARAMS if gate_mode == "soft" or n not in GATES]
    fixed = {n: p for n, p in params.items() if n not in trainable}
    sg = FUSED[sg_name](alpha=4.0)

    # detach_reset detaches every previous spike, s0 included: its gradient is cut on
    # purpose (zero, not the numerical derivative), so s0 is then a fixed input
    diff_s0 = not detach_reset

    def membranes(x, v0, *values):
        s0_ = values[0] if diff_s0 else s0
        values = values[1:] if diff_s0 else values
        out = glif_multi_step(
            x,
            v0,
            s0_,
            **fixed,
            **dict(zip(trainable, values, strict=True)),
            gate_mode=gate_mode,
            surrogate_function=sg,
            detach_reset=detach_reset,
            store_v_seq=True,
            backend="torch",
        )
        return out.v_seq, out.v_last

    inputs = [x, v0, *([s0] if diff_s0 else []), *(params[n] for n in trainable)]
    inputs = [t.clone().requires_grad_() for t in inputs]
    assert torch.autograd.gradcheck(membranes, inputs, eps=1e-6, atol=1e-8, rtol=1e-6)


# --------------------------------------------------------------------------- gate modes


def _effective_loop(x, v0, s0, eff, sg, detach_reset=False):
    """GLIF from effective values (a, b, g, tau, theta, V_L, V_R: ``[C]``; k ``[T, C]``),
    channel last; differentiable w.r.t. each of them."""
    v, s = v0, s0
    spikes, vs = [], []
    for t in range(x.shape[0]):
        sr = s.detach() if detach_reset else s
        d = 1 - eff["a"] * (1 - eff["tau"])
        v = (
            d * v * (1 - eff["g"] * sr)
            - (1 - eff["a"]) * eff["vl"]
            + (1 - eff["b"] * (1 - eff["k"][t])) * x[t]
            - (1 - eff["g"]) * eff["vr"] * sr
        )
        s = sg(v - eff["theta"])
        spikes.append(s)
        vs.append(v)
    return torch.stack(spikes), torch.stack(vs), v, s


def test_hard_gates_forward_binary_with_straight_through_gradient():
    """Hard mode = GLIF with gates (raw > 0) in {0, 1}; each raw gate's gradient is
    dL/d(gate) at that binary value times sigmoid'(raw) (straight-through)."""
    params = make_params(3, T, seed=7)
    x, v0, s0 = make_inputs((T, 2, 3), seed=8)
    sg = surrogate.ATan()
    leaves, p = leaves_of(x, v0, s0, params)
    outs = call(
        "torch",
        leaves["x"],
        leaves["v0"],
        leaves["s0"],
        p,
        channel_dim=-1,
        gate_mode="hard",
        surrogate_function=sg,
    )
    got = loss_and_grads(outs, leaves)

    eff = {
        n: torch.sigmoid(params[k]).requires_grad_()
        for n, k in (
            ("tau", "tau"),
            ("theta", "v_threshold"),
            ("vl", "linear_decay"),
            ("vr", "v_subreset"),
            ("k", "conduct"),
        )
    }
    for n, k in (("a", "alpha"), ("b", "beta"), ("g", "gamma")):
        eff[n] = (params[k] > 0).to(F64).requires_grad_()
    assert {0.0, 1.0} == set(torch.cat([eff[n] for n in "abg"]).tolist())
    x = x.clone().requires_grad_()
    want_outs = _effective_loop(x, v0, s0, eff, sg)
    want = loss_and_grads(want_outs, {**eff, "x": x})
    assert torch.equal(outs[0], want_outs[0])
    torch.testing.assert_close(outs[1], want_outs[1], **TOL[F64][0])
    for n, k in (("a", "alpha"), ("b", "beta"), ("g", "gamma")):
        sig = torch.sigmoid(params[k])
        torch.testing.assert_close(got[k], want[n] * sig * (1 - sig), **TOL[F64][1], msg=k)
        assert torch.count_nonzero(got[k]) > 0, k
    torch.testing.assert_close(got["x"], want["x"], **TOL[F64][1])


@pytest.mark.parametrize(("static", "trained"), [("static_soft", "soft"), ("static_hard", "hard")])
def test_static_modes_freeze_the_gates_only(static, trained):
    """Static gates get no gradient; forward and every other gradient equal the trained
    mode's."""
    params = make_params(3, T, seed=9)
    x, v0, s0 = make_inputs((T, *STEP), seed=10)
    runs = {}
    for mode in (static, trained):
        leaves, p = leaves_of(x, v0, s0, params)
        outs = call("torch", leaves["x"], leaves["v0"], leaves["s0"], p, gate_mode=mode)
        g = torch.Generator().manual_seed(0)
        sum((o * torch.rand(o.shape, generator=g, dtype=o.dtype)).sum() for o in outs).backward()
        runs[mode] = (outs, p, leaves)
    (outs_s, p_s, leaves_s), (outs_t, p_t, leaves_t) = runs[static], runs[trained]
    for a, b in zip(outs_s, outs_t, strict=True):
        assert torch.equal(a, b)
    for n in GATES:
        assert p_s[n].grad is None, n
        assert p_t[n].grad is not None and torch.count_nonzero(p_t[n].grad) > 0, n
    for n in ("x", "v0", "s0", *PARAMS[3:]):
        torch.testing.assert_close(leaves_s[n].grad, leaves_t[n].grad, rtol=0, atol=0, msg=n)


# --------------------------------------------------------------------------- chunking


@pytest.mark.parametrize("detach_reset", [False, True], ids=["attached", "detach_reset"])
@pytest.mark.parametrize("gate_mode", GATE_MODES)
def test_chunked_calls_equal_one_call(gate_mode, detach_reset):
    """One call over T = one call over T1 then one at t0 = T1 from (v_last, s_last) =
    T calls of length 1: forward and all gradients (through the state hand-over too)."""
    T_, C = 6, 3
    params = make_params(C, T_, gate_mode=gate_mode, seed=11)
    x, v0, s0 = make_inputs((T_, 2, C, 2), seed=12)
    results = []
    for sizes in ([T_], [2, 4], [1] * T_):
        leaves, p = leaves_of(x, v0, s0, params)
        v, s, spikes, v_seq, start = leaves["v0"], leaves["s0"], [], [], 0
        for n in sizes:
            out = glif_multi_step(
                leaves["x"][start : start + n],
                v,
                s,
                **p,
                t0=start,
                gate_mode=gate_mode,
                detach_reset=detach_reset,
                store_v_seq=True,
                backend="torch",
            )
            spikes.append(out.spike_seq)
            v_seq.append(out.v_seq)
            v, s, start = out.v_last, out.s_last, start + n
        outs = (torch.cat(spikes), torch.cat(v_seq), v, s)
        results.append((outs, loss_and_grads(outs, leaves)))
    (outs_ref, grads_ref), *others = results
    assert margin(outs_ref[1], params["v_threshold"], 1) > 1e-9
    for label, (outs, grads) in zip(("two chunks", "single steps"), others, strict=True):
        assert torch.equal(outs[0], outs_ref[0]), f"{label}: spikes"
        assert torch.equal(outs[3], outs_ref[3]), f"{label}: s_last"
        for name, a, b in zip(("v_seq", "v_last"), outs[1:3], outs_ref[1:3], strict=True):
            torch.testing.assert_close(a, b, **TOL[F64][0], msg=f"{label}: {name}")
        for name in grads_ref:
            torch.testing.assert_close(
                grads[name], grads_ref[name], **TOL[F64][1], msg=f"{label}: grad {name}"
            )


# --------------------------------------------------------------------------- store_v_seq


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("store_v_seq", [False, True])
def test_zero_state_number_equals_zero_tensors(backend, store_v_seq):
    """A zero initial state given as a number is no tensor inside (the fused paths skip
    its terms at step 0); results and gradients equal those from zero tensors, with the
    Triton kernels under the interpreter too. Only the initial spike is nonzero in the
    second pair, to cover one state None and the other not."""
    params = make_params(3, T, dtype=F32, seed=31)
    x, _, _ = make_inputs((T, *STEP), dtype=F32, seed=32)
    zero, ones = torch.zeros(STEP), torch.ones(STEP)
    for numbers, tensors in (((0.0, 0.0), (zero, zero)), ((0.0, 1.0), (zero, ones)),
                             ((0.5, 0.0), (0.5 * ones, zero))):  # fmt: skip
        results = []
        for v0, s0 in (numbers, tensors):
            leaves, p = leaves_of(x, zero, zero, params)
            out = glif_multi_step(leaves["x"], v0, s0, **p, store_v_seq=store_v_seq,
                                  backend=backend)  # fmt: skip
            del leaves["v0"], leaves["s0"]
            outs = [o for o in out if o is not None]
            results.append((outs, loss_and_grads(outs, leaves)))
        (outs_a, grads_a), (outs_b, grads_b) = results
        assert torch.equal(outs_a[0], outs_b[0]), numbers
        for a, b in zip(outs_a[1:], outs_b[1:], strict=True):
            torch.testing.assert_close(a, b, **TOL[F32][0], msg=str(numbers))
        for n in grads_b:
            torch.testing.assert_close(grads_a[n], grads_b[n], **TOL[F32][1], msg=f"{numbers} {n}")


def test_store_v_seq_false_returns_none_and_same_results():
    """Without the stored stream the torch backward recomputes it: same gradients."""
    params = make_params(3, T, seed=13)
    x, v0, s0 = make_inputs((T, *STEP), seed=14)
    results = []
    for store in (True, False):
        leaves, p = leaves_of(x, v0, s0, params)
        out = glif_multi_step(
            leaves["x"], leaves["v0"], leaves["s0"], **p, store_v_seq=store, backend="torch"
        )
        assert (out.v_seq is None) == (not store)
        outs = (out.spike_seq, out.v_last, out.s_last)
        results.append((outs, loss_and_grads(outs, leaves)))
    (outs_a, grads_a), (outs_b, grads_b) = results
    for a, b in zip(outs_a, outs_b, strict=True):
        assert torch.equal(a, b)
    for n in grads_a:
        torch.testing.assert_close(grads_b[n], grads_a[n], **TOL[F64][1], msg=n)


def test_membrane_stream_kept_only_when_needed(monkeypatch):
    """store_u (the op's membrane stream) is set for store_v_seq only: neither backward
    keeps it for training (both recompute the membrane from x), and never under
    torch.no_grad unless asked. The forward implementation (behind both the op and the eager
    autograd.Function) is spied on and run on the torch path, so no kernel runs here."""
    seen = []
    real = ops._fwd_impl

    def spy(*args):
        seen.append((args[17], args[18]))  # store_u, impl
        return real(*args[:18], "torch")

    monkeypatch.setattr(ops, "_fwd_impl", spy)
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # so backend="triton" is allowed on the CPU
    params = {n: p.requires_grad_() for n, p in make_params(3, T, seed=15).items()}
    x, _, _ = make_inputs((T, *STEP), seed=16)

    def store_u(backend, store_v_seq=False, grad=True):
        seen.clear()
        with torch.set_grad_enabled(grad):
            out = glif_multi_step(x, **params, store_v_seq=store_v_seq, backend=backend)
        assert (out.v_seq is None) == (not store_v_seq)
        assert out.v_last.requires_grad == grad
        ((flag, impl),) = seen
        assert impl == backend
        return flag

    assert store_u("triton") is False  # the Triton backward recomputes the membrane
    assert store_u("triton", grad=False) is False
    assert store_u("triton", store_v_seq=True, grad=False) is True
    assert store_u("torch") is False
    assert store_u("torch", store_v_seq=True) is True
    assert store_u("torch", grad=False) is False


# --------------------------------------------------------------------------- dtypes


LOW = [torch.float16, torch.bfloat16]
LOW_IDS = ["float16", "bfloat16"]


def _low_precision_runs(dtype, with_s_last):
    """(ours, reference on the same input, float64 reference): each ``(outs, grads)``,
    with the same loss weights in every run (representable in the input dtype)."""
    C = 5
    params = make_params(C, T, dtype=F32, seed=17)
    x64, v0, s0 = make_inputs((T, 4, C, 3), seed=18)
    x = x64.to(dtype)
    p64 = {n: p.to(F64) for n, p in params.items()}
    runs = []
    for impl, xx, pp, st in (
        ("torch", x, params, F32),
        ("reference", x, params, F32),
        ("reference", x.to(F64), p64, F64),
    ):
        leaves, p = leaves_of(xx, v0.to(st), s0.to(st), pp)
        outs = call(
            impl, leaves["x"], leaves["v0"], leaves["s0"], p, surrogate_function=surrogate.Sigmoid()
        )
        loss_outs = outs if with_s_last else outs[:3]
        runs.append((outs, loss_and_grads(loss_outs, leaves, weight_dtype=dtype)))
    assert margin(runs[2][0][1], params["v_threshold"], 1) > 1e-4  # float32 cannot flip
    return runs


def _check_bound(label, got, lo, want):
    """Style habit 8: error against float64 at most 2x the reference's own error in the
    same precision, plus one float32 ulp of the largest value (a floor for outputs the
    reference happens to get exactly)."""
    got, lo, want = got.to(F64), lo.to(F64), want.to(F64)
    err, err_lo = (got - want).abs().max(), (lo - want).abs().max()
    floor = torch.finfo(F32).eps * want.abs().max().clamp(min=1)
    assert err <= 2 * err_lo + floor, f"{label}: {err:.3g} vs reference {err_lo:.3g}"


@pytest.mark.parametrize("dtype", LOW, ids=LOW_IDS)
def test_low_precision_input(dtype):
    """Half-precision input: spikes in the input dtype, state in float32 (both compute
    in float32); outputs and gradients within the data-derived bound. The loss leaves
    out s_last (see the next test)."""
    (outs, grads), (outs_lo, grads_lo), (outs64, grads64) = _low_precision_runs(dtype, False)
    assert outs[0].dtype == dtype
    assert all(o.dtype == F32 for o in outs[1:])
    assert grads["x"].dtype == dtype and grads["v0"].dtype == F32
    assert torch.equal(outs[0].to(F64), outs64[0])
    for i, name in enumerate(("v_seq", "v_last", "s_last"), start=1):
        _check_bound(name, outs[i], outs_lo[i], outs64[i])
    for name in grads64:
        _check_bound(f"grad {name}", grads[name], grads_lo[name], grads64[name])


@pytest.mark.parametrize("dtype", LOW, ids=LOW_IDS)
def test_low_precision_gradient_through_s_last(dtype):
    (_, grads), (_, grads_lo), (_, grads64) = _low_precision_runs(dtype, True)
    for name in grads64:
        _check_bound(f"grad {name}", grads[name], grads_lo[name], grads64[name])


# --------------------------------------------------------------------------- validation


def _valid(C=3, T_=3):
    params = make_params(C, T_, dtype=F32)
    return torch.rand(T_, 2, C), params


BAD = {
    "int input": (lambda x, p: (x.to(torch.int64), p, {}), TypeError, r"floating.*got torch.int64"),
    "bool input": (lambda x, p: (x > 0.5, p, {}), TypeError, r"floating.*got torch.bool"),
    "wrong channel count": (
        lambda x, p: (x[:, :, :2], p, {}),
        ValueError,
        r"expected 3 channels at channel_dim=1.*\(2 there\)",
    ),
    "channel_dim too large": (
        lambda x, p: (x, p, {"channel_dim": 2}),
        ValueError,
        r"channel_dim=2 is out of range.*-2 <= channel_dim < 2",
    ),
    "channel_dim too small": (
        lambda x, p: (x, p, {"channel_dim": -3}),
        ValueError,
        r"channel_dim=-3 is out of range",
    ),
    "t0 + T > conduct rows": (
        lambda x, p: (x, p, {"t0": 1}),  # one row short
        ValueError,
        r"time steps 1\.\.3 but conduct has 3 rows",
    ),
    "param on another device": (
        lambda x, p: (x, {**p, "tau": p["tau"].to("meta")}, {}),
        ValueError,
        r"tau is on meta but the input is on cpu",
    ),
    "param wrong shape": (
        lambda x, p: (x, {**p, "beta": torch.zeros(4)}, {}),
        ValueError,
        r"beta must have shape \[3\] like tau, got \[4\]",
    ),
    "conduct wrong shape": (
        lambda x, p: (x, {**p, "conduct": torch.zeros(3, 4)}, {}),
        ValueError,
        r"conduct must have shape \[T_rows, 3\], got \[3, 4\]",
    ),
    "layer-wise conduct 2-D": (
        lambda x, p: (x, {**{n: q[0] for n, q in p.items()}, "conduct": torch.zeros(3, 1)}, {}),
        ValueError,
        r"conduct must have shape \[T_rows\], got \[3, 1\]",
    ),
    "unknown gate_mode": (
        lambda x, p: (x, p, {"gate_mode": "sofft"}),
        ValueError,
        r"gate_mode must be one of .*'soft'.*got 'sofft'",
    ),
    "unknown backend": (
        lambda x, p: (x, p, {"backend": "cuda"}),
        ValueError,
        r"backend must be one of .*got 'cuda'",
    ),
    "T = 0": (lambda x, p: (x[:0], p, {}), ValueError, r"no time steps.*expected T >= 1"),
    "1-D input": (
        lambda x, p: (x[:, 0, 0], p, {}),
        ValueError,
        r"\[T, \*step_shape\].*got shape \(3,\)",
    ),
    "v0 wrong shape": (
        lambda x, p: (x, p, {"v0": torch.zeros(2, 4)}),
        ValueError,
        r"v0 must have the shape of one step, \(2, 3\), got \(2, 4\)",
    ),
}


@pytest.mark.parametrize("name", list(BAD))
def test_validation_errors(name):
    make, exc, pattern = BAD[name]
    x, params, kw = make(*_valid())
    with pytest.raises(exc, match=pattern):
        glif_multi_step(x, **params, **kw)


# (argument, value, error, pattern): every argument of glif_multi_step with a wrong type
WRONG_TYPE = [
    ("x_seq", [[1.0]], TypeError, r"x_seq must be a torch.Tensor, got list"),
    ("v0", "0", TypeError, r"v0 must be a tensor or a float, got str \('0'\)"),
    ("s0", [0.0], TypeError, r"s0 must be a tensor or a float, got list"),
    *(
        (n, 0.0, TypeError, rf"parameter {n} must be a floating torch.Tensor .*got float \(0.0\)")
        for n in PARAMS
    ),
    ("tau", torch.zeros(3, dtype=torch.int64), TypeError, r"tau must be a floating .*torch.int64"),
    ("t0", 1.0, TypeError, r"t0 must be an int, got float \(1.0\)"),
    ("t0", True, TypeError, r"t0 must be an int, got bool \(True\)"),
    ("t0", "0", TypeError, r"t0 must be an int, got str"),
    ("channel_dim", 1.0, TypeError, r"channel_dim must be an int, got float \(1.0\)"),
    ("channel_dim", np.bool_(True), TypeError, r"channel_dim must be an int, got bool"),
    ("gate_mode", 1, TypeError, r"gate_mode must be a str, one of \('soft'.*got int \(1\)"),
    ("gate_mode", None, TypeError, r"gate_mode must be a str.*got NoneType"),
    ("surrogate_function", surrogate.ATan, TypeError,
     r"surrogate_function must be a surrogate instance, e.g. ATan\(\), got the class ATan"),
    ("surrogate_function", "sigmoid", TypeError,
     r"surrogate_function must be a SpikingJelly surrogate instance .*got str"),
    ("detach_reset", 1, TypeError, r"detach_reset must be a bool \(True or False\), got int \(1\)"),
    ("detach_reset", "yes", TypeError, r"detach_reset must be a bool"),
    ("store_v_seq", None, TypeError, r"store_v_seq must be a bool .*got NoneType"),
    ("backend", 1, ValueError, r"backend must be one of \('auto', 'triton', 'torch', 'cpp'\), got 1"),  # noqa: E501
    ("backend", None, ValueError, r"backend must be one of .*got None"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("arg", "value", "exc", "pattern"),
    WRONG_TYPE,
    ids=[f"{a}={type(v).__name__}" for a, v, _, _ in WRONG_TYPE],
)
def test_wrongly_typed_argument_names_it_in_one_line(arg, value, exc, pattern):
    """Issue 8.9: each argument of the wrong type gets a one-line TypeError/ValueError
    naming it, what was expected and what came (not an AttributeError, a TypeError
    about tuple indices or an op-schema dump)."""
    x, params = _valid()
    kw = {"x_seq": x, **params, arg: value}
    with pytest.raises(exc, match=pattern) as info:
        glif_multi_step(**kw)
    assert "\n" not in str(info.value)


def test_numpy_scalars_are_accepted_like_python_numbers():
    """np.int64 for t0/channel_dim, np.bool_ for the flags and NumPy floats for the
    initial state behave exactly like the Python values."""
    x, params = _valid(T_=4)
    x = x[:3]
    want = glif_multi_step(x, 0.5, 0.0, **params, t0=1, channel_dim=-1, detach_reset=True)
    got = glif_multi_step(
        x,
        np.float32(0.5),
        np.float64(0.0),
        **params,
        t0=np.int64(1),
        channel_dim=np.int32(-1),
        detach_reset=np.bool_(True),
        store_v_seq=np.bool_(False),
    )
    for a, b in zip(got[:3], want[:3], strict=True):
        assert torch.equal(a, b)
    assert got.v_seq is None


# --------------------------------------------------------------------------- implementation_for

# "auto" on the CPU: the fused C++ implementation where it builds (tests/test_cpu.py)
AUTO_CPU = "cpp" if cpu.available() else "torch"


def test_implementation_for_cpu_auto(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert implementation_for("cpu")[0] == AUTO_CPU
    assert implementation_for(torch.device("cpu"), "torch")[0] == "torch"
    assert implementation_for("cuda:0")[0] == "triton"  # no GPU needed to decide


def test_implementation_for_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match=r"needs a CUDA tensor, got one on cpu.*TRITON_INTERPRET"):
        implementation_for("cpu", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        implementation_for("cpu", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    name, reason = implementation_for("cpu", "triton")
    assert name == "triton" and "interpreter" in reason


@pytest.mark.parametrize(
    ("env", "backend", "interpret", "want"),
    [
        ("torch", "triton", None, "torch"),  # the variable overrides the argument
        ("triton", "torch", "1", "triton"),
        ("auto", "torch", None, "torch"),  # auto defers to the argument
        ("auto", "auto", None, AUTO_CPU),
        ("triton", "auto", None, ValueError),  # forced triton on the CPU, no interpreter
        ("bogus", "auto", None, ValueError),
    ],
)
def test_implementation_env_var(env, backend, interpret, want, monkeypatch):
    monkeypatch.setenv(ENV_VAR, env)
    if interpret is None:
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    else:
        monkeypatch.setenv("TRITON_INTERPRET", interpret)
    if want is ValueError:
        with pytest.raises(ValueError, match=ENV_VAR):
            implementation_for("cpu", backend)
    else:
        name, reason = implementation_for("cpu", backend)
        assert name == want
        if env != "auto":
            assert f"{ENV_VAR}={env}" in reason


def test_bogus_env_var_message_and_glif_multi_step(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "bogus")
    x, params = _valid()
    with pytest.raises(ValueError, match=r"SJ_GLIF_IMPLEMENTATION must be one of .*got 'bogus'"):
        glif_multi_step(x, **params)


def test_implementation_for_unfused_surrogate_is_reference(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    for backend in ("auto", "torch"):
        name, reason = implementation_for("cpu", backend, surrogate.NonzeroSignLogAbs())
        assert name == "reference" and "NonzeroSignLogAbs" in reason
    assert implementation_for("cpu", "auto", surrogate.ATan())[0] == AUTO_CPU


# --------------------------------------------------------------------------- torch.library


@pytest.mark.parametrize(
    ("store_v_seq", "backend"), [(False, "torch"), (True, "torch"), (False, "triton")]
)
def test_torch_compile_fullgraph_matches_eager(store_v_seq, backend):
    """Small cases (compiling is slow on a 2-core CPU): no graph break, and the
    compiled forward and backward equal eager, with the membrane stream returned or
    not (then the torch backward recomputes it). The Triton path (kernels under the
    interpreter here) checks that its dispatch, launcher-API probes included, traces."""
    params = make_params(3, T, dtype=F32, seed=19)
    x, v0, s0 = make_inputs((T, 2, 3), dtype=F32, seed=20)

    def f(x, v0, s0, params):
        out = glif_multi_step(
            x,
            v0,
            s0,
            **params,
            surrogate_function=surrogate.Sigmoid(),
            channel_dim=-1,
            store_v_seq=store_v_seq,
            backend=backend,
        )
        return out.spike_seq, out.v_seq, out.v_last, out.s_last

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True)
    results = []
    for fn in (f, compiled):
        leaves, p = leaves_of(x, v0, s0, params)
        outs = fn(leaves["x"], leaves["v0"], leaves["s0"], p)
        results.append((outs, loss_and_grads(outs, leaves)))
    (outs_e, grads_e), (outs_c, grads_c) = results
    assert torch.equal(outs_c[0], outs_e[0])
    assert (outs_c[1] is None) == (outs_e[1] is None) == (not store_v_seq)
    for a, b in zip(outs_c[1:], outs_e[1:], strict=True):
        if a is not None:
            torch.testing.assert_close(a, b, **TOL[F32][0])
    for n in grads_e:
        torch.testing.assert_close(grads_c[n], grads_e[n], **TOL[F32][1], msg=n)


def _op_args(layout, store_u, gate_mode):
    C, T_ = 3, 4
    params = make_params(C, T_ + 1, dtype=F32, seed=21)
    if layout == "strided":  # x a transposed view, v0 a transposed state
        x = torch.randn(2, T_, C).transpose(0, 1)
        v0 = torch.randn(C, 2).t()
    else:
        x, v0 = torch.randn(T_, 2, C), torch.randn(2, C)
    s0 = (torch.rand(2, C) > 0.5).float()
    x.requires_grad_()
    ps = [p.requires_grad_() for p in params.values()]
    return (x, v0, s0, *ps, 1, 1, ops._GATE_IDS[gate_mode], 0, 4.0, False, store_u, "torch")


@pytest.mark.parametrize(
    ("layout", "store_u", "gate_mode"),
    [
        ("contiguous", False, "soft"),
        ("contiguous", True, "coarse"),
        ("strided", False, "hard"),
        ("strided", True, "soft"),
    ],
)
def test_opcheck_glif_fwd(layout, store_u, gate_mode):
    """Schema, fake (meta) implementation incl. output strides for strided inputs,
    autograd registration and AOT dispatch of ``sj_glif::glif_fwd``."""
    torch.library.opcheck(torch.ops.sj_glif.glif_fwd.default, _op_args(layout, store_u, gate_mode))


def test_opcheck_glif_bwd():
    args = _op_args("strided", True, "soft")
    x, v0, s0, *rest = (a.detach() if isinstance(a, torch.Tensor) else a for a in args)
    params, flags = rest[:8], rest[8:]
    _, v_last, s_last, u_seq = torch.ops.sj_glif.glif_fwd(x, v0, s0, *params, *flags)
    grad_spike = torch.randn(x.shape)
    grad_v = torch.randn(2, 3).t().contiguous().t()  # a strided incoming gradient
    bwd_args = (
        grad_spike,
        grad_v,
        torch.randn(s_last.shape),
        torch.randn(u_seq.shape),
        x,
        v0,
        s0,
        u_seq,
        *params,
        *flags[:-2],
        "torch",
    )
    torch.library.opcheck(torch.ops.sj_glif.glif_bwd.default, bwd_args)


def _cpu_impls() -> list[str]:
    impls = ["torch"] + (["cpp"] if cpu.available() else [])
    return impls + (["triton"] if ops._triton_available() and ops._interpreter_on() else [])


@pytest.mark.parametrize("impl", _cpu_impls())
def test_absent_outputs_are_none_and_placeholders_only_in_the_op(impl):
    """Every implementation returns None for an output that does not exist (the membranes
    when not stored, the gradient of a zero state given as None) and allocates nothing for
    it; the custom op, whose schema has no optional outputs, returns empty tensors there
    (compute dtype), with the same values elsewhere, and passes opcheck."""
    C, T_ = 3, 4
    params = list(make_params(C, T_, dtype=F32, seed=31).values())
    x = torch.randn(T_, 2, C)
    flags = (0, 1, 0, 0, 4.0, False)
    fwd_args = (x, None, None, *params, *flags, False, impl)
    eager = ops._fwd_impl(*fwd_args)
    spike, v_last, s_last, u = torch.ops.sj_glif.glif_fwd(*fwd_args)
    assert eager[3] is None
    assert u.shape == (0,) and u.dtype == F32
    for a, b in zip(eager[:3], (spike, v_last, s_last), strict=True):
        assert torch.equal(a, b)
    g = torch.randn(x.shape)
    eager_grads = ops._bwd_impl(g, None, None, None, x, None, None, None, *params, *flags, impl)
    bwd_args = (g, None, None, None, x, None, None, u, *params, *flags, impl)
    grads = torch.ops.sj_glif.glif_bwd(*bwd_args)
    assert eager_grads[1] is None and eager_grads[2] is None
    assert grads[1].shape == grads[2].shape == (0,) and grads[1].dtype == grads[2].dtype == F32
    for i in (0, *range(3, 11)):
        torch.testing.assert_close(grads[i], eager_grads[i], rtol=0, atol=0)
    assert not torch.equal(grads[0], torch.zeros_like(grads[0]))
    torch.library.opcheck(torch.ops.sj_glif.glif_bwd.default, bwd_args)
    leaves = [a.detach().requires_grad_() if isinstance(a, torch.Tensor) else a for a in fwd_args]
    torch.library.opcheck(torch.ops.sj_glif.glif_fwd.default, tuple(leaves))


# --------------------------------------------------------------------------- saved tensors


def _saved(fn, *args, **kwargs):
    """(number, bytes) of the tensors autograd saves for backward while ``fn`` runs."""
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with saved_tensors_hooks(pack, lambda t: t):
        out = fn(*args, **kwargs)
    return len(saved), sum(t.numel() * t.element_size() for t in saved), out


@pytest.mark.parametrize("store_v_seq", [False, True])
def test_backward_saves_inputs_state_params_and_membranes_only(store_v_seq):
    """No autograd graph per step: the saved tensors are x, v0, s0, the membrane stream
    (only when it is returned; the torch backward recomputes it otherwise) and the eight
    parameters, whatever T; the reference, by contrast, saves per step."""
    C, B, W = 3, 4, 5
    counts = {}
    for T_ in (4, 16):
        leaves, p = leaves_of(
            *make_inputs((T_, B, C, W), dtype=F32, seed=22), make_params(C, T_, dtype=F32, seed=23)
        )
        x, v0, s0 = leaves["x"], leaves["v0"], leaves["s0"]
        n, nbytes, out = _saved(
            glif_multi_step, x, v0, s0, **p, store_v_seq=store_v_seq, backend="torch"
        )
        step_bytes = B * C * W * 4
        want = (
            T_ * step_bytes
            + 2 * step_bytes
            + sum(q.numel() * 4 for q in p.values())
            + (T_ * step_bytes if store_v_seq else 0)
        )
        assert n == 11 + store_v_seq, n  # x, v0, s0, 8 params and the membranes if returned
        assert nbytes == want, (nbytes, want)
        loss_and_grads((out.spike_seq, out.v_last), leaves)  # and backward runs from them
        counts[T_] = _saved(
            call, "reference", x, v0, s0, p, surrogate_function=surrogate.Sigmoid()
        )[0]
    assert counts[16] > counts[4] > 12, counts
