"""Batch normalisation over the batch axis (BatchNorm1d), PyTorch semantics.

Forward (train): mean = (1/N) sum_n x,  var = (1/N) sum_n (x - mean)^2          x: (N, D)
                 xhat = (x - mean) / sqrt(var + eps),  y = gamma * xhat + beta
                 running_mean <- (1 - m) running_mean + m mean
                 running_var  <- (1 - m) running_var  + m var N / (N - 1)   (unbiased, as PyTorch)
Forward (eval):  the same with running_mean / running_var in place of the batch statistics.
Backward (train), with dxhat = dy * gamma  (mean and var depend on every x_n):
    dx = inv_std / N * (N dxhat - sum_n dxhat - xhat * sum_n (dxhat * xhat))
Backward (eval): dx = dy * gamma * inv_std.   Both: dgamma = sum_n dy * xhat, dbeta = sum_n dy.
(docs/derivations/batchnorm.md.) The pure functions take ``axes``, the axes reduced over, so
BatchNorm2d reuses them with axes (0, 2, 3) and per-channel parameters shaped (1, C, 1, 1).
"""
from __future__ import annotations

import numpy as np

from ..backend import array_module
from ..fast import replaceable
from ..params import ones, zeros
from .module import Module


@replaceable
def batchnorm_forward(x, gamma, beta, mean, var, eps):
    """y = gamma * (x - mean) / sqrt(var + eps) + beta, with given (batch or running) statistics."""
    xp = array_module(x)
    inv_std = 1.0 / xp.sqrt(var + eps)  # one per feature: (D,) or (1, C, 1, 1)
    xhat = (x - mean) * inv_std  # zero mean, unit variance per feature (for the batch's own stats)
    y = xhat * gamma + beta  # then the layer's own scale and shift, so it can undo the normalisation
    return y, (xhat, gamma, inv_std)


@replaceable
def batchnorm_train_forward(x, gamma, beta, eps, axes=(0,)):
    """The same with the batch's own statistics over ``axes``: mean = E[x], var = E[(x - mean)^2].

    Returns (y, cache, mean, var); the layer needs mean and var for its running estimates.
    """
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)  # biased (divide by N), as PyTorch
    y, cache = batchnorm_forward(x, gamma, beta, mean, var, eps)
    return y, cache, mean, var


@replaceable
def batchnorm_backward_train(dy, cache, axes=(0,)):
    """Backward when mean and var were the batch's own statistics: the full coupled gradient."""
    xhat, gamma, inv_std = cache
    n = int(np.prod([dy.shape[a] for a in axes]))  # values per feature
    # dx = gamma inv_std (dy - mean_n(dy) - xhat mean_n(dy xhat)): the two means are the gradients
    # through the batch mean and the batch variance, and they are dbeta / n and dgamma / n (batchnorm.md)
    dbeta = dy.sum(axis=axes, keepdims=True)  # sum_n dy
    dgamma = (dy * xhat).sum(axis=axes, keepdims=True)  # sum_n dy * xhat
    dx = (dy - dbeta / n - xhat * (dgamma / n)) * (gamma * inv_std)
    return dx, dgamma, dbeta


@replaceable
def batchnorm_backward_eval(dy, cache, axes=(0,)):
    """Backward when mean and var were constants (running statistics): a diagonal Jacobian."""
    xhat, gamma, inv_std = cache
    dbeta = dy.sum(axis=axes, keepdims=True)  # sum_n dy
    dgamma = (dy * xhat).sum(axis=axes, keepdims=True)  # sum_n dy * xhat
    dx = dy * (gamma * inv_std)  # y = gamma inv_std x + const per feature
    return dx, dgamma, dbeta


class _BatchNorm(Module):
    """Shared by BatchNorm1d and BatchNorm2d: they differ only in the axes and the stats' shape."""

    axes = (0,)
    input_rank = 2

    def __init__(self, num_features, eps=1e-5, momentum=0.1, dtype="float32"):
        super().__init__()
        if num_features <= 0:
            raise ValueError(f"{type(self).__name__}: num_features must be positive, got {num_features}")
        self.num_features, self.eps, self.momentum = num_features, float(eps), float(momentum)
        dt = np.dtype(dtype)
        self.register_parameter("gamma", ones((num_features,)).astype(dt))
        self.register_parameter("beta", zeros((num_features,)).astype(dt))
        self.register_buffer("running_mean", zeros((num_features,)).astype(dt))
        self.register_buffer("running_var", ones((num_features,)).astype(dt))

    def _stat_shape(self, x):
        """(D,) for BatchNorm1d; (1, C, 1, 1) for BatchNorm2d: broadcastable against x."""
        return (self.num_features,) if self.input_rank == 2 else (1, self.num_features, 1, 1)

    # the batch statistics' three steps; SyncBatchNorm (sync_batchnorm.py) takes them over a global batch
    def _batch_count(self, x):
        """n, the values per feature that the batch statistics average over."""
        return int(np.prod([x.shape[a] for a in self.axes]))

    def _train_forward(self, x, gamma, beta):
        return batchnorm_train_forward(x, gamma, beta, self.eps, self.axes)

    def _train_backward(self, dy, cache):
        return batchnorm_backward_train(dy, cache, self.axes)

    def forward(self, x):
        if x.ndim != self.input_rank or x.shape[1] != self.num_features:
            expected = "(N, {})".format(self.num_features) if self.input_rank == 2 \
                else "(N, {}, H, W)".format(self.num_features)
            raise ValueError(f"{self!r}: expected input of shape {expected}, got {tuple(x.shape)}")
        self.check_dtype(x, self.gamma.data.dtype)
        shape = self._stat_shape(x)
        gamma, beta = self.gamma.data.reshape(shape), self.beta.data.reshape(shape)
        if self.training:
            n = self._batch_count(x)
            if n < 2:
                raise ValueError(f"{self!r}: train mode needs more than one value per feature to "
                                 f"compute batch statistics, got input {tuple(x.shape)}")
            y, cache, mean, var = self._train_forward(x, gamma, beta)
            # running estimates for eval mode: an exponential moving average with weight m on the batch
            m = self.momentum
            self.running_mean *= 1.0 - m
            self.running_mean += m * mean.reshape(-1)
            self.running_var *= 1.0 - m
            self.running_var += (m * n / (n - 1)) * var.reshape(-1)  # unbiased, for eval
        else:
            y, cache = batchnorm_forward(x, gamma, beta, self.running_mean.reshape(shape),
                                         self.running_var.reshape(shape), self.eps)
        self.cache = (cache, self.training)
        return y

    def backward(self, dy, param_grads=True, need_dx=True):
        cache, was_training = self.pop_cache()
        # the backward of the forward that ran: train mode's couples the batch, eval mode's does not
        if was_training:
            dx, dgamma, dbeta = self._train_backward(dy, cache)  # (a first layer's dx costs one pass: kept)
        else:
            dx, dgamma, dbeta = batchnorm_backward_eval(dy, cache, self.axes)
        if param_grads and self.requires_grad:
            self.gamma.grad += dgamma.reshape(-1)  # (1, C, 1, 1) or (1, D) -> the parameter's (C,)
            self.beta.grad += dbeta.reshape(-1)
        return dx if need_dx else None

    def __repr__(self):
        return f"{type(self).__name__}({self.num_features}, eps={self.eps}, momentum={self.momentum})"


class BatchNorm1d(_BatchNorm):
    """Normalise each of D features over the batch: input (N, D)."""

    axes = (0,)
    input_rank = 2


class BatchNorm2d(_BatchNorm):
    """Normalise each of C channels over the batch and both spatial axes: input (N, C, H, W)."""

    axes = (0, 2, 3)
    input_rank = 4
