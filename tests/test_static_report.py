"""The essentials of ``bench/static_report.py``: the kernels compiled for sm_90 (no GPU).

A change that adds register spills, a block barrier inside a time loop, or narrower
vector accesses in the main streams fails here, on a CPU-only machine. The kernels are
compiled ahead of time in a subprocess (the test session itself runs Triton's
interpreter); only the essential variants, to stay within about a minute. Skips, saying
why, where compiling for sm_90 is impossible (e.g. no ptxas).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ESSENTIAL = [
    "fwd_f32_cf_soft",
    "fwd_bf16_cf_soft",
    "fwd_f32_cl_soft",
    "bwd_f32_cf_soft_sigmoid",
    "bwd_bf16_cf_soft_sigmoid",
    "bwd_f32_cl_soft_sigmoid",
    "bwd_f32_cf_soft_sigmoid_detach_reset",
    "bwd_f32_cf_soft_sigmoid_recompute",
    "bwd_f32_cl_soft_sigmoid_recompute",
    "finish_f32_cf",
]

# A kernel with a block-wide reduction in its loop, analysed like the real ones: proves the
# barrier count can see a barrier (so that zero below means something).
SELF_CHECK = """
import json, sys
import torch
import triton
import triton.language as tl
sys.path.insert(0, {bench!r})
import static_report as sr


@triton.jit
def _loop_with_barrier(x_ptr, out_ptr, T, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    acc = tl.zeros([BLOCK], tl.float32)
    for t in range(T):
        v = tl.load(x_ptr + t * BLOCK + offs)
        acc += v * tl.sum(v, axis=0)
    tl.store(out_ptr + offs, acc)


x = torch.empty(64 * 256, device="meta")
launch = sr.Launch(_loop_with_barrier, (x, x, 8), dict(BLOCK=256, num_warps=4))
row = sr.analyse("self_check", launch)
print(json.dumps({{"barriers_in_loop": row.barriers_in_loop, "loops": row.loops}}))
"""


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["TRITON_CACHE_DIR"] = env.get("TRITON_CACHE_DIR", str(tmp_path / "triton-cache"))
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, cwd=ROOT, timeout=300
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict[str, dict]:
    tmp = tmp_path_factory.mktemp("static")
    res = _run(
        [str(ROOT / "bench" / "static_report.py"), "--out", str(tmp), "--only", *ESSENTIAL], tmp
    )
    if res.returncode == 2 and "static_report:" in res.stderr:
        pytest.skip(f"cannot compile for sm_90 here: {res.stderr.strip().splitlines()[-1]}")
    assert res.returncode == 0, res.stderr[-4000:]
    rows = json.loads((tmp / "static_report.json").read_text())["rows"]
    assert (tmp / "static_report.md").read_text().count("\n| ") == len(ESSENTIAL) + 1
    return {r["name"]: r for r in rows}


def test_every_essential_variant_compiled(report):
    assert sorted(report) == sorted(ESSENTIAL)


@pytest.mark.parametrize("name", ESSENTIAL)
def test_no_spills(report, name):
    row = report[name]
    assert row["spill_bytes"] == 0 and row["local_bytes"] == 0, row
    assert 0 < row["registers"] <= 255, row


@pytest.mark.parametrize("name", ESSENTIAL)
def test_one_time_loop_and_no_barrier_inside(report, name):
    """The forward and backward walk time in one loop with no block barrier in it (the
    backward's conduct gradient is reduced per warp); the recomputing backward has three
    (forward sweep, reverse loop, the replay inside it); the finish kernel's row loops too."""
    row = report[name]
    assert row["loops"] >= 1, row  # the loops were found: the count below is over real code
    if name.endswith("recompute"):
        assert row["loops"] >= 3, row  # ptx may show the replay loop with two back edges
    elif not name.startswith("finish"):
        assert row["loops"] == 1, row
    assert row["barriers_in_loop"] == 0, row


def test_barrier_count_sees_a_barrier(tmp_path):
    script = tmp_path / "self_check.py"
    script.write_text(SELF_CHECK.format(bench=str(ROOT / "bench")))
    res = _run([str(script)], tmp_path)
    if res.returncode != 0 and ("ptxas" in res.stderr or "ReportUnavailable" in res.stderr):
        pytest.skip(f"cannot compile for sm_90 here: {res.stderr.strip().splitlines()[-1]}")
    assert res.returncode == 0, res.stderr[-4000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["loops"] == 1 and out["barriers_in_loop"] >= 1, out


@pytest.mark.parametrize(
    "name, load_bytes, store_bytes",
    [
        ("fwd_f32_cf_soft", 16, 16),  # x (4 x float32); spikes and membranes 16-byte stores
        ("fwd_f32_cl_soft", 16, 16),
        ("fwd_bf16_cf_soft", 8, 8),  # x, spikes: 4 x bfloat16; membranes 16-byte stores
        ("bwd_f32_cf_soft_sigmoid", 16, 16),  # x, grad_spike, u (4 x float32); dx
        ("bwd_f32_cl_soft_sigmoid", 16, 16),
        ("bwd_bf16_cf_soft_sigmoid", 8, 8),  # x, grad_spike, dx: 4 x bfloat16; u 16 bytes
        ("bwd_f32_cf_soft_sigmoid_recompute", 16, 16),  # + x in the sweep, the checkpoints
        ("bwd_f32_cl_soft_sigmoid_recompute", 16, 16),
    ],
)
def test_main_streams_are_vector_accesses(report, name, load_bytes, store_bytes):
    """In the time loop every global load and store of the element streams is at least
    ``load_bytes``/``store_bytes`` wide; narrower ones are only the per-step ``[BLOCK_C]``
    conduct row (at most twice a loop: the backward loads it in two register layouts rather
    than exchange it between threads) and the per-warp conduct partial (one masked store)."""
    row = report[name]
    loads = {int(w): n for w, n in row["loads_in_loop"].items()}
    stores = {int(w): n for w, n in row["stores_in_loop"].items()}
    n_streams_ld = 3 if name.startswith("bwd") else 1  # x, grad_spike, u / x
    assert sum(n for w, n in loads.items() if w >= load_bytes) >= n_streams_ld, loads
    assert sum(n for w, n in loads.items() if w < load_bytes) <= 2 * row["loops"], loads
    narrow_st = 1 if name.startswith("bwd") else 0
    assert sum(n for w, n in stores.items() if w >= store_bytes) >= 1, stores
    assert sum(n for w, n in stores.items() if w < store_bytes) <= narrow_st, stores
