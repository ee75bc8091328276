"""The reference (``sj_glif.reference.glif_reference``) against the spec.

- spec §5: the four worked examples (A, B, C, E);
- spec §4: the special cases (LIF with a one-step-late hard reset, pure soft reset,
  pure linear decay) against loops written out by hand;
- spec §1 notes: the threshold convention, the reset of step t-1's spike applied at
  step t, the linear decay applied every step, gradients through the previous spike
  into both reset terms and ``detach_reset`` cutting them;
- spec §3: the local derivatives, checked with autograd of one step.

Everything runs in float64. Tolerances: the spec's numbers are printed to six
decimals, so §5 is checked to 1e-6; elsewhere the reference and the formula it is
compared with do the same few float64 operations in a different order, so they agree
to a few ulps of O(1) values (1e-12 leaves a wide margin).
"""

from __future__ import annotations

import math

import pytest
import torch
from spikingjelly.activation_based import surrogate

from sj_glif.reference import glif_reference

F64 = torch.float64
TIGHT = dict(rtol=1e-12, atol=1e-12)
PARAMS = ("alpha", "beta", "gamma", "tau", "v_threshold", "linear_decay", "v_subreset")


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def sig(v: float | torch.Tensor):
    return torch.sigmoid(torch.as_tensor(v, dtype=F64))


def layerwise(conduct, **raw) -> dict[str, torch.Tensor]:
    """Layer-wise raw parameters: 0-dim tensors and a ``[T]`` conduct."""
    out = {n: torch.tensor(float(v), dtype=F64) for n, v in raw.items()}
    out["conduct"] = torch.tensor(conduct, dtype=F64)
    return out


def run(x, params, *, v0=0.0, s0=0.0, sg=None, channel_dim=0, **kw):
    """``glif_reference`` on float64 input ``[T, *step]`` with scalar or tensor initial state."""
    x = torch.as_tensor(x, dtype=F64)
    step = x.shape[1:]
    v0 = v0 if isinstance(v0, torch.Tensor) else torch.full(step, v0, dtype=F64)
    s0 = s0 if isinstance(s0, torch.Tensor) else torch.full(step, s0, dtype=F64)
    return glif_reference(
        x,
        v0,
        s0,
        **params,
        surrogate_function=sg or surrogate.Rect(),
        channel_dim=channel_dim,
        **kw,
    )


# --------------------------------------------------------------------------- spec §5

_A = dict(
    alpha=logit(0.55),
    beta=logit(0.65),
    gamma=logit(0.55),
    tau=logit(0.25),
    v_threshold=0.0,
    linear_decay=logit(0.0625),
    v_subreset=0.0,
)
_B = dict(
    alpha=1.0, beta=-0.5, gamma=0.3, tau=-1.0, v_threshold=0.2, linear_decay=-2.5, v_subreset=-0.3
)
WORKED = {
    "A": (_A, [0.0] * 3, [0.9, 0.3, 0.6], "soft", [0.579375, 0.102547, 0.437122], [1, 0, 0]),
    "B": (_B, [0.5, -0.2, 1.0], [1.2, 0.4, 0.9], "soft", [1.008554, 0.315280, 0.934996], [1, 0, 1]),
    "C": (
        {**_A, "alpha": 0.0, "beta": 0.0, "gamma": 0.0},
        [0.0] * 3,
        [0.9, 0.3, 0.6],
        "soft",
        [0.643750, 0.144922, 0.509326],
        [1, 0, 1],
    ),
    "E": (_A, [0.0] * 3, [0.9, 0.3, 0.6], "coarse", [0.387500, 0.184375, 0.283594], [0, 0, 0]),
}


@pytest.mark.parametrize("name", sorted(WORKED))
def test_worked_examples(name):
    raw, conduct, x, mode, u_want, s_want = WORKED[name]
    params = layerwise(conduct, **raw)
    spikes, v_seq, v_last, s_last = run([[v] for v in x], params, gate_mode=mode)
    torch.testing.assert_close(v_seq[:, 0], torch.tensor(u_want, dtype=F64), rtol=0, atol=1e-6)
    assert spikes[:, 0].tolist() == s_want
    assert v_last.item() == v_seq[-1, 0].item() and s_last.item() == s_want[-1]


def test_coarse_ignores_the_gates():
    """GLIF_f has no gates: any alpha/beta/gamma (or None) gives example E."""
    raw, conduct, x, *_ = WORKED["E"]
    with_gates = run([[v] for v in x], layerwise(conduct, **raw), gate_mode="coarse")
    none = {**layerwise(conduct, **raw), "alpha": None, "beta": None, "gamma": None}
    without = run([[v] for v in x], none, gate_mode="coarse")
    for a, b in zip(with_gates, without, strict=True):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------- spec §4

T, B, C = 6, 4, 3


def channel_params(seed: int, **fixed: float) -> dict[str, torch.Tensor]:
    """Channel-wise raw parameters ~U(-2, 2) (``[C]``, conduct ``[T, C]``); ``fixed``
    overrides a parameter with one raw value for every channel."""
    g = torch.Generator().manual_seed(seed)
    out = {n: 4 * torch.rand(C, generator=g, dtype=F64) - 2 for n in PARAMS}
    out["conduct"] = 4 * torch.rand(T, C, generator=g, dtype=F64) - 2
    for n, v in fixed.items():
        out[n] = torch.full((C,), float(v), dtype=F64)
    return out


def inputs(seed: int) -> torch.Tensor:
    """``[T, B, C]`` inputs in (-0.5, 1.5): some neurons fire, some do not."""
    g = torch.Generator().manual_seed(seed)
    return 2 * torch.rand(T, B, C, generator=g, dtype=F64) - 0.5


def effective(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: torch.sigmoid(p) for n, p in raw.items()}


def hand_loop(x, step):
    """Run ``u, s = step(t, u_prev, s_prev, x_t)`` from zero state; stack u and s."""
    u = torch.zeros(x.shape[1:], dtype=F64)
    s = torch.zeros_like(u)
    us, ss = [], []
    for t in range(x.shape[0]):
        u, s = step(t, u, s, x[t])
        us.append(u)
        ss.append(s)
    return torch.stack(us), torch.stack(ss)


def check_against(x, params, step, gate_mode="soft"):
    spikes, v_seq, _, _ = run(x, params, channel_dim=1, gate_mode=gate_mode)
    u_want, s_want = hand_loop(x, step)
    # exact spike comparison is meaningful only away from the threshold
    assert (u_want - torch.sigmoid(params["v_threshold"])).abs().min() > 1e-9
    assert spikes.sum() > 0 and (1 - spikes).sum() > 0, "the case should fire and not fire"
    torch.testing.assert_close(v_seq, u_want, **TIGHT)
    assert torch.equal(spikes, s_want)


# Gates at 0 or 1: soft mode with raw -+50 (sigmoid(50) == 1.0 in float64 and
# sigmoid(-50) ~ 2e-22, far below the tolerance) and hard mode with raw -+1 (exact).
LIMITS = [("soft", 50.0), ("hard", 1.0)]


@pytest.mark.parametrize(("gate_mode", "big"), LIMITS)
def test_a1_b0_g1_is_lif_with_one_step_late_hard_reset(gate_mode, big):
    params = channel_params(1, alpha=big, beta=-big, gamma=big)
    p = effective(params)
    tau, theta = p["tau"], p["v_threshold"]

    def lif(t, u, s, x):  # u_t = tau u_{t-1} (1 - s_{t-1}) + x_t;  s_t = [u_t >= theta]
        u = tau * u * (1 - s) + x
        return u, (u >= theta).to(F64)

    check_against(inputs(2), params, lif, gate_mode)


@pytest.mark.parametrize(("gate_mode", "big"), LIMITS)
def test_g0_is_pure_soft_reset(gate_mode, big):
    a_raw, b_raw = (0.7, -0.4) if gate_mode == "soft" else (-1.0, 1.0)
    params = channel_params(3, alpha=a_raw, beta=b_raw, gamma=-big)
    p = effective(params)
    a = sig(a_raw) if gate_mode == "soft" else (torch.tensor(a_raw) > 0).to(F64)
    b = sig(b_raw) if gate_mode == "soft" else (torch.tensor(b_raw) > 0).to(F64)
    d = 1 - a * (1 - p["tau"])

    def soft_reset(t, u, s, x):  # subtract V_R after a spike; the old potential is kept
        u = d * u - (1 - a) * p["linear_decay"] + (1 - b * (1 - p["conduct"][t])) * x
        u = u - p["v_subreset"] * s
        return u, (u >= p["v_threshold"]).to(F64)

    check_against(inputs(4), params, soft_reset, gate_mode)


@pytest.mark.parametrize(("gate_mode", "big"), LIMITS)
def test_a0_is_pure_linear_decay(gate_mode, big):
    params = channel_params(5, alpha=-big)
    p = effective(params)
    b, g = p["beta"], p["gamma"]
    if gate_mode == "hard":
        b, g = (params["beta"] > 0).to(F64), (params["gamma"] > 0).to(F64)

    def linear(t, u, s, x):  # no exponential decay: u loses V_L per step
        u = u * (1 - g * s) - p["linear_decay"] + (1 - b * (1 - p["conduct"][t])) * x
        u = u - (1 - g) * p["v_subreset"] * s
        return u, (u >= p["v_threshold"]).to(F64)

    check_against(inputs(6), params, linear, gate_mode)
    # tau plays no part when a = 0
    other_tau = {**params, "tau": params["tau"] + 1.5}
    torch.testing.assert_close(
        run(inputs(6), other_tau, channel_dim=1, gate_mode=gate_mode)[1],
        run(inputs(6), params, channel_dim=1, gate_mode=gate_mode)[1],
        **TIGHT,
    )


# --------------------------------------------------------------------------- spec §1 notes

# hard gates give exact 0/1: a = 1 (d = tau), b = 0 (input coefficient 1), g = 1
_LIF = dict(alpha=1.0, beta=-1.0, gamma=1.0, tau=0.0, v_subreset=0.0, linear_decay=0.0)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("sg", [surrogate.Rect(), surrogate.Sigmoid()], ids=["Rect", "Sigmoid"])
def test_spike_iff_u_minus_theta_is_at_least_zero(dtype, sg):
    """H(z) = 1 iff z >= 0 (SpikingJelly's convention): u exactly at theta = sigmoid(0)
    = 0.5 fires, the next float below does not; both sides further out too."""
    half = torch.tensor(0.5, dtype=dtype)
    below = torch.nextafter(half, torch.tensor(0.0, dtype=dtype))
    above = torch.nextafter(half, torch.tensor(1.0, dtype=dtype))
    x = torch.stack([half, below, above, half - 0.25, half + 0.25]).reshape(1, 5)
    params = {n: p.to(dtype) for n, p in layerwise([0.0], v_threshold=0.0, **_LIF).items()}
    zeros = torch.zeros(5, dtype=dtype)
    spikes, v_seq, _, _ = glif_reference(
        x, zeros, zeros, **params, surrogate_function=sg, channel_dim=0, gate_mode="hard"
    )
    assert torch.equal(v_seq[0], x[0]), "u_0 = x_0 exactly with these gates"
    assert spikes[0].tolist() == [1, 0, 1, 0, 1]


def test_reset_of_a_spike_happens_at_the_next_step():
    """u_{t-1} keeps its supra-threshold value; the reset enters u_t's expression."""
    params = layerwise(
        [0.4, -0.3, 0.1],
        alpha=0.3,
        beta=-0.2,
        gamma=0.5,
        tau=-0.8,
        v_threshold=0.0,
        linear_decay=-2.0,
        v_subreset=-0.5,
    )
    p = effective(params)
    a, b, g = p["alpha"], p["beta"], p["gamma"]
    x = [[1.5], [0.2], [0.0]]
    spikes, v_seq, _, _ = run(x, params)
    k0 = 1 - b * (1 - p["conduct"][0])
    u0 = -(1 - a) * p["linear_decay"] + k0 * 1.5
    assert spikes[:, 0].tolist() == [1, 0, 0]
    assert v_seq[0, 0] > p["v_threshold"] + 0.5, "the spiking step stores u_0, not a reset value"
    torch.testing.assert_close(v_seq[0, 0], u0, **TIGHT)
    d = 1 - a * (1 - p["tau"])
    u1 = (
        d * u0 * (1 - g)  # hard reset: fraction g of the decayed old potential removed
        - (1 - a) * p["linear_decay"]
        + (1 - b * (1 - p["conduct"][1])) * 0.2
        - (1 - g) * p["v_subreset"]  # soft reset
    )
    torch.testing.assert_close(v_seq[1, 0], u1, **TIGHT)


def test_linear_decay_every_step_even_after_a_spike():
    """a = 0 (pure linear decay), g = 1 (full hard reset): after a spike at t = 0 and no
    further input, u_t = -t V_L: the hard reset removes the old potential only, never
    the linear decay (nor the input)."""
    params = layerwise(
        [0.0] * 4,
        alpha=-1.0,
        beta=-1.0,
        gamma=1.0,
        tau=0.0,
        v_threshold=0.0,
        linear_decay=-1.0,
        v_subreset=0.0,
    )
    vl = sig(-1.0)
    spikes, v_seq, _, _ = run([[2.0], [0.0], [0.0], [0.0]], params, gate_mode="hard")
    assert spikes[:, 0].tolist() == [1, 0, 0, 0]
    want = torch.stack([2.0 - vl, -vl, -2 * vl, -3 * vl])
    torch.testing.assert_close(v_seq[:, 0], want, **TIGHT)

    # and with a fractional a (soft gates): u_1 = -(1 - a) V_L + K_1 x_1 after a spike
    params = layerwise(
        [0.3, -0.6],
        alpha=0.4,
        beta=0.2,
        gamma=50.0,
        tau=-1.0,
        v_threshold=0.0,
        linear_decay=-1.0,
        v_subreset=0.0,
    )
    p = effective(params)
    spikes, v_seq, _, _ = run([[2.0], [0.25]], params)
    assert spikes[0, 0] == 1
    u1 = -(1 - p["alpha"]) * p["linear_decay"] + (1 - p["beta"] * (1 - p["conduct"][1])) * 0.25
    torch.testing.assert_close(v_seq[1, 0], u1, **TIGHT)


# --------------------------------------------------------------------------- reset gradients


def _reset_grad(gamma: float, gate_mode: str, detach_reset: bool):
    """d u_1 / d x_0 for one neuron whose u_0 = x_0 sits 0.1 above theta = 0.5 (inside
    the Rect window |z| < 0.5, where sg = 1), plus the values it is made of."""
    params = layerwise(
        [0.0, 0.0],
        alpha=1.0 if gate_mode == "hard" else 0.4,
        beta=-1.0,
        gamma=gamma,
        tau=-1.0,
        v_threshold=0.0,
        linear_decay=-1.0,
        v_subreset=-0.5,
    )
    p = effective(params)
    a = torch.tensor(1.0, dtype=F64) if gate_mode == "hard" else p["alpha"]
    b = torch.tensor(0.0, dtype=F64) if gate_mode == "hard" else p["beta"]
    g = (torch.tensor(gamma) > 0).to(F64) if gate_mode == "hard" else p["gamma"]
    k0 = 1 - b * (1 - p["conduct"][0])
    x0 = ((0.6 + (1 - a) * p["linear_decay"]) / k0).item()  # u_0 = 0.6
    x = torch.tensor([[x0], [0.0]], dtype=F64, requires_grad=True)
    spikes, v_seq, _, _ = run(x, params, gate_mode=gate_mode, detach_reset=detach_reset)
    assert spikes[0, 0] == 1
    torch.testing.assert_close(v_seq[0, 0], torch.tensor(0.6, dtype=F64), **TIGHT)
    (grad,) = torch.autograd.grad(v_seq[1, 0], x)
    d = 1 - a * (1 - p["tau"])
    return grad[0, 0], dict(d=d, g=g, k0=k0, u0=0.6, vr=p["v_subreset"])


@pytest.mark.parametrize("detach_reset", [False, True])
def test_gradient_through_the_hard_reset_term(detach_reset):
    """g = 1: only the hard-reset term d u_{t-1} (1 - g s_{t-1}) holds s_{t-1}."""
    grad, v = _reset_grad(1.0, "hard", detach_reset)
    direct = v["d"] * (1 - v["g"]) * v["k0"]  # = 0: the reset removed the old potential
    via_spike = -v["g"] * v["d"] * v["u0"] * 1.0 * v["k0"]  # du_1/ds_0 * sg(z_0) * du_0/dx_0
    assert via_spike != 0
    want = direct if detach_reset else direct + via_spike
    torch.testing.assert_close(grad, torch.as_tensor(want, dtype=F64), **TIGHT)


@pytest.mark.parametrize("detach_reset", [False, True])
def test_gradient_through_the_soft_reset_term(detach_reset):
    """g = 0: only the soft-reset term (1 - g) V_R s_{t-1} holds s_{t-1}."""
    grad, v = _reset_grad(-1.0, "hard", detach_reset)
    direct = v["d"] * v["k0"]
    via_spike = -v["vr"] * 1.0 * v["k0"]
    assert via_spike != 0
    want = direct if detach_reset else direct + via_spike
    torch.testing.assert_close(grad, torch.as_tensor(want, dtype=F64), **TIGHT)


@pytest.mark.parametrize("detach_reset", [False, True])
def test_gradient_through_both_reset_terms_with_a_fractional_gate(detach_reset):
    grad, v = _reset_grad(0.3, "soft", detach_reset)
    direct = v["d"] * (1 - v["g"]) * v["k0"]
    via_spike = (-v["g"] * v["d"] * v["u0"] - (1 - v["g"]) * v["vr"]) * v["k0"]
    want = direct if detach_reset else direct + via_spike
    torch.testing.assert_close(grad, want, **TIGHT)


def test_detach_reset_keeps_the_gamma_gradient_of_the_forward():
    """detach_reset cuts d/ds_{t-1} only: gamma still multiplies s_{t-1} in the forward,
    so du_1/dgamma = (-d u_0 s_0 + V_R s_0) g'(raw) either way."""
    params = layerwise(
        [0.0, 0.0],
        alpha=0.4,
        beta=-1.0,
        gamma=0.3,
        tau=-1.0,
        v_threshold=0.0,
        linear_decay=-1.0,
        v_subreset=-0.5,
    )
    params["gamma"].requires_grad_()
    p = effective({n: q.detach() for n, q in params.items()})
    grads = []
    for detach in (False, True):
        spikes, v_seq, _, _ = run([[2.0], [0.0]], params, detach_reset=detach)
        assert spikes[0, 0] == 1
        grads.append(torch.autograd.grad(v_seq[1, 0], params["gamma"])[0])
        u0 = v_seq[0, 0].detach()
    d = 1 - p["alpha"] * (1 - p["tau"])
    want = (-d * u0 + p["v_subreset"]) * p["gamma"] * (1 - p["gamma"])
    assert want != 0
    for grad in grads:
        torch.testing.assert_close(grad, want, **TIGHT)


# --------------------------------------------------------------------------- spec §3


def test_local_derivatives_of_one_step():
    """Autograd of one step (T = 1, channel-wise, Sigmoid surrogate so sg != 0 anywhere)
    against spec §3, each raw parameter's entry times sigmoid'(raw) and summed over the
    batch (every element of a channel shares the parameter)."""
    g = torch.Generator().manual_seed(7)
    raw = channel_params(8)
    raw["conduct"] = raw["conduct"][:1]
    for q in raw.values():
        q.requires_grad_()
    x = (2 * torch.rand(B, C, generator=g, dtype=F64) - 0.5)[None].requires_grad_()
    v0 = (torch.rand(B, C, generator=g, dtype=F64) - 0.2).requires_grad_()
    s0 = (torch.rand(B, C, generator=g, dtype=F64) > 0.5).to(F64).requires_grad_()
    sgf = surrogate.Sigmoid(alpha=4.0)
    spikes, v_seq, _, _ = run(x, raw, v0=v0, s0=s0, sg=sgf, channel_dim=1)
    u = v_seq[0]
    leaves = {"x": x, "v0": v0, "s0": s0, **raw}
    grads = torch.autograd.grad(
        u.sum(), list(leaves.values()), retain_graph=True, allow_unused=True
    )
    du = {
        n: torch.zeros_like(q) if gr is None else gr
        for (n, q), gr in zip(leaves.items(), grads, strict=True)
    }
    ds = dict(
        zip(
            ("x", "v_threshold"),
            torch.autograd.grad(spikes.sum(), [x, raw["v_threshold"]]),
            strict=True,
        )
    )

    p = effective({n: q.detach() for n, q in raw.items()})
    a, b, gm, tau, theta = p["alpha"], p["beta"], p["gamma"], p["tau"], p["v_threshold"]
    vl, vr, k = p["linear_decay"], p["v_subreset"], p["conduct"][0]
    v0, s0, x0 = v0.detach(), s0.detach(), x.detach()[0]
    d = 1 - a * (1 - tau)
    kept = v0 * (1 - gm * s0)  # u_{t-1} (1 - g s_{t-1})
    z = u.detach() - theta
    sg = 4 * torch.sigmoid(4 * z) * (1 - torch.sigmoid(4 * z))

    def dsig(v):
        return v * (1 - v)

    elementwise = {
        "v0": d * (1 - gm * s0),
        "s0": -gm * d * v0 - (1 - gm) * vr,
        "x": (1 - b * (1 - k)).expand(B, C)[None],
    }
    per_channel = {
        "alpha": (-(1 - tau) * kept + vl) * dsig(a),
        "tau": a * kept * dsig(tau),
        "beta": -(1 - k) * x0 * dsig(b),
        "gamma": (-d * v0 * s0 + vr * s0) * dsig(gm),
        "linear_decay": -(1 - a).expand(B, C) * dsig(vl),
        "v_subreset": -(1 - gm) * s0 * dsig(vr),
    }
    for name, want in elementwise.items():
        torch.testing.assert_close(du[name], want, **TIGHT, msg=f"du/d{name}")
    for name, want in per_channel.items():
        torch.testing.assert_close(du[name], want.sum(0), **TIGHT, msg=f"du/d{name}")
    torch.testing.assert_close(
        du["conduct"][0], (b * x0 * dsig(k)).sum(0), **TIGHT, msg="du/dconduct"
    )
    torch.testing.assert_close(
        du["v_threshold"], torch.zeros(C, dtype=F64), **TIGHT, msg="u does not depend on theta"
    )
    # ds/du = sg(u - theta), ds/dtheta = -sg(u - theta)
    torch.testing.assert_close(ds["x"], sg[None] * elementwise["x"], **TIGHT, msg="ds/dx")
    torch.testing.assert_close(
        ds["v_threshold"], (-sg * dsig(theta)).sum(0), **TIGHT, msg="ds/dtheta"
    )
    assert (sg > 1e-3).any(), "the check should see non-trivial surrogate values"
