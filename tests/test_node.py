"""GLIFNode as a SpikingJelly 2.0 node: arguments, lazy shapes, state, step modes,
gate modes, layouts, dtypes, validation and the functional contract.

Numbers from the spec (``../shared/glif-spec.md`` §5) are checked directly; everything
else is checked against another way of computing the same thing (chunked vs whole vs
step by step, channel-last vs channel-first, the float64 reference of
:mod:`sj_glif.reference`).

Tolerances: float64 comparisons between two schedules of the same arithmetic use
rtol=1e-9/atol=1e-12: the forward runs the same per-step operations in the same order
(bitwise equal), and gradients only differ in the order in which per-time-step
contributions are summed (a few ulp of float64, ~1e-15 relative). The node vs the
autograd reference differ in association of a handful of operations per step, so
float64 is again ~1e-15 relative; 1e-9 leaves room for T-fold error growth through the
recurrence without hiding a wrong term (those are O(1e-2) and larger).
"""

from __future__ import annotations

import copy
import inspect
import math
import re

import numpy as np
import pytest
import torch
from spikingjelly.activation_based import base, functional, layer, neuron, surrogate
from torch import nn
from torch.nn.parameter import UninitializedParameter, is_lazy

import sj_glif
from sj_glif import GLIFNode
from sj_glif.reference import glif_reference

PARAMS = ("alpha", "beta", "gamma", "tau", "v_threshold", "linear_decay", "v_subreset", "conduct")
GATES = ("alpha", "beta", "gamma")
# spread of the random raw parameters, so that gates, thresholds and decays differ per
# channel and the hard gates are a mix of 0 and 1: (std, mean)
RAW = {
    "alpha": (1.5, 0.0),
    "beta": (1.5, 0.0),
    "gamma": (1.5, 0.0),
    "tau": (1.0, 0.0),
    "v_threshold": (0.5, 0.0),
    "linear_decay": (1.0, -2.0),
    "v_subreset": (0.5, 0.0),
    "conduct": (1.0, 0.0),
}
F64 = dict(rtol=1e-9, atol=1e-12)


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def randomize_(node: GLIFNode, seed: int) -> GLIFNode:
    """Random raw parameters (materialized node), reproducible from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in node.named_parameters():
            std, mean = RAW[name]
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std + mean)
    return node


def make_node(T: int = 5, C: int | None = 3, seed: int = 0, **kwargs) -> GLIFNode:
    kwargs.setdefault("surrogate_function", surrogate.Sigmoid())
    node = GLIFNode(T=T, channels=C, channel_wise=C is not None, **kwargs)
    return randomize_(node, seed)


def rand_input(shape, seed: int = 1, dtype=torch.float64) -> torch.Tensor:
    """Inputs in [-0.2, 1.4): with thresholds ~0.5 a mix of spikes and silence."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=torch.float64) * 1.6 - 0.2).to(dtype)


def set_raw_(node: GLIFNode, **values) -> None:
    with torch.no_grad():
        for name, v in values.items():
            p = getattr(node, name)
            p.copy_(torch.as_tensor(v, dtype=p.dtype).reshape(p.shape))


def run(node: GLIFNode, x: torch.Tensor, schedule, store_v_seq: bool = False, weights=None) -> dict:
    """Run a copy of ``node`` over ``x`` ([T, *step]) and backpropagate one loss that
    touches every spike and the final membrane.

    schedule: ``"s"`` (one step per call in single-step mode) or a list of chunk
    lengths for multi-step calls (``[T]``: one call). weights: the loss weights
    ``(w_spikes, w_v)`` (default :func:`loss_weights`).
    """
    node = copy.deepcopy(node)
    functional.reset_net(node)
    node.store_v_seq = store_v_seq
    x = x.detach().clone().requires_grad_()
    if schedule == "s":
        functional.set_step_mode(node, "s")
        spikes = torch.stack([node(x[t]) for t in range(x.shape[0])])
    else:
        functional.set_step_mode(node, "m")
        assert sum(schedule) == x.shape[0]
        spikes = torch.cat([node(chunk) for chunk in x.split(schedule)])
    w_s, w_v = loss_weights(spikes, node.v) if weights is None else weights
    loss = (spikes * w_s).sum() + (node.v * w_v).sum()
    names = [n for n, p in node.named_parameters() if p.requires_grad]
    params = [getattr(node, n) for n in names]
    grads = torch.autograd.grad(loss, [x, *params])
    return dict(
        spikes=spikes.detach(),
        v=node.v.detach(),
        spike=node.spike.detach(),
        step=node.step,
        v_seq=None if node.v_seq is None else node.v_seq.detach(),
        grads=dict(zip(["x", *names], grads, strict=True)),
    )


def loss_weights(spikes: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed random weights in multiples of 1/8 (exact in every float dtype, so runs in
    different dtypes backpropagate exactly the same upstream gradients)."""
    g = torch.Generator().manual_seed(7)
    w_s = torch.randint(-8, 9, spikes.shape, generator=g) / 8
    w_v = torch.randint(-8, 9, v.shape, generator=g) / 8
    return w_s.to(spikes.dtype), w_v.to(v.dtype)


def assert_same_run(a: dict, b: dict, **tol) -> None:
    torch.testing.assert_close(a["spikes"], b["spikes"], rtol=0, atol=0, msg="spikes")
    torch.testing.assert_close(a["v"], b["v"], **tol, msg="final membrane v")
    torch.testing.assert_close(a["spike"], b["spike"], rtol=0, atol=0, msg="spike memory")
    assert a["step"] == b["step"]
    if a["v_seq"] is not None or b["v_seq"] is not None:
        torch.testing.assert_close(a["v_seq"], b["v_seq"], **tol, msg="v_seq")
    assert a["grads"].keys() == b["grads"].keys()
    for name in a["grads"]:
        torch.testing.assert_close(
            a["grads"][name], b["grads"][name], **tol, msg=lambda m, n=name: f"grad {n}: {m}"
        )


def assert_mixed_spikes(spikes: torch.Tensor) -> None:
    """A test where nothing or everything spikes would not test the reset terms."""
    rate = spikes.float().mean().item()
    assert 0.05 < rate < 0.95, f"spike rate {rate}: the test data does not exercise GLIF"


# --------------------------------------------------------------------------- class and arguments


def test_is_a_spikingjelly_node():
    node = GLIFNode()
    assert isinstance(node, neuron.BaseNode)
    assert isinstance(node, base.MemoryModule)
    assert list(node._memories) == ["v", "spike", "step"]
    assert (node.v, node.spike, node.step) == (0.0, 0.0, 0)


def test_parameter_names_follow_gated_lif():
    node = GLIFNode(T=4, channels=3)
    assert [n for n, _ in node.named_parameters()] == list(PARAMS)
    shapes = {n: tuple(p.shape) for n, p in node.named_parameters()}
    assert shapes == {**{n: (3,) for n in PARAMS[:-1]}, "conduct": (4, 3)}
    layer_wise = GLIFNode(T=4, channel_wise=False)
    shapes = {n: tuple(p.shape) for n, p in layer_wise.named_parameters()}
    assert shapes == {**{n: () for n in PARAMS[:-1]}, "conduct": (4,)}
    assert layer_wise.channels is None and layer_wise.T == 4


def test_default_initial_values_follow_the_spec():
    torch.manual_seed(0)
    T, C = 4, 6
    node = GLIFNode(T=T, channels=C)
    eff = {n: torch.sigmoid(p.detach()) for n, p in node.named_parameters()}
    # float32 storage of logit(value): sigmoid gives the value back to ~1 ulp
    tol = dict(rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(eff["tau"], torch.full((C,), 0.25), **tol)
    torch.testing.assert_close(eff["v_threshold"], torch.full((C,), 0.5), **tol)
    torch.testing.assert_close(eff["linear_decay"], torch.full((C,), 0.5 / (2 * T)), **tol)
    torch.testing.assert_close(eff["v_subreset"], torch.full((C,), 0.5), **tol)
    torch.testing.assert_close(eff["conduct"], torch.full((T, C), 0.5), **tol)
    for name in GATES:
        raw = getattr(node, name).detach()
        assert raw.abs().max() <= 0.1, name
        assert raw.unique().numel() == C, f"{name}: gates must be drawn, not constant"
    assert all(p.dtype == torch.float32 and p.requires_grad for p in node.parameters())


def test_custom_initial_values():
    node = GLIFNode(
        T=2,
        channels=3,
        init_tau=0.3,
        init_v_threshold=0.4,
        init_linear_decay=0.01,
        init_v_subreset=0.2,
        init_conduct=0.7,
        init_gate_range=0.5,
    )
    eff = {n: torch.sigmoid(p.detach()) for n, p in node.named_parameters()}
    tol = dict(rtol=1e-6, atol=1e-7)
    for name, value in [
        ("tau", 0.3),
        ("v_threshold", 0.4),
        ("linear_decay", 0.01),
        ("v_subreset", 0.2),
        ("conduct", 0.7),
    ]:
        torch.testing.assert_close(eff[name], torch.full_like(eff[name], value), **tol)
    assert max(getattr(node, n).detach().abs().max() for n in GATES) <= 0.5
    # V_R defaults to the threshold, V_L to theta / (2T), both from init_v_threshold
    node = GLIFNode(T=5, channels=2, init_v_threshold=0.4, init_gate_range=0.0)
    torch.testing.assert_close(torch.sigmoid(node.v_subreset.detach()), torch.full((2,), 0.4))
    torch.testing.assert_close(torch.sigmoid(node.linear_decay.detach()), torch.full((2,), 0.04))
    assert all(torch.equal(getattr(node, n).detach(), torch.zeros(2)) for n in GATES)


@pytest.mark.parametrize(
    "kwargs",
    [dict(init_tau=1.0), dict(init_v_threshold=0.0), dict(init_conduct=-0.5), dict(T=0)],
)
def test_bad_initial_values_raise(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        GLIFNode(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(v_threshold=1.0),
        dict(v_reset=0.0),
        dict(tau=2.0),
        dict(decay_input=False),
        dict(inplane=4),
        dict(not_an_argument=1),
    ],
)
def test_foreign_keyword_arguments_raise_type_error(kwargs):
    (key,) = kwargs
    with pytest.raises(TypeError, match=f"unexpected keyword argument '{key}'"):
        GLIFNode(**kwargs)


def test_all_documented_keywords_are_accepted():
    node = GLIFNode(
        T=3,
        channels=2,
        channel_wise=True,
        channel_dim=-1,
        surrogate_function=surrogate.Rect(),
        detach_reset=True,
        gate_mode="hard",
        step_mode="m",
        store_v_seq=True,
        backend="torch",
        init_tau=0.3,
        init_v_threshold=0.6,
        init_linear_decay=0.05,
        init_v_subreset=0.4,
        init_conduct=0.6,
        init_gate_range=0.2,
    )
    assert (node.T, node.channels, node.channel_dim, node.gate_mode) == (3, 2, -1, "hard")
    assert node.detach_reset and node.store_v_seq and node.step_mode == "m"
    assert isinstance(node.surrogate_function, surrogate.Rect)
    assert node(torch.rand(3, 4, 2)).shape == (3, 4, 2)
    assert node.v_seq.shape == (3, 4, 2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(gate_mode="sof"), "gate_mode must be one of .*'soft'.*got 'sof'"),
        (dict(backend="cuda"), "backend must be one of .*'triton'.*got 'cuda'"),
    ],
)
def test_unknown_gate_mode_or_backend_raise_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GLIFNode(**kwargs)


def test_init_documents_glifs_own_arguments():
    doc = GLIFNode.__init__.__doc__
    assert doc is not None
    for name in ("T:", "channels:", "init_tau:", "init_gate_range:", "gate_mode:", "backend:"):
        assert name in doc, name
    # SpikingJelly's BaseNode documents v_reset / v_threshold, which GLIFNode rejects
    documented = set(re.findall(r"^ {12}(\w+):", doc, flags=re.M))
    assert {"T", "init_tau", "surrogate_function"} <= documented
    assert not documented & {"v_reset", "v_threshold", "tau", "decay_input"}
    assert "init_tau:" in (inspect.getdoc(GLIFNode.__init__) or "")
    params = inspect.signature(GLIFNode).parameters
    assert list(params)[:2] == ["T", "channels"]
    assert {"init_tau", "init_v_threshold", "gate_mode", "surrogate_function"} <= set(params)
    assert "v_reset" not in params


def test_numpy_scalars_work_like_python_numbers():
    node = GLIFNode(
        T=np.int64(3),
        channels=np.int32(2),
        channel_dim=np.int64(-1),
        init_tau=np.float32(0.3),
        init_v_threshold=np.float64(0.4),
        init_conduct=np.float16(0.5),
        init_gate_range=np.float32(0.0),
        detach_reset=np.bool_(True),
        channel_wise=np.bool_(True),
    )
    assert type(node.T) is int and type(node.channels) is int and type(node.channel_dim) is int
    assert (node.T, node.channels, node.channel_dim) == (3, 2, -1)
    assert type(node.init_gate_range) is float and node.detach_reset is True
    want = GLIFNode(T=3, channels=2, init_tau=0.3, init_v_threshold=0.4, init_gate_range=0.0)
    for name in ("tau", "v_threshold", "linear_decay", "v_subreset", "conduct"):
        torch.testing.assert_close(getattr(node, name), getattr(want, name), msg=name)
    assert node(torch.rand(2, 5, 2)).shape == (2, 5, 2)
    lazy_T = GLIFNode(T=np.int64(4))
    assert type(lazy_T.T) is int and type(lazy_T._T) is int and lazy_T.channels is None
    lazy = GLIFNode(step_mode="m", init_gate_range=np.float64(0.2))
    assert lazy(torch.rand(2, 1, 3)).shape == (2, 1, 3) and lazy.channels == 3


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(init_gate_range=math.nan), ValueError, r"init_gate_range must be a finite .*nan"),
        (dict(init_gate_range=math.inf), ValueError, r"init_gate_range must be a finite .*inf"),
        (dict(init_gate_range=-0.1), ValueError, r"init_gate_range .*>= 0, got -0\.1"),
        (dict(init_gate_range="0.1"), TypeError, r"init_gate_range must be a real .*'0\.1'"),
        (dict(init_tau=math.nan), ValueError, r"init_tau .* in \(0, 1\), got nan"),
        (dict(init_tau=np.float32(1.5)), ValueError, r"init_tau .* in \(0, 1\), got 1\.5"),
        (dict(init_tau="0.3"), TypeError, r"init_tau must be a real number, got '0\.3'"),
        (dict(init_v_subreset=True), TypeError, r"init_v_subreset must be a real .*True"),
        (dict(T=4.0), TypeError, r"T must be an int, got 4\.0"),
        (dict(T=True), TypeError, r"T must be an int, got True"),
        (dict(T=np.int64(-2)), ValueError, r"T must be a positive int or None, got -2"),
        (dict(channels="8"), TypeError, r"channels must be an int, got '8'"),
        (dict(channels=0), ValueError, r"channels must be a positive int .*got 0"),
        (dict(channel_dim=1.0), TypeError, r"channel_dim must be an int, got 1\.0"),
        (dict(channel_wise="no"), TypeError, r"channel_wise must be a bool, got 'no'"),
        (dict(detach_reset=None), TypeError, r"detach_reset must be a bool, got None"),
        (dict(store_v_seq=1), TypeError, r"store_v_seq must be a bool, got 1"),
        (dict(step_mode="multi"), ValueError, r"step_mode must be 's' or 'm', got 'multi'"),
        (dict(gate_mode=["soft"]), ValueError, r"gate_mode must be one of .*\['soft'\]"),
        (dict(backend=None), ValueError, r"backend must be one of .*None"),
        (
            dict(surrogate_function=surrogate.ATan),
            TypeError,
            r"surrogate_function must be a surrogate instance, e\.g\. surrogate\.ATan\(\)",
        ),
        (dict(surrogate_function="atan"), TypeError, r"surrogate_function must be .*'atan'"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_argument_types_and_values_raise_one_clear_error(kwargs, error, match):
    with pytest.raises(error, match=match) as info:
        GLIFNode(**kwargs)
    assert "\n" not in str(info.value)


def test_surrogate_class_error_names_the_class():
    with pytest.raises(TypeError, match=r"surrogate\.ATan\(\), got the class ATan"):
        GLIFNode(surrogate_function=surrogate.ATan)


def test_first_call_under_inference_mode_leaves_trainable_parameters():
    model = nn.Sequential(layer.Linear(3, 4, step_mode="m"), GLIFNode(step_mode="m"))
    x = torch.rand(2, 5, 3)
    with torch.inference_mode():
        model(x)
    node = model[1]
    assert (node.T, node.channels) == (2, 4)
    assert not any(p.is_inference() for p in node.parameters())
    functional.reset_net(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    before = [p.detach().clone() for p in node.parameters()]
    (model(x) + node.v.sum()).sum().backward()
    assert all(p.grad is not None for p in node.parameters())
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, node.parameters(), strict=True))
    single = GLIFNode(T=2)  # the same in single-step mode
    with torch.inference_mode():
        single(torch.rand(5, 4))
    single.reset()
    single(torch.rand(5, 4)).sum().backward()
    assert single.tau.grad is not None


def test_repr():
    assert "T=None" in repr(GLIFNode()) and "channels=None" in repr(GLIFNode())
    text = repr(GLIFNode(T=4, channels=3, gate_mode="hard", surrogate_function=surrogate.Rect()))
    for part in ("T=4", "channels=3", "gate_mode='hard'", "Rect"):
        assert part in text
    assert "layer_wise" in repr(GLIFNode(channel_wise=False))
    assert "gate_mode='coarse'" in repr(GLIFNode(gate_mode="coarse"))


# --------------------------------------------------------------------------- spec numbers


def _spec_node(gate_mode="soft") -> GLIFNode:
    return GLIFNode(
        T=3,
        channels=1,
        step_mode="m",
        store_v_seq=True,
        gate_mode=gate_mode,
        surrogate_function=surrogate.Rect(),
    )


A = dict(
    alpha=logit(0.55),
    gamma=logit(0.55),
    beta=logit(0.65),
    tau=logit(0.25),
    v_threshold=0.0,
    linear_decay=logit(0.0625),
    v_subreset=0.0,
    conduct=[0.0, 0.0, 0.0],
)


@pytest.mark.parametrize(
    "gate_mode, raw, x, u, s",
    [
        ("soft", A, [0.9, 0.3, 0.6], [0.579375, 0.102547, 0.437122], [1, 0, 0]),
        (
            "soft",
            dict(
                alpha=1.0,
                beta=-0.5,
                gamma=0.3,
                tau=-1.0,
                v_threshold=0.2,
                linear_decay=-2.5,
                v_subreset=-0.3,
                conduct=[0.5, -0.2, 1.0],
            ),
            [1.2, 0.4, 0.9],
            [1.008554, 0.315280, 0.934996],
            [1, 0, 1],
        ),
        (
            "soft",
            {**A, "alpha": 0.0, "beta": 0.0, "gamma": 0.0},
            [0.9, 0.3, 0.6],
            [0.643750, 0.144922, 0.509326],
            [1, 0, 1],
        ),
        (
            "coarse",
            {k: v for k, v in A.items() if k not in GATES},
            [0.9, 0.3, 0.6],
            [0.387500, 0.184375, 0.283594],
            [0, 0, 0],
        ),
    ],
    ids=["A", "B", "C", "E-coarse"],
)
@pytest.mark.parametrize("step_mode", ["m", "s"])
def test_worked_examples_from_the_spec(gate_mode, raw, x, u, s, step_mode):
    node = _spec_node(gate_mode)
    set_raw_(node, **raw)
    functional.set_step_mode(node, step_mode)
    x = torch.tensor(x).reshape(3, 1, 1)
    if step_mode == "m":
        spikes = node(x)
    else:
        spikes = torch.stack([node(x[t]) for t in range(3)])
    assert spikes.flatten().tolist() == s
    # the spec gives six decimals
    torch.testing.assert_close(node.v_seq.flatten(), torch.tensor(u), rtol=0, atol=5e-6)
    torch.testing.assert_close(node.v.flatten(), torch.tensor(u[-1:]), rtol=0, atol=5e-6)


@pytest.mark.parametrize("step_mode", ["m", "s"])
def test_threshold_is_inclusive_on_both_sides(step_mode):
    # hard gates a=1, b=0 make the first membrane exactly the input (no linear decay,
    # unit conductance, zero initial state), and theta = sigmoid(0) = 0.5 exactly, so
    # the input decides on which side of H(u - theta) the neuron lands
    node = GLIFNode(T=1, channels=2, gate_mode="hard", step_mode=step_mode)
    set_raw_(node, alpha=[2.0, 2.0], beta=[-2.0, -2.0], gamma=[2.0, 2.0], v_threshold=[0.0, 0.0])
    below = torch.nextafter(torch.tensor(0.5), torch.tensor(0.0)).item()
    x = torch.tensor([[0.5, below]])
    spikes = node(x[None] if step_mode == "m" else x)
    assert spikes.flatten().tolist() == [1.0, 0.0]  # fires at u == theta (>=), not just below
    assert node.v.flatten().tolist() == [0.5, below]


def test_hard_gates_special_case_is_hard_reset_lif():
    # spec §4: a=1, b=0, g=1 is a hard-reset LIF with decay tau (reset one step late):
    # u_t = tau u_{t-1} (1 - s_{t-1}) + x_t
    T = 6
    node = GLIFNode(T=T, channels=1, gate_mode="hard", step_mode="m", store_v_seq=True)
    set_raw_(node, alpha=3.0, beta=-3.0, gamma=3.0, tau=logit(0.6), v_threshold=logit(0.7))
    x = rand_input((T, 4, 1), seed=3, dtype=torch.float32)
    spikes = node(x)
    u, s, us, ss = torch.zeros(4, 1), torch.zeros(4, 1), [], []
    for t in range(T):
        u = 0.6 * u * (1 - s) + x[t]
        s = (u >= 0.7).float()
        us.append(u)
        ss.append(s)
    torch.testing.assert_close(node.v_seq, torch.stack(us), rtol=1e-6, atol=1e-6)
    assert torch.equal(spikes, torch.stack(ss))
    assert_mixed_spikes(spikes)


# --------------------------------------------------------------------------- against the reference


@pytest.mark.parametrize("gate_mode", ["soft", "hard", "static_soft", "static_hard", "coarse"])
@pytest.mark.parametrize("channel_wise", [True, False], ids=["channel_wise", "layer_wise"])
@pytest.mark.parametrize("detach_reset", [False, True], ids=["", "detach_reset"])
def test_node_matches_reference(gate_mode, channel_wise, detach_reset):
    T = 5
    node = make_node(T, 3 if channel_wise else None, gate_mode=gate_mode, detach_reset=detach_reset)
    node = node.to(torch.float64)
    x = rand_input((T, 2, 3, 4))
    got = run(node, x, [T], store_v_seq=True)
    assert_mixed_spikes(got["spikes"])

    xr = x.clone().requires_grad_()
    ref_params = {
        n: p.detach().clone().requires_grad_(p.requires_grad) for n, p in node.named_parameters()
    }
    full = {n: ref_params.get(n) for n in PARAMS}
    spikes, v_seq, v_last, _ = glif_reference(
        xr,
        torch.zeros(2, 3, 4, dtype=torch.float64),
        torch.zeros(2, 3, 4, dtype=torch.float64),
        **full,
        surrogate_function=node.surrogate_function,
        channel_dim=1,
        gate_mode=gate_mode,
        detach_reset=detach_reset,
    )
    w_s, w_v = loss_weights(spikes, v_last)  # the same loss as run()
    loss = (spikes * w_s).sum() + (v_last * w_v).sum()
    names = [n for n in got["grads"] if n != "x"]
    ref_grads = torch.autograd.grad(loss, [xr, *(ref_params[n] for n in names)])
    want = dict(
        spikes=spikes.detach(),
        v=v_last.detach(),
        spike=spikes[-1].detach(),
        step=T,
        v_seq=v_seq.detach(),
        grads=dict(zip(["x", *names], ref_grads, strict=True)),
    )
    assert_same_run(got, want, **F64)
    trained_gates = gate_mode in ("soft", "hard")  # static gates are frozen, coarse has none
    assert names == [n for n in PARAMS if trained_gates or n not in GATES]


# --------------------------------------------------------------------------- state across calls


@pytest.mark.parametrize(
    "gate_mode, C, detach_reset",
    [
        ("soft", 3, False),
        ("hard", 3, False),
        ("soft", None, False),
        ("coarse", 3, False),
        ("static_soft", 3, True),
    ],
    ids=["soft", "hard", "layer_wise", "coarse", "static_soft-detach_reset"],
)
def test_whole_chunked_and_stepwise_give_identical_results(gate_mode, C, detach_reset):
    T = 7
    node = make_node(T, C, seed=2, gate_mode=gate_mode, detach_reset=detach_reset)
    node = node.to(torch.float64)
    x = rand_input((T, 3, 3, 2), seed=4)
    whole = run(node, x, [T], store_v_seq=True)
    assert_mixed_spikes(whole["spikes"])
    assert whole["v_seq"].shape == (T, 3, 3, 2)
    chunked = run(node, x, [2, 1, 4])
    stepwise = run(node, x, "s", store_v_seq=True)
    assert stepwise["v_seq"].shape == (T, 3, 3, 2)
    chunked["v_seq"] = whole["v_seq"]  # chunked 'm' calls keep only the last chunk's v_seq
    assert_same_run(whole, chunked, **F64)
    assert_same_run(whole, stepwise, **F64)
    # and every gradient is actually exercised
    for name, g in whole["grads"].items():
        assert g.abs().sum() > 0, f"grad {name} is zero"


def test_chunked_float32_matches_whole():
    # the default dtype: the same arithmetic in the same order, so the forward is
    # bitwise equal; gradients differ by summation order only (float32: ~1e-7 relative,
    # times a few per step)
    T = 6
    node = make_node(T, 4, seed=5)
    x = rand_input((T, 2, 4, 3), seed=6, dtype=torch.float32)
    whole = run(node, x, [T])
    assert_mixed_spikes(whole["spikes"])
    assert_same_run(whole, run(node, x, [3, 3]), rtol=1e-5, atol=1e-6)
    assert_same_run(whole, run(node, x, "s"), rtol=1e-5, atol=1e-6)


def test_store_v_seq_multi_step():
    T = 4
    node = make_node(T, 3, step_mode="m", store_v_seq=True)
    x = rand_input((T, 2, 3), dtype=torch.float32)
    node(x)
    assert node.v_seq.shape == (T, 2, 3)
    assert torch.equal(node.v_seq[-1], node.v)
    spikes_again = make_node(T, 3, step_mode="m")(x)  # store_v_seq does not change spikes
    assert torch.equal(spikes_again, (node.v_seq >= torch.sigmoid(node.v_threshold)).float())
    functional.reset_net(node)
    assert node.v_seq is None


def test_store_v_seq_single_step_appends():
    T = 4
    node = make_node(T, 3, step_mode="s", store_v_seq=True)
    x = rand_input((T, 2, 3), dtype=torch.float32)
    vs = []
    for t in range(T):
        node(x[t])
        vs.append(node.v.detach().clone())
        assert node.v_seq.shape == (t + 1, 2, 3)
    torch.testing.assert_close(node.v_seq, torch.stack(vs), rtol=0, atol=0)
    reference = make_node(T, 3, step_mode="m", store_v_seq=True)
    reference(x)
    torch.testing.assert_close(node.v_seq, reference.v_seq, rtol=0, atol=0)


def test_reset_net_restores_state():
    node = make_node(4, 3, step_mode="m", store_v_seq=True)
    x = rand_input((4, 2, 3), dtype=torch.float32)
    first = node(x)
    assert isinstance(node.v, torch.Tensor) and node.step == 4
    functional.reset_net(node)
    assert (node.v, node.spike, node.step, node.v_seq) == (0.0, 0.0, 0, None)
    # a fresh sequence, even with another batch size, starts from zero state again
    assert torch.equal(node(x), first)
    functional.reset_net(node)
    assert node(rand_input((4, 5, 3), dtype=torch.float32)).shape == (4, 5, 3)


@pytest.mark.parametrize("step_mode", ["m", "s"])
def test_detach_net_truncates_backpropagation(step_mode):
    # SpikingJelly's truncated BPTT: functional.detach_net detaches every memory in
    # place between chunks; values carry over, gradients stop at the cut
    T = 4
    node = make_node(T, 3, step_mode=step_mode)
    x = rand_input((T, 2, 3), dtype=torch.float32).requires_grad_()

    def feed(chunk):
        return node(chunk) if step_mode == "m" else torch.stack([node(c) for c in chunk])

    whole = make_node(T, 3, step_mode="m")(x.detach())
    first = feed(x[:2])
    functional.detach_net(node)
    assert not node.v.requires_grad and not node.spike.requires_grad and node.step == 2
    second = feed(x[2:])
    assert torch.equal(torch.cat([first, second]).detach(), whole)
    assert_mixed_spikes(whole)
    (second.sum() + node.v.sum()).backward()
    assert torch.equal(x.grad[:2], torch.zeros_like(x.grad[:2]))
    assert x.grad[2:].abs().sum() > 0


def test_set_step_mode_switches_between_modes():
    node = make_node(4, 3)
    x = rand_input((4, 2, 3), dtype=torch.float32)
    functional.set_step_mode(node, "m")
    multi = node(x)
    functional.reset_net(node)
    functional.set_step_mode(node, "s")
    single = torch.stack([node(x[t]) for t in range(4)])
    assert torch.equal(multi, single)


# --------------------------------------------------------------------------- functional contract


@pytest.mark.needs_sj2("base.to_functional_forward")
@pytest.mark.parametrize("step_mode", ["m", "s"])
def test_to_functional_forward_matches_stateful_and_is_pure(step_mode):
    T = 4
    node = make_node(T, 3, step_mode="m")
    x = rand_input((T, 2, 3), dtype=torch.float32)
    node(x[:2])  # the node now holds a mid-sequence state
    functional.set_step_mode(node, step_mode)
    memories = dict(node._memories)
    saved = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in memories.items()}
    states = tuple(v.clone() if isinstance(v, torch.Tensor) else v for v in memories.values())
    states_before = tuple(s.clone() if isinstance(s, torch.Tensor) else s for s in states)

    f = base.to_functional_forward(node)
    x_next = x[2:] if step_mode == "m" else x[2]
    (out,), new_states = f((x_next,), states)

    # memories and the given states are untouched (identity and value)
    for k, v in node._memories.items():
        assert v is memories[k], k
        if isinstance(v, torch.Tensor):
            assert torch.equal(v, saved[k]), k
        else:
            assert v == saved[k], k
    for s, s0 in zip(states, states_before, strict=True):
        assert torch.equal(s, s0) if isinstance(s, torch.Tensor) else s == s0

    stateful = make_node(T, 3, step_mode="m")  # the same node, run statefully
    stateful(x[:2])
    functional.set_step_mode(stateful, step_mode)
    expected = stateful(x_next)
    assert torch.equal(out, expected)
    assert torch.equal(new_states[0], stateful.v)
    assert torch.equal(new_states[1], stateful.spike)
    assert new_states[2] == stateful.step == (4 if step_mode == "m" else 3)


@pytest.mark.needs_sj2("base.to_functional_forward")
def test_functional_forward_from_scalar_states():
    node = make_node(3, 2, step_mode="m")
    x = rand_input((3, 4, 2), dtype=torch.float32)
    (out,), (v, s, t) = base.to_functional_forward(node)((x,), (0.0, 0.0, 0))
    assert torch.equal(out, copy.deepcopy(node)(x))
    assert v.shape == s.shape == (4, 2) and t == 3
    assert (node.v, node.spike, node.step) == (0.0, 0.0, 0)


# --------------------------------------------------------------------------- lazy shapes


def test_lazy_multi_step_infers_channels_and_T():
    node = GLIFNode(step_mode="m")
    assert node.T is None and node.channels is None and node.has_uninitialized_params()
    assert all(isinstance(p, UninitializedParameter) for p in node.parameters())
    out = node(torch.rand(5, 2, 6, 4))
    assert out.shape == (5, 2, 6, 4)
    assert (node.T, node.channels) == (5, 6)
    assert not any(is_lazy(p) for p in node.parameters())
    assert all(type(p) is nn.Parameter for p in node.parameters())
    assert node.conduct.shape == (5, 6) and node.tau.shape == (6,)
    # PyTorch's convention: the initialization hooks are removed after materializing
    assert not hasattr(node, "_initialize_hook")
    # V_L's default depends on the inferred T
    torch.testing.assert_close(torch.sigmoid(node.linear_decay.detach()), torch.full((6,), 0.05))


def test_lazy_single_step_with_T_infers_channels():
    node = GLIFNode(T=3)
    assert node.T == 3 and node.channels is None
    node(torch.rand(2, 7))
    assert node.channels == 7 and node.conduct.shape == (3, 7)


def test_partially_lazy_construction():
    node = GLIFNode(channels=4)  # channel params are known, conduct (and default V_L) are not
    assert node.tau.shape == (4,) and not is_lazy(node.tau)
    assert is_lazy(node.conduct) and is_lazy(node.linear_decay)
    node = GLIFNode(channels=4, init_linear_decay=0.1)
    assert not is_lazy(node.linear_decay) and is_lazy(node.conduct)
    node = GLIFNode(T=3, channel_wise=False)
    assert not node.has_uninitialized_params()
    node = GLIFNode(channel_wise=False, step_mode="m")
    node(torch.rand(2, 3, 5))
    assert node.conduct.shape == (2,) and node.tau.shape == ()


def test_lazy_channel_dim_minus_one():
    node = GLIFNode(step_mode="m", channel_dim=-1)
    node(torch.rand(2, 3, 7, 5))
    assert node.channels == 5


def test_materialize_whole_model():
    torch.manual_seed(0)
    model = nn.Sequential(
        layer.Conv2d(2, 4, 3, padding=1, step_mode="m"),
        layer.BatchNorm2d(4, step_mode="m"),
        GLIFNode(step_mode="m"),
        layer.Flatten(step_mode="m"),
        layer.Linear(4 * 5 * 5, 3, step_mode="m"),
        GLIFNode(step_mode="m"),
    )
    x = torch.rand(3, 2, 2, 5, 5)
    assert sj_glif.materialize(model, x) is model
    nodes = [m for m in model.modules() if isinstance(m, GLIFNode)]
    assert [(n.T, n.channels) for n in nodes] == [(3, 4), (3, 3)]
    assert not any(is_lazy(p) for p in model.parameters())
    assert model.training and all(m.training for m in model.modules())
    # eval + no_grad forward: BatchNorm statistics untouched; state reset afterwards
    assert torch.equal(model[1].running_mean, torch.zeros(4))
    assert all((n.v, n.spike, n.step) == (0.0, 0.0, 0) for n in nodes)
    # now an optimizer sees every parameter with its real shape
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in nodes[0].parameters()]
    model(x).sum().backward()
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, nodes[0].parameters(), strict=True))


def test_lazy_state_dict_round_trip():
    trained = make_node(4, 3, step_mode="m", seed=9)
    lazy = GLIFNode(step_mode="m")
    assert lazy.has_uninitialized_params()
    lazy.load_state_dict(trained.state_dict())
    assert not lazy.has_uninitialized_params()
    assert (lazy.T, lazy.channels) == (4, 3)
    for name in PARAMS:
        assert torch.equal(getattr(lazy, name), getattr(trained, name)), name
    x = rand_input((4, 2, 3), dtype=torch.float32)
    assert torch.equal(lazy(x), trained(x))
    assert torch.equal(lazy.v, trained.v)


def test_lazy_state_dict_can_be_saved():
    node = GLIFNode(step_mode="m")
    sd = node.state_dict()
    assert list(sd) == list(PARAMS)
    assert all(isinstance(v, UninitializedParameter) for v in sd.values())


# --------------------------------------------------------------------------- state_dict, dtypes


@pytest.mark.parametrize("gate_mode", ["soft", "coarse"])
def test_state_dict_names_and_round_trip(gate_mode):
    node = make_node(4, 3, gate_mode=gate_mode, step_mode="m")
    x = rand_input((4, 2, 3), dtype=torch.float32)
    node(x)  # memories are not part of the state dict
    sd = node.state_dict()
    expected = list(PARAMS) if gate_mode == "soft" else [n for n in PARAMS if n not in GATES]
    assert list(sd) == expected
    fresh = GLIFNode(T=4, channels=3, gate_mode=gate_mode, step_mode="m")
    fresh.load_state_dict(sd)
    functional.reset_net(node)
    assert torch.equal(fresh(x), node(x))
    assert torch.equal(fresh.v, node.v)


def test_to_float64():
    node = make_node(4, 3, step_mode="m")
    node64 = copy.deepcopy(node).to(torch.float64)
    assert all(p.dtype == torch.float64 for p in node64.parameters())
    for name in PARAMS:
        assert torch.equal(getattr(node64, name), getattr(node, name).double())
    x = rand_input((4, 2, 3))
    out = run(node64, x, [4])
    assert out["spikes"].dtype == out["v"].dtype == torch.float64
    assert all(g.dtype == torch.float64 for g in out["grads"].values())
    # and it is the float64 computation: equal to the reference test's results
    ref = glif_reference(
        x,
        torch.zeros(2, 3, dtype=torch.float64),
        torch.zeros(2, 3, dtype=torch.float64),
        **{n: getattr(node64, n).detach() for n in PARAMS},
        surrogate_function=node64.surrogate_function,
    )
    assert torch.equal(out["spikes"], ref[0])
    torch.testing.assert_close(out["v"], ref[2], **F64)


# --------------------------------------------------------------------------- layouts and ranks


def test_channel_last_equals_channel_first():
    T, C = 5, 3
    first = make_node(T, C, seed=3)
    last = copy.deepcopy(first)
    last.channel_dim = -1
    x_last = rand_input((T, 2, 4, C), seed=5, dtype=torch.float32)  # [T, B, N, C]
    x_first = x_last.permute(0, 1, 3, 2)  # [T, B, C, N], a non-contiguous view
    w_s, w_v = loss_weights(x_last, x_last[0])
    a = run(last, x_last, [T], weights=(w_s, w_v))
    b = run(first, x_first, [T], weights=(w_s.permute(0, 1, 3, 2), w_v.permute(0, 2, 1)))
    assert_mixed_spikes(a["spikes"])
    assert torch.equal(a["spikes"].permute(0, 1, 3, 2), b["spikes"])
    torch.testing.assert_close(a["v"].permute(0, 2, 1), b["v"], rtol=0, atol=0)
    torch.testing.assert_close(a["grads"]["x"].permute(0, 1, 3, 2), b["grads"]["x"])
    for name in PARAMS:  # same terms, summed in another order: float32 default tolerance
        torch.testing.assert_close(a["grads"][name], b["grads"][name], msg=name)


@pytest.mark.parametrize(
    "step_shape, channel_dim",
    [
        ((5,), 0),
        ((2, 5), 1),
        ((2, 5, 3), 1),
        ((2, 3, 5), -1),
        ((1, 5, 2, 3), 1),
        ((2, 5, 2, 1, 3), 1),
    ],
    ids=["C", "BC", "BCL", "BLC", "BCHW-batch1", "BCDHW"],
)
def test_any_rank_with_channel_at_channel_dim(step_shape, channel_dim):
    # every neuron is independent: the result equals the same neurons laid out as
    # [T, N, C] with the channel moved last and everything else flattened
    T, C = 4, 5
    node = make_node(T, C, seed=11, channel_dim=channel_dim)
    x = rand_input((T, *step_shape), seed=12)
    node = node.to(torch.float64)
    w_s, w_v = loss_weights(x, x[0])
    got = run(node, x, [T], weights=(w_s, w_v))
    flat_node = copy.deepcopy(node)
    flat_node.channel_dim = -1
    cd = channel_dim % len(step_shape)

    def flat(t: torch.Tensor) -> torch.Tensor:  # [T, *step] -> [T, N, C]
        return t.movedim(1 + cd, -1).reshape(T, -1, C)

    flat_w = (flat(w_s), w_v.movedim(cd, -1).reshape(-1, C))
    want = run(flat_node, flat(x), [T], weights=flat_w)
    assert_mixed_spikes(want["spikes"])
    assert torch.equal(flat(got["spikes"]), want["spikes"])
    torch.testing.assert_close(flat(got["grads"]["x"]), want["grads"]["x"], **F64)
    for name in PARAMS:
        torch.testing.assert_close(got["grads"][name], want["grads"][name], **F64, msg=name)


def test_layer_wise_accepts_any_rank():
    node = make_node(3, None, seed=1, step_mode="m")
    for shape in [(3, 4), (3, 2, 4), (3, 2, 4, 5, 6)]:
        functional.reset_net(node)
        assert node(rand_input(shape, dtype=torch.float32)).shape == shape


# --------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_input(dtype):
    T = 4
    node = make_node(T, 3, step_mode="m")
    x = rand_input((T, 2, 3, 2), dtype=dtype)
    low = run(node, x, [T])
    assert low["spikes"].dtype == dtype
    assert low["v"].dtype == low["spike"].dtype == torch.float32  # state is float32
    assert low["grads"]["x"].dtype == dtype
    assert all(low["grads"][n].dtype == torch.float32 for n in PARAMS)
    # the math runs in float32 on the rounded input: the same as a float32 run on it
    f32 = run(node, x.float(), [T])
    assert_mixed_spikes(f32["spikes"])
    assert torch.equal(low["spikes"].float(), f32["spikes"])
    assert torch.equal(low["v"], f32["v"])
    for name in PARAMS:
        torch.testing.assert_close(low["grads"][name], f32["grads"][name], rtol=0, atol=0)
    # the input gradient is the float32 one rounded once to the input dtype
    assert torch.equal(low["grads"]["x"], f32["grads"]["x"].to(dtype))


def test_float64_input_keeps_float64_state():
    node = make_node(3, 2, step_mode="m")
    out = node(rand_input((3, 4, 2)))
    assert out.dtype == node.v.dtype == node.spike.dtype == torch.float64


# --------------------------------------------------------------------------- gate modes


def test_static_modes_freeze_gates_and_match_their_dynamic_forward():
    x = rand_input((4, 2, 3), dtype=torch.float32)
    for static, dynamic in [("static_soft", "soft"), ("static_hard", "hard")]:
        s_node = make_node(4, 3, seed=4, gate_mode=static, step_mode="m")
        d_node = make_node(4, 3, seed=4, gate_mode=dynamic, step_mode="m")
        assert all(not getattr(s_node, n).requires_grad for n in GATES)
        assert torch.equal(s_node(x), d_node(x))
        assert torch.equal(s_node.v, d_node.v)
        s_node.v.sum().backward()
        assert all(getattr(s_node, n).grad is None for n in GATES)
        assert s_node.tau.grad is not None


def test_hard_and_soft_gates_differ():
    x = rand_input((4, 2, 3), dtype=torch.float32)
    soft = make_node(4, 3, seed=4, gate_mode="soft", step_mode="m")
    hard = make_node(4, 3, seed=4, gate_mode="hard", step_mode="m")
    soft(x)
    hard(x)
    assert not torch.allclose(soft.v, hard.v)


def test_coarse_has_no_gate_parameters():
    node = GLIFNode(T=3, channels=2, gate_mode="coarse")
    assert all(getattr(node, n) is None for n in GATES)
    assert [n for n, _ in node.named_parameters()] == [n for n in PARAMS if n not in GATES]


def test_detach_reset_changes_gradients_not_spikes():
    node = make_node(5, 3, seed=8, step_mode="m")
    detached = copy.deepcopy(node)
    detached.detach_reset = True
    x = rand_input((5, 2, 3), seed=9)
    a, b = run(node.double(), x, [5]), run(detached.double(), x, [5])
    assert_mixed_spikes(a["spikes"])
    assert torch.equal(a["spikes"], b["spikes"]) and torch.equal(a["v"], b["v"])
    assert not torch.allclose(a["grads"]["x"], b["grads"]["x"])


def test_unfused_surrogate_runs_through_the_reference():
    node = make_node(3, 2, step_mode="m", surrogate_function=surrogate.PiecewiseLeakyReLU())
    fused = make_node(3, 2, step_mode="m", surrogate_function=surrogate.Sigmoid())
    x = rand_input((3, 4, 2), dtype=torch.float32)
    with pytest.warns(UserWarning, match="PiecewiseLeakyReLU"):
        out = node(x)
    assert torch.equal(out, fused(x))  # the forward does not depend on the surrogate
    node.v.sum().backward()
    assert node.tau.grad is not None and torch.isfinite(node.tau.grad).all()


# --------------------------------------------------------------------------- validation


def _snapshot(node: GLIFNode) -> dict:
    return dict(
        lazy={n: is_lazy(p) for n, p in node._parameters.items() if p is not None},
        params={
            n: p.detach().clone()
            for n, p in node._parameters.items()
            if p is not None and not is_lazy(p)
        },
        memories={k: v for k, v in node._memories.items()},
        values={
            k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in node._memories.items()
        },
        T=node.T,
        channels=node.channels,
    )


def _assert_unchanged(node: GLIFNode, before: dict) -> None:
    after = _snapshot(node)
    assert after["lazy"] == before["lazy"], "lazy-ness changed"
    assert (after["T"], after["channels"]) == (before["T"], before["channels"])
    assert after["params"].keys() == before["params"].keys()
    for n, p in before["params"].items():
        assert torch.equal(after["params"][n], p), f"parameter {n} changed"
    for k, v in before["memories"].items():
        assert after["memories"][k] is v, f"memory {k} was replaced"
        old = before["values"][k]
        assert torch.equal(v, old) if isinstance(v, torch.Tensor) else v == old, k


def _lazy_m():
    return GLIFNode(step_mode="m")


def _fresh_m():
    return make_node(4, 3, step_mode="m")


def _running_m():
    node = make_node(4, 3, step_mode="m")
    node(rand_input((2, 2, 3), dtype=torch.float32))  # mid-sequence: step 2 of 4
    return node


def _running_s():
    node = make_node(4, 3, step_mode="s")
    for t in range(4):  # every conduct row used
        node(rand_input((2, 3), seed=t, dtype=torch.float32))
    return node


def _channel_dim_3(make):
    def build():
        node = make()
        node.channel_dim = 3
        return node

    return build


BAD_INPUTS = [
    # (node factory, input, exception, message parts)
    (_fresh_m, torch.rand(2, 2, 5), ValueError, ["expected 3 channels", "5 there"]),
    (_running_m, torch.rand(2, 2, 5), ValueError, ["expected 3 channels", "5 there"]),
    (_channel_dim_3(_lazy_m), torch.rand(2, 2, 3), ValueError, ["channel_dim=3", "out of range"]),
    (_channel_dim_3(_fresh_m), torch.rand(2, 2, 3), ValueError, ["channel_dim=3", "out of range"]),
    (_fresh_m, torch.rand(5, 2, 3), ValueError, ["0..4", "4 rows"]),
    (_running_m, torch.rand(3, 2, 3), ValueError, ["2..4", "4 rows"]),
    (_running_s, torch.rand(2, 3), ValueError, ["4..4", "4 rows"]),
    (_lazy_m, torch.randint(0, 3, (2, 2, 3)), TypeError, ["floating", "torch.int64"]),
    (_running_m, torch.randint(0, 3, (2, 2, 3)), TypeError, ["floating", "torch.int64"]),
    (_running_m, torch.rand(2, 2, 3) > 0.5, TypeError, ["floating", "torch.bool"]),
    (_lazy_m, torch.rand(2, 2, 3, device="meta"), ValueError, ["cpu", "meta"]),
    (_running_m, torch.rand(2, 2, 3, device="meta"), ValueError, ["cpu", "meta"]),
    (lambda: GLIFNode(), torch.rand(2, 3), ValueError, ["needs T", "GLIFNode(T="]),
    (_lazy_m, torch.rand(0, 2, 3), ValueError, ["no time steps"]),
    (_lazy_m, torch.tensor(1.0), ValueError, ["[T, *step]"]),
    (_running_m, torch.rand(2, 5, 3), ValueError, ["(2, 3)", "(5, 3)", "reset_net"]),
    ("not a tensor", None, TypeError, ["torch.Tensor"]),
]


@pytest.mark.parametrize(
    "make, x, exc, parts",
    BAD_INPUTS,
    ids=[
        "channels-fresh",
        "channels-running",
        "channel_dim-lazy",
        "channel_dim-fresh",
        "too_many_steps",
        "too_many_steps-chunk",
        "too_many_steps-single_step",
        "int-lazy",
        "int",
        "bool",
        "meta-lazy",
        "meta",
        "single_step_without_T",
        "empty_sequence",
        "scalar",
        "batch_changed_without_reset",
        "not_a_tensor",
    ],
)
def test_bad_input_raises_and_changes_nothing(make, x, exc, parts):
    if make == "not a tensor":
        make, x = _running_m, [[1.0, 2.0, 3.0]]
    node = make()
    before = _snapshot(node)
    with pytest.raises(exc) as info:
        node(x)
    for part in parts:
        assert part in str(info.value), f"{part!r} not in {info.value}"
    _assert_unchanged(node, before)
    if before["lazy"] and any(before["lazy"].values()):
        # still a working lazy node: a good first call infers its shapes from that call
        functional.set_step_mode(node, "m")
        node.channel_dim = 1
        node(torch.rand(2, 2, 6))
        assert (node.T, node.channels) == (2, 6)


def test_no_wraparound_after_the_last_conduct_row():
    node = make_node(3, 2, step_mode="s")
    for _ in range(3):
        node(torch.rand(1, 2))
    with pytest.raises(ValueError, match="3 rows"):
        node(torch.rand(1, 2))
    functional.reset_net(node)
    node(torch.rand(1, 2))  # after a reset the sequence starts at row 0 again
    assert node.step == 1


# --------------------------------------------------------------------------- interop


@pytest.mark.needs_sj2("GatedLIFNode")
@pytest.mark.parametrize("inplane", [3, None], ids=["channel_wise", "layer_wise"])
def test_from_gated_lif_copies_parameters(inplane):
    from spikingjelly.activation_based.neuron import GatedLIFNode

    torch.manual_seed(0)
    peer = GatedLIFNode(T=4, inplane=inplane, surrogate_function=surrogate.Rect())
    with torch.no_grad():
        for p in peer.parameters():
            p.add_(torch.randn_like(p))
    node = GLIFNode.from_gated_lif(peer)
    assert (node.T, node.channels, node.channel_wise) == (4, inplane, inplane is not None)
    assert node.surrogate_function is peer.surrogate_function and node.step_mode == "m"
    peer_sd = peer.state_dict()
    assert list(node.state_dict()) == list(PARAMS) == list(peer_sd)
    for name, value in node.state_dict().items():
        assert torch.equal(value, peer_sd[name]), name
        assert value.data_ptr() != peer_sd[name].data_ptr(), f"{name} is shared, not copied"
    override = GLIFNode.from_gated_lif(peer, step_mode="s", gate_mode="hard")
    assert override.step_mode == "s" and override.gate_mode == "hard"
