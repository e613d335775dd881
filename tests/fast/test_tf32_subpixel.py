"""--tf32 reaches the sub-pixel ConvTranspose2d (scratchgan/fast/subpixel.py): with TF32 on, its four phase products
are 2-d GEMMs, since CuPy's batched (3-d) matmul passes float32 as cuBLAS's compute type and so ignores the TF32
compute type that --tf32 sets. Checked on the fake device, with TF32 reported on and every matmul's operands
recorded; on a GPU (skipped here) the routed products differ from full float32 by TF32's rounding."""
import numpy as np

from fake_device import xp
from scratchgan.fast import precision, subpixel
from scratchgan.nn import conv
from tolerances import FLOAT32_EPS, assert_close


def _layer(xp_, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 6, 3, 4)).astype(np.float32)
    W = rng.standard_normal((6, 5, 4, 4)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    return xp_.asarray(x), xp_.asarray(W), xp_.asarray(b)


def _products(monkeypatch, tf32):
    """The ndim of every matmul's operands while the sub-pixel forward runs, and its output."""
    monkeypatch.setattr(precision, "tf32_enabled", lambda xp_: tf32)
    seen, batched, plain = [], type(xp.asarray(np.ones(1))).__matmul__, xp.matmul

    def matmul_operator(a, b):
        seen.append((a.ndim, b.ndim))
        return batched(a, b)

    def matmul(a, b, out=None):
        seen.append((a.ndim, b.ndim))
        return plain(a, b, out=out)
    monkeypatch.setattr(type(xp.asarray(np.ones(1))), "__matmul__", matmul_operator)
    monkeypatch.setattr(xp, "matmul", matmul)
    x, W, b = _layer(xp)
    y, _ = subpixel.conv_transpose2d_forward(x, W, b, (2, 2), (1, 1), (0, 0))
    return seen, y


def test_with_tf32_the_phases_are_four_2d_gemms(monkeypatch):
    seen, y = _products(monkeypatch, tf32=True)
    assert seen == [(2, 2)] * 4
    x, W, b = _layer(np)
    expected, _ = conv.conv_transpose2d_forward.reference(x, W, b, (2, 2), (1, 1), (0, 0))
    assert y.dtype == np.float32
    assert_close(y.get(), expected, rtol=64 * 6 * FLOAT32_EPS)  # sums of 4 * C_in terms, in another order


def test_without_tf32_the_phases_stay_one_batched_gemm(monkeypatch):
    seen, _ = _products(monkeypatch, tf32=False)
    assert seen == [(3, 3)]


def test_the_routed_phases_equal_the_batched_product_on_numpy(monkeypatch):
    rng = np.random.default_rng(1)
    cols, Wp = rng.standard_normal((4, 12, 24)).astype(np.float32), rng.standard_normal((4, 24, 5)).astype(np.float32)
    monkeypatch.setattr(precision, "tf32_enabled", lambda xp_: True)
    routed = subpixel.phase_products(cols, Wp)
    assert routed.shape == (4, 12, 5) and routed.dtype == np.float32
    assert_close(routed, cols @ Wp, rtol=4 * 24 * FLOAT32_EPS)  # sums of 24 terms, perhaps in another order


def test_tf32_reaches_the_subpixel_products_on_the_gpu():
    from layer_cases import skip_unless_cupy
    skip_unless_cupy()
    import cupy
    x, W, b = _layer(cupy)
    full, _ = subpixel.conv_transpose2d_forward(x, W, b, (2, 2), (1, 1), (0, 0))
    precision.use_tf32(cupy)
    try:
        tf32, _ = subpixel.conv_transpose2d_forward(x, W, b, (2, 2), (1, 1), (0, 0))
    finally:
        precision.use_tf32(cupy, on=False)
    difference = float(abs(tf32 - full).max() / abs(full).max())
    assert 1e-6 < difference < 1e-2  # TF32's 10-bit mantissas: off by ~1e-3, where float32 agrees to ~1e-7
