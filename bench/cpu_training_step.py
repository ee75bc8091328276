"""One training step (forward + backward) of GLIFNode vs SpikingJelly's GatedLIFNode on CPU.

Shape [T=8, B=16, C=64, 16, 16], float32; the two neurons are timed interleaved in one
process (sj_glif.bench.measure_case), gradients reset outside the timed region. Reports the
median time and the bytes autograd saves for backward, and writes cpu_training_step.json
and cpu_training_step.md to --out (default ./sj-glif-bench/cpu_training_step; the
committed results are updated only when asked: --out bench/results).

    python bench/cpu_training_step.py [--reps 21] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from sj_glif import bench
from sj_glif.cli import positive_int

SHAPE = (8, 16, 64, 16, 16)
DEFAULT_OUT = Path("sj-glif-bench") / "cpu_training_step"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=positive_int, default=21, help="timed steps (default 21)")
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"results folder (default ./{DEFAULT_OUT}; bench/results updates the committed ones)",
    )
    args = parser.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {str(args.out)!r} is an existing file; expected a folder")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        parser.error(f"cannot make --out {str(args.out)!r}: {err.strerror or err}")
    device = torch.device("cpu")
    env = bench.environment(device)
    glif, peer = bench.measure_case(
        ["glif_torch", "gated_lif"],
        ["fwdbwd"],
        SHAPE,
        torch.float32,
        device,
        warmup=3,
        reps=args.reps,
    )
    for r in (glif, peer):
        if r.median_ms is None:
            print(f"{r.label} did not run: {r.skipped}", file=sys.stderr)
            return 1
    speedup = peer.median_ms / glif.median_ms
    mem_ratio = glif.saved_bytes / peer.saved_bytes
    summary = {
        "environment": env,
        "shape": list(SHAPE),
        "dtype": "float32",
        "reps": args.reps,
        "glif_torch": {"median_ms": glif.median_ms, "saved_bytes": glif.saved_bytes},
        "gated_lif": {"median_ms": peer.median_ms, "saved_bytes": peer.saved_bytes},
        "speedup": speedup,
        "saved_bytes_ratio": mem_ratio,
        "goal": "speedup >= 2, saved_bytes_ratio <= 1/3",
    }
    (args.out / "cpu_training_step.json").write_text(json.dumps(summary, indent=1))
    md = [
        "# One training step on CPU: GLIFNode (PyTorch path) vs SpikingJelly GatedLIFNode",
        "",
        f"Input `[T, B, C, H, W] = {list(SHAPE)}`, float32, forward + backward, median of "
        f"{args.reps} after warm-up, the two interleaved in one process, gradients reset "
        f"outside the timed region. {env['date']}; {env['processor']}, {env['cpu_threads']} "
        f"threads; torch {env['torch']}, spikingjelly {env['spikingjelly']}, "
        f"Python {env['python']}.",
        "",
        "| neuron | median ms (lower is better) | saved for backward (MiB) |",
        "|---|---:|---:|",
        f"| sj-glif GLIFNode (torch) | {glif.median_ms:.2f} | {glif.saved_bytes / 2**20:.1f} |",
        f"| SpikingJelly GatedLIFNode | {peer.median_ms:.2f} | {peer.saved_bytes / 2**20:.1f} |",
        "",
        f"Speed-up {speedup:.2f}x (goal >= 2x); saved memory {mem_ratio:.2f} of "
        "GatedLIFNode's (goal <= 0.33).",
        "",
    ]
    (args.out / "cpu_training_step.md").write_text("\n".join(md))
    print("\n".join(md))
    print(f"wrote {args.out / 'cpu_training_step.md'} and cpu_training_step.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
