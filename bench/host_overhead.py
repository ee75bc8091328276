"""Host (Python) work of one GLIF training step, with the Triton kernels stubbed out.

What it measures, per training step (forward + backward of one GLIF layer on the
Triton path, ``[T, B, C, H, W]`` small, since no kernel computes):

- the Python time per step (median), the kernels replaced by stubs that only count
  their launches (every ``@triton.jit`` object of ``sj_glif.kernels.glif``, so the
  launchers' own host code, allocations and finishing ops still run);
- the device work a step would launch: the stubbed Triton launches plus every torch
  op that computes (a ``TorchDispatchMode`` counting all ops but views and
  allocations of uninitialised memory, custom ``sj_glif::`` ops counted through their
  bodies). Autograd's own gradient accumulation is not counted: gradients are set to
  None before each step, so the first gradient is taken over without a copy.

Two paths: ``node`` (``GLIFNode``, multi-step, reset before each step, as in
training) and ``functional`` (``glif_multi_step`` with zero initial state).

BEFORE and AFTER: the same measurement runs against a baseline commit (extracted
with ``git archive`` into a temporary folder) and against this checkout, each in its
own subprocess (two ``sj_glif`` packages cannot share one process: they register the
same ``torch.library`` ops), alternating rounds so that machine noise hits both.

Run from the repository root::

    python bench/host_overhead.py --base main          # writes bench/results/host_overhead.*
    python bench/host_overhead.py --worker . --path node   # one worker, JSON to stdout
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from inspect import signature
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHAPE = (8, 2, 8, 4, 4)  # [T, B, C, H, W]; tiny: the kernels are stubbed


# --------------------------------------------------------------------------- worker


def _signature(fn) -> set[str]:
    return set(signature(fn).parameters)


def _worker(src: str, path: str, steps: int) -> dict:
    """Measure in this process with ``sj_glif`` imported from ``src``."""
    os.environ["TRITON_INTERPRET"] = "1"  # backend="triton" on the CPU; nothing compiles
    os.environ.pop("SJ_GLIF_IMPLEMENTATION", None)
    sys.path.insert(0, str(Path(src).resolve()))
    import torch  # noqa: PLC0415
    from sj_glif.kernels import glif as kernels  # noqa: PLC0415
    from spikingjelly.activation_based import surrogate  # noqa: PLC0415
    from torch.utils._python_dispatch import TorchDispatchMode  # noqa: PLC0415
    from triton.runtime.jit import KernelInterface  # noqa: PLC0415

    import sj_glif  # noqa: PLC0415

    assert Path(sj_glif.__file__).resolve().is_relative_to(Path(src).resolve()), sj_glif.__file__
    torch.set_num_threads(1)

    launches = []

    class _Stub:
        def __init__(self, name: str):
            self.name = name

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                launches.append(self.name)

            return launch

    for name in dir(kernels):
        if isinstance(getattr(kernels, name), KernelInterface):
            setattr(kernels, name, _Stub(name))

    T, B, C, H, W = SHAPE
    x = torch.randn(SHAPE, requires_grad=True)
    grad = torch.randn(SHAPE)
    sg = surrogate.Sigmoid()
    if path == "node":
        node = sj_glif.GLIFNode(T=T, channels=C, step_mode="m", backend="triton",
                                surrogate_function=sg)  # fmt: skip
        leaves = [x, *node.parameters()]

        def step() -> None:
            node.reset()
            torch.autograd.backward(node(x), grad)

    else:
        names = ("alpha", "beta", "gamma", "tau", "v_threshold", "linear_decay", "v_subreset")
        params = {n: (torch.rand(C) - 0.5).requires_grad_() for n in names}
        params["conduct"] = torch.rand(T, C).requires_grad_()
        leaves = [x, *params.values()]

        def step() -> None:
            out = sj_glif.glif_multi_step(x, 0.0, 0.0, **params, surrogate_function=sg,
                                          backend="triton")  # fmt: skip
            torch.autograd.backward(out.spike_seq, grad)

    def clear() -> None:
        for p in leaves:
            p.grad = None

    skip = {"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided"}
    customs = {}
    for mod in (getattr(sj_glif, "ops", None),):
        for obj in vars(mod).values():
            init = getattr(obj, "_init_fn", None)
            if init is not None and hasattr(obj, "_qualname"):
                customs[obj._qualname] = init

    counted: list[str] = []

    def _storages(obj) -> set[int]:
        flat = obj if isinstance(obj, (list, tuple)) else [obj]
        return {t.untyped_storage().data_ptr() for t in flat if isinstance(t, torch.Tensor)}

    def _aliases(out, args) -> bool:
        return bool(_storages(out)) and _storages(out) <= _storages(list(args))

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            qual = f"{func.namespace}::{func._schema.name.split('::')[-1]}"
            if qual in customs:  # count what the custom op's body runs
                with self:
                    return customs[qual](*args, **kwargs)
            name = func._schema.name.split("::")[-1]
            out = func(*args, **kwargs)
            # an aliasing op (``to``, ``reshape``, ``contiguous``) counts when it copied
            if func.namespace == "aten" and name not in skip:
                if not func.is_view or not _aliases(out, args):
                    counted.append(name)
            return out

    for _ in range(20):  # warm-up (and the node's lazy materialization)
        clear()
        step()
    clear()
    launches.clear()
    with Count():
        step()
    n_triton = len(launches)
    times = []
    for _ in range(steps):
        clear()
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return {
        "path": path,
        "median_us": statistics.median(times) * 1e6,
        "triton_launches": n_triton,
        "torch_ops": len(counted),
        "torch_op_names": counted,
        "launches_per_step": n_triton + len(counted),
        "launcher_api": "old" if "surrogate_id" in _signature(kernels.glif_fwd) else "new",
    }


def _boundary(steps: int, rounds: int) -> dict:
    """This checkout only: the autograd boundary alone, the implementations stubbed
    (``_fwd_impl``/``_bwd_impl`` return empty outputs): the ``torch.library`` op with
    registered autograd, the eager ``autograd.Function``, and the whole
    ``glif_multi_step`` around it (what sj-glif adds to a launcher's own host time),
    interleaved."""
    sys.path.insert(0, str(ROOT))
    import torch  # noqa: PLC0415

    from sj_glif import ops  # noqa: PLC0415

    torch.set_num_threads(1)
    T, B, C, H, W = SHAPE
    x = torch.randn(SHAPE, requires_grad=True)
    grad = torch.randn(SHAPE)
    params = [torch.rand(C).requires_grad_() for _ in range(7)] + [
        torch.rand(T, C).requires_grad_()
    ]
    flags = (0, 1, 0, 0, 4.0, False, False, "torch")

    def fwd(x, v0, s0, *rest):
        state = torch.empty(x.shape[1:])
        return torch.empty_like(x), state, torch.empty_like(state), x.new_empty(0)

    def bwd(grad_spike, grad_v, grad_s, grad_u, x, v0, s0, u_seq, *rest):
        state = [torch.empty(x.shape[1:]) for _ in range(2)]
        return [torch.empty_like(x), *state, *(torch.empty_like(p) for p in rest[:8])]

    ops._fwd_impl, ops._bwd_impl = fwd, bwd
    names = ("alpha", "beta", "gamma", "tau", "v_threshold", "linear_decay", "v_subreset")
    kw = {**dict(zip(names, params, strict=False)), "conduct": params[7]}

    def multi_step(x, v0, s0, *rest):  # validation, dispatch and the Function
        return ops.glif_multi_step(x, **kw, backend="torch")

    entries = {
        "torch.library op": ops._glif_fwd_op,
        "autograd.Function": lambda *a: ops._GLIFFunction.apply(*a[:11], a[11:]),
        "glif_multi_step (Function + validation)": multi_step,
    }
    medians: dict[str, list[float]] = {name: [] for name in entries}
    for _ in range(rounds):
        for name, entry in entries.items():
            times = []
            for _ in range(steps):
                for p in (x, *params):
                    p.grad = None
                t = time.perf_counter()
                torch.autograd.backward(entry(x, None, None, *params, *flags)[0], grad)
                times.append(time.perf_counter() - t)
            medians[name].append(statistics.median(times[20:]) * 1e6)
    return {name: statistics.median(m) for name, m in medians.items()}


# --------------------------------------------------------------------------- driver


def _git(*args: str) -> str:
    return subprocess.check_output(["git", "-C", str(ROOT), *args], text=True).strip()


def _run_worker(src: Path, path: str, steps: int) -> dict:
    out = subprocess.check_output(
        [sys.executable, __file__, "--worker", str(src), "--path", path, "--steps", str(steps)],
        cwd=src,
        text=True,
    )
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="main", help="baseline commit (default: main)")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    ap.add_argument("--steps", type=int, default=300, help="timed steps per round (default 300)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "host_overhead"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--path", default="node", choices=("node", "functional"))
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker, args.path, args.steps)))
        return
    if args.rounds < 1 or args.steps < 1:
        ap.error("--rounds and --steps must be positive")

    import torch  # noqa: PLC0415  (versions for the record)

    base = _git("rev-parse", args.base)
    head = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    results: dict[str, dict[str, list[dict]]] = {"before": {}, "after": {}}
    with tempfile.TemporaryDirectory() as tmp:
        base_src = Path(tmp) / "base"
        base_src.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", base], check=True,
                                 capture_output=True).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(base_src)], input=archive, check=True)
        for r in range(args.rounds):
            for path in ("node", "functional"):
                order = [("before", base_src), ("after", ROOT)]
                for label, src in order if r % 2 == 0 else order[::-1]:
                    res = _run_worker(src, path, args.steps)
                    results[label].setdefault(path, []).append(res)
                    print(f"round {r} {label:6s} {path:10s} {res['median_us']:8.1f} us "
                          f"{res['launches_per_step']} launches", flush=True)  # fmt: skip

    boundary = _boundary(args.steps, args.rounds)
    summary = {}
    for label, by_path in results.items():
        for path, runs in by_path.items():
            summary.setdefault(path, {})[label] = {
                "median_us": statistics.median(r["median_us"] for r in runs),
                "round_medians_us": [round(r["median_us"], 1) for r in runs],
                "triton_launches": runs[0]["triton_launches"],
                "torch_ops": runs[0]["torch_ops"],
                "torch_op_names": runs[0]["torch_op_names"],
                "launches_per_step": runs[0]["launches_per_step"],
                "launcher_api": runs[0]["launcher_api"],
            }
    record = {
        "benchmark": "bench/host_overhead.py",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs (shared)",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "shape": list(SHAPE),
        "before_commit": base,
        "after_commit": head + (" (with uncommitted changes)" if dirty else ""),
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "results": summary,
        "boundary_only_us": boundary,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        "# Host work per GLIF training step (Triton kernels stubbed)",
        "",
        f"`python bench/host_overhead.py` on {record['date']}; {record['machine']}, "
        f"Python {record['python']}, torch {record['torch']}, one torch thread.",
        f"Shape `{list(SHAPE)}` float32, surrogate Sigmoid, forward + backward of one layer; "
        f"median over {args.rounds} alternating rounds of each round's median of "
        f"{args.steps} steps.",
        f"Before: `{base[:12]}`; after: `{record['after_commit'][:12]}`"
        + (" (with uncommitted changes)" if dirty else "")
        + ".",
        "",
        "| path | before µs | after µs | after / before | launches before | launches after |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for path, s in summary.items():
        b, a = s["before"], s["after"]
        lines.append(
            f"| {path} | {b['median_us']:.0f} | {a['median_us']:.0f} | "
            f"{a['median_us'] / b['median_us']:.2f} | {b['launches_per_step']} "
            f"({b['triton_launches']} Triton + {b['torch_ops']} torch) | "
            f"{a['launches_per_step']} ({a['triton_launches']} Triton + {a['torch_ops']} torch) |"
        )
    lines += [
        "",
        "The op boundary alone (this checkout, `_fwd_impl`/`_bwd_impl` stubbed, so neither "
        "launcher nor torch path runs; forward + backward, median µs): "
        + ", ".join(f"{name} {us:.0f}" for name, us in boundary.items())
        + ". Eager calls take the `autograd.Function`; `torch.compile` traces the op.",
    ]
    if any(r[0]["launcher_api"] == "old" for r in results["after"].values()):
        lines += [
            "",
            "The after column runs the Triton launchers from before the issue-9 launcher API "
            "(`glif_fwd(..., surrogate_id, sg_alpha, store_u)`): the ops they need around them "
            "are theirs, not the op boundary's. `zeros, zeros` is the zero state those "
            "launchers need as tensors (filled once; `full, full` on the node path is "
            "GLIFNode's own state), `_to_copy` the `s_last` copy, `sum, zeros, sum, copy_` "
            "the partial-sum finish and `d_conduct` assembly, and the seven `clone`s the "
            "parameter gradients. The new API takes a None state, writes `s_last` in the "
            "kernel and finishes in one kernel; `tests/test_host_work.py` then asserts at "
            "most four launches per step.",
        ]
    lines += ["", "Torch ops counted per step:", ""]
    for path, s in summary.items():
        for label in ("before", "after"):
            lines.append(f"- {path}, {label}: {', '.join(s[label]['torch_op_names']) or 'none'}")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
