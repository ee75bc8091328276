"""``sj-glif demo`` arguments and entry point."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from .models import FREEZE_PARTS, NEURONS
from .run import BATCH, EPOCHS, FULL_EPOCHS, SWEEP_LRS, Settings, default_jobs, run_demo
from .tasks import TASKS, TEMPORAL, DemoError

__all__ = ["add_arguments", "main", "settings_from_args"]

DEFAULT_OUT = Path("sj-glif-demo")


def _per_task(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``sj-glif demo`` options (every default is in its help text)."""

    def one_line_error(message: str) -> NoReturn:  # argparse prints usage first; one line
        print(f"sj-glif demo: error: {message}", file=sys.stderr)
        sys.exit(2)

    parser.error = one_line_error  # type: ignore[method-assign]
    parser.epilog = (
        "Training GLIF on CIFAR-10/100 with the paper's recipe is `sj-glif train`, not the demo."
    )
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS),
                        help=f"tasks to run (default: {' '.join(TASKS)})")  # fmt: skip
    parser.add_argument("--neurons", nargs="+", choices=NEURONS, default=list(NEURONS),
                        help=f"neurons to compare (default: {' '.join(NEURONS)})")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=3, help="seeds per model (default: 3)")
    parser.add_argument(
        "--epochs", type=int, default=None,
        help=f"epochs for every task (default per task: {_per_task(EPOCHS)}; with --full: "
        f"{_per_task(FULL_EPOCHS)})",
    )  # fmt: skip
    parser.add_argument(
        "--batch-size", type=int, default=None,
        help=f"training batch size (default per task: {_per_task(BATCH)})",
    )  # fmt: skip
    parser.add_argument(
        "--lr", type=float, default=None,
        help="one AdamW learning rate for every neuron (default: each neuron's own best per "
        "task from the committed sweep, bench/results/demo/lr_sweep.md); GLIF gates get lr/10",
    )  # fmt: skip
    parser.add_argument(
        "--sweep", action="store_true",
        help="first sweep the learning rate (" + ", ".join(f"{v:g}" for v in SWEEP_LRS)
        + "; 2 seeds, validation split of the training set) and use each neuron's best "
        "(default: off; on with --full)",
    )  # fmt: skip
    parser.add_argument(
        "--freeze", default="decay,gates,conduct", metavar="PARTS",
        help="GLIF ablation: comma-separated variants, each a part or parts joined by '+', "
        "kept at their initial values: " + ", ".join(
            f"{k} ({'/'.join(v)})" for k, v in FREEZE_PARTS.items()
        ) + "; 'none' for no ablation (default: decay,gates,conduct)",
    )  # fmt: skip
    parser.add_argument(
        "--ablation-tasks", nargs="+", choices=TASKS, default=list(TEMPORAL),
        help=f"tasks that get the --freeze variants (default: {' '.join(TEMPORAL)})",
    )  # fmt: skip
    parser.add_argument("--T", type=int, default=4,
                        help="time steps of static-digits (default: 4); the temporal tasks' T "
                        "is their sequence length (mnist1d 40, seq-digits 8)")  # fmt: skip
    parser.add_argument(
        "--full", action="store_true",
        help="the long version: more epochs, 5 seeds (unless --seeds), a learning-rate sweep "
        "(several times the default run's time)",
    )  # fmt: skip
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 200 train / 100 test, 1 epoch, 1 seed"
    )
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--jobs", type=int, default=None,
                        help="parallel training processes (default: one per CPU core, at most "
                        "8, on the CPU; 1 on a GPU)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per process (default: 1; the networks are so small "
                        "that more threads only add overhead, and one thread keeps runs "
                        "bitwise reproducible)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                        help=f"output folder (default: ./{DEFAULT_OUT})")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true",
                        help="do not print a line per finished run (default: print)")  # fmt: skip


def _freeze(text: str) -> tuple[tuple[str, ...], ...]:
    text = text.strip()
    if text.lower() == "none":
        return ()
    variants = []
    for v in text.split(","):
        parts = tuple(p.strip() for p in v.split("+"))
        bad = [p for p in parts if p not in FREEZE_PARTS]
        if bad:
            raise DemoError(
                f"--freeze parts must be among {', '.join(FREEZE_PARTS)} (joined by '+', "
                f"variants by ','; or none), got {text!r}"
            )
        variants.append(parts)
    return tuple(variants)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The parsed command line as checked :class:`Settings` fields (DemoError if bad)."""
    seeds = args.seeds
    if args.full and seeds == 3:  # the default; an explicit --seeds wins
        seeds = 5
    return Settings(
        out_dir=Path(args.out),
        tasks=tuple(args.tasks),
        neurons=tuple(args.neurons),
        seeds=1 if args.quick else seeds,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        static_T=args.T,
        freeze=_freeze(args.freeze),
        ablation_tasks=tuple(args.ablation_tasks),
        sweep=args.sweep,
        full=args.full,
        quick=args.quick,
        device=args.device,
        threads=args.threads,
        jobs=default_jobs(args.device) if args.jobs is None else args.jobs,
        progress=not args.no_progress,
    )


def main(args: argparse.Namespace) -> int:
    """Run ``sj-glif demo`` with parsed ``args``: 0 on success; on a user error one line
    on stderr and 2."""
    try:
        run_demo(settings_from_args(args))
    except DemoError as err:
        print(f"sj-glif demo: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    _p = argparse.ArgumentParser(prog="sj-glif demo")
    add_arguments(_p)
    sys.exit(main(_p.parse_args()))
