"""The benchmark library behind ``sj-glif bench``: what it measures and how it reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import sj_glif
from sj_glif import bench, ops

CPU = torch.device("cpu")
SMALL = (2, 2, 3, 4, 4)
ROOT = Path(__file__).resolve().parents[1]


class _Probe(torch.nn.Module):
    """A neuron stand-in that records, at each forward, whether gradients were reset."""

    def __init__(self, log: list, name: str = "probe", first_sleep: float = 0.0):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))
        self.log, self.name, self.first_sleep = log, name, first_sleep

    def forward(self, x):
        if self.first_sleep:
            time.sleep(self.first_sleep)
            self.first_sleep = 0.0
        self.log.append((self.name, self.w.grad is None))
        return x * self.w


def test_op_bytes_counts_what_the_op_must_move():
    n = 10
    assert bench.op_bytes("fwd", n, 4) == n * (4 + 4)  # read x, write spikes
    assert bench.op_bytes("bwd", n, 2) == n * (2 + 2 + 2)  # read grad and x, write dx
    assert bench.op_bytes("fwd", n, 2, stores_u=True) == n * (2 + 2 + 4)  # + write u
    assert bench.op_bytes("bwd", n, 2, stores_u=True) == n * (2 + 2 + 4 + 2)  # + read u
    for u in (False, True):
        both = bench.op_bytes("fwd", n, 4, u) + bench.op_bytes("bwd", n, 4, u)
        assert bench.op_bytes("fwdbwd", n, 4, u) == both


def test_triton_stores_u_is_what_the_op_keeps_for_backward():
    # the bandwidth count (TRITON_STORES_U) must follow the kernels: does the Triton
    # training forward keep a float32 membrane stream the size of the input?
    x = torch.randn(3, 2, 3, 2, requires_grad=True)
    raw = torch.zeros(3, requires_grad=True)
    kept = []

    def pack(t):
        kept.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        sj_glif.glif_multi_step(
            x,
            alpha=raw,
            beta=raw,
            gamma=raw,
            tau=raw,
            v_threshold=raw,
            linear_decay=raw,
            v_subreset=raw,
            conduct=torch.zeros(3, 3, requires_grad=True),
            backend="triton",
        )
    membrane = [t for t in kept if t.shape == x.shape and t is not x and t.dtype == torch.float32]
    assert bool(membrane) == bench.TRITON_STORES_U


def test_saved_bytes_counts_unique_storages():
    x = torch.randn(1000, requires_grad=True)
    nbytes, out = bench.saved_bytes(lambda: (x * x).sum())  # saves x twice: one storage
    assert nbytes == 4000 and out.requires_grad


def test_a_failing_provider_is_reported_not_raised(monkeypatch):
    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    monkeypatch.setattr(bench, "make_provider", lambda *a, **k: (Broken(), None))
    (r,) = bench.measure_case(["glif_torch"], ["fwd"], SMALL, torch.float32, CPU)
    assert r.median_ms is None and "boom" in r.skipped


def test_gradients_are_reset_outside_the_timed_region(monkeypatch):
    log: list = []
    monkeypatch.setattr(bench, "make_provider", lambda *a, **k: (_Probe(log), None))
    rows = bench.measure_case(
        ["glif_torch"], list(bench.MODES), SMALL, torch.float32, CPU, warmup=1, reps=3
    )
    assert all(r.median_ms is not None for r in rows)
    # every forward that starts a timed step (or the forward of a timed backward) sees
    # no gradient left from the step before: nothing accumulates across reps
    timed = log[2:]  # after the first call and the warm-up step
    assert len(timed) >= 3 * 3 and all(reset for _, reset in timed[: 3 * 3])


def test_providers_are_interleaved_and_the_first_call_reported_apart(monkeypatch):
    log: list = []
    probes = {
        "glif_torch": lambda: _Probe(log, "a", first_sleep=0.3),
        "gated_lif": lambda: _Probe(log, "b"),
    }
    monkeypatch.setattr(bench, "make_provider", lambda name, *a, **k: (probes[name](), None))
    rows = bench.measure_case(
        ["glif_torch", "gated_lif"], ["fwd"], SMALL, torch.float32, CPU, warmup=0, reps=3
    )
    order = [name for name, _ in log[2:8]]  # the timed calls, after each one's first call
    assert order == ["a", "b"] * 3
    a = rows[0]
    assert a.first_call_ms >= 300 and a.median_ms < 100


def test_copy_bandwidth_is_measured_once_per_run(monkeypatch):
    sizes = []
    monkeypatch.setattr(bench, "copy_gbps", lambda device, nbytes, **k: sizes.append(nbytes) or 1.0)
    plan = bench.Plan(
        ["glif_torch"],
        ["fwd"],
        ["float32", "bfloat16"],
        [SMALL, (3, *SMALL[1:])],
        [None],
        warmup=0,
        reps=1,
        copy_bytes=2**20,
    )
    results = bench.sweep(plan, CPU, progress=False)
    assert sizes == [2**20]
    assert len(results) == 4 and all(r.copy_gbps == 1.0 for r in results)


def test_copy_gbps_measures_a_copy():
    assert bench.copy_gbps(CPU, 2**20, reps=2) > 0


def test_compile_only_on_the_headline_case_when_asked(monkeypatch):
    seen = {}

    def fake_case(providers, modes, shape, *args, **kwargs):
        seen[shape] = list(providers)
        return []

    monkeypatch.setattr(bench, "measure_case", fake_case)
    monkeypatch.setattr(bench, "copy_gbps", lambda *a, **k: 1.0)
    small, large = SMALL, (2, 4, 3, 4, 4)
    plan = bench.Plan(
        ["glif_torch", "gated_lif_compile"],
        ["fwd"],
        ["float32"],
        [small, large],
        [None],
        compile_headline_only=True,
    )
    bench.sweep(plan, CPU, progress=False)
    assert seen == {small: ["glif_torch"], large: ["glif_torch", "gated_lif_compile"]}


def test_threads_sweep_sets_and_restores_torch_threads():
    before = torch.get_num_threads()
    plan = bench.Plan(
        ["glif_torch"], ["fwd"], ["float32"], [SMALL], [1, 2], warmup=0, reps=1, copy_bytes=2**20
    )
    results = bench.sweep(plan, CPU, progress=False)
    assert [r.threads for r in results] == [1, 2]
    assert torch.get_num_threads() == before


def test_glif_cpp_provider_runs_or_says_why():
    (r,) = bench.measure_case(["glif_cpp"], ["fwdbwd"], SMALL, torch.float32, CPU, warmup=0, reps=1)
    if "cpp" in ops.BACKENDS:
        assert r.skipped is None and r.median_ms > 0
    else:
        assert r.skipped.startswith("ValueError") and "cpp" in r.skipped


def test_ratio_in_words():
    assert bench.ratio_words("GLIF", 1.0, "X", 2.4) == "GLIF is 2.4× faster than X"
    assert bench.ratio_words("GLIF", 1.3, "X", 1.0) == "GLIF is 1.3× slower than X"


def _result(provider: str, ms: float | None, mode: str = "fwdbwd", **kw) -> bench.Result:
    return bench.Result(
        provider,
        mode,
        "float32",
        2,
        8,
        [8, 16, 64, 16, 16],
        16 * 64 * 256,
        label=bench.LABELS[provider],
        median_ms=ms,
        reps=5,
        **kw,
    )


def test_summary_reads_in_words():
    results = [
        _result("glif_triton", None, skipped="the Triton kernels need CUDA"),
        _result("glif_torch", 10.0, frac_of_copy=0.5, gbps=2.0, copy_gbps=4.0),
        _result("gated_lif", 25.0),
        _result("gated_lif_compile", 5.0, first_call_ms=15000.0),
        _result("glif_torch", 1.0, mode="fwd"),
    ]
    env = bench.environment(CPU)
    text = bench.summary(results, env, CPU)
    assert "[T=8, B=16, C=64, H=16, W=16]" in text and "lower is better" in text
    assert "GLIF (PyTorch) is 2.5× faster than GatedLIFNode" in text
    assert "GLIF (PyTorch) is 2× slower than GatedLIFNode + torch.compile" in text
    assert "50% of a 1 GiB copy" in text
    assert "GatedLIFNode + torch.compile 15.0 s" in text  # first call, apart
    assert "skipped GLIF (Triton): the Triton kernels need CUDA" in text
    for internal in bench.PROVIDERS:
        assert internal not in text
    assert len(text.splitlines()) <= 15


def test_markdown_explains_every_column():
    results = [_result("glif_torch", 10.0), _result("glif_triton", None, skipped="no CUDA")]
    md = bench.markdown(results, bench.environment(CPU))
    table = [line for line in md.splitlines() if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    for name in header:
        assert f"- **{name}**:" in md
    assert all(line.count("|") == table[0].count("|") for line in table)
    assert "skipped: no CUDA" in md


def test_gpu_check_script_parses_and_runs_dry(tmp_path):
    script = ROOT / "bench" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    # the dry run: the same steps on the CPU, tests collected only, a tiny benchmark
    out, home = tmp_path / "out", tmp_path / "home"
    env = {
        "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
        "PYTHON": sys.executable,
        "OUT": str(out),
        "SJ_GLIF_GPU_CHECK_DRY": "1",
        "HOME": str(home),
    }
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    files = {p.name for p in out.iterdir()}
    assert {"gpu_tests.txt", "bench.txt", "bench.jsonl", "bench.csv", "bench.md"} <= files
    assert len(files) <= 8  # the device tool brings back at most 8 files
    tests = (out / "gpu_tests.txt").read_text()
    assert "torch" in tests and "test_kernels.py::" in tests  # versions, GPU tests collected
    assert "GLIF (PyTorch)" in (out / "bench.txt").read_text()


@pytest.mark.gpu
def test_kernel_time_by_cuda_graph_replay():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    dev = torch.device("cuda")
    rows = bench.measure_case(
        ["glif_triton"],
        list(bench.MODES),
        (4, 2, 8, 16, 16),
        torch.float32,
        dev,
        warmup=2,
        reps=5,
        copy=1000.0,
    )
    for r in rows:
        assert r.skipped is None and "kernel_error" not in r.extra, (r.skipped, r.extra)
        assert r.kernel_ms is not None and r.kernel_ms > 0 and r.kernel_frac_of_copy > 0
    fwd, bwd, both = (r.kernel_ms for r in rows)
    assert both == pytest.approx(fwd + bwd)


def test_cpu_training_step_writes_to_its_own_folder_by_default(tmp_path):
    committed = ROOT / "bench" / "results" / "cpu_training_step.json"
    before = committed.read_bytes()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = str(ROOT / "bench" / "cpu_training_step.py")
    r = subprocess.run(
        [sys.executable, script, "--reps", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads(
        (tmp_path / "sj-glif-bench" / "cpu_training_step" / "cpu_training_step.json").read_text()
    )
    assert data["reps"] == 1 and data["glif_torch"]["median_ms"] > 0
    assert committed.read_bytes() == before
    bad = subprocess.run(
        [sys.executable, script, "--reps", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 2 and "positive integer" in bad.stderr


def _gpu_tune():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_tune", ROOT / "bench" / "gpu_tune.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_tune_variants_and_table():
    """``bench/gpu_tune.py`` (runs on CUDA only): every (elements per thread, warps) pair of
    both kernels, layouts and dtypes, backward tiles capped at 1024 elements; the table
    marks the fastest pair, shows failed variants and the configuration in the code."""
    tune = _gpu_tune()
    vs = tune.variants()
    assert len(vs) == len(set(vs)) == 2 * 2 * (16 + 13)
    assert all(e * w <= 32 for k, _, _, e, w in vs if k == "bwd")
    case = next(iter(tune.CASES))
    rows = [
        dict(kernel="fwd", case=case, dtype="float32", ept=4, warps=8, ms=0.2, pct_copy=40.0),
        dict(kernel="fwd", case=case, dtype="float32", ept=2, warps=4, ms=0.1, pct_copy=80.0),
        dict(kernel="fwd", case=case, dtype="float32", ept=1, warps=2, error="OutOfResources"),
    ]
    env = dict(date="d", gpu="g", torch="t", triton="tr", python="p", copy_gbps=1000.0)
    md = tune.markdown(env, rows, {("fwd", "cf", 4): (4, 8)})
    assert f"## forward, {case}, float32 (in the code now: (4, 8))" in md
    assert "| 2 |  | **0.100 (80 %)** |  |  |" in md
    assert "| 4 |  |  | 0.200 (40 %) |  |" in md and "| 1 | error |" in md
    assert md.count("## ") == 1  # no rows, no table
