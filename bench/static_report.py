"""Static report of the GLIF Triton kernels: compiled ahead of time for sm_90, no GPU needed.

For each headline variant (forward and backward; float32 and bfloat16; channel-first and
channel-last; soft gates, sigmoid surrogate; plus the backward with ``detach_reset``, the
coarse backward and the finish kernel) this script runs the real launchers
(:func:`glif_fwd` / :func:`glif_bwd`) on ``meta`` tensors of the headline shapes to capture
exactly the launch they would make (tile sizes, warps, ``constexpr`` flags, which integer
arguments Triton specializes), compiles that launch with ``triton.compile`` for
``GPUTarget("cuda", 90, 32)`` (Triton's bundled ``ptxas``), and records:

- registers per thread, spill bytes (stores + loads) and local memory, from ``ptxas -v``
  on the kernel's PTX and ``cuobjdump -res-usage`` on the compiled cubin;
- shared memory (Triton's allocation);
- global load/store vector widths in bytes (``ld.global.v4.b32`` is 16), inside the time
  loop and in total;
- block barriers (``bar.sync``/``barrier.sync``/``bar.red``/``bar.arrive``) inside the
  time loop (a loop is a PTX backward branch; the kernels have one loop each, the finish
  kernel its row loops) and warp shuffles there.

Usage::

    python bench/static_report.py [--out bench/results/static] [--only NAME ...]

writes ``static_report.md`` and ``static_report.json`` there (Triton version, date).
Nothing here runs a kernel; register counts and widths are what the compiler produced,
not a measurement of speed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Compile for real, never under the interpreter (it must be off before triton is imported).
os.environ.pop("TRITON_INTERPRET", None)

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sj_glif.kernels import glif  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
_TORCH_TO_TT = {
    torch.float32: "fp32",
    torch.float64: "fp64",
    torch.bfloat16: "bf16",
    torch.float16: "fp16",
    torch.int32: "i32",
    torch.int64: "i64",
}
_BARRIER = re.compile(
    r"\b(bar\.sync|barrier\.sync|bar\.red|barrier\.red|bar\.arrive|barrier\.arrive)\b"
)
_SHUFFLE = re.compile(r"\bshfl\.sync\b")
_MEMOP = re.compile(r"\b(ld|st)\.global((?:\.[A-Za-z0-9_:]+)*)")
_LABEL = re.compile(r"^\s*(\$L__\w+):")
_BRANCH = re.compile(r"\bbra(?:\.uni)?\s+(\$L__\w+);")


class ReportUnavailable(RuntimeError):
    """Compiling for sm_90 is impossible on this machine (e.g. ptxas missing)."""


# --------------------------------------------------------------------------- capture


@dataclass
class Launch:
    """One kernel launch as the launcher would make it."""

    kernel: object  # the triton JITFunction
    args: tuple
    kwargs: dict


class _Recorder:
    """Stands in for a ``@triton.jit`` kernel: ``kernel[grid](...)`` records the call."""

    def __init__(self, kernel, sink: list[Launch]):
        self.kernel, self.sink = kernel, sink

    def __getitem__(self, grid):
        def record(*args, **kwargs):
            self.sink.append(Launch(self.kernel, args, kwargs))

        return record


def capture(fn, *args, **kwargs) -> list[Launch]:
    """The kernel launches ``fn(*args, **kwargs)`` makes (``fn`` a launcher of ``glif``)."""
    sink: list[Launch] = []
    names = ("_glif_fwd_kernel", "_glif_bwd_kernel", "_glif_finish_kernel")
    saved = {n: getattr(glif, n) for n in names}
    try:
        for n in names:
            setattr(glif, n, _Recorder(saved[n], sink))
        fn(*args, **kwargs)
    finally:
        for n, k in saved.items():
            setattr(glif, n, k)
    return sink


def _headline_args(step, channel_dim, dtype, T=8):
    """Meta tensors for a headline case: x ``[T, *step]`` and channel-wise parameters."""
    meta = torch.device("meta")
    C = step[channel_dim]
    x = torch.empty((T, *step), dtype=dtype, device=meta)
    params = [torch.empty(C, device=meta) for _ in range(7)]
    conduct = torch.empty(T, C, device=meta)
    return x, params, conduct


def _fwd(step, channel_dim, dtype, gate_mode=0):
    x, params, conduct = _headline_args(step, channel_dim, dtype)
    launches = capture(
        glif.glif_fwd, x, None, None, *params, conduct,
        t0=0, channel_dim=channel_dim, gate_mode=gate_mode, store_u=True,
    )  # fmt: skip
    return launches


def _bwd(step, channel_dim, dtype, gate_mode=0, detach_reset=False, recompute=False):
    """The backward of a training step through GLIFNode: only the spikes get a gradient,
    zero initial state, the stored membrane stream read back (or recomputed: ``u_seq=None``)."""
    x, params, conduct = _headline_args(step, channel_dim, dtype)
    u_seq = None if recompute else torch.empty(x.shape, dtype=torch.float32, device=x.device)
    grad_spike = torch.empty(x.shape, dtype=dtype, device=x.device)
    launches = capture(
        glif.glif_bwd, grad_spike, None, None, None, x, None, None, u_seq, *params, conduct,
        t0=0, channel_dim=channel_dim, gate_mode=gate_mode, surrogate_id=0, sg_alpha=4.0,
        detach_reset=detach_reset,
    )  # fmt: skip
    return launches


HEADLINE_CF = ((32, 128, 32, 32), 1)  # [T=8, B=32, C=128, 32, 32], channel-first
HEADLINE_CL = ((32, 196, 384), 2)  # [T=8, B=32, N=196, C=384], channel-last


def variants() -> dict[str, Launch]:
    """Name -> launch for every variant in the report (fixed order)."""
    out: dict[str, Launch] = {}
    for layout, (step, cd) in (("cf", HEADLINE_CF), ("cl", HEADLINE_CL)):
        for dname, dtype in (("f32", torch.float32), ("bf16", torch.bfloat16)):
            out[f"fwd_{dname}_{layout}_soft"] = _fwd(step, cd, dtype)[0]
            bwd, finish = _bwd(step, cd, dtype)
            out[f"bwd_{dname}_{layout}_soft_sigmoid"] = bwd
            out[f"bwd_{dname}_{layout}_soft_sigmoid_recompute"] = _bwd(
                step, cd, dtype, recompute=True
            )[0]
            if dname == "f32":
                out[f"finish_{dname}_{layout}"] = finish
    step, cd = HEADLINE_CF
    out["bwd_f32_cf_soft_sigmoid_detach_reset"] = _bwd(step, cd, torch.float32, detach_reset=True)[
        0
    ]
    out["bwd_f32_cf_coarse_sigmoid"] = _bwd(step, cd, torch.float32, gate_mode=2)[0]
    out["fwd_f32_cf_coarse"] = _fwd(step, cd, torch.float32, gate_mode=2)[0]
    return out


# --------------------------------------------------------------------------- compile


def _signature(launch: Launch):
    """Triton signature, constexprs and attributes as the runtime would specialize them."""
    fn = launch.kernel
    names = fn.arg_names
    no_spec = {fn.arg_names[i] if isinstance(i, int) else i for i in fn.do_not_specialize}
    sig, consts, attrs = {}, {}, {}
    kw = dict(launch.kwargs)
    num_warps = kw.pop("num_warps", 4)
    values = dict(zip(names, launch.args, strict=False))  # trailing args may be kwargs
    values.update(kw)
    for i, name in enumerate(names):
        v = values[name]
        if name in kw:
            sig[name], consts[name] = "constexpr", v
        elif isinstance(v, torch.Tensor):
            sig[name] = "*" + _TORCH_TO_TT[v.dtype]
            attrs[(i,)] = [["tt.divisibility", 16]]  # torch allocations are 16-byte aligned
        elif isinstance(v, bool):
            sig[name] = "i1"
        elif isinstance(v, int):
            if name in no_spec:
                sig[name] = "i32"
            elif v == 1:
                sig[name], consts[name] = "constexpr", 1
            else:
                sig[name] = "i32" if -(2**31) <= v < 2**31 else "i64"
                if v % 16 == 0:
                    attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(v, float):
            sig[name] = "fp32"
        else:
            raise TypeError(f"{name}: cannot type {type(v).__name__}")
    return sig, consts, attrs, num_warps


def _tool(name: str) -> str:
    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    if path.is_file():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise ReportUnavailable(f"{name} not found (Triton's bundled copy or on PATH)")
    return found


def compile_launch(launch: Launch):
    sig, consts, attrs, num_warps = _signature(launch)
    src = ASTSource(launch.kernel, sig, constexprs=consts, attrs=attrs)
    try:
        return triton.compile(src, target=TARGET, options={"num_warps": num_warps})
    except Exception as exc:  # noqa: BLE001
        if "ptxas" in str(exc).lower() and "not found" in str(exc).lower():
            raise ReportUnavailable(f"cannot compile for sm_90: {exc}") from exc
        raise


# --------------------------------------------------------------------------- analysis


def _loops(lines: list[str]) -> list[tuple[int, int]]:
    """Line ranges ``[label, backward branch]`` of every loop in the PTX."""
    labels = {}
    for i, line in enumerate(lines):
        m = _LABEL.match(line)
        if m:
            labels[m.group(1)] = i
    loops = []
    for j, line in enumerate(lines):
        m = _BRANCH.search(line)
        if m and m.group(1) in labels and labels[m.group(1)] < j:
            loops.append((labels[m.group(1)], j))
    return loops


def _width(modifiers: str) -> int:
    """Bytes moved by one ``ld/st.global`` from its modifiers (``.v4.b32`` -> 16)."""
    parts = modifiers.strip(".").split(".")
    vec, bits = 1, 0
    for p in parts:
        if re.fullmatch(r"v\d", p):
            vec = int(p[1:])
        elif re.fullmatch(r"[bfus]\d+", p):
            bits = int(p[1:])
    return vec * bits // 8


def _histogram(lines) -> dict[str, dict[int, int]]:
    out = {"ld": {}, "st": {}}
    for line in lines:
        for m in _MEMOP.finditer(line):
            w = _width(m.group(2))
            out[m.group(1)][w] = out[m.group(1)].get(w, 0) + 1
    return {k: dict(sorted(v.items())) for k, v in out.items()}


def _ptxas_usage(ptx: str) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.ptx"
        path.write_text(ptx)
        res = subprocess.run(
            [_tool("ptxas"), "-v", "--gpu-name", "sm_90a", str(path), "-o", str(path) + ".o"],
            capture_output=True,
            text=True,
            check=False,
        )
    if res.returncode != 0:
        raise RuntimeError(f"ptxas failed: {res.stderr[-2000:]}")
    text = res.stderr + res.stdout
    num = lambda pat: int(m.group(1)) if (m := re.search(pat, text)) else 0  # noqa: E731
    return {
        "registers": num(r"Used (\d+) registers"),
        "spill_stores": num(r"(\d+) bytes spill stores"),
        "spill_loads": num(r"(\d+) bytes spill loads"),
        "stack_frame": num(r"(\d+) bytes stack frame"),
    }


def _cubin_usage(cubin: bytes) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.cubin"
        path.write_bytes(cubin)
        res = subprocess.run(
            [_tool("cuobjdump"), "-res-usage", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
    if res.returncode != 0:
        raise RuntimeError(f"cuobjdump failed: {res.stderr[-2000:]}")
    num = lambda key: int(m.group(1)) if (m := re.search(key + r":(\d+)", res.stdout)) else -1  # noqa: E731
    return {"cubin_registers": num("REG"), "cubin_local": num("LOCAL"), "cubin_stack": num("STACK")}


@dataclass
class Row:
    name: str
    kernel: str
    num_warps: int
    tile: dict
    registers: int
    spill_bytes: int
    local_bytes: int
    shared_bytes: int
    loops: int
    barriers_in_loop: int
    shuffles_in_loop: int
    loads_in_loop: dict = field(default_factory=dict)
    stores_in_loop: dict = field(default_factory=dict)
    loads_total: dict = field(default_factory=dict)
    stores_total: dict = field(default_factory=dict)


def analyse(name: str, launch: Launch) -> Row:
    k = compile_launch(launch)
    ptx = k.asm["ptx"]
    lines = ptx.splitlines()
    loops = _loops(lines)
    in_loop = sorted({i for a, b in loops for i in range(a, b + 1)})
    loop_lines = [lines[i] for i in in_loop]
    usage = _ptxas_usage(ptx)
    cub = _cubin_usage(k.asm["cubin"])
    hist_loop, hist_all = _histogram(loop_lines), _histogram(lines)
    kw = launch.kwargs
    tile = {key: kw[key] for key in ("NW", "BLOCK_O", "BLOCK_C", "BLOCK_I", "BLOCK_R") if key in kw}
    return Row(
        name=name,
        kernel=launch.kernel.__name__,
        num_warps=kw.get("num_warps", 4),
        tile=tile,
        registers=max(usage["registers"], cub["cubin_registers"]),
        spill_bytes=usage["spill_stores"] + usage["spill_loads"],
        local_bytes=max(cub["cubin_local"], 0),
        shared_bytes=int(k.metadata.shared),
        loops=len(loops),
        barriers_in_loop=sum(bool(_BARRIER.search(line)) for line in loop_lines),
        shuffles_in_loop=sum(bool(_SHUFFLE.search(line)) for line in loop_lines),
        loads_in_loop=hist_loop["ld"],
        stores_in_loop=hist_loop["st"],
        loads_total=hist_all["ld"],
        stores_total=hist_all["st"],
    )


def report(only: list[str] | None = None) -> list[Row]:
    rows = []
    for name, launch in variants().items():
        if only and name not in only:
            continue
        rows.append(analyse(name, launch))
    return rows


def _fmt_hist(h: dict) -> str:
    return " ".join(f"{w}B×{n}" for w, n in h.items()) or "-"


def to_markdown(rows: list[Row], meta: dict) -> str:
    head = [
        "# Static report: GLIF Triton kernels compiled for sm_90 (no GPU)",
        "",
        f"Generated {meta['date']} by `bench/static_report.py`; triton {meta['triton']}, "
        f"torch {meta['torch']}, target {meta['target']}.",
        "",
        "Headline shapes: channel-first (cf) x `[8, 32, 128, 32, 32]`, channel_dim 1; "
        "channel-last (cl) x `[8, 32, 196, 384]`, channel_dim 2. Backward: gradient on the "
        "spikes only, zero initial state (a training step through GLIFNode); `_recompute`: "
        "no stored membrane, the backward recomputes it (three loops: forward sweep, "
        "reverse loop, replay inside it; PTX back edges counted). Registers and "
        "spills from `ptxas -v`; vector widths are bytes per `ld/st.global` "
        "(`16B×3` = three 16-byte accesses) in the PTX, inside the time loop and in the "
        "whole kernel. Compiled code, not a measurement of speed.",
        "",
        "| variant | kernel | warps | tile | regs | spill B | smem B | barriers in loop "
        "| shuffles in loop | loads in loop | stores in loop |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    body = [
        f"| {r.name} | {r.kernel} | {r.num_warps} | "
        + " ".join(f"{k}={v}" for k, v in r.tile.items())
        + f" | {r.registers} | {r.spill_bytes} | {r.shared_bytes} | {r.barriers_in_loop} | "
        f"{r.shuffles_in_loop} | {_fmt_hist(r.loads_in_loop)} | {_fmt_hist(r.stores_in_loop)} |"
        for r in rows
    ]
    return "\n".join(head + body) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "static")
    ap.add_argument("--only", nargs="*", help="variant names (default: all)")
    args = ap.parse_args(argv)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        rows = report(args.only)
    except ReportUnavailable as exc:
        print(f"static_report: {exc}", file=sys.stderr)
        return 2
    meta = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "triton": triton.__version__,
        "torch": torch.__version__,
        "target": f"{TARGET.backend} sm_{TARGET.arch} (warp {TARGET.warp_size})",
    }
    (args.out / "static_report.json").write_text(
        json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=1) + "\n"
    )
    (args.out / "static_report.md").write_text(to_markdown(rows, meta))
    print(to_markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
