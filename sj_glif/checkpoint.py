"""Checkpoint interop: the official GLIF research code <-> :class:`~sj_glif.GLIFNode`.

Three sources of GLIF weights, and how each loads:

- **sj-glif** checkpoints: ``model.state_dict()`` / ``load_state_dict`` as usual. A
  checkpoint of a materialized model also loads into a freshly built *lazy* model
  (PyTorch's lazy-module load hook gives each parameter the saved shape).
- **SpikingJelly** ``GatedLIFNode`` checkpoints load into GLIFNode unchanged: the
  parameter names (``alpha, beta, gamma, tau, v_threshold, linear_decay,
  v_subreset, conduct``) and shapes (``[C]``, ``conduct [T, C]``; layer-wise ``[]``,
  ``[T]``) are the same, and so is the meaning of every raw value.
- The **official GLIF code** (Yao et al., github.com/CAS-CLab/Gated-LIF, modules
  ``LIFSpike`` / ``LIFSpike_CW`` / ``LIFSpike_CW_softsimple``) names them
  differently: :func:`convert_official_state_dict` renames them, and
  :func:`convert_to_official_state_dict` goes back.

Name map (official -> GLIFNode; raw values, both sides apply ``sigmoid``)::

    alpha -> alpha    beta -> beta    gamma -> gamma    tau -> tau
    Vth -> v_threshold    leak -> linear_decay    reVth -> v_subreset
    conduct -> conduct

Shapes. The official channel-wise neuron stores ``[C]`` and ``conduct [T, C]``;
variants and forks store the same values with singleton axes for broadcasting
(``[1, C, 1, 1]``, ``[C, 1, 1]``; ``conduct [T, 1, C, 1, 1]``). Conversion squeezes
every singleton axis: per-neuron parameters become ``[C]`` (``C`` taken from
``tau``), ``conduct`` becomes ``[T, C]``. A 0-d ``tau`` marks the layer-wise neuron:
its parameters become ``[]`` and ``conduct`` ``[T]``. Anything that is not one
channel axis (plus ``T`` for ``conduct``) after squeezing raises ``ValueError``.
The reverse conversion writes the official flat shapes (``[C]``, ``[T, C]``).

Not convertible, with a ``ValueError`` saying so: the official ``time_wise``
layer-wise variant (per-step ``tau, Vth, leak, reVth`` of shape ``[T]``), which has
no GLIFNode counterpart. ``static_param=True`` modules keep their constants out of
the state dict, so there is nothing to convert.

GLIF_f (``LIFSpike_CW_softsimple``, GLIFNode ``gate_mode="coarse"``): the official
module has a ``gamma`` parameter that its forward never reads. Conversion drops it;
the reverse writes ``gamma`` as zeros (gates 0.5, unused).

Note the official spike is ``u - Vth > 0`` and GLIFNode's ``u - theta >= 0``; they
differ only where the membrane equals the threshold exactly. The official training
surrogate is SpikingJelly's ``surrogate.Rect()`` (``alpha=1``: 1 where ``|z| < 0.5``).

Example::

    >>> official = torch.load("official_resnet19.pth")          # a state_dict
    >>> model.load_state_dict(convert_official_state_dict(official))
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

__all__ = [
    "GLIF_TO_OFFICIAL",
    "OFFICIAL_TO_GLIF",
    "convert_official_state_dict",
    "convert_to_official_state_dict",
]

OFFICIAL_TO_GLIF = {
    "alpha": "alpha",
    "beta": "beta",
    "gamma": "gamma",
    "tau": "tau",
    "Vth": "v_threshold",
    "leak": "linear_decay",
    "reVth": "v_subreset",
    "conduct": "conduct",
}
GLIF_TO_OFFICIAL = {v: k for k, v in OFFICIAL_TO_GLIF.items()}
_GATES = ("alpha", "beta", "gamma")


def _groups(state_dict: Mapping[str, object]) -> dict[str, dict[str, str]]:
    """``{prefix: {name: key}}``: keys grouped by module (everything before the last dot)."""
    groups: dict[str, dict[str, str]] = {}
    for key in state_dict:
        if not isinstance(key, str):
            raise TypeError(f"state_dict keys must be str, got {key!r}")
        prefix, _, name = key.rpartition(".")
        groups.setdefault(prefix + "." if prefix else "", {})[name] = key
    return groups


def _check_group(prefix: str, names: set[str], known: set[str], required: set[str],
                 source: str, markers: str) -> bool:  # fmt: skip
    """Validate one neuron's keys; return whether it has gates (False: GLIF_f/coarse)."""
    where = f"module {prefix[:-1]!r}" if prefix else "the top-level module"
    unknown = names - known
    if unknown:
        raise ValueError(
            f"{where} looks like a {source} GLIF neuron (it has {markers}) but has unknown "
            f"keys {sorted(unknown)}; expected only {sorted(known)}"
        )
    gates = names & set(_GATES)
    has_gates = bool(gates - {"gamma"})
    need = required | (set(_GATES) if has_gates else set())
    missing = need - names
    if missing:
        raise ValueError(
            f"{where} is a {source} GLIF neuron but lacks keys {sorted(missing)} "
            f"(present: {sorted(names)})"
        )
    return has_gates


def _squeeze(t: Tensor, key: str, leading: tuple[int, ...]) -> Tensor:
    """Drop singleton axes after the ``leading`` ones; at most one axis may remain."""
    rest = t.shape[len(leading) :]
    big = [d for d in rest if d != 1]
    if tuple(t.shape[: len(leading)]) != leading or len(big) > 1:
        want = "[" + ", ".join([*(str(d) for d in leading), "C"]) + "] (+ singleton axes)"
        raise ValueError(f"{key} has shape {list(t.shape)}; expected {want}")
    return t.reshape(*leading, -1)


def _check_conduct(v: Tensor, key: str, C: int, tau_key: str) -> None:
    """A channel-wise ``conduct`` is ``[T, C]`` plus singleton axes after ``T``; say so,
    with the shape seen, when it is not (and whether it looks transposed)."""
    rest = [d for d in v.shape[1:] if d != 1]
    if rest == [C]:
        return
    big = [d for d in v.shape if d != 1]
    hint = ""
    if len(big) == 2 and big[0] == C:
        hint = f"; it looks transposed ([C, T] = {big}): store it as [T, C] = {big[::-1]}"
    raise ValueError(
        f"{key} has shape {list(v.shape)}; expected [T, {C}] (+ singleton axes): the time "
        f"steps first, then the C={C} channels of {tau_key}{hint}"
    )


def _check_mapping(state_dict: object, where: str) -> None:
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"{where} expects a state dict (a mapping of str to tensors), got "
            f"{type(state_dict).__name__}"
        )


def convert_official_state_dict(state_dict: Mapping[str, object]) -> dict[str, object]:
    """Rename the official GLIF code's neuron parameters to GLIFNode's, for a whole model.

    Every module whose keys include ``leak``, ``reVth`` or ``Vth`` together with
    ``conduct`` is an official GLIF neuron; its keys are renamed (prefixes kept) and
    its values reshaped to GLIFNode's shapes (see the module docstring). Every
    other entry (convolutions, tdBN buffers such as ``bn.Vth``, ...) is copied as is.
    The input is not modified; tensors are not copied unless reshaped.

    Args:
        state_dict: an official model's ``state_dict()`` (keys like
            ``"layer1.0.spike.Vth"``; a ``"module."`` prefix from DataParallel is kept).

    Returns:
        a new dict, in the same key order, loadable into the same architecture built
        with GLIFNode (``gate_mode="coarse"`` for GLIF_f neurons).

    Raises:
        ValueError: a neuron lacks keys, has unknown ones (e.g. already-converted
            names), or has shapes GLIFNode cannot hold (the ``time_wise`` variant).
        TypeError: ``state_dict`` is not a mapping, a key is not a str, or a neuron
            entry is not a tensor.
    """
    _check_mapping(state_dict, "convert_official_state_dict")
    renamed: dict[str, tuple[str, object]] = {}
    for prefix, by_name in _groups(state_dict).items():
        names = set(by_name)
        if "conduct" not in names or not names & {"leak", "reVth", "Vth"}:
            continue
        has_gates = _check_group(prefix, names, set(OFFICIAL_TO_GLIF),
                                 set(OFFICIAL_TO_GLIF) - set(_GATES), "official",
                                 "conduct and Vth/leak/reVth")  # fmt: skip
        values = {}
        for name, key in by_name.items():
            v = state_dict[key]
            if not isinstance(v, Tensor):
                raise TypeError(f"{key} must be a tensor, got {type(v).__name__}")
            values[name] = v
        tau = values["tau"]
        layerwise = tau.dim() == 0
        conduct = values["conduct"]
        if conduct.dim() == 0:
            raise ValueError(f"{by_name['conduct']} must have a time axis, got shape []")
        T = conduct.shape[0]
        if layerwise:
            shapes = {n: () for n in values}
            shapes["conduct"] = (T,)
        else:
            C = _squeeze(tau, by_name["tau"], ()).shape[0]
            shapes = {n: (C,) for n in values}
            shapes["conduct"] = (T, C)
        out = {}
        for name, v in values.items():
            key, want = by_name[name], shapes[name]
            if layerwise:
                if name == "conduct" and v.dim() >= 1 and v.shape[0] == T and v.numel() == T:
                    out[name] = v.reshape(T)
                elif name != "conduct" and v.numel() == 1:
                    out[name] = v.reshape(())
                else:
                    raise ValueError(
                        f"{key} has shape {list(v.shape)} but {by_name['tau']} is a scalar "
                        f"(layer-wise GLIF), so {name} must be {list(want)}"
                        + (
                            "; per-step tau/Vth/leak/reVth (the official time_wise variant) "
                            "have no GLIFNode counterpart"
                            if name != "conduct"
                            else ""
                        )
                    )
                continue
            if v.dim() == 0:
                raise ValueError(
                    f"{key} is a scalar but {by_name['tau']} has shape {list(tau.shape)}: "
                    "mixed layer-wise/channel-wise parameters (the official time_wise "
                    "layer-wise variant has no GLIFNode counterpart)"
                )
            if name == "conduct":
                _check_conduct(v, key, want[-1], by_name["tau"])
            sq = _squeeze(v, key, (T,) if name == "conduct" else ())
            if tuple(sq.shape) != want:
                raise ValueError(
                    f"{key} has shape {list(v.shape)}, which squeezes to {list(sq.shape)}; "
                    f"expected {list(want)} (C={want[-1]} from {by_name['tau']})"
                )
            out[name] = sq
        if not has_gates:  # GLIF_f: its gamma is never used
            out.pop("gamma", None)
        for name in by_name:
            renamed[by_name[name]] = (
                (prefix + OFFICIAL_TO_GLIF[name], out[name]) if name in out else ("", None)
            )
    result: dict[str, object] = {}
    for key, value in state_dict.items():
        if key in renamed:
            new_key, new_value = renamed[key]
            if new_key:
                result[new_key] = new_value
        else:
            result[key] = value
    return result


def convert_to_official_state_dict(state_dict: Mapping[str, object]) -> dict[str, object]:
    """Rename GLIFNode parameters to the official GLIF code's names, for a whole model.

    The inverse of :func:`convert_official_state_dict`. Every module whose keys
    include ``conduct`` with ``linear_decay`` or ``v_subreset`` is a GLIFNode (or
    SpikingJelly ``GatedLIFNode``); its keys are renamed, shapes kept (``[C]``,
    ``[T, C]``; layer-wise ``[]``, ``[T]``: the official flat shapes). A coarse
    (GLIF_f) node gains the official module's unused ``gamma``, as zeros. Every other
    entry is copied as is.

    Raises:
        ValueError: a neuron lacks keys or has unknown ones.
        TypeError: ``state_dict`` is not a mapping, a key is not a str, or a neuron
            entry is not a tensor.
    """
    _check_mapping(state_dict, "convert_to_official_state_dict")
    renamed: dict[str, list[tuple[str, object]]] = {}
    for prefix, by_name in _groups(state_dict).items():
        names = set(by_name)
        if "conduct" not in names or not names & {"linear_decay", "v_subreset"}:
            continue
        has_gates = _check_group(prefix, names, set(GLIF_TO_OFFICIAL),
                                 set(GLIF_TO_OFFICIAL) - set(_GATES), "GLIFNode",
                                 "conduct and linear_decay/v_subreset")  # fmt: skip
        if not has_gates and "gamma" in names:
            raise ValueError(
                f"{prefix}gamma without alpha and beta: a GLIFNode has all three gates "
                "or none (gate_mode='coarse')"
            )
        for name, key in by_name.items():
            if not isinstance(state_dict[key], Tensor):
                raise TypeError(f"{key} must be a tensor, got {type(state_dict[key]).__name__}")
            entries = [(prefix + GLIF_TO_OFFICIAL[name], state_dict[key])]
            if not has_gates and name == "tau":
                tau = state_dict[key]
                entries.append((prefix + "gamma", torch.zeros_like(tau)))
            renamed[key] = entries
    result: dict[str, object] = {}
    for key, value in state_dict.items():
        for new_key, new_value in renamed.get(key, [(key, value)]):
            result[new_key] = new_value
    return result
