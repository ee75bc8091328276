"""The demo's figures: learning curves, what GLIF learned, membrane traces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .models import GLIF_SYMBOLS
from .report import with_decay
from .tasks import TITLES
from .training import RunResult

__all__ = ["plot_glif_parameters", "plot_learning_curves", "plot_traces"]

_COLORS = {"glif": "C0", "lif": "C1", "plif": "C2"}
_ABLATION_COLORS = ["C4", "C5", "C6", "C7", "C8", "C9"]


def plot_learning_curves(tasks: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    """Test accuracy (top) and training loss (bottom) per epoch, one column per task.
    Accuracy: mean ± std over seeds. Loss: log scale, geometric mean over seeds with a
    x/÷ geometric-std band, which stays positive (an arithmetic ± std band can reach 0 or
    below, which a log axis cannot show)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    names = list(tasks)
    fig = Figure(figsize=(4.6 * len(names), 6.4), layout="constrained")
    axes = fig.subplots(2, len(names), squeeze=False)
    for j, name in enumerate(names):
        ax_acc, ax_loss = axes[0, j], axes[1, j]
        k = 0
        for s in tasks[name]["summary"].values():
            if s["freeze"]:
                color, ls = _ABLATION_COLORS[k % len(_ABLATION_COLORS)], "--"
                k += 1
            else:
                color, ls = _COLORS[s["neuron"]], "-"
            acc = 100 * np.array([r["test_acc"] for r in s["runs"]])
            loss = np.array([r["train_loss"] for r in s["runs"]])
            ep = np.arange(1, acc.shape[1] + 1)
            marker = "o" if len(ep) < 3 else None
            m, sd = acc.mean(0), acc.std(0, ddof=1) if len(acc) > 1 else np.zeros(len(ep))
            ax_acc.plot(ep, m, color=color, ls=ls, marker=marker, ms=3, label=s["label"])
            ax_acc.fill_between(ep, m - sd, m + sd, color=color, alpha=0.15, lw=0)
            logl = np.log(np.maximum(loss, 1e-12))
            gm = logl.mean(0)
            gs = logl.std(0, ddof=1) if len(loss) > 1 else np.zeros(len(ep))
            ax_loss.plot(ep, np.exp(gm), color=color, ls=ls, marker=marker, ms=3)
            ax_loss.fill_between(ep, np.exp(gm - gs), np.exp(gm + gs), color=color, alpha=0.15,
                                 lw=0)  # fmt: skip
        ax_acc.set_title(TITLES[name], fontsize=10)
        ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)")
        ax_loss.set(xlabel="epoch", ylabel="train loss (cross-entropy)")
        ax_loss.set_yscale("log")
        # ticks at 1, 2, 5 x 10^k, written as plain numbers (0.05, 1, 2; not 2x10^0)
        ax_loss.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax_loss.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax_loss.yaxis.set_minor_formatter(NullFormatter())
        for ax in (ax_acc, ax_loss):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlim(0.5, acc.shape[1] + 0.5)
            ax.grid(alpha=0.3)
        ax_acc.legend(fontsize=7)
    fig.suptitle(
        f"{title}\naccuracy: mean ± std over seeds; loss: geometric mean ×/÷ geometric std",
        fontsize=10,
    )
    fig.savefig(path, dpi=110)


_PARAM_COLS = ["decay", "tau", "alpha", "beta", "gamma", "v_threshold", "v_subreset", "conduct"]
_PARAM_NAMES = {"decay": "d = 1 - a(1 - tau)", **GLIF_SYMBOLS}


def plot_glif_parameters(
    runs: list[RunResult], spread: dict[str, dict[str, dict[str, float]]], path: Path, title: str
) -> bool:
    """What GLIF learned, per layer (rows): histograms over channels (all seeds pooled) of
    the trained effective decay d = 1 - a(1 - tau), tau, the gates a, b, g, the threshold
    and V_R, with the initial value dashed; and k_t against the time step (mean ± std over
    channels). Each panel prints ``spread``'s numbers: mean ± std over channels, averaged
    over seeds, init -> trained (the same numbers as the results table). Returns False
    and writes nothing without unfrozen GLIF runs."""
    from matplotlib.figure import Figure

    glif = [r for r in runs if r.config.key == "glif" and r.glif_final is not None]
    if not glif or not spread:
        return False
    layers = list(glif[0].glif_final)
    fig = Figure(figsize=(2.25 * len(_PARAM_COLS), 2.3 * len(layers) + 0.9), layout="constrained")
    axes = fig.subplots(len(layers), len(_PARAM_COLS), squeeze=False)
    for i, lname in enumerate(layers):
        for j, p in enumerate(_PARAM_COLS):
            ax = axes[i, j]
            st = spread[lname][p]
            if p == "conduct":  # [T, C]: a learned gain per time step
                k = np.stack([r.glif_final[lname][p] for r in glif])  # [seeds, T, C]
                t = np.arange(k.shape[1])
                per_t = k.mean(0)  # [T, C], mean over seeds
                ax.plot(t, per_t.mean(1), color="C0")
                ax.fill_between(t, per_t.mean(1) - per_t.std(1), per_t.mean(1) + per_t.std(1),
                                color="C0", alpha=0.25, lw=0)  # fmt: skip
                ax.axhline(st["init_mean"], color="k", ls="--", lw=1)
                ax.set_xlabel("time step", fontsize=7)
            else:
                final = np.concatenate([with_decay(r.glif_final[lname])[p].ravel() for r in glif])
                init = np.concatenate([with_decay(r.glif_init[lname])[p].ravel() for r in glif])
                lo, hi = min(init.min(), final.min()), max(init.max(), final.max())
                if hi - lo < 1e-3:
                    lo, hi = lo - 5e-4, hi + 5e-4
                bins = np.linspace(lo, hi, 31)
                if init.std() > 1e-6:  # the gates start random; the others are one value
                    ax.hist(init, bins=bins, color="0.6", alpha=0.6)
                ax.hist(final, bins=bins, color="C0", alpha=0.8)
                ax.axvline(st["init_mean"], color="k", ls="--", lw=1)
                ax.set_yticks([])
            ax.text(
                0.03, 0.97,
                f"init {st['init_mean']:.2f} ± {st['init_std']:.2f}\n"
                f"trained {st['final_mean']:.2f} ± {st['final_std']:.2f}",
                transform=ax.transAxes, ha="left", va="top", fontsize=6.5,
                bbox={"facecolor": "white", "alpha": 0.7, "lw": 0, "pad": 1},
            )  # fmt: skip
            ax.tick_params(labelsize=7)
            if i == 0:
                ax.set_title(_PARAM_NAMES[p] + (" per step" if p == "conduct" else ""), fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{lname}\n(layer {i + 1})", fontsize=9)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [
        Patch(color="C0", alpha=0.8, label="trained (all channels, all seeds)"),
        Patch(color="0.6", alpha=0.6, label="initial (gates: raw ~ U(-0.1, 0.1))"),
        Line2D([], [], color="k", ls="--", lw=1, label="initial value"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8)
    fig.suptitle(
        f"{title}\nnumbers: mean ± std over channels, averaged over seeds (as in results.md)",
        fontsize=10,
    )
    fig.savefig(path, dpi=100)
    return True


def _pick(s: np.ndarray, n: int = 3) -> list[int]:
    """``n`` channels that spike but not at most steps (at most 60 % of them, when enough
    such channels exist), spread from most to least active; silent ones fill in last."""
    counts = s.sum(0)
    T = s.shape[0]
    order = [int(c) for c in np.argsort(-counts, kind="stable")]
    active = [c for c in order if 0 < counts[c] < T]
    moderate = [c for c in active if counts[c] <= 0.6 * T]
    pool = moderate if len(moderate) >= n else active
    if len(pool) >= n:
        return [pool[int(round(q))] for q in np.linspace(0, len(pool) - 1, n)]
    return (pool + [c for c in order if c not in pool])[:n]


def plot_traces(traces: dict[str, dict], path: Path, title: str) -> bool:
    """One test sequence (top) and, for GLIF and LIF (rows) in layers 1 and 2 (columns),
    the membrane of three neurons divided by its threshold (v/theta; a spike where it
    reaches 1), with each neuron's spikes as dots above the panel. GLIF's membrane is u_t
    before its reset, which GLIF applies at the next step; LIF's is SpikingJelly's v_seq,
    the membrane after the hard reset to 0. Returns False without both traces."""
    from matplotlib.figure import Figure

    nets = [k for k in ("glif", "lif", "plif") if k in traces]
    if not nets:
        return False
    first = traces[nets[0]]
    layers = [k for k in first if k.startswith("sn")]
    fig = Figure(figsize=(11, 2.0 + 2.6 * len(nets)), layout="constrained")
    grid = fig.add_gridspec(1 + len(nets), len(layers), height_ratios=[0.7] + [1] * len(nets))
    ax_in = fig.add_subplot(grid[0, :])
    x = first["input"]  # [T, F]
    T = x.shape[0]
    t = np.arange(T)
    if x.shape[1] == 1:
        ax_in.plot(t, x[:, 0], color="k", marker=".")
        ax_in.set_ylabel("input x_t")
    else:
        ax_in.imshow(
            x.T, aspect="auto", cmap="gray_r", extent=(-0.5, T - 0.5, x.shape[1] - 0.5, -0.5)
        )
        ax_in.set_ylabel("input (features)")
    ax_in.set_title(f"test sequence 0 (label {first['label']})", fontsize=9)
    ax_in.set_xlim(-0.5, T - 0.5)
    names = {"glif": "GLIF", "lif": "LIF", "plif": "PLIF"}
    for i, kind in enumerate(nets):
        tr = traces[kind]
        for j, lname in enumerate(layers):
            ax = fig.add_subplot(grid[1 + i, j], sharex=ax_in)
            v, s, theta = tr[lname]["v"], tr[lname]["s"], tr[lname]["theta"]
            picked = _pick(s)
            rel = v[:, picked] / theta[picked]
            top = max(1.0, float(np.nanmax(rel)))
            bottom = min(-0.5, float(np.nanmin(rel)))
            step = 0.08 * (top - bottom)
            for n, c in enumerate(picked):
                color = f"C{n}"
                extra = f", d={tr[lname]['decay'][c]:.2f}" if "decay" in tr[lname] else ""
                k = int(s[:, c].sum())
                ax.plot(t, rel[:, n], color=color, lw=1.2,
                        label=f"ch {c}: {k} spike{'' if k == 1 else 's'}{extra}")  # fmt: skip
                fired = np.nonzero(s[:, c] > 0)[0]  # spike ticks in a band above the data
                ax.plot(fired, np.full(len(fired), top + step * (n + 1)), ls="", marker="|",
                        color=color, ms=6, mew=1.5)  # fmt: skip
            ax.axhline(1.0, color="k", ls="--", lw=0.8)
            # room below the data for the legend, above it for the spike ticks
            ax.set_ylim(bottom - 0.45 * (top - bottom), top + step * 4)
            ax.set_ylabel(f"{names[kind]}: v / theta", fontsize=9)
            ax.set_title(f"{names[kind]}, layer {j + 1} ({lname}): {int(s.sum())} spikes in "
                         f"{s.shape[1]} neurons", fontsize=9)  # fmt: skip
            ax.legend(fontsize=7, loc="lower left", ncols=2, framealpha=0.9)
            ax.grid(alpha=0.3)
            if i == len(nets) - 1:
                ax.set_xlabel("time step")
    fig.suptitle(
        f"{title}\nmembrane / threshold of three neurons per layer; ticks above: their spikes. "
        "GLIF: u_t before its reset (applied at t+1); LIF: membrane after its hard reset",
        fontsize=9,
    )
    fig.savefig(path, dpi=110)
    return True
