"""NumPy fast paths: the reference functions rewritten for the CPU, each named after the one it replaces.

Three tricks, measured in benchmarks/RESULTS.md:
- **In place, fewer passes.** On the CPU an elementwise NumPy line is a pass of the whole array
  through memory, and a new array costs an allocation; the forms here write into one output with
  ``out=`` and reuse what they computed (x - mean once, not twice), or use a cheaper equivalent
  (``max(x, slope x)`` for LeakyReLU: 7x faster than ``where``, the same bits).
- **The cores.** NumPy's ufuncs and copies release the GIL, so an elementwise update or a copy split
  into contiguous parts runs on all cores: Adam, im2col, col2im, the channels-last copies. Each
  part is the same arithmetic on a slice, so the result is the one-thread result bit for bit.
- **einsum sums.** ``einsum('nd,nd->d', a, b)`` sums a * b in one pass without an (N, D)
  temporary: 2-3x faster than ``(a * b).sum(axis)`` for BatchNorm's statistics, in another order of
  summation (so "close", not "bitwise").
Each function here takes and returns what its reference takes and returns (``@replaces`` names
it; ``scratchgan.replace.TABLE`` lists them all). tests/fast/test_fast_paths.py checks each against it.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..backend import cpu_threads  # the one count of usable cores (tests patch it here)
from ..nn import activations as _activations  # the references, for the cases a fast form does not cover
from ..replace import replaces
from . import blas

# ------------------------------------------------------------------------------------ the cores

# Below this many elements of work a part is too small to pay for handing it to a thread (~20 us).
PARALLEL_MIN_ELEMENTS = 1 << 20
_pool, _pool_workers = None, 0  # the worker threads, started on first use and kept (a thread start costs ~0.1 ms)


def run_in_parts(task, n, elements, threads=None):
    """Run ``task(start, stop)`` over [0, n) in one contiguous part per thread; the caller takes the first.

    ``elements`` is the size of the work: below PARALLEL_MIN_ELEMENTS, or with one thread, it is
    simply ``task(0, n)``. The parts must not overlap in what they write; an error in any part is
    raised here.
    """
    global _pool, _pool_workers
    threads = min(threads or cpu_threads(), n)
    if threads < 2 or elements < PARALLEL_MIN_ELEMENTS:
        task(0, n)
        return
    if _pool_workers < threads - 1:  # first use, or more threads asked for than the pool has
        if _pool is not None:
            _pool.shutdown(wait=False)
        _pool, _pool_workers = ThreadPoolExecutor(threads - 1, thread_name_prefix="scratchgan-fast"), threads - 1
    bounds = [n * i // threads for i in range(threads + 1)]
    others = [_pool.submit(task, bounds[i], bounds[i + 1]) for i in range(1, threads)]
    try:
        task(bounds[0], bounds[1])
    finally:
        errors = [future.exception() for future in others]  # waits for every part
    for error in errors:
        if error is not None:
            raise error


def _in_parts(update, arrays, *args):
    """update(*(a[part] for a in arrays), *args) over contiguous parts of equally long flat arrays
    (None entries stay None): an elementwise update split over the cores."""
    n = arrays[0].size
    used = [a for a in arrays if a is not None]

    def task(start, stop):
        update(*(None if a is None else a[start:stop] for a in arrays), *args)
    run_in_parts(task, n, elements=n * len(used))


# ------------------------------------------------------------------------------------ Linear

@replaces("scratchgan.nn.linear.linear_forward", "bitwise")
def linear_forward(x, W, b):
    y = x @ W  # (N, D_in) @ (D_in, D_out) -> (N, D_out)
    if b is not None:
        y += b  # in place: no second (N, D_out) array
    return y, (x, W)


@replaces("scratchgan.nn.linear.linear_backward", "close")
def linear_backward(dy, cache, dW=None, db=None, need_dx=True, need_dW=True):
    """dW += x^T dy inside the GEMM (BLAS beta = 1, fast/blas.py): no (D_in, D_out) temporary and no
    ``+=`` pass over it. Summed in BLAS's order, so "close". Everything else as the reference."""
    from ..nn import linear
    if dW is None or not need_dW:
        return linear.linear_backward.reference(dy, cache, dW, db, need_dx, need_dW)
    x, W = cache
    if db is None:
        db = dy.sum(axis=0)  # (N, D_out) -> (D_out,)
    else:
        db += dy.sum(axis=0)
    blas.add_matmul(dW, x.T, dy)  # dW += x^T dy: (D_in, N) @ (N, D_out) -> (D_in, D_out)
    dx = dy @ W.T if need_dx else None  # (N, D_out) @ (D_out, D_in) -> (N, D_in)
    return dx, dW, db


# ------------------------------------------------------------------------------------ activations

@replaces("scratchgan.nn.activations.leaky_relu_forward", "bitwise")
def leaky_relu_forward(x, slope):
    """max(x, slope x) for 0 < slope <= 1: x > 0 gives x >= slope x, x < 0 gives slope x > x.

    Two fast passes where ``where(x > 0, x, slope x)`` takes several times as long on NumPy. Equal
    bit for bit, -0, inf and NaN included (at slope 0, +inf * 0 would make max NaN: reference then).
    """
    if not 0.0 < slope <= 1.0:
        return _activations.leaky_relu_forward.reference(x, slope)
    y = x * slope
    np.maximum(x, y, out=y)
    return y, x


@replaces("scratchgan.nn.activations.leaky_relu_backward", "bitwise")
def leaky_relu_backward(dy, x, slope):
    """dx = dy * (slope + [x > 0] fl(1 - slope)): the factor is exactly 1 or slope once 1 - slope is
    rounded in dy's dtype first (proof in docs/derivations/activations.md), and NumPy has fast loops
    for these passes (``maximum`` with a scalar operand has none: 4x slower)."""
    if not 0.0 <= slope <= 1.0:
        return _activations.leaky_relu_backward.reference(dy, x, slope)
    one_minus_slope = dy.dtype.type(1) - dy.dtype.type(slope)
    dx = (x > 0).astype(dy.dtype)  # 1 where x > 0, else 0
    dx *= one_minus_slope
    dx += slope
    dx *= dy
    return dx


@replaces("scratchgan.nn.activations.tanh_backward", "bitwise")
def tanh_backward(dy, y):
    dx = y * y
    np.subtract(1.0, dx, out=dx)  # in place: one new array instead of three
    dx *= dy
    return dx


# ------------------------------------------------------------------------------------ BatchNorm

def _sum_of_products(a, b, axes):
    """sum over ``axes`` of a * b, kept as size-1 axes: one einsum pass, no temporary for a * b."""
    letters = "abcdefgh"[:a.ndim]
    kept = "".join(letter for i, letter in enumerate(letters) if i not in axes)
    sums = np.einsum(f"{letters},{letters}->{kept}", a, b)
    return sums.reshape([1 if i in axes else n for i, n in enumerate(a.shape)])


@replaces("scratchgan.nn.batchnorm.batchnorm_forward", "bitwise")
def batchnorm_forward(x, gamma, beta, mean, var, eps):
    inv_std = 1.0 / np.sqrt(var + eps)
    xhat = x - mean
    xhat *= inv_std
    y = xhat * gamma
    y += beta
    return y, (xhat, gamma, inv_std)


@replaces("scratchgan.nn.batchnorm.batchnorm_train_forward", "close")
def batchnorm_train_forward(x, gamma, beta, eps, axes=(0,)):
    """x - mean computed once: it gives the variance (an einsum) and becomes xhat in place."""
    mean = x.mean(axis=axes, keepdims=True)
    xhat = x - mean  # centred; scaled to xhat below
    n = int(np.prod([x.shape[a] for a in axes]))
    var = _sum_of_products(xhat, xhat, axes) / n
    inv_std = 1.0 / np.sqrt(var + eps)
    xhat *= inv_std
    y = xhat * gamma
    y += beta
    return y, (xhat, gamma, inv_std), mean, var


@replaces("scratchgan.nn.batchnorm.batchnorm_backward_train", "close")
def batchnorm_backward_train(dy, cache, axes=(0,)):
    xhat, gamma, inv_std = cache
    n = int(np.prod([dy.shape[a] for a in axes]))
    dbeta = dy.sum(axis=axes, keepdims=True)
    dgamma = _sum_of_products(dy, xhat, axes)
    dx = dy - dbeta / n
    dx -= xhat * (dgamma / n)
    dx *= gamma * inv_std
    return dx, dgamma, dbeta


@replaces("scratchgan.nn.batchnorm.batchnorm_backward_eval", "close")
def batchnorm_backward_eval(dy, cache, axes=(0,)):
    xhat, gamma, inv_std = cache
    dbeta = dy.sum(axis=axes, keepdims=True)
    dgamma = _sum_of_products(dy, xhat, axes)
    return dy * (gamma * inv_std), dgamma, dbeta


# ------------------------------------------------------------------------------------ convolutions
# The reference copies of nn/conv.py, split over the images of the batch on the cores. On one core
# the channels-last transposes and im2col/col2im took as long as the convolutions' matmuls.

@replaces("scratchgan.nn.conv.channels_last", "bitwise")
def channels_last(a, pad=(0, 0)):
    N, C, H, W = a.shape
    pH, pW = pad
    if pH == 0 and pW == 0 and a.transpose(0, 2, 3, 1).flags.c_contiguous:
        return a.transpose(0, 2, 3, 1)
    out_shape = (N, H + 2 * pH, W + 2 * pW, C)
    out = np.zeros(out_shape, dtype=a.dtype) if pH or pW else np.empty(out_shape, dtype=a.dtype)

    def copy(start, stop):
        out[start:stop, pH:pH + H, pW:pW + W, :] = a[start:stop].transpose(0, 2, 3, 1)
    run_in_parts(copy, N, a.size)
    return out


@replaces("scratchgan.nn.conv.im2col", "bitwise")
def im2col(x, kernel_size, stride, padding):
    from ..nn.conv import conv_output_size
    N, C, H, W = x.shape
    (kH, kW), (sH, sW), (pH, pW) = kernel_size, stride, padding
    H_out, W_out = conv_output_size((H, W), kernel_size, stride, padding)
    x_pad = channels_last(x, (pH, pW))
    bN, bH, bW, bC = x_pad.strides
    windows = np.lib.stride_tricks.as_strided(
        x_pad, shape=(N, H_out, W_out, kH, kW, C), strides=(bN, sH * bH, sW * bW, bH, bW, bC))
    if windows.flags.c_contiguous:  # a 1 x 1, stride-1 kernel on channels-last x: the rows are x itself, as
        return windows.reshape(N * H_out * W_out, kH * kW * C)  # the reference's ascontiguousarray returns them
    cols = np.empty(windows.shape, dtype=x.dtype)

    def copy(start, stop):
        cols[start:stop] = windows[start:stop]
    run_in_parts(copy, N, cols.size)
    return cols.reshape(N * H_out * W_out, kH * kW * C)


@replaces("scratchgan.nn.conv.col2im", "bitwise")
def col2im(cols, x_shape, kernel_size, stride, padding):
    from ..nn.conv import conv_output_size
    N, C, H, W = x_shape
    (kH, kW), (sH, sW), (pH, pW) = kernel_size, stride, padding
    H_out, W_out = conv_output_size((H, W), kernel_size, stride, padding)
    cols = cols.reshape(N, H_out, W_out, kH, kW, C)
    x_pad = np.zeros((N, H + 2 * pH, W + 2 * pW, C), dtype=cols.dtype)

    def add(start, stop):  # images [start, stop) of the batch: independent of the others
        for i in range(kH):
            for j in range(kW):
                x_pad[start:stop, i:i + sH * (H_out - 1) + 1:sH, j:j + sW * (W_out - 1) + 1:sW, :] += \
                    cols[start:stop, :, :, i, j, :]
    run_in_parts(add, N, cols.size)
    return x_pad[:, pH:pH + H, pW:pW + W, :].transpose(0, 3, 1, 2)


# ------------------------------------------------------------------------------------ optimizers

_workspaces = {}  # (size, dtype) -> a scratch array, reused every step instead of fresh temporaries


def _workspace(like, index=0):
    key = (like.size, like.dtype.str, index)
    ws = _workspaces.get(key)
    if ws is None:
        ws = _workspaces[key] = np.empty(like.size, dtype=like.dtype)
    return ws


@replaces("scratchgan.optim.adam_update", "close")
def adam_update(theta, g, m, v, t, lr, beta1, beta2, eps, weight_decay=0.0):
    """Adam in place, split over the cores: 8 passes over the flat buffers (NumPy's ufuncs alone need 12,
    the reference ~16 with its temporaries). On the CPU this update is bound by memory traffic, so
    passes are time: ~4.2 -> ~3.4 ms for the MLP generator's 1.4 M parameters on two cores, right after
    a matmul (benchmarks/RESULTS.md).

    BLAS's axpby makes ``m <- beta1 m + (1 - beta1) g`` one pass instead of three (fast/blas.py), and
    the bias corrections fold into two scalars, as torch does:
        lr m_hat / (sqrt(v_hat) + eps) = step m / (sqrt(v) + eps'),
        step = lr sqrt(1 - beta2^t) / (1 - beta1^t),  eps' = eps sqrt(1 - beta2^t).
    Both round otherwise than the reference: theta, m and v agree with it to a few ulp.
    """
    if theta.ndim != 1 or not (theta.flags.c_contiguous and g.flags.c_contiguous):
        return _optim().adam_update.reference(theta, g, m, v, t, lr, beta1, beta2, eps, weight_decay)
    root = (1.0 - beta2 ** t) ** 0.5
    step, eps_ = lr * root / (1.0 - beta1 ** t), eps * root
    tmp, decayed = _workspace(theta), _workspace(theta, 1) if weight_decay else None

    def update(theta, g, m, v, tmp, decayed):
        if weight_decay:  # g + wd theta, into a scratch array: the gradient buffer stays as backward left it
            np.multiply(theta, weight_decay, out=decayed)
            decayed += g
            g = decayed
        if not blas.axpby(1.0 - beta1, g, beta1, m):  # m <- beta1 m + (1 - beta1) g
            np.multiply(g, 1.0 - beta1, out=tmp)
            m *= beta1
            m += tmp
        np.multiply(g, g, out=tmp)
        if not blas.axpby(1.0 - beta2, tmp, beta2, v):  # v <- beta2 v + (1 - beta2) g^2
            tmp *= 1.0 - beta2
            v *= beta2
            v += tmp
        np.sqrt(v, out=tmp)  # theta <- theta - step m / (sqrt(v) + eps')
        tmp += eps_
        np.divide(m, tmp, out=tmp)
        tmp *= -step  # (not BLAS's axpy: OpenBLAS runs it on its own threads, which stalls ours)
        theta += tmp
    _in_parts(update, [theta, g, m, v, tmp, decayed])


def _optim():
    from .. import optim
    return optim


@replaces("scratchgan.gan.ema.ema_update", "bitwise")
def ema_update(ema, theta, beta):
    """ema += (1 - beta) (theta - ema) over parts of the flat buffers, one per core, through a scratch array:
    the reference's three roundings in its order, without its two temporary arrays of G's size."""
    from ..gan import ema as reference
    if ema.ndim != 1 or not (ema.flags.c_contiguous and theta.flags.c_contiguous):
        return reference.ema_update.reference(ema, theta, beta)
    scratch = _workspace(ema, 2)

    def update(ema, theta, tmp):
        np.subtract(theta, ema, out=tmp)
        tmp *= 1.0 - beta
        ema += tmp
    _in_parts(update, [ema, theta, scratch])
