"""``sj-glif train``: the paper's CIFAR recipe, run on tiny fake CIFAR folders on the CPU."""

from __future__ import annotations

import json
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from spikingjelly.activation_based import functional

from sj_glif import cli
from sj_glif import train as train_mod
from sj_glif.cifar import CifarError, augment, load_cifar, normalize
from sj_glif.node import GLIFNode
from sj_glif.resnet19 import PARAMETERS, SpikingResNet19, count_parameters

# a smoke run: 40 train / 24 test images, width 4, T=2, 3 batches per epoch
SMOKE = ["--width", "4", "--T", "2", "--batch-size", "16", "--device", "cpu", "--no-progress"]


def _images(rng: np.random.Generator, labels: np.ndarray, classes: int) -> np.ndarray:
    """uint8 [N, 3072] images whose mean colour depends on the class, plus noise."""
    colour = rng.integers(40, 216, (classes, 3, 1, 1))
    x = colour[labels] + rng.normal(0, 30, (len(labels), 3, 32, 32))
    return np.clip(x, 0, 255).astype(np.uint8).reshape(len(labels), 3072)


def _dump(path: Path, batch: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)  # the official files are protocol-2 pickles


def write_cifar(root: Path, dataset: str, n_train: int = 40, n_test: int = 24) -> Path:
    """A fake CIFAR folder in torchvision's python format under ``root``."""
    rng = np.random.default_rng(0)
    if dataset == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        per = n_train // 5
        for i in range(5):
            y = rng.integers(0, 10, per)
            batch = {
                "batch_label": f"training batch {i + 1} of 5",
                "labels": y.tolist(),
                "data": _images(rng, y, 10),
                "filenames": [f"{j}.png" for j in range(per)],
            }
            _dump(folder / f"data_batch_{i + 1}", batch)
        y = rng.integers(0, 10, n_test)
        _dump(folder / "test_batch", {"labels": y.tolist(), "data": _images(rng, y, 10)})
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        for name, n in (("train", n_train), ("test", n_test)):
            y = rng.integers(0, 100, n)
            _dump(folder / name,
                  {"fine_labels": y.tolist(), "coarse_labels": (y // 5).tolist(),
                   "data": _images(rng, y, 100)})  # fmt: skip
    return root


def run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """``sj-glif train ARGV``: (exit status, stdout, stderr); argparse's exits included."""
    try:
        code = cli.main(["train", *argv])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def one_thread():
    """The tensors here are tiny: extra intra-op threads only spin on a busy machine
    (a 2-epoch smoke run: 3 s with one thread, 55 s with two, under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cifar10(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifar(tmp_path_factory.mktemp("data10"), "cifar10")


@pytest.fixture(scope="module")
def cifar100(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifar(tmp_path_factory.mktemp("data100"), "cifar100")


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------- runs


def test_help_shows_defaults_and_the_papers_numbers(capsys):
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    text = " ".join(out.split())
    for default in ("(default: 200)", "(default: 64)", "(default: 0.1)", "(default: 4e-05)",
                    "(default: 6)", "(default: 128", "(default: sj-glif-train)"):  # fmt: skip
        assert default in text
    assert "77.35 %" in text and "95.14 %" in text and "not reproduced" in text


def test_train_writes_checkpoints_metrics_and_log(cifar10, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run(["--data", str(cifar10), "--dataset", "cifar10", "--epochs", "2",
                           "--out", str(out), *SMOKE], capsys)  # fmt: skip
    assert code == 0
    assert "40 train / 24 test images" in stdout and "95.14 %" in stdout
    assert "epoch   1/2 | train loss" in stdout and "epoch   2/2 | train loss" in stdout

    rows = _metrics(out)
    assert [r["epoch"] for r in rows] == [1, 2]
    # cosine over 2 epochs: 0.1, then 0.1 * (1 + cos(pi / 2)) / 2; gates at lr / 10
    assert [r["lr"] for r in rows] == pytest.approx([0.1, 0.05])
    assert [r["gate_lr"] for r in rows] == pytest.approx([0.01, 0.005])
    for r in rows:
        assert math.isfinite(r["train_loss"]) and math.isfinite(r["test_loss"])
        assert 0 <= r["train_acc"] <= 1 and 0 <= r["test_acc"] <= 1
        assert r["train_s"] > 0 and r["test_s"] > 0
    assert rows[1]["best_test_acc"] == max(r["test_acc"] for r in rows)

    ckpt = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert ckpt["format"] == "sj-glif-train/1" and ckpt["epoch"] == 2
    assert ckpt["args"]["width"] == 4 and ckpt["args"]["dataset"] == "cifar10"
    assert ckpt["scheduler"]["last_epoch"] == 2
    assert {"torch", "data"} <= set(ckpt["rng"]) and ckpt["versions"]["torch"] == torch.__version__
    assert ckpt["best_acc"] == rows[1]["best_test_acc"]
    best = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    assert best["test_acc"] == ckpt["best_acc"]

    # the checkpoint holds the evaluated model: its test accuracy, recomputed here
    net = SpikingResNet19(10, T=2, width=4)
    fresh = {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(ckpt["model"])
    # (the stem's GLIF gets gradients near 1e-7 here: the head's N(0, 0.01) weights, twice)
    trained = ("stem.0.weight", "blocks.7.sn2.v_threshold", "blocks.7.sn2.alpha", "head.1.weight")
    for key in trained:
        assert not torch.equal(fresh[key], ckpt["model"][key]), key  # trained, GLIF included
    data = load_cifar(cifar10, "cifar10")
    net.eval()
    with torch.no_grad():
        pred = net(normalize(data.x_test, data.mean, data.std)).argmax(1)
    functional.reset_net(net)
    assert (pred == data.y_test).float().mean().item() == pytest.approx(rows[1]["test_acc"])


def test_resume_continues_exactly(cifar10, tmp_path, capsys, monkeypatch):
    common = ["--data", str(cifar10), "--dataset", "cifar10", "--epochs", "2", *SMOKE]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert run([*common, "--out", str(whole)], capsys)[0] == 0

    # the same run, interrupted (as by Ctrl-C) right after epoch 1's checkpoint
    real_save = train_mod._save

    def save_then_interrupt(obj, path):
        real_save(obj, path)
        if path.name == "last.pt" and obj["epoch"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "_save", save_then_interrupt)
    code, _, err = run([*common, "--out", str(parts)], capsys)
    assert code == 130 and f"sj-glif train --resume --out {parts}" in err
    assert [r["epoch"] for r in _metrics(parts)] == [1]
    monkeypatch.setattr(train_mod, "_save", real_save)

    # options not given (data, dataset, epochs, width, ...) come from the checkpoint
    code, out, _ = run(["--resume", "--out", str(parts), "--no-progress"], capsys)
    assert code == 0 and "resuming after epoch 1 of 2" in out

    a = torch.load(whole / "last.pt", map_location="cpu", weights_only=True)
    b = torch.load(parts / "last.pt", map_location="cpu", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for pa, pb in zip(
        a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True
    ):
        assert torch.equal(pa["momentum_buffer"], pb["momentum_buffer"])
    assert torch.equal(a["rng"]["data"], b["rng"]["data"])
    timing = ("train_s", "test_s")
    strip = [{k: v for k, v in r.items() if k not in timing} for r in _metrics(whole)]
    assert [{k: v for k, v in r.items() if k not in timing} for r in _metrics(parts)] == strip

    # resuming a finished run does nothing
    code, out, _ = run(["--resume", "--out", str(parts), "--no-progress"], capsys)
    assert code == 0 and "nothing to do" in out and len(_metrics(parts)) == 2


def test_resume_drops_metrics_of_an_epoch_without_checkpoint(
    cifar10, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run"
    common = ["--data", str(cifar10), "--dataset", "cifar10", "--epochs", "2", *SMOKE]
    real_save = train_mod._save

    def interrupt_before_epoch_2_checkpoint(obj, path):
        if path.name == "last.pt" and obj["epoch"] == 2:
            raise KeyboardInterrupt
        real_save(obj, path)

    monkeypatch.setattr(train_mod, "_save", interrupt_before_epoch_2_checkpoint)
    assert run([*common, "--out", str(out)], capsys)[0] == 130
    assert [r["epoch"] for r in _metrics(out)] == [1, 2]  # epoch 2 logged, not checkpointed
    monkeypatch.setattr(train_mod, "_save", real_save)
    assert run(["--resume", "--out", str(out), "--no-progress"], capsys)[0] == 0
    assert [r["epoch"] for r in _metrics(out)] == [1, 2]


def test_cifar100_has_a_single_fc_head(cifar100, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run(["--data", str(cifar100 / "cifar-100-python"), "--dataset", "cifar100",
                           "--epochs", "1", "--out", str(out), *SMOKE], capsys)  # fmt: skip
    assert code == 0 and "77.35 %" in stdout
    model = torch.load(out / "last.pt", map_location="cpu", weights_only=True)["model"]
    heads = {k: tuple(v.shape) for k, v in model.items() if k.startswith("head.")}
    assert heads == {"head.0.weight": (100, 16)}


def test_divergence_stops_with_status_1(cifar10, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run(["--data", str(cifar10), "--dataset", "cifar10", "--epochs", "2",
                        "--lr", "1e30", "--out", str(out), *SMOKE], capsys)  # fmt: skip
    assert code == 1 and "stopping" in err
    assert not (out / "last.pt").exists()


# --------------------------------------------------------------------------- user errors


def _one_line_error(code: int, err: str) -> str:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_missing_folder_names_the_expected_folder(tmp_path, capsys):
    out = tmp_path / "run"
    line = _one_line_error(*run(["--data", str(tmp_path / "nowhere"), "--dataset", "cifar10",
                                 "--out", str(out), *SMOKE], capsys)[::2])  # fmt: skip
    assert "cifar-10-batches-py" in line and "never downloads" in line
    line = _one_line_error(*run(["--data", str(tmp_path), "--dataset", "cifar100",
                                 "--out", str(out), *SMOKE], capsys)[::2])  # fmt: skip
    assert "cifar-100-python" in line
    assert not out.exists()


def test_incomplete_folder_names_the_missing_files(cifar10, tmp_path, capsys):
    root = write_cifar(tmp_path / "data", "cifar10")
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    line = _one_line_error(*run(["--data", str(root), "--dataset", "cifar10",
                                 "--out", str(tmp_path / "run"), *SMOKE], capsys)[::2])  # fmt: skip
    assert "lacks data_batch_3" in line


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--epochs", "0"], "--epochs: expected an integer >= 1, got '0'"),
        (["--batch-size", "x"], "--batch-size: expected an integer >= 1"),
        (["--lr", "-1"], "--lr: expected a finite number > 0.0"),
        (["--lr", "nan"], "--lr: expected a finite number"),
        (["--weight-decay=-1e-4"], "--weight-decay: expected a finite number >= 0.0"),
        (["--T", "0"], "--T: expected an integer >= 1"),
        (["--dataset", "mnist"], "invalid choice: 'mnist'"),
        (["--amp", "fp8"], "invalid choice: 'fp8'"),
        (["--device", "tpu"], "--device: expected cpu, cuda or cuda:N, got 'tpu'"),
        (["--amp", "float16"], "--amp float16 needs a CUDA device"),
        (["--limit-train", "41"], "--limit-train 41:"),
        (["--limit-test", "0"], "--limit-test: expected an integer >= 1"),
        (["--resume"], "--resume: no checkpoint at"),
        (["--bogus", "1"], "unrecognized arguments: --bogus 1"),
    ],
)
def test_bad_arguments_are_one_line_errors(argv, words, cifar10, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["--data", str(cifar10), "--dataset", "cifar10", "--out", str(out), *SMOKE]
    line = _one_line_error(*run([*base, *argv], capsys)[::2])
    assert line.startswith("sj-glif train: error:") and words in line
    assert not out.exists()  # nothing written


def test_data_is_required_and_cuda_must_exist(tmp_path, capsys):
    line = _one_line_error(*run(["--out", str(tmp_path / "run")], capsys)[::2])
    assert "--data ROOT is required" in line
    if not torch.cuda.is_available():
        line = _one_line_error(*run(["--data", str(tmp_path), "--device", "cuda"], capsys)[::2])
        assert "CUDA is not available" in line


def test_an_existing_run_is_not_overwritten_and_resume_keeps_its_recipe(cifar10, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--data", str(cifar10), "--dataset", "cifar10", "--epochs", "1", "--out", str(out)]
    assert run([*common, *SMOKE], capsys)[0] == 0
    before = (out / "last.pt").read_bytes()
    line = _one_line_error(*run([*common, *SMOKE], capsys)[::2])
    assert "already holds a run" in line and "--resume" in line
    line = _one_line_error(*run(["--resume", "--out", str(out), "--lr", "0.5"], capsys)[::2])
    assert "--lr 0.5 (the run has 0.1)" in line
    assert (out / "last.pt").read_bytes() == before


# --------------------------------------------------------------------------- pieces


def _expected_parameters(classes: int, w: int = 128, T: int = 6) -> int:
    """ResNet-19 as described in sj_glif.resnet19, counted by hand."""

    def conv(cin, cout, k):
        return cin * cout * k * k

    def bn(c):
        return 2 * c

    def glif(c):  # alpha beta gamma tau v_threshold linear_decay v_subreset, conduct [T, C]
        return 7 * c + T * c

    total, cin = conv(3, w, 3) + bn(w) + glif(w), w
    for cout, repeats, stride in ((w, 3, 1), (2 * w, 3, 2), (4 * w, 2, 2)):
        for i in range(repeats):
            s = stride if i == 0 else 1
            total += conv(cin, cout, 3) + bn(cout) + glif(cout) + conv(cout, cout, 3) + bn(cout)
            total += bn(cout) + (conv(cin, cout, 1) if (cin != cout or s != 1) else 0)
            total += glif(cout)
            cin = cout
    return total + (cin * classes if classes > 50 else cin * 2 * w + 2 * w * classes)


@pytest.mark.parametrize("classes", [10, 100])
def test_full_size_resnet19_builds_with_the_stated_parameter_count(classes):
    net = SpikingResNet19(classes, T=6, width=128)
    assert count_parameters(net) == PARAMETERS[classes] == _expected_parameters(classes)
    glifs = [m for m in net.modules() if isinstance(m, GLIFNode)]
    assert len(glifs) == 17 and all(m.T == 6 and m.step_mode == "m" for m in glifs)
    assert sum(m.channels for m in glifs) == 4480


def test_tiny_resnet19_shapes_and_initialization():
    torch.manual_seed(0)
    net = SpikingResNet19(10, T=3, width=4)
    seen = {}
    net.blocks.register_forward_hook(lambda m, i, o: seen.update(features=o.shape))
    logits = net(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10) and seen["features"] == (3, 2, 16, 8, 8)
    node = net.stem[2]
    assert torch.sigmoid(node.linear_decay).allclose(torch.tensor(0.0625))
    assert torch.sigmoid(node.v_threshold).allclose(torch.tensor(0.5))
    assert node.alpha.abs().max() <= 0.1 and node.alpha.std() > 0  # U(-0.1, 0.1) per channel
    assert net.blocks[0].bn2.weight.allclose(torch.tensor(0.5 / math.sqrt(2)))
    assert net.stem[1].weight.allclose(torch.tensor(0.5))
    with pytest.raises(ValueError, match=r"expected images \[B, 3, H, W\]"):
        net(torch.randn(3, 2, 3, 32, 32))


def test_optimizer_groups_follow_the_official_recipe():
    net = SpikingResNet19(10, T=2, width=4)
    opt = train_mod._optimizer(net, lr=0.1, weight_decay=4e-5)
    decay, glif, gates = opt.param_groups
    ids = {name: id(p) for name, p in net.named_parameters()}
    gate_ids = {ids[n] for n in ids if n.rsplit(".", 1)[1] in ("alpha", "beta", "gamma")}
    glif_ids = {id(p) for _, p in net.glif_parameters()}
    assert {id(p) for p in gates["params"]} == gate_ids
    assert {id(p) for p in glif["params"]} == glif_ids - gate_ids
    assert {id(p) for p in decay["params"]} == set(ids.values()) - glif_ids  # conv, BN, fc
    assert (decay["weight_decay"], glif["weight_decay"], gates["weight_decay"]) == (4e-5, 0, 0)
    assert (decay["lr"], glif["lr"], gates["lr"]) == pytest.approx((0.1, 0.1, 0.01))
    assert all(g["momentum"] == 0.9 for g in opt.param_groups)


def test_load_cifar_reads_the_format_and_refuses_code(cifar10, tmp_path):
    data = load_cifar(cifar10 / "cifar-10-batches-py", "cifar10")  # the folder itself works too
    assert data.x_train.shape == (40, 3, 32, 32) and data.x_train.dtype == torch.uint8
    assert data.y_test.shape == (24,) and data.y_test.dtype == torch.long and data.classes == 10
    with open(cifar10 / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        raw = pickle.load(f)
    assert torch.equal(data.x_train[:8].reshape(8, -1), torch.from_numpy(raw["data"]))

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    root = write_cifar(tmp_path / "evil", "cifar100")
    _dump(root / "cifar-100-python" / "test", {"data": Evil(), "fine_labels": []})
    with pytest.raises(CifarError, match="not a CIFAR batch.*refusing to load"):
        load_cifar(root, "cifar100")
    assert not marker.exists()

    _dump(root / "cifar-100-python" / "test",
          {"data": np.zeros((2, 3072), np.uint8), "fine_labels": [0, 100]})  # fmt: skip
    with pytest.raises(CifarError, match=r"labels must lie in \[0, 100\)"):
        load_cifar(root, "cifar100")


def test_augment_crops_a_padded_window_and_flips():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8) + 1
    gen = torch.Generator().manual_seed(0)
    y = augment(x, gen, pad=2)
    assert y.shape == x.shape
    again = augment(x, torch.Generator().manual_seed(0), pad=2)
    assert torch.equal(y, again)
    xp = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for b in range(2):
        windows = [xp[b, :, i : i + 8, j : j + 8] for i in range(5) for j in range(5)]
        windows += [w.flip(-1) for w in windows]
        assert any(torch.equal(y[b], w) for w in windows)


def test_normalize_uses_the_given_mean_and_std():
    x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    y = normalize(x, (0.5, 0.25, 0.0), (0.5, 0.25, 2.0))
    assert torch.allclose(y[0, :, 0, 0], torch.tensor([1.0, 3.0, 0.5]))
