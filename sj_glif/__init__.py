"""sj-glif: the Gated LIF neuron (Yao et al., NeurIPS 2022) for SpikingJelly.

Importing the package registers :class:`GLIFNode` with SpikingJelly's vision config
registry (see :func:`sj_glif.plugins.register_with_spikingjelly`).
"""

import importlib.util as _importlib_util
import sys as _sys
from pathlib import Path as _Path


def _use_source_kernels() -> None:
    """Make ``sj_glif.kernels`` importable when ``sj_glif`` is the source folder.

    Installed (wheel, sdist, ``--target``), the Triton kernels are the subpackage
    ``sj_glif/kernels``. In a source checkout they live in the top-level ``kernels/``
    folder beside ``sj_glif/`` (the layout the project keeps), and Python run from the
    repository root imports this source ``sj_glif`` ahead of any installed copy, so
    the sibling folder is registered as ``sj_glif.kernels`` here. Nothing is imported
    from it until it is used (triton loads only then).
    """
    here = _Path(__file__).resolve().parent
    if (here / "kernels" / "__init__.py").is_file():
        return
    init = here.parent / "kernels" / "__init__.py"
    if not (init.is_file() and (here.parent / "pyproject.toml").is_file()):
        return
    name = __name__ + ".kernels"
    spec = _importlib_util.spec_from_file_location(
        name, init, submodule_search_locations=[str(init.parent)]
    )
    module = _importlib_util.module_from_spec(spec)
    _sys.modules[name] = module
    spec.loader.exec_module(module)
    globals()["kernels"] = module


_use_source_kernels()

from . import reference  # noqa: E402
from .checkpoint import convert_official_state_dict, convert_to_official_state_dict
from .convert import materialize, prepare_ddp, swap_neurons
from .node import GLIFNode
from .ops import GLIFOutput, glif_multi_step, implementation_for
from .plugins import available_neurons, load_neuron, register_with_spikingjelly

__all__ = [
    "GLIFNode",
    "GLIFOutput",
    "available_neurons",
    "convert_official_state_dict",
    "convert_to_official_state_dict",
    "glif_multi_step",
    "implementation_for",
    "load_neuron",
    "materialize",
    "prepare_ddp",
    "reference",
    "register_with_spikingjelly",
    "swap_neurons",
]
__version__ = "0.1.0"

register_with_spikingjelly()
