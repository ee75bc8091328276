"""Training one network of the demo, and recording what its neurons did."""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional
from torch import Tensor, nn

from ..node import GLIFNode
from .models import Config, build_network, glif_effective_params, make_optimizer
from .tasks import Task

__all__ = ["RunResult", "evaluate", "record_trace", "seed_everything", "train_one"]


@dataclass
class RunResult:
    config: Config
    seed: int
    lr: float
    test_acc: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    epoch_time_s: list[float] = field(default_factory=list)  # training only, no test pass
    parameters: int = 0
    glif_init: OrderedDict | None = None
    glif_final: OrderedDict | None = None
    trace: dict[str, Any] | None = None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (every device). With one CPU thread the demo's CPU
    runs are then bitwise reproducible."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _steps(x: Tensor) -> Tensor:
    """``[B, T, F]`` -> ``[T, B, F]``, what the multi-step network takes."""
    return x.transpose(0, 1)


@torch.no_grad()
def evaluate(net: nn.Module, x: Tensor, y: Tensor, device: torch.device, bs: int = 500) -> float:
    """Test accuracy in [0, 1]; logits = mean over time."""
    net.eval()
    correct = 0
    for i in range(0, len(y), bs):
        xb = x[i : i + bs].to(device)
        yb = y[i : i + bs].to(device)
        correct += int((net(_steps(xb)).mean(0).argmax(1) == yb).sum())
        functional.reset_net(net)
    return correct / max(len(y), 1)


def train_one(
    config: Config,
    seed: int,
    task: Task,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    device: torch.device,
    trace: bool = False,
    progress: Any = None,
) -> RunResult:
    """Train the demo network with ``config`` from ``seed`` on ``task``; test after every
    epoch. AdamW (GLIF gates at lr/10), cosine schedule to 0 over ``epochs``. With
    ``trace``, record the membrane and spikes of layers 1 and 2 on one test sequence.
    ``progress``: called as ``progress(epoch, loss, test_acc)`` after each epoch."""
    seed_everything(seed)
    net = build_network(config, task.features, task.T, task.classes).to(device)
    res = RunResult(config=config, seed=seed, lr=lr)
    res.parameters = sum(p.numel() for p in net.parameters())
    if config.neuron == "glif":
        res.glif_init = glif_effective_params(net)
    opt = make_optimizer(net, lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    gen = torch.Generator().manual_seed(seed)  # shuffling
    x_train, y_train = task.x_train.to(device), task.y_train.to(device)
    n = len(y_train)
    for epoch in range(epochs):
        net.train()
        t0 = _now(device)
        perm = torch.randperm(n, generator=gen).to(device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            xb, yb = x_train[idx], y_train[idx]
            logits = net(_steps(xb)).mean(0)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            functional.reset_net(net)
            loss_sum += loss.detach() * len(idx)
            correct += (logits.detach().argmax(1) == yb).sum()
        sched.step()
        t1 = _now(device)
        acc = evaluate(net, task.x_test, task.y_test, device)
        res.train_loss.append(float(loss_sum) / n)
        res.train_acc.append(int(correct) / n)
        res.test_acc.append(acc)
        res.epoch_time_s.append(t1 - t0)
        if progress is not None:
            progress(epoch, res.train_loss[-1], acc)
    if config.neuron == "glif":
        res.glif_final = glif_effective_params(net)
    if trace:
        res.trace = record_trace(net, task, device)
    return res


@torch.no_grad()
def record_trace(net: nn.Module, task: Task, device: torch.device, index: int = 0) -> dict:
    """Run test sequence ``index`` through the trained ``net`` (eval mode) and return its
    input ``[T, F]`` and, per neuron layer, the membrane ``v`` and spikes ``s`` (``[T, C]``)
    and the threshold per channel (GLIF: the learned theta; LIF/PLIF: 1). GLIF's ``v`` is
    u_t before its reset (applied at the next step); SpikingJelly's LIF/PLIF ``v_seq`` is
    the membrane after the hard reset (0 where a spike fired)."""
    net.eval()
    layers = OrderedDict((n, m) for n, m in net.named_children() if n.startswith("sn"))
    spikes: dict[str, Tensor] = {}
    hooks = [
        m.register_forward_hook(lambda _m, _i, out, n=n: spikes.__setitem__(n, out))
        for n, m in layers.items()
    ]
    for m in layers.values():
        m.store_v_seq = True
    try:
        x = task.x_test[index : index + 1].to(device)
        net(_steps(x))
        out: dict[str, Any] = {"input": x[0].cpu().numpy(), "label": int(task.y_test[index])}
        for n, m in layers.items():
            theta = (
                torch.sigmoid(m.v_threshold.detach()).double().cpu().numpy()
                if isinstance(m, GLIFNode)
                else np.full(m.v_seq.shape[-1], float(m.v_threshold))
            )
            out[n] = {
                "v": m.v_seq[:, 0].double().cpu().numpy(),
                "s": spikes[n][:, 0].double().cpu().numpy(),
                "theta": theta,
            }
            if isinstance(m, GLIFNode):  # the leak factor d = 1 - a(1 - tau) per channel
                a, tau = (torch.sigmoid(p.detach().double()) for p in (m.alpha, m.tau))
                out[n]["decay"] = (1 - a * (1 - tau)).cpu().numpy()
    finally:
        for h in hooks:
            h.remove()
        for m in layers.values():
            m.store_v_seq = False
        functional.reset_net(net)
    return out


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
