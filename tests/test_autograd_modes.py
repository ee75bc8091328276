"""Autograd beyond first-order backward: double backward, ``torch.func`` transforms and
forward mode, each against the float64 reference differentiated by plain autograd (the
spec: :func:`sj_glif.reference.glif_reference` with SpikingJelly's own surrogate object).

What ``glif_multi_step`` promises (its docstring): double backward and the reverse
``torch.func`` transforms give the reference's derivatives; forward mode works for the
fused surrogates (and agrees with reverse mode) and raises NotImplementedError at the
call for any other surrogate; nothing returns zeros silently.
"""

from __future__ import annotations

import pytest
import torch
from spikingjelly.activation_based import surrogate
from torch.autograd import forward_ad as fwAD

from sj_glif import ops
from sj_glif.ops import glif_multi_step
from sj_glif.reference import glif_reference

F64 = torch.float64
PARAMS = ("alpha", "beta", "gamma", "tau", "v_threshold", "linear_decay", "v_subreset", "conduct")
T, STEP, C = 4, (2, 3), 3  # [B, C] steps, channel at 1
TOL = dict(rtol=1e-10, atol=1e-10)


def _case(seed: int, gate_mode: str = "soft"):
    """Raw parameters ~U(-2, 2), x in (-0.75, 2.25), random v0 and 0/1 s0 (float64)."""
    g = torch.Generator().manual_seed(seed)
    params = {n: 4 * torch.rand((T, C) if n == "conduct" else (C,), generator=g, dtype=F64) - 2
              for n in PARAMS}  # fmt: skip
    if gate_mode == "coarse":
        params.update(alpha=None, beta=None, gamma=None)
    x = 3 * (torch.rand((T, *STEP), generator=g, dtype=F64) - 0.25)
    v0 = torch.rand(STEP, generator=g, dtype=F64) - 0.3
    s0 = (torch.rand(STEP, generator=g, dtype=F64) > 0.5).to(F64)
    return params, x, v0, s0


def _ours(x, v0, s0, params, sg, **kw):
    kw.setdefault("backend", "torch")
    out = glif_multi_step(x, v0, s0, **params, surrogate_function=sg, **kw)
    return out.spike_seq, out.v_last, out.s_last


def _reference(x, v0, s0, params, sg, gate_mode="soft", detach_reset=False, **_):
    spike_seq, _, v_last, s_last = glif_reference(
        x, v0, s0, **params, surrogate_function=sg, gate_mode=gate_mode, detach_reset=detach_reset
    )
    return spike_seq, v_last, s_last


def _leaves(x, v0, s0, params):
    leaves = {"x": x, "v0": v0, "s0": s0, **{n: p for n, p in params.items() if p is not None}}
    leaves = {n: t.detach().clone().requires_grad_() for n, t in leaves.items()}
    p = {n: leaves.get(n) if params[n] is not None else None for n in PARAMS}
    return leaves, p


def _weights(outs, seed=7):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(o.shape, generator=g, dtype=F64) - 0.5 for o in outs]


def _first_and_second(fn, x, v0, s0, params, sg, penalize=None, **kw):
    """First-order gradients of a loss on every output (with a graph), then the gradients
    of a random weighted sum of those: a gradient penalty's double backward."""
    leaves, p = _leaves(x, v0, s0, params)
    outs = fn(leaves["x"], leaves["v0"], leaves["s0"], p, sg, **kw)
    # a loss that is nonlinear in the final membrane, so its incoming gradient has a graph too
    loss = sum((w * o).sum() for w, o in zip(_weights(outs), outs, strict=True))
    loss = loss + (outs[1] ** 2).sum()
    names = list(leaves)
    # allow_unused: s0 under detach_reset and frozen gates get no gradient
    first = torch.autograd.grad(loss, [leaves[n] for n in names], create_graph=True,
                                allow_unused=True)  # fmt: skip
    weights = _weights([leaves[n] for n in names], seed=8)
    penalty = sum((w * g).sum() for n, w, g in zip(names, weights, first, strict=True)
                  if g is not None and (penalize is None or n in penalize))  # fmt: skip
    second = torch.autograd.grad(penalty, [leaves[n] for n in names], allow_unused=True)

    def filled(grads):
        return {n: torch.zeros_like(leaves[n]) if g is None else g.detach()
                for n, g in zip(names, grads, strict=True)}  # fmt: skip

    return filled(first), filled(second)


DOUBLE = [
    ("Sigmoid", "soft", False, "torch"),
    ("ATan", "hard", True, "torch"),
    ("Rect", "coarse", False, "torch"),
    ("PiecewiseQuadratic", "static_soft", False, "torch"),
    ("Sigmoid", "soft", False, "triton"),  # the Triton forward (interpreter), same backward
]


@pytest.mark.parametrize(("sg_name", "gate_mode", "detach_reset", "backend"), DOUBLE)
def test_double_backward_matches_reference(sg_name, gate_mode, detach_reset, backend):
    """``autograd.grad(create_graph=True)`` then a backward through that gradient: first-
    and second-order gradients of x, v0, s0 and every parameter equal the reference's."""
    sg = getattr(surrogate, sg_name)()
    params, x, v0, s0 = _case(1, gate_mode)
    kw = dict(gate_mode=gate_mode, detach_reset=detach_reset)
    first, second = _first_and_second(_ours, x, v0, s0, params, sg, backend=backend, **kw)
    first_ref, second_ref = _first_and_second(_reference, x, v0, s0, params, sg, **kw)
    for n in first_ref:
        torch.testing.assert_close(first[n], first_ref[n], **TOL, msg=f"first-order {n}")
        torch.testing.assert_close(second[n], second_ref[n], **TOL, msg=f"second-order {n}")
    if sg_name in ("Sigmoid", "ATan"):  # smooth surrogates: second order reaches the params
        assert second_ref["tau"].abs().sum() > 0


def test_double_backward_with_zero_initial_state():
    """The default zero state (no tensor passed) gives the reference's derivatives too."""
    sg = surrogate.Sigmoid()
    params, x, _, _ = _case(2)
    zero = torch.zeros(STEP, dtype=F64)

    def ours(x, v0, s0, p, sg):
        out = glif_multi_step(x, **p, surrogate_function=sg, backend="torch")
        return out.spike_seq, out.v_last, out.s_last

    names = ("x", *PARAMS)  # the zero state is no input of ours
    first, second = _first_and_second(ours, x, zero, zero, params, sg, penalize=names)
    first_ref, second_ref = _first_and_second(_reference, x, zero, zero, params, sg, names)
    for n in names:
        torch.testing.assert_close(first[n], first_ref[n], **TOL, msg=f"first-order {n}")
        torch.testing.assert_close(second[n], second_ref[n], **TOL, msg=f"second-order {n}")


def _loss_fn(fn, x, v0, s0, params, sg):
    """A scalar loss of (x, tau, v_threshold) on every output, for torch.func."""

    weights = _weights((x, v0, s0))  # drawn outside the transforms: same shapes as the outputs

    def loss(x, tau, theta):
        outs = fn(x, v0, s0, {**params, "tau": tau, "v_threshold": theta}, sg)
        return sum((w * o).sum() for w, o in zip(weights, outs, strict=True))

    return loss


@pytest.mark.parametrize("sg_name", ["Sigmoid", "Rect"])
def test_torch_func_grad_vjp_jacrev_hessian(sg_name):
    sg = getattr(surrogate, sg_name)()
    params, x, v0, s0 = _case(3)
    ours = _loss_fn(_ours, x, v0, s0, params, sg)
    ref = _loss_fn(_reference, x, v0, s0, params, sg)
    args = (x, params["tau"], params["v_threshold"])

    leaves = [a.clone().requires_grad_() for a in args]
    want = torch.autograd.grad(ref(*leaves), leaves, create_graph=True)
    got = torch.func.grad(ours, argnums=(0, 1, 2))(*args)
    for name, g, w in zip(("x", "tau", "v_threshold"), got, want, strict=True):
        torch.testing.assert_close(g, w.detach(), **TOL, msg=f"func.grad {name}")
        assert w.abs().sum() > 0, name
    _, vjp_fn = torch.func.vjp(ours, *args)
    for g, w in zip(vjp_fn(torch.tensor(1.0, dtype=F64)), want, strict=True):
        torch.testing.assert_close(g, w.detach(), **TOL, msg="func.vjp")

    def v_last(tau):  # a vector output: the Jacobian of the final membrane w.r.t. tau
        return _ours(x, v0, s0, {**params, "tau": tau}, sg)[1].flatten()

    tau = params["tau"].clone().requires_grad_()
    ref_v = _reference(x, v0, s0, {**params, "tau": tau}, sg)[1].flatten()
    jac_ref = torch.stack([torch.autograd.grad(r, tau, retain_graph=True)[0] for r in ref_v])
    torch.testing.assert_close(torch.func.jacrev(v_last)(params["tau"]), jac_ref, **TOL)

    # hessian = jacfwd(jacrev): reverse over forward mode, against plain double backward
    hess = torch.func.hessian(ours, argnums=1)(*args)
    tau = params["tau"].clone().requires_grad_()
    (g,) = torch.autograd.grad(ref(x, tau, params["v_threshold"]), tau, create_graph=True)
    rows = [
        torch.autograd.grad(g[i], tau, retain_graph=True, allow_unused=True)[0] for i in range(C)
    ]
    hess_ref = torch.stack([torch.zeros(C, dtype=F64) if r is None else r for r in rows])
    torch.testing.assert_close(hess, hess_ref, **TOL)


def test_torch_func_vmap_equals_a_loop():
    sg = surrogate.Sigmoid()
    params, x, v0, s0 = _case(4)
    xs = torch.stack([x, 0.5 * x, x.flip(0)])
    batched = torch.func.vmap(lambda x: _ours(x, v0, s0, params, sg)[1])(xs)
    for i in range(xs.shape[0]):
        torch.testing.assert_close(batched[i], _reference(xs[i], v0, s0, params, sg)[1], **TOL)


def _jacobian_products(x, v0, s0, params, sg, tangents, gate_mode="soft"):
    """``J t`` for every output from the reference's reverse-mode Jacobians (plain
    autograd, one backward per output element)."""
    leaves, p = _leaves(x, v0, s0, params)
    outs = _reference(leaves["x"], leaves["v0"], leaves["s0"], p, sg, gate_mode=gate_mode)
    names = list(tangents)
    products = []
    for out in outs:
        flat = out.flatten()
        rows = []
        for i in range(flat.numel()):
            grads = torch.autograd.grad(
                flat[i], [leaves[n] for n in names], retain_graph=True, allow_unused=True
            )
            rows.append(sum((g * tangents[n]).sum() for n, g in zip(names, grads, strict=True)
                            if g is not None))  # fmt: skip
        products.append(torch.stack([torch.as_tensor(r, dtype=F64) for r in rows]).view(out.shape))
    return products


@pytest.mark.parametrize(("sg_name", "gate_mode"), [("Sigmoid", "soft"), ("ATan", "coarse")])
def test_forward_mode_jvp_and_dual_tensors_match_reverse_jacobian(sg_name, gate_mode):
    """torch.func.jvp and forward_ad dual tensors give J t, the same Jacobian the reverse
    mode (and the reference) uses, never zeros."""
    sg = getattr(surrogate, sg_name)()
    params, x, v0, s0 = _case(5, gate_mode)
    g = torch.Generator().manual_seed(11)
    tangents = {"x": torch.randn(x.shape, generator=g, dtype=F64),
                "v0": torch.randn(v0.shape, generator=g, dtype=F64),
                "tau": torch.randn(C, generator=g, dtype=F64),
                "v_threshold": torch.randn(C, generator=g, dtype=F64)}  # fmt: skip
    want = _jacobian_products(x, v0, s0, params, sg, tangents, gate_mode)
    assert all(w.abs().sum() > 0 for w in want)

    def f(x, v0, tau, theta):
        p = {**params, "tau": tau, "v_threshold": theta}
        return _ours(x, v0, s0, p, sg, gate_mode=gate_mode)

    primals = (x, v0, params["tau"], params["v_threshold"])
    _, got = torch.func.jvp(f, primals, tuple(tangents.values()))
    for name, a, b in zip(("spike_seq", "v_last", "s_last"), got, want, strict=True):
        torch.testing.assert_close(a, b, **TOL, msg=f"jvp {name}")

    with fwAD.dual_level():
        duals = [fwAD.make_dual(p, t) for p, t in zip(primals, tangents.values(), strict=True)]
        got = [fwAD.unpack_dual(o).tangent for o in f(*duals)]
    for name, a, b in zip(("spike_seq", "v_last", "s_last"), got, want, strict=True):
        torch.testing.assert_close(a, b, **TOL, msg=f"dual {name}")

    jac_fwd = torch.func.jacfwd(lambda tau: f(x, v0, tau, params["v_threshold"])[1])(params["tau"])
    jac_rev = torch.func.jacrev(lambda tau: f(x, v0, tau, params["v_threshold"])[1])(params["tau"])
    torch.testing.assert_close(jac_fwd, jac_rev, **TOL)


def test_forward_mode_with_an_unfused_surrogate_raises_at_the_call(monkeypatch):
    sg = surrogate.PiecewiseLeakyReLU()  # not fused: SpikingJelly defines no jvp for it
    monkeypatch.setattr(ops, "_warned_surrogates", set())  # the warning comes once a class
    params, x, v0, s0 = _case(6)
    with pytest.warns(UserWarning, match="not one of the fused"):  # the reverse mode works
        grads = torch.func.grad(lambda x: _ours(x, v0, s0, params, sg)[1].sum())(x)
    assert grads.abs().sum() > 0
    with pytest.raises(NotImplementedError, match=r"forward-mode AD .*PiecewiseLeakyReLU"):
        torch.func.jvp(lambda x: _ours(x, v0, s0, params, sg)[1], (x,), (torch.ones_like(x),))
    with fwAD.dual_level(), pytest.raises(NotImplementedError, match="forward-mode AD"):
        _ours(fwAD.make_dual(x, torch.ones_like(x)), v0, s0, params, sg)
