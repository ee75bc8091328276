"""``sj-glif demo``: the tasks, the ablation switch, reproducibility, the figures and
files, the sentences computed from results, and argument validation. Tiny data only."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")
pytest.importorskip("mnist1d")

from sj_glif import cli, demo  # noqa: E402
from sj_glif.demo.models import Config, build_network, make_optimizer  # noqa: E402
from sj_glif.demo.report import ablation_sentence, verdict  # noqa: E402
from sj_glif.demo.tasks import load_task, validation_split  # noqa: E402
from sj_glif.demo.training import train_one  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CPU = torch.device("cpu")


def _tiny(out: Path, **kw) -> demo.Settings:
    base = dict(out_dir=out, quick=True, seeds=1, jobs=1, progress=False)
    return demo.Settings(**{**base, **kw})


# --------------------------------------------------------------------------- tasks


@pytest.mark.parametrize(
    "name, T, F", [("mnist1d", 40, 1), ("seq-digits", 8, 8), ("static-digits", 4, 64)]
)
def test_task_shapes_and_determinism(name: str, T: int, F: int) -> None:
    a = load_task(name, n_train=60, n_test=30)
    b = load_task(name, n_train=60, n_test=30)
    assert a.x_train.shape == (60, T, F) and a.x_test.shape == (30, T, F)
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.long
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert sorted(set(a.y_train.tolist())) == list(range(10))  # stratified subset
    if name == "static-digits":  # the same image at every step
        assert torch.equal(a.x_train[:, 0], a.x_train[:, 3])
    else:  # a different row / sample at each step
        assert not torch.equal(a.x_train[:, 0], a.x_train[:, 1])
    if name == "seq-digits":  # rows of the same image as the static task
        s = load_task("static-digits", n_train=60, n_test=30)
        assert torch.equal(a.x_train.reshape(60, 64), s.x_train[:, 0])


def test_mnist1d_full_size_and_numpy_state_untouched() -> None:
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    task = load_task("mnist1d")
    assert np.random.rand() == expected  # make_dataset's reseeding is undone
    assert task.x_train.shape == (4000, 40, 1) and task.x_test.shape == (1000, 40, 1)


def test_validation_split_is_disjoint_part_of_train() -> None:
    task = load_task("seq-digits", n_train=100, n_test=30)
    v = validation_split(task)
    assert len(v.y_train) == 80 and len(v.y_test) == 20
    rows = {tuple(r.flatten().tolist()) for r in task.x_train}
    tr = {tuple(r.flatten().tolist()) for r in v.x_train}
    va = {tuple(r.flatten().tolist()) for r in v.x_test}
    assert tr | va <= rows and not tr & va
    assert not any(tuple(r.flatten().tolist()) in va for r in task.x_test)


# --------------------------------------------------------------------------- ablation


def test_freeze_keeps_parts_at_their_initial_values() -> None:
    task = load_task("seq-digits", n_train=64, n_test=20)
    kw = dict(epochs=1, batch_size=16, lr=1e-1, device=CPU)
    r = train_one(Config("glif", ("decay", "conduct")), 0, task, **kw)
    for layer in ("sn1", "sn2"):
        init, final = r.glif_init[layer], r.glif_final[layer]
        for p in ("tau", "alpha", "conduct"):
            np.testing.assert_array_equal(init[p], final[p], err_msg=f"{layer}.{p} moved")
        for p in ("beta", "gamma", "v_threshold"):
            assert not np.array_equal(init[p], final[p]), f"{layer}.{p} did not train"
    free = train_one(Config("glif"), 0, task, **kw)
    assert not np.array_equal(free.glif_init["sn1"]["tau"], free.glif_final["sn1"]["tau"])


def test_frozen_parameters_not_in_optimizer() -> None:
    net = build_network(Config("glif", ("gates",)), 8, 8)
    opt = make_optimizer(net, 1e-2)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    for name, p in net.named_parameters():
        frozen = name.split(".")[-1] in ("alpha", "beta", "gamma")
        assert (id(p) in in_opt) != frozen, name
        assert p.requires_grad != frozen, name


# --------------------------------------------------------------------------- whole demo


def test_quick_demo_every_task_with_ablation(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    s = _tiny(out, freeze=(("decay",), ("gates", "conduct")), ablation_tasks=("mnist1d",))
    result = demo.run_demo(s)
    files = set(result["files"])
    for name in ("mnist1d", "seq-digits", "static-digits"):
        assert f"glif_parameters_{name}.png" in files
    assert {"traces_mnist1d.png", "traces_seq-digits.png", "learning_curves.png"} <= files
    assert "traces_static-digits.png" not in files  # traces only for the temporal tasks
    for f in files:
        assert (out / f).is_file(), f
        if f.endswith(".png"):
            assert (out / f).read_bytes()[:8] == PNG_MAGIC
    saved = json.loads((out / "results.json").read_text())
    assert list(saved["tasks"]) == ["mnist1d", "seq-digits", "static-digits"]
    for key in ("date", "torch", "spikingjelly", "platform", "mnist1d"):
        assert saved["environment"][key]
    m = saved["tasks"]["mnist1d"]["summary"]
    assert list(m) == [
        "glif",
        "lif",
        "plif",
        "glif-freeze-decay",
        "glif-freeze-gates-freeze-conduct",
    ]
    assert list(saved["tasks"]["seq-digits"]["summary"]) == ["glif", "lif", "plif"]
    assert saved["learning_rates"] == {t: demo.DEFAULT_LRS[t] for t in demo.TASKS}
    for t in saved["tasks"].values():
        for cfg in t["summary"].values():
            assert 0.0 <= cfg["final_acc_mean"] <= 1.0 and cfg["final_acc_std"] == 0.0
            assert cfg["time_per_epoch_s"] > 0 and len(cfg["runs"]) == 1
            assert math.isfinite(cfg["runs"][0]["train_loss"][0])
        assert t["verdict"].startswith(f"On {t['title']}, GLIF")
    md = (out / "results.md").read_text()
    assert "GLIF, decay (tau, a) frozen" in md and "change vs GLIF" in md
    assert saved["tasks"]["mnist1d"]["ablation"] in md
    assert saved["tasks"]["seq-digits"]["ablation"] == ""
    assert "lr_sweep.md" not in files
    printed = capsys.readouterr().out
    assert saved["tasks"]["mnist1d"]["verdict"] in printed


def test_same_seed_same_numbers_serial_and_parallel(tmp_path: Path) -> None:
    """Same command, same versions -> same numbers: once in this process, once in two
    worker processes (one seed each)."""

    def curves(result: dict) -> dict:
        return {
            k: [(r["train_loss"], r["test_acc"]) for r in v["runs"]]
            for k, v in result["tasks"]["seq-digits"]["summary"].items()
        }

    kw = dict(tasks=("seq-digits",), neurons=("glif",), seeds=2, freeze=())
    a = curves(demo.run_demo(_tiny(tmp_path / "a", **kw)))
    b = curves(demo.run_demo(_tiny(tmp_path / "b", jobs=2, **kw)))
    assert a == b
    assert a["glif"][0] != a["glif"][1]  # the seeds differ


def test_sweep_writes_files_and_uses_best(tmp_path: Path, monkeypatch) -> None:
    from sj_glif.demo import run

    monkeypatch.setattr(run, "SWEEP_LRS", (1e-3, 3e-1))
    monkeypatch.setattr(run, "SWEEP_SEEDS", 1)
    s = _tiny(tmp_path, tasks=("seq-digits",), neurons=("lif",), freeze=(), sweep=True)
    result = demo.run_demo(s)
    sweep = json.loads((tmp_path / "lr_sweep.json").read_text())
    accs = sweep["val_acc"]["seq-digits"]["lif"]
    best = max((1e-3, 3e-1), key=lambda lr: accs[f"{lr:g}"])
    assert sweep["best"]["seq-digits"]["lif"] == best
    assert result["learning_rates"]["seq-digits"]["lif"] == best
    assert result["tasks"]["seq-digits"]["summary"]["lif"]["lr"] == best
    assert "validation" in (tmp_path / "lr_sweep.md").read_text()


# --------------------------------------------------------------------------- words


def _s(neuron: str, mean: float, std: float, seeds: int = 3, freeze=(), t: float = 1.0) -> dict:
    label = {"glif": "GLIF", "lif": "LIF", "plif": "PLIF"}[neuron]
    if freeze:
        label += ", decay (tau, a) frozen"
    return {"label": label, "neuron": neuron, "freeze": list(freeze), "seeds": list(range(seeds)),
            "final_acc_mean": mean, "final_acc_std": std, "time_per_epoch_s": t}  # fmt: skip


def test_verdict_better_tie_worse() -> None:
    better = {"glif": _s("glif", 0.721, 0.008, t=2.0), "lif": _s("lif", 0.55, 0.01),
              "plif": _s("plif", 0.608, 0.01)}  # fmt: skip
    assert verdict("task A", better) == (
        "On task A, GLIF reaches 72.1 ± 0.8 %, 11.3 points above the best of LIF/PLIF "
        "(PLIF 60.8 ± 1.0 %). A GLIF training epoch took 2.0x LIF's time."
    )
    tie = {"glif": _s("glif", 0.95, 0.01), "lif": _s("lif", 0.96, 0.005),
           "plif": _s("plif", 0.94, 0.01)}  # fmt: skip
    text = verdict("task B", tie)
    assert "tie: the 1.0-point difference is within the seeds' spread" in text
    assert "GLIF (95.0 ± 1.0 %) and the best of LIF/PLIF (LIF 96.0 ± 0.5 %)" in text
    worse = {"glif": _s("glif", 0.90, 0.005), "lif": _s("lif", 0.93, 0.005),
             "plif": _s("plif", 0.92, 0.005)}  # fmt: skip
    text = verdict("task C", worse)
    assert "3.0 points below the best of LIF/PLIF (LIF 93.0 ± 0.5 %): GLIF is no better" in text
    one = {"glif": _s("glif", 0.9, 0.0, seeds=1), "lif": _s("lif", 0.8, 0.0, seeds=1)}
    text = verdict("task D", one)
    assert "10.0 points above the best of LIF (80.0 ± 0.0 %)" in text and "One seed" in text
    assert "no GLIF and LIF/PLIF pair" in verdict("task E", {"lif": _s("lif", 0.9, 0.0)})


def test_ablation_sentence_names_what_matters() -> None:
    summary = {
        "glif": _s("glif", 0.74, 0.007),
        "lif": _s("lif", 0.60, 0.009),
        "plif": _s("plif", 0.62, 0.002),
        "glif-freeze-decay": _s("glif", 0.615, 0.01, freeze=("decay",)),
        "glif-freeze-conduct": _s("glif", 0.738, 0.006, freeze=("conduct",)),
    }
    summary["glif-freeze-conduct"]["label"] = "GLIF, conductance k_t frozen"
    text = ablation_sentence("task A", summary)
    assert text == (
        "Ablation on task A (GLIF 74.0 ± 0.7 %): freezing the decay (tau, a) costs 12.5 points "
        "(61.5 ± 1.0 %), down to the level of PLIF (62.0 ± 0.2 %); freezing the conductance "
        "k_t changes nothing beyond the seeds' spread (-0.2 points). The learned part that "
        "matters most here: the decay (tau, a)."
    )
    summary.pop("glif-freeze-decay")
    assert "No frozen part costs accuracy beyond the seeds' spread" in ablation_sentence(
        "task A", summary
    )
    summary.pop("glif-freeze-conduct")
    assert ablation_sentence("task A", summary) == ""


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--T", "0"], "--T must be a positive integer, got 0"),
        (["--T", "-3"], "--T must be a positive integer, got -3"),
        (["--epochs", "0"], "--epochs must be a positive integer, got 0"),
        (["--epochs", "-1"], "--epochs must be a positive integer"),
        (["--seeds", "0"], "--seeds must be a positive integer"),
        (["--batch-size", "0"], "--batch-size must be a positive integer"),
        (["--batch-size", "-8"], "--batch-size must be a positive integer"),
        (["--jobs", "0"], "--jobs must be a positive integer"),
        (["--threads", "0"], "--threads must be a positive integer"),
        (["--lr", "nan"], "--lr must be a positive finite number, got nan"),
        (["--lr", "inf"], "--lr must be a positive finite number, got inf"),
        (["--lr", "0"], "--lr must be a positive finite number, got 0.0"),
        (["--lr", "-1"], "--lr must be a positive finite number, got -1.0"),
        (["--device", "meta"], "--device must be cpu or cuda[:N], got 'meta'"),
        (["--device", "foo"], "--device must be cpu or cuda[:N], got 'foo'"),
        (["--freeze", "tau"], "--freeze parts must be among decay, gates, conduct, threshold"),
        (["--freeze", "decay,"], "--freeze parts must be among"),
    ],
)
def test_bad_arguments_one_line_exit_2(argv, message, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert cli.main(["demo", *argv, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("sj-glif demo: error: ") and message in captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert captured.out == ""  # nothing ran
    assert not out.exists()  # checked before any work


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "x"], "argument --epochs: invalid int value: 'x'"),
        (["--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
        (["--tasks", "cifar10"], "argument --tasks: invalid choice: 'cifar10'"),
    ],
)
def test_unparsable_arguments_one_line_exit_2(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["demo", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("sj-glif demo: error: ") and message in err
    assert err.count("\n") == 1 and "usage:" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_unavailable(tmp_path: Path, capsys) -> None:
    assert cli.main(["demo", "--device", "cuda", "--out", str(tmp_path / "o")]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_unwritable_out(tmp_path: Path, capsys) -> None:
    afile = tmp_path / "a_file"
    afile.write_text("x")
    assert cli.main(["demo", "--out", str(afile)]) == 2
    assert "--out must be a folder, got the existing file" in capsys.readouterr().err
    assert cli.main(["demo", "--out", str(afile / "sub")]) == 2  # a folder under a file
    err = capsys.readouterr().err
    assert "is not a writable folder" in err and err.count("\n") == 1
    assert afile.read_text() == "x"


def test_help_shows_every_default(capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for opt in ("--tasks", "--neurons", "--seeds", "--epochs", "--batch-size", "--lr",
                "--freeze", "--ablation-tasks", "--T", "--device", "--jobs", "--threads",
                "--out"):  # fmt: skip
        assert opt in text
    assert "(default: 3)" in text and "mnist1d 10, seq-digits 20" in text
    assert "(default: decay,gates,conduct)" in text and "sj-glif-demo)" in text
    assert "sj-glif train" in text  # CIFAR training moved there: no --data option
    with pytest.raises(SystemExit):
        cli.main(["demo", "--data", "cifar"])
