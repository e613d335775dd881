"""Checks on the fake device (support/fake_device.py): a layer run there equals its NumPy run bit for bit
and never leaves the device. Used by the guard tests and by other layers' tests."""
import numpy as np

from fake_device import DeviceArray, xp
from layer_cases import build_layer, make_input, random_like
from scratchgan import fast
from tolerances import assert_close


def assert_on_device(a, what):
    assert isinstance(a, DeviceArray), f"{what} left the device: {type(a).__name__}"


def assert_same(device_value, host_value, what, rtol=None):
    """Equal bit for bit (``rtol`` None), or to ``rtol`` where the device computes exp or log its own way."""
    assert_on_device(device_value, what)
    if rtol is None:
        np.testing.assert_array_equal(device_value.get(), host_value, err_msg=what)
    else:
        assert_close(device_value.get(), host_value, rtol, err_msg=what)  # atol: rtol x the result's size
    assert device_value.dtype == host_value.dtype, what


def check_layer_on_fake_device(factory, input_shape, mode="train", dtype="float32", steps=2, seed=0, rtol=None):
    """Run ``factory(dtype)`` on NumPy and on the fake device: forward, backward, ``steps`` times.

    Asserts outputs, input gradients, parameter gradients and buffers are identical (or within
    ``rtol``) and stay on the device. Raises TypeError if the layer calls NumPy on device data.
    """
    host = build_layer(factory, dtype, mode, seed)
    dev = build_layer(factory, dtype, mode, seed, backend=xp)
    for p in dev.parameters():
        assert_on_device(p.data, "parameter")
        assert_on_device(p.grad, "gradient")
    for step in range(steps):
        x = make_input(input_shape, dtype, seed=seed + step)
        with fast.disabled():
            y = host.forward(x)
        y_dev = dev.forward(xp.asarray(x))
        assert_same(y_dev, y, f"output, step {step}", rtol)
        dy = random_like(y.shape, dtype, seed=seed + step)
        with fast.disabled():
            dx = host.backward(dy)
        dx_dev = dev.backward(xp.asarray(dy))
        assert_same(dx_dev, dx, f"input gradient, step {step}", rtol)
        for (name, p), p_dev in zip(host.named_parameters(), dev.parameters()):
            assert_same(p_dev.grad, p.grad, f"gradient of {name}, step {step}", rtol)
        for (name, b), (_, b_dev) in zip(host.named_buffers(), dev.named_buffers()):
            assert_same(b_dev, b, f"buffer {name}, step {step}", rtol)
    return host, dev
