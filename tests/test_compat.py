"""sj-glif under the installed SpikingJelly release: 0.0.0.0.14 or >= 2.0 (sj_glif.compat).

``.ci/run`` runs this file under both releases. Release-specific tests skip under the
other one with a reason that names the installed version.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional, layer, surrogate
from torch import nn

import sj_glif
from sj_glif import GLIFNode, compat
from sj_glif.ops import BACKENDS
from sj_glif.reference import glif_reference
from sj_glif.surrogates import SURROGATES, Rect, SuperSpike, fused_surrogate, surrogate_grad

F64 = torch.float64
LEGACY = not compat.HAS_FUNCTIONAL_CONTRACT
INSTALLED = f"installed: spikingjelly {compat.SPIKINGJELLY_VERSION}"
legacy_only = pytest.mark.skipif(not LEGACY, reason=f"SpikingJelly 0.0.0.0.14 API; {INSTALLED}")
sj2_only = pytest.mark.skipif(LEGACY, reason=f"SpikingJelly >= 2.0 API; {INSTALLED}")


def test_the_installed_release_is_detected_by_its_features():
    legacy_version = compat.SPIKINGJELLY_VERSION.startswith("0.0.0.0.")
    assert LEGACY == legacy_version
    assert compat.HAS_SET_BACKEND == legacy_version  # 0.0.0.0.14 only
    assert compat.HAS_GATED_LIF == (not legacy_version)  # 2.0 only
    assert compat.HAS_VISION_CONFIG == (not legacy_version)
    assert (compat.gated_lif_class() is None) == legacy_version
    assert (compat.vision_config_register() is None) == legacy_version
    assert sj_glif.register_with_spikingjelly() == (not legacy_version)
    assert compat.EXTRA_NODE_BACKENDS == (("cupy",) if legacy_version else ())


# ---------------------------------------------------------------------- surrogates

Z = torch.tensor([-0.7, -0.5, -0.25, -0.2, 0.0, 0.2, 0.25, 0.49, 0.5, 0.7], dtype=F64)


@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_sj_glif_rect_spikes_at_zero_and_passes_gradient_inside_its_window(alpha):
    z = Z.clone().requires_grad_()
    out = compat.SjGlifRect(alpha=alpha)(z)
    assert out.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]  # H(z) = 1 where z >= 0
    out.backward(torch.ones_like(out))
    inside = {1.0: [0, 0, 1, 1, 1, 1, 1, 1, 0, 0], 2.0: [0, 0, 0, 1, 1, 1, 0, 0, 0, 0]}[alpha]
    assert torch.equal(z.grad, alpha * torch.tensor(inside, dtype=F64))  # |z| < 0.5 / alpha
    assert compat.SjGlifRect().alpha == 1.0 and compat.SjGlifRect().spiking
    primitive = compat.SjGlifRect(alpha=alpha, spiking=False)(Z)
    assert torch.equal(primitive, torch.clamp(alpha * Z + 0.5, 0.0, 1.0))


def test_sj_glif_super_spike_gradient():
    z = Z.clone().requires_grad_()
    out = compat.SjGlifSuperSpike(alpha=3.0)(z)
    assert out.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    out.backward(torch.ones_like(out))
    torch.testing.assert_close(z.grad, 3.0 / (Z.abs() + 1.0) ** 2, rtol=1e-15, atol=0)
    assert compat.SjGlifSuperSpike().alpha == 1.0
    with pytest.raises(NotImplementedError, match="no primitive"):
        compat.SjGlifSuperSpike(spiking=False)(Z)


@sj2_only
@pytest.mark.parametrize(
    ("ours", "theirs"), [("SjGlifRect", "Rect"), ("SjGlifSuperSpike", "SuperSpike")]
)
@pytest.mark.parametrize("alpha", [None, 0.5, 2.0])
def test_sj_glif_surrogates_equal_spikingjelly_2(ours, theirs, alpha):
    # the classes 0.0.0.0.14 users get are SpikingJelly 2.0's, value for value
    kw = {} if alpha is None else {"alpha": alpha}
    mine, ref = getattr(compat, ours)(**kw), getattr(surrogate, theirs)(**kw)
    assert mine.alpha == ref.alpha and mine.spiking == ref.spiking
    z1, z2 = Z.clone().requires_grad_(), Z.clone().requires_grad_()
    g = torch.linspace(0.5, 1.5, Z.numel(), dtype=F64)
    a, b = mine(z1), ref(z2)
    assert torch.equal(a, b)
    a.backward(g)
    b.backward(g)
    torch.testing.assert_close(z1.grad, z2.grad, rtol=1e-15, atol=0)


def test_the_surrogate_table_has_every_fused_class_of_this_release():
    assert SURROGATES[7][0] is Rect and SURROGATES[5][0] is SuperSpike
    assert Rect is getattr(surrogate, "Rect", compat.SjGlifRect)
    assert SuperSpike is getattr(surrogate, "SuperSpike", compat.SjGlifSuperSpike)
    for sid, (cls, _) in SURROGATES.items():
        assert getattr(surrogate, cls.__name__, cls) is cls
        assert fused_surrogate(cls(alpha=3.0)) == (sid, 3.0)
    for cls, sid in [(compat.SjGlifRect, 7), (compat.SjGlifSuperSpike, 5)]:
        assert fused_surrogate(cls(alpha=0.5)) == (sid, 0.5)
        assert fused_surrogate(cls(alpha=0.5, spiking=False)) is None


@pytest.mark.parametrize("cls", [compat.SjGlifRect, compat.SjGlifSuperSpike])
def test_fused_formula_equals_sj_glif_surrogate_backward(cls):
    z = torch.linspace(-2, 2, 401, dtype=F64).requires_grad_()
    fn = cls(alpha=2.0)
    fn(z).backward(torch.ones_like(z))
    sid, alpha = fused_surrogate(fn)
    torch.testing.assert_close(surrogate_grad(z.detach(), sid, alpha), z.grad, rtol=1e-15, atol=0)


# ---------------------------------------------------------------------- the node


def _glif_twin_check(node: GLIFNode, x: torch.Tensor, out: torch.Tensor, grad_out: torch.Tensor):
    """Spikes and the gradients of ``x`` and every parameter of ``node`` (after
    ``out.backward(grad_out)`` on ``node``'s forward of ``x``) equal the float64 reference."""
    params = {
        k: p.detach().to(F64).requires_grad_() for k, p in node.params().items() if p is not None
    }
    xr = x.detach().to(F64).requires_grad_()
    zero = torch.zeros(x.shape[1:], dtype=F64)
    spikes, *_ = glif_reference(
        xr,
        zero,
        zero,
        params.get("alpha"),
        params.get("beta"),
        params.get("gamma"),
        params["tau"],
        params["v_threshold"],
        params["linear_decay"],
        params["v_subreset"],
        params["conduct"],
        surrogate_function=node.surrogate_function,
        channel_dim=node.channel_dim,
        gate_mode=node.gate_mode,
        detach_reset=node.detach_reset,
    )
    assert torch.equal(out.detach().to(F64), spikes)
    spikes.backward(grad_out.to(F64))
    torch.testing.assert_close(x.grad.to(F64), xr.grad, rtol=1e-9, atol=1e-12)
    for k, p in params.items():
        torch.testing.assert_close(getattr(node, k).grad.to(F64), p.grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "cls", [Rect, SuperSpike, compat.SjGlifRect], ids=["Rect", "SuperSpike", "SjGlifRect"]
)
@pytest.mark.parametrize("step_mode", ["m", "s"])
def test_node_with_rect_or_super_spike_matches_reference(step_mode, cls):
    torch.manual_seed(1)
    T = 5
    node = GLIFNode(T, 4, step_mode=step_mode, surrogate_function=cls(), init_v_threshold=0.3)
    node.double()
    x = (torch.rand(T, 3, 4, dtype=F64) * 1.5).requires_grad_()
    out = node(x) if step_mode == "m" else torch.stack([node(x[t]) for t in range(T)])
    assert 0 < out.sum() < out.numel()
    g = torch.randn_like(out)
    out.backward(g)
    _glif_twin_check(node, x, out, g)


def _builders() -> dict:
    from spikingjelly.activation_based.model import parametric_lif_net, sew_resnet, spiking_resnet

    kw = dict(spiking_neuron=GLIFNode, T=2, surrogate_function=Rect(), init_v_threshold=0.2)
    return {
        "spiking_resnet18": lambda: spiking_resnet.spiking_resnet18(num_classes=10, **kw),
        "sew_resnet18": lambda: sew_resnet.sew_resnet18(cnf="ADD", num_classes=10, **kw),
        "CIFAR10Net": lambda: parametric_lif_net.CIFAR10Net(channels=8, **kw),
    }


@pytest.mark.slow
@pytest.mark.parametrize("step_mode", ["m", "s"])
@pytest.mark.parametrize("name", ["spiking_resnet18", "sew_resnet18", "CIFAR10Net"])
def test_builder_model_trains_with_glif_like_the_float64_reference(name, step_mode):
    """A model from SpikingJelly's own builder (0.0.0.0.14's or 2.0's), two SGD steps in
    float64: every GLIF node's spikes and the gradients of its input and of each of
    its parameters equal the float64 reference run on the same input."""
    torch.manual_seed(0)
    T, B = 2, 2
    model = _builders()[name]()
    nodes = [m for m in model.modules() if isinstance(m, GLIFNode)]
    assert len(nodes) >= 3 and all(type(n.surrogate_function) is Rect for n in nodes)
    functional.set_step_mode(model, step_mode)
    x = torch.rand(T, B, 3, 32, 32, dtype=F64)
    sj_glif.materialize(model, (x if step_mode == "m" else x[0]).float())
    model.double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    record: dict = {}

    def pre_hook(node, args):
        xin = args[0].clone()  # this node's own input: its gradient is the node's alone
        xin.retain_grad()
        record[node]["x"].append(xin)
        return (xin,)

    def post_hook(node, args, out):
        out.retain_grad()
        record[node]["s"].append(out)

    for n in nodes:
        n.register_forward_pre_hook(pre_hook)
        n.register_forward_hook(post_hook)
    labels = torch.tensor([3, 7])
    for _ in range(2):
        record.update({n: {"x": [], "s": []} for n in nodes})
        out = model(x) if step_mode == "m" else torch.stack([model(x[t]) for t in range(T)])
        optimizer.zero_grad()
        F.cross_entropy(out.mean(0), labels).backward()
        fired = 0
        for n in nodes:
            xs, ss = record[n]["x"], record[n]["s"]
            assert len(xs) == (1 if step_mode == "m" else T)
            if step_mode == "m":
                xin, s = xs[0], ss[0]
            else:
                xin, s = torch.stack(xs), torch.stack(ss)
                xin.grad, s.grad = (
                    torch.stack([t.grad for t in xs]),
                    torch.stack([t.grad for t in ss]),
                )
            _glif_twin_check(n, xin, s, s.grad)
            fired += int(s.sum())
        assert fired > 0
        before = nodes[0].tau.detach().clone()
        optimizer.step()
        assert not torch.equal(nodes[0].tau, before)  # GLIF's parameters train
        functional.reset_net(model)


@pytest.mark.slow
def test_spiking_vgg_builder_materializes_glif():
    from spikingjelly.activation_based.model import spiking_vgg

    model = spiking_vgg.spiking_vgg11_bn(
        spiking_neuron=GLIFNode, num_classes=10, surrogate_function=Rect()
    )
    functional.set_step_mode(model, "m")
    sj_glif.materialize(model, torch.rand(2, 1, 3, 32, 32))
    nodes = [m for m in model.modules() if isinstance(m, GLIFNode)]
    assert [n.channels for n in nodes] == [64, 128, 256, 256, 512, 512, 512, 512, 4096, 4096]
    assert all(n.T == 2 for n in nodes)


def test_state_reset_detach_and_step_modes_through_functional():
    torch.manual_seed(2)
    T = 4
    net = nn.Sequential(layer.Linear(5, 3), GLIFNode(T=T, init_v_threshold=0.2))
    x = torch.rand(T, 2, 5)
    functional.set_step_mode(net, "m")
    whole = net(x)
    assert net[1].step == T
    functional.reset_net(net)
    assert (net[1].v, net[1].spike, net[1].step) == (0.0, 0.0, 0)
    functional.set_step_mode(net, "s")
    steps = [net(x[t]) for t in range(2)]
    functional.detach_net(net)
    assert not net[1].v.requires_grad and net[1].step == 2
    steps += [net(x[t]) for t in range(2, T)]
    assert torch.equal(torch.stack(steps), whole)
    assert 0 < whole.sum() < whole.numel()


@pytest.mark.parametrize("step_mode", ["m", "s"])
def test_store_v_seq_in_both_step_modes(step_mode):
    T = 3
    node = GLIFNode(T=T, step_mode=step_mode, store_v_seq=True)
    x = torch.rand(T, 2, 4)
    for chunk in [x] if step_mode == "m" else list(x):
        node(chunk)
    assert node.v_seq.shape == (T, 2, 4)
    assert torch.equal(node.v_seq[-1], node.v)
    assert list(node._memories) == ["v", "spike", "step"]  # v_seq is no memory
    functional.reset_net(node)
    assert node.v_seq is None


# ---------------------------------------------------------------------- backends


def _net() -> nn.Sequential:
    return nn.Sequential(
        layer.Linear(6, 4),
        GLIFNode(T=3, step_mode="m"),
        layer.Linear(4, 2),
        GLIFNode(step_mode="m"),
    )


@legacy_only
def test_glif_lists_its_backends_and_cupy():
    node = GLIFNode()
    assert node.supported_backends == (*BACKENDS, "cupy")
    for backend in BACKENDS:
        node.backend = backend
        assert node.backend == backend
    with pytest.raises(ValueError, match=r"backend must be one of .*got 'lava'"):
        node.backend = "lava"
    assert node.backend == BACKENDS[-1]


@legacy_only
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_set_backend_selects_the_implementation(backend, monkeypatch):
    net = _net()
    functional.set_backend(net, backend)
    assert [m.backend for m in net if isinstance(m, GLIFNode)] == [backend, backend]
    x = torch.rand(3, 2, 6)
    if backend == "triton" and not torch.cuda.is_available():
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
        with pytest.raises(Exception, match="TRITON_INTERPRET"):  # Triton really was chosen
            net(x)
        functional.reset_net(net)
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    out = net(x)
    functional.reset_net(net)
    functional.set_backend(net, "torch")
    assert torch.equal(net(x), out)


@legacy_only
def test_set_backend_cupy_keeps_glif_on_auto_and_says_so_once(monkeypatch):
    monkeypatch.setattr(compat, "_CUPY_NOTE_SHOWN", False)
    net = _net()
    functional.set_backend(net, "torch")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        functional.set_backend(net, "cupy")
        functional.set_backend(_net(), "cupy")
        built = GLIFNode(backend="cupy")  # builders pass backend="cupy" to every neuron
    notes = [w for w in caught if "cupy" in str(w.message)]
    assert len(notes) == 1 and "backend='auto'" in str(notes[0].message)
    assert notes[0].filename == __file__  # points at the set_backend call
    assert [m.backend for m in net if isinstance(m, GLIFNode)] == ["auto", "auto"]
    assert built.backend == "auto"


@legacy_only
def test_set_backend_to_an_unknown_backend_leaves_glif_as_it_was():
    net = _net()
    functional.set_backend(net, "torch")
    functional.set_backend(net, "lava")  # SpikingJelly logs that GLIF does not support it
    assert [m.backend for m in net if isinstance(m, GLIFNode)] == ["torch", "torch"]


@sj2_only
def test_spikingjelly_2_has_no_set_backend_and_glif_no_cupy():
    assert not hasattr(functional, "set_backend")
    with pytest.raises(ValueError, match="backend must be one of"):
        GLIFNode(backend="cupy")


# ---------------------------------------------------------------------- the rest of the API


def test_swap_neurons_replaces_lif_nodes_of_this_release():
    from spikingjelly.activation_based import neuron

    net = nn.Sequential(layer.Linear(6, 4), neuron.LIFNode(step_mode="m"), layer.Linear(4, 2))
    sj_glif.swap_neurons(net, torch.rand(3, 2, 6), surrogate_function=Rect())
    assert isinstance(net[1], GLIFNode) and net[1].channels == 4 and net[1].T == 3
    out = net(torch.rand(3, 2, 6))
    functional.reset_net(net)
    assert net[1].step == 0 and out.shape == (3, 2, 2)


def test_checkpoint_round_trip():
    a, b = _net(), _net()
    sj_glif.materialize(a, torch.rand(3, 1, 6))
    b.load_state_dict(a.state_dict())
    x = torch.rand(3, 2, 6)
    assert torch.equal(a(x), b(x))
