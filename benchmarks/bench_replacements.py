"""Each NumPy entry of the replacement table against its reference function, both timed alternating in one
process (7 rounds, median of each): the figure each replacement needs to stay (benchmarks/RESULTS.md).

    python benchmarks/bench_replacements.py [NAME ...]      # only the entries whose name contains NAME
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_replacements.py   # the arithmetic alone, one thread
"""
import sys
import time

import numpy as np

from scratchgan import replace

rng = np.random.default_rng(0)
f32 = lambda *s: rng.standard_normal(s).astype(np.float32)
N = 64
x, W, b = f32(N, 512), f32(512, 1024), f32(1024)
h = f32(N, 1024); dy = f32(N, 1024)
bn_g, bn_b = f32(1, 1024), f32(1, 1024)
xc = f32(N, 64, 16, 16)
P = 1_400_000
theta, g, m, v, buf, ema = (f32(P) for _ in range(6)); v = np.abs(v)
from scratchgan.nn import batchnorm, conv

_, bncache, _, _ = batchnorm.batchnorm_train_forward.reference(h, bn_g, bn_b, 1e-5)
cols = conv.im2col.reference(xc, (4, 4), (2, 2), (1, 1))
grad = np.zeros((512, 1024), np.float32)
cases = {
    "scratchgan.nn.linear.linear_backward": (dy, (x, W), grad, b.copy()),
    "scratchgan.nn.activations.leaky_relu_forward": (h, 0.2),
    "scratchgan.nn.activations.leaky_relu_backward": (dy, h, 0.2),
    "scratchgan.nn.activations.tanh_backward": (dy, np.tanh(h)),
    "scratchgan.nn.batchnorm.batchnorm_forward": (h, bn_g, bn_b, bn_g * 0, np.abs(bn_b), 1e-5),
    "scratchgan.nn.batchnorm.batchnorm_train_forward": (h, bn_g, bn_b, 1e-5),
    "scratchgan.nn.batchnorm.batchnorm_backward_train": (dy, bncache),
    "scratchgan.nn.batchnorm.batchnorm_backward_eval": (dy, bncache),
    "scratchgan.nn.conv.channels_last": (xc, (1, 1)),
    "scratchgan.nn.conv.im2col": (xc, (4, 4), (2, 2), (1, 1)),
    "scratchgan.nn.conv.col2im": (cols, xc.shape, (4, 4), (2, 2), (1, 1)),
    "scratchgan.optim.adam_update": (theta, g, m, v, 3, 2e-4, 0.5, 0.999, 1e-8),
    "scratchgan.gan.ema.ema_update": (ema, theta, 0.999),
}
extra = {"linear_forward: y += b in place": (lambda: (lambda y: y.__iadd__(b))(x @ W), lambda: x @ W + b),
         "zero_fill: fill split over the cores": (lambda: __import__("scratchgan.fast.cpu").fast.cpu.run_in_parts(
             lambda i, j: g[i:j].fill(0), g.size, g.size), lambda: g.fill(0))}
only = sys.argv[1:]
def timeit(fn, reps):
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps * 1e3
rows = []
items = [(n, replace._resolve(n).reference, replace._resolve(replace.TABLE[n]["numpy"][0]), a)
         for n, a in cases.items()]
items += [(n, ref, fast, None) for n, (fast, ref) in extra.items()]
for name, ref, fast, args in items:
    if only and not any(o in name for o in only):
        continue
    r = (lambda ref=ref, args=args: ref(*args)) if args is not None else ref
    f = (lambda fast=fast, args=args: fast(*args)) if args is not None else fast
    r(); f()
    t0 = time.perf_counter(); r(); one = time.perf_counter() - t0
    reps = max(3, int(0.02 / max(one, 1e-6)))
    R, F = [], []
    for _ in range(7):  # alternating
        R.append(timeit(r, reps)); F.append(timeit(f, reps))
    R, F = np.median(R), np.median(F)
    rows.append((name.replace("scratchgan.", ""), R, F, R / F))
    print(f"| `{rows[-1][0]}` | {R:.3f} | {F:.3f} | {R / F:.2f}x |", flush=True)
