"""Benchmark GLIF against SpikingJelly's neurons: the library behind ``sj-glif bench``.

Providers (each a multi-step neuron on ``x`` of shape ``[T, B, C, H, W]``):

- ``glif_triton``: GLIFNode, fused Triton kernels (CUDA only);
- ``glif_cpp``: GLIFNode, fused C++ CPU implementation (``backend="cpp"``, CPU only);
- ``glif_torch``: GLIFNode, eager PyTorch path (hand-written backward);
- ``gated_lif``: SpikingJelly's ``GatedLIFNode`` (Python loop, autograd);
- ``gated_lif_compile``: the same under ``torch.compile``;
- ``sj_lif`` / ``sj_plif``: SpikingJelly's ``LIFNode`` / ``ParametricLIFNode`` with
  their own automatic implementation: a calibration of what SpikingJelly's fastest
  kernels reach on this device (a simpler neuron: not the same work).

Modes: ``fwd`` (the forward of a training step), ``bwd`` (its backward), ``fwdbwd``.

How it measures (see :func:`measure_case`): every provider of one case (threads, dtype,
shape) is built and called once first (that first call, which includes any build or
compile, is reported on its own as ``first_call_ms``), warmed up, then timed with the
providers and modes interleaved rep by rep, so machine noise falls on all alike; the
median is reported. Gradients are set to None before each timed call, outside the timed
region. On CUDA, GLIF (Triton) is also timed by CUDA-graph replay
(``triton.testing.do_bench_cudagraph``): the GPU time of the op alone, no host work
(``kernel_ms``). Achieved bandwidth counts the bytes the GLIF op must move
(:func:`op_bytes`), compared with one device copy of a 1 GiB buffer
(:func:`copy_gbps`) measured once per run.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TextIO

import torch
from spikingjelly.activation_based import functional, neuron, surrogate

from .node import GLIFNode

PROVIDERS = (
    "glif_triton",
    "glif_cpp",
    "glif_torch",
    "gated_lif",
    "gated_lif_compile",
    "sj_lif",
    "sj_plif",
)
LABELS = {
    "glif_triton": "GLIF (Triton)",
    "glif_cpp": "GLIF (C++ CPU)",
    "glif_torch": "GLIF (PyTorch)",
    "gated_lif": "GatedLIFNode",
    "gated_lif_compile": "GatedLIFNode + torch.compile",
    "sj_lif": "LIF",
    "sj_plif": "PLIF",
}
GLIF_PROVIDERS = ("glif_triton", "glif_cpp", "glif_torch")
MODES = ("fwd", "bwd", "fwdbwd")
MODE_LABELS = {"fwd": "forward", "bwd": "backward", "fwdbwd": "forward + backward"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# the case the summary and the figure show, per device type ([T, B, C, H, W])
HEADLINE = {"cuda": (8, 32, 128, 32, 32), "cpu": (8, 16, 64, 16, 16)}
COPY_BYTES = 2**30
# Whether the Triton training forward keeps a float32 membrane stream for backward. It
# does not: the backward recomputes the membrane from x (kernels/glif.py,
# BWD_RECOMPUTES_U). tests/test_bench.py checks this against what the op saves.
TRITON_STORES_U = False


@dataclass
class Result:
    """One provider, mode and case. Times in ms, bandwidth in GB/s (1e9 bytes/s)."""

    provider: str
    mode: str
    dtype: str
    threads: int
    T: int
    shape: list[int]
    neurons: int
    label: str = ""
    median_ms: float | None = None
    reps: int = 0
    gbps: float | None = None
    copy_gbps: float | None = None
    frac_of_copy: float | None = None
    kernel_ms: float | None = None
    kernel_gbps: float | None = None
    kernel_frac_of_copy: float | None = None
    first_call_ms: float | None = None
    saved_bytes: int | None = None
    peak_mem_bytes: int | None = None
    skipped: str | None = None
    extra: dict = field(default_factory=dict)


def environment(device: torch.device) -> dict:
    """Machine, versions and date, to commit beside the numbers."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        sj_version = version("spikingjelly")
    except PackageNotFoundError:
        sj_version = "unknown"
    info = {
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "device": str(device),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "spikingjelly": sj_version,
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# --------------------------------------------------------------------------- providers


def _gated_lif(T: int, C: int, device) -> torch.nn.Module:
    return neuron.GatedLIFNode(T=T, inplane=C, surrogate_function=surrogate.Sigmoid()).to(device)


def make_provider(
    name: str, T: int, C: int, device: torch.device
) -> tuple[torch.nn.Module | None, str | None]:
    """``(module, skipped_reason)`` for provider ``name``; module is None when skipped."""
    if name == "glif_triton" and device.type != "cuda":
        return None, "the Triton kernels need CUDA (the interpreter is not a benchmark)"
    if name == "glif_cpp" and device.type != "cpu":
        return None, "the C++ implementation runs on the CPU"
    if name in GLIF_PROVIDERS:
        backend = name.split("_")[1]
        try:
            m = GLIFNode(T=T, channels=C, step_mode="m", backend=backend)
        except ValueError as err:  # e.g. a backend this installation does not have
            return None, f"ValueError: {err}"
        return m.to(device), None
    if name == "gated_lif":
        return _gated_lif(T, C, device), None
    if name == "gated_lif_compile":
        torch.compiler.reset()  # a fresh compile per case: no recompile limit, honest latency
        return torch.compile(_gated_lif(T, C, device)), None
    if name == "sj_lif":
        return neuron.LIFNode(step_mode="m").to(device), None
    if name == "sj_plif":
        return neuron.ParametricLIFNode(step_mode="m").to(device), None
    raise ValueError(f"unknown provider {name!r}; expected one of {PROVIDERS}")


# --------------------------------------------------------------------------- measurement


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    """Milliseconds one call of ``fn`` takes (CUDA events on CUDA, wall clock elsewhere)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end)
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return (time.perf_counter() - t) * 1e3


def saved_bytes(fn: Callable[[], torch.Tensor]) -> tuple[int, torch.Tensor]:
    """Bytes of the unique storages autograd saves for backward while ``fn`` runs."""
    seen: dict[tuple, int] = {}

    def pack(t: torch.Tensor):
        s = t.untyped_storage()
        seen[(t.device.type, s.data_ptr())] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(seen.values()), out


def op_bytes(mode: str, numel: int, itemsize: int, stores_u: bool = False) -> int:
    """Bytes the GLIF op must move for an input of ``numel`` elements of ``itemsize`` bytes.

    Forward: read x, write spikes. Backward: read the spike gradient and x, write dx.
    With ``stores_u`` (GLIF (Triton), :data:`TRITON_STORES_U`) the forward also writes the
    float32 membrane stream and the backward reads it (4 bytes each way). The state
    (``[B, C, H, W]``, 1/T of the input) and the ``[C]`` parameters are not counted.
    """
    u = 4 if stores_u else 0
    fwd = numel * (2 * itemsize + u)
    bwd = numel * (3 * itemsize + u)
    return {"fwd": fwd, "bwd": bwd, "fwdbwd": fwd + bwd}[mode]


def copy_gbps(device: torch.device, nbytes: int = COPY_BYTES, reps: int = 5) -> float:
    """GB/s of one device copy of an ``nbytes`` buffer, counting bytes read and written.

    Measured once per run on a buffer far larger than any cache (default 1 GiB), so
    it is the memory system's rate, not the cache's.
    """
    src = torch.ones(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # first touch outside the timing
    ms = statistics.median(_timed(lambda: dst.copy_(src), device) for _ in range(reps))
    return 2 * nbytes / (ms * 1e-3) / 1e9


class _Runner:
    """One built provider on one case: its module, input and the three modes."""

    def __init__(self, name: str, module: torch.nn.Module, x: torch.Tensor, device):
        self.name, self.module, self.device = name, module, device
        self.x = x.detach().clone().requires_grad_()
        self.grad: torch.Tensor | None = None
        self.times: dict[str, list[float]] = {}

    def forward(self) -> torch.Tensor:
        functional.reset_net(self.module)
        return self.module(self.x)

    def clear_grads(self) -> None:
        self.x.grad = None
        for p in self.module.parameters():
            p.grad = None

    def step(self) -> None:
        out = self.forward()
        if self.grad is None:  # some neurons answer in another dtype than their input
            self.grad = torch.randn_like(out)
        out.backward(self.grad)

    def time_mode(self, mode: str) -> float:
        self.clear_grads()  # outside the timed region
        if mode == "fwd":
            return _timed(self.forward, self.device)
        if mode == "fwdbwd":
            return _timed(self.step, self.device)
        out = self.forward()
        _sync(self.device)
        return _timed(lambda: out.backward(self.grad), self.device)

    def kernel_times(self) -> dict[str, float]:
        """CUDA-graph replay times (ms) of the forward and forward + backward: GPU work only."""
        from triton.testing import do_bench_cudagraph

        inputs = [self.x, *(p for p in self.module.parameters() if p.requires_grad)]

        def fwdbwd() -> None:
            # autograd.grad returns fresh tensors: nothing accumulates across replays
            torch.autograd.grad(self.forward(), inputs, self.grad, allow_unused=True)

        def bench(fn: Callable[[], object]) -> float:
            try:
                return float(do_bench_cudagraph(fn, rep=100, return_mode="median"))
            except TypeError:  # an older triton without return_mode
                return float(do_bench_cudagraph(fn, rep=100))

        self.clear_grads()
        t_fwd = bench(self.forward)
        t_all = bench(fwdbwd)
        return {"fwd": t_fwd, "fwdbwd": t_all, "bwd": t_all - t_fwd}


def _error(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".splitlines()[0][:300]


def measure_case(
    providers: Sequence[str],
    modes: Sequence[str],
    shape: tuple[int, ...],
    dtype: torch.dtype,
    device: torch.device,
    *,
    warmup: int = 3,
    reps: int = 15,
    copy: float | None = None,
    kernel_time: bool = True,
) -> list[Result]:
    """Every provider and mode on one input ``shape`` = ``[T, B, C, ...]``, interleaved.

    Args:
        providers: names from :data:`PROVIDERS`.
        modes: names from :data:`MODES`.
        shape: the input's shape ``[T, B, C, H, W]``.
        dtype: the input's dtype.
        device: where to run.
        warmup: untimed training steps per provider after the first call (default 3).
        reps: timed calls per provider and mode; the median is reported (default 15).
        copy: GB/s of a device copy (:func:`copy_gbps`) to compare with, or None.
        kernel_time: on CUDA, also time GLIF (Triton) by CUDA-graph replay (default True).

    Returns:
        One :class:`Result` per provider and mode, in the order given; a provider that
        cannot run here, or fails, has ``skipped`` set to the reason (the sweep goes on).
    """
    T, C = shape[0], shape[2]
    dname = str(dtype).removeprefix("torch.")
    neurons = math.prod(shape[1:])
    threads = torch.get_num_threads()
    res = {
        (p, m): Result(p, m, dname, threads, T, list(shape), neurons, label=LABELS[p])
        for p in providers
        for m in modes
    }

    def skip(p: str, why: str) -> None:
        for m in modes:
            res[p, m].skipped = why

    x = torch.randn(shape, device=device).mul_(0.5).add_(0.4).to(dtype)
    runners: list[_Runner] = []
    for p in providers:
        module, why = make_provider(p, T, C, device)
        if module is None:
            skip(p, why)
            continue
        r = _Runner(p, module, x, device)
        try:
            first = _timed(r.step, device)  # builds, compiles, materializes
            for _ in range(warmup):
                r.step()
            _sync(device)
        except Exception as err:  # a provider failing must not stop the sweep; it is reported
            skip(p, _error(err))
            continue
        for m in modes:
            res[p, m].first_call_ms = first
        runners.append(r)

    for _ in range(reps):
        for r in list(runners):
            try:
                for m in modes:
                    r.times.setdefault(m, []).append(r.time_mode(m))
            except Exception as err:
                skip(r.name, _error(err))
                runners.remove(r)

    for r in runners:
        r.clear_grads()
        try:
            nbytes, out = saved_bytes(r.forward)
            del out
            peak = None
            if device.type == "cuda":
                _sync(device)
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
                r.step()
                _sync(device)
                peak = torch.cuda.max_memory_allocated(device) - base
                r.clear_grads()
            kernel = {}
            if kernel_time and device.type == "cuda" and r.name == "glif_triton":
                try:
                    kernel = r.kernel_times()
                except Exception as err:  # reported beside the end-to-end numbers
                    for m in modes:
                        res[r.name, m].extra["kernel_error"] = _error(err)
        except Exception as err:
            skip(r.name, _error(err))
            continue
        stores_u = TRITON_STORES_U and r.name == "glif_triton"
        for m in modes:
            row = res[r.name, m]
            row.median_ms = statistics.median(r.times[m])
            row.reps = len(r.times[m])
            row.saved_bytes, row.peak_mem_bytes = nbytes, peak
            moved = op_bytes(m, x.numel(), x.element_size(), stores_u)
            row.gbps = moved / (row.median_ms * 1e-3) / 1e9
            if m in kernel and kernel[m] > 0:
                row.kernel_ms = kernel[m]
                row.kernel_gbps = moved / (kernel[m] * 1e-3) / 1e9
            if copy:
                row.copy_gbps = copy
                row.frac_of_copy = row.gbps / copy
                if row.kernel_gbps is not None:
                    row.kernel_frac_of_copy = row.kernel_gbps / copy
    del runners
    return list(res.values())


@dataclass
class Plan:
    """What a sweep runs: cases ``(threads, dtype, shape)`` and how often it times them."""

    providers: list[str]
    modes: list[str]
    dtypes: list[str]
    shapes: list[tuple[int, ...]]
    threads: list[int | None]
    warmup: int = 3
    reps: int = 15
    copy_bytes: int = COPY_BYTES
    compile_headline_only: bool = False

    def cases(self) -> list[tuple[int | None, str, tuple[int, ...]]]:
        return [(t, d, s) for t in self.threads for d in self.dtypes for s in self.shapes]


def headline_shape(shapes: Iterable[Sequence[int]], device: torch.device) -> tuple[int, ...]:
    """The case the summary leads with: :data:`HEADLINE` if measured, else the largest."""
    shapes = [tuple(s) for s in shapes]
    want = HEADLINE.get(device.type)
    if want in shapes:
        return want
    return max(shapes, key=lambda s: (math.prod(s), s))


def sweep(
    plan: Plan,
    device: torch.device,
    on_case: Callable[[list[Result]], None] | None = None,
    progress: bool = True,
    progress_file: TextIO | None = None,
) -> list[Result]:
    """Run every case of ``plan``; ``on_case`` gets each case's results as it completes.

    ``progress_file`` is where the progress bar goes (default: ``sys.stderr``).

    The copy bandwidth is measured once per thread count (once on CUDA). torch's thread
    count is restored afterwards.
    """
    from tqdm.auto import tqdm

    headline = headline_shape(plan.shapes, device)
    cases = plan.cases()
    results: list[Result] = []
    copies: dict[int | None, float] = {}
    threads0 = torch.get_num_threads()
    bar = tqdm(
        total=len(cases),
        desc="sj-glif bench",
        unit="case",
        disable=not progress,
        file=progress_file,
    )
    try:
        for threads, d, shape in cases:
            if threads is not None:
                torch.set_num_threads(threads)
            key = threads if device.type == "cpu" else None
            if key not in copies:
                copies[key] = copy_gbps(device, plan.copy_bytes)
            providers = [
                p
                for p in plan.providers
                if not (
                    p == "gated_lif_compile" and plan.compile_headline_only and shape != headline
                )
            ]
            bar.set_postfix_str(f"{d} {'x'.join(map(str, shape))}")
            case = measure_case(
                providers,
                plan.modes,
                shape,
                DTYPES[d],
                device,
                warmup=plan.warmup,
                reps=plan.reps,
                copy=copies[key],
            )
            results.extend(case)
            if on_case is not None:
                on_case(case)
            bar.update()
    finally:
        bar.close()
        torch.set_num_threads(threads0)
    return results


# --------------------------------------------------------------------------- reporting


def _shape_text(shape: Sequence[int]) -> str:
    names = ("T", "B", "C", "H", "W") if len(shape) == 5 else ("T",) + ("",) * (len(shape) - 1)
    return (
        "["
        + ", ".join(f"{n}={v}" if n else str(v) for n, v in zip(names, shape, strict=True))
        + "]"
    )


def _ms(v: float) -> str:
    return f"{v:.3g}" if v < 10 else f"{v:.1f}"


def _copy_size(env: dict) -> str:
    mib = env.get("copy_bytes", COPY_BYTES) / 2**20
    return f"{mib / 1024:g} GiB" if mib >= 1024 else f"{mib:g} MiB"


def ratio_words(glif: str, t_glif: float, other: str, t_other: float) -> str:
    """``"GLIF (PyTorch) is 2.4× faster than GatedLIFNode"`` (or ``… slower than …``)."""
    if t_other >= t_glif:
        return f"{glif} is {t_other / t_glif:.2g}× faster than {other}"
    return f"{glif} is {t_glif / t_other:.2g}× slower than {other}"


def _best_glif(rows: dict[str, Result]) -> str | None:
    glif = [p for p in GLIF_PROVIDERS if p in rows and rows[p].median_ms is not None]
    return min(glif, key=lambda p: rows[p].median_ms) if glif else None


def summary(results: list[Result], env: dict, device: torch.device) -> str:
    """The short report ``sj-glif bench`` prints: the headline case in words."""
    done = results
    if not done:
        return "sj-glif bench: nothing was measured"
    where = env.get("gpu") or f"{env['processor']}"
    lines = [
        f"sj-glif bench on {device.type} ({where}) | torch {env['torch']}, triton "
        f"{env['triton']}, spikingjelly {env['spikingjelly']} | {env['date']}",
    ]
    head = headline_shape({tuple(r.shape) for r in done}, device)
    mode = "fwdbwd" if any(r.mode == "fwdbwd" for r in done) else done[0].mode
    lines.append(
        f"Headline: {MODE_LABELS[mode]} of a training step on a {_shape_text(head)} input; "
        "median ms, lower is better."
    )
    blocks = sorted(
        {(r.threads, r.dtype) for r in done if tuple(r.shape) == head},
        key=lambda k: (k[0], list(DTYPES).index(k[1])),
    )
    first_calls: dict[str, float] = {}
    width = max(len(LABELS[p]) for p in PROVIDERS) + 2
    for threads, d in blocks:
        rows = {
            r.provider: r
            for r in done
            if tuple(r.shape) == head and r.mode == mode and r.dtype == d and r.threads == threads
        }
        reps = max((r.reps for r in rows.values()), default=0)
        tail = f", {threads} threads" if device.type == "cpu" else ""
        lines += ["", f"{d}{tail} (median of {reps}):"]
        best = _best_glif(rows)
        for p, r in rows.items():
            if r.median_ms is None:
                continue
            line = f"  {r.label:<{width}}{_ms(r.median_ms):>8} ms"
            if best is not None and p != best:
                line += "   " + ratio_words(
                    LABELS[best], rows[best].median_ms, r.label, r.median_ms
                )
            lines.append(line)
            if r.first_call_ms is not None and r.first_call_ms > 20 * r.median_ms:
                first_calls[r.label] = max(first_calls.get(r.label, 0.0), r.first_call_ms)
        if best is not None and rows[best].frac_of_copy is not None:
            b = rows[best]
            text = (
                f"  bandwidth: {b.label} moved {b.gbps:.3g} GB/s = {100 * b.frac_of_copy:.0f}%"
                f" of a {_copy_size(env)} copy ({b.copy_gbps:.3g} GB/s); higher is better"
            )
            if b.kernel_frac_of_copy is not None:
                text += (
                    f"; kernels alone (CUDA graph) {b.kernel_gbps:.3g} GB/s = "
                    f"{100 * b.kernel_frac_of_copy:.0f}%"
                )
            lines.append(text)
    if first_calls:
        lines += [
            "",
            "First call (build / compile; not in the medians): "
            + ", ".join(f"{k} {v / 1e3:.1f} s" for k, v in first_calls.items()),
        ]
    skipped: dict[str, str] = {}
    for r in done:
        if r.skipped and r.provider not in skipped:
            skipped[r.provider] = r.skipped
    if skipped:
        lines.append("")
        lines += [f"skipped {LABELS[p]}: {why}" for p, why in skipped.items()]
    return "\n".join(lines)


_COLUMNS = [
    ("provider", "what ran (see below)"),
    ("mode", "fwd: forward of a training step; bwd: its backward; fwd+bwd: both"),
    ("dtype", "input dtype"),
    ("threads", "torch CPU threads"),
    ("shape", "input [T, B, C, H, W]"),
    ("ms", "median wall time of one call, ms; lower is better"),
    ("GB/s", "bytes the GLIF op must move (below) / median time; higher is better"),
    ("% copy", "GB/s as % of one device copy of a large buffer (above); higher is better"),
    (
        "kernel ms",
        "GLIF (Triton) only: GPU time by CUDA-graph replay, no host work; lower is better",
    ),
    ("kernel % copy", "the same as % of the copy; higher is better"),
    ("first call s", "first forward + backward on a fresh module (build, compile), seconds"),
    ("saved MiB", "memory autograd keeps for backward (unique storages); lower is better"),
    (
        "peak MiB",
        "CUDA: peak memory of one training step above what was allocated; lower is better",
    ),
]


def markdown(results: list[Result], env: dict, plan: Plan | None = None) -> str:
    """The full table as Markdown, every column explained."""
    lines = [
        "# sj-glif bench",
        "",
        f"{env['date']}; device {env['device']} ({env.get('gpu') or env['processor']}); "
        f"{env['platform']}; Python {env['python']}, torch {env['torch']}, triton "
        f"{env['triton']}, spikingjelly {env['spikingjelly']}.",
        "",
        "Each case (threads, dtype, shape) builds every provider and calls it once (the first "
        "call, with any build or compile, is reported apart), warms up, then times the "
        "providers and modes interleaved rep by rep; the median is reported. Gradients are "
        "set to None outside the timed region.",
    ]
    if plan is not None:
        lines[-1] += f" {plan.warmup} warm-up steps, {plan.reps} timed reps."
        if plan.compile_headline_only:
            lines[-1] += " GatedLIFNode + torch.compile runs on the headline case only."
    lines += [
        "",
        f"The copy: one device-to-device copy of a {_copy_size(env)} buffer, bytes read and "
        "written, measured once per run (per thread count on the CPU).",
        "",
        "Bytes the GLIF op must move, per input element (`b` = bytes per input element): "
        "forward reads x and writes spikes (2b); backward reads the spike gradient and x and "
        "writes dx (3b). GLIF (Triton) also writes the float32 membrane in the forward and "
        "reads it in the backward (+4 B each). The state (1/T of the input) and the parameters "
        "are not counted. Other providers' GB/s use the same count without the membrane: "
        "the rate at which they do GLIF's work.",
        "",
        "Providers: " + "; ".join(f"`{p}` = {LABELS[p]}" for p in PROVIDERS) + ". "
        "GLIF (PyTorch) and GatedLIFNode are eager; LIF and PLIF are SpikingJelly's "
        "LIFNode / ParametricLIFNode (simpler neurons, for calibration).",
        "",
        "Columns:",
        "",
        *[f"- **{name}**: {what}" for name, what in _COLUMNS],
        "",
        "| " + " | ".join(name for name, _ in _COLUMNS) + " |",
        "|" + "---|" * 5 + "---:|" * (len(_COLUMNS) - 5),
    ]

    def num(v, fmt: str, scale: float = 1.0) -> str:
        return "" if v is None else format(v * scale, fmt)

    for r in results:
        shape = "x".join(map(str, r.shape))
        cells = [
            r.label or LABELS.get(r.provider, r.provider),
            MODE_LABELS[r.mode].replace("forward + backward", "fwd+bwd"),
            r.dtype,
            str(r.threads),
            shape,
        ]
        if r.median_ms is None:
            lines.append(
                "| " + " | ".join(cells) + f" | skipped: {r.skipped} |" + " |" * (len(_COLUMNS) - 6)
            )
            continue
        cells += [
            num(r.median_ms, ".3f"),
            num(r.gbps, ".2f"),
            num(r.frac_of_copy, ".1f", 100),
            num(r.kernel_ms, ".3f"),
            num(r.kernel_frac_of_copy, ".1f", 100),
            num(r.first_call_ms, ".2f", 1e-3),
            num(r.saved_bytes, ".1f", 2**-20),
            num(r.peak_mem_bytes, ".1f", 2**-20),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


_CSV_FIELDS = [f.name for f in fields(Result) if f.name != "extra"]


def _csv_row(r: Result) -> dict:
    row = asdict(r)
    row.pop("extra")
    row["shape"] = "x".join(map(str, r.shape))
    return row


class ResultWriter:
    """Writes results as they come: ``bench.jsonl`` and ``bench.csv`` grow one case at a time
    (so an interrupted run keeps what it measured); :meth:`finish` writes ``bench.json``,
    ``bench.md``, ``summary.txt`` and ``bench.png``.
    """

    def __init__(self, out_dir: Path, env: dict):
        out_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir, self.env = out_dir, env
        self.jsonl = out_dir / "bench.jsonl"
        self.csv = out_dir / "bench.csv"
        with self.jsonl.open("w") as f:
            f.write(json.dumps({"environment": env}) + "\n")
        with self.csv.open("w", newline="") as f:
            csv.DictWriter(f, fieldnames=_CSV_FIELDS).writeheader()

    def add(self, results: list[Result]) -> None:
        """Append one case's results to ``bench.jsonl`` and ``bench.csv``."""
        with self.jsonl.open("a") as f:
            for r in results:
                f.write(json.dumps(asdict(r)) + "\n")
        with self.csv.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=_CSV_FIELDS)
            for r in results:
                w.writerow(_csv_row(r))

    def finish(
        self,
        results: list[Result],
        summary_text: str,
        device: torch.device,
        plan: Plan | None = None,
        plot: bool = True,
    ) -> list[Path]:
        """Write the summary files; returns every path written in this run."""
        d = self.out_dir
        paths = [d / "summary.txt", d / "bench.md", d / "bench.json", self.csv, self.jsonl]
        paths[0].write_text(summary_text + "\n")
        paths[1].write_text(markdown(results, self.env, plan))
        payload = {"environment": self.env, "results": [asdict(r) for r in results]}
        if plan is not None:
            payload["plan"] = asdict(plan)
        paths[2].write_text(json.dumps(payload, indent=1))
        if plot and any(r.median_ms is not None for r in results):
            paths.append(plot_headline(results, self.env, device, d / "bench.png"))
        return paths


def plot_headline(results: list[Result], env: dict, device: torch.device, path: Path) -> Path:
    """Horizontal bars of the headline case: one panel per mode, one row per dtype."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in results if r.median_ms is not None]
    head = headline_shape({tuple(r.shape) for r in done}, device)
    threads = min(r.threads for r in done if tuple(r.shape) == head)
    done = [r for r in done if tuple(r.shape) == head and r.threads == threads]
    modes = [m for m in ("fwdbwd", "fwd", "bwd") if any(r.mode == m for r in done)]
    dtypes = [d for d in DTYPES if any(r.dtype == d for r in done)]
    providers = [p for p in PROVIDERS if any(r.provider == p for r in done)]
    fig, axes = plt.subplots(
        len(dtypes),
        len(modes),
        figsize=(4.6 * len(modes) + 1.6, 0.45 * len(providers) * len(dtypes) + 1.6 * len(dtypes)),
        squeeze=False,
    )
    for i, d in enumerate(dtypes):
        for j, m in enumerate(modes):
            ax = axes[i][j]
            rows = {r.provider: r for r in done if r.dtype == d and r.mode == m}
            names = [p for p in providers if p in rows]
            ys = range(len(names))
            vals = [rows[p].median_ms for p in names]
            colors = ["tab:orange" if p in GLIF_PROVIDERS else "tab:gray" for p in names]
            ax.barh(list(ys), vals, color=colors)
            ax.set_yticks(list(ys), [LABELS[p] for p in names] if j == 0 else [""] * len(names))
            ax.invert_yaxis()
            top = max(vals)
            for y, v in zip(ys, vals, strict=True):
                ax.text(v + top * 0.02, y, _ms(v), va="center", fontsize=9)
            ax.set_xlim(0, top * 1.22)
            ax.set_title(f"{MODE_LABELS[m]}, {d}", fontsize=10)
            ax.set_xlabel("ms (lower is better)")
            ax.grid(axis="x", alpha=0.3)
    where = env.get("gpu") or env["processor"]
    tail = f", {threads} threads" if device.type == "cpu" else ""
    fig.suptitle(
        f"sj-glif bench: {_shape_text(head)} on {device.type} ({where}{tail}), "
        f"{env['date']}\norange: GLIF (sj-glif); gray: SpikingJelly's neurons; "
        "median ms, lower is better",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
