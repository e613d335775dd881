"""Gradient checks by central differences: is a hand-written backward the derivative of its forward?

For a layer y = f(x; theta) and a random upstream gradient dy, define the scalar
L = sum(y * dy). Then dL/dx is exactly what ``backward(dy)`` must return, and dL/dtheta what it
must add into ``p.grad``. Central differences estimate each entry:
    dL/dx_i ~ (L(x + h e_i) - L(x - h e_i)) / (2 h),   error O(h^2).
For whole networks checking every entry is too slow; the directional check compares the
gradient's component along a random unit vector u with (L(theta + h u) - L(theta - h u)) / (2 h).
Use float64: in float32 the rounding error of L swamps the differences.
"""
from __future__ import annotations

import numpy as np

from .backend import array_module, to_numpy


def relative_error(a, b):
    """||a - b|| / max(||a|| + ||b||, tiny): 0 for identical arrays, ~1e-10 for a correct float64 check."""
    a, b = to_numpy(a).astype(np.float64), to_numpy(b).astype(np.float64)
    denom = max(np.linalg.norm(a) + np.linalg.norm(b), 1e-30)
    return float(np.linalg.norm(a - b) / denom)


def numerical_gradient(f, x, h=1e-6):
    """Central-difference gradient of scalar f() with respect to array ``x`` (perturbed in place)."""
    grad = np.zeros(x.shape, dtype=np.float64)
    # index x itself: x.reshape(-1) would be a copy for a non-contiguous x (a transpose, a
    # strided slice), and perturbing the copy would silently give a zero gradient
    for i in np.ndindex(*x.shape):
        old = x[i].item()
        x[i] = old + h
        f_plus = float(f())
        x[i] = old - h
        f_minus = float(f())
        x[i] = old
        grad[i] = (f_plus - f_minus) / (2.0 * h)
    return grad


def check_module(module, x, seed=0, h=1e-6, before_forward=None):
    """Relative errors of a module's backward against central differences.

    Returns ``{"x": err, "<param name>": err, ...}``. ``module`` and ``x`` should be float64.
    ``before_forward`` is called before every forward (e.g. to reseed Dropout's mask).
    """
    xp = array_module(x)
    # dy gets its own stream: drawn from the same seed as x it could equal x, and for
    # BatchNorm such a dy lies in the directions the layer projects out (dx = 0, a vacuous check)
    rng = np.random.default_rng((seed, 0xD1))
    prepare = before_forward or (lambda: None)

    prepare()
    y = module.forward(x)
    dy = xp.asarray(rng.standard_normal(y.shape), dtype=y.dtype)  # random, never all ones
    module.zero_grad()
    dx = module.backward(dy)
    analytic = {"x": to_numpy(dx)}
    analytic.update({name: to_numpy(p.grad).copy() for name, p in module.named_parameters()})

    def loss():
        prepare()
        out = module.forward(x)
        for m in module.modules():  # these forwards have no backward: drop their caches
            m.cache = None
        return (out * dy).sum()

    errors = {"x": relative_error(analytic["x"], numerical_gradient(loss, x, h))}
    for name, p in module.named_parameters():
        errors[name] = relative_error(analytic[name], numerical_gradient(loss, p.data, h))
    return errors


def check_loss(loss_fn, x, targets, h=1e-6):
    """Relative error of a loss's dinput against central differences of its value."""
    _, dx = loss_fn(x, targets)
    numeric = numerical_gradient(lambda: loss_fn(x, targets)[0], x, h)
    return relative_error(dx, numeric)


def directional_check(loss_and_backward, store, seed=0, h=1e-5):
    """Compare grad . u with the central difference of the loss along a random unit vector u.

    ``loss_and_backward()`` must zero the gradients, run forward and backward, and return the loss
    (so ``store.grad`` holds dL/dtheta). ``store`` is a FlatStore (``model.flat_store()``).
    Returns (analytic, numeric, relative error).
    """
    xp = array_module(store.data)
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(store.size)
    u /= np.linalg.norm(u)
    u = xp.asarray(u, dtype=store.data.dtype)

    loss_and_backward()
    analytic = float((store.grad * u).sum())
    theta = store.data.copy()
    store.data[...] = theta + h * u
    f_plus = float(loss_and_backward())
    store.data[...] = theta - h * u
    f_minus = float(loss_and_backward())
    store.data[...] = theta
    loss_and_backward()  # leave the gradients of the unperturbed parameters behind
    numeric = (f_plus - f_minus) / (2.0 * h)
    return analytic, numeric, abs(analytic - numeric) / max(abs(analytic) + abs(numeric), 1e-30)
