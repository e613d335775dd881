"""Conv2d and ConvTranspose2d via im2col: each convolution is one matrix product.

Conv2d  x: (N, C_in, H, W), W: (C_out, C_in, kH, kW) as W_mat (C_out, K), K = kH*kW*C_in, M = N*H_out*W_out
  forward:  cols = im2col(x) (M, K),  y = cols @ W_mat.T + b (M, C_out), viewed as (N, C_out, H_out, W_out)
  backward: dW_mat = dy_mat.T @ cols,  db = sum_{n,h,w} dy,  dx = col2im(dy_mat @ W_mat)  (col2im = im2col^T)
ConvTranspose2d  W: (C_in, C_out, kH, kW) = a Conv2d C_out -> C_in (W_mat (C_in, K)) with the passes swapped:
  forward:  y = col2im(x_mat @ W_mat) + b;   backward: dx = im2col(dy) @ W_mat.T,  dW_mat = x_mat.T @ im2col(dy)
Columns are ordered (i, j, c): kernel row, kernel column, channel fastest.      (docs/derivations/conv.md)
"""
from __future__ import annotations

import numpy as np

from ..backend import array_module
from ..replace import replaceable
from ..params import linear_default, make_rng
from .module import Module


# ---------------------------------------------------------------------------- layout helpers

def _pair(value, name):
    """An int or an (h, w) pair of ints -> (h, w)."""
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    try:
        h, w = value
        if not all(isinstance(v, (int, np.integer)) for v in (h, w)):
            raise TypeError
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or a pair of ints (h, w), got {value!r}") from None
    return int(h), int(w)


def conv_output_size(size, kernel_size, stride, padding):
    """(H_out, W_out) of a convolution: floor((H + 2p - k) / s) + 1 on each axis, as PyTorch."""
    return tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(size, kernel_size, stride, padding))


def conv_transpose_output_size(size, kernel_size, stride, padding, output_padding):
    """(H_out, W_out) of a transposed convolution: (H - 1) s - 2 p + k + output_padding, as PyTorch."""
    return tuple((n - 1) * s - 2 * p + k + op
                 for n, k, s, p, op in zip(size, kernel_size, stride, padding, output_padding))


@replaceable  # fast: fast/cpu.py (CPU)
def channels_last(a, pad=(0, 0)):
    """(N, C, H, W) -> (N, H + 2 pH, W + 2 pW, C), C-contiguous, zero-padded by ``pad``: a copy, or a
    view when a is channels-last in memory already and there is no padding.

    Channels last, so that one pixel's C values are adjacent: im2col's rows and the matmuls' rows.
    """
    xp = array_module(a)
    N, C, H, W = a.shape
    pH, pW = pad
    if pH == 0 and pW == 0 and a.transpose(0, 2, 3, 1).flags.c_contiguous:
        return a.transpose(0, 2, 3, 1)
    out = xp.zeros((N, H + 2 * pH, W + 2 * pW, C), dtype=a.dtype)  # the border stays 0: the padding
    out[:, pH:pH + H, pW:pW + W, :] = a.transpose(0, 2, 3, 1)
    return out


def _rows(a):
    """(N, C, H, W) -> (N*H*W, C), C-contiguous: one row per pixel (a view if a is channels-last)."""
    N, C, H, W = a.shape
    return channels_last(a).reshape(N * H * W, C)


def _from_rows(a_mat, N, H, W):
    """(N*H*W, C) -> (N, C, H, W): a view, no copy (the memory stays channels-last)."""
    return a_mat.reshape(N, H, W, -1).transpose(0, 3, 1, 2)


def _weight_matrix(W):
    """Conv2d weight (C_out, C_in, kH, kW) -> W_mat (C_out, kH*kW*C_in), columns in im2col's (i, j, c) order."""
    C_out, C_in, kH, kW = W.shape
    return W.transpose(0, 2, 3, 1).reshape(C_out, kH * kW * C_in)  # a small copy, C-contiguous


def _weight_grad(dW_mat, W_shape):
    """The inverse of _weight_matrix: dW_mat (C_out, kH*kW*C_in) -> dW (C_out, C_in, kH, kW), a view."""
    C_out, C_in, kH, kW = W_shape
    return dW_mat.reshape(C_out, kH, kW, C_in).transpose(0, 3, 1, 2)


# ---------------------------------------------------------------------------- im2col / col2im

@replaceable  # fast: fast/cpu.py (CPU), fast/conv_kernels.py (CuPy)
def im2col(x, kernel_size, stride, padding):
    """Every kH x kW patch of the zero-padded x as a row: (N, C, H, W) -> cols (N*H_out*W_out, kH*kW*C).

    cols[(n, h, w), (i, j, c)] = x_pad[n, c, sH*h + i, sW*w + j]: output pixel (h, w) sees padded
    input pixel (sH*h + i, sW*w + j) through kernel offset (i, j).
    """
    xp = array_module(x)
    N, C, H, W = x.shape
    (kH, kW), (sH, sW), (pH, pW) = kernel_size, stride, padding
    H_out, W_out = conv_output_size((H, W), kernel_size, stride, padding)
    x_pad = channels_last(x, (pH, pW))  # (N, H + 2 pH, W + 2 pW, C)
    # All patches as one read-only view, no copy: windows[n, h, w, i, j] = x_pad[n, sH*h + i, sW*w + j],
    # i.e. a step of sH rows per output row and of one row per kernel row (strides in bytes).
    # For one offset (i, j), windows[:, :, :, i, j] is the strided slice
    # x_pad[:, i:i + sH*(H_out - 1) + 1:sH, j:j + sW*(W_out - 1) + 1:sW] that col2im adds into.
    bN, bH, bW, bC = x_pad.strides
    windows = xp.lib.stride_tricks.as_strided(
        x_pad, shape=(N, H_out, W_out, kH, kW, C), strides=(bN, sH * bH, sW * bW, bH, bW, bC))
    cols = xp.ascontiguousarray(windows)  # the one copy: (N, H_out, W_out, kH, kW, C) in row order
    return cols.reshape(N * H_out * W_out, kH * kW * C)


@replaceable  # fast: fast/cpu.py (CPU), fast/conv_kernels.py (CuPy)
def col2im(cols, x_shape, kernel_size, stride, padding):
    """The adjoint of im2col: scatter-add each row back onto its patch; cols -> x of shape x_shape.

    <im2col(x), cols> == <x, col2im(cols)> for all x, cols. Pixels in several patches get the sum.
    """
    xp = array_module(cols)
    N, C, H, W = x_shape
    (kH, kW), (sH, sW), (pH, pW) = kernel_size, stride, padding
    H_out, W_out = conv_output_size((H, W), kernel_size, stride, padding)
    cols = cols.reshape(N, H_out, W_out, kH, kW, C)
    x_pad = xp.zeros((N, H + 2 * pH, W + 2 * pW, C), dtype=cols.dtype)
    for i in range(kH):
        for j in range(kW):
            # offset (i, j) of every patch: H_out rows from row i, sH apart (the stop is the last row
            # + 1, not the end: rows after it belong to no patch when (H + 2p - k) % s != 0)
            x_pad[:, i:i + sH * (H_out - 1) + 1:sH, j:j + sW * (W_out - 1) + 1:sW, :] += cols[:, :, :, i, j, :]
    return x_pad[:, pH:pH + H, pW:pW + W, :].transpose(0, 3, 1, 2)  # drop the padding; (N, C, H, W) view


# ---------------------------------------------------------------------------- the two data passes
# A convolution is linear in its input: conv2d_data is that linear map, conv2d_data_adjoint its
# transpose. Conv2d: forward = data, backward-data = adjoint. ConvTranspose2d: the other way round.

def conv2d_data(x, W_mat, kernel_size, stride, padding):
    """x -> (y_mat, cols) with y_mat = im2col(x) @ W_mat.T: one row per output pixel, no bias."""
    cols = im2col(x, kernel_size, stride, padding)
    y_mat = cols @ W_mat.T  # (N*H_out*W_out, kH*kW*C_in) @ (kH*kW*C_in, C_out) -> (N*H_out*W_out, C_out)
    return y_mat, cols


def conv2d_data_adjoint(dy_mat, W_mat, x_shape, kernel_size, stride, padding):
    """dy_mat -> dx = col2im(dy_mat @ W_mat): the transpose of conv2d_data (Conv2d's backward-data)."""
    dcols = dy_mat @ W_mat  # (N*H_out*W_out, C_out) @ (C_out, kH*kW*C_in) -> (N*H_out*W_out, kH*kW*C_in)
    return col2im(dcols, x_shape, kernel_size, stride, padding)


# ---------------------------------------------------------------------------- Conv2d

def conv2d_forward(x, W, b, stride, padding):
    """y = im2col(x) @ W_mat.T + b.  x: (N, C_in, H, W), W: (C_out, C_in, kH, kW), b: (C_out,) or None."""
    N, _, H, W_in = x.shape
    kernel_size = W.shape[2:]
    H_out, W_out = conv_output_size((H, W_in), kernel_size, stride, padding)
    W_mat = _weight_matrix(W)  # (C_out, K)
    y_mat, cols = conv2d_data(x, W_mat, kernel_size, stride, padding)  # (N*H_out*W_out, C_out)
    if b is not None:
        y_mat += b  # in place, along the contiguous last axis
    y = _from_rows(y_mat, N, H_out, W_out)  # (N, C_out, H_out, W_out), a view
    return y, (cols, W_mat, W.shape, x.shape, stride, padding)


def conv2d_backward(dy, cache, need_dx=True, need_dW=True):
    """dW_mat = dy_mat.T @ cols, db = sum of dy over (N, H_out, W_out), dx = col2im(dy_mat @ W_mat).

    ``need_dx`` / ``need_dW`` False skip dx / (dW, db), returned as None.
    """
    cols, W_mat, W_shape, x_shape, stride, padding = cache
    dy_mat = _rows(dy)  # (N*H_out*W_out, C_out); reads dy, never writes it
    dx = dW = db = None
    if need_dW:
        dW_mat = dy_mat.T @ cols  # (C_out, N*H_out*W_out) @ (N*H_out*W_out, K) -> (C_out, K)
        dW = _weight_grad(dW_mat, W_shape)  # (C_out, C_in, kH, kW), a view
        db = dy_mat.sum(axis=0)  # (C_out,)
    if need_dx:
        dx = conv2d_data_adjoint(dy_mat, W_mat, x_shape, W_shape[2:], stride, padding)
    return dx, dW, db


# ---------------------------------------------------------------------------- ConvTranspose2d
# W (C_in, C_out, kH, kW) is read as the weight of a Conv2d from C_out to C_in channels (PyTorch's
# layout is exactly that), so _weight_matrix(W) is that conv's W_mat: (C_in, K), K = kH*kW*C_out.

@replaceable  # fast: fast/subpixel.py (CPU and CuPy; inactive: replace.INACTIVE says why)
def conv_transpose2d_forward(x, W, b, stride, padding, output_padding):
    """y = col2im(x_mat @ W_mat) + b, Conv2d's backward-data.  x: (N, C_in, H, W) -> (N, C_out, H_out, W_out)."""
    N, _, H, W_in = x.shape
    _, C_out, kH, kW = W.shape
    H_out, W_out = conv_transpose_output_size((H, W_in), (kH, kW), stride, padding, output_padding)
    W_mat = _weight_matrix(W)  # (C_in, K)
    x_mat = _rows(x)  # (N*H*W, C_in): x in the role of Conv2d's dy_mat
    y = conv2d_data_adjoint(x_mat, W_mat, (N, C_out, H_out, W_out), (kH, kW), stride, padding)
    if b is not None:
        y += b.reshape(C_out, 1, 1)
    return y, (x_mat, W_mat, W.shape, x.shape, stride, padding)


def conv_transpose2d_backward(dy, cache, need_dx=True, need_dW=True):
    """dx = im2col(dy) @ W_mat.T (Conv2d's forward), dW_mat = x_mat.T @ im2col(dy), db = sum of dy.

    ``need_dx`` / ``need_dW`` False skip dx / (dW, db), returned as None.
    """
    x_mat, W_mat, W_shape, x_shape, stride, padding = cache
    N, _, H, W_in = x_shape
    dx = dW = db = None
    if need_dx:  # Conv2d's forward, with dy in the role of x
        dx_mat, dy_cols = conv2d_data(dy, W_mat, W_shape[2:], stride, padding)  # (N*H*W, C_in), (N*H*W, K)
        dx = _from_rows(dx_mat, N, H, W_in)  # (N, C_in, H, W), a view
    elif need_dW:
        dy_cols = im2col(dy, W_shape[2:], stride, padding)  # (N*H*W, K)
    if need_dW:
        dW_mat = x_mat.T @ dy_cols  # (C_in, N*H*W) @ (N*H*W, K) -> (C_in, K): Conv2d's dy_mat.T @ cols
        dW = _weight_grad(dW_mat, W_shape)  # (C_in, C_out, kH, kW), a view
        db = dy.sum(axis=(0, 2, 3))  # (C_out,)
    return dx, dW, db


# ---------------------------------------------------------------------------- layers

class _ConvNd(Module):
    """What Conv2d and ConvTranspose2d share: argument checks, parameters, input checks."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, bias, seed, dtype, transposed):
        super().__init__()
        name = type(self).__name__
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride, self.padding = _pair(stride, "stride"), _pair(padding, "padding")
        if int(in_channels) <= 0 or int(out_channels) <= 0:
            raise ValueError(f"{name}: channel counts must be positive, got ({in_channels}, {out_channels})")
        if min(self.kernel_size) <= 0 or min(self.stride) <= 0 or min(self.padding) < 0:
            raise ValueError(f"{name}: kernel_size and stride must be positive and padding non-negative, "
                             f"got kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}")
        self.in_channels, self.out_channels, self.has_bias = int(in_channels), int(out_channels), bias
        kH, kW = self.kernel_size
        if transposed:
            weight_shape = (self.in_channels, self.out_channels, kH, kW)
        else:
            weight_shape = (self.out_channels, self.in_channels, kH, kW)
        # kaiming_uniform(a=sqrt(5)) as torch: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias, with
        # fan_in = weight.shape[1] * kH * kW as torch computes it (C_in for Conv2d, C_out for ConvTranspose2d)
        fan_in = weight_shape[1] * kH * kW
        rng = make_rng(seed)
        dt = np.dtype(dtype)
        self.register_parameter("W", linear_default(weight_shape, rng, fan_in).astype(dt))
        if bias:
            self.register_parameter("b", linear_default((self.out_channels,), rng, fan_in).astype(dt))

    def _check_input(self, x):
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{self!r}: expected input of shape (N, {self.in_channels}, H, W), "
                             f"got {tuple(x.shape)}")
        self.check_dtype(x, self.W.data.dtype)

    def _bias(self):
        return self.b.data if self.has_bias else None

    def _add_grads(self, dW, db):
        """The += of every layer: this backward's dW, db added to what earlier ones left in p.grad."""
        self.W.grad += dW
        if self.has_bias:
            self.b.grad += db


class Conv2d(_ConvNd):
    """``Conv2d(C_in, C_out, kernel_size, stride=1, padding=0)``: W (C_out, C_in, kH, kW), b (C_out,)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 seed=None, dtype="float32"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, bias, seed, dtype,
                         transposed=False)

    def forward(self, x):
        self._check_input(x)
        (kH, kW), (pH, pW) = self.kernel_size, self.padding
        if x.shape[2] + 2 * pH < kH or x.shape[3] + 2 * pW < kW:
            raise ValueError(f"{self!r}: input {tuple(x.shape)} padded to ({x.shape[2] + 2 * pH}, "
                             f"{x.shape[3] + 2 * pW}) is smaller than the kernel ({kH}, {kW})")
        y, self.cache = conv2d_forward(x, self.W.data, self._bias(), self.stride, self.padding)
        return y

    def backward(self, dy, param_grads=True, need_dx=True):
        param_grads = param_grads and self.requires_grad
        dx, dW, db = conv2d_backward(dy, self.pop_cache(), need_dx=need_dx, need_dW=param_grads)
        if param_grads:
            self._add_grads(dW, db)
        return dx

    def __repr__(self):
        return (f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}{'' if self.has_bias else ', bias=False'})")


class ConvTranspose2d(_ConvNd):
    """``ConvTranspose2d(C_in, C_out, kernel_size, stride=1, padding=0, output_padding=0)``:
    W (C_in, C_out, kH, kW), b (C_out,); the adjoint of Conv2d(C_out, C_in, ...) plus a bias."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0,
                 bias=True, seed=None, dtype="float32"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, bias, seed, dtype,
                         transposed=True)
        self.output_padding = _pair(output_padding, "output_padding")
        if any(op < 0 or op >= s for op, s in zip(self.output_padding, self.stride)):
            raise ValueError(f"ConvTranspose2d: output_padding must be non-negative and smaller than stride "
                             f"(as PyTorch), got output_padding={self.output_padding}, stride={self.stride}")

    def forward(self, x):
        self._check_input(x)
        H_out, W_out = conv_transpose_output_size(x.shape[2:], self.kernel_size, self.stride,
                                                  self.padding, self.output_padding)
        if H_out <= 0 or W_out <= 0:
            raise ValueError(f"{self!r}: input {tuple(x.shape)} gives an empty output ({H_out}, {W_out}); "
                             f"the padding is too large for this input and kernel")
        y, self.cache = conv_transpose2d_forward(x, self.W.data, self._bias(), self.stride, self.padding,
                                                 self.output_padding)
        return y

    def backward(self, dy, param_grads=True, need_dx=True):
        param_grads = param_grads and self.requires_grad
        dx, dW, db = conv_transpose2d_backward(dy, self.pop_cache(), need_dx=need_dx, need_dW=param_grads)
        if param_grads:
            self._add_grads(dW, db)
        return dx

    def __repr__(self):
        extra = f", output_padding={self.output_padding}" if any(self.output_padding) else ""
        return (f"ConvTranspose2d({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}{extra}{'' if self.has_bias else ', bias=False'})")
