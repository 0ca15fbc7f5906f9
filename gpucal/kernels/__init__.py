"""CUDA kernel sources (``*.cu``, package data) and the ways to compile and run them.

:mod:`gpucal.kernels._loader` loads them on a GPU through CuPy and compile-checks them with
NVRTC; :mod:`gpucal.kernels.cpu_shim` runs the same sources on the CPU for CI.
"""
