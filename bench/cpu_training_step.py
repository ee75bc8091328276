"""One training step (forward + backward) of GLIFNode vs SpikingJelly's GatedLIFNode on CPU.

Shape [T=8, B=16, C=64, 16, 16], float32. Reports the median time and the bytes autograd
saves for backward, and writes bench/results/cpu_training_step.{json,md}.

    python bench/cpu_training_step.py [--reps 21]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from sj_glif import bench

SHAPE = (8, 16, 64, 16, 16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=21)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    device = torch.device("cpu")
    env = bench.environment(device)
    rows = {
        name: bench.measure(name, "fwdbwd", SHAPE, torch.float32, device, reps=args.reps)
        for name in ("glif_torch", "gated_lif")
    }
    glif, peer = rows["glif_torch"], rows["gated_lif"]
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
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cpu_training_step.json").write_text(json.dumps(summary, indent=1))
    md = [
        "# One training step on CPU: GLIFNode (PyTorch path) vs SpikingJelly GatedLIFNode",
        "",
        f"Input `[T, B, C, H, W] = {list(SHAPE)}`, float32, forward + backward, median of "
        f"{args.reps} after warm-up. {env['date']}; {env['processor']}, {env['cpu_threads']} "
        f"threads; torch {env['torch']}, spikingjelly {env['spikingjelly']}, "
        f"Python {env['python']}.",
        "",
        "| neuron | median ms | saved for backward (MiB) |",
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


if __name__ == "__main__":
    main()
