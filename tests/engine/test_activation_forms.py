"""The fast activation forms (max(x, slope x); the derivative slope + [x > 0] (1 - slope)) equal the
textbook where-forms bit for bit, for every slope including 0, 1, negative and above 1, and at x == 0."""
import numpy as np
import pytest

from scratchgan.nn import activations as A


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("slope", [0.0, 0.01, 0.2, 0.5, 1.0, 1.5, -0.3])
def test_leaky_relu_equals_the_where_form(dtype, slope):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((33, 17)).astype(dtype)
    x[0, :4] = 0.0
    x[1, :2] = -0.0
    dy = rng.standard_normal(x.shape).astype(dtype)
    y, cache = A.leaky_relu_forward(x, slope)
    dx = A.leaky_relu_backward(dy, cache, slope)
    assert y.dtype == dx.dtype == dtype
    np.testing.assert_array_equal(y, np.where(x > 0, x, x * dtype(slope)))
    np.testing.assert_array_equal(dx, np.where(x > 0, dy, dy * dtype(slope)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_leaky_relu_derivative_is_exactly_one_or_slope_for_many_slopes(dtype):
    # slope + [x > 0] fl(1 - slope) must round to exactly 1 on the positive side: the rounding of
    # 1 - slope is where this could go wrong, so try slopes of every size in [0, 1]
    rng = np.random.default_rng(9)
    slopes = np.concatenate([rng.random(2000), np.linspace(0.0, 1.0, 1001), 10.0 ** -np.arange(1, 30),
                             1.0 - 10.0 ** -np.arange(1, 15), 2.0 ** -np.arange(1, 60)])
    x = np.array([[-2.0, -0.0, 0.0, 3.0]], dtype)
    dy = np.ones_like(x)
    for slope in slopes.tolist():  # Python floats, as the layer holds them
        dx = A.leaky_relu_backward(dy, x, slope)
        s = dtype(slope)
        np.testing.assert_array_equal(dx, np.array([[s, s, s, 1.0]], dtype), err_msg=f"slope {slope!r}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_equals_the_where_form(dtype):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((20, 9)).astype(dtype)
    x[0, :3] = 0.0
    dy = rng.standard_normal(x.shape).astype(dtype)
    y, cache = A.relu_forward(x)
    dx = A.relu_backward(dy, cache)
    assert y.dtype == dx.dtype == dtype
    np.testing.assert_array_equal(y, np.where(x > 0, x, 0.0))
    np.testing.assert_array_equal(dx, np.where(x > 0, dy, 0.0))
