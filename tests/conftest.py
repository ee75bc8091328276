"""Test setup: without CUDA, Triton kernels run under Triton's CPU interpreter.

``TRITON_INTERPRET`` must be set before triton is first imported, so it is set
here, at collection time, before any test module imports sj_glif.kernels.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from spikingjelly.activation_based import surrogate  # noqa: E402

from sj_glif import compat  # noqa: E402

# SpikingJelly 0.0.0.0.14 has no surrogate.Rect or surrogate.SuperSpike. The tests name
# SpikingJelly 2.0's classes; under 0.0.0.0.14 they get sj-glif's equivalents, the classes
# a 0.0.0.0.14 user passes (sj_glif.surrogates.Rect / SuperSpike). sj_glif is imported
# above first, so sj-glif itself sees the release as it is installed.
for _name in ("Rect", "SuperSpike"):
    if not hasattr(surrogate, _name):
        setattr(surrogate, _name, getattr(compat, _name))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "needs_sj2(feature): uses a SpikingJelly >= 2.0 feature; skipped under 0.0.0.0.14",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if compat.HAS_FUNCTIONAL_CONTRACT:
        return
    for item in items:
        marker = item.get_closest_marker("needs_sj2")
        if marker is not None:
            reason = (
                f"needs SpikingJelly >= 2.0 ({', '.join(marker.args)}); "
                f"installed: spikingjelly {compat.SPIKINGJELLY_VERSION}"
            )
            item.add_marker(pytest.mark.skip(reason=reason))
