"""The demo's network, its neurons, the ``--freeze`` ablation and the optimizer."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import nn

from ..node import GLIFNode

__all__ = [
    "FREEZE_PARTS",
    "GLIF_SYMBOLS",
    "NEURONS",
    "Config",
    "build_network",
    "glif_effective_params",
    "make_optimizer",
]

NEURONS = ("glif", "lif", "plif")
LABELS = {"glif": "GLIF", "lif": "LIF", "plif": "PLIF"}
HIDDEN = 128
WEIGHT_DECAY = 1e-4
GATE_LR_FACTOR = 0.1  # the official GLIF recipe trains the gates at lr/10

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

# --freeze parts -> the GLIF parameters kept at their initial values. The leak factor
# is d = 1 - a(1 - tau): "decay" freezes both of its learned parts (a is also a gate).
FREEZE_PARTS = OrderedDict(
    decay=("tau", "alpha"),
    gates=("alpha", "beta", "gamma"),
    conduct=("conduct",),
    threshold=("v_threshold",),
)
FREEZE_TEXT = {
    "decay": "decay (tau, a)",
    "gates": "gates (a, b, g)",
    "conduct": "conductance k_t",
    "threshold": "threshold",
}


@dataclass(frozen=True)
class Config:
    """One model variant: a neuron kind and the GLIF parts frozen at their initial values."""

    neuron: str
    freeze: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return self.neuron + "".join(f"-freeze-{p}" for p in self.freeze)

    @property
    def label(self) -> str:
        if not self.freeze:
            return LABELS[self.neuron]
        return (
            f"{LABELS[self.neuron]}, "
            + " + ".join(FREEZE_TEXT[p] for p in self.freeze)
            + (" frozen")
        )


def make_neuron(kind: str, T: int, channels: int, store_v_seq: bool = False) -> nn.Module:
    """One multi-step spiking neuron of ``kind``; every kind uses surrogate.Sigmoid(alpha=4)
    and detach_reset=False, otherwise its own defaults (LIF/PLIF: tau 2, threshold 1, hard
    reset to 0; GLIF: channel-wise, tau 0.25, theta 0.5, gates ~0.5)."""
    sg = surrogate.Sigmoid(alpha=4.0)
    if kind == "glif":
        return GLIFNode(
            T=T, channels=channels, surrogate_function=sg, step_mode="m", store_v_seq=store_v_seq
        )
    if kind == "lif":
        return neuron.LIFNode(surrogate_function=sg, step_mode="m", store_v_seq=store_v_seq)
    if kind == "plif":
        return neuron.ParametricLIFNode(
            surrogate_function=sg, step_mode="m", store_v_seq=store_v_seq
        )
    raise ValueError(f"unknown neuron {kind!r}; choose from {NEURONS}")


def build_network(config: Config, features: int, T: int, classes: int = 10) -> nn.Sequential:
    """The two-layer feed-forward SNN, multi-step (input ``[T, B, features]``):
    Linear(features, 128)-BN-neuron-Linear(128, 128)-BN-neuron-Linear(128, classes).
    The parameters of ``config.freeze`` are set to ``requires_grad=False``."""
    net = nn.Sequential(
        OrderedDict(
            fc1=layer.Linear(features, HIDDEN),
            bn1=layer.BatchNorm1d(HIDDEN),
            sn1=make_neuron(config.neuron, T, HIDDEN),
            fc2=layer.Linear(HIDDEN, HIDDEN),
            bn2=layer.BatchNorm1d(HIDDEN),
            sn2=make_neuron(config.neuron, T, HIDDEN),
            fc3=layer.Linear(HIDDEN, classes),
        )
    )
    functional.set_step_mode(net, "m")
    frozen = {p for part in config.freeze for p in FREEZE_PARTS[part]}
    for m in net.modules():
        if isinstance(m, GLIFNode):
            for name in frozen:
                getattr(m, name).requires_grad_(False)
    return net


NETWORK_TEXT = (
    "Linear(in,128)-BN-neuron-Linear(128,128)-BN-neuron-Linear(128,10), multi-step; "
    "logits = mean over time of the last layer"
)


def make_optimizer(net: nn.Module, lr: float) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; weight decay on Linear weights only; GLIF gates
    at lr * 0.1. Frozen parameters (``--freeze``) are left out."""
    decay, no_decay, gates = [], [], []
    for module in net.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if isinstance(module, GLIFNode) and name in _GATES:
                gates.append(p)
            elif isinstance(module, nn.Linear) and name == "weight":
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
                p: torch.sigmoid(getattr(m, p).detach().double()).cpu().numpy().copy()
                for p in GLIF_SYMBOLS
                if getattr(m, p) is not None
            }
    return out
