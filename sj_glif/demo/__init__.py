"""``sj-glif demo``: what GLIF is for. Trains a small spiking network with GLIF, LIF and
PLIF on tasks where information arrives over time, and on one where it does not.

Tasks (``sj_glif.demo.tasks``): MNIST-1D as a sequence (one sample per step, T=40;
generated offline by the ``mnist1d`` package), scikit-learn's 8x8 digits one row per
step (T=8), and the same digits as a static image repeated over T=4 steps (the contrast:
nothing to integrate over time, the neurons tie). Network: Linear(in,128)-BN-neuron-
Linear(128,128)-BN-neuron-Linear(128,10), logits = mean over time; AdamW, cosine, GLIF
gates at lr/10, Sigmoid(alpha=4) surrogate for all; several seeds; each neuron at its own
best learning rate. ``--freeze`` adds GLIF variants with parts kept at their initial values
(decay, gates, conductance, threshold) to show which learned part matters.

The default run takes a few minutes on 2 CPU cores; ``--full`` is the long version
(learning-rate sweep, more epochs and seeds). Outputs: ``results.md``/``results.json``
(tables, the result in words computed from the run, machine, versions, date),
``learning_curves.png``, ``glif_parameters_<task>.png`` (what GLIF learned),
``traces_<task>.png`` (membrane and spikes of GLIF and LIF neurons on one sequence).

Training GLIF on CIFAR (the paper's recipe) is ``sj-glif train``, not the demo.
"""

from .cli import add_arguments, main, settings_from_args
from .models import FREEZE_PARTS, NEURONS, Config
from .run import DEFAULT_LRS, Settings, run_demo
from .tasks import TASKS, DemoError, load_task

__all__ = [
    "DEFAULT_LRS",
    "FREEZE_PARTS",
    "NEURONS",
    "TASKS",
    "Config",
    "DemoError",
    "Settings",
    "add_arguments",
    "load_task",
    "main",
    "run_demo",
    "settings_from_args",
]
