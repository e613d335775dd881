"""An exponential moving average of the generator's weights (--ema BETA), for sampling and evaluation.

    theta_ema <- b_t theta_ema + (1 - b_t) theta,   once after every G update      (docs/derivations/ema.md)
    b_t = min(beta, (1 + t) / (10 + t)),  t = updates so far   (TensorFlow's ExponentialMovingAverage warm-up)

G's parameters are one flat buffer (params.FlatStore), so the average is one in-place pass over one array,
written ``ema += (1 - beta) (theta - ema)``; on CuPy a fused kernel does it in one launch (scratchgan/fast).
Training never uses the average: the live G is trained, and the averaged weights stand in for it in the
sample grids, ``scratchgan sample`` and ``scratchgan evaluate`` (Karras et al. 2018; Yazici et al. 2019).

BatchNorm's running statistics are not averaged: the EMA generator uses G's own, copied as they are (the
StyleGAN2-ADA training loop's ``b_ema.copy_(b)`` for every buffer). They are already a moving average of
recent batch statistics, and averaging them again would lag further; the price is that they were measured
with the live weights, not the averaged ones (BigGAN recomputes "standing statistics" for that; not done here).
"""
from __future__ import annotations

import contextlib

import numpy as np

from ..backend import array_module, to_device, to_numpy
from ..errors import SettingError
from ..replace import replaceable

KEY = "G_ema/params"  # the checkpoint's array: the averaged flat parameter buffer of G
UPDATES_KEY = "G_ema/updates"  # and how many updates made it (the warm-up's t)


@replaceable  # fast: fast/cpu.py (CPU), fast/kernels.py (CuPy)
def ema_update(ema, theta, beta):
    """ema <- beta ema + (1 - beta) theta, in place: ema += (1 - beta) (theta - ema). Flat buffers (P,)."""
    ema += (1.0 - beta) * (theta - ema)  # (1 - beta) a Python float: float32 stays float32


class GeneratorEMA:
    """``GeneratorEMA(G, beta)``: the averaged copy of G's flat parameter buffer, starting at G's weights.

    The decay warms up as b_t = min(beta, (1 + t) / (10 + t)) (0.1, 0.18, 0.25, ... reaching 0.999 after
    about 9000 updates): with a fixed 0.999 the average of a 500-step run would still weigh G's random
    initial weights by 0.999^500 = 0.61 and look like noise.

    ``update()`` after each G step; ``with ema.applied(): ...`` runs G with the averaged weights (and G's own
    BatchNorm statistics) and puts the live weights back; ``state()`` / ``load()`` for checkpoints.
    """

    def __init__(self, G, beta):
        if not 0.0 < beta < 1.0:
            raise SettingError("ema", f"must be in (0, 1), e.g. 0.999 (0 = off), got {beta}")
        self.G, self.beta = G, float(beta)
        self.store = G.flat_store()
        self.params = self.store.data.copy()  # (P,) on G's device, G's dtype
        self.updates = 0

    def decay(self):
        """b_t of the next update: min(beta, (1 + t) / (10 + t))."""
        return min(self.beta, (1.0 + self.updates) / (10.0 + self.updates))

    def update(self):
        """One pass over the flat buffer (a fused kernel on CuPy)."""
        ema_update(self.params, self.store.data, self.decay())
        self.updates += 1

    @contextlib.contextmanager
    def applied(self):
        """Inside the block G has the averaged weights; afterwards its own again (two copies of the buffer)."""
        live = self.store.data.copy()
        self.store.data[...] = self.params
        try:
            yield self.G
        finally:
            self.store.data[...] = live

    def state(self):
        return {KEY: to_numpy(self.params).copy(), UPDATES_KEY: np.asarray(self.updates, dtype=np.int64)}

    def load(self, arrays):
        """Restore from a checkpoint's arrays and return True; a checkpoint without an average (trained
        without --ema) restarts it from G's current weights and returns False. ValueError for another size."""
        if KEY not in arrays:
            self.params[...] = self.store.data
            self.updates = 0
            return False
        value = arrays[KEY]
        if value.shape != tuple(self.params.shape):
            raise ValueError(f"{KEY} has shape {value.shape}, the generator has {tuple(self.params.shape)}")
        self.params[...] = to_device(value, array_module(self.params), self.params.dtype)
        self.updates = int(arrays.get(UPDATES_KEY, 0))
        return True


def use_ema_weights(G, arrays, log=None):
    """Write a checkpoint's averaged weights into G (already loaded with the checkpoint's G/ arrays).

    Returns True when the checkpoint has them (a run with --ema), and says so with ``log``; False otherwise
    (G is left as it is).
    """
    if KEY not in arrays:
        return False
    if log is not None:
        log("using the EMA generator: the checkpoint's moving average of G's weights")
    store = G.flat_store()
    value = arrays[KEY]
    if value.shape != tuple(store.data.shape):
        raise ValueError(f"{KEY} has shape {value.shape}, the generator has {tuple(store.data.shape)}")
    store.data[...] = to_device(value, array_module(store.data), store.data.dtype)
    return True
