"""README.md's Python blocks run as written, each on its own, so the README cannot drift.

Every fenced ``python`` block is run in a fresh interpreter from an empty folder. A
block that needs something this machine lacks (a GPU) says so in a first-line comment
``# needs: cuda`` and is skipped here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks() -> list[tuple[str, str]]:
    text = README.read_text()
    out = []
    for m in _BLOCK.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        heading = [h for h in re.findall(r"^#+ (.*)$", text[: m.start()], re.M)][-1:]
        out.append((f"line {line} ({heading[0] if heading else 'top'})", m.group(1)))
    return out


BLOCKS = _blocks()


def test_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("code", [c for _, c in BLOCKS], ids=[i for i, _ in BLOCKS])
def test_readme_block_runs_on_its_own(code: str, tmp_path: Path) -> None:
    if code.startswith("# needs: cuda") and not torch.cuda.is_available():
        pytest.skip("the block needs CUDA")
    env = {**os.environ, "PYTHONPATH": str(README.parent)}
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip
    assert r.returncode == 0, f"README block failed:\n{code}\n--- stderr ---\n{r.stderr[-4000:]}"
