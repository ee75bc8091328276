"""The fused C++ implementation of the GLIF op for the CPU: build, load, launch.

The source is ``sj_glif/csrc/glif_cpu.cpp`` (shipped with the package). It is compiled on
first use with :func:`torch.utils.cpp_extension.load` for the machine it runs on
(``-O3 -march=native -fno-trapping-math``), once for every shape and dtype, and cached
on disk: ``$TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``), in a folder
named after a hash of the source, the compiler flags, the CPU model and flags, and the
torch version, so a cache shared between machines never loads a build for another CPU.
A cold build takes tens of seconds (one log line says so, and where it caches); later
processes load the cached library in well under a second.

The build is tried once per process and the outcome cached. Where it fails (no C++
compiler, no ninja, ...), :func:`unavailable_reason` gives a one-line reason, one log
line says that GLIF runs the PyTorch path instead, and
:func:`sj_glif.implementation_for` reports it.

:func:`cpp_fwd` / :func:`cpp_bwd` take and return exactly what the ``sj_glif::glif_fwd``
/ ``sj_glif::glif_bwd`` ops of :mod:`sj_glif.ops` do (and :mod:`sj_glif.torch_path`'s
``torch_fwd`` / ``torch_bwd``), with ``v0``/``s0`` and every incoming gradient allowed to
be ``None`` (zero), and an output that does not exist (the membranes unless ``store_u``,
the gradient of a state given as None) returned as None where the ops return an empty
tensor. The kernel reads a non-contiguous ``x`` (or gradient) through one
``.contiguous()`` copy; outputs are contiguous.

Threads: ``at::parallel_for``, i.e. torch's own pool and ``torch.get_num_threads()``. With
torch's OpenMP backend on Linux the extension is built with ``-fopenmp`` and shares
torch's ``libgomp``; elsewhere it runs on one thread. Results do not depend on the
thread count (per-channel sums are reduced in a fixed order).
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import sys
import threading
import time
from pathlib import Path

import torch
from torch import Tensor

__all__ = [
    "available",
    "build_directory",
    "cpp_bwd",
    "cpp_fwd",
    "load",
    "unavailable_reason",
]

log = logging.getLogger("sj_glif")

LIBRARY = "sj_glif_cpu"
SOURCE = Path(__file__).resolve().parent / "csrc" / "glif_cpu.cpp"

_lock = threading.Lock()
_result: dict[str, object] = {}  # "ops" on success, "error" (one line) and "log" on failure


def _openmp() -> bool:
    """Whether ATen parallelises with OpenMP here. Its ``at::parallel_for`` is then inline
    OpenMP code, which runs serially unless the extension is built with -fopenmp; linked
    so, the extension shares torch's libgomp.so.1 (already loaded, same soname), hence
    torch's thread pool and ``torch.get_num_threads()``."""
    return sys.platform.startswith("linux") and "OpenMP" in torch.__config__.parallel_info()


def _cflags() -> list[str]:
    if sys.platform == "win32":
        return ["/O2", "/std:c++20"]
    native = "-mcpu=native" if platform.machine() in ("arm64", "aarch64") else "-march=native"
    # -fno-trapping-math lets GCC vectorise the selects (spike = u >= theta) in the loops
    flags = ["-O3", native, "-fno-trapping-math", "-fno-math-errno"]
    return flags + (["-fopenmp"] if _openmp() else ["-fopenmp-simd"])


def _ldflags() -> list[str]:
    return ["-fopenmp"] if _openmp() and sys.platform != "win32" else []


def _cpu_signature() -> str:
    """CPU model and instruction-set flags: a -march=native build is only valid there."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags", "Features"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return f"{platform.machine()} {platform.processor()}"


def _cpp_extension():
    """``torch.utils.cpp_extension``, imported with its import-time notice that no CUDA
    runtime was found silenced: a CPU build needs none."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension  # noqa: PLC0415
    finally:
        logger.setLevel(level)
    return cpp_extension


def build_directory() -> Path:
    """Where the compiled library is (or will be) cached for this machine and source."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or _cpp_extension().get_default_build_root()
    key = hashlib.sha256()
    for part in (
        SOURCE.read_bytes(),
        " ".join(_cflags() + _ldflags()).encode(),
        _cpu_signature().encode(),
        torch.__version__.encode(),
        os.environ.get("CXX", "").encode(),
        sys.version.encode(),
    ):
        key.update(part)
        key.update(b"\0")
    return Path(root) / f"{LIBRARY}_{key.hexdigest()[:16]}"


def _one_line(exc: BaseException) -> str:
    """A build failure in one line: the first compiler/linker line that says 'error' or
    'not found' (torch puts the whole build log in the message), else the message's
    first line."""
    text = str(exc).strip() or type(exc).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    detail = next((ln for ln in lines if "error:" in ln.lower()), None) or next(
        (ln for ln in lines[1:] if "error" in ln.lower() or "not found" in ln.lower()), None
    )
    line = f"{type(exc).__name__}: {detail or (lines[0] if lines else '')}".rstrip(": ")
    return line if len(line) <= 300 else line[:297] + "..."


def _build():
    cpp_extension = _cpp_extension()
    directory = build_directory()
    directory.mkdir(parents=True, exist_ok=True)
    cached = any(directory.glob(f"{LIBRARY}.*")) and (directory / "build.ninja").is_file()
    if not cached:
        log.warning(
            "sj_glif: building the fused C++ CPU implementation (once per machine, tens of "
            "seconds); cached in %s",
            directory,
        )
    start = time.perf_counter()
    cpp_extension.load(
        name=LIBRARY,
        sources=[str(SOURCE)],
        extra_cflags=_cflags(),
        extra_ldflags=_ldflags(),
        build_directory=str(directory),
        is_python_module=False,
        verbose=False,
    )
    log.info(
        "sj_glif: fused C++ CPU implementation %s in %.1f s (%s)",
        "loaded" if cached else "built",
        time.perf_counter() - start,
        directory,
    )
    return getattr(torch.ops, LIBRARY)


def load():
    """The compiled ops (``torch.ops.sj_glif_cpu``), building them on first use.

    Raises:
        RuntimeError: the build failed (the message says why); tried once per process.
    """
    if "ops" in _result:
        return _result["ops"]
    with _lock:
        if "ops" not in _result and "error" not in _result:
            try:
                _result["ops"] = _build()
            except Exception as exc:  # any build failure: compiler, ninja, linker, loader
                _result["error"] = _one_line(exc)
                _result["log"] = str(exc)
                log.warning(
                    "sj_glif: the fused C++ CPU implementation is unavailable (%s); GLIF runs "
                    "the PyTorch path on the CPU",
                    _result["error"],
                )
    if "error" in _result:
        raise RuntimeError(f"sj_glif: the fused C++ CPU implementation is unavailable: "
                           f"{_result['error']}")  # fmt: skip
    return _result["ops"]


def unavailable_reason() -> str | None:
    """``None`` if the C++ implementation is (now) loaded, else why not, in one line."""
    try:
        load()
    except RuntimeError:
        return str(_result["error"])
    return None


def available() -> bool:
    """Whether the fused C++ CPU implementation builds and loads on this machine."""
    return unavailable_reason() is None


# --------------------------------------------------------------------------- launchers


def cpp_fwd(
    x: Tensor,
    v0: Tensor | None,
    s0: Tensor | None,
    alpha: Tensor | None,
    beta: Tensor | None,
    gamma: Tensor | None,
    tau: Tensor,
    v_threshold: Tensor,
    linear_decay: Tensor,
    v_subreset: Tensor,
    conduct: Tensor,
    t0: int,
    channel_dim: int,
    gate_mode: int,
    store_u: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """GLIF forward over ``T`` steps on the CPU.

    Args:
        x: input ``[T, *step]``, float16/bfloat16/float32/float64.
        v0, s0: initial membrane and previous spike, ``step`` shape (compute dtype), or
            None for zeros.
        alpha, beta, gamma: raw gates ``[C]`` or ``[]`` (ignored, may be None, for
            ``gate_mode=2``).
        tau, v_threshold, linear_decay, v_subreset: raw parameters ``[C]`` or ``[]``.
        conduct: raw conductance ``[T_rows, C]`` or ``[T_rows]``; step ``t`` uses row ``t0 + t``.
        t0: first conduct row. channel_dim: channel axis of ``step``.
        gate_mode: 0 soft, 1 hard, 2 coarse (GLIF_f).
        store_u: also return the membranes.

    Returns:
        ``(spike_seq [T, *step] in x's dtype, v_last, s_last [step] and u_seq [T, *step]
        in the compute dtype (None unless store_u))``.
    """
    spike, v_last, s_last, u_seq = load().fwd(x, v0, s0, alpha, beta, gamma, tau, v_threshold,
                                              linear_decay, v_subreset, conduct, t0,
                                              channel_dim, gate_mode, store_u)  # fmt: skip
    return spike, v_last, s_last, (u_seq if store_u else None)


def cpp_bwd(
    grad_spike: Tensor | None,
    grad_v_last: Tensor | None,
    grad_s_last: Tensor | None,
    grad_u_seq: Tensor | None,
    x: Tensor,
    v0: Tensor | None,
    s0: Tensor | None,
    u_seq: Tensor | None,
    alpha: Tensor | None,
    beta: Tensor | None,
    gamma: Tensor | None,
    tau: Tensor,
    v_threshold: Tensor,
    linear_decay: Tensor,
    v_subreset: Tensor,
    conduct: Tensor,
    t0: int,
    channel_dim: int,
    gate_mode: int,
    surrogate_id: int,
    sg_alpha: float,
    detach_reset: bool,
) -> list[Tensor]:
    """GLIF backward over ``T`` steps on the CPU (reverse time).

    Args:
        grad_spike: ``[T, *step]`` gradient of ``spike_seq``, or None (zero).
        grad_v_last, grad_s_last: gradients of the final state ``[step]``, or None.
        grad_u_seq: gradient of the membranes ``[T, *step]``, or None.
        x, v0, s0, parameters, t0, channel_dim, gate_mode: as in :func:`cpp_fwd`.
        u_seq: the stored membranes, or None (or an empty tensor): then they are
            recomputed per tile.
        surrogate_id, sg_alpha: the fused surrogate (:mod:`sj_glif.surrogates`).
        detach_reset: no gradient through the previous spike in the reset terms.

    Returns:
        ``[dx (x's dtype), dv0, ds0 (compute dtype; None where v0 / s0 is None: a zero
        state has no gradient, and none is computed), d_alpha, d_beta, d_gamma, d_tau,
        d_v_threshold, d_linear_decay, d_v_subreset (each its parameter's shape and dtype),
        d_conduct (zero outside rows t0..t0+T-1)]``. Per-channel sums are reduced in a
        fixed order: the result does not depend on the thread count.
    """
    if u_seq is None:  # the extension takes an empty tensor for "recompute"
        u_seq = x.new_empty(0)
    out = list(load().bwd(grad_spike, grad_v_last, grad_s_last, grad_u_seq, x, v0, s0, u_seq,
                          alpha, beta, gamma, tau, v_threshold, linear_decay, v_subreset,
                          conduct, t0, channel_dim, gate_mode, surrogate_id, float(sg_alpha),
                          detach_reset))  # fmt: skip
    if v0 is None:  # the extension's empty placeholders: no gradient
        out[1] = None
    if s0 is None:
        out[2] = None
    return out
