"""Losses as functions: ``loss, dinput = f(input, targets)``, mean over all elements.

``targets`` is a scalar or an array broadcastable to the input (label smoothing = target 0.9).
``loss`` is a 0-d array on the input's device; float(loss) is the caller's choice (it syncs a GPU).
(docs/derivations/losses.md)
"""
from __future__ import annotations

import numpy as np

from .backend import array_module
from .replace import replaceable

# PyTorch clamps p (1 - p) at EPSILON = 1e-12 held in a C float: float32(1e-12) = 9.99999996e-13
_BCE_GRAD_EPS = 9.999999960041972e-13


def _check(name, x, t):
    xp = array_module(x)
    t = xp.asarray(t, dtype=x.dtype) if not hasattr(t, "dtype") else t
    if t.dtype != x.dtype:
        raise TypeError(f"{name}: targets dtype {t.dtype} differs from the input's {x.dtype}")
    if t.ndim and t.shape != x.shape:
        try:
            fits = xp.broadcast_shapes(t.shape, x.shape) == tuple(x.shape)
        except ValueError:
            fits = False
        if not fits:  # targets may broadcast to the input's shape, never widen it
            raise ValueError(f"{name}: targets of shape {tuple(t.shape)} do not fit input "
                             f"of shape {tuple(x.shape)}")
    return xp, t


@replaceable  # fast: fast/kernels.py (CuPy)
def bce_with_logits(z, t):
    """L = mean(max(z, 0) - z t + log(1 + exp(-|z|))),  dL/dz = (sigmoid(z) - t) / n.

    The log-sum-exp form of -[t log s(z) + (1 - t) log(1 - s(z))]: exact and finite for any
    finite z (exp only ever sees -|z| <= 0).
    """
    xp, t = _check("bce_with_logits", z, t)
    n = z.size
    e = xp.exp(-xp.abs(z))  # in (0, 1]: no overflow
    loss = (xp.maximum(z, 0.0) - z * t + xp.log1p(e)).mean()
    sigmoid = xp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    dz = (sigmoid - t) * (1.0 / n)
    return xp.asarray(loss), dz.astype(z.dtype, copy=False)


def bce(p, t):
    """L = -mean(t log p + (1 - t) log(1 - p)), logs clamped at -100 as PyTorch does.

    dL/dp = (p - t) / max(p (1 - p), 1e-12) / n  (PyTorch's guarded form of the same derivative).
    """
    xp, t = _check("bce", p, t)
    n = p.size
    with np.errstate(divide="ignore"):  # log(0) = -inf is expected here: the clamp handles it
        log_p = xp.maximum(xp.log(p), -100.0)
        log_1mp = xp.maximum(xp.log1p(-p), -100.0)
    loss = -(t * log_p + (1.0 - t) * log_1mp).mean()
    dp = (p - t) / xp.maximum(p * (1.0 - p), _BCE_GRAD_EPS) * (1.0 / n)
    return xp.asarray(loss), dp.astype(p.dtype, copy=False)


def mse(y, t):
    """L = mean((y - t)^2),  dL/dy = 2 (y - t) / n."""
    xp, t = _check("mse", y, t)
    diff = y - t
    loss = (diff * diff).mean()
    dy = diff * (2.0 / y.size)
    return xp.asarray(loss), dy.astype(y.dtype, copy=False)
