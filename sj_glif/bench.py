"""Benchmark GLIF against SpikingJelly's neurons: the library behind ``sj-glif bench``.

Providers (each a multi-step neuron on ``x`` of shape ``[T, B, C, H, W]``):

- ``glif_triton``: GLIFNode, fused Triton kernels (CUDA only);
- ``glif_torch``: GLIFNode, PyTorch path (hand-written backward);
- ``gated_lif``: SpikingJelly's ``GatedLIFNode`` (Python loop, autograd);
- ``gated_lif_compile``: the same under ``torch.compile``;
- ``sj_lif`` / ``sj_plif``: SpikingJelly's ``LIFNode`` / ``ParametricLIFNode`` with
  their own automatic implementation: a calibration of what SpikingJelly's fastest
  kernels reach on this device (a simpler neuron: not the same work).

Modes: ``fwd`` (forward of a training step), ``bwd`` (its backward), ``fwdbwd``.
Metrics: median time; achieved bytes/s counted from what the GLIF op must move
(fwd: read x, write spikes and the float32 membrane stream; bwd: read the spike
gradient, x and the membrane stream, write dx), also against a device-to-device copy
measured in the same run; bytes saved for backward (unique storages seen by
``saved_tensors_hooks``); peak memory on CUDA.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from spikingjelly.activation_based import functional, neuron, surrogate

from .node import GLIFNode

PROVIDERS = ("glif_triton", "glif_torch", "gated_lif", "gated_lif_compile", "sj_lif", "sj_plif")
MODES = ("fwd", "bwd", "fwdbwd")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Result:
    provider: str
    mode: str
    dtype: str
    T: int
    shape: list[int]
    neurons: int
    median_ms: float | None
    gbps: float | None = None
    copy_gbps: float | None = None
    frac_of_copy: float | None = None
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


def make_provider(name: str, T: int, C: int, device: torch.device, dtype: torch.dtype):
    """``(module, skipped_reason)`` for provider ``name``; module is None when skipped."""
    if name in ("glif_triton", "glif_torch"):
        backend = name.split("_")[1]
        if backend == "triton" and device.type != "cuda":
            return None, "Triton kernels need CUDA (the interpreter is not a benchmark)"
        m = GLIFNode(T=T, channels=C, step_mode="m", backend=backend).to(device)
        return m, None
    if name == "gated_lif":
        return _gated_lif(T, C, device), None
    if name == "gated_lif_compile":
        m = _gated_lif(T, C, device)
        return torch.compile(m), None
    if name == "sj_lif":
        return neuron.LIFNode(step_mode="m").to(device), None
    if name == "sj_plif":
        return neuron.ParametricLIFNode(step_mode="m").to(device), None
    raise ValueError(f"unknown provider {name!r}; expected one of {PROVIDERS}")


# --------------------------------------------------------------------------- measurement


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], None], device: torch.device) -> float:
    """Milliseconds one call of ``fn`` takes (CUDA events on GPU, wall clock on CPU)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end)
    t = time.perf_counter()
    fn()
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


def op_bytes(mode: str, numel: int, itemsize: int) -> int:
    """Bytes the GLIF op must move for ``numel`` input elements (see module doc)."""
    fwd = numel * (2 * itemsize + 4)
    bwd = numel * (3 * itemsize + 4)
    return {"fwd": fwd, "bwd": bwd, "fwdbwd": fwd + bwd}[mode]


def copy_gbps(numel: int, dtype: torch.dtype, device: torch.device, reps: int) -> float:
    """Bandwidth of a device-to-device copy of ``numel`` elements (read + write)."""
    src = torch.randn(numel, device=device).to(dtype)
    dst = torch.empty_like(src)
    for _ in range(2):
        dst.copy_(src)
    ms = statistics.median(_timed(lambda: dst.copy_(src), device) for _ in range(reps))
    return 2 * src.numel() * src.element_size() / (ms * 1e-3) / 1e9


def measure(
    name: str,
    mode: str,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    device: torch.device,
    warmup: int = 2,
    reps: int = 10,
) -> Result:
    """Median time of ``mode`` for provider ``name`` on input ``shape`` = [T, B, C, ...]."""
    T, C = shape[0], shape[2]
    dname = str(dtype).removeprefix("torch.")
    neurons = int(torch.tensor(shape[1:]).prod())
    res = Result(name, mode, dname, T, list(shape), neurons, None)
    module, why = make_provider(name, T, C, device, dtype)
    if module is None:
        res.skipped = why
        return res
    x = torch.randn(shape, device=device, dtype=dtype).mul_(0.5).add_(0.4).requires_grad_()
    grad = torch.randn(shape, device=device, dtype=dtype)

    def forward() -> torch.Tensor:
        functional.reset_net(module)
        return module(x)

    def step() -> None:
        forward().backward(grad)

    try:
        forward()  # materialize / compile
        for _ in range(warmup):
            step()
        _sync(device)
        if mode == "fwd":
            times = [_timed(forward, device) for _ in range(reps)]
        elif mode == "fwdbwd":
            times = [_timed(step, device) for _ in range(reps)]
        else:
            times = []
            for _ in range(reps):
                out = forward()
                _sync(device)
                times.append(_timed(lambda out=out: out.backward(grad), device))
        res.median_ms = statistics.median(times)
        res.saved_bytes, out = saved_bytes(forward)
        del out
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            step()
            _sync(device)
            res.peak_mem_bytes = torch.cuda.max_memory_allocated(device) - base
    except Exception as err:  # a provider failing must not stop the sweep; it is reported
        res.skipped = f"{type(err).__name__}: {err}"[:300]
        return res
    nbytes = op_bytes(mode, x.numel(), x.element_size())
    res.gbps = nbytes / (res.median_ms * 1e-3) / 1e9
    return res


def sweep(
    providers: Iterable[str],
    modes: Iterable[str],
    dtypes: Iterable[str],
    Ts: Iterable[int],
    bchw: Iterable[tuple[int, int, int, int]],
    device: torch.device,
    reps: int,
    progress: bool = True,
) -> list[Result]:
    """Every combination; the copy bandwidth is measured once per (size, dtype)."""
    from tqdm.auto import tqdm

    combos = [
        (p, m, d, T, s) for d in dtypes for T in Ts for s in bchw for p in providers for m in modes
    ]
    copies: dict[tuple, float] = {}
    results = []
    for p, m, d, T, s in tqdm(combos, desc="sj-glif bench", disable=not progress):
        dtype = DTYPES[d]
        shape = (T, *s)
        r = measure(p, m, shape, dtype, device, reps=reps)
        if r.gbps is not None:
            key = (int(torch.tensor(shape).prod()), d)
            if key not in copies:
                copies[key] = copy_gbps(key[0], dtype, device, reps)
            r.copy_gbps = copies[key]
            r.frac_of_copy = r.gbps / r.copy_gbps
        results.append(r)
    return results


# --------------------------------------------------------------------------- reporting


def speedups(results: list[Result], against: str) -> dict[tuple, float]:
    """``time(against) / time(glif)`` per (mode, dtype, T, shape), GLIF's best provider."""
    out = {}
    by_key: dict[tuple, dict[str, float]] = {}
    for r in results:
        if r.median_ms is not None:
            key = (r.mode, r.dtype, r.T, tuple(r.shape))
            by_key.setdefault(key, {})[r.provider] = r.median_ms
    for key, times in by_key.items():
        glif = [times[p] for p in ("glif_triton", "glif_torch") if p in times]
        if glif and against in times:
            out[key] = times[against] / min(glif)
    return out


def table(results: list[Result]) -> str:
    """A plain-text table of the results."""
    head = f"{'provider':<18}{'mode':<8}{'dtype':<10}{'shape':<22}{'ms':>10}{'GB/s':>9}"
    head += f"{'%copy':>7}{'saved MB':>10}"
    lines = [head, "-" * len(head)]
    for r in results:
        shape = "x".join(map(str, r.shape))
        row = f"{r.provider:<18}{r.mode:<8}{r.dtype:<10}{shape:<22}"
        if r.median_ms is None:
            lines.append(f"{row}  skipped: {r.skipped}")
            continue
        frac = f"{100 * r.frac_of_copy:6.1f}%" if r.frac_of_copy is not None else "      -"
        saved = f"{r.saved_bytes / 2**20:10.1f}" if r.saved_bytes is not None else "         -"
        lines.append(f"{row}{r.median_ms:10.3f}{r.gbps:9.2f}{frac}{saved}")
    return "\n".join(lines)


def write(results: list[Result], env: dict, out_dir: Path, plot: bool = True) -> list[Path]:
    """Write ``bench.json``, ``bench.csv`` and (with matplotlib) ``bench.png`` to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [asdict(r) for r in results]
    paths = [out_dir / "bench.json", out_dir / "bench.csv"]
    paths[0].write_text(json.dumps({"environment": env, "results": rows}, indent=1))
    with paths[1].open("w", newline="") as f:
        cols = [k for k in rows[0] if k != "extra"] if rows else []
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({k: ("x".join(map(str, v)) if k == "shape" else v) for k, v in row.items()})
    if plot and rows:
        paths.append(_plot(results, env, out_dir / "bench.png"))
    return paths


def _plot(results: list[Result], env: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in results if r.median_ms is not None]
    modes = sorted({r.mode for r in done}, key=MODES.index)
    dtypes = sorted({r.dtype for r in done})
    fig, axes = plt.subplots(
        len(dtypes), len(modes), figsize=(4.5 * len(modes), 3.6 * len(dtypes)), squeeze=False
    )
    for i, d in enumerate(dtypes):
        for j, m in enumerate(modes):
            ax = axes[i][j]
            for p in PROVIDERS:
                pts = sorted(
                    (r.T * r.neurons, r.median_ms)
                    for r in done
                    if r.provider == p and r.mode == m and r.dtype == d
                )
                if pts:
                    ax.plot(*zip(*pts, strict=True), marker="o", label=p)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("T x neurons")
            ax.set_ylabel("median ms")
            ax.set_title(f"{m}, {d}")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"sj-glif bench on {env.get('gpu') or env['processor']} ({env['date']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
