"""The Triton launchers ``glif_fwd``/``glif_bwd`` against the autograd reference.

Without CUDA the kernels run under Triton's interpreter on CPU tensors (see
``conftest.py``), so shapes are tiny. On a CUDA machine every test here runs the compiled
kernels on the GPU instead (``kernels_on_the_gpu``): the cases stay on the CPU, the
launchers' tensors go to the GPU with their strides, and the results come back. Every
comparison covers all outputs and all gradients from one scalar loss over spikes,
membranes, the final membrane and the final spike. Buffers the launchers allocate are
poisoned with NaN, so an element a kernel forgets to write shows up as a mismatch.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import pytest
import sj_glif.kernels.glif as glif
import torch
from spikingjelly.activation_based import surrogate

from sj_glif.reference import channel_view, compute_dtype, glif_reference
from sj_glif.surrogates import fused_surrogate

GATE_IDS = {"soft": 0, "hard": 1, "coarse": 2}
PARAM_NAMES = ("alpha", "beta", "gamma", "tau", "v_threshold", "linear_decay", "v_subreset")
GRAD_NAMES = ("x", "v0", "s0", *PARAM_NAMES, "conduct")
SURROGATES = [
    surrogate.Sigmoid(),
    surrogate.ATan(),
    surrogate.PiecewiseQuadratic(),
    surrogate.PiecewiseExp(),
    surrogate.SoftSign(),
    surrogate.SuperSpike(),
    surrogate.Erf(),
    surrogate.Rect(alpha=1.0),
]
F64_TOL = {"atol": 1e-10, "rtol": 1e-10}


@pytest.fixture(autouse=True)
def nan_poisoned_buffers(monkeypatch):
    """Every buffer the launchers allocate starts as NaN."""

    def empty_nan(*args, **kwargs):
        t = torch.empty(*args, **kwargs)
        return t.fill_(math.nan) if t.is_floating_point() else t

    monkeypatch.setattr(glif, "_empty", empty_nan)
    monkeypatch.setattr(
        glif, "_empty_as", lambda t: empty_nan(t.shape, dtype=t.dtype, device=t.device)
    )


# Where the launchers run in this file: the GPU when there is one. SJ_GLIF_TEST_KERNEL_DEVICE
# =cpu routes them through the same moving wrapper on the CPU (how the wrapper is tested
# without a GPU).
_KERNEL_DEVICE = os.environ.get("SJ_GLIF_TEST_KERNEL_DEVICE") or (
    "cuda" if torch.cuda.is_available() else ""
)
_LAUNCHERS = {"glif_fwd": glif.glif_fwd, "glif_bwd": glif.glif_bwd}


def _to_device(t, device: torch.device):
    """``t`` on ``device`` with its own strides, offset and storage (a stride-0 expanded or
    permuted view stays one), as a fresh copy: ``Tensor.to`` would make it dense."""
    if not isinstance(t, torch.Tensor):
        return t
    storage = t.untyped_storage()
    storage = storage.cuda() if device.type == "cuda" else storage.clone()
    moved = torch.empty(0, dtype=t.dtype, device=device)
    return moved.set_(storage, t.storage_offset(), t.shape, t.stride())


def _moving(launcher, device: torch.device):
    def run(*args, **kwargs):
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        if not all(t.device.type == "cpu" for t in tensors):
            return launcher(*args, **kwargs)  # a test that placed its own tensors
        out = launcher(
            *(_to_device(a, device) for a in args),
            **{k: _to_device(v, device) for k, v in kwargs.items()},
        )
        return type(out)(o.cpu() if isinstance(o, torch.Tensor) else o for o in out)

    return run


@pytest.fixture(autouse=True)
def kernels_on_the_gpu(monkeypatch):
    """On a CUDA machine, the launchers (and the op's Triton branch, which calls them) take
    the tests' CPU tensors to the GPU and hand the results back on the CPU."""
    if not _KERNEL_DEVICE:
        return
    device = torch.device(_KERNEL_DEVICE)
    for name, launcher in _LAUNCHERS.items():
        monkeypatch.setattr(glif, name, _moving(launcher, device))
    from sj_glif import ops

    # CPU tensors with backend="triton" reach the kernels (the interpreter's route)
    monkeypatch.setattr(ops, "_interpreter_on", lambda: True)


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of 8 elements (backward: two "warps" of 4): many programs along every axis, masks,
    per-warp and per-program partial sums exercised."""
    monkeypatch.setattr(glif, "_WARP_SIZE", 1)
    monkeypatch.setattr(glif, "_CONFIG", dict.fromkeys(glif._CONFIG, (4, 2)))
    monkeypatch.setattr(glif, "_MIN_POSITIONS", 2)
    monkeypatch.setattr(glif, "_FINISH_ROWS", 2)
    monkeypatch.setattr(glif, "_FINISH_C", 2)


@dataclass
class Case:
    x: torch.Tensor
    v0: torch.Tensor
    s0: torch.Tensor
    params: list[torch.Tensor]
    conduct: torch.Tensor
    t0: int = 0
    channel_dim: int = 1
    gate: str = "soft"
    weights: dict[str, torch.Tensor] = field(default_factory=dict)

    def to(self, device: torch.device) -> Case:
        return Case(
            self.x.to(device),
            self.v0.to(device),
            self.s0.to(device),
            [p.to(device) for p in self.params],
            self.conduct.to(device),
            self.t0,
            self.channel_dim,
            self.gate,
            {k: v.to(device) for k, v in self.weights.items()},
        )

    def cast(self, dtype: torch.dtype) -> Case:
        """The same case with input ``x`` in ``dtype`` (state and weights in its compute dtype)."""
        cdt = compute_dtype(dtype)
        w = {k: v.to(dtype if k == "spike" else cdt) for k, v in self.weights.items()}
        return Case(
            self.x.to(dtype),
            self.v0.to(cdt),
            self.s0.to(cdt),
            [p.float() for p in self.params],
            self.conduct.float(),
            self.t0,
            self.channel_dim,
            self.gate,
            w,
        )


def make_case(
    step: tuple[int, ...],
    channel_dim: int,
    T: int,
    *,
    gate: str = "soft",
    layerwise: bool = False,
    t0: int = 0,
    extra_rows: int = 0,
    seed: int = 0,
) -> Case:
    """A float64 case whose raw parameters and inputs make neurons spike and reset."""
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64

    def randn(*shape, mean=0.0, std=1.0):
        return torch.randn(shape, generator=g, dtype=f64) * std + mean

    C = step[channel_dim]
    pshape = () if layerwise else (C,)
    params = [
        randn(*pshape),  # alpha
        randn(*pshape),  # beta
        randn(*pshape),  # gamma
        randn(*pshape, mean=0.5),  # tau
        -torch.rand(pshape, generator=g, dtype=f64),  # v_threshold: theta in (0.27, 0.5)
        randn(*pshape, mean=-2.5, std=0.5),  # linear_decay
        randn(*pshape, mean=-0.5),  # v_subreset
    ]
    rows = t0 + T + extra_rows
    conduct = randn(rows) if layerwise else randn(rows, C)
    x = randn(T, *step, mean=0.8)
    v0 = randn(*step, mean=0.2, std=0.3)
    s0 = (torch.rand(step, generator=g) > 0.5).to(f64)
    weights = {
        "spike": randn(T, *step),
        "u": randn(T, *step),
        "v_last": randn(*step),
        "s_last": randn(*step),
    }
    return Case(x, v0, s0, params, conduct, t0, channel_dim, gate, weights)


def run_reference(case: Case, sg, detach_reset: bool = False, keep=None):
    """Reference outputs and the gradients of the scalar loss w.r.t. every input."""
    leaves = [case.x, case.v0, case.s0, *case.params, case.conduct]
    leaves = [t.detach().clone().requires_grad_() for t in leaves]
    spike, u_seq, v_last, s_last = glif_reference(
        *leaves,
        surrogate_function=sg,
        t0=case.t0,
        channel_dim=case.channel_dim,
        gate_mode=case.gate,
        detach_reset=detach_reset,
    )
    w = case.weights
    loss = (
        (spike * w["spike"]).sum()
        + (u_seq * w["u"]).sum()
        + (v_last * w["v_last"]).sum()
        + (s_last * w["s_last"]).sum()
    )
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    grads = [torch.zeros_like(t) if gr is None else gr for t, gr in zip(leaves, grads, strict=True)]
    outs = {"spike": spike.detach(), "u": u_seq.detach(), "v_last": v_last.detach(),
            "s_last": s_last.detach()}  # fmt: skip
    return outs, dict(zip(GRAD_NAMES, grads, strict=True))


def run_kernel(
    case: Case, sg, detach_reset: bool = False, *, grad_spike=None, has_gu=True, recompute=False
):
    """Launcher outputs and gradients for the same loss as :func:`run_reference`; with
    ``recompute`` the backward gets no membrane stream (``u_seq=None``) and recomputes it."""
    sid, sg_alpha = fused_surrogate(sg)
    common = dict(t0=case.t0, channel_dim=case.channel_dim, gate_mode=GATE_IDS[case.gate])
    args = (*case.params, case.conduct)
    spike, v_last, s_last, u_seq = glif.glif_fwd(
        case.x, case.v0, case.s0, *args, store_u=True, **common
    )
    w = case.weights
    grads = glif.glif_bwd(
        w["spike"] if grad_spike is None else grad_spike,
        w["v_last"],
        w["s_last"],
        w["u"] if has_gu else None,
        case.x,
        case.v0,
        case.s0,
        None if recompute else u_seq,
        *args,
        surrogate_id=sid,
        sg_alpha=sg_alpha,
        detach_reset=detach_reset,
        **common,
    )
    outs = {"spike": spike, "u": u_seq, "v_last": v_last, "s_last": s_last}
    return outs, dict(zip(GRAD_NAMES, grads, strict=True))


def assert_close(got: dict, want: dict, **tol):
    for name, ref in want.items():
        out = got[name]
        assert out.shape == ref.shape, (name, out.shape, ref.shape)
        assert out.dtype == ref.dtype, (name, out.dtype, ref.dtype)
        assert not out.isnan().any(), f"{name}: NaN (unwritten element?)"
        torch.testing.assert_close(out, ref, msg=lambda m, n=name: f"{n}: {m}", **tol)


def check(case: Case, sg=None, detach_reset: bool = False, **kw):
    """Kernel vs reference in float64 (the case's own dtype), every output and gradient."""
    sg = sg or surrogate.Sigmoid()
    ref_out, ref_grad = run_reference(case, sg, detach_reset)
    out, grad = run_kernel(case, sg, detach_reset, **kw)
    assert_close(out, ref_out, **F64_TOL)
    assert_close(grad, ref_grad, **F64_TOL)
    return out, grad


def margin_mask(case: Case, margin: float) -> torch.Tensor:
    """Neurons (step positions) whose float64 membrane never comes within ``margin`` of theta.

    Neurons are independent, so zeroing the loss weights of the others removes them from
    every gradient: lower-precision runs can then be compared without spike flips.
    """
    case64 = Case(
        case.x.double(),
        case.v0.double(),
        case.s0.double(),
        [p.double() for p in case.params],
        case.conduct.double(),
        case.t0,
        case.channel_dim,
        case.gate,
    )
    out = torch.no_grad()(glif_reference)(
        *[case64.x, case64.v0, case64.s0, *case64.params, case64.conduct],
        surrogate_function=surrogate.Sigmoid(),
        t0=case.t0,
        channel_dim=case.channel_dim,
        gate_mode=case.gate,
    )
    theta = torch.sigmoid(case64.params[4])
    theta = channel_view(theta, case.x.dim() - 1, case.channel_dim)
    return ((out[1] - theta).abs() > margin).all(0)


def drop_near_threshold(case: Case, margin: float) -> torch.Tensor:
    keep = margin_mask(case, margin)
    for k, w in case.weights.items():
        case.weights[k] = w * keep.to(w.dtype)
    return keep


# --------------------------------------------------------------------------- float64: exactness


@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("gate", ["soft", "hard", "coarse"])
def test_gate_modes(gate, detach_reset):
    case = make_case((2, 5, 3, 2), 1, 3, gate=gate, t0=1, extra_rows=2, seed=1)
    check(case, detach_reset=detach_reset)


@pytest.mark.parametrize("sg", SURROGATES, ids=lambda s: type(s).__name__)
def test_surrogates(sg):
    case = make_case((3, 7), 1, 4, seed=2)
    check(case, sg)


@pytest.mark.parametrize(
    "step, channel_dim, T, gate, layerwise",
    [
        ((2, 5, 3, 2), 1, 3, "soft", False),  # [B, C, H, W], channel-first
        ((2, 4, 7), 2, 3, "hard", False),  # [B, N, C], channel-last
        ((13,), 0, 2, "soft", False),  # [C]
        ((5, 3, 2), 0, 2, "coarse", False),  # channel at 0 of the step
        ((1, 13, 2, 1), 1, 1, "soft", False),  # batch 1, prime C, T = 1
        ((2, 5, 3, 2), 1, 3, "soft", True),  # layer-wise
        ((2, 4, 7), 2, 2, "coarse", True),  # layer-wise, channel-last
    ],
)
@pytest.mark.parametrize("tiles", ["default", "small"])
def test_layouts(step, channel_dim, T, gate, layerwise, tiles, request):
    if tiles == "small":
        request.getfixturevalue("small_tiles")
    case = make_case(step, channel_dim, T, gate=gate, layerwise=layerwise, t0=1, extra_rows=1)
    check(case)


@pytest.mark.parametrize(
    "step, channel_dim",
    [((1, 3, 300), 1), ((40, 20), 1)],
    ids=["channel_first_warps_along_inner", "channel_last_warps_along_outer"],
)
def test_default_tiles_with_all_warp_sub_tiles(step, channel_dim):
    """Default tiles where the data fill several warp sub-tiles of a program: along the
    inner axis (channel-first, inner > one warp's sub-tile) and along the outer axis."""
    case = make_case(step, channel_dim, 2, gate="soft", seed=19)
    check(case, surrogate.PiecewiseExp(), detach_reset=True)


def test_heaviside_fires_at_exactly_threshold():
    """H(0) = 1 (SpikingJelly's >=). Hard gates a = 1, b = 0 and v0 = s0 = 0 make u_0 = x_0
    exactly, and v_threshold raw 0 makes theta = 0.5 exactly."""
    x = torch.tensor([0.5, 0.5 - 2**-30, 0.5 + 2**-30], dtype=torch.float64)[None, :, None]
    C = 3
    case = make_case((C, 1), 0, 1, gate="hard", seed=14)
    case.x = x
    case.v0 = case.s0 = torch.zeros(C, 1, dtype=torch.float64)
    case.params[0] = torch.ones(C, dtype=torch.float64)  # alpha > 0: a = 1, L = 0
    case.params[1] = -torch.ones(C, dtype=torch.float64)  # beta < 0: b = 0, K = 1
    case.params[4] = torch.zeros(C, dtype=torch.float64)  # theta = 0.5
    out, _ = check(case)
    assert out["spike"].flatten().tolist() == [1.0, 0.0, 1.0]
    assert out["u"].flatten().tolist() == x.flatten().tolist()


@pytest.mark.parametrize("tiles", ["default", "small"])
def test_mixed_layerwise_and_channelwise_params(tiles, request):
    """Layer-wise gradients among channel-wise ones are summed over every channel block by
    the finish kernel (with small tiles: several channel sub-blocks and row blocks)."""
    if tiles == "small":
        request.getfixturevalue("small_tiles")
    case = make_case((2, 5, 3), 1, 3, seed=3)
    lw = make_case((2, 5, 3), 1, 3, layerwise=True, seed=4)
    case.params[1], case.params[4] = lw.params[1], lw.params[4]  # beta, v_threshold: []
    case.conduct = lw.conduct  # [T_rows]
    check(case)


def test_t0_uses_later_conduct_rows():
    case = make_case((2, 3, 4), 1, 2, t0=3, extra_rows=4, seed=5)
    _, grad = check(case)
    dk = grad["conduct"]
    assert dk.shape == (9, 3)
    assert (dk[:3] == 0).all() and (dk[5:] == 0).all() and (dk[3:5] != 0).any()


def test_strided_inputs_and_expanded_grads(small_tiles):
    T, B, C, H, W = 3, 2, 5, 3, 4
    base = make_case((B, C, H, W), 1, 2 * T, seed=6)
    case = make_case((B, C, H, W), 1, T, seed=6)
    case.x = base.x[::2]  # time slice: stride_t doubled
    # grad of spike_seq as autograd passes it for `(spike * w).sum()` with w per channel
    w_spike = torch.randn(1, 1, C, 1, 1, dtype=torch.float64).expand(T, B, C, H, W)
    case.weights["spike"] = w_spike
    case.weights["s_last"] = torch.zeros(B, C, H, W, dtype=torch.float64)
    # membrane weights from a permuted buffer ([T, H, W, B, C] memory order: still one view)
    case.weights["u"] = torch.randn(T, H, W, B, C, dtype=torch.float64).permute(0, 3, 4, 1, 2)
    # v0 broadcast over batch and space (stride 0), s0 transposed in H/W (needs the copy)
    case.v0 = torch.randn(1, C, 1, 1, dtype=torch.float64).expand(B, C, H, W)
    case.s0 = (torch.rand(B, C, W, H) > 0.5).double().transpose(-1, -2)
    assert w_spike.stride() == (0, 0, 1, 0, 0)
    check(case, grad_spike=w_spike)


def test_non_mergeable_input_falls_back_to_copy():
    T, B, C, H, W = 2, 2, 3, 4, 3
    case = make_case((B, C, H, W), 1, T, seed=7)
    case.x = case.x.transpose(-1, -2).contiguous().transpose(-1, -2)  # H/W swapped in memory
    with pytest.raises(RuntimeError):
        case.x.view(T, B, C, H * W)
    check(case)


@pytest.mark.parametrize(
    "absent", ["grad_spike", "grad_v_last", "grad_s_last", "grad_u_seq", "all"]
)
def test_absent_gradients_are_zero(absent):
    """Each output gradient may be None (a compile-time zero): same result as a zero tensor
    and as the reference with that loss term dropped."""
    case = make_case((2, 5, 3), 1, 3, seed=8)
    names = {"grad_spike": "spike", "grad_v_last": "v_last", "grad_s_last": "s_last",
             "grad_u_seq": "u"}  # fmt: skip
    gone = set(names) if absent == "all" else {absent}
    for name in gone:
        case.weights[names[name]] = torch.zeros_like(case.weights[names[name]])
    _, ref_grad = run_reference(case, surrogate.Sigmoid())
    spike, v_last, s_last, u_seq = glif.glif_fwd(
        case.x, case.v0, case.s0, *case.params, case.conduct,
        t0=0, channel_dim=1, gate_mode=0, store_u=True,
    )  # fmt: skip
    w = {k: (None if k in gone else case.weights[v]) for k, v in names.items()}
    grads = glif.glif_bwd(
        w["grad_spike"], w["grad_v_last"], w["grad_s_last"], w["grad_u_seq"],
        case.x, case.v0, case.s0, u_seq, *case.params, case.conduct,
        t0=0, channel_dim=1, gate_mode=0, surrogate_id=0, sg_alpha=4.0, detach_reset=False,
    )  # fmt: skip
    assert_close(dict(zip(GRAD_NAMES, grads, strict=True)), ref_grad, **F64_TOL)


@pytest.mark.parametrize("detach_reset", [False, True])
def test_zero_initial_state_flag(detach_reset, small_tiles):
    """``v0``/``s0`` = None (no tensors, a compile-time zero) equals passing zeros, in both
    launchers, and equals the reference from a zero state."""
    case = make_case((2, 5, 3), 1, 3, gate="hard", seed=15)
    case.v0 = torch.zeros_like(case.v0)
    case.s0 = torch.zeros_like(case.s0)
    ref_out, ref_grad = run_reference(case, surrogate.SoftSign(), detach_reset)
    sid, sg_alpha = fused_surrogate(surrogate.SoftSign())
    w = case.weights
    args = (*case.params, case.conduct)
    kw = dict(t0=0, channel_dim=1, gate_mode=1)
    for v0, s0 in ((None, None), (case.v0, None), (None, case.s0)):
        spike, v_last, s_last, u_seq = glif.glif_fwd(case.x, v0, s0, *args, store_u=True, **kw)
        out = {"spike": spike, "u": u_seq, "v_last": v_last, "s_last": s_last}
        assert_close(out, ref_out, **F64_TOL)
        grads = glif.glif_bwd(
            w["spike"], w["v_last"], w["s_last"], w["u"], case.x, v0, s0, u_seq, *args,
            surrogate_id=sid, sg_alpha=sg_alpha, detach_reset=detach_reset, **kw,
        )  # fmt: skip
        got = dict(zip(GRAD_NAMES, grads, strict=True))
        want = dict(ref_grad)
        for name, state in (("v0", v0), ("s0", s0)):
            if state is None:  # a zero state given as None has no gradient: None
                assert got.pop(name) is None
                del want[name]
        assert_close(got, want, **F64_TOL)


def test_parameter_gradients_are_separate_tensors():
    """No parameter gradient is a view of a shared buffer (a custom op's outputs may not
    alias); each is shaped and typed like its parameter, float32 parameters with float64
    input included, and layer-wise ones among channel-wise ones are 0-dim."""
    case = make_case((2, 5, 3), 1, 3, seed=16)
    lw = make_case((2, 5, 3), 1, 3, layerwise=True, seed=16)
    case.params[2], case.params[5] = lw.params[2], lw.params[5].float()  # gamma [], V_L [] f32
    case.params[0] = case.params[0].float()
    ref_out, ref_grad = run_reference(case, surrogate.Sigmoid())
    _, grad = run_kernel(case, surrogate.Sigmoid())
    params = [*case.params, case.conduct]
    for name, p in zip(PARAM_NAMES + ("conduct",), params, strict=True):
        g = grad[name]
        assert g.shape == p.shape and g.dtype == p.dtype, (name, g.shape, g.dtype)
        assert g._base is None, f"{name} is a view"
        torch.testing.assert_close(g, ref_grad[name].to(p.dtype), rtol=1e-6, atol=1e-7)
    storages = {grad[n].untyped_storage().data_ptr() for n in (*PARAM_NAMES, "conduct")}
    assert len(storages) == 8


# --------------------------------------------------------------------------- lower precision


def test_float32():
    case = make_case((2, 6, 5), 1, 4, gate="soft", t0=1, extra_rows=1, seed=9).cast(torch.float32)
    keep = drop_near_threshold(case, 1e-4)
    sg = surrogate.Sigmoid()
    ref_out, ref_grad = run_reference(case, sg)
    out, grad = run_kernel(case, sg)
    for d in (ref_out, out):
        d["spike"], d["u"] = d["spike"] * keep, d["u"] * keep
        d["v_last"], d["s_last"] = d["v_last"] * keep, d["s_last"] * keep
    assert_close(out, ref_out, atol=1e-6, rtol=1e-6)
    assert_close(grad, ref_grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_error_bounded_by_reference(dtype):
    """Kernel error vs the float64 reference <= 2x the reference's own error at that dtype."""
    case = make_case((2, 6, 5), 1, 4, gate="hard", seed=10)
    case.x = case.x.to(dtype).double()  # the same input values at every precision
    keep = drop_near_threshold(case, 1e-3)
    sg = surrogate.ATan()
    case_lp = case.cast(dtype)
    ref64_out, ref64_grad = run_reference(case, sg)
    reflp_out, reflp_grad = run_reference(case_lp, sg)
    out, grad = run_kernel(case_lp, sg)
    for name in ref64_out:
        want = ref64_out[name] * keep
        got, ref_lp = out[name].double() * keep, reflp_out[name].double() * keep
        assert out[name].dtype == reflp_out[name].dtype
        ref_err = (ref_lp - want).abs().max()
        assert (got - want).abs().max() <= 2 * ref_err + 1e-6, name
    for name in ref64_grad:
        assert grad[name].dtype == reflp_grad[name].dtype, name
        want = ref64_grad[name]
        ref_err = (reflp_grad[name].double() - want).abs().max()
        err = (grad[name].double() - want).abs().max()
        assert err <= 2 * ref_err + 1e-5 * (1 + want.abs().max()), (name, err, ref_err)


# --------------------------------------------------------------------------- launcher behaviour


def test_deterministic(small_tiles):
    case = make_case((3, 6, 5), 1, 3, seed=11).cast(torch.float32)
    first = run_kernel(case, surrogate.Sigmoid())
    second = run_kernel(case, surrogate.Sigmoid())
    for a, b in zip(first, second, strict=True):
        for name in a:
            assert torch.equal(a[name], b[name]), name


def test_store_u_false():
    case = make_case((2, 5, 3), 1, 3, seed=12)
    kw = dict(t0=0, channel_dim=1, gate_mode=0)
    args = (case.x, case.v0, case.s0, *case.params, case.conduct)
    spike, v_last, s_last, u_seq = glif.glif_fwd(*args, store_u=True, **kw)
    spike2, v_last2, s_last2, u_empty = glif.glif_fwd(*args, store_u=False, **kw)
    assert u_empty is None  # nothing allocated (the custom op makes it an empty tensor)
    assert torch.equal(spike, spike2) and torch.equal(v_last, v_last2)
    assert torch.equal(s_last, s_last2) and torch.equal(v_last, u_seq[-1])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_s_last_is_written_by_the_forward_in_the_compute_dtype(dtype):
    case = make_case((2, 6, 5), 1, 3, seed=17).cast(dtype)
    kw = dict(t0=0, channel_dim=1, gate_mode=0, store_u=False)
    spike, v_last, s_last, _ = glif.glif_fwd(case.x, None, None, *case.params, case.conduct, **kw)
    assert s_last.dtype == torch.float32 == v_last.dtype and s_last.shape == case.x.shape[1:]
    assert torch.equal(s_last, spike[-1].float()) and spike.dtype == dtype
    assert torch.equal(s_last, (v_last >= torch.sigmoid(case.params[4])[:, None]).float())


@pytest.mark.parametrize("T, step", [(0, (2, 3)), (2, (0, 3)), (2, (2, 3, 0))])
def test_empty_inputs(T, step):
    f32 = torch.float32
    x = torch.randn(T, *step)
    v0, s0 = torch.randn(step), torch.zeros(step)
    params = [torch.zeros(3) for _ in range(7)]
    conduct = torch.zeros(T + 1, 3)
    kw = dict(t0=1, channel_dim=1, gate_mode=0)
    spike, v_last, s_last, u_seq = glif.glif_fwd(x, v0, s0, *params, conduct, store_u=True, **kw)
    assert spike.shape == x.shape and u_seq.shape == x.shape and v_last.shape == step
    assert torch.equal(v_last, v0) and torch.equal(s_last, s0)  # no steps: state unchanged
    gv = torch.randn(step)
    grads = glif.glif_bwd(
        torch.zeros_like(x), gv, None, None, x, v0, s0, u_seq, *params, conduct,
        surrogate_id=0, sg_alpha=4.0, detach_reset=False, **kw,
    )  # fmt: skip
    dx, dv0, ds0, *dparams, dk = grads
    assert dx.shape == x.shape and dv0.dtype == f32 and ds0.shape == step
    assert torch.equal(dv0, gv) and not ds0.any()
    assert all(d.shape == (3,) and not d.any() for d in dparams)
    assert dk.shape == conduct.shape and not dk.any()


def check_large_float32(step, channel_dim, layerwise, device, recompute=False):
    """A bigger float32 case vs the float32 reference; neurons near threshold are dropped."""
    case = make_case(step, channel_dim, 8, layerwise=layerwise, t0=2, extra_rows=1, seed=13)
    case = case.cast(torch.float32)
    keep = drop_near_threshold(case, 1e-4)
    assert keep.float().mean() > 0.99
    case, keep = case.to(device), keep.to(device)
    sg = surrogate.Sigmoid()
    ref_out, ref_grad = run_reference(case, sg)
    out, grad = run_kernel(case, sg, recompute=recompute)
    again = run_kernel(case, sg, recompute=recompute)
    for a, b in zip((out, grad), again, strict=True):
        for name in a:
            assert torch.equal(a[name], b[name]), f"{name}: not deterministic"
    for d in (ref_out, out):
        for k in d:
            d[k] = d[k] * keep
    assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    for name, want in ref_grad.items():
        scale = want.abs().max().item()
        torch.testing.assert_close(
            grad[name], want, atol=1e-5 * (1 + scale), rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}"
        )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(
    "step, channel_dim, layerwise",
    [((16, 32, 16, 16), 1, False), ((8, 196, 96), 2, False), ((16, 32, 8, 8), 1, True)],
)
@pytest.mark.parametrize("recompute", [False, True], ids=["stored_u", "recomputed_u"])
def test_gpu_matches_reference_float32(step, channel_dim, layerwise, recompute):
    check_large_float32(step, channel_dim, layerwise, torch.device("cuda"), recompute)


@pytest.mark.parametrize("gate_mode", ["soft", "coarse"])
def test_node_triton_chunks_single_steps_and_torch_agree(gate_mode):
    """GLIFNode on the Triton path: one call, chunks and single steps give the same
    spikes, state and gradients, and equal the torch path (float64, interpreter)."""
    from spikingjelly.activation_based import functional

    from sj_glif import GLIFNode

    torch.manual_seed(5)
    T, shape = 4, (2, 3, 5)
    x = torch.randn(T, *shape, dtype=torch.float64) * 0.8 + 0.6

    def run(backend, chunks):
        torch.manual_seed(0)
        node = GLIFNode(T=T, channels=3, gate_mode=gate_mode, backend=backend,
                        surrogate_function=surrogate.ATan()).to(torch.float64)  # fmt: skip
        xr = x.clone().requires_grad_()
        outs, t = [], 0
        for n in chunks:
            node.step_mode = "s" if n == 0 else "m"
            outs.append(node(xr[t]).unsqueeze(0) if n == 0 else node(xr[t : t + n]))
            t += max(n, 1)
        out = torch.cat(outs)
        (out.sum() + node.v.pow(2).sum()).backward()
        grads = [xr.grad] + [p.grad for p in node.parameters()]
        state = (node.v.detach().clone(), node.spike.detach().clone(), node.step)
        functional.reset_net(node)
        return out.detach(), state, grads

    ref = run("torch", [T])
    for chunks in ([T], [1, 3], [0, 0, 0, 0], [2, 0, 1]):
        out, state, grads = run("triton", chunks)
        assert torch.equal(out, ref[0]), chunks
        torch.testing.assert_close(state[0], ref[1][0], rtol=1e-12, atol=1e-12)
        assert torch.equal(state[1], ref[1][1]) and state[2] == T
        for g, want in zip(grads, ref[2], strict=True):
            torch.testing.assert_close(g, want, rtol=1e-10, atol=1e-12)


def test_grad_s_last_equals_folding_it_into_the_last_spike_gradient():
    """``grad_s_last`` is the final spike's gradient entering unrounded: in float64 it must
    equal adding it to ``grad_spike[T - 1]``; and with T = 0 it is ``ds0`` itself."""
    case = make_case((2, 5, 3), 1, 3, seed=21)
    sid, sg_alpha = fused_surrogate(surrogate.Erf())
    common = dict(t0=case.t0, channel_dim=1, gate_mode=GATE_IDS[case.gate])
    args = (*case.params, case.conduct)
    _, _, _, u_seq = glif.glif_fwd(case.x, case.v0, case.s0, *args, store_u=True, **common)
    w = torch.randn(case.x.shape[1:], dtype=torch.float64)
    g = torch.randn(case.x.shape, dtype=torch.float64)
    folded = g.clone()
    folded[-1] += w
    kw = dict(surrogate_id=sid, sg_alpha=sg_alpha, detach_reset=False, **common)
    a = glif.glif_bwd(g, None, w, None, case.x, case.v0, case.s0, u_seq, *args, **kw)
    b = glif.glif_bwd(folded, None, None, None, case.x, case.v0, case.s0, u_seq, *args, **kw)
    for name, p, q in zip(GRAD_NAMES, a, b, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12, msg=name)
    empty = case.x[:0]
    out = glif.glif_bwd(g[:0], None, w, None, empty, case.v0, case.s0, u_seq[:0], *args, **kw)
    assert torch.equal(out[2], w)


# --------------------------------------------------------------------------- final state, chunks


def run_kernel_chunked(
    case: Case, sg, detach_reset: bool, chunks, has_gv: bool, has_gs: bool, recompute=False
):
    """The launchers over consecutive chunks of time, state carried forward and the state
    gradients carried backward (truncated BPTT without truncation). The gradients of the
    final ``v_last``/``s_last`` are passed as ``None`` when ``has_gv``/``has_gs`` is False."""
    assert sum(chunks) == case.x.shape[0]
    sid, sg_alpha = fused_surrogate(sg)
    args = (*case.params, case.conduct)
    kw = dict(channel_dim=case.channel_dim, gate_mode=GATE_IDS[case.gate])
    w = case.weights
    bounds, t = [], 0
    for n in chunks:
        bounds.append((t, t + n))
        t += n
    v, s, saved, spikes, us = case.v0, case.s0, [], [], []
    for a, b in bounds:
        spike, v_last, s_last, u_seq = glif.glif_fwd(
            case.x[a:b], v, s, *args, t0=case.t0 + a, store_u=True, **kw
        )
        saved.append((v, s, u_seq))
        spikes.append(spike)
        us.append(u_seq)
        v, s = v_last, s_last
    gv = w["v_last"] if has_gv else None
    gs = w["s_last"] if has_gs else None
    dxs, total = [], None
    for (a, b), (v0, s0, u_seq) in zip(reversed(bounds), reversed(saved), strict=True):
        dx, gv, gs, *dp = glif.glif_bwd(
            w["spike"][a:b], gv, gs, w["u"][a:b], case.x[a:b], v0, s0,
            None if recompute else u_seq, *args,
            t0=case.t0 + a, surrogate_id=sid, sg_alpha=sg_alpha, detach_reset=detach_reset, **kw,
        )  # fmt: skip
        dxs.insert(0, dx)
        total = dp if total is None else [p + q for p, q in zip(total, dp, strict=True)]
    outs = {"spike": torch.cat(spikes), "u": torch.cat(us), "v_last": v, "s_last": s}
    return outs, dict(zip(GRAD_NAMES, [torch.cat(dxs), gv, gs, *total], strict=True))


@pytest.mark.parametrize("recompute", [False, True], ids=["stored_u", "recomputed_u"])
@pytest.mark.parametrize("chunks", [(4,), (1, 3), (2, 1, 1)], ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("has_gv", [False, True], ids=["no_gv_last", "gv_last"])
@pytest.mark.parametrize("has_gs", [False, True], ids=["no_gs_last", "gs_last"])
@pytest.mark.parametrize("detach_reset", [False, True], ids=["attached", "detach_reset"])
def test_final_state_gradients_and_chunks(detach_reset, has_gs, has_gv, chunks, recompute):
    """Every combination of detach_reset x a gradient on the final spike state x a gradient
    on v_last x chunking matches the float64 reference over the whole sequence. The final
    spike's gradient enters through ``grad_s_last`` (not folded into ``grad_spike``)."""
    case = make_case((2, 5, 3), 1, 4, gate="soft", t0=1, extra_rows=1, seed=22)
    if not has_gv:
        case.weights["v_last"] = torch.zeros_like(case.weights["v_last"])
    if not has_gs:
        case.weights["s_last"] = torch.zeros_like(case.weights["s_last"])
    sg = surrogate.Sigmoid()
    ref_out, ref_grad = run_reference(case, sg, detach_reset)
    out, grad = run_kernel_chunked(case, sg, detach_reset, chunks, has_gv, has_gs, recompute)
    assert_close(out, ref_out, **F64_TOL)
    assert_close(grad, ref_grad, **F64_TOL)


# --------------------------------------------------------------------------- host work


class _Recorder:
    """Stands in for a ``@triton.jit`` kernel: counts ``kernel[grid](...)`` launches."""

    def __init__(self, name: str, launches: list[str]):
        self.name, self.launches = name, launches

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launches.append(self.name)


@pytest.mark.parametrize("layerwise", [False, True])
def test_launches_and_host_ops(monkeypatch, layerwise):
    """A training step's forward is one launch and its backward two (kernel + finish), and
    the launchers run no torch computation of their own: only allocations and views (no
    filled zero state, no copies, no host reductions, no clones)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    # the launchers themselves on CPU tensors (nothing launches), with torch's allocators
    for name, launcher in _LAUNCHERS.items():
        monkeypatch.setattr(glif, name, launcher)
    monkeypatch.setattr(glif, "_empty", torch.empty)
    monkeypatch.setattr(
        glif, "_empty_as", lambda t: torch.empty_like(t, memory_format=torch.contiguous_format)
    )
    launches: list[str] = []
    for name in ("_glif_fwd_kernel", "_glif_bwd_kernel", "_glif_finish_kernel"):
        monkeypatch.setattr(glif, name, _Recorder(name, launches))

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.add(str(func.overloadpacket.__name__))
            return func(*args, **(kwargs or {}))

    case = make_case((2, 6, 5), 1, 3, layerwise=layerwise, seed=18).cast(torch.bfloat16)
    args = (*case.params, case.conduct)
    kw = dict(t0=0, channel_dim=1, gate_mode=0)
    u = torch.empty(case.x.shape)
    with Ops() as mode:
        glif.glif_fwd(case.x, None, None, *args, store_u=True, **kw)
        glif.glif_bwd(
            case.weights["spike"], None, None, None, case.x, None, None, u, *args,
            surrogate_id=0, sg_alpha=4.0, detach_reset=False, **kw,
        )  # fmt: skip
    assert launches == ["_glif_fwd_kernel", "_glif_bwd_kernel", "_glif_finish_kernel"]
    assert mode.ops <= {"empty", "empty_like", "view"}, mode.ops


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_op_channel_last_minus_one_matches_torch_path(dtype):
    """``glif_multi_step(channel_dim=-1, backend="triton")`` (the op's Triton branches: one
    forward launch, s_last from the kernel, separate gradients) equals the torch path."""
    from sj_glif import glif_multi_step

    case = make_case((2, 3, 5), 2, 3, gate="hard", seed=20)
    x = case.x.to(dtype)

    def run(backend):
        leaves = [p.clone().requires_grad_() for p in (*case.params, case.conduct)]
        xr = x.clone().requires_grad_()
        names = (*PARAM_NAMES, "conduct")
        out = glif_multi_step(
            xr, channel_dim=-1, gate_mode="hard", backend=backend, detach_reset=True,
            **dict(zip(names, leaves, strict=True)),
        )  # fmt: skip
        loss = (out.spike_seq.double() * case.weights["spike"]).sum()
        loss = loss + (out.v_last * case.weights["v_last"]).sum()
        loss = loss + (out.s_last * case.weights["s_last"]).sum()
        loss.backward()
        return out, [xr.grad, *(p.grad for p in leaves)]

    out_t, grads_t = run("torch")
    out_k, grads_k = run("triton")
    assert torch.equal(out_k.spike_seq, out_t.spike_seq)
    assert out_k.s_last.dtype == out_t.s_last.dtype and torch.equal(out_k.s_last, out_t.s_last)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_k.v_last, out_t.v_last, **tol)
    for name, a, b in zip(("x", *PARAM_NAMES, "conduct"), grads_k, grads_t, strict=True):
        if dtype == torch.bfloat16 and name == "x":
            tol_x = dict(rtol=1e-2, atol=1e-2)  # dx is rounded to bfloat16 by both paths
            torch.testing.assert_close(a.double(), b.double(), **tol_x, msg=name)
        else:
            torch.testing.assert_close(a, b, **tol, msg=name)


# --------------------------------------------------------------------------- recomputed membrane


@pytest.mark.parametrize("T", [1, 4, 6, 9], ids=lambda t: f"T{t}")
@pytest.mark.parametrize(
    "gate, detach_reset, step, channel_dim, tiles",
    [
        ("soft", False, (2, 5, 3, 2), 1, "small"),
        ("hard", True, (2, 4, 7), 2, "small"),
        ("coarse", False, (2, 5, 3, 2), 1, "default"),
    ],
)
def test_recomputed_membrane(gate, detach_reset, step, channel_dim, tiles, T, request):
    """``u_seq=None``: the backward recomputes the membrane (a checkpoint every
    ``_SEGMENT`` steps, replays from it): every gradient equals the float64 reference, for T
    below, at and across segment boundaries."""
    assert glif.BWD_RECOMPUTES_U and glif._SEGMENT == 4
    if tiles == "small":
        request.getfixturevalue("small_tiles")
    case = make_case(step, channel_dim, T, gate=gate, t0=1, extra_rows=1, seed=23)
    sg = surrogate.SuperSpike()
    ref_out, ref_grad = run_reference(case, sg, detach_reset)
    out, grad = run_kernel(case, sg, detach_reset, recompute=True)
    assert_close(out, ref_out, **F64_TOL)
    assert_close(grad, ref_grad, **F64_TOL)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_recomputed_membrane_equals_stored_bitwise(dtype):
    """In low precision the recomputed membrane must round exactly like the forward's (the
    same code computes both): gradients with and without the stored stream are equal. On a
    CUDA machine this runs the compiled kernels (where the compiler could round the two
    differently); here, the interpreter."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    case = make_case((4, 8, 17), 1, 7, seed=24).cast(dtype).to(device)
    sg = surrogate.Sigmoid()
    _, stored = run_kernel(case, sg, has_gu=False)
    _, recomputed = run_kernel(case, sg, has_gu=False, recompute=True)
    for name in stored:
        assert torch.equal(stored[name], recomputed[name]), name


def test_bwd_op_recomputes_an_unstored_membrane():
    """``sj_glif::glif_bwd`` on the Triton branch given the forward's empty ``u_seq``
    placeholder (``store_u=False``) recomputes the membrane: same gradients as with it."""
    from sj_glif import ops  # noqa: F401  (registers the sj_glif op pair)

    case = make_case((2, 5, 3), 1, 6, seed=25)
    params = (*case.params, case.conduct)
    flags = (0, 1, 0, 0, 4.0, False)  # t0, channel_dim, gate_mode, surrogate_id, sg_alpha, detach
    fwd = torch.ops.sj_glif.glif_fwd
    _, _, _, u_seq = fwd(case.x, case.v0, case.s0, *params, *flags, True, "triton")
    _, _, _, empty = fwd(case.x, case.v0, case.s0, *params, *flags, False, "triton")
    assert empty.numel() == 0 and glif.BWD_RECOMPUTES_U
    w = case.weights
    grads = [
        torch.ops.sj_glif.glif_bwd(
            w["spike"],
            w["v_last"],
            w["s_last"],
            None,
            case.x,
            case.v0,
            case.s0,
            u,
            *params,
            *flags,
            "triton",
        )  # fmt: skip
        for u in (u_seq, empty)
    ]
    for name, a, b in zip(GRAD_NAMES, *grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)


# --------------------------------------------------------------------------- the GPU harness


def test_moving_wrapper_keeps_strides_and_copies():
    """What ``kernels_on_the_gpu`` hands the launchers: the same values with the same
    strides and offset (a stride-0 expanded or permuted view stays one), in a storage of
    its own; tuples of results come back with None kept."""
    base = torch.arange(24.0).view(2, 3, 4)
    for t in (base.permute(2, 0, 1), base[:, 1:, ::2], torch.randn(3, 1).expand(3, 5)):
        moved = _to_device(t, torch.device("cpu"))
        assert moved.stride() == t.stride() and moved.storage_offset() == t.storage_offset()
        assert torch.equal(moved, t)
        assert moved.untyped_storage().data_ptr() != t.untyped_storage().data_ptr()
    seen = []
    run = _moving(lambda *a, **k: seen.append((a, k)) or (a[0] + 1, None), torch.device("cpu"))
    out = run(base, None, flag=3, w=base[0])
    assert torch.equal(out[0], base + 1) and out[1] is None
    ((a, k),) = seen
    assert a[1] is None and k["flag"] == 3 and torch.equal(k["w"], base[0])
    assert a[0].untyped_storage().data_ptr() != base.untyped_storage().data_ptr()
