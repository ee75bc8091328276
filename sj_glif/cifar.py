"""CIFAR-10 / CIFAR-100 from a local folder in torchvision's python format, and the
standard CIFAR augmentation as batched torch ops (for ``sj-glif train``).

Nothing is downloaded. The pickled batches are read with a restricted unpickler that
accepts only what the CIFAR files contain (dicts, lists, bytes, numbers and numpy arrays),
so a tampered file cannot run code. Images stay ``uint8`` in memory (CIFAR-10's 60000
images are 176 MiB) and are normalized per batch on the training device.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["DATASETS", "CifarData", "CifarError", "augment", "load_cifar", "normalize"]


@dataclass(frozen=True)
class _Spec:
    folder: str  # the folder torchvision's CIFAR10 / CIFAR100 (download=True) creates
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    classes: int
    # per-channel mean and std of the official GLIF code (data_builder.py)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


DATASETS: dict[str, _Spec] = {
    "cifar10": _Spec(
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "labels",
        10,
        (0.4914, 0.4822, 0.4465),
        (0.247, 0.243, 0.261),
    ),
    "cifar100": _Spec(
        "cifar-100-python",
        ("train",),
        ("test",),
        "fine_labels",
        100,
        (129.3 / 255, 124.1 / 255, 112.4 / 255),
        (68.2 / 255, 65.4 / 255, 70.4 / 255),
    ),
}


class CifarError(ValueError):
    """The data folder is missing, incomplete or holds something else than CIFAR."""


@dataclass
class CifarData:
    """A CIFAR dataset in memory.

    Attributes:
        name: ``"cifar10"`` or ``"cifar100"``.
        x_train, x_test: ``uint8 [N, 3, 32, 32]`` images, not normalized.
        y_train, y_test: ``int64 [N]`` labels in ``[0, classes)``.
        classes: 10 or 100.
        mean, std: per-channel normalization constants (official GLIF code's values).
        folder: the folder the batches were read from.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    folder: Path


class _CifarUnpickler(pickle.Unpickler):
    # what numpy arrays pickled by Python 2 (the official files) or 3 need, nothing else
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    what = f"a pickled dict with 'data' (uint8 [N, 3072]) and '{label_key}' (N ints)"
    try:
        with open(path, "rb") as f:
            d = _CifarUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise CifarError(f"{path}: not a CIFAR batch ({err}); expected {what}") from err
    if not isinstance(d, dict) or "data" not in d or label_key not in d:
        keys = sorted(map(str, d)) if isinstance(d, dict) else type(d).__name__
        raise CifarError(f"{path}: expected {what}, got {keys}")
    x, y = np.asarray(d["data"]), np.asarray(d[label_key])
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072 or y.shape != (len(x),):
        raise CifarError(
            f"{path}: expected {what}, got data {x.dtype} {list(x.shape)} and "
            f"{label_key} {y.dtype} {list(y.shape)}"
        )
    return x, y


def load_cifar(root: Path | str, dataset: str) -> CifarData:
    """Read CIFAR-10 or CIFAR-100 from ``root`` (torchvision's python format).

    Args:
        root: a folder that contains ``cifar-10-batches-py/`` (CIFAR-10: ``data_batch_1``
            .. ``data_batch_5``, ``test_batch``) or ``cifar-100-python/`` (CIFAR-100:
            ``train``, ``test``), as ``torchvision.datasets.CIFAR10/CIFAR100(root,
            download=True)`` creates it; or that folder itself.
        dataset: ``"cifar10"`` or ``"cifar100"``.

    Returns:
        :class:`CifarData` with uint8 images ``[N, 3, 32, 32]`` and int64 labels.

    Raises:
        CifarError: the folder or one of its files is missing, or a file is not a CIFAR
            batch of the expected shape, or a label is out of range. The message names
            the expected folder and files.
    """
    if dataset not in DATASETS:
        raise CifarError(f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
    spec = DATASETS[dataset]
    root = Path(root).expanduser()
    folder = root if root.name == spec.folder else root / spec.folder
    files = spec.train_files + spec.test_files
    how = (
        f"expected {root / spec.folder}/ with {', '.join(files)} (torchvision's python "
        f"format, as torchvision.datasets.{'CIFAR10' if spec.classes == 10 else 'CIFAR100'}"
        f"(root, download=True) creates it; sj-glif never downloads)"
    )
    if not folder.is_dir():
        raise CifarError(f"no {dataset} data under {str(root)!r}: {how}")
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise CifarError(f"{folder} lacks {', '.join(missing)}: {how}")

    def read(names: tuple[str, ...]) -> tuple[Tensor, Tensor]:
        parts = [_read_batch(folder / n, spec.label_key) for n in names]
        x = np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32)
        y = np.concatenate([p[1] for p in parts]).astype(np.int64)
        if len(y) and (y.min() < 0 or y.max() >= spec.classes):
            raise CifarError(
                f"{folder}: labels must lie in [0, {spec.classes}) for {dataset}, "
                f"got [{y.min()}, {y.max()}]"
            )
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)

    x_tr, y_tr = read(spec.train_files)
    x_te, y_te = read(spec.test_files)
    return CifarData(dataset, x_tr, y_tr, x_te, y_te, spec.classes, spec.mean, spec.std, folder)


def normalize(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """``uint8 [B, 3, H, W]`` -> float32, scaled to [0, 1] and standardized per channel."""
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return (x.float() / 255.0 - m) / s


def augment(x: Tensor, gen: torch.Generator, pad: int = 4) -> Tensor:
    """Random crop with zero padding ``pad`` (default 4) and a random horizontal flip,
    drawn per sample from ``gen`` (a CPU generator, so a run is reproducible on any
    device). ``x``: ``[B, C, H, W]`` (any dtype, any device); returns the same shape.

    Zero padding is applied to ``x`` as given: pass normalized images to pad with the
    mean (torchvision pads the uint8 image with black, i.e. before normalizing; pass
    uint8 images for that).
    """
    b, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
    rows = oy[:, None] + torch.arange(h, device=x.device)  # [B, H]
    cols = ox[:, None] + torch.arange(w, device=x.device)  # [B, W]
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return xp[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]
