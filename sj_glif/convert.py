"""Model-level helpers: materialize lazy GLIF parameters, swap neurons for GLIF."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from spikingjelly.activation_based import functional, neuron
from torch import nn

from .node import GLIFNode

__all__ = ["materialize", "swap_neurons"]


def materialize(model: nn.Module, example_input: torch.Tensor) -> nn.Module:
    """Infer every lazy GLIF parameter of ``model`` from one example input.

    Runs one forward without gradients in eval mode (so BatchNorm statistics and
    dropout are untouched), restores the train/eval flags and resets the network
    state. Call it before creating the optimizer or wrapping the model in
    DistributedDataParallel.

    Args:
        model: any module containing :class:`GLIFNode` s.
        example_input: an input the model accepts (its batch size does not matter).

    Returns:
        ``model``, materialized in place.
    """
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for m, training in modes.items():
            m.train(training)
        functional.reset_net(model)
    return model


def swap_neurons(
    model: nn.Module,
    example_input: torch.Tensor | None = None,
    *,
    predicate: Callable[[nn.Module], bool] | None = None,
    **glif_kwargs: Any,
) -> nn.Module:
    """Replace the spiking neurons of an already-built model with :class:`GLIFNode`.

    Every ``neuron.BaseNode`` (by default; pass ``predicate`` to choose) that is not a
    GLIFNode is replaced. SpikingJelly ``GatedLIFNode`` s keep their parameters
    (:meth:`GLIFNode.from_gated_lif`); others become lazy GLIF nodes with the old
    node's ``step_mode``, ``surrogate_function`` and ``detach_reset`` unless
    ``glif_kwargs`` say otherwise. With ``example_input`` the new nodes are
    materialized at once (channel counts from the data, see :func:`materialize`).
    SpikingJelly's reset cache of ``model`` is invalidated.

    Returns:
        ``model``, changed in place.
    """
    from spikingjelly.activation_based.neuron import GatedLIFNode

    def default(m: nn.Module) -> bool:
        return isinstance(m, (neuron.BaseNode, GatedLIFNode))

    choose = predicate or default
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, GLIFNode) or not choose(child):
                continue
            if isinstance(child, GatedLIFNode):
                new = GLIFNode.from_gated_lif(child, **glif_kwargs)
            else:
                kwargs: dict[str, Any] = dict(step_mode=child.step_mode)
                for key in ("surrogate_function", "detach_reset"):
                    if hasattr(child, key):
                        kwargs[key] = getattr(child, key)
                kwargs.update(glif_kwargs)
                new = GLIFNode(**kwargs)
            setattr(parent, name, new)
    functional.invalidate_reset_cache(model)
    if example_input is not None:
        device = next((p.device for p in model.parameters() if not _lazy(p)), None)
        if device is not None:
            model.to(device)
        materialize(model, example_input)
    return model


def _lazy(p: torch.Tensor) -> bool:
    return isinstance(p, nn.parameter.UninitializedParameter)
