"""``sj-glif train``: the GLIF paper's CIFAR recipe, for a GPU.

Trains the spiking ResNet-19 of the GLIF paper (:mod:`sj_glif.resnet19`; channel-wise
GLIF, T=6, direct encoding, logits averaged over time, cross-entropy) on CIFAR-10 or
CIFAR-100 from a local folder in torchvision's python format (:mod:`sj_glif.cifar`;
nothing is downloaded), with the official optimizer settings: SGD, momentum 0.9, lr 0.1,
cosine schedule over the epochs (default 200, stepped once per epoch), batch 64, weight
decay 4e-5 on every parameter except the GLIF neurons' (the official code decays
BatchNorm weights and biases too), GLIF gates (alpha, beta, gamma) at lr/10 (the
official ``--tunable-lif``). Augmentation: random crop with zero padding 4 and
horizontal flip, then the official per-channel normalization.

Published results (the paper's, not reproduced by this project; no run here has trained
the full recipe): CIFAR-100, ResNet-19, T=6: 77.35 % (paper abstract; the official
README lists 77.42 %); CIFAR-10, ResNet-19, T=6: 95.14 % (best test accuracy).

Every epoch writes ``OUT/last.pt`` (model, optimizer, scheduler, gradient scaler, epoch,
best accuracy, arguments, RNG states, versions), ``OUT/best.pt`` when the test accuracy
improves (model weights) and a line of ``OUT/metrics.jsonl``. ``--resume`` continues
from ``OUT/last.pt``; on the CPU the result equals an uninterrupted run exactly (on CUDA,
cuDNN's autotuned convolutions need not be bitwise deterministic). ``--width`` and
``--limit-train/--limit-test`` make smoke runs that finish in seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional
from torch import nn

from .cifar import DATASETS, CifarData, CifarError, augment, load_cifar, normalize
from .node import GLIFNode
from .resnet19 import SpikingResNet19, count_parameters

__all__ = ["PUBLISHED", "TrainConfig", "TrainError", "add_arguments", "main", "register", "train"]

# the paper's numbers (ResNet-19, T=6, best test accuracy, %), for the help and the log
PUBLISHED = {
    "cifar10": "95.14 % (official README)",
    "cifar100": "77.35 % (paper abstract; the official README lists 77.42 %)",
}
MOMENTUM = 0.9
GATE_LR_FACTOR = 0.1  # official --tunable-lif: gates at lr / 10
_GATES = ("alpha", "beta", "gamma")
_CHECKPOINT_FORMAT = "sj-glif-train/1"
_AMP = ("none", "bfloat16", "float16")

DESCRIPTION = (
    "Train the GLIF paper's CIFAR setting: spiking ResNet-19 with channel-wise GLIF, T=6, "
    "direct encoding, SGD (momentum 0.9, lr 0.1, cosine over 200 epochs, batch 64, weight "
    "decay 4e-5 except on GLIF parameters, gates at lr/10), crop+flip augmentation. Reads "
    "CIFAR-10/100 from a local folder in torchvision's python format (never downloads). "
    "Writes OUT/last.pt every epoch, OUT/best.pt and OUT/metrics.jsonl."
)
EPILOG = (
    "published results (the paper's, not reproduced by sj-glif): ResNet-19, T=6: "
    f"CIFAR-100 {PUBLISHED['cifar100']}; CIFAR-10 {PUBLISHED['cifar10']}. "
    "Meant for a GPU (--device cuda). "
    "Smoke run: --width 8 --limit-train 256 --limit-test 256 --epochs 2."
)


class TrainError(ValueError):
    """A user error: bad arguments, data or output folder. Exit status 2."""


@dataclass
class TrainConfig:
    """The options of a run, named as ``sj-glif train``'s (``--batch-size`` ->
    ``batch_size``), with its defaults. The :data:`RECIPE` fields decide the result and
    must match when resuming; ``data``, ``device``, ``out`` and ``no_progress`` may
    change. ``device=None``: CUDA if available, else the CPU. ``limit_train`` /
    ``limit_test`` ``None``: every image."""

    data: str | None = None
    dataset: str = "cifar100"
    epochs: int = 200
    batch_size: int = 64
    lr: float = 0.1
    weight_decay: float = 4e-5
    T: int = 6
    width: int = 128
    amp: str = "none"
    seed: int = 0
    limit_train: int | None = None
    limit_test: int | None = None
    device: str | None = None
    out: str = "sj-glif-train"
    resume: bool = False
    no_progress: bool = False


RECIPE = (
    "dataset", "epochs", "batch_size", "lr", "weight_decay", "T", "width", "amp", "seed",
    "limit_train", "limit_test",
)  # fmt: skip
_DEFAULTS = TrainConfig()


# --------------------------------------------------------------------------- arguments


def _int_at_least(low: int) -> Any:
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = None
        if v is None or v < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
        return v

    return parse


def _float_at_least(low: float, strict: bool) -> Any:
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            v = math.nan
        if not math.isfinite(v) or v < low or (strict and v == low):
            op = ">" if strict else ">="
            raise argparse.ArgumentTypeError(f"expected a finite number {op} {low}, got {text!r}")
        return v

    return parse


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``sj-glif train``'s options to ``p``; its errors become one line on stderr.

    Options not given stay absent from the parsed namespace (``argparse.SUPPRESS``), so
    ``--resume`` can tell given options from defaults; :func:`main` fills the defaults.
    """
    d = _DEFAULTS
    s = argparse.SUPPRESS
    p.add_argument(
        "--data",
        metavar="ROOT",
        default=s,
        help="folder holding cifar-10-batches-py/ or cifar-100-python/ "
        "(torchvision's python format); required unless --resume",
    )
    p.add_argument("--dataset", choices=sorted(DATASETS), default=s, help=f"(default: {d.dataset})")
    p.add_argument(
        "--epochs",
        type=_int_at_least(1),
        default=s,
        help=f"epochs; the cosine schedule spans them (default: {d.epochs})",
    )
    p.add_argument(
        "--batch-size", type=_int_at_least(1), default=s, help=f"(default: {d.batch_size})"
    )
    p.add_argument(
        "--lr",
        type=_float_at_least(0.0, True),
        default=s,
        help=f"SGD learning rate; GLIF gates get lr/10 (default: {d.lr})",
    )
    p.add_argument(
        "--weight-decay",
        type=_float_at_least(0.0, False),
        default=s,
        help=f"on every non-GLIF parameter (default: {d.weight_decay})",
    )
    p.add_argument("--T", type=_int_at_least(1), default=s, help=f"time steps (default: {d.T})")
    p.add_argument(
        "--width",
        type=_int_at_least(1),
        default=s,
        help=f"channels of the first stage; stages use width, 2x, 4x "
        f"(default: {d.width}, the paper's ResNet-19; e.g. 8 for a smoke run)",
    )
    p.add_argument(
        "--device", default=s, help="cpu, cuda or cuda:N (default: cuda if available, else cpu)"
    )
    p.add_argument(
        "--amp",
        choices=_AMP,
        default=s,
        help=f"autocast dtype on CUDA; float16 adds a gradient scaler (default: {d.amp})",
    )
    p.add_argument(
        "--seed",
        type=_int_at_least(0),
        default=s,
        help=f"initialization, shuffling and augmentation (default: {d.seed})",
    )
    p.add_argument(
        "--limit-train",
        metavar="N",
        type=_int_at_least(1),
        default=s,
        help="train on the first N training images only (default: all)",
    )
    p.add_argument(
        "--limit-test",
        metavar="N",
        type=_int_at_least(1),
        default=s,
        help="test on the first N test images only (default: all)",
    )
    p.add_argument("--out", default=s, help=f"output folder (default: {d.out})")
    p.add_argument(
        "--resume",
        action="store_true",
        default=s,
        help="continue the run in OUT from OUT/last.pt; options not given are "
        "taken from it, recipe options given must match it",
    )
    p.add_argument("--no-progress", action="store_true", default=s, help="no progress bar")

    def error(message: str) -> None:  # one line, not argparse's usage block
        print(f"{p.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)

    p.error = error  # type: ignore[method-assign]
    parse_known = p.parse_known_args

    def parse_known_args(args: Any = None, namespace: Any = None) -> Any:
        # argparse hands a subcommand's unknown options up to the top-level parser, which
        # reports them with its usage block; report them here, in one line
        ns, extras = parse_known(args, namespace)
        if extras:
            error(f"unrecognized arguments: {' '.join(extras)}")
        return ns, extras

    p.parse_known_args = parse_known_args  # type: ignore[method-assign]


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``train`` subcommand to ``sj-glif``'s subparsers."""
    p = subparsers.add_parser(
        "train",
        help="train the GLIF paper's CIFAR ResNet-19 (for a GPU)",
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    add_arguments(p)
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    """Run ``sj-glif train`` from parsed arguments; returns the exit status (2: user error,
    1: training diverged, 130: interrupted, 0: done)."""
    given = {k: v for k, v in vars(args).items() if k in _field_names()}
    try:
        return train(given)
    except TrainError as err:
        print(f"sj-glif train: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        out = Path(given.get("out", _DEFAULTS.out))
        if (out / "last.pt").is_file():
            hint = f"continue with: sj-glif train --resume --out {out}"
        else:
            hint = "no epoch had finished, nothing to resume"
        print(f"\ninterrupted; {hint}", file=sys.stderr)
        return 130


def _field_names() -> set[str]:
    return {f.name for f in dataclasses.fields(TrainConfig)}


# --------------------------------------------------------------------------- validation


def _resolve_device(text: str | None) -> torch.device:
    if text is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise TrainError(f"--device: expected cpu, cuda or cuda:N, got {text!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainError(f"--device {text}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise TrainError(
                f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return device


def _check_amp(amp: str, device: torch.device) -> None:
    if amp == "none":
        return
    if device.type != "cuda":
        raise TrainError(f"--amp {amp} needs a CUDA device (autocast on CUDA), got {device}")
    if amp == "bfloat16" and not torch.cuda.is_bf16_supported():
        raise TrainError(f"--amp bfloat16: {torch.cuda.get_device_name(device)} lacks bfloat16")


def _load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TrainError(f"--resume: no checkpoint at {path} (a run writes it after each epoch)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a damaged file
        raise TrainError(f"--resume: cannot read {path}: {type(err).__name__}: {err}") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != _CHECKPOINT_FORMAT:
        raise TrainError(f"--resume: {path} is not an sj-glif train checkpoint")
    return ckpt


def _configure(given: dict[str, Any]) -> tuple[TrainConfig, dict[str, Any] | None]:
    """Merge the given options with the defaults (or, resuming, with the checkpoint's)."""
    out = Path(given.get("out", _DEFAULTS.out)).expanduser()
    if out.exists() and not out.is_dir():
        raise TrainError(f"--out {str(out)!r} is a file; expected a folder")
    ckpt = None
    if given.get("resume"):
        ckpt = _load_checkpoint(out / "last.pt")
        saved = ckpt["args"]
        diff = [
            f"--{k.replace('_', '-')} {given[k]} (the run has {saved[k]})"
            for k in RECIPE
            if k in given and given[k] != saved[k]
        ]
        if diff:
            raise TrainError(
                "--resume continues the run in "
                f"{out} unchanged; these options differ from it: {'; '.join(diff)}"
            )
        merged = {k: saved[k] for k in RECIPE}
        merged["data"] = saved["data"]
        merged.update({k: v for k, v in given.items() if k not in RECIPE})
    else:
        if (out / "last.pt").exists():
            raise TrainError(
                f"--out {str(out)!r} already holds a run (last.pt); pass --resume to continue "
                "it or choose another --out"
            )
        merged = dict(given)
    cfg = dataclasses.replace(_DEFAULTS, **merged)
    cfg.out = str(out)
    if cfg.data is None:
        raise TrainError("--data ROOT is required: the folder holding the CIFAR data")
    return cfg, ckpt


# --------------------------------------------------------------------------- training


def _optimizer(net: nn.Module, lr: float, weight_decay: float) -> torch.optim.SGD:
    """SGD with the official groups: decayed weights; GLIF parameters without decay;
    GLIF gates without decay at lr/10."""
    decay, glif, gates = [], [], []
    for module in net.modules():
        for name, p in module.named_parameters(recurse=False):
            if isinstance(module, GLIFNode):
                (gates if name in _GATES else glif).append(p)
            else:
                decay.append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": glif, "weight_decay": 0.0},
        {"params": gates, "weight_decay": 0.0, "lr": lr * GATE_LR_FACTOR},
    ]
    return torch.optim.SGD(groups, lr=lr, momentum=MOMENTUM)


def _rng_state(gen: torch.Generator) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "data": gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["data"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda)


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    from . import __version__

    return {
        "sj_glif": __version__,
        "torch": str(torch.__version__),  # TorchVersion: not loadable with weights_only
        "spikingjelly": version("spikingjelly"),
        "python": platform.python_version(),
    }


def _save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # a crash mid-save leaves the previous file intact


def _limit(data: CifarData, cfg: TrainConfig) -> None:
    for split, n in (("train", cfg.limit_train), ("test", cfg.limit_test)):
        if n is None:
            continue
        have = len(getattr(data, f"y_{split}"))
        if n > have:
            raise TrainError(f"--limit-{split} {n}: {data.folder} holds only {have} {split} images")
        setattr(data, f"x_{split}", getattr(data, f"x_{split}")[:n])
        setattr(data, f"y_{split}", getattr(data, f"y_{split}")[:n])


class _Bar:
    """A tqdm bar over the batches of one epoch, or nothing."""

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True)

    def update(self, **postfix: str) -> None:
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _sync(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _autocast(device: torch.device, amp: torch.dtype | None) -> Any:
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp)


@torch.no_grad()
def _evaluate(
    net: nn.Module, data: CifarData, device: torch.device, bs: int, amp: torch.dtype | None
) -> tuple[float, float]:
    """Test loss and accuracy (fractions) over ``data``'s test split."""
    net.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.long)
    n = len(data.y_test)
    for i in range(0, n, bs):
        xb = normalize(data.x_test[i : i + bs].to(device), data.mean, data.std)
        yb = data.y_test[i : i + bs].to(device)
        with _autocast(device, amp):
            logits = net(xb)
        loss_sum += F.cross_entropy(logits.float(), yb, reduction="sum")
        correct += (logits.argmax(1) == yb).sum()
        functional.reset_net(net)
    return float(loss_sum) / n, int(correct) / n


def train(given: dict[str, Any]) -> int:
    """Run a training from options (``TrainConfig`` field names; absent: default, or the
    checkpoint's value with ``resume``). Returns 0, or 1 if the loss diverged.

    Raises:
        TrainError: a user error, found before training starts.
    """
    cfg, ckpt = _configure(given)
    device = _resolve_device(cfg.device)
    _check_amp(cfg.amp, device)
    progress = not cfg.no_progress
    if progress:
        try:
            import tqdm  # noqa: F401
        except ImportError:
            print("no progress bar: tqdm is not installed (pip install tqdm)")
            progress = False
    out = Path(cfg.out)
    if ckpt is not None and ckpt["epoch"] >= cfg.epochs:
        print(f"nothing to do: the run in {out} finished its {cfg.epochs} epochs")
        return 0
    try:
        data = load_cifar(cfg.data, cfg.dataset)
    except CifarError as err:
        raise TrainError(f"--data: {err}") from err
    _limit(data, cfg)

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)  # shuffling and augmentation
    net = SpikingResNet19(data.classes, T=cfg.T, width=cfg.width).to(device)
    opt = _optimizer(net, cfg.lr, cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    amp = None if cfg.amp == "none" else getattr(torch, cfg.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "float16")
    start, best_acc, best_epoch = 0, 0.0, 0
    if ckpt is not None:
        net.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"], gen)
        start, best_acc, best_epoch = ckpt["epoch"], ckpt["best_acc"], ckpt["best_epoch"]
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.jsonl"
    _keep_metrics_until(metrics_path, start)
    args_saved = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(TrainConfig)}
    n_train, n_test = len(data.y_train), len(data.y_test)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(
        f"sj-glif train: spiking ResNet-19 (width {cfg.width}, GLIF, T={cfg.T}), "
        f"{count_parameters(net):,} parameters; {cfg.dataset} from {data.folder}: "
        f"{n_train} train / {n_test} test images; device {device} ({where or 'CPU'}), "
        f"amp {cfg.amp}; {'resuming after' if start else 'starting at'} epoch {start} "
        f"of {cfg.epochs}; writing to {out}"
    )
    print(f"the paper reports {PUBLISHED[cfg.dataset]} for the full recipe (ResNet-19, T=6)")

    x_train = data.x_train.to(device)
    y_train = data.y_train.to(device)
    eval_bs = max(cfg.batch_size, 256)
    n_batches = math.ceil(n_train / cfg.batch_size)
    for epoch in range(start, cfg.epochs):
        net.train()
        lrs = [g["lr"] for g in opt.param_groups]
        t0 = _sync(device)
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        correct = torch.zeros((), device=device, dtype=torch.long)
        perm = torch.randperm(n_train, generator=gen)
        bar = _Bar(n_batches, f"epoch {epoch + 1}/{cfg.epochs}", progress)
        for b, i in enumerate(range(0, n_train, cfg.batch_size)):
            idx = perm[i : i + cfg.batch_size].to(device)
            xb = normalize(augment(x_train[idx], gen), data.mean, data.std)
            yb = y_train[idx]
            with _autocast(device, amp):
                logits = net(xb)
                loss = F.cross_entropy(logits.float(), yb)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            functional.reset_net(net)
            loss_sum += loss.detach().double() * len(idx)
            correct += (logits.detach().argmax(1) == yb).sum()
            bar.update(**({"loss": f"{loss.item():.3f}"} if b % 50 == 0 else {}))
        bar.close()
        sched.step()
        t1 = _sync(device)
        train_loss, train_acc = float(loss_sum) / n_train, int(correct) / n_train
        if not math.isfinite(train_loss):
            print(
                f"epoch {epoch + 1}: the training loss is {train_loss}; stopping. "
                f"{out / 'last.pt'} keeps epoch {epoch} (try a lower --lr or --amp none)",
                file=sys.stderr,
            )
            return 1
        test_loss, test_acc = _evaluate(net, data, device, eval_bs, amp)
        t2 = _sync(device)
        improved = test_acc > best_acc or epoch == 0
        if improved:
            best_acc, best_epoch = test_acc, epoch + 1
        record = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "test_loss": test_loss,
            "test_acc": test_acc,
            "best_test_acc": best_acc,
            "lr": lrs[0],
            "gate_lr": lrs[2],
            "train_s": t1 - t0,
            "test_s": t2 - t1,
        }
        state = {
            "format": _CHECKPOINT_FORMAT,
            "epoch": epoch + 1,
            "model": net.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "scaler": scaler.state_dict(),
            "best_acc": best_acc,
            "best_epoch": best_epoch,
            "args": args_saved,
            "rng": _rng_state(gen),
            "versions": _versions(),
            "saved_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
        # metrics, best, then last.pt: an interruption in between repeats the epoch on
        # --resume, whose metrics line then replaces this one
        with open(metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if improved:
            _save(
                {"model": net.state_dict(), "epoch": epoch + 1, "test_acc": test_acc,
                 "args": args_saved, "versions": state["versions"]},
                out / "best.pt",
            )  # fmt: skip
        _save(state, out / "last.pt")
        print(
            f"epoch {epoch + 1:>3}/{cfg.epochs} | train loss {train_loss:.4f} "
            f"acc {100 * train_acc:6.2f} % | test loss {test_loss:.4f} acc {100 * test_acc:6.2f} % "
            f"(best {100 * best_acc:.2f} % at {best_epoch}) | lr {lrs[0]:.4g} | "
            f"{t1 - t0:.1f} s train, {t2 - t1:.1f} s test",
            flush=True,
        )
    print(f"done: best test accuracy {100 * best_acc:.2f} % (epoch {best_epoch}); {out}")
    return 0


def _keep_metrics_until(path: Path, epoch: int) -> None:
    """Drop lines of ``metrics.jsonl`` after ``epoch`` (written before a crash, or by a run
    whose checkpoint is older), so a resumed run's file has each epoch once."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    keep = [ln for ln in lines if json.loads(ln)["epoch"] <= epoch]
    if len(keep) != len(lines):
        path.write_text("".join(ln + "\n" for ln in keep))
