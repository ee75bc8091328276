"""GLIF inside real training setups: DistributedDataParallel, autocast, torch.compile,
checkpoints (sj-glif, SpikingJelly GatedLIFNode, the official GLIF code)."""

from __future__ import annotations

import io
import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import sj_glif
from sj_glif import (
    GLIFNode,
    convert_official_state_dict,
    convert_to_official_state_dict,
    prepare_ddp,
)

GatedLIFNode = getattr(neuron, "GatedLIFNode", None)  # SpikingJelly >= 2.0 only

T, C, HW = 3, 4, 5


def _model(neuron: nn.Module | None = None) -> nn.Sequential:
    """Conv -> GLIF -> Flatten -> Linear, multi-step, no BatchNorm (so a batch split
    across processes computes exactly what one process computes on the whole batch)."""
    return nn.Sequential(
        layer.Conv2d(2, C, 3, padding=1, step_mode="m"),
        neuron if neuron is not None else GLIFNode(step_mode="m"),
        layer.Flatten(step_mode="m"),
        layer.Linear(C * HW * HW, 3, step_mode="m"),
    )


def _data(batch: int, dtype=torch.float32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = 2 * torch.rand(T, batch, 2, HW, HW, generator=g, dtype=dtype)
    return x, torch.randint(0, 3, (batch,), generator=g)


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# --------------------------------------------------------------------------- DDP


def _train(wrapped: nn.Module, model: nn.Module, x, y, steps: int = 2) -> dict:
    """``steps`` SGD steps on (x, y); the network state is reset after each, on every rank."""
    opt = torch.optim.SGD(wrapped.parameters(), lr=0.5, momentum=0.9)
    grads = []
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(wrapped(x).mean(0), y).backward()
        grads.append(_grads(model))
        opt.step()
        functional.reset_net(model)
    return {"grads": grads, "params": _params(model)}


def _ddp_worker(rank: int, world: int, port: int, tmp: str) -> None:
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        x, y = _data(4, torch.float64)
        result: dict = {}
        model = _model().double()
        try:  # DDP itself refuses lazy parameters (with a generic message)
            DistributedDataParallel(model)
        except RuntimeError as e:
            result["lazy_error"] = str(e)
        # materialize on every rank (example batch size is irrelevant), then load the
        # common initial weights; DDP would also broadcast rank 0's at construction
        prepare_ddp(model, x[:, :1])
        model.load_state_dict(torch.load(os.path.join(tmp, "init.pt")))
        ddp = DistributedDataParallel(model)
        shard = slice(rank * 4 // world, (rank + 1) * 4 // world)
        result.update(_train(ddp, model, x[:, shard], y[shard]))
        result["step_after_reset"] = model[1].step
        torch.save(result, os.path.join(tmp, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_match_one_process_on_the_whole_batch(tmp_path):
    torch.manual_seed(0)
    x, y = _data(4, torch.float64)
    model = _model().double()
    sj_glif.materialize(model, x)
    torch.save(model.state_dict(), tmp_path / "init.pt")
    ctx = mp.start_processes(
        _ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=False,
        start_method="spawn",
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("DDP workers did not finish within 180 s")
    single = _train(model, model, x, y)
    assert single["grads"][0]["1.v_threshold"].abs().sum() > 0, "no spikes: a vacuous test"
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert "uninitialized parameters" in got["lazy_error"]
        assert got["step_after_reset"] == 0
        for step in range(2):
            for name, want in single["grads"][step].items():
                torch.testing.assert_close(
                    got["grads"][step][name], want, rtol=1e-9, atol=1e-12,
                    msg=lambda m, n=name, s=step, r=rank: f"rank {r} step {s} grad {n}: {m}",
                )  # fmt: skip
        for name, want in single["params"].items():
            torch.testing.assert_close(got["params"][name], want, rtol=1e-9, atol=1e-12)


def test_prepare_ddp_names_the_lazy_parameters_and_says_what_to_do():
    model = _model()
    with pytest.raises(RuntimeError, match=r"1\.tau.*sj_glif\.prepare_ddp\(model, example_input\)"):
        prepare_ddp(model)
    assert model[1].has_uninitialized_params()
    assert prepare_ddp(model, _data(2)[0]) is model
    assert not any(isinstance(p, nn.UninitializedParameter) for p in model.parameters())
    assert model[1].step == 0 and model[1].v == 0.0  # materializing left no state behind
    prepare_ddp(model)  # materialized: passes


# --------------------------------------------------------------------------- autocast


@pytest.mark.parametrize("step_mode", ["m", "s"])
def test_cpu_bfloat16_autocast(step_mode):
    torch.manual_seed(0)
    x, y = _data(2)
    model = _model(GLIFNode(T=T, step_mode="m"))
    sj_glif.materialize(model, x)
    functional.set_step_mode(model, step_mode)
    node = model[1]
    seen = []
    node.register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x) if step_mode == "m" else torch.stack([model(x_t) for x_t in x])
        assert node.v.dtype == torch.float32 and node.spike.dtype == torch.float32
    assert set(seen) == {torch.bfloat16}  # the conv ran in bf16 and GLIF took it as is
    assert out.dtype == torch.bfloat16
    F.cross_entropy(out.float().mean(0), y).backward()
    for name, p in model.named_parameters():
        assert p.grad.dtype == torch.float32, name
        assert torch.isfinite(p.grad).all(), name
    assert node.v_threshold.grad.abs().sum() > 0


def test_bfloat16_input_is_computed_in_float32():
    """GLIF on a bf16 input equals GLIF on the same values in float32 (state in fp32)."""
    node = GLIFNode(step_mode="m")
    x = (2 * torch.rand(T, 2, C, 3, 3)).bfloat16()
    s16 = node(x)
    v16, sp16 = node.v, node.spike
    node.reset()
    s32 = node(x.float())
    assert s16.dtype == torch.bfloat16 and v16.dtype == torch.float32
    torch.testing.assert_close(s16.float(), s32, rtol=0, atol=0)
    torch.testing.assert_close(v16, node.v, rtol=0, atol=0)
    torch.testing.assert_close(sp16, node.spike, rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast(dtype):
    torch.manual_seed(0)
    x, y = (t.cuda() for t in _data(2))
    model = sj_glif.materialize(_model().cuda(), x)
    node = model[1]
    with torch.autocast("cuda", dtype=dtype):
        out = model(x)
        assert node.v.dtype == torch.float32 and node.spike.dtype == torch.float32
    assert out.dtype == dtype
    F.cross_entropy(out.float().mean(0), y).backward()
    for name, p in model.named_parameters():
        assert torch.isfinite(p.grad).all(), name


# --------------------------------------------------------------------------- torch.compile


def test_whole_model_compiles_fullgraph_and_matches_eager():
    torch.manual_seed(0)
    eager = _model(GLIFNode(step_mode="m", surrogate_function=surrogate.ATan()))
    sj_glif.materialize(eager, _data(2)[0])
    twin = _model(GLIFNode(step_mode="m", surrogate_function=surrogate.ATan()))
    twin.load_state_dict(eager.state_dict())  # a lazy model takes the shapes from the checkpoint
    sj_glif.materialize(twin, _data(2)[0])  # run once eagerly: the lazy-module hooks go away
    compiled = torch.compile(twin, fullgraph=True)
    for seed in (1, 2):  # the second call reuses the graph: reset restores the same state
        x, y = _data(2, seed=seed)
        with torch._dynamo.config.patch(error_on_recompile=seed == 2):
            got = compiled(x)
        want = eager(x)
        torch.testing.assert_close(got, want)
        assert twin[1].step == T
        F.cross_entropy(got.mean(0), y).backward()
        F.cross_entropy(want.mean(0), y).backward()
        functional.reset_net(twin)  # outside the compiled region
        functional.reset_net(eager)
        for name, g in _grads(eager).items():
            torch.testing.assert_close(_grads(twin)[name], g, msg=lambda m, n=name: f"{n}: {m}")
    assert eager[1].v_threshold.grad.abs().sum() > 0


# --------------------------------------------------------------------------- checkpoints


def _roundtrip(state_dict: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_checkpoint_of_a_materialized_model_loads_into_a_fresh_lazy_model():
    torch.manual_seed(0)
    x = _data(2)[0]
    model = sj_glif.materialize(_model(), x)
    with torch.no_grad():  # move away from the initial values, so loading must matter
        for p in model[1].parameters():
            p.add_(torch.randn_like(p))
    fresh = _model()
    assert fresh[1].has_uninitialized_params()
    fresh.load_state_dict(_roundtrip(model.state_dict()))
    assert fresh[1].T == T and fresh[1].channels == C
    torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)
    torch.testing.assert_close(fresh[1].v, model[1].v, rtol=0, atol=0)


@pytest.mark.needs_sj2("GatedLIFNode")
def test_spikingjelly_gated_lif_checkpoint_loads_into_glifnode():
    torch.manual_seed(0)
    x = _data(2)[0]
    theirs = _model(GatedLIFNode(T=T, inplane=C))
    with torch.no_grad():
        for p in theirs[1].parameters():
            p.add_(0.5 * torch.randn_like(p))
    ours = _model()
    ours.load_state_dict(_roundtrip(theirs.state_dict()))
    want = theirs(x)
    assert theirs[1].v_threshold.numel() == C
    torch.testing.assert_close(ours(x), want, rtol=1e-6, atol=1e-6)


class _OfficialGLIF(nn.Module):
    """The official code's channel-wise GLIF (``LIFSpike_CW``) in its parameter naming:
    raw ``alpha, beta, gamma, tau, Vth, leak, reVth`` ``[C]`` and ``conduct [T, C]``, or
    with the broadcast axes of ``shape`` kept. Spike ``u - Vth > 0``, rectangle surrogate."""

    def __init__(self, steps: int, channels: int, shape=lambda c: (c,), coarse: bool = False):
        super().__init__()
        self.steps, self.coarse = steps, coarse
        g = torch.Generator().manual_seed(3)

        def param(*size, mean=0.0):
            return nn.Parameter(mean + 0.5 * torch.randn(*size, generator=g))

        names = ("gamma",) if coarse else ("alpha", "beta", "gamma")
        for name in names:
            setattr(self, name, param(*shape(channels)))
        for name, mean in (("tau", -1.0), ("Vth", 0.0), ("leak", -2.5), ("reVth", 0.0)):
            setattr(self, name, param(*shape(channels), mean=mean))
        self.conduct = param(steps, *shape(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [T, B, C, H, W]
        def v(p):
            return p.reshape(1, -1, 1, 1).sigmoid()

        u = torch.zeros_like(x[0])
        o = torch.zeros_like(x[0])
        out = []
        for t in range(self.steps):
            k, tau, leak = v(self.conduct[t]), v(self.tau), v(self.leak)
            re, th = v(self.reVth), v(self.Vth)
            if self.coarse:
                u = tau * u * (1 - o) - leak + k * x[t] - re * o
            else:
                a, b, gm = v(self.alpha), v(self.beta), v(self.gamma)
                u = (1 - a * (1 - tau)) * u * (1 - gm * o) - (1 - a) * leak + x[t] * (
                    1 - b * (1 - k)
                ) - (1 - gm) * re * o  # fmt: skip
            z = u - th
            o = (z > 0).to(z) + (z - z.detach()) * (z.abs() < 0.5).to(z)  # rect surrogate
            out.append(o)
        return torch.stack(out)


class _TdBN(nn.Module):
    """Stands in for the official tdBN: its ``Vth`` buffer must not be renamed."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.register_buffer("Vth", torch.tensor(0.5))


@pytest.mark.parametrize(
    "shape",
    [lambda c: (c,), lambda c: (1, c, 1, 1), lambda c: (c, 1, 1)],
    ids=["flat", "1C11", "C11"],
)
@pytest.mark.parametrize("coarse", [False, True], ids=["glif", "glif_f"])
def test_official_checkpoint_converts_and_matches_the_official_forward(shape, coarse):
    official = nn.ModuleDict({"bn": _TdBN(C), "lif": _OfficialGLIF(T, C, shape, coarse)})
    sd = {"module." + k: v for k, v in official.state_dict().items()}  # a DataParallel prefix
    converted = convert_official_state_dict(_roundtrip(sd))
    gate_mode = "coarse" if coarse else "soft"
    ours = nn.ModuleDict(
        {"bn": _TdBN(C), "lif": GLIFNode(step_mode="m", gate_mode=gate_mode,
                                          surrogate_function=surrogate.Rect())}
    )  # fmt: skip
    ours.load_state_dict({k.removeprefix("module."): v for k, v in converted.items()})
    assert list(converted)[:2] == ["module.bn.weight", "module.bn.Vth"]
    assert converted["module.lif.conduct"].shape == (T, C)
    assert converted["module.lif.v_threshold"].shape == (C,)

    x = (2 * torch.rand(T, 2, C, 3, 3)).requires_grad_()
    want = official["lif"](x)
    got = ours["lif"](x)
    assert 0 < want.sum() < want.numel()
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    weight = torch.arange(want.numel()).reshape(want.shape)  # every output its own weight
    (gx_want,) = torch.autograd.grad((want * weight).sum(), x)
    ours["lif"].reset()
    (gx_got,) = torch.autograd.grad((ours["lif"](x) * weight).sum(), x)
    torch.testing.assert_close(gx_got, gx_want, rtol=1e-5, atol=1e-5)

    back = convert_to_official_state_dict(ours.state_dict())
    assert set(back) == set(official.state_dict())
    for key, value in official.state_dict().items():
        if coarse and key == "lif.gamma":
            value = torch.zeros(C)  # GLIF_f's unused gamma comes back as zeros
        torch.testing.assert_close(back[key], value.reshape(back[key].shape))


def test_official_layer_wise_checkpoint_converts():
    names = ("alpha", "beta", "gamma", "tau", "Vth", "leak", "reVth")
    sd = {f"neuron.{n}": torch.tensor(0.1 * i) for i, n in enumerate(names)}
    sd["neuron.conduct"] = torch.zeros(T, 1)
    out = convert_official_state_dict(sd)
    node = GLIFNode(step_mode="m", channel_wise=False)
    nn.ModuleDict({"neuron": node}).load_state_dict(out)
    assert node.T == T and node.v_threshold.item() == pytest.approx(0.4)
    assert convert_to_official_state_dict(out)["neuron.conduct"].shape == (T,)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda sd: sd.pop("lif.reVth"), r"'lif'.*lacks keys \['reVth'\]"),
        (lambda sd: sd.pop("lif.beta"), r"lacks keys \['beta'\]"),
        (lambda sd: sd.update({"lif.v_threshold": sd["lif.Vth"]}), r"unknown keys \['v_thr"),
        (lambda sd: sd.update({"lif.Vth": torch.zeros(2, C)}), r"lif\.Vth has shape \[2, 4\]"),
        (lambda sd: sd.update({"lif.leak": torch.zeros(C + 1)}), r"expected \[4\]"),
        (lambda sd: sd.update({"lif.conduct": torch.zeros(T, C, 2)}), r"lif\.conduct has"),
        (lambda sd: sd.update({"lif.alpha": torch.tensor(0.0)}), r"time_wise"),
        (lambda sd: sd.update({"lif.tau": 1.0}), r"lif\.tau must be a tensor"),
        (
            lambda sd: sd.update({"lif.conduct": sd["lif.conduct"].t()}),
            r"lif\.conduct has shape \[4, 3\]; expected \[T, 4\] .*the time steps first, "
            r"then the C=4 channels of lif\.tau; it looks transposed .*\[T, C\] = \[3, 4\]",
        ),
        (
            lambda sd: sd.update({"lif.conduct": torch.zeros(T, C + 1)}),
            r"lif\.conduct has shape \[3, 5\]; expected \[T, 4\] .*channels of lif\.tau$",
        ),
    ],
    ids=[
        "missing",
        "missing-gate",
        "unknown",
        "rank",
        "channels",
        "conduct",
        "mixed",
        "type",
        "conduct-transposed",
        "conduct-channels",
    ],
)
def test_official_converter_errors_name_the_key(edit, match):
    sd = dict(nn.ModuleDict({"lif": _OfficialGLIF(T, C)}).state_dict())
    edit(sd)
    before = {k: (v, v.clone() if isinstance(v, torch.Tensor) else v) for k, v in sd.items()}
    with pytest.raises((ValueError, TypeError), match=match):
        convert_official_state_dict(sd)
    assert sd.keys() == before.keys()  # the input is untouched
    for key, (obj, value) in before.items():
        assert sd[key] is obj and (not isinstance(obj, torch.Tensor) or obj.equal(value))


def test_official_time_wise_layer_wise_variant_is_refused():
    sd = {f"n.{k}": torch.zeros(()) for k in ("alpha", "beta", "gamma")}
    sd.update({f"n.{k}": torch.zeros(T) for k in ("tau", "Vth", "leak", "reVth", "conduct")})
    with pytest.raises(ValueError, match="time_wise"):
        convert_official_state_dict(sd)


def test_to_official_converter_errors():
    sd = dict(GLIFNode(T=T, channels=C).state_dict())
    del sd["alpha"]
    with pytest.raises(ValueError, match=r"top-level module.*lacks keys \['alpha'\]"):
        convert_to_official_state_dict(sd)
    sd = dict(GLIFNode(T=T, channels=C).state_dict(), extra=torch.zeros(1), Vth=torch.zeros(C))
    with pytest.raises(ValueError, match=r"unknown keys \['Vth', 'extra'\]"):
        convert_to_official_state_dict(sd)
