"""Plugin entry points: find SpikingJelly neurons that installed packages declare, and
make GLIF work in SpikingJelly's distributed vision configs.

sj-glif declares, in its distribution metadata::

    [project.entry-points."spikingjelly.neurons"]
    glif = "sj_glif.node:GLIFNode"

so a tool can find GLIF (and any other package's neurons) without knowing module
paths: ``load_neuron("glif")``.

SpikingJelly's vision configs (``distributed.vision``: ``SEWResNet34Config``,
``SpikformerConfig``, ...) accept GLIF as
``NeuronConfig(class_path="sj_glif.node.GLIFNode", kwargs={...})`` once ``sj_glif`` is
imported (:func:`register_with_spikingjelly`). Two things to know:

- ``T``: builders that take their own ``T`` (Spikformer's, from ``time_steps``) pass
  it to the model and would pass it twice if the neuron kwargs had it too ("got
  multiple values for keyword argument 'T'"). Leave ``T`` out of ``NeuronConfig.kwargs``
  there: GLIF infers it from the multi-step input's length (``time_steps``), and a
  checkpoint carries it. Builders that do not take ``T`` (SEW-ResNet34) accept
  ``kwargs={"T": time_steps}``, which single-step mode (``step_mode="s"``) needs.
- Checkpoints: ``ModelBuilder.build_for_inference(state_dict, ...)`` (and
  ``merge_state_dicts`` when exporting) read parameter shapes from a freshly built
  model, where GLIF's parameters are still lazy. :func:`register_with_spikingjelly`
  teaches ``ModelBuilder`` that a lazy parameter takes the checkpoint's shape (with
  tensor parallelism of 1; with more, where a lazy parameter's local shape is
  unknown, it raises ``ValueError`` saying so), so the built model loads the
  checkpoint and every GLIF node gets its saved shapes.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points

from torch import Tensor
from torch.nn.parameter import UninitializedParameter

__all__ = ["ENTRY_POINT_GROUP", "available_neurons", "load_neuron", "register_with_spikingjelly"]

ENTRY_POINT_GROUP = "spikingjelly.neurons"


def available_neurons() -> dict[str, EntryPoint]:
    """Every neuron declared in the ``spikingjelly.neurons`` entry-point group, by name."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_neuron(name: str) -> type:
    """Import and return the neuron class declared under ``name``.

    Raises:
        TypeError: ``name`` is not a str.
        KeyError: no installed package declares ``name``; the message lists those that do.
    """
    if not isinstance(name, str):
        raise TypeError(f"load_neuron expects a neuron name (str), got {name!r}")
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
    name ``sj_glif.node.GLIFNode`` resolve in this process, and let SpikingJelly's
    ``ModelBuilder`` load checkpoints into models with lazy parameters (see the module
    docstring). Idempotent; ``import sj_glif`` calls it.

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
    from spikingjelly.activation_based.distributed.vision import config

    _accept_lazy_targets(config.ModelBuilder)
    return True


def _accept_lazy_targets(builder: type) -> None:
    """Wrap ``builder``'s two helpers that compare a checkpoint tensor with the shape of
    the freshly built model's parameter, so that a lazy parameter takes the
    checkpoint's shape instead of failing with "Can't access the shape of an
    uninitialized parameter"."""
    if getattr(builder, "_sj_glif_lazy_targets", False):
        return
    shard = getattr(builder, "_shard_tensor_parallel_tensor", None)
    merge = getattr(builder, "_merge_tensor_parallel_shards", None)
    if shard is None or merge is None:  # another SpikingJelly release: nothing to adapt
        return

    @functools.wraps(shard)
    def shard_tensor(self, name: str, value: Tensor, target: Tensor, tensor_rank: int,
                     tensor_size: int) -> Tensor:  # fmt: skip
        if isinstance(target, UninitializedParameter):
            if tensor_size == 1:
                return value  # load_state_dict gives the lazy parameter this shape
            raise ValueError(
                f"cannot shard {name} (checkpoint shape {list(value.shape)}) over "
                f"{tensor_size} tensor-parallel ranks: the built model's parameter is lazy, "
                "so its local shape is unknown; load the checkpoint with tensor parallel "
                "size 1"
            )
        return shard(self, name, value, target, tensor_rank, tensor_size)

    @functools.wraps(merge)
    def merge_shards(self, name: str, shards: Sequence[Tensor], reference: Tensor) -> Tensor:
        if isinstance(reference, UninitializedParameter):
            if all(s.shape == shards[0].shape and s.equal(shards[0]) for s in shards[1:]):
                return shards[0]  # one rank, or replicated over ranks
            raise ValueError(
                f"cannot merge the {len(shards)} tensor-parallel shards of {name} (shape "
                f"{list(shards[0].shape)}): they differ and the reference model's "
                "parameter is lazy, so the full shape is unknown"
            )
        return merge(self, name, shards, reference)

    builder._shard_tensor_parallel_tensor = shard_tensor
    builder._merge_tensor_parallel_shards = merge_shards
    builder._sj_glif_lazy_targets = True
