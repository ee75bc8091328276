"""The demo's numbers and words: summaries over seeds, tables, and the sentences that
state each result. Every sentence is computed from the run's numbers."""

from __future__ import annotations

import datetime as _dt
import platform
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from .models import FREEZE_TEXT, GLIF_SYMBOLS
from .training import RunResult

__all__ = [
    "ablation_sentence",
    "ablation_table",
    "environment",
    "glif_spread",
    "results_table",
    "summarize",
    "verdict",
]


def _std(v: np.ndarray) -> float:
    """Sample standard deviation over seeds (n - 1); 0 for a single seed."""
    return float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def summarize(runs: list[RunResult]) -> OrderedDict[str, dict[str, Any]]:
    """Per config (in order of first appearance): final and best test accuracy (mean and
    sample std over seeds, fractions in [0, 1]), training seconds per epoch (median over
    all epochs and seeds), and every run's curves."""
    out: OrderedDict[str, dict[str, Any]] = OrderedDict()
    for key in dict.fromkeys(r.config.key for r in runs):
        rs = [r for r in runs if r.config.key == key]
        acc = np.array([r.test_acc for r in rs], dtype=float)  # [seeds, epochs]
        cfg = rs[0].config
        out[key] = {
            "label": cfg.label,
            "neuron": cfg.neuron,
            "freeze": list(cfg.freeze),
            "lr": rs[0].lr,
            "seeds": [r.seed for r in rs],
            "final_acc_mean": float(acc[:, -1].mean()),
            "final_acc_std": _std(acc[:, -1]),
            "best_acc_mean": float(acc.max(1).mean()),
            "best_acc_std": _std(acc.max(1)),
            # median: robust to a busy machine and to first-call overheads
            "time_per_epoch_s": float(np.median([t for r in rs for t in r.epoch_time_s])),
            "parameters": rs[0].parameters,
            "runs": [
                {
                    "seed": r.seed,
                    "test_acc": r.test_acc,
                    "train_loss": r.train_loss,
                    "train_acc": r.train_acc,
                    "epoch_time_s": r.epoch_time_s,
                }
                for r in rs
            ],
        }
    return out


def _pct(m: float, s: float) -> str:
    return f"{100 * m:.1f} ± {100 * s:.1f} %"


def results_table(summary: dict[str, dict[str, Any]]) -> str:
    """The results of one task as a Markdown table."""
    head = (
        "| model | lr | final test acc | best test acc | train s/epoch |\n|---|---|---|---|---|\n"
    )
    rows = [
        f"| {s['label']} | {s['lr']:g} | {_pct(s['final_acc_mean'], s['final_acc_std'])} "
        f"| {_pct(s['best_acc_mean'], s['best_acc_std'])} | {s['time_per_epoch_s']:.2f} |"
        for s in summary.values()
    ]
    return head + "\n".join(rows)


def _tie(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two results tie when their mean ± std intervals over seeds overlap."""
    gap = abs(a["final_acc_mean"] - b["final_acc_mean"])
    return gap <= a["final_acc_std"] + b["final_acc_std"]


def _res(s: dict[str, Any]) -> str:
    return _pct(s["final_acc_mean"], s["final_acc_std"])


def verdict(title: str, summary: dict[str, dict[str, Any]]) -> str:
    """One sentence: GLIF's final test accuracy against the best of LIF/PLIF on ``title``.
    Better or worse only when the mean ± std intervals over seeds do not overlap; else
    a tie. With one seed there is no spread: the sentence says so."""
    glif = summary.get("glif")
    others = [s for k, s in summary.items() if k in ("lif", "plif")]
    if glif is None or not others:
        return f"On {title}, there is no GLIF and LIF/PLIF pair to compare in this run."
    best = max(others, key=lambda s: s["final_acc_mean"])
    d = 100 * (glif["final_acc_mean"] - best["final_acc_mean"])
    name = "LIF/PLIF" if len(others) > 1 else best["label"]
    ref = f"{best['label']} {_res(best)}" if len(others) > 1 else _res(best)
    one_seed = len(glif["seeds"]) < 2 or len(best["seeds"]) < 2
    if not one_seed and _tie(glif, best):
        text = (
            f"On {title}, GLIF ({_res(glif)}) and the best of {name} ({ref}) tie: "
            f"the {abs(d):.1f}-point difference is within the seeds' spread."
        )
    elif d >= 0:
        text = (
            f"On {title}, GLIF reaches {_res(glif)}, {d:.1f} points above the best of "
            f"{name} ({ref})."
        )
    else:
        text = (
            f"On {title}, GLIF reaches {_res(glif)}, {-d:.1f} points below the best of "
            f"{name} ({ref}): GLIF is no better here."
        )
    if one_seed:
        text += " (One seed: no spread over seeds to tell a tie from a difference.)"
    lif = summary.get("lif")
    if lif is not None and lif["time_per_epoch_s"] > 0:
        ratio = glif["time_per_epoch_s"] / lif["time_per_epoch_s"]
        text += f" A GLIF training epoch took {ratio:.1f}x LIF's time."
    return text


def ablation_table(summary: dict[str, dict[str, Any]]) -> str:
    """GLIF and its frozen variants (``--freeze``) as a Markdown table; '' without any."""
    rows = [s for s in summary.values() if s["neuron"] == "glif"]
    if len(rows) < 2:
        return ""
    glif = summary.get("glif")
    head = "| model | final test acc | change vs GLIF |\n|---|---|---|\n"
    lines = []
    for s in rows:
        change = (
            f"{100 * (s['final_acc_mean'] - glif['final_acc_mean']):+.1f} points"
            if glif is not None and s is not glif
            else ""
        )
        lines.append(f"| {s['label']} | {_res(s)} | {change} |")
    return head + "\n".join(lines)


def ablation_sentence(title: str, summary: dict[str, dict[str, Any]]) -> str:
    """What freezing each part of GLIF did on ``title``, in words; '' without ablations.
    A change counts when the mean ± std intervals over seeds do not overlap."""
    glif = summary.get("glif")
    frozen = [s for s in summary.values() if s["neuron"] == "glif" and s["freeze"]]
    if glif is None or not frozen:
        return ""
    others = [s for k, s in summary.items() if k in ("lif", "plif")]
    best_other = max(others, key=lambda s: s["final_acc_mean"]) if others else None
    one_seed = len(glif["seeds"]) < 2
    glif_ahead = best_other is not None and (
        glif["final_acc_mean"] > best_other["final_acc_mean"]
        and (one_seed or not _tie(glif, best_other))
    )
    parts, costs = [], []
    for s in frozen:
        what = " + ".join(FREEZE_TEXT[p] for p in s["freeze"])
        d = 100 * (glif["final_acc_mean"] - s["final_acc_mean"])
        if abs(d) < 0.05 or (not one_seed and _tie(glif, s)):
            parts.append(f"freezing the {what} changes nothing beyond the seeds' spread "
                         f"({-d:+.1f} points)")  # fmt: skip
            continue
        if d > 0:
            costs.append((d, what))
            text = f"freezing the {what} costs {d:.1f} points ({_res(s)})"
            if glif_ahead and (
                s["final_acc_mean"] <= best_other["final_acc_mean"]
                or (not one_seed and _tie(s, best_other))
            ):
                text += f", down to the level of {best_other['label']} ({_res(best_other)})"
        else:
            text = f"freezing the {what} gains {-d:.1f} points ({_res(s)})"
        parts.append(text)
    sentence = f"Ablation on {title} (GLIF {_res(glif)}): " + "; ".join(parts) + "."
    if costs:
        d, what = max(costs)
        sentence += f" The learned part that matters most here: the {what}."
    else:
        sentence += " No frozen part costs accuracy beyond the seeds' spread."
    if one_seed:
        sentence += " (One seed: no spread to tell a tie from a difference.)"
    return sentence


def glif_spread(runs: list[RunResult]) -> OrderedDict[str, dict[str, dict[str, float]]]:
    """Per GLIF layer and parameter of the unfrozen GLIF runs: mean and std over channels
    of the effective value (``conduct``: over all T x C entries) at init and after
    training, each averaged over seeds; ``decay`` is d = 1 - a(1 - tau). The parameter
    figure prints these same numbers."""
    glif = [r for r in runs if r.config.key == "glif" and r.glif_final is not None]
    out: OrderedDict[str, dict[str, dict[str, float]]] = OrderedDict()
    if not glif:
        return out
    for lname in glif[0].glif_final:
        out[lname] = {}
        for p in [*GLIF_SYMBOLS, "decay"]:
            init = [with_decay(r.glif_init[lname])[p] for r in glif]
            final = [with_decay(r.glif_final[lname])[p] for r in glif]
            out[lname][p] = {
                "init_mean": float(np.mean([v.mean() for v in init])),
                "init_std": float(np.mean([v.std() for v in init])),
                "final_mean": float(np.mean([v.mean() for v in final])),
                "final_std": float(np.mean([v.std() for v in final])),
                "final_min": float(min(v.min() for v in final)),
                "final_max": float(max(v.max() for v in final)),
            }
    return out


def with_decay(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``params`` plus ``decay``: the leak factor d = 1 - a(1 - tau) per channel."""
    return {**params, "decay": 1.0 - params["alpha"] * (1.0 - params["tau"])}


def spread_table(spread: dict[str, dict[str, dict[str, float]]]) -> str:
    """What GLIF learned: mean ± std over channels per layer, init -> trained."""
    if not spread:
        return ""
    cols = ["decay", "tau", "alpha", "beta", "gamma", "v_threshold", "v_subreset", "conduct"]
    names = {"decay": "d = 1-a(1-tau)", **GLIF_SYMBOLS}
    head = "| layer | " + " | ".join(names[c] for c in cols) + " |\n|---|" + "---|" * len(cols)
    rows = []
    for lname, d in spread.items():
        cells = [
            f"{d[c]['init_mean']:.2f} → {d[c]['final_mean']:.2f} ± {d[c]['final_std']:.2f}"
            for c in cols
        ]
        rows.append(f"| {lname} | " + " | ".join(cells) + " |")
    return head + "\n" + "\n".join(rows)


def environment(device: torch.device) -> dict[str, Any]:
    """Machine, versions and date."""
    import os

    import spikingjelly

    from .. import __version__

    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cpus = os.cpu_count()
    info: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "device": str(device),
        "platform": platform.platform(),
        "processor": _cpu_name(),
        "cpu_count": cpus,
        "torch_threads": torch.get_num_threads(),
        # other work on the machine slows every timing: the 1-minute load at the start
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "spikingjelly": _version("spikingjelly", spikingjelly),
        "sj_glif": __version__,
    }
    for dist in ("triton", "scikit-learn", "mnist1d", "numpy", "matplotlib"):
        info[dist] = _version(dist)
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _version(dist: str, module: Any = None) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return getattr(module, "__version__", None)


def _cpu_name() -> str:
    """The CPU model from /proc/cpuinfo where there is one, else the architecture."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
