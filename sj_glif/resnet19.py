"""The spiking ResNet-19 of the GLIF paper's CIFAR experiments, built from SpikingJelly
layers and :class:`sj_glif.GLIFNode` (for ``sj-glif train``).

The structure follows the official GLIF code (``ResNet_19_cifar_CW`` in
``networks_for_CIFAR.py`` and ``BasicBlock_CW`` in ``blocks.py`` of CAS-CLab/Gated-LIF),
which follows the ResNet-19 of tdBN (Zheng et al., AAAI 2021):

- stem: conv3x3(3 -> w) - BN - GLIF                                   (w = width = 128)
- stage 1: 3 BasicBlocks, w channels, stride 1                        32x32
- stage 2: 3 BasicBlocks, 2w channels, the first with stride 2        16x16
- stage 3: 2 BasicBlocks, 4w channels, the first with stride 2        8x8
- global average pool per time step, then fc(4w -> 2w) - fc(2w -> classes) for up to 50
  classes (CIFAR-10: 512 -> 256 -> 10), or a single fc(4w -> classes) for more
  (CIFAR-100: 512 -> 100), as in the official code; no bias, no neuron between the fcs.
- BasicBlock: conv3x3(stride) - BN - GLIF - conv3x3 - BN, plus a shortcut, then GLIF.
  The shortcut is BN alone when the shape is kept (the official code normalizes the
  identity too) and conv1x1(stride) - BN otherwise.

Input: images ``[B, 3, H, W]`` (H, W multiples of 4), encoded directly: the same image at
each of the ``T`` steps. Output: the logits ``[B, classes]``, the mean over time of the
last fc's output. Call ``spikingjelly.activation_based.functional.reset_net`` after each
batch (the GLIF state is carried between calls).

BatchNorm: SpikingJelly's ``layer.BatchNorm2d`` in multi-step mode, i.e. statistics over
time and batch together (tdBN's normalization), with the weight initialized to
``alpha * V_th`` (0.5, and 0.5/sqrt(2) on the two branches that a block adds), as
SpikingJelly's ``ThresholdDependentBatchNorm2d`` does. The official ``tdBatchNorm``
multiplies by that constant instead of initializing the weight with it: the same function
at initialization, a different parameterization for the optimizer.

GLIF: channel-wise, the official CIFAR initialization: gates (raw) uniform in (-0.1, 0.1)
(``--randomgate``), tau 0.25, threshold 0.5, V_R 0.5, conduct 0.5 and V_L 0.0625 (the
official code's fixed ``Vth / (2 * 4)``, whatever T), rectangle surrogate (gradient 1 on
``|u - theta| < 0.5``). Other weights: conv Kaiming-normal (fan_out, ReLU gain), fc
normal(0, 0.01), BN bias 0.

Parameter counts at width 128 and T=6 (:data:`PARAMETERS`): CIFAR-10 12,758,784;
CIFAR-100 12,676,352. Of these the GLIF neurons hold 58,240 (17 neurons, 4480 channels;
per channel 7 parameters and T conduct values).
"""

from __future__ import annotations

import math

from spikingjelly.activation_based import functional, layer, surrogate
from torch import Tensor, nn

from .node import GLIFNode

__all__ = [
    "PARAMETERS",
    "V_TH",
    "BasicBlock",
    "SpikingResNet19",
    "count_parameters",
    "glif_neuron",
]

V_TH = 0.5  # initial GLIF threshold; tdBN scales BN outputs with it
LINEAR_DECAY = 0.0625  # official CIFAR init of V_L: Vth / (2 * 4), independent of T
# total parameter counts at width 128, T=6, checked by the tests
PARAMETERS = {10: 12_758_784, 100: 12_676_352}


def glif_neuron(channels: int, T: int) -> GLIFNode:
    """A multi-step channel-wise GLIF with the official CIFAR initialization."""
    return GLIFNode(
        T=T,
        channels=channels,
        init_tau=0.25,
        init_v_threshold=V_TH,
        init_linear_decay=LINEAR_DECAY,
        init_v_subreset=V_TH,
        init_conduct=0.5,
        init_gate_range=0.1,
        surrogate_function=surrogate.Rect(alpha=1.0),
        step_mode="m",
    )


def _bn(channels: int, alpha: float = 1.0) -> layer.BatchNorm2d:
    bn = layer.BatchNorm2d(channels, step_mode="m")
    nn.init.constant_(bn.weight, alpha * V_TH)
    nn.init.zeros_(bn.bias)
    return bn


def _conv(cin: int, cout: int, k: int, stride: int) -> layer.Conv2d:
    conv = layer.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False, step_mode="m")
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


class BasicBlock(nn.Module):
    """conv3x3(stride)-BN-GLIF-conv3x3-BN + shortcut, then GLIF; ``[T, B, C, H, W]``."""

    def __init__(self, cin: int, cout: int, stride: int, T: int) -> None:
        super().__init__()
        branch = 1.0 / math.sqrt(2.0)  # tdBN's alpha for the two branches that are added
        self.conv1 = _conv(cin, cout, 3, stride)
        self.bn1 = _bn(cout)
        self.sn1 = glif_neuron(cout, T)
        self.conv2 = _conv(cout, cout, 3, 1)
        self.bn2 = _bn(cout, branch)
        if cin == cout and stride == 1:
            self.shortcut = nn.Sequential(_bn(cout, branch))
        else:
            self.shortcut = nn.Sequential(_conv(cin, cout, 1, stride), _bn(cout, branch))
        self.sn2 = glif_neuron(cout, T)

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.sn1(self.bn1(self.conv1(x)))))
        return self.sn2(out + self.shortcut(x))


class SpikingResNet19(nn.Module):
    """Spiking ResNet-19 with GLIF neurons (see the module docstring for the layers).

    Args:
        classes: number of classes (default 10). Up to 50: a 2-layer head through
            ``2 * width`` features; more: one fc.
        T: time steps (default 6).
        width: channels of the stem and the first stage (default 128; stages use
            ``width, 2 width, 4 width``). Smaller widths are for smoke tests.

    Shapes: input ``[B, 3, H, W]``; output logits ``[B, classes]`` (mean over time).
    """

    def __init__(self, classes: int = 10, T: int = 6, width: int = 128) -> None:
        super().__init__()
        for name, v in (("classes", classes), ("T", T), ("width", width)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.T = T
        self.classes = classes
        self.width = width
        self.stem = nn.Sequential(_conv(3, width, 3, 1), _bn(width), glif_neuron(width, T))
        blocks: list[nn.Module] = []
        cin = width
        for cout, repeats, stride in ((width, 3, 1), (2 * width, 3, 2), (4 * width, 2, 2)):
            for i in range(repeats):
                blocks.append(BasicBlock(cin, cout, stride if i == 0 else 1, T))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.pool = layer.AdaptiveAvgPool2d((1, 1), step_mode="m")
        self.flatten = layer.Flatten(start_dim=1, step_mode="m")
        if classes > 50:
            fcs = [nn.Linear(cin, classes, bias=False)]
        else:
            fcs = [nn.Linear(cin, 2 * width, bias=False), nn.Linear(2 * width, classes, bias=False)]
        for fc in fcs:
            nn.init.normal_(fc.weight, 0.0, 0.01)
        self.head = nn.Sequential(*fcs)  # applied to [T, B, F]: per time step
        functional.set_step_mode(self.stem, "m")

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images [B, 3, H, W], got shape {tuple(x.shape)}")
        x_seq = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)  # direct encoding
        out = self.flatten(self.pool(self.blocks(self.stem(x_seq))))  # [T, B, 4w]
        return self.head(out).mean(0)

    def glif_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` of every GLIF neuron parameter."""
        return [
            (f"{m_name}.{p_name}", p)
            for m_name, m in self.named_modules()
            if isinstance(m, GLIFNode)
            for p_name, p in m.named_parameters(recurse=False)
        ]


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())
