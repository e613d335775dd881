"""The fake device itself: NumPy on device arrays and host/device mixing raise; xp use works."""
import copy

import numpy as np
import pytest

from fake_device import DeviceArray, xp
from scratchgan.backend import array_module, get_xp, to_device, to_numpy


@pytest.fixture
def d():
    return xp.asarray(np.arange(6.0).reshape(2, 3))


def test_device_array_is_not_an_ndarray(d):
    assert not isinstance(d, np.ndarray)
    assert isinstance(d, xp.ndarray)
    assert array_module(d) is xp
    assert get_xp(xp) is xp


@pytest.mark.parametrize("call, name", [
    (lambda d: np.exp(d), "numpy.exp"),
    (lambda d: np.tanh(d), "numpy.tanh"),
    (lambda d: np.sum(d), "numpy.sum"),
    (lambda d: np.where(d > 1, d, 0.0), "numpy.where"),
    (lambda d: np.zeros_like(d), "numpy.zeros_like"),
    (lambda d: np.linalg.norm(d), "numpy.norm"),
    (lambda d: np.add.reduce(d), "numpy.add.reduce"),
    (lambda d: np.multiply(d, 2.0, out=d), "numpy.multiply"),
])
def test_numpy_functions_on_a_device_array_raise_naming_the_function(d, call, name):
    with pytest.raises(TypeError, match=name.replace(".", r"\.") + " called on a device array"):
        call(d)


@pytest.mark.parametrize("convert", [np.asarray, np.array, np.ascontiguousarray,
                                     lambda d: np.float64(1.0) * np.ones(3) + d])
def test_implicit_conversion_to_numpy_raises(d, convert):
    with pytest.raises(TypeError):
        convert(d)


def test_asarray_message(d):
    with pytest.raises(TypeError, match="implicit conversion of a device array to NumPy"):
        np.asarray(d)


@pytest.mark.parametrize("mix", [
    lambda d, h: d + h, lambda d, h: h + d, lambda d, h: d * h, lambda d, h: h - d,
    lambda d, h: d @ h.T, lambda d, h: h.T @ d, lambda d, h: d < h,
    lambda d, h: d.__iadd__(h), lambda d, h: d.__setitem__(Ellipsis, h),
    lambda d, h: d[h > 2], lambda d, h: xp.where(d > 1, h, d), lambda d, h: xp.maximum(d, h),
    lambda d, h: xp.concatenate([d, h]), lambda d, h: xp.multiply(d, 2.0, out=h),
    lambda d, h: d.reshape(-1).dot(h.reshape(-1)),
])
def test_host_device_mixing_raises(d, mix):
    h = np.arange(6.0).reshape(2, 3)
    with pytest.raises(TypeError, match="numpy|Unsupported type <class 'numpy.ndarray'>"):
        mix(d, h)


def test_raw_host_array_message_is_cupys(d):
    with pytest.raises(TypeError, match=r"Unsupported type <class 'numpy\.ndarray'>"):
        xp.exp(np.ones(2))


def test_legitimate_xp_use_works_and_matches_numpy(d):
    h = np.arange(6.0).reshape(2, 3)
    y = xp.tanh(d) * 2.0 + xp.exp(-xp.abs(d)) - 1.0
    assert isinstance(y, DeviceArray)
    np.testing.assert_array_equal(y.get(), np.tanh(h) * 2.0 + np.exp(-np.abs(h)) - 1.0)
    # reductions return 0-d device arrays (as CuPy), and float()/item() are allowed
    s = d.sum()
    assert isinstance(s, DeviceArray) and s.ndim == 0
    assert float(s) == 15.0 and s.item() == 15.0 and int(s) == 15
    assert d.mean(axis=0, keepdims=True).shape == (1, 3)
    assert (d @ d.T).shape == (2, 2) and isinstance(d.T, DeviceArray)
    # numpy scalars and Python scalars are fine on either side of the DeviceArray's own operators
    np.testing.assert_array_equal((d * np.float64(2.0)).get(), h * 2.0)
    np.testing.assert_array_equal((3.0 - d).get(), 3.0 - h)
    # dtypes and types are NumPy's own
    assert xp.float32 is np.float32
    z = xp.zeros((2, 2), dtype=xp.float32)
    assert isinstance(z, DeviceArray) and z.dtype == np.float32
    assert d.astype(np.float32).dtype == np.float32


def test_views_and_in_place_ops_share_memory(d):
    flat = d.reshape(-1)
    flat[0] = 42.0
    assert float(d[0, 0]) == 42.0
    before = d
    d += 1.0
    d *= xp.asarray(np.full((2, 3), 2.0))
    assert d is before and float(d[0, 0]) == 86.0
    d[d > 80.0] = 0.0
    assert float(d[0, 0]) == 0.0
    out = xp.empty((2, 3))
    xp.multiply(d, 0.5, out=out)
    np.testing.assert_array_equal(out.get(), d.get() * 0.5)
    xp.add.at(out, (0, 0), 1.0)  # ufunc methods are wrapped too
    assert float(out[0, 0]) == 1.0


def test_explicit_transfers(d):
    host = np.arange(3.0)
    dev = xp.asarray(host)
    host[0] = 9.0  # a host -> device copy never aliases the host buffer
    assert float(dev[0]) == 0.0
    back = dev.get()
    assert isinstance(back, np.ndarray)
    back[1] = 7.0
    assert float(dev[1]) == 1.0
    assert xp.asarray(dev).shape == (3,) and xp.asarray(dev, dtype=np.float32).dtype == np.float32
    assert isinstance(to_numpy(dev), np.ndarray)
    assert isinstance(to_device(host, xp), DeviceArray)
    assert isinstance(xp.array([1.0, 2.0]), DeviceArray)
    c = copy.deepcopy(d)
    c[0, 0] = -1.0
    assert float(d[0, 0]) == 0.0


def test_device_asarray_copy_means_what_numpy2_says_on_every_numpy():
    dev = xp.asarray(np.arange(3.0))
    assert xp.asarray(dev) is not dev and xp.asarray(dev)._a is dev._a  # None: no copy when none is needed
    assert xp.asarray(dev, copy=False)._a is dev._a
    fresh = xp.asarray(dev, copy=True)
    fresh[0] = 5.0
    assert float(dev[0]) == 0.0
    assert xp.asarray(dev, dtype=np.float32, copy=None).dtype == np.float32
    with pytest.raises(ValueError, match="copy"):
        xp.asarray(dev, dtype=np.float32, copy=False)


def test_random_generator_gives_numpys_values_on_the_device():
    g = xp.random.default_rng(3)
    u = g.random((2, 3), dtype=np.float32)
    assert isinstance(u, DeviceArray) and u.dtype == np.float32
    np.testing.assert_array_equal(u.get(), np.random.default_rng(3).random((2, 3), dtype=np.float32))
    assert isinstance(g.standard_normal(4), DeviceArray)


# ------------------------------------------------------------------ where NumPy and CuPy 14.2 differ: CuPy's way
def test_generator_random_into_out_without_size_broadcasts_one_draw_as_cupy():
    """CuPy's Generator.random(out=) without size draws ONE value and copies it into all of out
    (cupy/random/_generator_api.pyx: size = (), then elementwise_copy); NumPy would fill out."""
    out = xp.empty((5, 1), np.float32)
    returned = xp.random.default_rng(3).random(dtype=np.float32, out=out)
    assert returned is out
    one = np.random.default_rng(3).random(dtype=np.float32)
    np.testing.assert_array_equal(out.get(), np.full((5, 1), one, np.float32))
    xp.random.default_rng(3).random((5, 1), dtype=np.float32, out=out)  # with its size: every element drawn
    np.testing.assert_array_equal(out.get(), np.random.default_rng(3).random((5, 1), dtype=np.float32))
    xp.random.default_rng(4).standard_exponential(dtype=np.float64, out=xp.empty((3,)))  # the same rule, accepted
    z = xp.empty((2, 3), np.float32)  # standard_normal(out=) draws straight into out: every element, no size needed
    xp.random.default_rng(3).standard_normal(dtype=np.float32, out=z)
    np.testing.assert_array_equal(z.get(), np.random.default_rng(3).standard_normal((2, 3), dtype=np.float32))


def test_generator_checks_out_as_cupy():
    g = xp.random.default_rng(0)
    with pytest.raises(TypeError, match="wrong type. Expected float64, got float32"):
        g.random((2,), out=xp.empty((2,), np.float32))  # dtype defaults to float64: out must say so
    with pytest.raises(ValueError, match="size must match out.shape"):
        g.random((3,), dtype=np.float32, out=xp.empty((2,), np.float32))
    with pytest.raises(ValueError, match="not contiguous"):
        g.standard_normal(dtype=np.float32, out=xp.empty((4, 4), np.float32)[::2])


def test_generator_has_only_cupys_draws_and_returns_device_arrays():
    g = xp.random.default_rng(0)
    for missing in ("normal", "permutation", "shuffle", "choice", "bytes"):
        with pytest.raises(AttributeError, match="cupy.random.Generator has no attribute"):
            getattr(g, missing)
    one = g.random(dtype=np.float32)  # a single draw is a 0-d device array, as on CuPy, not a Python float
    assert isinstance(one, DeviceArray) and one.shape == () and one.dtype == np.float32
    assert isinstance(g.integers(0, 5), DeviceArray) and g.integers(0, 5, size=3).shape == (3,)


def test_generators_number_of_states():
    """default_rng(seed) keeps CuPy's card-dependent count (None here); XORWOW(seed, size=n) keeps n, and draws
    NumPy's default_rng(seed) values either way (fake-device runs keep the NumPy run's bits)."""
    assert xp.random.default_rng(5).bit_generator._state_size() is None
    fixed = xp.random.default_rng(xp.random.XORWOW(5, size=1 << 16))
    assert fixed.bit_generator._state_size() == 1 << 16
    np.testing.assert_array_equal(fixed.standard_normal((3,), dtype=np.float32).get(),
                                  np.random.default_rng(5).standard_normal((3,), dtype=np.float32))


def test_take_wraps_out_of_range_indices_as_cupy(d):
    """cupy.take has no mode=: its kernel takes indices modulo the axis (cupy/_core/_routines_indexing.pyx)."""
    h = np.arange(6.0).reshape(2, 3)
    idx = xp.asarray(np.array([7, -1, 2]))
    np.testing.assert_array_equal(xp.take(d, idx).get(), np.take(h, [1, 5, 2]))
    out = xp.empty((2, 3))
    xp.take(d, xp.asarray(np.array([0, 4, -4])), axis=1, out=out)
    np.testing.assert_array_equal(out.get(), h[:, [0, 1, 2]])
    np.testing.assert_array_equal(d.take(idx, axis=0).get(), h[[1, 1, 0]])
    with pytest.raises(TypeError):
        xp.take(d, idx, mode="raise")  # CuPy's take has no mode
    xp.put(d, xp.asarray(np.array([6])), -2.0)  # put's default mode is "wrap" on CuPy: 6 of 6 is 0
    d.put(xp.asarray(np.array([-1])), -3.0)
    assert float(d[0, 0]) == -2.0 and float(d[1, 2]) == -3.0


def test_integer_array_indexing_wraps_as_cupy(d):
    h = np.arange(6.0).reshape(2, 3)
    rows, cols = xp.asarray(np.array([2, -3])), xp.asarray(np.array([4, 0]))
    np.testing.assert_array_equal(d[rows].get(), h[[0, 1]])
    np.testing.assert_array_equal(d[:, cols].get(), h[:, [1, 0]])
    np.testing.assert_array_equal(d[rows, cols].get(), h[[0, 1], [1, 0]])
    np.testing.assert_array_equal(d[..., cols].get(), h[..., [1, 0]])
    d[xp.asarray(np.array([3]))] = -1.0  # a write wraps too: row 3 of 2 is row 1
    np.testing.assert_array_equal(d.get()[1], -1.0)
    with pytest.raises(IndexError):
        d[5]  # a Python integer is basic indexing: out of range on CuPy too


def test_accelerators_are_cupys_default_and_switch():
    core = xp._core
    assert core.get_reduction_accelerators() == ["cub"] and core.get_routine_accelerators() == ["cub"]
    try:
        core.set_routine_accelerators([])
        assert core.get_routine_accelerators() == [] and core.get_reduction_accelerators() == ["cub"]
    finally:
        core.set_routine_accelerators(["cub"])
