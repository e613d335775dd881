"""Pooling: MaxPool2d, AvgPool2d (floor mode, as PyTorch) and GlobalAvgPool2d.

x: (N, C, H, W) -> y: (N, C, H_out, W_out), H_out = floor((H + 2 pH - kH) / sH) + 1 (and W alike).
Window (h, w) covers padded rows sH*h + i, columns sW*w + j, for kernel offsets 0 <= i < kH, 0 <= j < kW.
  MaxPool2d  forward:  y = max over the window of x padded with -inf;  backward: dy to the window's
             first cell equal to y (its argmax; of equal maxima the first, as PyTorch on the CPU)
  AvgPool2d  forward:  y = sum over the window of x padded with 0, / count;  backward: dy / count to each pixel
  GlobalAvgPool2d  (N, C, H, W) -> (N, C): y = mean over H, W;  backward: dx = dy / (H W), broadcast
Each pass is a loop over kernel offsets, each one strided slice over the whole batch: no loop over
pixels, no patch copy (im2col would make kH*kW copies of x). The forwards reduce along the windows'
rows, then down their columns (kW + kH slices); the backwards add into one slice per offset (kH*kW).
                                                                              (docs/derivations/pooling.md)
"""
from __future__ import annotations

from ..backend import array_module
from .conv import _pair, conv_output_size
from .module import Module


# ---------------------------------------------------------------------------- helpers

def _offsets(kernel_size, stride, out_size):
    """(i, j, the padded input's slice seen through kernel offset (i, j)) for every offset, row by row.

    Offset (i, j) of every window: H_out rows from row i, sH apart (the stop is the last row + 1: rows
    after it belong to no window when (H + 2p - k) % s != 0); the same for columns.
    """
    (kH, kW), (sH, sW), (H_out, W_out) = kernel_size, stride, out_size
    for i in range(kH):
        for j in range(kW):
            yield i, j, (slice(None), slice(None), slice(i, i + sH * (H_out - 1) + 1, sH),
                         slice(j, j + sW * (W_out - 1) + 1, sW))


def _reduce_windows(ufunc, x_pad, kernel_size, stride, out_size):
    """``ufunc`` (xp.maximum or xp.add) over every window: (N, C, Hp, Wp) -> (N, C, H_out, W_out).

    A window's max (sum) is the max (sum) of its kH rows' maxima (sums): first along the rows, one strided
    slice per column offset j, then down the columns, one per row offset i: kW + kH whole-array passes
    where one pass per offset would take kH*kW.
    """
    xp = array_module(x_pad)
    (kH, kW), (sH, sW), (H_out, W_out) = kernel_size, stride, out_size
    N, C, Hp, _ = x_pad.shape
    chl = _channels_last(x_pad)
    rows = _empty(xp, (N, C, Hp, W_out), x_pad.dtype, chl)  # rows[.., r, w] = ufunc over j of x_pad[.., r, sW*w + j]
    _fold(ufunc, [x_pad[:, :, :, j:j + sW * (W_out - 1) + 1:sW] for j in range(kW)], rows)
    y = _empty(xp, (N, C, H_out, W_out), x_pad.dtype, chl)  # y[.., h, w] = ufunc over i of rows[.., sH*h + i, w]
    _fold(ufunc, [rows[:, :, i:i + sH * (H_out - 1) + 1:sH, :] for i in range(kH)], y)
    return y


def _fold(ufunc, parts, out):
    """out = ufunc(...ufunc(ufunc(parts[0], parts[1]), parts[2])..., parts[-1]), written in place into ``out``."""
    if len(parts) == 1:
        out[...] = parts[0]
        return
    ufunc(parts[0], parts[1], out=out)
    for part in parts[2:]:
        ufunc(out, part, out=out)


def _channels_last(a):
    """True when a (N, C, H, W) array is channels-last in memory (as the convolutions' outputs are)."""
    return a.transpose(0, 2, 3, 1).flags.c_contiguous


def _empty(xp, shape, dtype, like_channels_last):
    """A new (N, C, H, W) array laid out as its input: channels-last stays channels-last (no copies later)."""
    if like_channels_last:
        N, C, H, W = shape
        return xp.empty((N, H, W, C), dtype=dtype).transpose(0, 3, 1, 2)
    return xp.empty(shape, dtype=dtype)


def _pad(x, padding, value):
    """x padded by (pH, pW) on both sides of H and W with ``value``; x itself when there is no padding."""
    pH, pW = padding
    if pH == 0 and pW == 0:
        return x
    xp = array_module(x)
    N, C, H, W = x.shape
    x_pad = _empty(xp, (N, C, H + 2 * pH, W + 2 * pW), x.dtype, _channels_last(x))
    x_pad[:, :, pH:pH + H, pW:pW + W] = x
    x_pad[:, :, :pH] = x_pad[:, :, pH + H:] = value  # the border only: the inside is written once, by x
    x_pad[:, :, :, :pW] = x_pad[:, :, :, pW + W:] = value
    return x_pad


def _check_window(name, x, kernel_size, padding):
    if x.ndim != 4:
        raise ValueError(f"{name}: expected input of shape (N, C, H, W), got {tuple(x.shape)}")
    (kH, kW), (pH, pW) = kernel_size, padding
    if x.shape[2] + 2 * pH < kH or x.shape[3] + 2 * pW < kW:
        raise ValueError(f"{name}: input {tuple(x.shape)} padded to ({x.shape[2] + 2 * pH}, "
                         f"{x.shape[3] + 2 * pW}) is smaller than the kernel ({kH}, {kW})")


# ---------------------------------------------------------------------------- MaxPool2d

def maxpool2d_forward(x, kernel_size, stride, padding):
    """y[n, c, h, w] = max_{i, j} x_pad[n, c, sH*h + i, sW*w + j], x padded with -inf.

    x: (N, C, H, W) -> y: (N, C, H_out, W_out): the maximum along each window's rows, then down its
    columns. A NaN in a window makes y NaN, as in PyTorch. The cache is x_pad (x itself without padding:
    no copy) and y: the winners are the cells equal to y, which backward finds.
    """
    xp = array_module(x)
    N, C, H, W = x.shape
    H_out, W_out = conv_output_size((H, W), kernel_size, stride, padding)
    x_pad = _pad(x, padding, float("-inf"))
    y = _reduce_windows(xp.maximum, x_pad, kernel_size, stride, (H_out, W_out))  # NaN propagates
    return y, (x_pad, y, x.shape, kernel_size, stride, padding)


def maxpool2d_backward(dy, cache):
    """dx_pad[n, c, sH*h + i, sW*w + j] += dy[n, c, h, w] at each window's winner only; crop the padding.

    dy: (N, C, H_out, W_out) -> dx: (N, C, H, W). The winner is the first cell of the window, row by
    row, that equals y (of equal maxima the first, as PyTorch on the CPU; in a window with a NaN, its
    first NaN). Windows overlap when stride < kernel: a pixel that wins several gets the sum of their dy.
    """
    x_pad, y, x_shape, kernel_size, stride, padding = cache
    xp = array_module(dy)
    N, C, H, W = x_shape
    pH, pW = padding
    dx_pad = xp.zeros((N, C, H + 2 * pH, W + 2 * pW), dtype=dy.dtype)
    y_nan = xp.isnan(y)
    unrouted = xp.ones(y.shape, dtype=xp.bool_)  # windows whose winner is not found yet
    for i, j, window in _offsets(kernel_size, stride, y.shape[2:]):
        v = x_pad[window]  # (N, C, H_out, W_out): offset (i, j) of every window
        wins = unrouted & ((v == y) | (y_nan & xp.isnan(v)))  # the first cell equal to the max
        unrouted &= ~wins
        dx_pad[window] += dy * wins  # bool times float keeps the float dtype
    return dx_pad[:, :, pH:pH + H, pW:pW + W]


# ---------------------------------------------------------------------------- AvgPool2d

def avgpool2d_count(x_size, kernel_size, stride, padding, count_include_pad, xp, dtype):
    """The divisor of each window, (H_out, W_out): kH*kW with count_include_pad, else its in-bounds cells.

    In floor mode a window never leaves the padded input, so PyTorch's count_include_pad divisor is
    kH*kW everywhere. Without the padding, a window's in-bounds cells are (rows in bounds) * (columns
    in bounds): an outer product of two small vectors.
    """
    H_out, W_out = conv_output_size(x_size, kernel_size, stride, padding)
    if count_include_pad:
        return xp.full((H_out, W_out), float(kernel_size[0] * kernel_size[1]), dtype=dtype)
    inside = []
    for n, k, s, p, n_out in zip(x_size, kernel_size, stride, padding, (H_out, W_out)):
        start = xp.arange(n_out) * s - p  # the window's first input row (or column), maybe < 0
        inside.append(xp.minimum(start + k, n) - xp.maximum(start, 0))  # rows in [0, n) of [start, start + k)
    return (inside[0][:, None] * inside[1][None, :]).astype(dtype)  # (H_out, 1) * (1, W_out)


def avgpool2d_forward(x, kernel_size, stride, padding, count_include_pad=True):
    """y[n, c, h, w] = sum_{i, j} x_pad[n, c, sH*h + i, sW*w + j] / count[h, w], x padded with 0.

    x: (N, C, H, W) -> y: (N, C, H_out, W_out); count from avgpool2d_count.
    """
    xp = array_module(x)
    N, C, H, W = x.shape
    H_out, W_out = conv_output_size((H, W), kernel_size, stride, padding)
    count = avgpool2d_count((H, W), kernel_size, stride, padding, count_include_pad, xp, x.dtype)
    x_pad = _pad(x, padding, 0.0)
    y = _reduce_windows(xp.add, x_pad, kernel_size, stride, (H_out, W_out))  # each window's sum
    y /= count  # (N, C, H_out, W_out) / (H_out, W_out)
    return y, (count, x.shape, kernel_size, stride, padding)


def avgpool2d_backward(dy, cache):
    """dx_pad[n, c, sH*h + i, sW*w + j] += dy[n, c, h, w] / count[h, w] for every offset (i, j); crop.

    dy: (N, C, H_out, W_out) -> dx: (N, C, H, W).
    """
    count, x_shape, kernel_size, stride, padding = cache
    xp = array_module(dy)
    N, C, H, W = x_shape
    pH, pW = padding
    dy_mean = dy / count  # (N, C, H_out, W_out): each window's share per cell; a new array, dy untouched
    dx_pad = xp.zeros((N, C, H + 2 * pH, W + 2 * pW), dtype=dy.dtype)
    for i, j, window in _offsets(kernel_size, stride, dy.shape[2:]):
        dx_pad[window] += dy_mean
    return dx_pad[:, :, pH:pH + H, pW:pW + W]


# ---------------------------------------------------------------------------- GlobalAvgPool2d

def global_avgpool2d_forward(x):
    """y[n, c] = mean_{h, w} x[n, c, h, w].  x: (N, C, H, W) -> y: (N, C)."""
    return x.mean(axis=(2, 3)), x.shape


def global_avgpool2d_backward(dy, x_shape):
    """dx[n, c, h, w] = dy[n, c] / (H W).  dy: (N, C) -> dx: (N, C, H, W)."""
    xp = array_module(dy)
    H, W = x_shape[2:]
    dx = xp.empty(x_shape, dtype=dy.dtype)
    dx[...] = (dy * (1.0 / (H * W)))[:, :, None, None]  # broadcast over H, W; a Python float keeps float32
    return dx


# ---------------------------------------------------------------------------- layers
# No parameters: ``param_grads`` has nothing to skip, ``need_dx=False`` skips the whole backward.

class _Pool2d(Module):
    """What MaxPool2d and AvgPool2d share: kernel_size, stride (default: the kernel) and padding."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        name = type(self).__name__
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        if min(self.kernel_size) <= 0 or min(self.stride) <= 0 or min(self.padding) < 0:
            raise ValueError(f"{name}: kernel_size and stride must be positive and padding non-negative, "
                             f"got kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}")
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(f"{name}: padding must be at most half the kernel size (as PyTorch), "
                             f"got kernel_size={self.kernel_size}, padding={self.padding}")

    def _check_input(self, x):
        _check_window(repr(self), x, self.kernel_size, self.padding)

    def __repr__(self):
        return (f"{type(self).__name__}(kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding})")


class MaxPool2d(_Pool2d):
    """``MaxPool2d(kernel_size, stride=None, padding=0)``: the max of each window, padding with -inf."""

    def forward(self, x):
        self._check_input(x)
        y, self.cache = maxpool2d_forward(x, self.kernel_size, self.stride, self.padding)
        return y

    def backward(self, dy, param_grads=True, need_dx=True):
        cache = self.pop_cache()
        return maxpool2d_backward(dy, cache) if need_dx else None


class AvgPool2d(_Pool2d):
    """``AvgPool2d(kernel_size, stride=None, padding=0, count_include_pad=True)``: the mean of each window."""

    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad=True):
        super().__init__(kernel_size, stride, padding)
        self.count_include_pad = bool(count_include_pad)

    def forward(self, x):
        self._check_input(x)
        y, self.cache = avgpool2d_forward(x, self.kernel_size, self.stride, self.padding, self.count_include_pad)
        return y

    def backward(self, dy, param_grads=True, need_dx=True):
        cache = self.pop_cache()
        return avgpool2d_backward(dy, cache) if need_dx else None

    def __repr__(self):
        return super().__repr__()[:-1] + f", count_include_pad={self.count_include_pad})"


class GlobalAvgPool2d(Module):
    """``GlobalAvgPool2d()``: (N, C, H, W) -> (N, C), the mean over H and W."""

    def forward(self, x):
        if x.ndim != 4:
            raise ValueError(f"{self!r}: expected input of shape (N, C, H, W), got {tuple(x.shape)}")
        y, self.cache = global_avgpool2d_forward(x)
        return y

    def backward(self, dy, param_grads=True, need_dx=True):
        x_shape = self.pop_cache()
        return global_avgpool2d_backward(dy, x_shape) if need_dx else None
