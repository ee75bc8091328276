"""The ``sj-glif demo``: a quick digits run, CIFAR-10 loading from a fake dataset in
torchvision's format, and the errors for a bad ``--data`` folder or device."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")
torchvision = pytest.importorskip("torchvision")

from sj_glif import demo  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_outputs(out: Path, result: dict, neurons: tuple[str, ...]) -> None:
    for name in ("results.md", "results.json", "learning_curves.png"):
        assert (out / name).is_file(), name
    assert (out / "learning_curves.png").read_bytes()[:8] == PNG_MAGIC
    saved = json.loads((out / "results.json").read_text())
    assert list(saved["neurons"]) == list(neurons)
    for key in ("date", "torch", "spikingjelly", "platform"):
        assert saved["environment"][key]
    assert saved["arguments"]["quick"] is True
    md = (out / "results.md").read_text()
    for kind in neurons:
        label = demo.LABELS[kind]
        assert f"| {label} |" in result["table"]
        assert f"| {label} |" in md
        s = saved["neurons"][kind]
        for key in ("final_acc_mean", "best_acc_mean", "best_epoch_acc_mean"):
            assert math.isfinite(s[key]) and 0.0 <= s[key] <= 1.0, (kind, key, s[key])
        assert math.isfinite(s["final_acc_std"]) and s["final_acc_std"] >= 0.0
        assert s["best_epoch"] == 1
        assert s["time_per_epoch_s"] > 0
        (run,) = s["runs"]  # quick: one seed, one epoch
        assert len(run["test_acc"]) == len(run["train_loss"]) == 1
        assert math.isfinite(run["train_loss"][0])


def test_quick_digits(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = demo.run_demo(out, quick=True, progress=False)
    _check_outputs(out, result, demo.NEURONS)
    png = out / "glif_parameters.png"
    assert png.is_file() and png.read_bytes()[:8] == PNG_MAGIC
    assert "glif_parameters.png" in result["files"]
    # heterogeneity record: every GLIF layer, every effective parameter, init and trained
    spread = result["glif_parameter_spread"]
    assert list(spread) == ["sn1", "sn2", "sn3"]
    for params in spread.values():
        assert list(params) == list(demo.GLIF_SYMBOLS)
        for p, d in params.items():
            assert d["final_std"] >= 0 and math.isfinite(d["final_std"])
            assert 0 < d["final_min"] <= d["final_max"] < 1  # sigmoid range
            if p not in ("alpha", "beta", "gamma"):
                assert d["init_std"] == pytest.approx(0.0, abs=1e-6)  # constant init
    assert result["arguments"]["torch_threads"] == 1


def test_deterministic_given_seed(tmp_path: Path) -> None:
    kw = dict(quick=True, progress=False, neurons=("glif",))
    a = demo.run_demo(tmp_path / "a", **kw)["neurons"]["glif"]["runs"][0]
    b = demo.run_demo(tmp_path / "b", **kw)["neurons"]["glif"]["runs"][0]
    assert a["train_loss"] == b["train_loss"] and a["test_acc"] == b["test_acc"]


def test_no_glif_no_parameter_plot(tmp_path: Path) -> None:
    result = demo.run_demo(tmp_path, quick=True, progress=False, neurons=("lif",))
    assert not (tmp_path / "glif_parameters.png").exists()
    assert result["glif_parameter_spread"] == {}


def test_cli_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    args = parser.parse_args(
        ["--quick", "--no-progress", "--neurons", "plif", "--out", str(tmp_path / "o")]
    )
    assert demo.main(args) == 0
    assert "| PLIF |" in capsys.readouterr().out
    assert (tmp_path / "o" / "results.json").is_file()
    defaults = parser.parse_args([])
    assert defaults.out == Path("sj-glif-demo") and defaults.data is None
    assert defaults.seeds == 3 and defaults.T == 4 and defaults.device == "cpu"
    assert defaults.neurons == list(demo.NEURONS)


# --------------------------------------------------------------------------- CIFAR-10


def _write_fake_cifar10(root: Path, per_batch: int = 4) -> None:
    """A tiny CIFAR-10 in torchvision's pickle format: ``per_batch`` images in each of
    data_batch_1..5 and test_batch, plus batches.meta."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]
    for k, name in enumerate(names):
        entry = {
            "batch_label": name,
            "labels": [int(v) for v in (np.arange(per_batch) + k) % 10],
            "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            "filenames": [f"{name}_{i}.png" for i in range(per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(entry))
    labels = ["airplane", "automobile", "bird", "cat", "deer"]
    labels += ["dog", "frog", "horse", "ship", "truck"]
    meta = {"num_cases_per_batch": per_batch, "label_names": labels, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))


def _fake_cifar_class(root: Path) -> type:
    """torchvision 0.29's CIFAR10 verifies the md5 of every batch file and of
    batches.meta against the official archive's, so fake files cannot pass it. This
    subclass only swaps those checksums for the fake files' own: loading (integrity
    check, unpickling, reshaping, metadata) is torchvision's code unchanged."""
    folder = root / "cifar-10-batches-py"

    def md5(name: str) -> str:
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    base = torchvision.datasets.CIFAR10

    class FakeChecksumCIFAR10(base):
        train_list = [[n, md5(n)] for n, _ in base.train_list]
        test_list = [[n, md5(n)] for n, _ in base.test_list]
        meta = {**base.meta, "md5": md5(base.meta["filename"])}

    return FakeChecksumCIFAR10


def test_cifar10_fake_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "cifar"
    _write_fake_cifar10(root)
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", _fake_cifar_class(root))

    data = demo.load_cifar10(root)
    assert data.name == "cifar10" and data.classes == 10 and data.augment
    assert data.x_train.shape == (20, 3, 32, 32) and data.x_test.shape == (4, 3, 32, 32)
    assert data.y_train.tolist()[:4] == [0, 1, 2, 3] and data.y_train.dtype == torch.long
    # normalized per channel with CIFAR-10's statistics
    assert data.x_train.min() < -1.5 and data.x_train.max() > 1.5
    # the cifar-10-batches-py folder itself is accepted too
    assert demo.load_cifar10(root / "cifar-10-batches-py").x_test.shape[0] == 4

    out = tmp_path / "out"  # the wide CIFAR network is slow on a CPU: GLIF only, T=2
    result = demo.run_demo(
        out, data=root, quick=True, progress=False, batch_size=10, T=2, neurons=("glif",)
    )
    _check_outputs(out, result, ("glif",))
    assert result["dataset"] == "cifar10"
    assert list(result["glif_parameter_spread"]) == ["sn1", "sn2", "sn3", "sn4"]
    assert (out / "glif_parameters.png").is_file()


def test_cifar10_real_class_rejects_wrong_checksums(tmp_path: Path) -> None:
    """Unpatched, torchvision's md5 check rejects the fake files: a clear DemoError."""
    _write_fake_cifar10(tmp_path)
    with pytest.raises(demo.DemoError, match="md5"):
        demo.load_cifar10(tmp_path)


def test_cifar10_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(demo.DemoError, match="no such folder"):
        demo.run_demo(tmp_path / "out", data=tmp_path / "nowhere", quick=True, progress=False)
    with pytest.raises(demo.DemoError, match="does not contain cifar-10-batches-py"):
        demo.run_demo(tmp_path / "out", data=tmp_path, quick=True, progress=False)
    assert not (tmp_path / "out").exists()  # nothing written before the data loaded

    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    args = parser.parse_args(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    assert demo.main(args) == 2
    err = capsys.readouterr().err
    assert "sj-glif demo: error:" in err and "cifar-10-batches-py" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_unavailable(tmp_path: Path) -> None:
    with pytest.raises(demo.DemoError, match="CUDA is not available"):
        demo.run_demo(tmp_path, device="cuda", quick=True, progress=False)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(demo.DemoError, match="neurons"):
        demo.run_demo(tmp_path, neurons=("alif",), quick=True, progress=False)
    with pytest.raises(demo.DemoError, match="epochs"):
        demo.run_demo(tmp_path, epochs=0, progress=False)
