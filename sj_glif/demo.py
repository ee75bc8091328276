"""``sj-glif demo``: train a small spiking CNN with GLIF, LIF and PLIF and compare them.

The default run trains on scikit-learn's bundled 8x8 handwritten digits (1797 images, no
download; a fixed stratified 75/25 split), three neurons x three seeds, in about two
minutes on a 2-core CPU. ``--data PATH`` trains a wider network on CIFAR-10 from a local
folder in torchvision's format instead (meant for a GPU: ``--device cuda``).

Every run: direct encoding (the image repeated ``T`` times), SpikingJelly layers in
multi-step mode, the output is the mean over time of the last Linear layer, cross-entropy,
``functional.reset_net`` after every batch. Optimizer: AdamW with a cosine schedule to 0;
weight decay only on conv/linear weights (0 on BatchNorm, biases and every neuron
parameter), and GLIF's gates (alpha, beta, gamma) at lr/10, in the spirit of the official
GLIF recipe (SGD, lr 0.1, 200 epochs: far beyond a demo's budget).

Outputs in ``out_dir``: ``results.md`` and ``results.json`` (table, per-epoch curves,
machine, versions, date, arguments), ``learning_curves.png`` and ``glif_parameters.png``
(the learned distributions of GLIF's effective parameters per layer, against their
initial values).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import random
import sys
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import Tensor, nn

from .convert import materialize
from .node import GLIFNode

__all__ = ["NEURONS", "DemoError", "add_arguments", "load_cifar10", "main", "run_demo"]

NEURONS = ("glif", "lif", "plif")
LABELS = {"glif": "GLIF (sj-glif)", "lif": "LIF", "plif": "PLIF"}
DEFAULT_EPOCHS = 30
DEFAULT_LR = 1e-2
WEIGHT_DECAY = 1e-4
GATE_LR_FACTOR = 0.1
DEFAULT_OUT = Path("sj-glif-demo")

# GLIF parameter name -> symbol in the paper; effective value = sigmoid(raw)
GLIF_SYMBOLS = OrderedDict(
    alpha="a",
    beta="b",
    gamma="g",
    tau="tau",
    v_threshold="theta",
    linear_decay="V_L",
    v_subreset="V_R",
    conduct="k_t",
)
_GATES = ("alpha", "beta", "gamma")

_CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
_CIFAR_STD = (0.2470, 0.2435, 0.2616)


class DemoError(RuntimeError):
    """A problem with the demo's inputs (data folder, device, arguments)."""


# --------------------------------------------------------------------------- data


@dataclass
class Data:
    name: str
    x_train: Tensor  # float32 [N, C, H, W], normalized
    y_train: Tensor  # int64 [N]
    x_test: Tensor
    y_test: Tensor
    classes: int
    augment: bool  # random crop (padding 4) + horizontal flip during training
    description: str


def load_digits_data(quick: bool = False) -> Data:
    """scikit-learn's 8x8 digits: stratified 75/25 split (random_state 0), pixels scaled
    to [0, 1] then standardized with the training set's mean and std."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise DemoError("the digits demo needs scikit-learn: pip install 'sj-glif[demo]'") from err
    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x / 16.0, y, test_size=0.25, stratify=y, random_state=0
    )
    if quick:  # a stratified subset, for smoke tests
        x_tr, _, y_tr, _ = train_test_split(
            x_tr, y_tr, train_size=256, stratify=y_tr, random_state=0
        )
        x_te, _, y_te, _ = train_test_split(
            x_te, y_te, train_size=128, stratify=y_te, random_state=0
        )
    mean, std = x_tr.mean(), x_tr.std()

    def prep(a: np.ndarray) -> Tensor:
        return torch.tensor((a - mean) / std, dtype=torch.float32).view(-1, 1, 8, 8)

    return Data(
        name="digits",
        x_train=prep(x_tr),
        y_train=torch.tensor(y_tr, dtype=torch.long),
        x_test=prep(x_te),
        y_test=torch.tensor(y_te, dtype=torch.long),
        classes=10,
        augment=False,
        description=(
            f"scikit-learn 8x8 digits, stratified split (random_state=0): "
            f"{len(y_tr)} train / {len(y_te)} test images" + (" (quick subset)" if quick else "")
        ),
    )


def load_cifar10(root: Path | str, quick: bool = False) -> Data:
    """CIFAR-10 from ``root`` in torchvision's format (``root/cifar-10-batches-py``; ``root``
    may also be that folder itself), loaded with ``torchvision.datasets.CIFAR10(root,
    download=False)``, normalized with the usual per-channel mean and std.

    Raises:
        DemoError: the folder does not exist or does not hold the dataset (torchvision
            checks every file's md5).
    """
    from torchvision import datasets

    root = Path(root).expanduser()
    if root.name == "cifar-10-batches-py" and not (root / "cifar-10-batches-py").is_dir():
        root = root.parent
    how = (
        "expected a folder containing cifar-10-batches-py/ (data_batch_1 .. data_batch_5, "
        "test_batch, batches.meta) as torchvision.datasets.CIFAR10(root=PATH, download=True) "
        "creates it"
    )
    if not root.is_dir():
        raise DemoError(f"--data {str(root)!r}: no such folder; {how}")
    if not (root / "cifar-10-batches-py").is_dir():
        raise DemoError(f"--data {str(root)!r} does not contain cifar-10-batches-py/; {how}")
    try:
        train = datasets.CIFAR10(root=str(root), train=True, download=False)
        test = datasets.CIFAR10(root=str(root), train=False, download=False)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
        raise DemoError(
            f"--data {str(root)!r}: torchvision could not load CIFAR-10 from it ({err}); "
            f"its files are missing or fail torchvision's md5 check; {how}"
        ) from err

    mean = torch.tensor(_CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(_CIFAR_STD).view(1, 3, 1, 1)

    def prep(ds: Any, n: int | None) -> tuple[Tensor, Tensor]:
        x = torch.as_tensor(np.asarray(ds.data)[:n]).permute(0, 3, 1, 2).float() / 255.0
        y = torch.as_tensor(np.asarray(ds.targets)[:n], dtype=torch.long)
        return ((x - mean) / std).contiguous(), y

    x_tr, y_tr = prep(train, 128 if quick else None)
    x_te, y_te = prep(test, 128 if quick else None)
    return Data(
        name="cifar10",
        x_train=x_tr,
        y_train=y_tr,
        x_test=x_te,
        y_test=y_te,
        classes=len(train.classes),
        augment=True,
        description=(
            f"CIFAR-10 from {root}: {len(y_tr)} train / {len(y_te)} test images"
            + (" (quick subset)" if quick else "")
            + "; random crop (padding 4) and horizontal flip"
        ),
    )


def _augment(x: Tensor, gen: torch.Generator) -> Tensor:
    """Random crop with zero padding 4 and a random horizontal flip, per sample."""
    b, _, h, w = x.shape
    pad = 4
    xp = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
    rows = oy[:, None] + torch.arange(h, device=x.device)  # [B, H]
    cols = ox[:, None] + torch.arange(w, device=x.device)  # [B, W]
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return xp[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


# --------------------------------------------------------------------------- model


def make_neuron(kind: str, T: int) -> nn.Module:
    """One spiking neuron of ``kind``; every kind uses surrogate.Sigmoid(alpha=4) and
    detach_reset=False, and otherwise its own defaults."""
    sg = surrogate.Sigmoid(alpha=4.0)
    if kind == "glif":
        return GLIFNode(T=T, surrogate_function=sg, detach_reset=False, step_mode="m")
    if kind == "lif":
        return neuron.LIFNode(surrogate_function=sg, detach_reset=False, step_mode="m")
    if kind == "plif":
        return neuron.ParametricLIFNode(surrogate_function=sg, detach_reset=False, step_mode="m")
    raise ValueError(f"unknown neuron {kind!r}; choose from {NEURONS}")


def build_network(kind: str, dataset: str, T: int, classes: int = 10) -> nn.Sequential:
    """The demo's spiking CNN (multi-step), with every neuron of ``kind``.

    digits (1x8x8): conv16-BN-SN-pool, conv32-BN-SN-pool, fc128-SN, fc10.
    cifar10 (3x32x32): conv64-BN-SN, conv128-BN-SN-pool, conv256-BN-SN-pool,
    conv256-BN-SN-pool, fc10.
    """
    mods: OrderedDict[str, nn.Module] = OrderedDict()

    def conv(i: int, cin: int, cout: int, pool: bool) -> None:
        mods[f"conv{i}"] = layer.Conv2d(cin, cout, 3, padding=1, bias=False)
        mods[f"bn{i}"] = layer.BatchNorm2d(cout)
        mods[f"sn{i}"] = make_neuron(kind, T)
        if pool:
            mods[f"pool{i}"] = layer.MaxPool2d(2)

    if dataset == "digits":
        conv(1, 1, 16, True)  # 4x4
        conv(2, 16, 32, True)  # 2x2
        mods["flatten"] = layer.Flatten()
        mods["fc1"] = layer.Linear(32 * 2 * 2, 128)
        mods["sn3"] = make_neuron(kind, T)
        mods["fc2"] = layer.Linear(128, classes)
    elif dataset == "cifar10":
        conv(1, 3, 64, False)
        conv(2, 64, 128, True)  # 16x16
        conv(3, 128, 256, True)  # 8x8
        conv(4, 256, 256, True)  # 4x4
        mods["flatten"] = layer.Flatten()
        mods["fc"] = layer.Linear(256 * 4 * 4, classes)
    else:
        raise ValueError(f"unknown dataset {dataset!r}")
    net = nn.Sequential(mods)
    functional.set_step_mode(net, "m")
    return net


NETWORK_TEXT = {
    "digits": "conv16-BN-SN-maxpool, conv32-BN-SN-maxpool, fc128-SN, fc10",
    "cifar10": "conv64-BN-SN, conv128-BN-SN-maxpool, conv256-BN-SN-maxpool, "
    "conv256-BN-SN-maxpool, fc10",
}


def forward(net: nn.Module, x: Tensor, T: int) -> Tensor:
    """Direct encoding: the image repeated ``T`` times; logits = mean over time."""
    return net(forward_input(x, T)).mean(0)


def forward_input(x: Tensor, T: int) -> Tensor:
    """``[B, ...]`` images -> ``[T, B, ...]``, the same image at every step."""
    return x.unsqueeze(0).expand(T, *x.shape)


def make_optimizer(net: nn.Module, lr: float) -> torch.optim.Optimizer:
    """AdamW; weight decay on conv/linear weights only; GLIF gates at lr * 0.1."""
    decay, no_decay, gates = [], [], []
    for module in net.modules():
        for name, p in module.named_parameters(recurse=False):
            if isinstance(module, GLIFNode) and name in _GATES:
                gates.append(p)
            elif isinstance(module, (nn.Conv2d, nn.Linear)) and name == "weight":
                decay.append(p)
            else:  # BatchNorm, biases, neuron parameters (GLIF, PLIF)
                no_decay.append(p)
    groups = [
        {"params": decay, "weight_decay": WEIGHT_DECAY},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if gates:
        groups.append({"params": gates, "weight_decay": 0.0, "lr": lr * GATE_LR_FACTOR})
    return torch.optim.AdamW(groups, lr=lr)


def glif_effective_params(net: nn.Module) -> OrderedDict[str, dict[str, np.ndarray]]:
    """``{layer name: {parameter: sigmoid(raw) as a numpy array}}`` for every GLIFNode."""
    out: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()
    for name, m in net.named_modules():
        if isinstance(m, GLIFNode):
            out[name] = {
                p: torch.sigmoid(getattr(m, p).detach().float()).cpu().numpy().copy()
                for p in GLIF_SYMBOLS
                if getattr(m, p) is not None
            }
    return out


# --------------------------------------------------------------------------- training


@dataclass
class RunResult:
    neuron: str
    seed: int
    test_acc: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    epoch_time_s: list[float] = field(default_factory=list)  # training only
    eval_time_s: list[float] = field(default_factory=list)
    parameters: int = 0
    glif_init: OrderedDict | None = None
    glif_final: OrderedDict | None = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # every device


@torch.no_grad()
def evaluate(net: nn.Module, x: Tensor, y: Tensor, T: int, device: torch.device, bs: int) -> float:
    net.eval()
    correct = 0
    for i in range(0, len(y), bs):
        xb = x[i : i + bs].to(device, non_blocking=True)
        yb = y[i : i + bs].to(device, non_blocking=True)
        correct += int((forward(net, xb, T).argmax(1) == yb).sum())
        functional.reset_net(net)
    return correct / max(len(y), 1)


def train_one(
    kind: str,
    seed: int,
    data: Data,
    *,
    T: int,
    epochs: int,
    batch_size: int,
    lr: float,
    device: torch.device,
    progress: bool,
) -> RunResult:
    """Train one network with neuron ``kind`` from seed ``seed``; test after every epoch."""
    seed_everything(seed)
    net = build_network(kind, data.name, T, data.classes).to(device)
    materialize(net, forward_input(data.x_train[:2].to(device), T))  # before the optimizer
    res = RunResult(neuron=kind, seed=seed)
    res.parameters = sum(p.numel() for p in net.parameters())
    if kind == "glif":
        res.glif_init = glif_effective_params(net)
    opt = make_optimizer(net, lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    gen = torch.Generator().manual_seed(seed)  # shuffling and augmentation
    n = len(data.y_train)
    eval_bs = max(batch_size, 256)

    bar = _tqdm(range(epochs), f"{LABELS[kind]:<14} seed {seed}", progress)
    for _ in bar:
        net.train()
        t0 = _now(device)
        perm = torch.randperm(n, generator=gen)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size].to(data.x_train.device)
            xb = data.x_train[idx]
            if data.augment:
                xb = _augment(xb, gen)
            xb = xb.to(device, non_blocking=True)
            yb = data.y_train[idx].to(device, non_blocking=True)
            logits = forward(net, xb, T)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            functional.reset_net(net)
            loss_sum += loss.detach() * len(idx)
            correct += (logits.detach().argmax(1) == yb).sum()
        sched.step()
        t1 = _now(device)
        acc = evaluate(net, data.x_test, data.y_test, T, device, eval_bs)
        t2 = _now(device)
        res.train_loss.append(float(loss_sum) / n)
        res.train_acc.append(int(correct) / n)
        res.test_acc.append(acc)
        res.epoch_time_s.append(t1 - t0)
        res.eval_time_s.append(t2 - t1)
        if progress:
            bar.set_postfix(loss=f"{res.train_loss[-1]:.3f}", test_acc=f"{acc:.3f}")
    if kind == "glif":
        res.glif_final = glif_effective_params(net)
    return res


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _tqdm(it: Any, desc: str, progress: bool) -> Any:
    if not progress:
        return it
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the demo extra
        return it
    return tqdm(it, desc=desc, unit="epoch", leave=True, dynamic_ncols=True)


# --------------------------------------------------------------------------- summary


def summarize(runs: list[RunResult]) -> dict[str, dict[str, Any]]:
    """Per neuron: final and best test accuracy (mean, std over seeds), best epoch of the
    seed-averaged curve, training seconds per epoch (median over all epochs and seeds)."""
    out: dict[str, dict[str, Any]] = {}
    for kind in dict.fromkeys(r.neuron for r in runs):
        rs = [r for r in runs if r.neuron == kind]
        acc = np.array([r.test_acc for r in rs], dtype=float)  # [seeds, epochs]
        mean_curve = acc.mean(0)
        out[kind] = {
            "label": LABELS[kind],
            "seeds": [r.seed for r in rs],
            "final_acc_mean": float(acc[:, -1].mean()),
            "final_acc_std": float(acc[:, -1].std()),
            "best_acc_mean": float(acc.max(1).mean()),
            "best_acc_std": float(acc.max(1).std()),
            "best_epoch": int(mean_curve.argmax()) + 1,
            "best_epoch_acc_mean": float(mean_curve.max()),
            # medians: robust to a busy machine and to first-call overheads
            "time_per_epoch_s": float(np.median([t for r in rs for t in r.epoch_time_s])),
            "eval_time_per_epoch_s": float(np.median([t for r in rs for t in r.eval_time_s])),
            "parameters": rs[0].parameters,
            "runs": [
                {
                    "seed": r.seed,
                    "test_acc": r.test_acc,
                    "train_loss": r.train_loss,
                    "train_acc": r.train_acc,
                    "epoch_time_s": r.epoch_time_s,
                    "eval_time_s": r.eval_time_s,
                }
                for r in rs
            ],
        }
    return out


def glif_spread(runs: list[RunResult]) -> OrderedDict[str, dict[str, dict[str, float]]]:
    """Per GLIF layer and parameter: std (and mean) over channels of the effective value at
    init and after training, averaged over seeds (``conduct``: over all T x C entries)."""
    glif = [r for r in runs if r.neuron == "glif" and r.glif_final is not None]
    out: OrderedDict[str, dict[str, dict[str, float]]] = OrderedDict()
    if not glif:
        return out
    for lname, params in glif[0].glif_final.items():
        out[lname] = {}
        for p in params:
            init = [r.glif_init[lname][p] for r in glif]
            final = [r.glif_final[lname][p] for r in glif]
            out[lname][p] = {
                "init_std": float(np.mean([v.std() for v in init])),
                "final_std": float(np.mean([v.std() for v in final])),
                "init_mean": float(np.mean([v.mean() for v in init])),
                "final_mean": float(np.mean([v.mean() for v in final])),
                "final_min": float(min(v.min() for v in final)),
                "final_max": float(max(v.max() for v in final)),
            }
    return out


def _pct(m: float, s: float) -> str:
    return f"{100 * m:.2f} ± {100 * s:.2f} %"


def results_table(summary: dict[str, dict[str, Any]]) -> str:
    """The results as a Markdown table."""
    head = (
        "| neuron | final test acc | best test acc | best epoch | train s/epoch | params |\n"
        "|---|---|---|---|---|---|\n"
    )
    rows = [
        f"| {s['label']} | {_pct(s['final_acc_mean'], s['final_acc_std'])} "
        f"| {_pct(s['best_acc_mean'], s['best_acc_std'])} | {s['best_epoch']} "
        f"| {s['time_per_epoch_s']:.2f} | {s['parameters']:,} |"
        for s in summary.values()
    ]
    return head + "\n".join(rows)


def spread_table(spread: OrderedDict[str, dict[str, dict[str, float]]]) -> str:
    """GLIF heterogeneity: std over channels of each effective parameter, init -> trained."""
    if not spread:
        return ""
    params = list(next(iter(spread.values())))
    head = (
        "| layer | "
        + " | ".join(GLIF_SYMBOLS[p] for p in params)
        + " |\n|---|"
        + "---|" * len(params)
        + "\n"
    )
    rows = [
        f"| {lname} | "
        + " | ".join(f"{d[p]['init_std']:.3f} → {d[p]['final_std']:.3f}" for p in params)
        + " |"
        for lname, d in spread.items()
    ]
    return head + "\n".join(rows)


def environment(device: torch.device) -> dict[str, Any]:
    """Machine, versions and date."""
    import spikingjelly

    from . import __version__

    info: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "device": str(device),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": _cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "spikingjelly": _version("spikingjelly", spikingjelly),
        "sj_glif": __version__,
    }
    for mod, dist in (("triton", "triton"), ("torchvision", "torchvision"),
                      ("sklearn", "scikit-learn"), ("numpy", "numpy"),
                      ("matplotlib", "matplotlib")):  # fmt: skip
        info[mod] = _version(dist)
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _version(dist: str, module: Any = None) -> str | None:
    """A package's version: its installed distribution's, else ``module.__version__``."""
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return getattr(module, "__version__", None)


def _cpu_count() -> int | None:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count()


# --------------------------------------------------------------------------- plots


def plot_learning_curves(summary: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_acc, ax_loss = fig.subplots(1, 2)
    for i, s in enumerate(summary.values()):
        color = f"C{i}"
        acc = 100 * np.array([r["test_acc"] for r in s["runs"]])
        loss = np.array([r["train_loss"] for r in s["runs"]])
        ep = np.arange(1, acc.shape[1] + 1)
        for ax, vals in ((ax_acc, acc), (ax_loss, loss)):
            m, sd = vals.mean(0), vals.std(0)
            ax.plot(ep, m, color=color, marker="o" if len(ep) < 3 else None, ms=3,
                    label=f"{s['label']} ({len(s['runs'])} seeds)")  # fmt: skip
            ax.fill_between(ep, m - sd, m + sd, color=color, alpha=0.2, lw=0)
    ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy (mean ± std)")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="train loss (mean ± std)")
    ax_loss.set_yscale("log")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_acc, ax_loss):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.savefig(path, dpi=120)


def plot_glif_parameters(runs: list[RunResult], path: Path, title: str) -> bool:
    """Histograms of the effective GLIF parameters per layer (rows) and parameter
    (columns), pooled over seeds: initial values in grey, trained in colour, the mean
    initial value dashed. Returns False (and writes nothing) without GLIF runs."""
    from matplotlib.figure import Figure

    glif = [r for r in runs if r.neuron == "glif" and r.glif_final is not None]
    if not glif:
        return False
    layers = list(glif[0].glif_final)
    params = list(glif[0].glif_final[layers[0]])
    fig = Figure(figsize=(2.3 * len(params), 2.1 * len(layers) + 0.8), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(layers), len(params), squeeze=False))
    for i, lname in enumerate(layers):
        for j, p in enumerate(params):
            ax = axes[i, j]
            init = np.concatenate([r.glif_init[lname][p].ravel() for r in glif])
            final = np.concatenate([r.glif_final[lname][p].ravel() for r in glif])
            lo = min(init.min(), final.min())
            hi = max(init.max(), final.max())
            if hi - lo < 1e-3:
                lo, hi = lo - 5e-4, hi + 5e-4
            bins = np.linspace(lo, hi, 31)
            if init.std() > 1e-6:  # the gates: random init; a constant init is only a line
                ax.hist(init, bins=bins, color="0.6", alpha=0.6)
            ax.hist(final, bins=bins, color="C0", alpha=0.75)
            ax.axvline(init.mean(), color="k", ls="--", lw=1)
            ax.text(
                0.97, 0.95, f"std {init.std():.3f}\n→ {final.std():.3f}",
                transform=ax.transAxes, ha="right", va="top", fontsize=7,
            )  # fmt: skip
            ax.tick_params(labelsize=7)
            ax.set_yticks([])
            if i == 0:
                ax.set_title(GLIF_SYMBOLS[p] + (" (T x C)" if p == "conduct" else ""))
            if j == 0:
                n_ch = glif[0].glif_final[lname][p].size
                ax.set_ylabel(f"{lname}\n({n_ch} ch)", fontsize=9)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [
        Patch(color="C0", alpha=0.75, label="trained (all channels, all seeds)"),
        Patch(color="0.6", alpha=0.6, label="initial (gates: raw ~ U(-0.1, 0.1))"),
        Line2D([], [], color="k", ls="--", lw=1, label="initial value (mean)"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8)
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    return True


# --------------------------------------------------------------------------- entry points


def run_demo(
    out_dir: Path,
    data: Path | None = None,
    device: str = "cpu",
    seeds: int = 3,
    epochs: int = DEFAULT_EPOCHS,
    T: int = 4,
    neurons: Sequence[str] = NEURONS,
    batch_size: int = 64,
    progress: bool = True,
    quick: bool = False,
    lr: float = DEFAULT_LR,
    threads: int | None = None,
) -> dict:
    """Train the demo network with each neuron in ``neurons`` for ``seeds`` seeds
    (0, 1, ...) and write ``results.md``, ``results.json``, ``learning_curves.png`` and
    ``glif_parameters.png`` (when GLIF is among the neurons) to ``out_dir``.

    Args:
        out_dir: output folder (created).
        data: a folder with CIFAR-10 in torchvision's format; None: sklearn's 8x8 digits.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        seeds: number of seeds per neuron.
        epochs: training epochs per run.
        T: time steps (direct encoding).
        neurons: any of ``"glif"``, ``"lif"``, ``"plif"``.
        batch_size: training batch size.
        progress: show a tqdm bar per run (the summary and table are printed anyway).
        quick: a smoke run: 1 seed, 1 epoch, a subset of the data.
        lr: AdamW learning rate (GLIF gates: lr / 10).
        threads: PyTorch CPU threads during the demo (restored afterwards). None: 1 for
            the digits network on the CPU (its tensors are so small that a second
            intra-op thread costs more than it saves: 3-5x slower measured on a busy
            2-core machine), PyTorch's setting otherwise.

    Returns:
        The contents of ``results.json`` (plus ``"table"``, the Markdown results table).

    Raises:
        DemoError: bad data folder, CUDA unavailable, or bad arguments.
    """
    t_start = time.perf_counter()
    neurons = tuple(neurons)
    bad = [n for n in neurons if n not in NEURONS]
    if bad or not neurons:
        raise DemoError(f"neurons must be a non-empty subset of {NEURONS}, got {neurons}")
    for name, v in (("seeds", seeds), ("epochs", epochs), ("T", T), ("batch_size", batch_size)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise DemoError(f"{name} must be a positive integer, got {v!r}")
    if quick:
        seeds, epochs = 1, 1
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise DemoError(f"bad device {device!r}: {err}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DemoError(
            f"--device {device}: CUDA is not available here (torch {torch.__version__}, "
            f"built with CUDA {torch.version.cuda}); run on the CPU with --device cpu"
        )
    if dev.type not in ("cpu", "cuda"):
        raise DemoError(f"--device must be cpu or cuda[:N], got {device!r}")

    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise DemoError(f"threads must be a positive integer or None, got {threads!r}")

    ds = load_digits_data(quick) if data is None else load_cifar10(data, quick)
    if threads is None and ds.name == "digits" and dev.type == "cpu":
        threads = 1
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(ds, out_dir, data, dev, seeds, epochs, T, neurons, batch_size, progress,
                    quick, lr, t_start)  # fmt: skip
    finally:
        torch.set_num_threads(old_threads)


def _run(
    ds: Data,
    out_dir: Path,
    data: Path | None,
    dev: torch.device,
    seeds: int,
    epochs: int,
    T: int,
    neurons: tuple[str, ...],
    batch_size: int,
    progress: bool,
    quick: bool,
    lr: float,
    t_start: float,
) -> dict:
    if dev.type == "cuda":  # the whole dataset on the GPU: no per-batch host copies
        for name in ("x_train", "y_train", "x_test", "y_test"):
            setattr(ds, name, getattr(ds, name).to(dev))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    arguments = {
        "out_dir": str(out_dir),
        "data": None if data is None else str(data),
        "device": str(dev),
        "seeds": seeds,
        "epochs": epochs,
        "T": T,
        "neurons": list(neurons),
        "batch_size": batch_size,
        "lr": lr,
        "quick": quick,
        "torch_threads": torch.get_num_threads(),
    }
    optimizer_text = (
        f"AdamW lr {lr:g}, cosine to 0 over {epochs} epoch(s), batch {batch_size}; "
        f"weight decay {WEIGHT_DECAY:g} on conv/linear weights only (0 on BatchNorm, biases "
        f"and all neuron parameters); GLIF gates a, b, g at lr/10"
    )
    neuron_text = (
        "surrogate.Sigmoid(alpha=4) and detach_reset=False for all; GLIF: sj-glif GLIFNode "
        "channel-wise (init tau 0.25, theta 0.5, gates ~0.5); LIF: tau 2, v_threshold 1, "
        "hard reset to 0; PLIF: init_tau 2, v_threshold 1, hard reset to 0"
    )
    print(f"sj-glif demo: {ds.description}")
    print(f"network: {NETWORK_TEXT[ds.name]}; T={T}, direct encoding; device {dev}")
    print(f"optimizer: {optimizer_text}", flush=True)

    runs: list[RunResult] = []
    for kind in neurons:
        for seed in range(seeds):
            runs.append(
                train_one(
                    kind,
                    seed,
                    ds,
                    T=T,
                    epochs=epochs,
                    batch_size=batch_size,
                    lr=lr,
                    device=dev,
                    progress=progress,
                )  # fmt: skip
            )

    summary = summarize(runs)
    spread = glif_spread(runs)
    table = results_table(summary)
    stable = spread_table(spread)
    env = environment(dev)
    wall = time.perf_counter() - t_start

    title = f"sj-glif demo: {ds.name}, T={T}, {seeds} seed(s), {epochs} epoch(s)"
    files = ["results.md", "results.json", "learning_curves.png"]
    plot_learning_curves(summary, out_dir / "learning_curves.png", title)
    if plot_glif_parameters(
        runs, out_dir / "glif_parameters.png", f"{title}: learned GLIF parameters"
    ):
        files.append("glif_parameters.png")

    result = {
        "dataset": ds.name,
        "data_description": ds.description,
        "network": NETWORK_TEXT[ds.name],
        "neuron_settings": neuron_text,
        "optimizer": optimizer_text,
        "arguments": arguments,
        "environment": env,
        "wall_time_s": wall,
        "neurons": summary,
        "glif_parameter_spread": spread,
        "files": files,
    }
    (out_dir / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "results.md").write_text(_markdown(result, table, stable))
    result["table"] = table
    result["glif_spread_table"] = stable
    print()
    print(table)
    if stable:
        print()
        print("GLIF heterogeneity: std over channels of each effective parameter, "
              "init → trained (mean over seeds)")  # fmt: skip
        print(stable)
    print(f"\nwall time {wall:.1f} s; wrote {', '.join(str(out_dir / f) for f in files)}")
    return result


def _markdown(result: dict, table: str, stable: str) -> str:
    env = result["environment"]
    machine = env.get("gpu") or env["processor"]
    args = ", ".join(f"{k}={v}" for k, v in result["arguments"].items())
    lines = [
        "# sj-glif demo results",
        "",
        f"- date: {env['date']}",
        f"- machine: {machine}, {env['platform']}, {env['cpu_count']} CPU(s), "
        f"torch threads {env['torch_threads']}, device {env['device']}",
        f"- versions: python {env['python']}, torch {env['torch']}, spikingjelly "
        f"{env['spikingjelly']}, sj-glif {env['sj_glif']}, triton {env['triton']}, "
        f"torchvision {env['torchvision']}, scikit-learn {env['sklearn']}",
        f"- arguments: {args}",
        f"- data: {result['data_description']}",
        f"- network: {result['network']}; direct encoding (image repeated T times), output = "
        "mean over time of the last Linear layer, cross-entropy; functional.reset_net after "
        "every batch",
        f"- neurons: {result['neuron_settings']}",
        f"- optimizer: {result['optimizer']}",
        f"- wall time: {result['wall_time_s']:.1f} s",
        "",
        "Accuracy: mean ± std over seeds of the last epoch's (final) and of each run's best "
        "test accuracy; best epoch: the epoch where the seed-averaged test accuracy peaks; "
        "train s/epoch: median over epochs and seeds of the training time (the test pass is "
        "not included).",
        "",
        table,
        "",
        "![learning curves](learning_curves.png)",
        "",
    ]
    if stable:
        lines += [
            "## GLIF heterogeneity",
            "",
            "Std over channels of each effective (after sigmoid) GLIF parameter, at "
            "initialization → after training, mean over seeds (k_t: over all T x C values). "
            "All neurons of a layer start identical except for the gates, whose raw values "
            "are drawn from U(-0.1, 0.1).",
            "",
            stable,
            "",
            "![GLIF parameters](glif_parameters.png)",
            "",
        ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``sj-glif demo`` options."""
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="PATH",
        help="train on CIFAR-10 from this folder (torchvision format: PATH/cifar-10-batches-py, "
        "no download) instead of scikit-learn's 8x8 digits",
    )
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"output folder (default: ./{DEFAULT_OUT})",
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds per neuron (default 3)")
    parser.add_argument(
        "--epochs", type=int, default=DEFAULT_EPOCHS, help=f"epochs (default {DEFAULT_EPOCHS})"
    )
    parser.add_argument("--T", type=int, default=4, help="time steps (default 4)")
    parser.add_argument(
        "--neurons",
        nargs="+",
        choices=NEURONS,
        default=list(NEURONS),
        help="neurons to compare (default: glif lif plif)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, help="training batch size (default 64)"
    )
    parser.add_argument(
        "--lr", type=float, default=DEFAULT_LR, help=f"AdamW learning rate (default {DEFAULT_LR})"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="PyTorch CPU threads (default: 1 for the digits network on the CPU, where more "
        "threads only add overhead; PyTorch's default otherwise)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 seed, 1 epoch, a data subset"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    """Run ``sj-glif demo`` with parsed ``args``; 0 on success, 2 on a usage error."""
    try:
        run_demo(
            out_dir=args.out,
            data=args.data,
            device=args.device,
            seeds=args.seeds,
            epochs=args.epochs,
            T=args.T,
            neurons=tuple(args.neurons),
            batch_size=args.batch_size,
            progress=not args.no_progress,
            quick=args.quick,
            lr=args.lr,
            threads=args.threads,
        )
    except DemoError as err:
        print(f"sj-glif demo: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    _p = argparse.ArgumentParser(prog="sj-glif demo")
    add_arguments(_p)
    sys.exit(main(_p.parse_args()))
