"""Model-level helpers: materialize lazy GLIF parameters, prepare a model for
DistributedDataParallel, swap neurons for GLIF."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from spikingjelly.activation_based import functional, neuron
from torch import nn

from . import compat
from .node import GLIFNode

__all__ = ["materialize", "prepare_ddp", "swap_neurons"]


def materialize(model: nn.Module, example_input: torch.Tensor) -> nn.Module:
    """Infer every lazy GLIF parameter of ``model`` from one example input.

    Runs one forward without gradients in eval mode (so BatchNorm statistics and
    dropout are untouched), restores the train/eval flags and resets the network
    state. Call it before creating the optimizer, before ``torch.compile`` and before
    wrapping the model in DistributedDataParallel (DDP refuses uninitialized
    parameters; :func:`prepare_ddp` materializes and checks in one call).

    If the forward raises, the error propagates and every GLIFNode that was lazy
    before the call is lazy again (nodes upstream of the failing layer do not keep
    shapes inferred from a bad input); flags and state are restored as above.

    Args:
        model: any module containing :class:`GLIFNode` s.
        example_input: an input the model accepts (its batch size does not matter).

    Returns:
        ``model``, materialized in place.

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` or ``example_input`` not a tensor.
    """
    _check_model(model, "materialize")
    _check_example(example_input, "materialize", optional=False)
    lazy = {
        m: [n for n, p in m._parameters.items() if _lazy(p)]
        for m in model.modules()
        if isinstance(m, GLIFNode) and m.has_uninitialized_params()
    }
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            model(example_input)
    except BaseException:
        for m, names in lazy.items():
            m._unmaterialize([n for n in names if not _lazy(m._parameters[n])])
        raise
    finally:
        for m, training in modes.items():
            m.train(training)
        functional.reset_net(model)
    return model


def prepare_ddp(model: nn.Module, example_input: torch.Tensor | None = None) -> nn.Module:
    """Make ``model`` ready for ``torch.nn.parallel.DistributedDataParallel``.

    DDP needs every parameter's shape when it is constructed, but GLIFNode infers
    ``channels`` and ``T`` from its first input. With ``example_input`` the model is
    materialized first (:func:`materialize`, on every rank; the random gate values
    may differ between ranks, DDP broadcasts rank 0's at construction). Then every
    parameter is checked, and a lazy one raises an error naming it.

    Training under DDP: call ``functional.reset_net(model)`` after every step on
    every rank. Neuron state (``v``, ``spike``, ``step``) is a SpikingJelly memory,
    not a buffer, so DDP neither syncs nor needs it.

    Args:
        model: the model to wrap (not yet wrapped).
        example_input: an input the model accepts, or None if it is materialized.

    Returns:
        ``model``; wrap it as usual: ``DistributedDataParallel(prepare_ddp(model, x))``.

    Raises:
        RuntimeError: a parameter is still lazy (no ``example_input`` given and the
            model never ran).
        TypeError: ``model`` is not an ``nn.Module`` (or is already wrapped in
            DistributedDataParallel), or ``example_input`` is neither a tensor nor None.

    Example::

        >>> model = nn.Sequential(layer.Linear(4, 8, step_mode="m"), GLIFNode(step_mode="m"))
        >>> ddp = DistributedDataParallel(prepare_ddp(model, torch.rand(2, 1, 4)))
    """
    _check_model(model, "prepare_ddp")
    if isinstance(model, nn.parallel.DistributedDataParallel):
        raise TypeError(
            "prepare_ddp expects the model before it is wrapped, got a "
            "DistributedDataParallel; call DistributedDataParallel(prepare_ddp(model, x))"
        )
    _check_example(example_input, "prepare_ddp", optional=True)
    if example_input is not None:
        materialize(model, example_input)
    lazy = [name for name, p in model.named_parameters() if _lazy(p)]
    if lazy:
        raise RuntimeError(
            f"cannot wrap the model in DistributedDataParallel: {len(lazy)} lazy parameter(s) "
            f"are not materialized yet ({', '.join(lazy[:8])}{', ...' if len(lazy) > 8 else ''}"
            "); GLIFNode infers channels and T from its first input: call "
            "sj_glif.prepare_ddp(model, example_input) or sj_glif.materialize(model, "
            "example_input) on every rank before wrapping"
        )
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
    ``glif_kwargs`` say otherwise. A neuron instance used at several places (shared,
    e.g. ``Sequential(fc, sn, fc, sn)``) becomes one GLIFNode used at all of them, so
    the new model shares exactly as the old one did. With ``example_input`` the new
    nodes are materialized at once (channel counts from the data, see
    :func:`materialize`). SpikingJelly's reset cache of ``model`` is invalidated. If
    building a node or materializing fails, the error propagates and ``model`` keeps
    its old neurons.

    Args:
        model: a model containing spiking neurons (a container, not a bare neuron:
            build a bare replacement directly with ``GLIFNode(...)`` or
            :meth:`GLIFNode.from_gated_lif`).
        example_input: an input ``model`` accepts, or None (default) to leave the new
            nodes lazy.
        predicate: ``module -> bool`` choosing the neurons to replace (default: every
            SpikingJelly neuron). It may only choose SpikingJelly neurons.
        glif_kwargs: :class:`GLIFNode` arguments for every new node.

    Returns:
        ``model``, changed in place.

    Raises:
        TypeError: ``model`` is not a module or is itself a neuron the predicate
            chooses; ``predicate`` is not callable or chooses a module that is not a
            SpikingJelly neuron; ``example_input`` is not a tensor; a ``glif_kwargs``
            argument is wrong (as :class:`GLIFNode` raises it).
    """
    gated = compat.gated_lif_class()  # None where SpikingJelly has no GatedLIFNode
    kinds = (neuron.BaseNode,) if gated is None else (neuron.BaseNode, gated)

    _check_model(model, "swap_neurons")
    if predicate is not None and not callable(predicate):
        raise TypeError(f"predicate must be a callable module -> bool, got {predicate!r}")
    _check_example(example_input, "swap_neurons", optional=True)

    def is_neuron(m: nn.Module) -> bool:
        return isinstance(m, kinds)

    choose = predicate or is_neuron
    if not isinstance(model, GLIFNode) and choose(model):
        if not is_neuron(model):
            raise TypeError(
                f"predicate chose the model itself ({type(model).__name__}), which is not a "
                "SpikingJelly neuron (neuron.BaseNode); swap_neurons replaces spiking "
                "neurons only"
            )
        raise TypeError(
            f"swap_neurons replaces the neurons inside a model in place, but the model is "
            f"itself a {type(model).__name__}; build its replacement directly: "
            "GLIFNode(...) (or GLIFNode.from_gated_lif(node) for a GatedLIFNode)"
        )
    swaps = []  # (parent, name, old, new): all new nodes are built before any is set
    made: dict[int, GLIFNode] = {}  # id(old) -> its replacement, for shared instances
    for parent_name, parent in model.named_modules():
        # _modules, not named_children(): that skips a child already seen in this parent
        for name, child in list(parent._modules.items()):
            if child is None or isinstance(child, GLIFNode) or not choose(child):
                continue
            if not is_neuron(child):
                path = f"{parent_name}.{name}" if parent_name else name
                raise TypeError(
                    f"predicate chose {path!r} ({type(child).__name__}), which is not a "
                    "SpikingJelly neuron (neuron.BaseNode); swap_neurons replaces spiking "
                    "neurons only"
                )
            new = made.get(id(child))
            if new is None:
                if gated is not None and isinstance(child, gated):
                    new = GLIFNode.from_gated_lif(child, **glif_kwargs)
                else:
                    kwargs: dict[str, Any] = dict(step_mode=child.step_mode)
                    for key in ("surrogate_function", "detach_reset"):
                        if hasattr(child, key):
                            kwargs[key] = getattr(child, key)
                    kwargs.update(glif_kwargs)
                    new = GLIFNode(**kwargs)
                made[id(child)] = new
            swaps.append((parent, name, child, new))
    for parent, name, _, new in swaps:
        setattr(parent, name, new)
    compat.invalidate_reset_cache(model)
    if example_input is not None:
        device = next((p.device for p in model.parameters() if not _lazy(p)), None)
        try:
            if device is not None:
                model.to(device)
            materialize(model, example_input)
        except BaseException:  # leave the model as it was: the old neurons back in place
            for parent, name, old, _ in swaps:
                setattr(parent, name, old)
            compat.invalidate_reset_cache(model)
            raise
    return model


def _check_model(model: object, where: str) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{where} expects a torch.nn.Module, got {type(model).__name__}")


def _check_example(example_input: object, where: str, *, optional: bool) -> None:
    if optional and example_input is None:
        return
    if not isinstance(example_input, torch.Tensor):
        want = "a torch.Tensor or None" if optional else "a torch.Tensor"
        raise TypeError(
            f"{where}: example_input must be {want}, got {type(example_input).__name__}"
        )


def _lazy(p: torch.Tensor) -> bool:
    return isinstance(p, nn.parameter.UninitializedParameter)
