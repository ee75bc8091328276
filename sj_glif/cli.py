"""The ``sj-glif`` console command: ``sj-glif bench`` and ``sj-glif demo``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

__all__ = ["main"]

# (B, C, H, W) per step; T x B*C*H*W neurons per call
_SIZES = {
    "quick-cpu": [(4, 32, 16, 16)],
    "cpu": [(4, 32, 16, 16), (16, 64, 16, 16)],
    "quick-cuda": [(32, 128, 32, 32)],
    "cuda": [(8, 64, 32, 32), (32, 128, 32, 32), (64, 256, 32, 32)],
}


def _parse_size(text: str) -> tuple[int, int, int, int]:
    try:
        b, c, h, w = (int(v) for v in text.lower().split("x"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected BxCxHxW like 16x64x16x16, got {text!r}"
        ) from err
    return b, c, h, w


def _bench_arguments(p: argparse.ArgumentParser) -> None:
    from .bench import DTYPES, MODES, PROVIDERS

    p.add_argument("--quick", action="store_true", help="a short sweep (under 2 min on a CPU)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--providers", nargs="+", choices=PROVIDERS, default=list(PROVIDERS))
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=["float32", "bfloat16"])
    p.add_argument("--T", nargs="+", type=int, default=None, help="time steps to sweep")
    p.add_argument(
        "--sizes", nargs="+", type=_parse_size, default=None, help="per-step BxCxHxW to sweep"
    )
    p.add_argument("--reps", type=int, default=None, help="timed repetitions per case")
    p.add_argument("--out", type=Path, default=Path("sj-glif-bench"), help="results folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _bench(args: argparse.Namespace) -> int:
    from . import bench

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("sj-glif bench: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    kind = ("quick-" if args.quick else "") + device.type
    Ts = args.T or ([4, 8] if args.quick else [4, 8, 16])
    sizes = args.sizes or _SIZES.get(kind, _SIZES["cpu"])
    reps = args.reps or (5 if args.quick else 20)
    providers = list(args.providers)
    if device.type != "cuda" and "glif_triton" in providers:
        providers.remove("glif_triton")
        print("skipped glif_triton: the Triton kernels need CUDA (no CUDA device here)")
    env = bench.environment(device)
    print(f"sj-glif bench on {env.get('gpu') or env['processor']} | torch {env['torch']} | "
          f"triton {env['triton']} | spikingjelly {env['spikingjelly']}")  # fmt: skip
    results = bench.sweep(providers, args.modes, args.dtypes, Ts, sizes, device, reps,
                          progress=not args.no_progress)  # fmt: skip
    print(bench.table(results))
    for against in ("gated_lif", "gated_lif_compile"):
        ups = bench.speedups(results, against)
        for (mode, dtype, _, shape), x in sorted(ups.items()):
            shape_s = "x".join(map(str, shape))
            print(f"GLIF speed-up over {against:<18} {mode:<7} {dtype:<9} {shape_s:<20} {x:6.2f}x")
    skipped = {r.provider: r.skipped for r in results if r.skipped}
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    paths = bench.write(results, env, args.out)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``sj-glif`` (subcommands ``bench`` and ``demo``)."""
    from . import demo, train

    parser = argparse.ArgumentParser(
        prog="sj-glif", description="Gated LIF neurons for SpikingJelly: benchmark and demo."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    pb = sub.add_parser(
        "bench",
        help="time GLIF against SpikingJelly's neurons",
        description="Time sj-glif (Triton on CUDA, PyTorch path) against SpikingJelly's "
        "GatedLIFNode (eager and torch.compile) and LIF/PLIF, in forward, backward and "
        "forward+backward; writes a table, JSON, CSV and a PNG plot.",
    )
    _bench_arguments(pb)
    pb.set_defaults(func=_bench)
    pd = sub.add_parser(
        "demo",
        help="train a small spiking CNN with GLIF, LIF and PLIF",
        description="Train a small spiking convolutional network with GLIF, LIF and PLIF "
        "on scikit-learn's 8x8 digits (or CIFAR-10 from --data), several seeds; prints a "
        "table and writes learning curves and GLIF parameter distributions.",
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
