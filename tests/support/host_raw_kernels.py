"""cupy.RawKernel's contract on the CPU: the same CUDA source, compiled by the system's C++ compiler.

``HostRawKernel(source, name)`` is called as CuPy's RawKernel is, ``kernel(grid, block, args)``,
with NumPy arrays (their data pointers are passed, as CuPy passes a device pointer) and NumPy scalars
(``np.int32``, ``np.float32``) in the order of the kernel's C parameter list. The source
is compiled unchanged after a small preamble that gives the CUDA words their host meaning:

    __global__, __device__          nothing (plain functions)
    blockIdx, blockDim, gridDim     globals set by the launcher, which runs the blocks one after another
    threadIdx                       thread_local: each CUDA thread of a block is one host thread
    __shared__                      ``static``: one copy, shared by the block's threads (blocks run in turn)
    __syncthreads()                 a barrier of the block's threads (pthread_barrier_wait)

So a kernel whose threads cooperate through shared memory and barriers (a tiled GEMM) runs here as
written, with the arithmetic of its body (``-ffp-contract=off``: no fused multiply-add, each + and *
rounded, as nvrtc's ``--fmad=false`` would; on the GPU the default ``--fmad=true`` contracts them, so
GPU results may differ from these by rounding). It is slow (one host thread per CUDA thread): for
small test shapes only.
"""
from __future__ import annotations

import ctypes
import re

import numpy as np

import host_kernels
from host_kernels import FLAGS

HOST_CUDA = r"""
#include <pthread.h>
#include <thread>
#include <vector>
#include <cstddef>
struct dim3 { unsigned x, y, z; };
static dim3 blockIdx, blockDim, gridDim;
static thread_local dim3 threadIdx;
static pthread_barrier_t block_barrier;
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
static inline void __syncthreads() { pthread_barrier_wait(&block_barrier); }
"""

def _build(source, symbol):
    """Compile ``source`` (with threads) into a cached shared library; return its function ``symbol``."""
    return host_kernels._build(source, symbol, flags=[*FLAGS, "-pthread", "-std=c++17"])


_CTYPES = {"int": ctypes.c_int, "float": ctypes.c_float, "double": ctypes.c_double, "long": ctypes.c_long}


def _parse(source, name):
    """The parameters of kernel ``name`` in ``source``: 'const float* A, int M' -> [('const float*', 'A'), ('int', 'M')]."""
    found = re.search(r"__global__\s+void\s+" + re.escape(name) + r"\s*\(([^)]*)\)", source)
    if found is None:
        raise ValueError(f"no __global__ kernel named {name} in the source")
    params, parsed = found.group(1), []
    for param in params.split(","):
        words = param.replace("*", "* ").split()
        parsed.append((" ".join(words[:-1]), words[-1]))
    return parsed


class HostRawKernel:
    """A cupy.RawKernel look-alike that runs the CUDA source's kernel on the host (see the module docstring)."""

    def __init__(self, source, name, **kwargs):  # CuPy's options= etc.: accepted, not used here
        self.name, self.params = name, _parse(source, name)
        declared = ", ".join(f"{t} {n}" for t, n in self.params)
        names = ", ".join(n for _, n in self.params)
        launcher = (f'extern "C" void launch_{name}(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, '
                    f"unsigned bz, {declared}) {{\n"
                    "  gridDim = {gx, gy, gz}; blockDim = {bx, by, bz};\n"
                    "  const unsigned nt = bx * by * bz;\n"
                    "  pthread_barrier_init(&block_barrier, nullptr, nt);\n"
                    "  for (unsigned z = 0; z < gz; ++z) for (unsigned y = 0; y < gy; ++y) for (unsigned x = 0; x < gx; ++x) {\n"
                    "    blockIdx = {x, y, z};\n"
                    "    std::vector<std::thread> threads;\n"
                    "    for (unsigned t = 0; t < nt; ++t)\n"
                    "      threads.emplace_back([=] { threadIdx = {t % bx, (t / bx) % by, t / (bx * by)}; "
                    f"{name}({names}); }});\n"
                    "    for (auto &th : threads) th.join();\n"
                    "  }\n"
                    "  pthread_barrier_destroy(&block_barrier);\n"
                    "}\n")
        self.function = _build(HOST_CUDA + source + launcher, f"launch_{name}")
        self.function.restype = None
        self.function.argtypes = [ctypes.c_uint] * 6 + [
            ctypes.c_void_p if t.endswith("*") else _CTYPES[t.replace("const ", "")] for t, _ in self.params]
        self.launches = 0

    def __call__(self, grid, block, args, shared_mem=0):
        if len(args) != len(self.params):
            raise TypeError(f"{self.name} takes {len(self.params)} arguments, got {len(args)}")
        values = []
        for (ctype, pname), value in zip(self.params, args):
            if ctype.endswith("*"):
                if not isinstance(value, np.ndarray):
                    raise TypeError(f"{self.name}: argument {pname} must be an array, got {type(value).__name__}")
                values.append(value.ctypes.data)  # the pointer, whatever the view's strides (CuPy does the same)
            else:
                values.append(value.item() if isinstance(value, np.generic) else value)
        grid, block = tuple(grid) + (1,) * (3 - len(grid)), tuple(block) + (1,) * (3 - len(block))
        self.launches += 1
        self.function(*grid, *block, *values)
