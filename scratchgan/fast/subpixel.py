"""ConvTranspose2d with kernel 4, stride 2, padding 1 (every upsampling layer of DCGAN's G) as four
2x2 sub-convolutions: the sub-pixel form, on ``xp`` (NumPy or CuPy).

The reference computes y = col2im(x_mat @ W_mat): one matmul to (N*H*W, 16*C_out) columns, then a
scatter of 16 kernel offsets into the output. But with stride 2 each output pixel (oy, ox) is reached
by only 2 x 2 of the 16 offsets, and which ones depends only on its phase (oy % 2, ox % 2). From
oy = 2 iy - 1 + ky (stride 2, padding 1), output row oy = 2a + r takes

    r = 0:  x row a - 1 through ky = 3,   x row a through ky = 1
    r = 1:  x row a     through ky = 2,   x row a + 1 through ky = 0

i.e. tap t in {0, 1} reads input row a + r + t - 1 through kernel row ky = 3 - r - 2t; the same for
columns. So each phase (r, q) of y is a stride-1 convolution of x (padded by 1) with a 2x2 slice of
W, which is a gather of 2x2 windows and one matmul:

    y[:, :, r::2, q::2] = windows_rq(x) @ W_rq,   windows_rq (N*H*W, 4*C_in),  W_rq (4*C_in, C_out)

no scatter, no (N*H*W, 16*C_out) temporary. The four phases run together: one copy gathers all the
windows (4, N*H*W, 4*C_in), one batched matmul (cuBLAS's strided-batched GEMM on CuPy) makes the four
phases, one copy interleaves them into y: a handful of launches on a GPU, whatever the batch. The
sums run over the 4*C_in terms in another order than the reference's (C_in terms per offset, then 4
offsets), so the result is "close", not bitwise.

With ``--tf32`` on CuPy the four phases are four 2-d GEMMs instead of one batched GEMM: CuPy's batched matmul
(cublasGemmStridedBatchedEx, cupy/_core/_routines_linalg.pyx) passes float32 as its compute type and so ignores
the TF32 compute type that --tf32 sets, which only CuPy's 2-d GEMMs read (``phase_products``).

The backward passes stay the reference's: the adjoint of the four sub-convolutions is one stride-2
convolution of dy (dx = im2col(dy) @ W_mat.T, dW = x_mat^T im2col(dy)), already a gather and two
matmuls, so the forward returns the reference's cache.
"""
from __future__ import annotations

from . import precision, replaces
from ..backend import array_module


def applies(W_shape, stride, padding, output_padding):
    """True for the layers this form covers: kernel 4, stride 2, padding 1, no output_padding."""
    return tuple(W_shape[2:]) == (4, 4) and tuple(stride) == (2, 2) and tuple(padding) == (1, 1) \
        and tuple(output_padding) == (0, 0)


def phase_weight(W, r, q):
    """W (C_in, C_out, 4, 4) -> W_rq (4*C_in, C_out): rows (t, u, c_in), kernel row 3 - r - 2t, column 3 - q - 2u."""
    C_in, C_out = W.shape[:2]
    taps = W[:, :, 3 - r::-2, 3 - q::-2]  # (C_in, C_out, 2, 2): kernel rows 3 - r, 1 - r; columns likewise
    return taps.transpose(2, 3, 0, 1).reshape(4 * C_in, C_out)  # a small copy


def phase_weights(W):
    """The four W_rq stacked in phase order (r, q) = (0, 0), (0, 1), (1, 0), (1, 1): (4, 4*C_in, C_out)."""
    xp = array_module(W)
    return xp.stack([phase_weight(W, r, q) for r in (0, 1) for q in (0, 1)])


def phase_windows(x_pad, H, W):
    """The 2x2 windows of all four phases: (4, N*H*W, 4*C), entry [(r, q), (n, a, b), (t, u, c)] =
    x_pad[n, a + r + t, b + q + u, c]. One strided view (r and t both step one row, q and u one column)
    and one copy."""
    xp = array_module(x_pad)
    N, _, _, C = x_pad.shape
    bN, bH, bW, bC = x_pad.strides
    windows = xp.lib.stride_tricks.as_strided(x_pad, shape=(2, 2, N, H, W, 2, 2, C),
                                              strides=(bH, bW, bN, bH, bW, bH, bW, bC))
    return xp.ascontiguousarray(windows).reshape(4, N * H * W, 4 * C)


def phase_products(cols, W_phases):
    """cols (4, M, K) @ W_phases (4, K, C_out) -> (4, M, C_out): one batched GEMM, or, with TF32 on, four 2-d
    GEMMs into one buffer, since CuPy's batched GEMM would run them in full float32 whatever --tf32 says."""
    xp = array_module(cols)
    if not precision.tf32_enabled(xp):
        return cols @ W_phases  # one batched GEMM
    out = xp.empty(cols.shape[:2] + W_phases.shape[2:], dtype=cols.dtype)
    for phase in range(len(cols)):
        xp.matmul(cols[phase], W_phases[phase], out=out[phase])  # (M, K) @ (K, C_out) -> (M, C_out), TF32
    return out


@replaces("scratchgan.nn.conv.conv_transpose2d_forward", "close")
def conv_transpose2d_forward(x, W, b, stride, padding, output_padding):
    from ..nn import conv
    if not applies(W.shape, stride, padding, output_padding):
        return conv.conv_transpose2d_forward.reference(x, W, b, stride, padding, output_padding)
    xp = array_module(x)
    N, C_in, H, W_in = x.shape
    C_out = W.shape[1]
    x_mat = conv._rows(x)  # (N*H*W, C_in): the reference's cache, for the backward
    x_pad = xp.zeros((N, H + 2, W_in + 2, C_in), dtype=x.dtype)  # channels last, a zero border of 1
    x_pad[:, 1:H + 1, 1:W_in + 1, :] = x_mat.reshape(N, H, W_in, C_in)
    cols = phase_windows(x_pad, H, W_in)  # (4, N*H*W, 4*C_in)
    y_phases = phase_products(cols, phase_weights(W))  # (4, N*H*W, 4*C_in) @ (4, 4*C_in, C_out) -> (4, N*H*W, C_out)
    # interleave: y[n, 2a + r, 2b + q, :] = y_phases[(r, q), (n, a, b), :]  (one copy, channels last)
    y = y_phases.reshape(2, 2, N, H, W_in, C_out).transpose(2, 3, 0, 4, 1, 5).reshape(N, 2 * H, 2 * W_in, C_out)
    if b is not None:
        y += b  # along the contiguous last axis
    return y.transpose(0, 3, 1, 2), (x_mat, conv._weight_matrix(W), W.shape, x.shape, stride, padding)


def usable(xp):
    return True


conv_transpose2d_forward.usable = usable
