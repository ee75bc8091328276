"""Plugin entry points: find SpikingJelly neurons that installed packages declare.

sj-glif declares, in its distribution metadata::

    [project.entry-points."spikingjelly.neurons"]
    glif = "sj_glif.node:GLIFNode"

so a tool can find GLIF (and any other package's neurons) without knowing module
paths: ``load_neuron("glif")``.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

__all__ = ["ENTRY_POINT_GROUP", "available_neurons", "load_neuron", "register_with_spikingjelly"]

ENTRY_POINT_GROUP = "spikingjelly.neurons"


def available_neurons() -> dict[str, EntryPoint]:
    """Every neuron declared in the ``spikingjelly.neurons`` entry-point group, by name."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_neuron(name: str) -> type:
    """Import and return the neuron class declared under ``name``.

    Raises:
        KeyError: no installed package declares ``name``; the message lists those that do.
    """
    found = available_neurons()
    if name not in found:
        raise KeyError(
            f"no neuron {name!r} in entry-point group {ENTRY_POINT_GROUP!r}; "
            f"installed: {sorted(found)}"
        )
    return found[name].load()


def register_with_spikingjelly() -> bool:
    """Register :class:`~sj_glif.GLIFNode` with SpikingJelly's vision config registry
    (``distributed.vision.config.register_neuron_class``), so serialized configs that
    name ``sj_glif.node.GLIFNode`` resolve in this process. Idempotent; ``import
    sj_glif`` calls it.

    Returns:
        True if registered; False where SpikingJelly has no such registry
        (0.0.0.0.14, which has no vision configs to resolve).
    """
    from . import compat
    from .node import GLIFNode

    register_neuron_class = compat.vision_config_register()
    if register_neuron_class is None:
        return False
    register_neuron_class(GLIFNode)
    return True
