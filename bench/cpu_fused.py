"""CPU benchmark of the fused C++ GLIF implementation (issue 12).

Forward + backward of one neuron layer, float32, medians of interleaved repetitions in
one process (providers take turns, so a noisy machine slows all of them alike), at 1 and
2 threads. Providers:

- ``glif_cpp``: ``GLIFNode(backend="cpp")``, the fused C++ loop (recomputes u in backward);
- ``glif_torch``: ``GLIFNode(backend="torch")``, the eager PyTorch path;
- ``gated_lif`` / ``gated_lif_compile``: SpikingJelly's ``GatedLIFNode``, eager and under
  ``torch.compile`` (its compile time is reported separately, not in the medians);
- ``sj_lif`` / ``sj_plif``: SpikingJelly's ``LIFNode`` / ``ParametricLIFNode`` (CPU: torch).

Also: bandwidth as % of an input ``clone`` (the fused op must move 5 input-sized tensors
per forward + backward: read x, write spikes; read grad, read x, write dx; a clone moves
2), bytes kept for backward, the first-call latency of the C++ build (cold, in a fresh
cache; and cached, in a new process), and a ``spiking_resnet18`` training step with GLIF
vs LIF neurons.

    python bench/cpu_fused.py [--quick] [--threads 1 2] [--out bench/results]

writes ``cpu_fused.json`` and ``cpu_fused.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from spikingjelly.activation_based import functional, neuron, surrogate

from sj_glif import GLIFNode, bench, cpu

# (label, [T, *step], channel_dim)
SIZES = [
    ("[8,16,64,16,16]", (8, 16, 64, 16, 16), 1),
    ("[8,32,128,32,32]", (8, 32, 128, 32, 32), 1),
    ("channel-last [8,32,196,384]", (8, 32, 196, 384), -1),
    ("T=32 [32,16,64,16,16]", (32, 16, 64, 16, 16), 1),
]
PROVIDERS = ("glif_cpp", "glif_torch", "gated_lif", "gated_lif_compile", "sj_lif", "sj_plif")
NAMES = {
    **bench.LABELS,
    "clone": "x.clone() (bandwidth reference)",
    "clone_huge": "x.clone() into huge pages (bandwidth reference)",
}
_MADV_HUGEPAGE = 14  # <sys/mman.h> on Linux


def clone_huge_pages(x: torch.Tensor) -> torch.Tensor:
    """``x.clone()`` into memory advised to use transparent huge pages before its first
    write, as the C++ implementation allocates its large outputs: the bandwidth reference
    that pays the same first-touch cost (a plain clone's 4 KiB page faults can cost several
    times the copy itself). A plain clone where ``madvise`` is unavailable."""
    out = torch.empty_like(x)
    libc = _libc()
    if libc is not None:
        huge = 2 << 20
        lo = -(-out.data_ptr() // huge) * huge
        hi = (out.data_ptr() + out.nbytes) // huge * huge
        if hi > lo:
            libc.madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), _MADV_HUGEPAGE)
    return out.copy_(x)


@functools.cache
def _libc():
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return libc


def environment() -> dict:
    from importlib.metadata import version  # noqa: PLC0415

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": model,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "spikingjelly": version("spikingjelly"),
        "compiler": subprocess.run(
            [os.environ.get("CXX", "c++"), "--version"], capture_output=True, text=True
        ).stdout.splitlines()[:1],
    }


# --------------------------------------------------------------------------- providers


def _gated_shape(shape: tuple, channel_dim: int) -> tuple[tuple, int]:
    """GatedLIFNode is only right for 5-D [T, B, C, H, W] input: channel-last sizes are
    given to it as [T, B, C, N, 1] (the same elements, channel at axis 2)."""
    if len(shape) == 5 and channel_dim == 1:
        return shape, shape[2]
    T, B, N, C = shape
    return (T, B, C, N, 1), C


def make(name: str, shape: tuple, channel_dim: int):
    """``(module, input shape)`` for provider ``name``."""
    T = shape[0]
    C = shape[1 + channel_dim % (len(shape) - 1)]
    if name.startswith("glif_"):
        backend = name.split("_")[1]
        m = GLIFNode(T=T, channels=C, channel_dim=channel_dim, step_mode="m", backend=backend)
        return m, shape
    if name.startswith("gated_lif"):
        gshape, gc = _gated_shape(shape, channel_dim)
        m = neuron.GatedLIFNode(T=T, inplane=gc, surrogate_function=surrogate.Sigmoid())
        return (torch.compile(m) if name.endswith("compile") else m), gshape
    if name == "sj_lif":
        return neuron.LIFNode(step_mode="m"), shape
    if name == "sj_plif":
        return neuron.ParametricLIFNode(step_mode="m"), shape
    raise ValueError(name)


class Case:
    """One provider on one size: a forward + backward closure with fixed input/grad."""

    def __init__(self, name: str, shape: tuple, channel_dim: int, seed: int = 0):
        self.name = name
        self.module, ishape = make(name, shape, channel_dim)
        g = torch.Generator().manual_seed(seed)
        self.x = (torch.rand(ishape, generator=g) * 1.5).requires_grad_()
        self.grad = torch.rand(ishape, generator=g) - 0.5
        self.params = [p for p in self.module.parameters() if p.requires_grad]

    def step(self) -> None:
        functional.reset_net(self.module)
        out = self.module(self.x)
        out.backward(self.grad)
        self.x.grad = None
        for p in self.params:
            p.grad = None

    def saved_bytes(self) -> int:
        seen: dict[int, int] = {}

        def pack(t):
            s = t.untyped_storage()
            seen[s.data_ptr()] = s.nbytes()
            return t

        functional.reset_net(self.module)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = self.module(self.x)
        del out
        return sum(seen.values())


_cpu_ms: list[float] = []  # process CPU time of the last timed() call


def timed(fn) -> float:
    """Wall-clock ms of one call; its process CPU time (all threads) goes to _cpu_ms."""
    c, t = time.process_time(), time.perf_counter()
    fn()
    wall = (time.perf_counter() - t) * 1e3
    _cpu_ms[:] = [(time.process_time() - c) * 1e3]
    return wall


def bench_size(label, shape, channel_dim, threads_list, reps, providers) -> list[dict]:
    """Every provider on one size, at each thread count: one run dict per thread count."""
    torch.set_num_threads(max(threads_list))
    cases, first_ms = [], {}
    for name in providers:
        case = Case(name, shape, channel_dim)
        first_ms[name] = timed(case.step)  # lazy init / compile: reported, not in medians
        cases.append(case)
    x = cases[0].x.detach()
    clone = type("Clone", (), {"name": "clone", "step": lambda self: x.clone()})()
    huge = type("Clone", (), {"name": "clone_huge", "step": lambda self: clone_huge_pages(x)})()
    everyone = [*cases, clone, huge]
    saved = {c.name: c.saved_bytes() for c in cases if not c.name.endswith("compile")}
    runs = []
    for threads in threads_list:
        torch.set_num_threads(threads)
        for c in everyone:  # warm-up at this thread count
            c.step()
        times: dict[str, list[float]] = {c.name: [] for c in everyone}
        cpu_times: dict[str, list[float]] = {c.name: [] for c in everyone}
        for r in range(reps):  # interleaved, the starting provider rotating
            k = r % len(everyone)
            for c in everyone[k:] + everyone[:k]:
                times[c.name].append(timed(c.step))
                cpu_times[c.name].append(_cpu_ms[0])
        med = {n: statistics.median(v) for n, v in times.items()}
        cpu_med = {n: statistics.median(v) for n, v in cpu_times.items()}
        runs.append(
            {
                "size": label,
                "shape": list(shape),
                "channel_dim": channel_dim,
                "threads": threads,
                "reps": reps,
                "median_ms": med,
                "median_cpu_ms": cpu_med,
                "all_ms": times,
                "first_call_ms": first_ms,
                "saved_bytes": saved,
                # the fused op moves 5 input-sized tensors per forward + backward, a clone 2;
                # against the faster of the two clones (the conservative reference)
                "pct_of_clone_bandwidth": {
                    n: 100 * 2.5 * min(med["clone"], med["clone_huge"]) / med[n]
                    for n in ("glif_cpp", "glif_torch")
                    if n in med
                },
            }
        )
    return runs


# --------------------------------------------------------------------------- first call


_FIRST_CALL = """
import time, torch
t = time.perf_counter()
import sj_glif
from sj_glif import cpu
t_import = time.perf_counter() - t
t = time.perf_counter()
assert cpu.available(), cpu.unavailable_reason()
print(time.perf_counter() - t)
"""


def first_call_latency() -> dict:
    """Seconds from the first use to a loaded library: cold (empty cache, a fresh build)
    and cached (a new process finding the build on disk)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label in ("cold", "cached"):
            env["TORCH_EXTENSIONS_DIR"] = tmp
            proc = subprocess.run(
                [sys.executable, "-c", _FIRST_CALL], env=env, capture_output=True, text=True
            )
            if proc.returncode != 0:
                out[label] = f"failed: {proc.stderr.strip().splitlines()[-1:]}"
            else:
                out[label] = float(proc.stdout.strip().splitlines()[-1])
    return out


# --------------------------------------------------------------------------- fresh process

_FRESH = """
import json, statistics, sys, time, torch
sys.path.insert(0, {bench!r})
from cpu_fused import Case, clone_huge_pages
torch.set_num_threads({threads})
case = Case("glif_cpp", {shape!r}, 1)
case.step()
x = case.x.detach()
steps = {{"glif_cpp": case.step, "clone": x.clone, "clone_huge": lambda: clone_huge_pages(x)}}
times = {{n: [] for n in steps}}
for r in range({reps}):
    for n, fn in steps.items():
        t = time.perf_counter()
        fn()
        times[n].append((time.perf_counter() - t) * 1e3)
print(json.dumps({{n: statistics.median(v) for n, v in times.items()}}))
"""


def fresh_process(shape: tuple[int, ...], threads: int, reps: int) -> dict:
    """Median ms of the C++ forward + backward and of both clones in a new process with
    the default allocator, where a large output is mapped anew per call and first-touch
    page faults are part of every call (the long benchmark process above reuses memory
    it has faulted in already)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    code = _FRESH.format(bench=str(Path(__file__).resolve().parent), threads=threads,
                         shape=tuple(shape), reps=reps)  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- resnet18


def resnet18_step(neuron_name: str, T: int, batch: int, image: int, threads: int, reps: int):
    """Median ms of one SGD training step of spiking_resnet18 (multi-step, CIFAR-size
    input) with GLIF or LIF neurons."""
    from spikingjelly.activation_based.model import spiking_resnet  # noqa: PLC0415

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if neuron_name == "glif":
        net = spiking_resnet.spiking_resnet18(
            spiking_neuron=GLIFNode, T=T, surrogate_function=surrogate.Sigmoid(), num_classes=10
        )
    else:
        net = spiking_resnet.spiking_resnet18(
            spiking_neuron=neuron.LIFNode, surrogate_function=surrogate.Sigmoid(), num_classes=10
        )
    functional.set_step_mode(net, "m")
    x = torch.rand(T, batch, 3, image, image)
    y = torch.randint(0, 10, (batch,))
    functional.reset_net(net)
    net(x)  # materialize lazy GLIF parameters before the optimizer
    opt = torch.optim.SGD(net.parameters(), lr=0.01)

    def step():
        functional.reset_net(net)
        loss = torch.nn.functional.cross_entropy(net(x).mean(0), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    out = []
    for _ in range(reps):
        wall = timed(step)
        out.append((wall, _cpu_ms[0]))
    return out


# --------------------------------------------------------------------------- main


def markdown(res: dict) -> str:
    env = res["environment"]
    lines = [
        "# Fused C++ CPU GLIF: forward + backward benchmark (issue 12)",
        "",
        f"{env['date']}; {env['cpu']}, {env['cores']} cores; {env['platform']}; "
        f"torch {env['torch']}, spikingjelly {env['spikingjelly']}, Python {env['python']}; "
        f"compiler {' '.join(env['compiler'])}.",
        "",
        f"float32, forward + backward (backward with a fixed random gradient), median of "
        f"{res['reps']} interleaved repetitions per provider in one process, after a "
        "warm-up; times in ms (lower is better); `x GatedLIFNode+compile`: speed relative to "
        "compiled GatedLIFNode (higher is better); `% clone`: bandwidth of the fused op as a "
        "percentage of an input `clone` (5 input-sized passes vs the clone's 2; higher is "
        "better), against the faster of a plain clone and a clone into memory advised to use "
        "transparent huge pages (as the C++ implementation allocates its large outputs: a "
        "plain clone's first-touch 4 KiB page faults can cost more than the copy); "
        "`CPU ms`: median process CPU time (all threads) of the same calls, less "
        "disturbed than wall time by other jobs on a shared machine. GatedLIFNode is given "
        "channel-last sizes as `[T, B, C, N, 1]`."
        + (" **Machine shared with other jobs: noisy.**" if res.get("noisy") else ""),
        "",
    ]
    for run in res["runs"]:
        med = run["median_ms"]
        base = med.get("gated_lif_compile")
        lines += [
            f"## {run['size']}, {run['threads']} thread(s)",
            "",
            "| provider | ms | x GatedLIFNode+compile | CPU ms | x compile (CPU time) "
            "| saved for backward (MiB) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        cpu_med = run["median_cpu_ms"]
        cpu_base = cpu_med.get("gated_lif_compile")
        for n, ms in med.items():
            ref = n.startswith("clone")
            ratio = f"{base / ms:.2f}" if base and not ref else "-"
            cpu_ratio = f"{cpu_base / cpu_med[n]:.2f}" if cpu_base and not ref else "-"
            saved = run["saved_bytes"].get(n)
            saved = f"{saved / 2**20:.1f}" if saved is not None else "-"
            lines.append(
                f"| {NAMES[n]} | {ms:.2f} | {ratio} | {cpu_med[n]:.2f} | {cpu_ratio} | {saved} |"
            )
        pct = ", ".join(f"{NAMES[n]} {p:.0f}%" for n, p in run["pct_of_clone_bandwidth"].items())
        first = run["first_call_ms"].get("gated_lif_compile")
        lines += ["", f"% of clone bandwidth: {pct}."]
        if first is not None:
            lines.append(f"First call of compiled GatedLIFNode (compile): {first / 1e3:.1f} s.")
        lines.append("")
    fc = res.get("first_call_s")
    if fc:

        def secs(v):
            return v if isinstance(v, str) else f"{v:.2f} s"

        lines += [
            "## First call of the C++ implementation",
            "",
            f"Cold (empty cache: a build): {secs(fc['cold'])}; cached (a new process that "
            f"finds the build on disk): {secs(fc['cached'])}. One build serves every shape "
            "and dtype.",
            "",
        ]
    if res.get("fresh"):
        lines += [
            "## In a new process: first-touch page faults in every call",
            "",
            "The runs above reuse memory the process has already faulted in. In a new process "
            "with the default allocator, every large output is mapped anew and faulted in "
            "during the call (median ms; the C++ implementation advises its large outputs to "
            "use transparent huge pages, as the second clone does):",
            "",
            "| size | threads | GLIF (C++ CPU) | x.clone() | x.clone() into huge pages | "
            "% of the faster clone |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for fr in res["fresh"]:
            m = fr["median_ms"]
            if "error" in m:
                lines.append(f"| {fr['size']} | {fr['threads']} | failed: {m['error']} | | | |")
                continue
            pct = 100 * 2.5 * min(m["clone"], m["clone_huge"]) / m["glif_cpp"]
            lines.append(
                f"| {fr['size']} | {fr['threads']} | {m['glif_cpp']:.1f} | {m['clone']:.1f} | "
                f"{m['clone_huge']:.1f} | {pct:.0f}% |"
            )
        lines.append("")
    if res.get("resnet18"):
        lines += ["## spiking_resnet18 training step (SGD, multi-step)", ""]
        for rn in res["resnet18"]:
            lines += [
                f"Input `[T, B, 3, H, W] = {rn['input']}`, {rn['threads']} thread(s), median of "
                f"{rn['reps']} interleaved steps: GLIF {rn['glif_ms']:.1f} ms, LIF "
                f"{rn['lif_ms']:.1f} ms, ratio GLIF/LIF {rn['ratio']:.2f} (goal <= 1.1); CPU "
                f"time GLIF {rn['glif_cpu_ms']:.1f} ms, LIF {rn['lif_cpu_ms']:.1f} ms, ratio "
                f"{rn['cpu_ratio']:.2f}.",
                "",
            ]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer repetitions, first two sizes, no cold build"
    )
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--reps", type=int, default=None, help="default 15 (quick: 5)")
    parser.add_argument("--providers", nargs="+", default=list(PROVIDERS), choices=PROVIDERS)
    parser.add_argument("--no-resnet", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("sj-glif-bench"))
    args = parser.parse_args(argv)
    reps = args.reps or (5 if args.quick else 15)
    if not cpu.available():
        sys.exit(f"the C++ implementation is unavailable: {cpu.unavailable_reason()}")
    args.out.mkdir(parents=True, exist_ok=True)
    res = {"environment": environment(), "reps": reps, "noisy": True, "runs": []}
    sizes = SIZES[:2] if args.quick else SIZES
    for label, shape, cd in sizes:
        for run in bench_size(label, shape, cd, args.threads, reps, args.providers):
            res["runs"].append(run)
            print(
                f"{label} {run['threads']} thr: "
                + ", ".join(f"{n} {ms:.1f}" for n, ms in run["median_ms"].items()),
                flush=True,
            )
        (args.out / "cpu_fused.json").write_text(json.dumps(res, indent=1))  # partial results
    res["first_call_s"] = first_call_latency() if not args.quick else None
    if not args.quick:
        label, shape, _ = SIZES[1]
        res["fresh"] = [
            {"size": label, "threads": t, "median_ms": fresh_process(shape, t, 9)}
            for t in args.threads
        ]
        print(f"fresh process: {res['fresh']}", flush=True)
    if not args.no_resnet:
        T, batch, image, n = 4, 8, 32, (3 if args.quick else 7)
        res["resnet18"] = []
        for threads in args.threads:
            glif, lif = [], []
            for _ in range(n):  # interleaved, two timed steps each per round
                glif += resnet18_step("glif", T, batch, image, threads, 2)
                lif += resnet18_step("lif", T, batch, image, threads, 2)
            g, l_ = (statistics.median(w for w, _ in v) for v in (glif, lif))
            gc, lc = (statistics.median(c for _, c in v) for v in (glif, lif))
            res["resnet18"].append({
                "input": [T, batch, 3, image, image],
                "threads": threads,
                "reps": len(glif),
                "glif_ms": g,
                "lif_ms": l_,
                "ratio": g / l_,
                "glif_cpu_ms": gc,
                "lif_cpu_ms": lc,
                "cpu_ratio": gc / lc,
            })  # fmt: skip
            print(f"resnet18 {threads} thr: GLIF {g:.1f} ms, LIF {l_:.1f} ms", flush=True)
    (args.out / "cpu_fused.json").write_text(json.dumps(res, indent=1))
    md = markdown(res)
    (args.out / "cpu_fused.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
