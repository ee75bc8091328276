"""Bad input at every public entry point: each gives its documented error or result,
and a call that fails leaves parameters and neuron state (v, spike, step) untouched.

Documented results (GLIFNode docstring):
- empty batch (B = 0): empty spikes, state of the empty step shape, ``step`` advances;
- NaN input: no spike (NaN >= theta is false), membrane NaN, then NaN until reset;
- +inf input: spike, membrane +inf; -inf: no spike, membrane -inf; a non-finite
  membrane stays so until reset (+inf keeps spiking, -inf stays silent), on every path;
- a meta input to a meta module: shapes only (meta spikes).
"""

from __future__ import annotations

import math

import pytest
import torch
from spikingjelly.activation_based import functional, layer, neuron
from spikingjelly.activation_based.base import MemoryModule
from torch import nn

from sj_glif import (
    GLIFNode,
    convert_official_state_dict,
    convert_to_official_state_dict,
    glif_multi_step,
    load_neuron,
    materialize,
    prepare_ddp,
    swap_neurons,
)

T, C = 3, 4
NAN, INF = math.nan, math.inf


def _snapshot(module: nn.Module) -> dict[str, object]:
    """Every parameter (None while lazy) and every SpikingJelly memory, copied."""
    snap: dict[str, object] = {}
    for name, p in module.named_parameters():
        snap["param " + name] = None if isinstance(p, nn.UninitializedParameter) else p.clone()
    for name, m in module.named_modules():
        if isinstance(m, MemoryModule):
            for key, value in m._memories.items():
                copy = value.clone() if isinstance(value, torch.Tensor) else value
                snap[f"memory {name}.{key}"] = copy
    return snap


def _assert_unchanged(module: nn.Module, before: dict[str, object]) -> None:
    after = _snapshot(module)
    assert after.keys() == before.keys()
    for key, want in before.items():
        got = after[key]
        if isinstance(want, torch.Tensor):
            assert isinstance(got, torch.Tensor) and got.dtype == want.dtype, key
            torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True, msg=key)
        else:
            assert type(got) is type(want) and got == want, key


# --------------------------------------------------------------------------- GLIFNode

# (name, single-step input, error type, message pattern); the node has T=3, C=4, and in
# the "mid" state has already run one step on a [2, 4, 3] step
_STEP_CASES = [
    ("list", [[1.0] * C] * 2, TypeError, "must be a torch.Tensor"),
    ("int", torch.ones(2, C, 3, dtype=torch.int64), TypeError, "floating tensor"),
    ("bool", torch.ones(2, C, 3, dtype=torch.bool), TypeError, "floating tensor"),
    ("complex", torch.ones(2, C, 3, dtype=torch.complex64), TypeError, "floating tensor"),
    ("rank0", torch.tensor(1.0), ValueError, "at least one step dimension"),
    ("rank1", torch.ones(C), ValueError, r"channel_dim=1 is out of range"),
    ("channels", torch.ones(2, C + 1, 3), ValueError, r"expected 4 channels"),
    ("meta", torch.ones(2, C, 3, device="meta"), ValueError, r"is on cpu but the input is on meta"),
]


def _node(step_mode: str, state: str) -> GLIFNode:
    node = GLIFNode(T=T, step_mode=step_mode)
    if state in ("fresh", "mid"):
        x = torch.rand(2, C, 3) if step_mode == "s" else torch.rand(1, 2, C, 3)
        node(x)
        if state == "fresh":
            node.reset()
    return node


def _as_mode(x, step_mode: str):
    if step_mode == "s" or not isinstance(x, torch.Tensor):
        return x
    return x.unsqueeze(0)


@pytest.mark.parametrize("state", ["lazy", "fresh", "mid"])
@pytest.mark.parametrize("step_mode", ["s", "m"])
@pytest.mark.parametrize("case", _STEP_CASES, ids=[c[0] for c in _STEP_CASES])
def test_node_rejects_bad_input_and_changes_nothing(case, step_mode, state):
    name, x, error, match = case
    if state == "lazy" and name == "channels":
        pytest.skip("a lazy node takes its channel count from the first input")
    if state == "mid" and name in ("meta", "channels"):
        match += "|state v has shape"  # the kept state is checked first
    node = _node(step_mode, state)
    before = _snapshot(node)
    with pytest.raises(error, match=match):
        node(_as_mode(x, step_mode))
    _assert_unchanged(node, before)
    assert node.has_uninitialized_params() == (state == "lazy")


@pytest.mark.parametrize("state", ["lazy", "fresh", "mid"])
def test_node_rejects_sequences_longer_than_T(state):
    node = _node("m", state)
    done = 1 if state == "mid" else 0
    before = _snapshot(node)
    with pytest.raises(ValueError, match=rf"time steps {done}\.\.{T} but conduct has {T} rows"):
        node(torch.rand(T + 1 - done, 2, C, 3))
    _assert_unchanged(node, before)
    with pytest.raises(ValueError, match="no time steps"):
        node(torch.rand(0, 2, C, 3))
    _assert_unchanged(node, before)
    node(torch.rand(T - done, 2, C, 3))  # exactly T in all: fine
    assert node.step == T


def test_single_step_node_rejects_step_T_plus_one_and_needs_T():
    node = _node("s", "mid")
    node(torch.rand(2, C, 3))
    node(torch.rand(2, C, 3))
    before = _snapshot(node)
    with pytest.raises(ValueError, match=rf"time steps {T}\.\.{T} but conduct has {T} rows"):
        node(torch.rand(2, C, 3))
    _assert_unchanged(node, before)
    lazy = GLIFNode(step_mode="s")
    with pytest.raises(ValueError, match=r"needs T .* GLIFNode\(T=4\)"):
        lazy(torch.rand(2, C))
    assert lazy.has_uninitialized_params()


@pytest.mark.parametrize("step_mode", ["s", "m"])
def test_node_rejects_a_batch_change_without_reset(step_mode):
    node = _node(step_mode, "mid")
    before = _snapshot(node)
    with pytest.raises(ValueError, match=r"state v has shape \(2, 4, 3\).*reset_net"):
        node(_as_mode(torch.rand(5, C, 3), step_mode))
    _assert_unchanged(node, before)


def test_lazy_node_on_cpu_rejects_meta_input_and_unavailable_backend(monkeypatch):
    node = GLIFNode(step_mode="m")
    with pytest.raises(ValueError, match="is on cpu but the input is on meta"):
        node(torch.rand(2, 2, C, device="meta"))
    assert node.has_uninitialized_params()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    node = GLIFNode(step_mode="m", backend="triton")
    with pytest.raises(ValueError, match="backend='triton' needs a CUDA tensor"):
        node(torch.rand(2, 2, C))
    assert node.has_uninitialized_params()
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert node(torch.rand(2, 2, C)).shape == (2, 2, C)  # still usable: hooks intact


def test_meta_module_with_meta_input_infers_shapes():
    node = GLIFNode(T=T, channels=C, step_mode="m").to("meta")
    out = node(torch.rand(T, 2, C, 3, device="meta"))
    assert out.device.type == "meta" and out.shape == (T, 2, C, 3)
    assert node.v.device.type == "meta" and node.step == T


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("step_mode", ["s", "m"])
def test_empty_batch_returns_empty_spikes(step_mode, backend):
    node = GLIFNode(T=T, step_mode=step_mode, backend=backend)
    x = torch.rand(T, 0, C, 3, requires_grad=True)
    out = node(x) if step_mode == "m" else torch.stack([node(x_t) for x_t in x])
    assert out.shape == (T, 0, C, 3) and node.channels == C
    assert node.v.shape == (0, C, 3) and node.spike.shape == (0, C, 3) and node.step == T
    out.sum().backward()
    assert x.grad.shape == x.shape
    assert all(p.grad is None or not p.grad.any() for p in node.parameters())


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("step_mode", ["s", "m"])
def test_nan_and_inf_inputs(step_mode, backend):
    # columns: NaN, +inf, -inf, then a finite control; one batch row, layer-wise
    node = GLIFNode(T=T, step_mode=step_mode, channel_wise=False, backend=backend)
    x = torch.tensor([[[NAN, INF, -INF, 10.0]], [[0.0] * 4], [[0.0] * 4]])
    outs, vs = [], []
    for t in range(T):
        outs.append(node(x[t] if step_mode == "s" else x[t : t + 1]).detach().reshape(4))
        vs.append(node.v.detach().reshape(4))
    assert outs[0].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert math.isnan(vs[0][0]) and vs[0][1] == INF and vs[0][2] == -INF
    assert math.isfinite(vs[0][3])
    for t in (1, 2):  # NaN stays NaN and never spikes; +-inf stay +-inf
        assert outs[t][0] == 0 and math.isnan(vs[t][0])
        assert outs[t][1:3].tolist() == [1.0, 0.0]
        assert vs[t][1] == INF and vs[t][2] == -INF
        assert math.isfinite(vs[t][3])
    node.reset()
    node(torch.zeros(1, 4) if step_mode == "s" else torch.zeros(1, 1, 4))
    assert torch.isfinite(node.v).all()  # reset clears it


# --------------------------------------------------------------------------- glif_multi_step


def _params(**override):
    raw = torch.zeros(C)
    p = dict(alpha=raw, beta=raw, gamma=raw, tau=raw, v_threshold=raw, linear_decay=raw,
             v_subreset=raw, conduct=torch.zeros(T, C))  # fmt: skip
    p.update(override)
    return p


_OP_CASES = [
    ("x-list", dict(x_seq=[1.0]), TypeError, "x_seq must be a torch.Tensor"),
    ("x-int", dict(x_seq=torch.ones(T, 2, C, dtype=torch.int32)), TypeError, "floating"),
    ("x-rank1", dict(x_seq=torch.ones(T)), ValueError, "at least one step dimension"),
    ("x-T0", dict(x_seq=torch.ones(0, 2, C)), ValueError, "no time steps"),
    ("x-longer", dict(x_seq=torch.ones(T + 1, 2, C)), ValueError, "conduct has 3 rows"),
    ("x-channels", dict(x_seq=torch.ones(T, 2, C + 1)), ValueError, "expected 4 channels"),
    ("x-meta", dict(x_seq=torch.ones(T, 2, C, device="meta")), ValueError, "on cpu but"),
    ("channel_dim", dict(channel_dim=2), ValueError, "channel_dim=2 is out of range"),
    ("t0", dict(t0=1), ValueError, r"time steps 1\.\.3"),
    ("t0-neg", dict(t0=-1), ValueError, r"time steps -1\.\.1"),
    ("v0-shape", dict(v0=torch.zeros(3, C)), ValueError, "v0 must have the shape"),
    ("v0-meta", dict(v0=torch.zeros(2, C, device="meta")), ValueError, "v0 is on meta"),
    ("s0-type", dict(s0="0"), TypeError, "s0 must be a tensor or a float"),
    ("theta-shape", dict(v_threshold=torch.zeros(C + 1)), ValueError, r"shape \[4\] like tau"),
    ("tau-int", dict(tau=torch.zeros(C, dtype=torch.int64)), TypeError, "tau must be a float"),
    ("tau-meta", dict(tau=torch.zeros(C, device="meta")), ValueError, "tau is on meta"),
    ("conduct", dict(conduct=torch.zeros(T)), ValueError, r"conduct must have shape \[T_rows"),
    ("gate-None", dict(alpha=None), ValueError, "alpha is required"),
    ("gate_mode", dict(gate_mode="soft "), ValueError, "gate_mode must be one of"),
    ("backend", dict(backend="cuda"), ValueError, "backend must be one of"),
]


@pytest.mark.parametrize("case", _OP_CASES, ids=[c[0] for c in _OP_CASES])
def test_glif_multi_step_rejects_bad_input(case):
    _, override, error, match = case
    kwargs = dict(x_seq=torch.rand(T, 2, C), v0=torch.rand(2, C), s0=0.0, **_params())
    kwargs.update(override)
    copies = {k: v.clone() for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
    with pytest.raises(error, match=match):
        glif_multi_step(**kwargs)
    for k, v in copies.items():  # no argument was written to
        assert kwargs[k].equal(v) if v.device.type != "meta" else True, k


def test_glif_multi_step_empty_batch_and_non_finite():
    out = glif_multi_step(torch.rand(T, 0, C), **_params())
    assert out.spike_seq.shape == (T, 0, C) and out.v_last.shape == (0, C)
    x = torch.tensor([[[NAN, INF, -INF, 1.0]]])
    out = glif_multi_step(x, **_params(), store_v_seq=True)
    assert out.spike_seq.flatten().tolist() == [0.0, 1.0, 0.0, 1.0]
    v = out.v_seq.flatten()
    assert math.isnan(v[0]) and v[1] == INF and v[2] == -INF and math.isfinite(v[3])


# --------------------------------------------------------------------------- model helpers


def _model(step_mode: str = "m") -> nn.Sequential:
    return nn.Sequential(
        layer.Conv2d(2, C, 3, padding=1, step_mode=step_mode),
        GLIFNode(step_mode=step_mode, T=T),
        layer.Flatten(step_mode=step_mode),
        layer.Linear(C * 25, 3, step_mode=step_mode),
    )


def test_materialize_failure_downstream_leaves_glif_lazy_and_state_clean():
    model = _model().train()
    before = _snapshot(model)
    bad = torch.rand(T, 2, 2, 6, 6)  # conv and GLIF accept it; Linear does not
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        materialize(model, bad)
    _assert_unchanged(model, before)
    assert model[1].has_uninitialized_params() and all(m.training for m in model.modules())
    materialize(model, torch.rand(T, 2, 2, 5, 5))
    assert model[1].channels == C and model[1].T == T


def test_materialize_rejects_bad_example_input_before_materializing():
    model = _model()
    before = _snapshot(model)
    with pytest.raises(ValueError, match="conduct has 3 rows"):
        materialize(model, torch.rand(T + 1, 2, 2, 5, 5))  # longer than the nodes' T
    _assert_unchanged(model, before)
    with pytest.raises(ValueError, match="needs T"):
        materialize(nn.Sequential(GLIFNode(step_mode="s")), torch.rand(2, C))


def test_swap_neurons_bad_kwargs_change_nothing():
    model = nn.Sequential(layer.Linear(3, C), neuron.LIFNode(), neuron.IFNode())
    old = list(model)
    with pytest.raises(TypeError, match="'tau'.*init_tau="):
        swap_neurons(model, tau=2.0)
    with pytest.raises(ValueError, match="gate_mode must be one of"):
        swap_neurons(model, gate_mode="soft-ish")
    assert list(model) == old


def test_swap_neurons_bad_example_input_restores_the_old_neurons():
    model = nn.Sequential(
        layer.Conv2d(2, C, 3, padding=1, step_mode="m"),
        neuron.LIFNode(step_mode="m"),
        layer.Flatten(step_mode="m"),
        layer.Linear(C * 25, 3, step_mode="m"),
    )
    old = list(model)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        swap_neurons(model, torch.rand(T, 2, 2, 6, 6))
    assert list(model) == old
    functional.reset_net(model)
    assert model(torch.rand(T, 2, 2, 5, 5)).shape == (T, 2, 3)  # the reset cache is fresh
    swap_neurons(model, torch.rand(T, 2, 2, 5, 5))
    assert isinstance(model[1], GLIFNode) and model[1].channels == C


def test_load_neuron_unknown_name_lists_the_installed_ones():
    with pytest.raises(KeyError, match=r"no neuron 'GLIF'.*installed: \[.*'glif'"):
        load_neuron("GLIF")
    assert load_neuron("glif") is GLIFNode


@pytest.mark.parametrize("convert", [convert_official_state_dict, convert_to_official_state_dict])
def test_checkpoint_converters_reject_non_string_keys_and_pass_others_through(convert):
    with pytest.raises(TypeError, match="keys must be str"):
        convert({0: torch.zeros(1)})
    assert convert({}) == {}
    plain = {"conv.weight": torch.zeros(2), "bn.Vth": torch.tensor(0.5), "step": 3}
    out = convert(plain)
    assert list(out) == list(plain) and all(out[k] is plain[k] for k in plain)


# --------------------------------------------------------------------------- issue 8 item 9


@pytest.mark.parametrize("step_mode", ["s", "m"])
def test_lazy_node_refuses_a_first_input_with_zero_channels_and_stays_lazy(step_mode):
    node = GLIFNode(T=T, step_mode=step_mode)
    before = _snapshot(node)
    with pytest.raises(ValueError, match=r"0 channels at channel_dim=1 \(shape \(.*2, 0, 3\)\)"):
        node(_as_mode(torch.rand(2, 0, 3), step_mode))
    _assert_unchanged(node, before)
    assert node.has_uninitialized_params() and node.channels is None
    node(_as_mode(torch.rand(2, C, 3), step_mode))  # still lazy: a good call infers C
    assert node.channels == C


def test_swap_neurons_refuses_a_predicate_that_chooses_a_non_neuron():
    model = nn.Sequential(nn.Linear(3, C), nn.ReLU(), neuron.LIFNode())
    old = list(model)
    with pytest.raises(TypeError, match=r"chose '1' \(ReLU\), which is not a SpikingJelly"):
        swap_neurons(model, predicate=lambda m: isinstance(m, (nn.ReLU, neuron.LIFNode)))
    assert list(model) == old  # nothing swapped, not even the LIF node
    with pytest.raises(TypeError, match=r"chose the model itself \(Sequential\)"):
        swap_neurons(model, predicate=lambda m: True)
    assert list(model) == old


def test_swap_neurons_refuses_a_bare_neuron():
    node = neuron.LIFNode()
    with pytest.raises(TypeError, match=r"the model is itself a LIFNode.*GLIFNode\(\.\.\.\)"):
        swap_neurons(node)
    glif = GLIFNode()
    assert swap_neurons(glif) is glif  # nothing to replace


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: swap_neurons("model"), r"swap_neurons expects a torch\.nn\.Module, got str"),
        (
            lambda: swap_neurons(nn.Sequential(neuron.LIFNode()), predicate="LIFNode"),
            r"predicate must be a callable module -> bool, got 'LIFNode'",
        ),
        (
            lambda: swap_neurons(nn.Sequential(neuron.LIFNode()), [[1.0]]),
            r"swap_neurons: example_input must be a torch\.Tensor or None, got list",
        ),
        (lambda: materialize(None, torch.rand(1)), r"materialize expects a torch\.nn\.Module"),
        (
            lambda: materialize(nn.Sequential(GLIFNode()), None),
            r"materialize: example_input must be a torch\.Tensor, got NoneType",
        ),
        (lambda: prepare_ddp({}, None), r"prepare_ddp expects a torch\.nn\.Module, got dict"),
        (
            lambda: prepare_ddp(nn.Sequential(GLIFNode(step_mode="m")), 1.0),
            r"prepare_ddp: example_input must be a torch\.Tensor or None, got float",
        ),
        (
            lambda: GLIFNode.from_gated_lif(neuron.LIFNode()),
            r"from_gated_lif expects a SpikingJelly neuron\.GatedLIFNode, got LIFNode",
        ),
        (lambda: load_neuron(GLIFNode), r"load_neuron expects a neuron name \(str\)"),
        (
            lambda: convert_official_state_dict([("lif.tau", torch.zeros(1))]),
            r"convert_official_state_dict expects a state dict .*got list",
        ),
        (
            lambda: convert_to_official_state_dict(None),
            r"convert_to_official_state_dict expects a state dict .*got NoneType",
        ),
        (
            lambda: convert_to_official_state_dict(
                {
                    "n.tau": 0.0,
                    "n.conduct": torch.zeros(T),
                    "n.linear_decay": torch.zeros(()),
                    "n.v_threshold": torch.zeros(()),
                    "n.v_subreset": torch.zeros(()),
                }  # fmt: skip
            ),
            r"n\.tau must be a tensor, got float",
        ),
    ],
    ids=[
        "swap-model",
        "swap-predicate",
        "swap-example",
        "materialize-model",
        "materialize-example",
        "prepare_ddp-model",
        "prepare_ddp-example",
        "from_gated_lif",
        "load_neuron",
        "official-mapping",
        "to_official-mapping",
        "to_official-value",
    ],
)
def test_model_helpers_reject_wrong_argument_types(call, match):
    with pytest.raises(TypeError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


def test_prepare_ddp_refuses_an_already_wrapped_model():
    # a stand-in subclass: constructing a real DistributedDataParallel needs a process group
    class Wrapped(nn.parallel.DistributedDataParallel):
        def __init__(self, module: nn.Module) -> None:
            nn.Module.__init__(self)
            self.module = module

    wrapped = Wrapped(nn.Sequential(GLIFNode(T=T, channels=C)))
    with pytest.raises(TypeError, match=r"before it is wrapped.*DistributedDataParallel\(prepare"):
        prepare_ddp(wrapped)


@pytest.mark.needs_sj2("GatedLIFNode")
def test_from_gated_lif_with_a_conflicting_T_names_both_shapes():
    peer = neuron.GatedLIFNode(T=T, inplane=C)
    with pytest.raises(RuntimeError, match=r"conduct of shape \[3, 4\] .*expected \[5, 4\]"):
        GLIFNode.from_gated_lif(peer, T=5)
