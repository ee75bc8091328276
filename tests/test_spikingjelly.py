"""GLIFNode inside SpikingJelly: against its peer ``neuron.GatedLIFNode``, in the model
zoo's builders, swapped into built models, and found through entry points and the
distributed vision config registry.

Where GLIFNode and SpikingJelly 2.0.0's GatedLIFNode legitimately differ (so they are
compared only on one call with 5-D ``[T, B, C, H, W]`` input, where GatedLIFNode is
correct):

- GatedLIFNode starts every call from a zero previous spike (only ``v`` is kept), so
  a sequence split over several calls loses the reset of a spike fired at the last
  step of the previous call; GLIFNode keeps ``spike`` (and the conduct row) as state.
- GatedLIFNode reshapes its parameters with ``view(1, -1, 1, 1)``: only 5-D input
  broadcasts them over the channel axis; 3-D ``[T, B, C]`` input broadcasts to a wrong
  shape without an error. GLIFNode takes any rank with the channel at ``channel_dim``.
- GatedLIFNode loops over ``range(self.T)``: a longer input is silently truncated;
  GLIFNode raises. GatedLIFNode is multi-step only and needs ``T`` and ``inplane``.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap
from importlib import metadata

import pytest
import torch
from spikingjelly.activation_based import base, functional, layer, neuron, surrogate
from torch import nn

import sj_glif
from sj_glif import GLIFNode

GatedLIFNode = getattr(neuron, "GatedLIFNode", None)  # SpikingJelly >= 2.0 only

PARAMS = ("alpha", "beta", "gamma", "tau", "v_threshold", "linear_decay", "v_subreset", "conduct")
T, B, C, H, W = 4, 2, 3, 5, 4


def _peer(surrogate_function, seed: int = 0) -> nn.Module:
    """A GatedLIFNode with random raw parameters that differ per channel (at their
    initial values every channel would behave alike)."""
    peer = GatedLIFNode(T, inplane=C, surrogate_function=surrogate_function)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in peer.parameters():
            p.add_(torch.randn(p.shape, generator=g))
    return peer


def _input(seed: int = 1, shape=(T, B, C, H, W)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) * 1.6 - 0.2


def _loss_weights(seed: int = 2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((T, B, C, H, W), generator=g), torch.randn((B, C, H, W), generator=g)


def _run(module: nn.Module, x: torch.Tensor, calls=(T,)) -> dict:
    """Spikes, final membrane and the gradients of one loss over both w.r.t. the input
    and every parameter, for the sequence ``x`` fed in ``calls`` chunks."""
    functional.reset_net(module)
    x = x.clone().requires_grad_()
    spikes = torch.cat([module(chunk) for chunk in x.split(list(calls))])
    w_s, w_v = _loss_weights()
    loss = (spikes * w_s).sum() + (module.v * w_v).sum()
    names = [n for n, _ in module.named_parameters()]
    grads = torch.autograd.grad(loss, [x, *(p for _, p in module.named_parameters())])
    return dict(
        spikes=spikes.detach(),
        v=module.v.detach(),
        grads=dict(zip(["x", *names], grads, strict=True)),
    )


def _assert_close_runs(got: dict, want: dict) -> None:
    # float32, the same math in another association: the membranes differ by a few ulp
    # per step (|u| ~ 1, so ~1e-6), which leaves every spike where it is (the data
    # keeps u away from theta); gradients are sums over B*H*W terms per channel in
    # another order (autograd vs the hand-written backward): 1e-5 relative to the
    # largest entry of each tensor is ~100 ulp, while a wrong term is >1e-2
    torch.testing.assert_close(got["spikes"], want["spikes"], rtol=0, atol=0, msg="spikes")
    rate = got["spikes"].mean().item()
    assert 0.05 < rate < 0.95, f"spike rate {rate}: the data does not exercise the resets"
    torch.testing.assert_close(got["v"], want["v"], rtol=1e-5, atol=1e-6, msg="final membrane")
    assert got["grads"].keys() == want["grads"].keys() == {"x", *PARAMS}
    for name, g in want["grads"].items():
        assert g.abs().max() > 0, f"{name}: a zero gradient compares nothing"
        torch.testing.assert_close(
            got["grads"][name],
            g,
            rtol=1e-5,
            atol=1e-5 * g.abs().max().item(),
            msg=lambda m, n=name: f"grad {n}: {m}",
        )


# --------------------------------------------------------------------------- the peer


@pytest.mark.needs_sj2("GatedLIFNode")
@pytest.mark.parametrize(
    "make_surrogate", [surrogate.Sigmoid, surrogate.Rect], ids=["Sigmoid", "Rect"]
)
@pytest.mark.parametrize("copy_by", ["state_dict", "from_gated_lif"])
def test_glif_equals_gated_lif_node(make_surrogate, copy_by):
    peer = _peer(make_surrogate())
    if copy_by == "state_dict":
        node = GLIFNode(T, channels=C, step_mode="m", surrogate_function=make_surrogate())
        node.load_state_dict(peer.state_dict())  # the same 8 names and shapes
    else:
        node = GLIFNode.from_gated_lif(peer)
    x = _input()
    _assert_close_runs(_run(node, x), _run(peer, x))


@pytest.mark.needs_sj2("GatedLIFNode")
def test_glif_in_chunks_equals_gated_lif_in_one_call():
    # GatedLIFNode is only right in one call; GLIFNode carries v, spike and the step
    # across calls, so any split of the sequence gives GatedLIFNode's one-call result
    peer = _peer(surrogate.Rect(), seed=3)
    x = _input(seed=4)
    want = _run(peer, x)
    for calls in [(1, 3), (2, 1, 1), (1, 1, 1, 1)]:
        node = GLIFNode.from_gated_lif(peer)
        _assert_close_runs(_run(node, x, calls), want)


@pytest.mark.needs_sj2("GatedLIFNode")
def test_initial_values_equal_gated_lif_node():
    torch.manual_seed(0)
    node = GLIFNode(T, channels=C)
    peer = GatedLIFNode(T, inplane=C)
    for name in PARAMS[3:]:  # tau ... conduct: deterministic, logit of the same values
        torch.testing.assert_close(getattr(node, name), getattr(peer, name), msg=name)
    for name in PARAMS[:3]:  # gates: both U(-0.1, 0.1), drawn independently
        assert getattr(node, name).abs().max() <= 0.1 and getattr(peer, name).abs().max() <= 0.1


def test_model_builder_kwargs_of_other_neurons_raise_type_error():
    from spikingjelly.activation_based.model import spiking_resnet

    with pytest.raises(TypeError, match="'tau'.*init_tau"):
        spiking_resnet.spiking_resnet18(spiking_neuron=GLIFNode, tau=2.0)
    with pytest.raises(TypeError, match="'v_threshold'.*init_v_threshold"):
        spiking_resnet.spiking_resnet18(spiking_neuron=GLIFNode, v_threshold=1.0)


@pytest.mark.needs_sj2("base.to_functional_forward")
def test_to_functional_forward_of_a_sequential():
    torch.manual_seed(0)
    net = nn.Sequential(
        layer.Linear(4, 6, step_mode="m"),
        GLIFNode(step_mode="m"),
        layer.Linear(6, 3, step_mode="m"),
        GLIFNode(step_mode="m"),
    )
    x = torch.rand(3, 2, 4) * 3
    sj_glif.materialize(net, x)
    f = base.to_functional_forward(net)
    (out,), states = f((x,), tuple(base.extract_memories(net)))
    assert base.extract_memories(net) == [0.0, 0.0, 0, 0.0, 0.0, 0]  # untouched
    expected = net(x)
    assert torch.equal(out, expected)
    assert torch.equal(states[3], net[3].v) and states[5] == net[3].step == 3


# --------------------------------------------------------------------------- model zoo


def _builders():
    from spikingjelly.activation_based.model import (
        parametric_lif_net,
        sew_resnet,
        spikformer,
        spiking_resnet,
        spiking_vgg,
    )

    rect = dict(spiking_neuron=GLIFNode, surrogate_function=surrogate.Rect())
    return {
        "spiking_resnet18": lambda: spiking_resnet.spiking_resnet18(num_classes=10, **rect),
        "sew_resnet18": lambda: sew_resnet.sew_resnet18(cnf="ADD", num_classes=10, **rect),
        "spiking_vgg11_bn": lambda: spiking_vgg.spiking_vgg11_bn(num_classes=10, **rect),
        "CIFAR10Net": lambda: parametric_lif_net.CIFAR10Net(channels=8, **rect),
        # spikformer_cifar10 forwards **kwargs to Spikformer, which takes none, so the
        # neuron's arguments go in with the class; it passes no T to the neurons
        # either: GLIF infers T from the sequence in multi-step mode
        "spikformer_cifar10": lambda: spikformer.spikformer_cifar10(
            T=2, spiking_neuron=functools.partial(GLIFNode, surrogate_function=surrogate.Rect())
        ),
    }


@pytest.mark.slow
@pytest.mark.needs_sj2("2.0's model zoo; tests/test_compat.py trains 0.0.0.0.14's builders")
@pytest.mark.parametrize(
    "name",
    ["spiking_resnet18", "sew_resnet18", "spiking_vgg11_bn", "CIFAR10Net", "spikformer_cifar10"],
)
def test_model_trains_with_glif(name):
    torch.manual_seed(0)
    net = _builders()[name]()
    functional.set_step_mode(net, "m")
    steps, batch = 2, 2
    # spikformer is by far the slowest on the CPU; its patch stem and attention work on
    # any image size, and 16x16 gives 4x4 tokens instead of 8x8. The others need 32x32
    # (VGG's five poolings; CIFAR10Net's classifier is sized for it)
    size = 16 if name == "spikformer_cifar10" else 32
    x1, x2 = torch.rand(2, steps, batch, 3, size, size)
    labels = torch.arange(batch)

    sj_glif.materialize(net, x1)
    nodes = [m for m in net.modules() if isinstance(m, GLIFNode)]
    assert nodes and not any(n.has_uninitialized_params() for n in nodes)
    assert all(n.T == steps and n.step_mode == "m" for n in nodes)
    assert all(isinstance(n.surrogate_function, surrogate.Rect) for n in nodes)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    in_opt = {id(p) for group in opt.param_groups for p in group["params"]}
    glif_params = [(i, n, p) for i, m in enumerate(nodes) for n, p in m.named_parameters()]
    assert all(id(p) in in_opt for _, _, p in glif_params)
    before = [p.detach().clone() for _, _, p in glif_params]

    out = net(x1)
    assert out.shape == (steps, batch, 10)
    nn.functional.cross_entropy(out.mean(0), labels).backward()
    # A parameter's gradient can be legitimately zero: with T=2, gamma and v_subreset
    # act only after a spike at step 0, and a layer may not fire then. So: every
    # gradient is finite, every node and every parameter name gets a non-zero one
    # somewhere, and plain SGD changes only parameters with non-zero gradients, in
    # every node and under every name (a tiny gradient may vanish in rounding)
    nonzero = set()
    for i, n, p in glif_params:
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"node {i} {n}"
        if p.grad.abs().sum() > 0:
            nonzero.add((i, n))
    assert {i for i, _ in nonzero} == set(range(len(nodes))), "a node got no gradient"
    assert {n for _, n in nonzero} == set(PARAMS), "a parameter got no gradient anywhere"
    opt.step()
    changed = {
        (i, n)
        for (i, n, p), old in zip(glif_params, before, strict=True)
        if not torch.equal(p.detach(), old)
    }
    assert changed <= nonzero
    assert {i for i, _ in changed} == set(range(len(nodes))), "a node did not change"
    assert {n for _, n in changed} == set(PARAMS), "a parameter changed nowhere"

    # the nodes hold the first batch's state: a second batch needs reset_net first
    with pytest.raises(ValueError, match=f"conduct has {steps} rows"):
        net(x2)
    functional.reset_net(net)
    assert all((n.v, n.spike, n.step) == (0.0, 0.0, 0) for n in nodes)
    with torch.no_grad():
        out2 = net(x2)
    assert torch.isfinite(out2).all() and all(n.step == steps for n in nodes)


# --------------------------------------------------------------------------- swap_neurons


def _expected_channels(model: nn.Module) -> list[int]:
    """The channel count each spiking neuron sees: the output width of the last
    Conv2d / Linear before it (module order is execution order in these models)."""
    width, counts = None, []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            width = m.out_channels
        elif isinstance(m, nn.Linear):
            width = m.out_features
        elif isinstance(m, neuron.BaseNode):
            counts.append(width)
    return counts


@pytest.mark.slow
def test_swap_neurons_in_a_built_lif_model():
    from spikingjelly.activation_based.model import spiking_vgg

    torch.manual_seed(0)
    model = spiking_vgg.spiking_vgg11_bn(
        spiking_neuron=neuron.LIFNode, surrogate_function=surrogate.ATan(), num_classes=10
    )
    functional.set_step_mode(model, "m")
    x = torch.rand(2, 1, 3, 32, 32)
    expected = _expected_channels(model)
    assert expected == [64, 128, 256, 256, 512, 512, 512, 512, 4096, 4096]
    functional.reset_net(model)  # fills SpikingJelly's reset cache with the LIF nodes

    assert sj_glif.swap_neurons(model, x) is model
    nodes = [m for m in model.modules() if isinstance(m, neuron.BaseNode)]
    assert all(type(m) is GLIFNode for m in nodes)
    assert [m.channels for m in nodes] == expected
    assert all(m.T == 2 and m.step_mode == "m" for m in nodes)
    assert all(isinstance(m.surrogate_function, surrogate.ATan) for m in nodes)

    model(x)
    assert all(m.step == 2 for m in nodes)
    functional.reset_net(model)  # reaches the new nodes: the cache was invalidated
    assert all((m.v, m.spike, m.step) == (0.0, 0.0, 0) for m in nodes)


@pytest.mark.needs_sj2("GatedLIFNode")
def test_swap_neurons_keeps_gated_lif_parameters():
    torch.manual_seed(0)
    peer = _peer(surrogate.Sigmoid(), seed=5)
    model = nn.Sequential(
        layer.Conv2d(2, C, 3, padding=1, step_mode="m"),
        peer,
        layer.Conv2d(C, 2, 1, step_mode="m"),
        neuron.LIFNode(step_mode="m"),
    )
    x = torch.rand(T, B, 2, H, W) * 2
    with torch.no_grad():
        peer_spikes = peer(model[0](x))
    functional.reset_net(model)
    sj_glif.swap_neurons(model, x)
    assert type(model[1]) is GLIFNode and type(model[3]) is GLIFNode
    assert (model[1].T, model[1].channels) == (T, C) and model[3].channels == 2
    for name in PARAMS:
        assert torch.equal(getattr(model[1], name), getattr(peer, name)), name
        assert getattr(model[1], name) is not getattr(peer, name)
    assert model[1].surrogate_function is peer.surrogate_function
    with torch.no_grad():  # one 5-D call: the same math as the peer
        assert torch.equal(model[1](model[0](x)), peer_spikes)


def test_swap_neurons_keeps_shared_neurons_shared():
    torch.manual_seed(0)
    sn = neuron.LIFNode(step_mode="m", surrogate_function=surrogate.ATan())
    fc = layer.Linear(C, C, step_mode="m")
    block = nn.Sequential(fc, sn)  # a shared block, and a neuron shared inside one parent
    model = nn.Sequential(fc, sn, fc, sn, block, block)
    functional.reset_net(model)
    x = torch.rand(2, B, C)
    # T=8: the shared node runs 4 times per forward (as the shared LIF did), 2 steps each
    assert sj_glif.swap_neurons(model, x, T=8) is model
    new = model[1]
    assert type(new) is GLIFNode and isinstance(new.surrogate_function, surrogate.ATan)
    assert model[3] is new and model[4][1] is new and model[5][1] is new
    assert [m for m in model.modules() if isinstance(m, neuron.BaseNode)] == [new]
    assert (new.T, new.channels) == (8, C)
    functional.reset_net(model)
    model(x)
    assert new.step == 8  # one node, every place
    functional.reset_net(model)
    assert new.step == 0


def test_swap_neurons_shared_and_failing_restores_every_place():
    sn = neuron.LIFNode(step_mode="m")
    fc = layer.Linear(C, C, step_mode="m")
    model = nn.Sequential(fc, sn, fc, sn)
    with pytest.raises(ValueError, match="conduct has 2 rows"):
        sj_glif.swap_neurons(model, torch.rand(2, B, C))  # T=2 inferred: the 2nd place overflows
    assert model[1] is sn and model[3] is sn


# --------------------------------------------------------------------------- vision configs


_BUILD = dict(process_group=None, pipeline_rank=0, pipeline_size=1, pipeline_microbatches=1,
              device=torch.device("cpu"), micro_batch_size=1)  # fmt: skip


def _vision_configs():
    from spikingjelly.activation_based.distributed.vision import NeuronConfig
    from spikingjelly.activation_based.model.sew_resnet import SEWResNet34Config
    from spikingjelly.activation_based.model.spikformer import SpikformerCIFAR10Config

    def glif(**kwargs):
        return NeuronConfig(class_path="sj_glif.node.GLIFNode", kwargs=kwargs,
                            surrogate="spikingjelly.activation_based.surrogate.Rect")  # fmt: skip

    return {
        # Spikformer's builder passes T itself: GLIF infers it from the input
        "spikformer": SpikformerCIFAR10Config(time_steps=2, neuron_config=glif()),
        # SEW-ResNet34's builder does not: single-step mode gets T in the neuron kwargs
        "sew_resnet34": SEWResNet34Config(
            time_steps=2,
            num_classes=10,
            image_size=16,
            step_mode="s",
            neuron_config=glif(T=2, gate_mode="hard"),
        ),  # fmt: skip
    }


def _forward(model: nn.Module, x: torch.Tensor, step_mode: str) -> torch.Tensor:
    functional.reset_net(model)
    with torch.no_grad():
        if step_mode == "m":
            return model(x)
        return torch.stack([model(x_t) for x_t in x])


@pytest.mark.slow
@pytest.mark.needs_sj2("the distributed vision configs")
@pytest.mark.parametrize("name", ["spikformer", "sew_resnet34"])
def test_vision_builder_loads_a_glif_checkpoint_for_inference(name):
    config = _vision_configs()[name]
    builder = config.get_builder_cls()(config)
    torch.manual_seed(0)
    model, *_ = builder.build(memopt_process_group=None, memopt_level=0,
                              memopt_compress_inputs=False, memopt_checkpoint_budget="memory",
                              **_BUILD)  # fmt: skip
    model.eval()
    x = torch.rand(2, 1, 3, 16, 16)  # [T, B, C, H, W]; both models take 16x16 images
    sj_glif.materialize(model, x[0] if config.step_mode == "s" else x)
    nodes = [m for m in model.modules() if isinstance(m, GLIFNode)]
    assert nodes and all(n.T == 2 for n in nodes)
    with torch.no_grad():  # trained-looking values, so loading must matter
        for n in nodes:
            for p in n.parameters():
                p.add_(0.3 * torch.randn_like(p))
    want = _forward(model, x, config.step_mode)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    # export merges the (one) rank's state against a fresh, lazy canonical model
    merged = builder.merge_state_dicts([(0, 0, state)], pipeline_size=1, tensor_size=1)
    assert merged.keys() == state.keys()
    loaded, *_ = builder.build_for_inference(merged, **_BUILD)
    loaded.eval()
    new_nodes = [m for m in loaded.modules() if isinstance(m, GLIFNode)]
    assert len(new_nodes) == len(nodes)
    assert not any(n.has_uninitialized_params() for n in new_nodes)
    for old, new in zip(nodes, new_nodes, strict=True):
        assert (new.T, new.channels, new.gate_mode) == (old.T, old.channels, old.gate_mode)
        for pname, p in old.named_parameters():
            assert torch.equal(getattr(new, pname), p), pname
    torch.testing.assert_close(_forward(loaded, x, config.step_mode), want, rtol=0, atol=0)


@pytest.mark.needs_sj2("the distributed vision configs")
def test_vision_builder_with_its_own_T_takes_no_T_in_the_neuron_kwargs():
    """The documented way (sj_glif.plugins): T in the neuron kwargs of a builder that
    passes its own T fails in SpikingJelly; without it GLIF infers T from the input."""
    from spikingjelly.activation_based.distributed.vision import NeuronConfig
    from spikingjelly.activation_based.model.spikformer import SpikformerCIFAR10Config

    wrong = SpikformerCIFAR10Config(
        time_steps=2, neuron_config=NeuronConfig("sj_glif.node.GLIFNode", kwargs={"T": 2})
    )
    with pytest.raises(TypeError, match="multiple values for keyword argument 'T'"):
        wrong.get_builder_cls()(wrong)._build_canonical_model()
    assert "Leave ``T`` out of ``NeuronConfig.kwargs``" in sj_glif.plugins.__doc__


@pytest.mark.needs_sj2("the distributed vision configs")
def test_lazy_targets_with_tensor_parallelism_raise_a_clear_error():
    from spikingjelly.activation_based.distributed.vision.config import ModelBuilder

    lazy = nn.UninitializedParameter()
    with pytest.raises(ValueError, match=r"cannot shard n\.tau .* over 2 tensor-parallel"):
        ModelBuilder._shard_tensor_parallel_tensor(None, "n.tau", torch.zeros(4), lazy, 0, 2)
    shards = [torch.zeros(2), torch.ones(2)]
    with pytest.raises(ValueError, match=r"cannot merge the 2 tensor-parallel shards of n\.tau"):
        ModelBuilder._merge_tensor_parallel_shards(None, "n.tau", shards, lazy)
    same = [torch.ones(2), torch.ones(2)]
    assert ModelBuilder._merge_tensor_parallel_shards(None, "n.tau", same, lazy) is same[0]


# --------------------------------------------------------------------------- plugins


def test_entry_point_is_declared_in_package_metadata():
    dist = metadata.distribution("sj-glif")
    eps = [ep for ep in dist.entry_points if ep.group == "spikingjelly.neurons"]
    assert [(ep.name, ep.value) for ep in eps] == [("glif", "sj_glif.node:GLIFNode")]
    found = sj_glif.available_neurons()
    assert "glif" in found and found["glif"].value == "sj_glif.node:GLIFNode"
    assert sj_glif.load_neuron("glif") is GLIFNode


def test_unknown_neuron_name_lists_installed_ones():
    with pytest.raises(KeyError, match=r"no neuron 'nope'.*installed: \[.*'glif'.*\]"):
        sj_glif.load_neuron("nope")


_CONFIG_SCRIPT = textwrap.dedent(
    """
    import json

    import torch
    from spikingjelly.activation_based import neuron
    from spikingjelly.activation_based.distributed.vision import ModelConfig, NeuronConfig
    from spikingjelly.activation_based.model.sew_resnet import SEWResNet34Config

    config = SEWResNet34Config(
        time_steps=2,
        num_classes=10,
        neuron_config=NeuronConfig(
            class_path="sj_glif.node.GLIFNode",
            kwargs={"init_tau": 0.3, "gate_mode": "hard", "detach_reset": False},
            surrogate="spikingjelly.activation_based.surrogate.Rect",
            surrogate_kwargs={"alpha": 2.0},
        ),
    )


    def build(config):
        builder = config.get_builder_cls()(config)
        model, *_ = builder.build(
            process_group=None, memopt_process_group=None, pipeline_rank=0,
            pipeline_size=1, pipeline_microbatches=1, device=torch.device("cpu"),
            micro_batch_size=1, memopt_level=0, memopt_compress_inputs=False,
            memopt_checkpoint_budget="memory",
        )
        return model


    result = {}
    try:
        build(config)
        result["before_import"] = "built"
    except ValueError as error:
        result["before_import"] = str(error)

    import sj_glif

    config = ModelConfig.from_dict(json.loads(json.dumps(config.as_dict())))
    model = build(config)
    nodes = [m for m in model.modules() if isinstance(m, neuron.BaseNode)]
    sj_glif.materialize(model, torch.rand(2, 1, 3, 32, 32))
    glif = [m for m in nodes if isinstance(m, sj_glif.GLIFNode)]
    result.update(
        nodes=len(nodes),
        glif=len(glif),
        gate_modes=sorted({m.gate_mode for m in glif}),
        step_modes=sorted({m.step_mode for m in glif}),
        surrogates=sorted(
            {f"{type(m.surrogate_function).__name__}{m.surrogate_function.alpha}" for m in glif}
        ),
        tau=sorted({round(v, 6) for m in glif for v in torch.sigmoid(m.tau).tolist()}),
        T=sorted({m.T for m in glif}),
    )
    print(json.dumps(result))
    """
)


@pytest.mark.needs_sj2("distributed.vision.config")
def test_vision_config_registry_resolves_glif_after_import():
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-c", _CONFIG_SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "Unregistered neuron class 'sj_glif.node.GLIFNode'" in result["before_import"]
    assert result["nodes"] == result["glif"] > 0
    assert result["gate_modes"] == ["hard"]
    assert result["step_modes"] == ["m"]
    assert result["surrogates"] == ["Rect2.0"]
    assert result["tau"] == [0.3]
    assert result["T"] == [2]
