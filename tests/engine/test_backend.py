"""The backend switch: names, clear errors where CuPy cannot run, conversions; the real GPU where present."""
import sys
import types

import numpy as np
import pytest

from fake_device import DeviceArray, xp as fake_xp
from layer_cases import MODES, build_layer, layer_params, make_input, random_like, skip_unless_cupy
from scratchgan import backend as bk
from scratchgan import losses, nn
from scratchgan.backend import BackendError
from tolerances import assert_close


def test_get_xp_numpy_and_names():
    assert bk.get_xp("numpy") is np
    assert bk.get_xp(" NumPy ") is np
    assert bk.get_xp() is np
    assert bk.get_xp(fake_xp) is fake_xp  # array modules pass through (the guard relies on it)


@pytest.mark.parametrize("name", ["torch", "jax", "", "numpyy"])
def test_unknown_backend_lists_the_choices(name):
    with pytest.raises(BackendError, match="numpy, cupy") as info:
        bk.get_xp(name)
    assert repr(name) in str(info.value)


def test_non_string_backend_raises():
    with pytest.raises(BackendError, match="numpy, cupy"):
        bk.get_xp(42)


def _assert_one_line(err):
    assert "\n" not in str(err) and str(err)


def test_cupy_not_installed_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` now raises ImportError
    monkeypatch.setattr(bk, "_cupy", None)
    with pytest.raises(BackendError, match=r'not installed.*pip install "scratchgan\[cuda12\]"') as info:
        bk.get_xp("cupy")
    _assert_one_line(info.value)
    assert bk.cupy_available() is False
    assert bk._cupy is None


def _fake_cupy(get_device_count):
    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=get_device_count))
    return cupy


def _raise_no_driver():
    raise RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")


@pytest.mark.parametrize("count, expected", [
    (lambda: 0, "no GPU is visible"),
    (_raise_no_driver, "no usable GPU was found.*cudaErrorInsufficientDriver"),
], ids=["zero-devices", "driver-error"])
def test_cupy_installed_but_no_gpu(monkeypatch, count, expected):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(count))
    monkeypatch.setattr(bk, "_cupy", None)
    with pytest.raises(BackendError, match=expected) as info:
        bk.get_xp("cupy")
    _assert_one_line(info.value)
    assert "--backend numpy" in str(info.value)
    assert bk.cupy_available() is False and bk._cupy is None


def test_array_module():
    assert bk.array_module(np.zeros(2)) is np
    assert bk.array_module(np.float32(1.0)) is np
    assert bk.array_module(fake_xp.zeros(2)) is fake_xp
    with pytest.raises(TypeError, match="expected an array, got list"):
        bk.array_module([1.0, 2.0])


def test_backend_name():
    assert bk.backend_name(np) == "numpy"
    assert bk.backend_name(fake_xp) == "fake_device"


def test_to_numpy_and_to_device():
    a = np.arange(4.0)
    assert bk.to_numpy(a) is a  # host arrays are not copied
    d = fake_xp.asarray(a)
    h = bk.to_numpy(d)
    assert type(h) is np.ndarray and not np.shares_memory(h, a)
    np.testing.assert_array_equal(h, a)
    assert bk.to_numpy(2.5) == 2.5 and isinstance(bk.to_numpy(2.5), np.ndarray)
    moved = bk.to_device(a, fake_xp, dtype=np.float32)
    assert isinstance(moved, DeviceArray) and moved.dtype == np.float32
    back = bk.to_device(moved, np)
    assert type(back) is np.ndarray and back.dtype == np.float32


@pytest.mark.parametrize("name, expected", [
    ("float32", np.float32), ("float64", np.float64), (np.float32, np.float32),
    (np.dtype("float64"), np.float64), ("float16", np.float16)])
def test_resolve_dtype(name, expected):
    assert bk.resolve_dtype(name) == np.dtype(expected)


@pytest.mark.parametrize("name, message", [
    ("int32", "must be a float type"), (np.int64, "must be a float type"), ("bool", "must be a float type"),
    ("floaty", "unknown dtype 'floaty'"), ("complex128", "must be a float type")])
def test_resolve_dtype_errors(name, message):
    with pytest.raises(ValueError, match=message):
        bk.resolve_dtype(name)


# --------------------------------------------------------------------- the real GPU, where present

RTOL = {"float64": 1e-12, "float32": 1e-5}  # relative to each entry or to the whole result's size (tolerances.py)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("factory, shape", layer_params())
def test_layers_on_each_backend_match_numpy(backend, factory, shape, mode, dtype):
    """Parameterised over numpy and cupy (the cupy half skips with a reason without a GPU)."""
    xp = bk.get_xp(backend)
    host = build_layer(factory, dtype, mode)
    dev = build_layer(factory, dtype, mode, backend=backend)
    for step in range(2):
        x = make_input(shape, dtype, seed=step)
        y, y_dev = host.forward(x), dev.forward(xp.asarray(x))
        assert bk.array_module(y_dev) is xp and y_dev.dtype == y.dtype
        dy = random_like(y.shape, dtype, seed=step)
        dx, dx_dev = host.backward(dy), dev.backward(xp.asarray(dy))
        if isinstance(dev, nn.Dropout) and backend == "cupy" and mode == "train":
            # Dropout's mask comes from the device's own generator: the same p, another stream
            _check_dropout(x, y_dev, dx_dev, dy, dev.p)
            continue
        assert_close(_host(y_dev), y, RTOL[dtype])
        assert_close(_host(dx_dev), dx, RTOL[dtype])
        for (name, p), p_dev in zip(host.named_parameters(), dev.parameters()):
            assert_close(_host(p_dev.grad), p.grad, RTOL[dtype], err_msg=name)
        for (name, b), (_, b_dev) in zip(host.named_buffers(), dev.named_buffers()):
            assert_close(_host(b_dev), b, RTOL[dtype], err_msg=name)


def _host(a):
    return bk.to_numpy(a)


def _check_dropout(x, y_dev, dx_dev, dy, p):
    y, dx = _host(y_dev), _host(dx_dev)
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / (1.0 - p), rtol=1e-5)
    np.testing.assert_allclose(dx[kept], dy[kept] / (1.0 - p), rtol=1e-5)
    assert not dx[~kept].any()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("loss_fn", [losses.bce_with_logits, losses.bce, losses.mse])
def test_losses_on_each_backend_match_numpy(backend, loss_fn, dtype):
    xp = bk.get_xp(backend)
    x = 1.0 / (1.0 + np.exp(-make_input((16, 1), "float64")))
    x = x.astype(dtype)
    t = np.random.default_rng(0).uniform(size=x.shape).astype(dtype)
    loss, dx = loss_fn(x, t)
    loss_dev, dx_dev = loss_fn(xp.asarray(x), xp.asarray(t))
    assert loss_dev.shape == () and loss_dev.dtype == np.dtype(dtype)
    assert_close(_host(loss_dev), loss, RTOL[dtype])
    assert_close(_host(dx_dev), dx, RTOL[dtype])


def test_real_cupy_backend_is_the_cupy_module():
    skip_unless_cupy()
    import cupy
    assert bk.get_xp("cupy") is cupy
    assert bk.array_module(cupy.zeros(2)) is cupy
    bk.synchronize(cupy)


# The CPU threads (run_in_parts), the heap setting and OpenBLAS's thread wait moved to scratchgan/fast/;
# their tests are in tests/fast/test_fast_process.py.
