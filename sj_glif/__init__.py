"""sj-glif: the Gated LIF neuron (Yao et al., NeurIPS 2022) for SpikingJelly.

Importing the package registers :class:`GLIFNode` with SpikingJelly's vision config
registry (see :func:`sj_glif.plugins.register_with_spikingjelly`).
"""

from . import reference
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
