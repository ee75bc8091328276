"""Running the whole demo: learning rates, the runs (in parallel processes on the CPU),
and the files it writes."""

from __future__ import annotations

import json
import os
import time
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .models import FREEZE_PARTS, NETWORK_TEXT, NEURONS, Config
from .plots import plot_glif_parameters, plot_learning_curves, plot_traces
from .report import (
    ablation_sentence,
    ablation_table,
    environment,
    glif_spread,
    results_table,
    spread_table,
    summarize,
    verdict,
)
from .tasks import TASKS, TEMPORAL, TITLES, DemoError, Task, load_task, validation_split
from .training import RunResult, train_one

__all__ = ["DEFAULT_LRS", "Settings", "check_settings", "run_demo"]

# Each neuron's best learning rate per task, from the committed sweep
# bench/results/demo/lr_sweep.md (``sj-glif demo --sweep``: default epochs, 2 seeds,
# selected on a validation split of the training set, never on the test set).
DEFAULT_LRS: dict[str, dict[str, float]] = {
    "mnist1d": {"glif": 0.3, "lif": 1.0, "plif": 0.3},
    "seq-digits": {"glif": 0.3, "lif": 0.01, "plif": 1.0},
    "static-digits": {"glif": 0.01, "lif": 0.03, "plif": 0.01},
}
SWEEP_LRS = (3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
SWEEP_SEEDS = 2
# per task: (epochs, batch size) of the default run and of --full
EPOCHS = {"mnist1d": 10, "seq-digits": 20, "static-digits": 10}
FULL_EPOCHS = {"mnist1d": 30, "seq-digits": 40, "static-digits": 20}
BATCH = {"mnist1d": 128, "seq-digits": 64, "static-digits": 64}
DEFAULT_FREEZE: tuple[tuple[str, ...], ...] = (("decay",), ("gates",), ("conduct",))
QUICK = {"n_train": 200, "n_test": 100}


@dataclass(frozen=True)
class Settings:
    """The demo's validated arguments (see ``sj-glif demo --help``)."""

    out_dir: Path
    tasks: tuple[str, ...] = TASKS
    neurons: tuple[str, ...] = NEURONS
    seeds: int = 3
    epochs: int | None = None  # None: per task (EPOCHS, or FULL_EPOCHS with full)
    batch_size: int | None = None  # None: per task (BATCH)
    lr: float | None = None  # None: each neuron's own (DEFAULT_LRS, or the sweep's)
    static_T: int = 4
    freeze: tuple[tuple[str, ...], ...] = DEFAULT_FREEZE
    ablation_tasks: tuple[str, ...] = TEMPORAL
    sweep: bool = False
    full: bool = False
    quick: bool = False
    device: str = "cpu"
    threads: int = 1
    jobs: int = 1
    progress: bool = True

    def task_epochs(self, task: str) -> int:
        if self.epochs is not None:
            return self.epochs
        return 1 if self.quick else (FULL_EPOCHS if self.full else EPOCHS)[task]

    def task_batch(self, task: str) -> int:
        return self.batch_size if self.batch_size is not None else BATCH[task]


def _positive_int(name: str, v: object) -> None:
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
        raise DemoError(f"{name} must be a positive integer, got {v!r}")


def check_settings(s: Settings) -> torch.device:
    """Check every setting before any work; raise DemoError with one line naming what was
    expected and what came. Creates the output folder (to prove it is writable) and
    returns the device."""
    for name, v in (("--seeds", s.seeds), ("--T", s.static_T), ("--threads", s.threads),
                    ("--jobs", s.jobs)):  # fmt: skip
        _positive_int(name, v)
    for name, v in (("--epochs", s.epochs), ("--batch-size", s.batch_size)):
        if v is not None:
            _positive_int(name, v)
    if s.lr is not None and (
        not isinstance(s.lr, (int, float)) or isinstance(s.lr, bool) or not np.isfinite(s.lr)
        or s.lr <= 0
    ):  # fmt: skip
        raise DemoError(f"--lr must be a positive finite number, got {s.lr!r}")
    for name, values, allowed in (("--tasks", s.tasks, TASKS), ("--neurons", s.neurons, NEURONS),
                                  ("--ablation-tasks", s.ablation_tasks, TASKS)):  # fmt: skip
        bad = [v for v in values if v not in allowed]
        if bad or (not values and name != "--ablation-tasks"):
            raise DemoError(
                f"{name} must be among {', '.join(allowed)}, got {', '.join(values) or 'none'}"
            )
    for variant in s.freeze:
        bad = [p for p in variant if p not in FREEZE_PARTS]
        if bad or not variant:
            raise DemoError(
                f"--freeze parts must be among {', '.join(FREEZE_PARTS)} (or none), "
                f"got {'+'.join(variant) or 'an empty part'!r}"
            )
    device = _check_device(s.device)
    _check_out(Path(s.out_dir))
    return device


def _check_device(text: str) -> torch.device:
    try:
        dev = torch.device(text)
    except (RuntimeError, TypeError) as err:
        raise DemoError(f"--device must be cpu or cuda[:N], got {text!r}") from err
    if dev.type not in ("cpu", "cuda"):
        raise DemoError(f"--device must be cpu or cuda[:N], got {text!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DemoError(
                f"--device {text}: CUDA is not available here (torch {torch.__version__}, "
                f"built with CUDA {torch.version.cuda}); use --device cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DemoError(
                f"--device {text}: only {torch.cuda.device_count()} CUDA device(s) here"
            )
    return dev


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise DemoError(f"--out must be a folder, got the existing file {str(out)!r}")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".sj-glif-demo-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise DemoError(f"--out {str(out)!r} is not a writable folder: {err.strerror}") from err


# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class _Job:
    task: str
    config: Config
    seed: int
    lr: float
    epochs: int
    batch_size: int
    trace: bool
    validation: bool  # the sweep: train on part of the training set, test on the rest


def _load(s: Settings, name: str) -> Task:
    n = QUICK if s.quick else {"n_train": None, "n_test": None}
    return load_task(name, static_T=s.static_T, **n)


def _work(job: _Job, task: Task, device: str, threads: int) -> RunResult:
    """One run, in this process or a worker: single-threaded by default, so that every
    run's numbers are the same wherever it runs."""
    torch.set_num_threads(threads)
    data = validation_split(task) if job.validation else task
    return train_one(job.config, job.seed, data, epochs=job.epochs, batch_size=job.batch_size,
                     lr=job.lr, device=torch.device(device), trace=job.trace)  # fmt: skip


def _run_jobs(jobs: list[_Job], tasks: dict[str, Task], s: Settings, what: str) -> list[RunResult]:
    """Run ``jobs`` (``s.jobs`` worker processes on the CPU), results in ``jobs`` order."""
    results: list[RunResult | None] = [None] * len(jobs)
    t0 = time.perf_counter()

    def report(i: int, r: RunResult) -> None:
        results[i] = r
        if s.progress:
            done = sum(x is not None for x in results)
            print(f"  [{what} {done}/{len(jobs)}, {time.perf_counter() - t0:5.0f} s] "
                  f"{jobs[i].task:<13} {r.config.label:<34} seed {r.seed} lr {r.lr:<6g} "
                  f"final acc {100 * r.test_acc[-1]:5.1f} %, "
                  f"{np.median(r.epoch_time_s):.2f} s/epoch", flush=True)  # fmt: skip

    if s.jobs == 1 or len(jobs) == 1:
        old = torch.get_num_threads()
        try:
            for i, job in enumerate(jobs):
                report(i, _work(job, tasks[job.task], s.device, s.threads))
        finally:
            torch.set_num_threads(old)
    else:
        # spawn: a clean interpreter per worker (no forked thread pools)
        ex = ProcessPoolExecutor(min(s.jobs, len(jobs)), mp_context=get_context("spawn"))
        try:
            futs = {
                ex.submit(_work, job, tasks[job.task], s.device, s.threads): i
                for i, job in enumerate(jobs)
            }
            for f in as_completed(futs):
                report(futs[f], f.result())
        except BaseException:  # Ctrl-C or a failed run: start nothing more
            ex.shutdown(wait=False, cancel_futures=True)
            raise
        ex.shutdown()
    return results  # type: ignore[return-value]


def sweep_learning_rates(
    s: Settings, tasks: dict[str, Task]
) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Each neuron's best learning rate per task among SWEEP_LRS: mean final accuracy over
    SWEEP_SEEDS seeds on a validation split of the training set."""
    jobs = [
        _Job(name, Config(kind), seed, lr, s.task_epochs(name), s.task_batch(name), False, True)
        for name in s.tasks
        for kind in s.neurons
        for lr in SWEEP_LRS
        for seed in range(SWEEP_SEEDS)
    ]
    runs = _run_jobs(jobs, tasks, s, "lr sweep")
    best: dict[str, dict[str, float]] = {}
    table: dict[str, Any] = {}
    for name in s.tasks:
        best[name], table[name] = {}, {}
        for kind in s.neurons:
            accs = {
                lr: [r.test_acc[-1] for j, r in zip(jobs, runs, strict=True)
                     if j.task == name and j.config.neuron == kind and j.lr == lr]
                for lr in SWEEP_LRS
            }  # fmt: skip
            means = {lr: float(np.mean(v)) for lr, v in accs.items()}
            best[name][kind] = max(means, key=lambda lr: means[lr])
            table[name][kind] = {f"{lr:g}": means[lr] for lr in SWEEP_LRS}
    return best, {"lrs": list(SWEEP_LRS), "seeds": SWEEP_SEEDS, "val_acc": table, "best": best}


def _sweep_markdown(sweep: dict[str, Any], env: dict[str, Any], s: Settings) -> str:
    lrs = sweep["lrs"]
    lines = [
        "# sj-glif demo: learning-rate sweep",
        "",
        f"- date: {env['date']}; machine: {env.get('gpu') or env['processor']}, "
        f"{env['cpu_count']} CPU(s); torch {env['torch']}, spikingjelly {env['spikingjelly']}",
        f"- mean final accuracy over {sweep['seeds']} seeds on a validation split (20 % of the "
        "training set, fixed); the test set is never used to choose a learning rate",
        "- epochs per task: " + ", ".join(f"{t} {s.task_epochs(t)}" for t in s.tasks),
        "",
    ]
    for name, per in sweep["val_acc"].items():
        lines += [f"## {TITLES[name]}", "",
                  "| neuron | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " | best |",
                  "|---|" + "---|" * (len(lrs) + 1)]  # fmt: skip
        for kind, accs in per.items():
            b = sweep["best"][name][kind]
            cells = [
                (f"**{100 * accs[f'{lr:g}']:.1f}**" if lr == b else f"{100 * accs[f'{lr:g}']:.1f}")
                for lr in lrs
            ]
            lines.append(f"| {kind.upper()} | " + " | ".join(cells) + f" | {b:g} |")
        lines.append("")
    return "\n".join(lines)


def run_demo(settings: Settings) -> dict[str, Any]:
    """Run the demo with ``settings`` (checked first: DemoError on a bad one) and write
    ``results.md``, ``results.json``, ``learning_curves.png``, and per task with GLIF
    ``glif_parameters_<task>.png`` and, for temporal tasks with GLIF and LIF,
    ``traces_<task>.png`` (plus ``lr_sweep.md``/``.json`` with ``sweep``/``full``) to
    ``settings.out_dir``. Returns the contents of ``results.json``.

    With ``jobs > 1`` the runs go to spawned worker processes, which import the caller's
    main module: call it from under ``if __name__ == "__main__":`` in a script (the
    ``sj-glif`` command does). On the CPU, with one thread per process, the numbers are
    bitwise the same for any ``jobs``; on a GPU, cuDNN/cuBLAS may differ in the last bits."""
    s = settings
    dev = check_settings(s)
    t_start = time.perf_counter()
    out = Path(s.out_dir)
    tasks = {name: _load(s, name) for name in s.tasks}
    env = environment(dev)
    env["torch_threads"] = s.threads
    print(f"sj-glif demo: {', '.join(s.tasks)}; {', '.join(s.neurons)}; {s.seeds} seed(s); "
          f"device {dev}; {s.jobs} process(es) x {s.threads} thread(s)")  # fmt: skip
    for t in tasks.values():
        print(f"  {t.name}: {t.description}")

    files: list[str] = []
    if s.lr is not None:
        lrs = {name: {k: s.lr for k in s.neurons} for name in s.tasks}
        lr_source = f"--lr {s.lr:g} for every neuron"
        sweep = None
    elif s.sweep or s.full:
        print("learning-rate sweep (validation split of the training set):")
        lrs, sweep = sweep_learning_rates(s, tasks)
        lr_source = "each neuron's best in this run's sweep (lr_sweep.md; validation split)"
        (out / "lr_sweep.json").write_text(json.dumps(sweep, indent=2) + "\n")
        (out / "lr_sweep.md").write_text(_sweep_markdown(sweep, env, s))
        files += ["lr_sweep.md", "lr_sweep.json"]
    else:
        lrs = {name: {k: DEFAULT_LRS[name][k] for k in s.neurons} for name in s.tasks}
        lr_source = (
            "each neuron's best from the committed sweep bench/results/demo/lr_sweep.md "
            "(validation split)"
        )
        sweep = None

    jobs: list[_Job] = []
    for name in s.tasks:
        configs = [Config(k) for k in s.neurons]
        if "glif" in s.neurons and name in s.ablation_tasks:
            configs += [Config("glif", variant) for variant in s.freeze]
        for cfg in configs:
            lr = lrs[name]["glif" if cfg.neuron == "glif" else cfg.neuron]
            for seed in range(s.seeds):
                trace = (
                    seed == 0
                    and not cfg.freeze
                    and cfg.neuron in ("glif", "lif")
                    and (name in TEMPORAL)
                )
                jobs.append(_Job(name, cfg, seed, lr, s.task_epochs(name), s.task_batch(name),
                                 trace, False))  # fmt: skip
    print("training:")
    runs = _run_jobs(jobs, tasks, s, "run")

    per_task: OrderedDict[str, dict[str, Any]] = OrderedDict()
    for name in s.tasks:
        rs = [r for j, r in zip(jobs, runs, strict=True) if j.task == name]
        summary = summarize(rs)
        spread = glif_spread(rs)
        title = TITLES[name] if name != "static-digits" else f"{TITLES[name]} (T={s.static_T})"
        per_task[name] = {
            "title": title,
            "description": tasks[name].description,
            "T": tasks[name].T,
            "epochs": s.task_epochs(name),
            "batch_size": s.task_batch(name),
            "summary": summary,
            "verdict": verdict(title, summary),
            "ablation": ablation_sentence(title, summary),
            "glif_parameter_spread": spread,
        }
        if plot_glif_parameters(rs, spread, out / f"glif_parameters_{name}.png",
                                f"What GLIF learned: {title}"):  # fmt: skip
            files.append(f"glif_parameters_{name}.png")
        traces = {r.config.neuron: r.trace for r in rs if r.trace is not None}
        if {"glif", "lif"} <= set(traces) and plot_traces(
            traces, out / f"traces_{name}.png", f"GLIF and LIF after training: {title}"
        ):
            files.append(f"traces_{name}.png")
    plot_learning_curves(per_task, out / "learning_curves.png",
                         f"sj-glif demo, {s.seeds} seed(s)")  # fmt: skip
    files.append("learning_curves.png")
    wall = time.perf_counter() - t_start
    result = {
        "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(s).items()},
        "environment": env,
        "network": NETWORK_TEXT,
        "neuron_settings": NEURON_TEXT,
        "optimizer": OPTIMIZER_TEXT,
        "learning_rates": lrs,
        "learning_rate_source": lr_source,
        "lr_sweep": sweep,
        "wall_time_s": wall,
        "tasks": per_task,
        "files": ["results.md", "results.json", *files],
    }
    (out / "results.json").write_text(json.dumps(result, indent=2, default=_jsonable) + "\n")
    md = markdown(result)
    (out / "results.md").write_text(md)
    print()
    print(summary_text(result))
    print(f"\nwall time {wall:.0f} s; wrote {', '.join(str(out / f) for f in result['files'])}")
    return result


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    raise TypeError(f"not JSON serializable: {type(v)}")


NEURON_TEXT = (
    "surrogate.Sigmoid(alpha=4), detach_reset=False for all; GLIF: sj-glif GLIFNode, "
    "channel-wise (init tau 0.25, theta 0.5, gates ~0.5, k_t 0.5); LIF: tau 2, threshold 1, "
    "hard reset to 0; PLIF: init tau 2, threshold 1, hard reset to 0"
)
OPTIMIZER_TEXT = (
    "AdamW, cosine schedule to 0; weight decay 1e-4 on Linear weights only (0 on BatchNorm, "
    "biases and neuron parameters); GLIF gates a, b, g at lr/10; cross-entropy on the "
    "time-averaged logits; functional.reset_net after every batch"
)


def summary_text(result: dict[str, Any]) -> str:
    """What the demo prints at the end: per task the table and the sentences."""
    parts = []
    for t in result["tasks"].values():
        parts += [f"## {t['title']} ({t['epochs']} epochs)", "", results_table(t["summary"]), "",
                  t["verdict"]]  # fmt: skip
        if t["ablation"]:
            parts += ["", t["ablation"]]
        parts.append("")
    return "\n".join(parts).rstrip()


def markdown(result: dict[str, Any]) -> str:
    """``results.md``: setup, per-task tables and sentences, ablation, figures."""
    env = result["environment"]
    args = result["arguments"]
    machine = env.get("gpu") or env["processor"]
    lines = [
        "# sj-glif demo results",
        "",
        f"- date: {env['date']}",
        f"- machine: {machine}, {env['platform']}, {env['cpu_count']} CPU(s); device "
        f"{env['device']}; {args['jobs']} process(es) x {args['threads']} torch thread(s); "
        f"1-minute load average at the start {_load_text(env.get('load_average'))}",
        f"- versions: python {env['python']}, torch {env['torch']}, spikingjelly "
        f"{env['spikingjelly']}, sj-glif {env['sj_glif']}, numpy {env['numpy']}, "
        f"scikit-learn {env['scikit-learn']}, mnist1d {env['mnist1d']}, "
        f"triton {env['triton']}",
        "- arguments: " + ", ".join(f"{k}={v}" for k, v in args.items()),
        f"- network: {result['network']}",
        f"- neurons: {result['neuron_settings']}",
        f"- optimizer: {result['optimizer']}",
        f"- learning rates: {result['learning_rate_source']}",
        f"- wall time: {result['wall_time_s']:.0f} s",
        "",
        "Accuracy: mean ± sample std over seeds of the last epoch's test accuracy (final) and "
        "of each run's best epoch; train s/epoch: median over epochs and seeds of the training "
        "time (no test pass). Two results tie when their mean ± std intervals overlap.",
        "",
    ]
    for name, t in result["tasks"].items():
        lines += [
            f"## {t['title']}",
            "",
            f"{t['description']}; {t['epochs']} epochs, batch {t['batch_size']}.",
            "",
            results_table(t["summary"]),
            "",
            t["verdict"],
            "",
        ]
        ab = ablation_table(t["summary"])
        if ab:
            lines += ["Ablation (`--freeze`: parts kept at their initial values):", "", ab, "",
                      t["ablation"], ""]  # fmt: skip
        st = spread_table(t["glif_parameter_spread"])
        if st:
            lines += [
                "What GLIF learned (effective values; init → trained mean ± std over channels, "
                "averaged over seeds):",
                "",
                st,
                "",
            ]
        for f, what in ((f"glif_parameters_{name}.png", "GLIF parameters"),
                        (f"traces_{name}.png", "membrane traces")):  # fmt: skip
            if f in result["files"]:
                lines += [f"![{what}]({f})", ""]
    lines += ["## Learning curves", "", "![learning curves](learning_curves.png)", ""]
    return "\n".join(lines)


def _load_text(v: float | None) -> str:
    return "unknown" if v is None else f"{v:.1f}"


def default_jobs(device: str) -> int:
    """Worker processes by default: one per available CPU core (at most 8) on the CPU,
    one on a GPU."""
    if not device.startswith("cpu"):
        return 1
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 8))
