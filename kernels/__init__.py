"""Triton kernels for sj-glif, installed as ``sj_glif.kernels``."""
