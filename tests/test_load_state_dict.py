"""Loading checkpoints into GLIFNode: what the node knows must match, what it does not
know is adopted (``GLIFNode._load_from_state_dict``).

A node knows its layout (channel-wise or layer-wise) from construction, and ``T`` and
``channels`` when they were given at construction or fixed by materializing. The
matrix below crosses node states (fully lazy, lazy with ``T`` given, lazy with
``channels`` given, materialized) and node layouts with checkpoint layouts, ``T`` and
channel counts that match or not; the expected outcome follows from that one rule, and
the test checks both sides: a refusal names the key and both shapes and changes
nothing, an acceptance gives the checkpoint's exact values and a node that runs.
"""

from __future__ import annotations

import pytest
import torch
from spikingjelly.activation_based.neuron import GatedLIFNode
from torch import nn
from torch.nn.parameter import is_lazy

from sj_glif import GLIFNode

PARAMS = ("alpha", "beta", "gamma", "tau", "v_threshold", "linear_decay", "v_subreset", "conduct")
T, C = 4, 3


def _checkpoint(channel_wise: bool, steps: int, channels: int) -> dict[str, torch.Tensor]:
    """A trained-looking state dict (random raw values, so loading must matter)."""
    node = GLIFNode(T=steps, channels=channels if channel_wise else None,
                    channel_wise=channel_wise)  # fmt: skip
    g = torch.Generator().manual_seed(steps * 10 + channels)
    return {k: torch.randn(v.shape, generator=g) for k, v in node.state_dict().items()}


_STATES = {
    # name: (constructor kwargs, T known, channels known)
    "lazy": (dict(), False, False),
    "lazy_T": (dict(T=T), True, False),
    "lazy_channels": (dict(channels=C), False, True),
    "materialized": (dict(T=T, channels=C), True, True),
}


def _node(state: str, channel_wise: bool) -> GLIFNode:
    kwargs, _, _ = _STATES[state]
    if not channel_wise:
        kwargs = {k: v for k, v in kwargs.items() if k != "channels"}
    return GLIFNode(step_mode="m", channel_wise=channel_wise, **kwargs)


def _snapshot(node: GLIFNode) -> dict:
    return {
        n: None if is_lazy(p) else p.detach().clone()
        for n, p in node._parameters.items()
        if p is not None
    }


def _cases() -> list:
    """Every combination, less those without a channel count to differ: a layer-wise
    checkpoint with another C, a layer-wise node built with channels."""
    cases = []
    for state in _STATES:
        for node_cw in (True, False):
            for ckpt_cw in (True, False):
                for T_match in (True, False):
                    for C_match in (True, False) if ckpt_cw else (True,):
                        if not node_cw and state == "lazy_channels":
                            continue
                        ids = [state, "node-cw" if node_cw else "node-lw",
                               "ckpt-cw" if ckpt_cw else "ckpt-lw",
                               "T-match" if T_match else "T-differs",
                               "C-match" if C_match else "C-differs"]  # fmt: skip
                        cases.append(pytest.param(state, node_cw, ckpt_cw, T_match, C_match,
                                                  id="-".join(ids)))  # fmt: skip
    return cases


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize(
    "state, node_channel_wise, ckpt_channel_wise, T_match, channels_match", _cases()
)
def test_load_adopts_what_the_node_does_not_know_and_refuses_the_rest(
    state, node_channel_wise, ckpt_channel_wise, T_match, channels_match, strict
):
    steps, channels = (T if T_match else T + 2), (C if channels_match else C + 2)
    sd = _checkpoint(ckpt_channel_wise, steps, channels)
    node = _node(state, node_channel_wise)
    _, T_known, C_known = _STATES[state]
    if not node_channel_wise:
        T_known = T_known or state == "materialized"
    refuse = (
        node_channel_wise != ckpt_channel_wise
        or (T_known and not T_match)
        or (node_channel_wise and C_known and not channels_match)
    )
    before = _snapshot(node)
    if refuse:
        with pytest.raises(RuntimeError) as info:
            node.load_state_dict(sd, strict=strict)
        message = str(info.value)
        assert "cannot load" in message
        # the key, the checkpoint's shape and the expected shape are all named
        key = next(k for k in PARAMS if f"cannot load {k} of shape" in message)
        assert str(list(sd[key].shape)) in message and "expected [" in message
        if node_channel_wise != ckpt_channel_wise:
            wanted = "channel_wise=False" if ckpt_channel_wise is False else "channel_wise=True"
            assert wanted in message
        after = _snapshot(node)
        assert after.keys() == before.keys()
        for n, p in before.items():
            assert (after[n] is None) if p is None else torch.equal(after[n], p), n
        repr(node)  # still a consistent node
        return
    result = node.load_state_dict(sd, strict=strict)
    assert not result.missing_keys and not result.unexpected_keys
    assert not node.has_uninitialized_params()
    assert node.T == steps
    assert node.channels == (channels if node_channel_wise else None)
    for name in PARAMS:
        assert torch.equal(getattr(node, name).detach(), sd[name]), name
    assert f"T={steps}" in repr(node)
    x = torch.rand(steps, 2, channels if node_channel_wise else 5)
    assert node(x).shape == x.shape


def test_layer_wise_gated_lif_checkpoint_is_refused_by_a_default_lazy_node():
    """The reported case: "All keys matched", then IndexError in every forward and repr."""
    sd = GatedLIFNode(T=4).state_dict()  # inplane=None: layer-wise
    node = GLIFNode(step_mode="m")
    with pytest.raises(RuntimeError, match=r"alpha of shape \[\] .*expected \[C\].*layer-wise"):
        node.load_state_dict(sd)
    assert node.has_uninitialized_params() and "T=None" in repr(node)
    layer_wise = GLIFNode(step_mode="m", channel_wise=False)
    layer_wise.load_state_dict(sd)
    assert layer_wise.T == 4 and layer_wise(torch.rand(4, 2, 3)).shape == (4, 2, 3)


def test_lazy_and_materialized_nodes_refuse_another_T_alike():
    sd = _checkpoint(True, 8, C)
    messages = []
    for node in (GLIFNode(T=4), GLIFNode(T=4, channels=C)):
        with pytest.raises(RuntimeError, match=r"conduct of shape \[8, 3\].*expected \[4, 3\]"):
            node.load_state_dict(sd)
        assert node.T == 4
        messages.append(str(node))
    lazy = GLIFNode()  # T not given: adopted
    lazy.load_state_dict(sd)
    assert lazy.T == 8 and lazy.channels == C


def test_inconsistent_checkpoint_is_refused_by_a_lazy_node():
    sd = _checkpoint(True, T, C)
    sd["beta"] = torch.zeros(C + 1)
    node = GLIFNode()
    with pytest.raises(RuntimeError, match=r"beta of shape \[4\].*channels=3 from alpha"):
        node.load_state_dict(sd)
    assert all(is_lazy(p) for p in node.parameters())


def test_partial_checkpoint_with_strict_false_adopts_its_shapes():
    sd = {"tau": torch.full((C,), 0.7), "conduct": torch.full((T, C), -0.2)}
    node = GLIFNode(step_mode="m")
    result = node.load_state_dict(sd, strict=False)
    assert sorted(result.missing_keys) == sorted(set(PARAMS) - set(sd))
    assert (node.T, node.channels) == (T, C) and not node.has_uninitialized_params()
    assert torch.equal(node.tau.detach(), sd["tau"])
    assert torch.equal(node.conduct.detach(), sd["conduct"])
    # the parameters it lacked got their initial values at the adopted shapes
    fresh = GLIFNode(T=T, channels=C, init_gate_range=0.0)
    for name in ("v_threshold", "linear_decay", "v_subreset"):
        assert torch.equal(getattr(node, name).detach(), getattr(fresh, name).detach()), name
    assert node(torch.rand(T, 2, C)).shape == (T, 2, C)
    node.reset()
    with pytest.raises(ValueError, match="expected 3 channels"):
        node(torch.rand(1, 2, C + 1))


def test_checkpoint_loads_into_glif_inside_a_model_with_other_layers_strict_false():
    sd = {"0.weight": torch.zeros(C, 2), "1.alpha": torch.zeros(C), "1.tau": torch.zeros(5),
          "other.w": torch.zeros(1)}  # fmt: skip
    model = nn.Sequential(nn.Linear(2, C), GLIFNode(step_mode="m"))
    with pytest.raises(RuntimeError, match=r"1\.tau of shape \[5\].*expected \[3\]"):
        model.load_state_dict(sd, strict=False)
    assert model[1].has_uninitialized_params()
    sd["1.tau"] = torch.zeros(C)
    result = model.load_state_dict(sd, strict=False)
    assert result.unexpected_keys == ["other.w"] and "1.beta" in result.missing_keys
    assert model[1].channels == C


def test_lazy_node_loaded_under_inference_mode_can_train():
    sd = _checkpoint(True, T, C)
    node = GLIFNode(step_mode="m")
    with torch.inference_mode():
        node.load_state_dict(sd)
    assert not any(p.is_inference() for p in node.parameters())
    node(torch.rand(T, 2, C)).sum().backward()
    assert node.tau.grad is not None
