"""Packaging: the wheel and the sdist work however the code is run.

The Triton kernels live in the top-level ``kernels/`` folder and are installed as
``sj_glif.kernels``. These tests build a wheel and an sdist from a copy of this
checkout and check that ``sj_glif.kernels`` imports from the repository root (where
the source ``sj_glif/`` shadows an installed copy), from any other folder, and from an
extracted sdist, whose own tests must collect and pass; and that the package works on
the CPU without triton (Triton publishes Linux wheels only).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# a tiny GLIF run through the Triton kernels (interpreter on the CPU) and the default path
PROBE = """
import os, sys, torch
import sj_glif, sj_glif.kernels.glif as k
from sj_glif import GLIFNode
x = torch.randn(3, 2, 4, 5)
a = GLIFNode(step_mode="m", backend="triton")(x)
b = GLIFNode(step_mode="m")(x)
print(os.path.realpath(sj_glif.__file__))
print(os.path.realpath(k.__file__))
print(a.shape == b.shape, a.dtype)
"""


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "TRITON_INTERPRET": "1", **env}
    return subprocess.run(
        args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=600, check=False
    )


def _copy_checkout(dst: Path) -> Path:
    """The project's own files (no build output, caches or virtual environments)."""
    ignore = shutil.ignore_patterns(
        ".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
        ".ruff_cache", ".hypothesis", ".whl", "sj-glif-*",
    )  # fmt: skip
    shutil.copytree(ROOT, dst, ignore=ignore)
    return dst


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A wheel and an sdist built from a copy of this checkout with setuptools' backend."""
    work = tmp_path_factory.mktemp("pkg")
    src = _copy_checkout(work / "src")
    dist = work / "dist"
    built = {}
    for kind in ("sdist", "wheel"):  # one process each: setuptools keeps state between them
        code = (
            "import sys; from setuptools import build_meta as b; "
            f"print('BUILT', b.build_{kind}(sys.argv[1]))"
        )
        r = _run([sys.executable, "-c", code, str(dist)], cwd=src)
        assert r.returncode == 0, r.stderr[-3000:]
        line = next(ln for ln in r.stdout.splitlines() if ln.startswith("BUILT "))
        built[kind] = dist / line.split()[1]
    sdist, wheel = built["sdist"], built["wheel"]
    return {"src": src, "sdist": sdist, "wheel": wheel, "work": work}


def test_wheel_and_sdist_contents(built: dict[str, Path]) -> None:
    names = zipfile.ZipFile(built["wheel"]).namelist()
    assert "sj_glif/kernels/glif.py" in names and "sj_glif/kernels/__init__.py" in names
    assert not any(n.startswith("kernels/") for n in names), "no top-level kernels module"
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(built["wheel"]).read(meta).decode()
    assert "License-Expression: MIT" in text
    assert 'Requires-Dist: triton>=3.2; sys_platform == "linux"' in text
    assert "Project-URL:" in text
    with tarfile.open(built["sdist"]) as tf:
        members = {m.split("/", 1)[1] for m in tf.getnames() if "/" in m}
    for need in ("tests/conftest.py", "kernels/glif.py", "LICENSE", "pyproject.toml", "README.md"):
        assert need in members, f"sdist lacks {need}"
    assert not any("__pycache__" in m for m in members)


@pytest.fixture(scope="module")
def wheel_target(built: dict[str, Path]) -> Path:
    """The wheel installed with ``pip --target`` (no dependencies: they are this venv's)."""
    target = built["work"] / "target"
    r = _run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
         "--target", str(target), str(built["wheel"])],
        cwd=built["work"],
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return target


@pytest.mark.parametrize("where", ["repository root", "another folder"])
def test_wheel_runs_from_any_directory(built, wheel_target: Path, where: str) -> None:
    # From the repository root, Python imports the source sj_glif/ ahead of the installed
    # copy; sj_glif.kernels must resolve either way (to the folder beside it).
    cwd = built["src"] if where == "repository root" else built["work"]
    r = _run([sys.executable, "-c", PROBE], cwd=cwd, PYTHONPATH=str(wheel_target))
    assert r.returncode == 0, r.stderr[-3000:]
    pkg, kern, ok = r.stdout.split("\n")[-4:-1]
    assert ok.startswith("True")
    home = cwd / "sj_glif" if where == "repository root" else wheel_target / "sj_glif"
    assert Path(pkg).parent == home.resolve()
    want = cwd / "kernels" if where == "repository root" else wheel_target / "sj_glif/kernels"
    assert Path(kern).parent == want.resolve()


def test_sdist_tests_collect_and_pass(built: dict[str, Path]) -> None:
    out = built["work"] / "sdist"
    with tarfile.open(built["sdist"]) as tf:
        tf.extractall(out, filter="data")
    (tree,) = out.iterdir()
    env = {"PYTHONPATH": str(tree)}
    r = _run([sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider"],
             cwd=tree, **env)  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "error" not in r.stdout.lower().split("\n")[-2]
    # a kernel test and a node test from the sdist's own suite, run from its own folder
    r = _run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
         "tests/test_reference.py", "tests/test_kernels.py", "-k", "worked or spec or float64"],
        cwd=tree, **env,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " passed" in r.stdout.strip().split("\n")[-1]
    r = _run([sys.executable, "-c", PROBE], cwd=tree, **env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert Path(r.stdout.split("\n")[-3]).parent == (tree / "kernels").resolve()


NO_TRITON = """
import sys
sys.modules["triton"] = None  # what a machine without triton (macOS, Windows) sees
import torch, sj_glif
from sj_glif import GLIFNode, implementation_for
name, why = implementation_for("cuda")
assert name != "triton", (name, why)
torch.manual_seed(0)
node = GLIFNode(step_mode="m")
x = torch.randn(4, 2, 3, 5, requires_grad=True)
out = node(x)
out.sum().backward()
assert x.grad is not None and torch.isfinite(x.grad).all()
print(implementation_for("cpu")[0], name)
try:
    GLIFNode(step_mode="m", backend="triton")(x)
except Exception as err:
    print(type(err).__name__, err)
"""


def test_runs_on_the_cpu_without_triton() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run(
        [sys.executable, "-c", NO_TRITON], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.strip().split("\n")
    assert lines[0].split()[1] == "torch"  # CUDA without triton: the PyTorch path
    assert "triton is not installed" in lines[1]  # asking for Triton says why it cannot


def test_installed_metadata_marks_triton_linux_only() -> None:
    reqs = metadata.requires("sj-glif") or []
    (triton,) = [r for r in reqs if r.startswith("triton")]
    assert "sys_platform" in triton and "linux" in triton
    assert metadata.metadata("sj-glif")["License-Expression"] == "MIT"
