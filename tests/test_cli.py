"""The ``sj-glif`` console command: arguments, errors, output files and what it prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch

import sj_glif
from sj_glif import bench, cli

# a tiny, fast sweep: two providers on one small case
TINY = [
    "--device",
    "cpu",
    "--providers",
    "glif_torch",
    "gated_lif",
    "--dtypes",
    "float32",
    "--T",
    "2",
    "--sizes",
    "2x3x4x4",
    "--reps",
    "2",
    "--warmup",
    "0",
    "--copy-mib",
    "1",
    "--no-progress",
]


def _run(argv: list[str]) -> int:
    """``cli.main``'s status, whether it returns it or argparse exits with it."""
    try:
        return cli.main(argv)
    except SystemExit as e:
        return e.code


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
        assert "--freeze" in out and "--device" in out and "--data" not in out


def test_bench_help_gives_every_default():
    bench_parser = cli.build_parser()._subparsers._group_actions[0].choices["bench"]
    options = [a for a in bench_parser._actions if a.option_strings and a.dest != "help"]
    assert len(options) >= 12
    for action in options:
        assert "default" in (action.help or ""), action.option_strings


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"sj-glif {sj_glif.__version__}"


def test_module_runs_as_a_program():
    r = subprocess.run(
        [sys.executable, "-m", "sj_glif.cli", "--help"], capture_output=True, text=True
    )
    assert r.returncode == 0 and "bench" in r.stdout


def test_bench_writes_summary_table_json_csv_png(tmp_path, capsys):
    out_dir = tmp_path / "new" / "folder"  # made, parents too
    providers = ["--providers", "glif_triton", "glif_torch", "gated_lif"]
    argv = ["bench", *TINY, *providers, "--modes", "fwdbwd", "fwd", "--out", str(out_dir)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    # the summary: human names, the time of each, the ratio to GLIF in words
    assert "glif_torch" not in out and "gated_lif" not in out
    assert "lower is better" in out
    assert "GLIF (PyTorch)" in out and "GatedLIFNode" in out
    assert ("GLIF (PyTorch) is " in out) and (" than GatedLIFNode" in out)
    assert "skipped GLIF (Triton)" in out  # no CUDA here: said, not silently dropped
    assert (out_dir / "summary.txt").read_text().strip() in out
    data = json.loads((out_dir / "bench.json").read_text())
    assert data["environment"]["torch"] == torch.__version__
    assert data["environment"]["spikingjelly"] != "unknown"
    rows = {(r["provider"], r["mode"]): r for r in data["results"] if r["median_ms"] is not None}
    assert set(rows) == {(p, m) for p in ("glif_torch", "gated_lif") for m in ("fwdbwd", "fwd")}
    for r in rows.values():
        assert r["median_ms"] > 0 and r["gbps"] > 0 and 0 < r["frac_of_copy"]
        assert r["saved_bytes"] > 0 and r["shape"] == [2, 2, 3, 4, 4]
        assert r["first_call_ms"] > 0 and r["reps"] == 2
    n = len(data["results"])
    assert (out_dir / "bench.csv").read_text().count("\n") == 1 + n
    lines = (out_dir / "bench.jsonl").read_text().splitlines()
    assert "environment" in json.loads(lines[0]) and len(lines) == 1 + n
    md = (out_dir / "bench.md").read_text()
    assert "lower is better" in md and "higher is better" in md and "GLIF (PyTorch)" in md
    assert (out_dir / "bench.png").stat().st_size > 0


def test_bench_prints_warnings_after_the_progress_bar(tmp_path, capsys, monkeypatch):
    real = bench.make_provider

    def noisy(*args, **kwargs):
        warnings.warn("a warning from inside the sweep", UserWarning, stacklevel=1)
        print("a log line from inside the sweep", file=sys.stderr)
        return real(*args, **kwargs)

    monkeypatch.setattr(bench, "make_provider", noisy)
    assert cli.main(["bench", *TINY, "--modes", "fwd", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err.splitlines()
    # held back during the sweep, then printed once each
    assert err.count("during the run: UserWarning: a warning from inside the sweep") == 1
    assert err.count("during the run: a log line from inside the sweep") == 1


def _bad_arguments(tmp_path: Path) -> list[list[str]]:
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    bad = [
        ["--sizes", "0x3x4x4"],
        ["--sizes", "2x-3x4x4"],
        ["--sizes", "2x3x4"],
        ["--sizes", "2x3x4xfour"],
        ["--T", "0"],
        ["--T", "-2"],
        ["--T", "two"],
        ["--reps", "0"],
        ["--reps", "-1"],
        ["--warmup", "-1"],
        ["--threads", "0"],
        ["--copy-mib", "0"],
        ["--device", "meta"],
        ["--device", "foo"],
        ["--device", "cuda:7" if torch.cuda.device_count() < 8 else "cuda:99"],
        ["--out", str(a_file)],
        ["--out", str(a_file / "sub")],
        ["--providers", "nonesuch"],
    ]
    if not torch.cuda.is_available():
        bad.append(["--device", "cuda"])
    if not torch.backends.mps.is_available():
        bad.append(["--device", "mps"])
    return bad


def test_bench_rejects_bad_arguments_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def no_work(*args, **kwargs):
        raise AssertionError("the sweep started despite a bad argument")

    monkeypatch.setattr(bench, "sweep", no_work)
    monkeypatch.setattr(bench, "copy_gbps", no_work)
    for extra in _bad_arguments(tmp_path):
        before = sorted(tmp_path.rglob("*"))
        assert _run(["bench", "--out", str(tmp_path / "results"), *extra]) == 2, extra
        captured = capsys.readouterr()
        err = captured.err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("sj-glif bench: error:"), (extra, err)
        assert "Traceback" not in captured.err
        assert sorted(tmp_path.rglob("*")) == before, extra  # nothing written


def test_bench_device_meta_is_one_line_and_status_2():
    r = subprocess.run(
        [sys.executable, "-m", "sj_glif.cli", "bench", "--device", "meta"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "'meta'" in r.stderr
    assert r.stdout == ""


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_bench_unwritable_out(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert _run(["bench", *TINY, "--out", str(locked / "results")]) == 2
    assert "not writable" in capsys.readouterr().err


def test_an_interrupted_run_keeps_what_it_measured(tmp_path, capsys, monkeypatch):
    real = bench.measure_case
    calls = []

    def interrupt_second_case(*args, **kwargs):
        calls.append(args[2])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(bench, "measure_case", interrupt_second_case)
    argv = ["bench", *TINY, "--T", "2", "3", "--modes", "fwd", "--out", str(tmp_path)]
    assert cli.main(argv) == 130
    assert "INTERRUPTED after 1 of 2 case(s)" in capsys.readouterr().out
    lines = (tmp_path / "bench.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines[1:]]
    assert {r["T"] for r in rows} == {2} and len(rows) == 2
    assert all(r["median_ms"] > 0 for r in rows)
    assert json.loads((tmp_path / "bench.json").read_text())["results"] == rows


def test_a_crash_mid_sweep_keeps_earlier_cases_on_disk(tmp_path, monkeypatch):
    real = bench.measure_case

    def crash_second_case(*args, **kwargs):
        if args[2][0] == 3:
            raise RuntimeError("crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(bench, "measure_case", crash_second_case)
    argv = ["bench", *TINY, "--T", "2", "3", "--modes", "fwd", "--out", str(tmp_path)]
    with pytest.raises(RuntimeError, match="crash"):
        cli.main(argv)
    csv_lines = (tmp_path / "bench.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 2 and all(",2,2x2x3x4x4," in x for x in csv_lines[1:])
