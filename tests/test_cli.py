"""The ``sj-glif`` console command and the benchmark library behind ``sj-glif bench``."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points

import pytest
import torch

from sj_glif import bench, cli


def test_console_script_is_declared():
    (ep,) = [e for e in entry_points(group="console_scripts") if e.name == "sj-glif"]
    assert ep.value == "sj_glif.cli:main"
    assert ep.load() is cli.main


@pytest.mark.parametrize("sub", [[], ["bench"], ["demo"]])
def test_help(sub, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([*sub, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: sj-glif" in out
    if sub == ["bench"]:
        assert "--quick" in out and "--providers" in out
    if sub == ["demo"]:
        assert "--data" in out and "--device" in out


def test_module_runs_as_a_program():
    r = subprocess.run(
        [sys.executable, "-m", "sj_glif.cli", "--help"], capture_output=True, text=True
    )
    assert r.returncode == 0 and "bench" in r.stdout


def test_bench_writes_table_json_csv_png(tmp_path, capsys):
    args = ["bench", "--device", "cpu", "--providers", "glif_torch", "gated_lif", "glif_triton",
            "--modes", "fwdbwd", "fwd", "--dtypes", "float32", "--T", "2", "--sizes", "2x3x4x4",
            "--reps", "2", "--no-progress", "--out", str(tmp_path)]  # fmt: skip
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "skipped glif_triton" in out  # no CUDA here: said, not silently dropped
    assert "GLIF speed-up over gated_lif" in out
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["environment"]["torch"] == torch.__version__
    assert data["environment"]["spikingjelly"] != "unknown"
    rows = {(r["provider"], r["mode"]): r for r in data["results"]}
    assert set(rows) == {(p, m) for p in ("glif_torch", "gated_lif") for m in ("fwdbwd", "fwd")}
    for r in rows.values():
        assert r["median_ms"] > 0 and r["gbps"] > 0 and 0 < r["frac_of_copy"]
        assert r["saved_bytes"] > 0 and r["shape"] == [2, 2, 3, 4, 4]
    assert (tmp_path / "bench.csv").read_text().count("\n") == 1 + len(rows)
    assert (tmp_path / "bench.png").stat().st_size > 0


def test_bench_bad_size_is_an_argument_error(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "--sizes", "2x3x4"])
    assert e.value.code == 2
    assert "BxCxHxW" in capsys.readouterr().err


def test_bench_cuda_without_cuda(capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available")
    assert cli.main(["bench", "--device", "cuda", "--no-progress"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_op_bytes_counts_what_the_op_must_move():
    n = 10
    assert bench.op_bytes("fwd", n, 4) == n * (4 + 4 + 4)  # read x, write spikes and u
    assert bench.op_bytes("bwd", n, 2) == n * (2 + 2 + 4 + 2)  # grad, x, u in; dx out
    assert bench.op_bytes("fwdbwd", n, 4) == bench.op_bytes("fwd", n, 4) + bench.op_bytes(
        "bwd", n, 4
    )


def test_saved_bytes_counts_unique_storages():
    x = torch.randn(1000, requires_grad=True)
    nbytes, out = bench.saved_bytes(lambda: (x * x).sum())  # saves x twice: one storage
    assert nbytes == 4000 and out.requires_grad


def test_a_failing_provider_is_reported_not_raised(monkeypatch):
    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    monkeypatch.setattr(bench, "make_provider", lambda *a, **k: (Broken(), None))
    r = bench.measure("glif_torch", "fwd", (2, 1, 3, 2, 2), torch.float32, torch.device("cpu"))
    assert r.median_ms is None and "boom" in r.skipped
