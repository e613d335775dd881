"""Synchronised batch normalisation: BatchNorm over a batch split across the ranks of a data-parallel run.

Each of R ranks holds an equal slice of the global batch, so every mean over the batch in BatchNorm is
the average over ranks of the slices' means (docs/derivations/sync_batchnorm.md):
    forward:   mean = avg_r E_r[x],  var = avg_r E_r[(x - mean)^2]     then BatchNorm's normalisation
    backward:  dx = gamma inv_std (dy - avg_r E_r[dy] - xhat avg_r E_r[dy xhat])
``world.mean_over_ranks(*means)`` does the averaging (one all-reduce); with one rank it is the identity
and the layer is BatchNorm. Eval mode uses the running statistics, the same on every rank: BatchNorm's.
As PyTorch's ``SyncBatchNorm`` and ``convert_sync_batchnorm``; the world is a constructor argument,
so this module imports no MPI (scratchgan/run/distributed.py makes the world).
"""
from __future__ import annotations

from .batchnorm import BatchNorm1d, BatchNorm2d, batchnorm_forward


def sync_batchnorm_train_forward(x, gamma, beta, eps, axes, mean_over_ranks):
    """BatchNorm's train forward with the global batch's statistics: each mean over the batch is
    ``mean_over_ranks`` of this slice's. Returns (y, cache, mean, var), as batchnorm_train_forward."""
    mean, = mean_over_ranks(x.mean(axis=axes, keepdims=True))  # E[x] over the global batch
    var, = mean_over_ranks(((x - mean) ** 2).mean(axis=axes, keepdims=True))  # biased, as PyTorch
    y, cache = batchnorm_forward(x, gamma, beta, mean, var, eps)
    return y, cache, mean, var


def sync_batchnorm_backward_train(dy, cache, axes, mean_over_ranks):
    """The coupled backward over the global batch: its two means are averaged over ranks; dgamma and
    dbeta stay this slice's sums (the gradient all-reduce averages them with the rest)."""
    xhat, gamma, inv_std = cache
    n = 1
    for a in axes:
        n *= dy.shape[a]  # values per feature in this slice
    dbeta = dy.sum(axis=axes, keepdims=True)  # sum_n dy
    dgamma = (dy * xhat).sum(axis=axes, keepdims=True)  # sum_n dy * xhat
    mean_dy, mean_dy_xhat = mean_over_ranks(dbeta / n, dgamma / n)  # the global batch's E[dy], E[dy xhat]
    dx = (dy - mean_dy - xhat * mean_dy_xhat) * (gamma * inv_std)
    return dx, dgamma, dbeta


class _SyncBatchNorm:
    """What SyncBatchNorm1d and SyncBatchNorm2d add to BatchNorm: the world, and its statistics."""

    def __init__(self, num_features, world, eps=1e-5, momentum=0.1, dtype="float32"):
        super().__init__(num_features, eps=eps, momentum=momentum, dtype=dtype)
        self.world = world  # .mean_over_ranks(*arrays) and .size

    def _batch_count(self, x):
        return super()._batch_count(x) * self.world.size  # values per feature in the global batch

    def _train_forward(self, x, gamma, beta):
        return sync_batchnorm_train_forward(x, gamma, beta, self.eps, self.axes, self.world.mean_over_ranks)

    def _train_backward(self, dy, cache):
        return sync_batchnorm_backward_train(dy, cache, self.axes, self.world.mean_over_ranks)

    def __repr__(self):
        return f"{super().__repr__()[:-1]}, ranks={self.world.size})"


class SyncBatchNorm1d(_SyncBatchNorm, BatchNorm1d):
    """BatchNorm1d over the global batch of a data-parallel run: input (N / R, D) on each of R ranks."""


class SyncBatchNorm2d(_SyncBatchNorm, BatchNorm2d):
    """BatchNorm2d over the global batch of a data-parallel run: input (N / R, C, H, W) on each rank."""


_SYNCED = {BatchNorm1d: SyncBatchNorm1d, BatchNorm2d: SyncBatchNorm2d}


def convert_sync_batchnorm(model, world):
    """Replace every BatchNorm1d/2d inside ``model`` (in place) by its SyncBatchNorm on ``world``, keeping
    its parameters (the same Parameter objects: views into the flat store) and buffers; returns ``model``,
    or the new layer when ``model`` is itself a BatchNorm."""
    if type(model) in _SYNCED:
        return _synced(model, world)
    for parent in list(model.modules()):
        for name, child in list(vars(parent).items()):  # children are attributes (a SpectralNorm's layer) ...
            if type(child) in _SYNCED:
                setattr(parent, name, _synced(child, world))
            elif isinstance(child, list):  # ... or in a list of them (Sequential.layers)
                child[:] = [_synced(c, world) if type(c) in _SYNCED else c for c in child]
    return model


def _synced(layer, world):
    """The SyncBatchNorm of ``layer``: its own state (parameters, buffers, mode), and the world."""
    sync = _SYNCED[type(layer)].__new__(_SYNCED[type(layer)])
    sync.__dict__.update(vars(layer))
    sync.world = world
    return sync
