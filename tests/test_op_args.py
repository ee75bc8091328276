"""The raw ops (``torch.ops.sj_glif.glif_fwd`` / ``glif_bwd``, public through
``torch.ops``) check every shape they index by, in every implementation: a ValueError
that says what was expected and what came, never an out-of-bounds read or write (the C++
extension corrupted the heap on a channel count that did not match the input), a silent
broadcast (the PyTorch path took a ``grad_spike`` of one batch row for all of them) or a
bare assert (the Triton launchers)."""

from __future__ import annotations

import re

import pytest
import torch

from sj_glif import cpu, ops

T, B, C, H, W = 4, 2, 3, 2, 5
X_SHAPE = (T, B, C, H, W)
STEP = X_SHAPE[1:]
FLAGS = (0, 0, 4.0, False)  # gate_mode, surrogate_id, sg_alpha, detach_reset


def _impls() -> list[str]:
    impls = ["torch"] + (["cpp"] if cpu.available() else [])
    return impls + (["triton"] if ops._triton_available() and ops._interpreter_on() else [])


def _params(c: int | None = C, rows: int = T) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    shape = () if c is None else (c,)
    raw = [torch.randn(shape, generator=g) for _ in range(7)]
    return [*raw, torch.randn((rows,) if c is None else (rows, c), generator=g)]


def _x() -> torch.Tensor:
    return torch.randn(X_SHAPE, generator=torch.Generator().manual_seed(5))


def _fwd(impl, x=None, v0=None, s0=None, params=None, t0=0, channel_dim=1):
    x = _x() if x is None else x
    params = _params() if params is None else params
    return torch.ops.sj_glif.glif_fwd(
        x, v0, s0, *params, t0, channel_dim, *FLAGS, False, impl
    )  # fmt: skip


def _bwd(impl, grad_spike=None, grad_v_last=None, grad_s_last=None, grad_u_seq=None,
         u_seq=None, v0=None):  # fmt: skip
    x = _x()
    seeded = torch.Generator().manual_seed(7)
    gs = torch.randn(X_SHAPE, generator=seeded) if grad_spike is None else grad_spike
    u = x.new_empty(0) if u_seq is None else u_seq
    return torch.ops.sj_glif.glif_bwd(
        gs, grad_v_last, grad_s_last, grad_u_seq, x, v0, None, u, *_params(), 0, 1, *FLAGS,
        impl,
    )  # fmt: skip


def _with(i: int, value: torch.Tensor) -> list[torch.Tensor]:
    p = _params()
    p[i] = value
    return p


# (name, keyword arguments of _fwd, words the message must contain)
FWD_CASES = [
    ("channels differ from the input's", dict(params=_params(C + 1)), [str(C + 1), str(C)]),
    ("channels at another dim", dict(channel_dim=0), ["channel", str(C), str(B)]),
    ("one parameter of another length", dict(params=_with(3, torch.zeros(C + 2))), ["5"]),
    ("conduct with too few rows", dict(params=_params(rows=T - 1)), ["conduct", "3"]),
    ("t0 past the conduct rows", dict(t0=2), ["conduct", "2..5"]),
    ("negative t0", dict(t0=-1), ["conduct", "-1..2"]),
    ("conduct of other channels", dict(params=_with(7, torch.zeros(T, C + 1))), ["conduct"]),
    ("v0 of another step shape", dict(v0=torch.zeros(B, C, H, W + 1)), ["v0", "6"]),
    ("s0 of a channel's shape", dict(s0=torch.zeros(C)), ["s0", str(W)]),
    ("channel_dim out of range", dict(channel_dim=4), ["channel_dim", "4"]),
    ("channel_dim below range", dict(channel_dim=-5), ["channel_dim", "-5"]),
    ("integer input", dict(x=torch.ones(X_SHAPE, dtype=torch.int64)), ["floating"]),
    ("bool input", dict(x=torch.ones(X_SHAPE, dtype=torch.bool)), ["floating"]),
    ("complex input", dict(x=torch.ones(X_SHAPE, dtype=torch.complex64)), ["floating"]),
]


@pytest.mark.parametrize("impl", _impls())
@pytest.mark.parametrize("name,kw,words", FWD_CASES, ids=[c[0] for c in FWD_CASES])
def test_forward_op_rejects_bad_shapes(impl, name, kw, words):
    with pytest.raises(ValueError) as info:
        _fwd(impl, **kw)
    msg = str(info.value)
    for w in words:
        assert w in msg, (name, msg)


BWD_CASES = [
    ("grad_spike of one batch row", dict(grad_spike=torch.zeros(T, 1, C, H, W)), "grad_spike"),
    ("grad_spike of fewer steps", dict(grad_spike=torch.zeros(T - 1, *STEP)), "grad_spike"),
    ("grad_v_last of a channel", dict(grad_v_last=torch.zeros(C)), "grad_v_last"),
    ("grad_s_last wider", dict(grad_s_last=torch.zeros(B, C, H, W + 1)), "grad_s_last"),
    ("grad_u_seq of fewer steps", dict(grad_u_seq=torch.zeros(T - 1, *STEP)), "grad_u_seq"),
    ("u_seq of fewer steps", dict(u_seq=torch.zeros(T - 1, *STEP)), "u_seq"),
    ("v0 of another shape", dict(v0=torch.zeros(B, C)), "v0"),
]


@pytest.mark.parametrize("impl", _impls())
@pytest.mark.parametrize("name,kw,word", BWD_CASES, ids=[c[0] for c in BWD_CASES])
def test_backward_op_rejects_bad_shapes(impl, name, kw, word):
    with pytest.raises(ValueError, match=re.escape(word)) as info:
        _bwd(impl, **kw)
    # the message names the shape it expected
    assert re.search(r"\(?\[?" + r",? ?".join(str(s) for s in STEP[:2]), str(info.value))


@pytest.mark.parametrize("impl", _impls())
def test_good_calls_still_run_and_agree(impl):
    """The checks reject nothing valid: negative channel_dim, layer-wise parameters, a
    stored membrane stream and every incoming gradient, equal across implementations."""
    x = _x()
    ref = _fwd("torch", channel_dim=1)
    out = _fwd(impl, channel_dim=-3)  # the same axis, counted from the end
    torch.testing.assert_close(out[0], ref[0])
    torch.testing.assert_close(out[1], ref[1])
    lw = _params(None)
    out = _fwd(impl, x=x, params=lw, channel_dim=0)
    ref = _fwd("torch", x=x, params=lw, channel_dim=0)
    torch.testing.assert_close(out[1], ref[1])
    u = _fwd("torch")[1]  # a step-shaped tensor, as gradients of v_last / s_last
    u_seq = torch.ops.sj_glif.glif_fwd(x, None, None, *_params(), 0, 1, *FLAGS, True, "torch")[3]
    full = dict(grad_v_last=u, grad_s_last=u * 0.5, grad_u_seq=torch.ones(X_SHAPE) * 0.1)
    got = _bwd(impl, u_seq=u_seq, **full)
    want = _bwd("torch", **full)
    for g, w in zip(got, want, strict=True):
        if w.numel():
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not cpu.available(), reason="the C++ CPU implementation is unavailable")
def test_extension_op_checks_its_own_arguments():
    """``torch.ops.sj_glif_cpu`` itself (below the op boundary) refuses a mismatched
    channel count and a state of another shape, before reading or writing."""
    lib = cpu.load()
    x = _x()
    with pytest.raises(ValueError, match="4 channels"):
        lib.fwd(x, None, None, *_params(C + 1), 0, 1, 0, False)
    with pytest.raises(ValueError, match="v0 must have one step's shape"):
        lib.fwd(x, torch.zeros(3), None, *_params(), 0, 1, 0, False)
    with pytest.raises(ValueError, match="gate_mode"):
        lib.fwd(x, None, None, *_params(), 0, 1, 5, False)
    with pytest.raises(ValueError, match="grad_spike"):
        lib.bwd(x[:1], None, None, None, x, None, None, x.new_empty(0), *_params(), 0, 1, 0, 0,
                4.0, False)  # fmt: skip


@pytest.mark.parametrize("impl", _impls())
def test_input_without_elements_checks_its_state(impl):
    """A batch of zero rows runs no kernel but still refuses a state or gradient of
    another shape (it would come back, or be copied, as v_last / dv0)."""
    x = torch.zeros(T, 0, C)
    p = _params()
    with pytest.raises(ValueError, match="v0 must have one step's shape"):
        torch.ops.sj_glif.glif_fwd(x, torch.zeros(C), None, *p, 0, 1, *FLAGS, False, impl)
    with pytest.raises(ValueError, match="grad_v_last must have one step's shape"):
        torch.ops.sj_glif.glif_bwd(
            None, torch.zeros(C), None, None, x, torch.zeros(0, C), None, x.new_empty(0), *p,
            0, 1, *FLAGS, impl,
        )  # fmt: skip
    out = torch.ops.sj_glif.glif_fwd(x, torch.zeros(0, C), None, *p, 0, 1, *FLAGS, False, impl)
    assert out[0].shape == x.shape and out[1].shape == (0, C)
