"""Test setup: without CUDA, Triton kernels run under Triton's CPU interpreter.

``TRITON_INTERPRET`` must be set before triton is first imported, so it is set
here, at collection time, before any test module imports sj_glif.kernels.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
