"""CuPy fast paths for the convolutions: im2col and col2im as one CUDA kernel each, both gathers.

The reference im2col (scratchgan/nn/conv.py) is a channels-last copy of the padded input and then a
strided copy of every window: on a GPU, several kernel launches and a padded temporary. Its col2im
adds kH*kW strided slices into a padded image, one launch (and one pass over the image) per kernel
offset. Here each is a single ``cupy.ElementwiseKernel`` with one thread per element of its output:

- **im2col**, one thread per column-matrix entry ``cols[(n, h, w), (i, j, c)]``: it reads the input
  pixel ``x[n, c, sH*h + i - pH, sW*w + j - pW]``, or 0 in the padding. Neighbouring threads differ in
  ``c`` and read neighbouring memory when ``x`` is channels-last (what the conv layers hand each other).
- **col2im**, one thread per image pixel ``x[n, c, y, x]``: it *gathers* the column entries that map
  to that pixel, ``cols[(n, h, w), (i, j, c)]`` with ``sH*h + i = y + pH`` and ``sW*w + j = x + pW``, and
  sums them. No atomics: each output is written by one thread, so the result is deterministic, and
  it adds the entries in the reference's order (kernel row i, then column j, from 0), so the sums
  have the reference's bits. The image is written channels-last, as the reference leaves it.

Both are bit for bit the reference (tests/fast/test_conv_kernels.py runs the bodies on the CPU through
tests/support/host_kernels.py, and through CuPy where a GPU is visible). The sums use ``add_rn`` from
fast/kernels.py's PREAMBLE: an IEEE add that no ``-ftz`` flushes. ``raw T`` arguments are indexed by
their logical C-order index (CuPy's CArray follows the strides), so any memory layout is read right.
"""
from __future__ import annotations

from ..replace import replaces
from .kernels import OPTIONS, PREAMBLE, usable

# the shape of the convolution, passed to both kernels as integer scalars
GEOMETRY = ("int32 H, int32 W, int32 C, int32 kH, int32 kW, int32 sH, int32 sW, int32 pH, int32 pW, "
            "int32 H_out, int32 W_out")

KERNELS = {
    # cols (N*H_out*W_out, kH*kW*C): thread i is entry ((n, h, w), (ki, j, c)), c fastest.
    # x is the input seen as (N, H, W, C): channels last, however it lies in memory.
    "im2col": ("raw T x, " + GEOMETRY, "T cols",
               "const int c = i % C;  ptrdiff_t r = i / C;"
               "  const int j = r % kW;  r /= kW;"
               "  const int ki = r % kH;  r /= kH;"
               "  const int w = r % W_out;  r /= W_out;"
               "  const int h = r % H_out;  const ptrdiff_t n = r / H_out;"
               "  const int y = sH * h + ki - pH, xc = sW * w + j - pW;"  # the input pixel; outside: padding
               "  cols = (y >= 0 && y < H && xc >= 0 && xc < W) ? x[((n * H + y) * W + xc) * C + c] : T(0);"),
    # x (N, H, W, C): thread i is pixel (n, y, xc, c) of the unpadded image, c fastest; it sums, in the
    # reference's order, the entries of cols (N*H_out*W_out, kH*kW*C) whose window covers it.
    "col2im": ("raw T cols, " + GEOMETRY, "T x",
               "const int c = i % C;  ptrdiff_t r = i / C;"
               "  const int xc = r % W + pW;  r /= W;"  # padded coordinates of this pixel
               "  const int y = r % H + pH;  const ptrdiff_t n = r / H;"
               "  T sum = T(0);"
               "  for (int ki = 0; ki < kH; ++ki) {"
               "    const int dy = y - ki;"  # = sH * h for the window h whose row ki is this row
               "    if (dy < 0 || dy % sH != 0 || dy / sH >= H_out) continue;"
               "    const int h = dy / sH;"
               "    for (int j = 0; j < kW; ++j) {"
               "      const int dx = xc - j;"
               "      if (dx < 0 || dx % sW != 0 || dx / sW >= W_out) continue;"
               "      const int w = dx / sW;"
               "      sum = add_rn(sum, cols[((((n * H_out + h) * W_out + w) * kH + ki) * kW + j) * C + c]);"
               "    }"
               "  }"
               "  x = sum;"),
}
_built = {}  # (kernel factory, name) -> kernel


def kernel(xp, name):
    """KERNELS[name] as an ElementwiseKernel of array module ``xp`` (built once per module)."""
    make = xp.ElementwiseKernel
    built = _built.get((make, name))
    if built is None:
        inputs, outputs, body = KERNELS[name]
        built = _built[(make, name)] = make(inputs, outputs, body, f"scratchgan_{name}", preamble=PREAMBLE,
                                            options=OPTIONS)
    return built


def _geometry(x_shape, kernel_size, stride, padding):
    from ..nn.conv import conv_output_size
    N, C, H, W = x_shape
    H_out, W_out = conv_output_size((H, W), kernel_size, stride, padding)
    return (H, W, C, *kernel_size, *stride, *padding, H_out, W_out), N * H_out * W_out


@replaces("scratchgan.nn.conv.im2col", "bitwise")
def im2col(x, kernel_size, stride, padding):
    from ..backend import array_module
    xp = array_module(x)
    geometry, M = _geometry(x.shape, kernel_size, stride, padding)
    cols = xp.empty((M, kernel_size[0] * kernel_size[1] * x.shape[1]), dtype=x.dtype)
    # x as (N, H, W, C): a view (no copy); the kernel reads it through its strides
    return kernel(xp, "im2col")(x.transpose(0, 2, 3, 1), *geometry, cols)


@replaces("scratchgan.nn.conv.col2im", "bitwise")
def col2im(cols, x_shape, kernel_size, stride, padding):
    from ..backend import array_module
    xp = array_module(cols)
    N, C, H, W = x_shape
    geometry, _ = _geometry(x_shape, kernel_size, stride, padding)
    x = xp.empty((N, H, W, C), dtype=cols.dtype)  # channels last, as the reference's result lies in memory
    kernel(xp, "col2im")(cols, *geometry, x)
    return x.transpose(0, 3, 1, 2)  # (N, C, H, W), a view


im2col.usable = col2im.usable = usable
