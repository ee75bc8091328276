"""The demo's tasks: what each network sees at each time step.

Every task is stored as sequences ``[N, T, F]`` (float32) with labels ``[N]`` (int64):

- ``mnist1d``: MNIST-1D (Greydanus 2020) as a sequence, one sample per step (T=40, F=1),
  generated offline by the ``mnist1d`` package with its default arguments (seed 42; 4000
  train / 1000 test). Only the generator is used, never its download path.
- ``seq-digits``: scikit-learn's 8x8 digits, one 8-pixel row per step (T=8, F=8).
- ``static-digits``: the same digits, the whole 64-pixel image repeated at every step
  (T=4 by default, F=64): the contrast where the dynamics have nothing to integrate over time.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["TASKS", "TEMPORAL", "Task", "DemoError", "load_task"]

TASKS = ("mnist1d", "seq-digits", "static-digits")
TEMPORAL = ("mnist1d", "seq-digits")
TITLES = {
    "mnist1d": "MNIST-1D, one sample per step (T=40)",
    "seq-digits": "8x8 digits, one row per step (T=8)",
    "static-digits": "8x8 digits, the whole image at every step",
}


class DemoError(RuntimeError):
    """A problem with the demo's inputs (arguments, device, output folder, packages)."""


@dataclass
class Task:
    name: str
    x_train: Tensor  # float32 [N, T, F]
    y_train: Tensor  # int64 [N]
    x_test: Tensor  # float32 [M, T, F]
    y_test: Tensor  # int64 [M]
    description: str
    classes: int = 10

    @property
    def T(self) -> int:
        return self.x_train.shape[1]

    @property
    def features(self) -> int:
        return self.x_train.shape[2]

    @property
    def title(self) -> str:
        return TITLES[self.name]


def _subset(x: np.ndarray, y: np.ndarray, n: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` samples after a fixed stratified shuffle (all when n is None)."""
    if n is None or n >= len(y):
        return x, y
    from sklearn.model_selection import train_test_split

    x, _, y, _ = train_test_split(x, y, train_size=n, stratify=y, random_state=0)
    return x, y


def _digits(n_train: int | None, n_test: int | None) -> tuple[np.ndarray, ...]:
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise DemoError("the digits tasks need scikit-learn: pip install 'sj-glif[demo]'") from err
    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x / 16.0, y, test_size=0.25, stratify=y, random_state=0
    )
    x_tr, y_tr = _subset(x_tr, y_tr, n_train)
    x_te, y_te = _subset(x_te, y_te, n_test)
    mean, std = x_tr.mean(), x_tr.std()  # standardized with the training set's statistics
    return (x_tr - mean) / std, y_tr, (x_te - mean) / std, y_te


@functools.lru_cache(maxsize=1)
def _mnist1d_raw() -> dict:
    """MNIST-1D generated once per process (about a second); callers copy what they use."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as err:
        raise DemoError(
            "the mnist1d task needs the mnist1d package: pip install mnist1d "
            "(or pip install 'sj-glif[demo]')"
        ) from err
    state = np.random.get_state()  # make_dataset reseeds NumPy's global generator
    try:
        return make_dataset(get_dataset_args())  # generated here, no download
    finally:
        np.random.set_state(state)


def _mnist1d(n_train: int | None, n_test: int | None) -> tuple[np.ndarray, ...]:
    d = _mnist1d_raw()
    x_tr, y_tr = _subset(d["x"], d["y"], n_train)
    x_te, y_te = _subset(d["x_test"], d["y_test"], n_test)
    return x_tr, y_tr, x_te, y_te


def load_task(
    name: str, n_train: int | None = None, n_test: int | None = None, static_T: int = 4
) -> Task:
    """Load task ``name`` (one of :data:`TASKS`), optionally a fixed stratified subset of
    ``n_train`` training and ``n_test`` test samples (None: all); ``static_T``: the steps
    of ``static-digits`` (default 4). Deterministic."""
    if name not in TASKS:
        raise DemoError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    if name == "mnist1d":
        x_tr, y_tr, x_te, y_te = _mnist1d(n_train, n_test)
        shape = (40, 1)
        how = "MNIST-1D (mnist1d package, generated offline, seed 42), one sample per step"
    elif name == "seq-digits":
        x_tr, y_tr, x_te, y_te = _digits(n_train, n_test)
        shape = (8, 8)
        how = "scikit-learn 8x8 digits (stratified 75/25 split), one 8-pixel row per step"
    else:
        x_tr, y_tr, x_te, y_te = _digits(n_train, n_test)
        shape = (1, 64)
        how = (
            "scikit-learn 8x8 digits (stratified 75/25 split), the image repeated "
            f"T={static_T} times"
        )

    def prep(a: np.ndarray) -> Tensor:
        t = torch.tensor(np.asarray(a), dtype=torch.float32).reshape(-1, *shape)
        return t.expand(-1, static_T, -1).contiguous() if name == "static-digits" else t

    x_train, x_test = prep(x_tr), prep(x_te)
    return Task(
        name=name,
        x_train=x_train,
        y_train=torch.tensor(np.asarray(y_tr), dtype=torch.long),
        x_test=x_test,
        y_test=torch.tensor(np.asarray(y_te), dtype=torch.long),
        description=f"{how}: {len(y_tr)} train / {len(y_te)} test sequences, "
        f"T={x_train.shape[1]}, {x_train.shape[2]} input(s) per step",
    )


def validation_split(task: Task, fraction: float = 0.2) -> Task:
    """``task`` with its test set replaced by a held-out part of its training set (a fixed
    permutation, seed 0): what the learning-rate sweep selects on, so the test set never
    chooses a learning rate."""
    n = len(task.y_train)
    n_val = max(1, int(round(n * fraction)))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    tr, va = perm[n_val:], perm[:n_val]
    return Task(
        name=task.name,
        x_train=task.x_train[tr],
        y_train=task.y_train[tr],
        x_test=task.x_train[va],
        y_test=task.y_train[va],
        description=f"{task.description}; sweep: {len(tr)} train / {len(va)} validation "
        "sequences from the training set",
        classes=task.classes,
    )
