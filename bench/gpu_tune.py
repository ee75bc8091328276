"""Measure the Triton kernels' tile configurations on a CUDA GPU (what ``_CONFIG`` holds).

For the forward kernel (training: no membrane stream stored) and the backward (two
launches; the membrane recomputed from ``x``, zero initial state, Sigmoid surrogate), at
the headline channel-first ``[8, 32, 128, 32, 32]`` and the channel-last (ViT-like)
``[8, 32, 196, 384]`` input, in float32 and bfloat16: GPU time of every (elements per
thread, warps) pair by CUDA-graph replay (``triton.testing.do_bench_cudagraph``, median),
and its bandwidth as a share of one 1 GiB device copy (bytes read and written). Bytes
per input element of b bytes: forward 2b (x in, spikes out), backward 3b (spike gradient
and x in, dx out); the state and parameters are not counted.

Compiling every variant takes longer than timing it, so the variants are first compiled
in parallel worker processes (Triton's on-disk cache keeps them), then timed one after
another in one process. Writes ``gpu_tune.json`` and ``gpu_tune.md`` to ``--out``.

    python bench/gpu_tune.py --out bench/results/gpu_tune
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = {  # name: (x shape [T, *step], channel_dim of the step)
    "channel-first [8, 32, 128, 32, 32]": ((8, 32, 128, 32, 32), 1),
    "channel-last [8, 32, 196, 384]": ((8, 32, 196, 384), 2),
}
DTYPES = ("float32", "bfloat16")
EPT = (1, 2, 4, 8)
WARPS = (2, 4, 8, 16)


def variants() -> list[tuple[str, str, str, int, int]]:
    return [
        (k, case, dt, e, w)
        for k, case, dt, e, w in itertools.product(("fwd", "bwd"), CASES, DTYPES, EPT, WARPS)
        if not (k == "bwd" and e * w > 32)  # backward tiles above 1024 elements spill
    ]


def _setup(case: str, dtype: str):
    import torch  # noqa: PLC0415

    shape, cd = CASES[case]
    dt = getattr(torch, dtype)
    g = torch.Generator(device="cuda").manual_seed(0)
    C = shape[1 + cd]
    x = (torch.randn(shape, device="cuda", generator=g) * 0.5 + 0.6).to(dt)
    params = [torch.randn(C, device="cuda", generator=g) * 0.5 for _ in range(7)]
    conduct = torch.randn(shape[0], C, device="cuda", generator=g)
    gs = torch.randn(shape, device="cuda", generator=g).to(dt)
    return x, params, conduct, gs, cd


def _runner(kernel: str, case: str, dtype: str, ept: int, warps: int):
    """A no-argument call of the chosen kernel with ``(ept, warps)`` for its layout class."""
    import sj_glif.kernels.glif as glif  # noqa: PLC0415

    x, params, conduct, gs, cd = _setup(case, dtype)
    layout = "cl" if "last" in case else "cf"
    glif._CONFIG[(kernel, layout, x.element_size())] = (ept, warps)
    glif._fwd_launch.cache_clear()
    glif._bwd_launch.cache_clear()
    kw = dict(t0=0, channel_dim=cd, gate_mode=0)
    if kernel == "fwd":
        return lambda: glif.glif_fwd(x, None, None, *params, conduct, store_u=False, **kw), x
    return (
        lambda: glif.glif_bwd(
            gs,
            None,
            None,
            None,
            x,
            None,
            None,
            None,
            *params,
            conduct,
            surrogate_id=0,
            sg_alpha=4.0,
            detach_reset=False,
            **kw,
        ),
        x,
    )


def compile_part(part: int, parts: int) -> None:
    """Run each variant of this share once (compiles it into Triton's disk cache)."""
    import torch  # noqa: PLC0415

    for v in variants()[part::parts]:
        try:
            fn, _ = _runner(*v)
            fn()
        except Exception as err:  # noqa: BLE001  (measure() reports it with the variant)
            print(f"compile {v}: {type(err).__name__}: {err}"[:300], flush=True)
    torch.cuda.synchronize()


def measure(out: Path, workers: int) -> None:
    import sj_glif.kernels.glif as glif  # noqa: PLC0415
    import torch  # noqa: PLC0415
    import triton  # noqa: PLC0415
    from triton.testing import do_bench_cudagraph  # noqa: PLC0415

    from sj_glif import bench  # noqa: PLC0415

    in_code = dict(glif._CONFIG)  # before the variants overwrite it
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    procs = [
        subprocess.Popen([sys.executable, __file__, "--compile-part", f"{i}/{workers}"], env=env)
        for i in range(workers)
    ]
    failed = [p.args[-1] for p in procs if p.wait() != 0]
    compile_s = time.perf_counter() - t0
    print(f"compiled {len(variants())} variants in {compile_s:.0f} s", flush=True)
    if failed:
        print(f"compile workers failed: {failed}", flush=True)

    copy_gbps = bench.copy_gbps(torch.device("cuda"))  # the 1 GiB copy of sj-glif bench
    rows = []
    for v in variants():
        kernel, case, dtype, ept, warps = v
        try:
            fn, x = _runner(*v)
            fn()
            ms = float(do_bench_cudagraph(fn, rep=100, return_mode="median"))
        except Exception as err:  # noqa: BLE001  (a variant that fails is reported, not fatal)
            rows.append(dict(kernel=kernel, case=case, dtype=dtype, ept=ept, warps=warps,
                             error=f"{type(err).__name__}: {err}"[:200]))  # fmt: skip
            print(rows[-1], flush=True)
            continue
        nbytes = (2 if kernel == "fwd" else 3) * x.numel() * x.element_size()
        gbps = nbytes / (ms * 1e-3) / 1e9
        rows.append(dict(kernel=kernel, case=case, dtype=dtype, ept=ept, warps=warps, ms=ms,
                         gbps=gbps, pct_copy=100 * gbps / copy_gbps))  # fmt: skip
        print(f"{kernel} {case} {dtype} ept={ept} warps={warps}: {ms:.4f} ms "
              f"{100 * gbps / copy_gbps:.1f} % of copy", flush=True)  # fmt: skip
        del fn, x
        torch.cuda.empty_cache()
    env_info = dict(
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        gpu=torch.cuda.get_device_name(0), torch=torch.__version__, triton=triton.__version__,
        python=platform.python_version(), copy_gbps=copy_gbps, compile_s=compile_s,
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_tune.json").write_text(json.dumps(dict(env=env_info, rows=rows), indent=1))
    text = markdown(env_info, rows, in_code)
    (out / "gpu_tune.md").write_text(text)
    print(text)


def markdown(env: dict, rows: list[dict], in_code: dict) -> str:
    """One table per kernel, case and dtype: ms per (elements per thread, warps), the best
    in bold, and the configuration ``in_code`` (the kernels' ``_CONFIG`` when measured)."""
    lines = [
        "# Triton kernel tile configurations, measured",
        "",
        f"`python bench/gpu_tune.py` on {env['date']}: {env['gpu']}, torch {env['torch']}, "
        f"triton {env['triton']}, Python {env['python']}. GPU time by CUDA-graph replay "
        f"(median, ms; lower is better) and, in brackets, bandwidth as % of one 1 GiB device "
        f"copy ({env['copy_gbps']:.0f} GB/s, read + write). Forward: no membrane stream "
        "stored (training). Backward: both launches, membrane recomputed, zero initial "
        "state, Sigmoid. Bytes per input element of b bytes: forward 2b, backward 3b.",
        "",
    ]
    for kernel, case, dtype in itertools.product(("fwd", "bwd"), CASES, DTYPES):
        sel = [r for r in rows if (r["kernel"], r["case"], r["dtype"]) == (kernel, case, dtype)]
        done = [r for r in sel if "ms" in r]
        if not sel:
            continue
        best = min(done, key=lambda r: r["ms"]) if done else None
        layout = "cl" if "last" in case else "cf"
        size = 2 if dtype != "float32" else 4
        now = in_code.get((kernel, layout, size))
        name = "forward" if kernel == "fwd" else "backward"
        lines += [f"## {name}, {case}, {dtype} (in the code now: {now})", ""]
        lines.append("| elements per thread \\ warps | " + " | ".join(map(str, WARPS)) + " |")
        lines.append("|---|" + "---:|" * len(WARPS))
        for e in EPT:
            cells = []
            for w in WARPS:
                r = next((r for r in sel if (r["ept"], r["warps"]) == (e, w)), None)
                if r is None:
                    cells.append("")
                elif "ms" not in r:
                    cells.append("error")
                else:
                    text = f"{r['ms']:.3f} ({r['pct_copy']:.0f} %)"
                    cells.append(f"**{text}**" if r is best else text)
            lines.append(f"| {e} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def host_profile(out: Path, steps: int = 20) -> None:
    """Where the wall time of a GLIF (Triton) training step goes at the headline size:
    ``gpu_tune_host.txt`` with the host time of the forward and of the backward call (no
    synchronisation inside, median µs), the step with synchronisation, and torch.profiler's
    table of CPU and CUDA time per op over ``steps`` steps."""
    import statistics  # noqa: PLC0415

    import torch  # noqa: PLC0415
    from spikingjelly.activation_based import functional  # noqa: PLC0415
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    from sj_glif import GLIFNode  # noqa: PLC0415

    shape = CASES["channel-first [8, 32, 128, 32, 32]"][0]
    x = torch.randn(shape, device="cuda").requires_grad_()
    node = GLIFNode(T=shape[0], channels=shape[2], step_mode="m", backend="triton").cuda()
    grad = torch.randn(shape, device="cuda")
    fwd_us, bwd_us, step_us = [], [], []
    for i in range(60):
        torch.cuda.synchronize()
        t = time.perf_counter()
        functional.reset_net(node)
        y = node(x)
        t1 = time.perf_counter()
        y.backward(grad)
        t2 = time.perf_counter()
        torch.cuda.synchronize()
        t3 = time.perf_counter()
        x.grad = None
        for p in node.parameters():
            p.grad = None
        if i >= 10:
            fwd_us.append((t1 - t) * 1e6)
            bwd_us.append((t2 - t1) * 1e6)
            step_us.append((t3 - t) * 1e6)
    lines = [
        f"GLIFNode (Triton), {list(shape)} float32, median of 50 steps, µs: host forward call "
        f"{statistics.median(fwd_us):.0f}, host backward call {statistics.median(bwd_us):.0f}, "
        f"whole step synchronised {statistics.median(step_us):.0f}",
        "",
    ]
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            functional.reset_net(node)
            node(x).backward(grad)
            x.grad = None
            for p in node.parameters():
                p.grad = None
        torch.cuda.synchronize()
    lines.append(f"torch.profiler over {steps} steps, by CPU time:")
    lines.append(prof.key_averages().table(sort_by="cpu_time_total", row_limit=30))
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_tune_host.txt").write_text("\n".join(lines))
    print("\n".join(lines), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("sj-glif-bench/gpu_tune"))
    p.add_argument("--workers", type=int, default=8, help="compile processes (default: 8)")
    p.add_argument("--compile-part", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.compile_part:
        part, parts = map(int, args.compile_part.split("/"))
        compile_part(part, parts)
        return
    host_profile(args.out)
    measure(args.out, args.workers)


if __name__ == "__main__":
    main()
