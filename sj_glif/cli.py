"""The ``sj-glif`` console command: ``sj-glif bench``, ``sj-glif demo`` and ``sj-glif train``."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import signal
import sys
import warnings
from pathlib import Path

import torch

__all__ = ["main"]

# cases [T, B, C, H, W] when neither --T nor --sizes is given
_CASES = {
    "quick-cpu": [(8, 16, 64, 16, 16)],
    "cpu": [(8, 16, 64, 16, 16), (8, 32, 128, 32, 32), (32, 16, 64, 16, 16)],
    "quick-cuda": [(8, 32, 128, 32, 32)],
    "cuda": [
        (T, *s) for T in (4, 8, 16) for s in ((8, 64, 32, 32), (32, 128, 32, 32), (64, 256, 32, 32))
    ],
}
# (warm-up steps, timed reps) per kind of run
_REPS = {"quick-cpu": (3, 15), "cpu": (3, 21), "quick-cuda": (10, 50), "cuda": (10, 100)}
_DEFAULT_OUT = "sj-glif-bench"


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error: ``sj-glif bench: error: ...`` on stderr, status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """argparse type: an int >= 1 (the message names what came)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _parse_size(text: str) -> tuple[int, int, int, int]:
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        dims = ()
    if len(dims) != 4:
        raise argparse.ArgumentTypeError(f"expected BxCxHxW like 16x64x16x16, got {text!r}")
    if min(dims) < 1:
        raise argparse.ArgumentTypeError(
            f"expected BxCxHxW with every dimension >= 1, got {text!r}"
        )
    return dims


def parse_device(text: str) -> torch.device:
    """``--device``: a device that can compute here (cpu, cuda[:N] when present, mps)."""
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"expected cpu, cuda, cuda:N or mps, got {text!r}"
        ) from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r} but CUDA is not available here")
        n = torch.cuda.device_count()
        if device.index is not None and device.index >= n:
            raise argparse.ArgumentTypeError(
                f"{text!r} but this machine has {n} CUDA device(s): cuda:0 to cuda:{n - 1}"
            )
        return device
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise argparse.ArgumentTypeError(f"{text!r} but MPS is not available here")
        return device
    raise argparse.ArgumentTypeError(
        f"expected cpu, cuda, cuda:N or mps, got {text!r} (a {device.type} device does not "
        "compute here)"
    )


def _out_dir(text: str) -> Path:
    """``--out``: a folder that exists or can be made, and is writable (checked, not made)."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is an existing file; expected a folder")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text!r}: {parent} is not writable")
    return path


def _bench_arguments(p: argparse.ArgumentParser) -> None:
    from .bench import DTYPES, MODES, PROVIDERS

    def quick_or_full(kind: str) -> str:
        return f"{_REPS['quick-' + kind]} with --quick, {_REPS[kind]} without"

    p.add_argument(
        "--quick",
        action="store_true",
        help="only the headline case: [8, 16, 64, 16, 16] on CPU (about 2 min on a quiet "
        "2-core machine), [8, 32, 128, 32, 32] on CUDA (default: off, the full sweep: "
        "[8, 16, 64, 16, 16], [8, 32, 128, 32, 32] and [32, 16, 64, 16, 16] on CPU, tens of "
        "minutes; T 4, 8, 16 x three sizes on CUDA)",
    )
    p.add_argument(
        "--device",
        type=parse_device,
        default=None,
        help="cpu, cuda, cuda:N or mps (default: cuda if available, else cpu)",
    )
    p.add_argument(
        "--providers",
        nargs="+",
        choices=PROVIDERS,
        default=list(PROVIDERS),
        metavar="NAME",
        help=f"what to time, of {', '.join(PROVIDERS)} (default: all; those that cannot run "
        "on the device are skipped and the summary says why)",
    )
    p.add_argument(
        "--modes",
        nargs="+",
        choices=MODES,
        default=list(MODES),
        help="fwd, bwd, fwdbwd (default: all three)",
    )
    p.add_argument(
        "--dtypes",
        nargs="+",
        choices=list(DTYPES),
        default=["float32", "bfloat16"],
        help="input dtypes (default: float32 bfloat16)",
    )
    p.add_argument(
        "--T",
        nargs="+",
        type=positive_int,
        default=None,
        help="time steps to sweep, with --sizes (default: the cases of --quick or the full "
        "sweep; with --sizes alone, 8)",
    )
    p.add_argument(
        "--sizes",
        nargs="+",
        type=_parse_size,
        default=None,
        metavar="BxCxHxW",
        help="per-step sizes to sweep, with --T (default: the cases of --quick or the full sweep)",
    )
    p.add_argument(
        "--threads",
        nargs="+",
        type=positive_int,
        default=None,
        help=f"torch CPU thread counts to sweep (default: torch's, now {torch.get_num_threads()})",
    )
    p.add_argument(
        "--reps",
        type=positive_int,
        default=None,
        help="timed repetitions per provider and mode; the median is reported (default: "
        f"(warm-up, reps) = CPU {quick_or_full('cpu')}; CUDA {quick_or_full('cuda')})",
    )
    p.add_argument(
        "--warmup",
        type=_non_negative_int,
        default=None,
        help="untimed training steps per provider after its first call (default: see --reps)",
    )
    p.add_argument(
        "--copy-mib",
        type=positive_int,
        default=1024,
        help="size of the device-copy buffer the bandwidth is compared with, MiB (default: 1024)",
    )
    p.add_argument(
        "--out",
        type=_out_dir,
        default=_DEFAULT_OUT,
        metavar="DIR",
        help=f"results folder; each case is appended as it completes (default: ./{_DEFAULT_OUT})",
    )
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bar (default: a progress bar)"
    )


def _fail(message: str) -> int:
    print(f"sj-glif bench: error: {message}", file=sys.stderr)
    return 2


def _plan(args: argparse.Namespace, device: torch.device):
    from .bench import Plan

    kind = ("quick-" if args.quick else "") + ("cuda" if device.type == "cuda" else "cpu")
    if args.T is None and args.sizes is None:
        shapes = list(_CASES[kind])
    else:
        sizes = args.sizes or sorted({s[1:] for s in _CASES[kind]})
        shapes = [(T, *s) for T in (args.T or [8]) for s in sizes]
    warmup, reps = _REPS[kind]
    return Plan(
        providers=list(dict.fromkeys(args.providers)),
        modes=list(dict.fromkeys(args.modes)),
        dtypes=list(dict.fromkeys(args.dtypes)),
        shapes=list(dict.fromkeys(shapes)),
        threads=list(dict.fromkeys(args.threads)) if args.threads else [None],
        warmup=warmup if args.warmup is None else args.warmup,
        reps=args.reps or reps,
        copy_bytes=args.copy_mib * 2**20,
        compile_headline_only=device.type == "cuda",
    )


def _interrupt(signum, frame):  # SIGTERM (e.g. `timeout`): stop like Ctrl-C, keep results
    raise KeyboardInterrupt


def _bench(args: argparse.Namespace) -> int:
    from . import bench

    device = args.device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    plan = _plan(args, device)
    env = bench.environment(device)
    env["copy_bytes"] = plan.copy_bytes
    try:
        writer = bench.ResultWriter(args.out, env)
    except OSError as err:
        return _fail(f"cannot write results to --out {str(args.out)!r}: {err.strerror or err}")
    if device.type == "cpu":
        plan.threads = [t or torch.get_num_threads() for t in plan.threads]
    n = len(plan.cases())
    progress = not args.no_progress and importlib.util.find_spec("tqdm") is not None
    print(
        f"sj-glif bench: {n} case(s) x {len(plan.providers)} provider(s) x "
        f"{len(plan.modes)} mode(s) on {device}; results go to {args.out}/ as each case "
        "completes",
        flush=True,
    )
    results: list[bench.Result] = []

    def on_case(case: list[bench.Result]) -> None:
        results.extend(case)
        writer.add(case)

    interrupted, failure = False, None
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _interrupt)
    # warnings and log lines (torch's look sys.stderr up when they print) are held back
    # during the sweep and printed after the progress bar, once each
    real_stderr, held = sys.stderr, io.StringIO()
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(held):
            warnings.simplefilter("always")
            try:
                bench.sweep(
                    plan, device, on_case=on_case, progress=progress, progress_file=real_stderr
                )
            except KeyboardInterrupt:
                interrupted = True
            except Exception as err:  # a bug: keep what was measured, then raise it
                failure = err
    finally:
        signal.signal(signal.SIGTERM, previous)
    messages = [f"{w.category.__name__}: {w.message}" for w in caught]
    messages += held.getvalue().splitlines()
    for line in dict.fromkeys(m.strip() for m in messages if m.strip()):
        print(f"during the run: {line}", file=sys.stderr)
    text = bench.summary(results, env, device) if results else "nothing was measured"
    if interrupted:
        done = len({(r.threads, r.dtype, tuple(r.shape)) for r in results})
        text = f"INTERRUPTED after {done} of {n} case(s): the summary covers those\n{text}"
    print(text)
    plot = importlib.util.find_spec("matplotlib") is not None
    paths = writer.finish(results, text, device, plan, plot=plot)
    print(
        "full table: "
        + str(paths[1])
        + "; data: "
        + ", ".join(str(p) for p in paths[2:])
        + ("" if plot else " (no figure: matplotlib is not installed)")
    )
    if failure is not None:
        raise failure
    return 130 if interrupted else 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``sj-glif`` (subcommands ``bench`` and ``demo``)."""
    from . import __version__, demo, train

    parser = _Parser(
        prog="sj-glif", description="GLIF neurons for SpikingJelly: benchmark, demo and training."
    )
    parser.add_argument("--version", action="version", version=f"sj-glif {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    pb = sub.add_parser(
        "bench",
        help="time GLIF against SpikingJelly's neurons",
        description="Time sj-glif (Triton on CUDA, C++ and PyTorch on the CPU) against "
        "SpikingJelly's GatedLIFNode (eager and torch.compile) and LIF/PLIF, in forward, "
        "backward and forward+backward. Prints a short summary of the headline case; writes "
        "the full table (bench.md), JSON, JSONL, CSV and a figure (bench.png) to --out.",
    )
    _bench_arguments(pb)
    pb.set_defaults(func=_bench)
    pd = sub.add_parser(
        "demo",
        help="GLIF vs LIF vs PLIF on temporal tasks, where GLIF's dynamics matter",
        description="Train a small spiking network with GLIF, LIF and PLIF on MNIST-1D and "
        "8x8 digits as sequences, and on static digits as a contrast; several seeds; prints "
        "tables and the result in words; writes learning curves, GLIF's learned parameters "
        "and membrane traces.",
    )
    demo.add_arguments(pd)
    pd.set_defaults(func=demo.main)
    train.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sj-glif`` console command."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
