"""Device operations per training step of the default MLP GAN, with and without the fused CuPy kernels
(scratchgan/fast/kernels.py).

Runs the step on the fake device of the tests (tests/support/fake_device.py: NumPy underneath, no GPU needed)
and counts every array the device makes or writes: each xp function call, array operator and in-place
operator counts one, and so does each fused kernel launch (its host stand-in, tests/support/host_kernels.py,
needs a C++ compiler). Views (reshape, slices) count too, so the figures are upper bounds on the
kernel launches a GPU would see. Matmuls count one each on both paths.

    python benchmarks/count_device_ops.py [--batch 64]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "support"), str(ROOT)]

import fake_device  # noqa: E402
import numpy as np  # noqa: E402

from scratchgan import fast
from scratchgan.cli import train as train_command
from scratchgan.gan import models  # noqa: E402

COUNT = {"ops": 0, "inside_kernel": False}


def _counting(wrap):
    def counted_wrap(value):
        if isinstance(value, (np.ndarray, np.generic)) and not COUNT["inside_kernel"]:
            COUNT["ops"] += 1
        return wrap(value)
    return counted_wrap


def _counting_inplace(method):
    def counted(self, other):
        COUNT["ops"] += 1
        return method(self, other)
    return counted


class CountedKernel(fake_device.FakeElementwiseKernel):
    def __call__(self, *args):
        COUNT["ops"] += 1  # one launch, however many outputs it writes
        COUNT["inside_kernel"] = True
        try:
            return super().__call__(*args)
        finally:
            COUNT["inside_kernel"] = False


def ops_per_step(batch, fused, steps=5):
    if fused:
        fake_device.xp.ElementwiseKernel = CountedKernel
    else:
        fake_device.xp.__dict__.pop("ElementwiseKernel", None)
    fast.reset()  # choose the replacements again for the fake device's arrays
    config = dict(train_command.MLP_DEFAULTS, image_size=784, batch_size=batch, backend="numpy")
    step = models.build_step(config, fake_device.xp)
    real = fake_device.xp.asarray(np.random.default_rng(0).uniform(-1, 1, (batch, 784)).astype(np.float32))
    step.step([real])  # the first step makes the optimizers' lazy state
    COUNT["ops"] = 0
    for _ in range(steps):
        step.step([real])
    return COUNT["ops"] / steps


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64, help="batch size (default: %(default)s)")
    args = parser.parse_args(argv)
    fake_device.wrap = _counting(fake_device.wrap)
    for name in ("__iadd__", "__isub__", "__imul__", "__itruediv__"):
        setattr(fake_device.DeviceArray, name, _counting_inplace(getattr(fake_device.DeviceArray, name)))
    plain, fused = ops_per_step(args.batch, False), ops_per_step(args.batch, True)
    print(f"| batch | device ops/step, xp path | with fused kernels |\n|---|---|---|\n"
          f"| {args.batch} | {plain:.0f} | {fused:.0f} |")


if __name__ == "__main__":
    main()
