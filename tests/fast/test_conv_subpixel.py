"""ConvTranspose2d (kernel 4, stride 2, padding 1) as four 2x2 sub-convolutions (scratchgan/fast/subpixel.py).

The sub-pixel forward against the reference forward (float64 to rounding, float32 to a tolerance
that scales with the result), the same cache (so the reference backward runs unchanged), the layer
with it switched on: central differences in float64 (x, W, b; train and eval) and PyTorch parity;
on the fake device it runs without a NumPy call and gives the NumPy bits. Other kernel sizes, strides
and paddings fall back to the reference. A mistaken tap is caught.
"""
from __future__ import annotations

import numpy as np
import pytest

from layer_cases import build_layer, make_input, random_like
from scratchgan import fast, gradcheck, nn
from scratchgan import replace
from scratchgan.fast import subpixel
from scratchgan.nn import conv
from tolerances import FLOAT32_EPS, assert_close

NAME = "scratchgan.nn.conv.conv_transpose2d_forward"
# (N, C_in, C_out, H, W): square and not, one channel, the DCGAN shapes scaled down
SHAPES = [(2, 3, 4, 3, 3), (1, 1, 1, 1, 1), (2, 4, 3, 2, 5), (3, 8, 5, 4, 4), (2, 16, 3, 8, 8)]


def _args(shape, dtype, bias=True, seed=0):
    N, C_in, C_out, H, W = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C_in, H, W)).astype(dtype)
    Wt = rng.standard_normal((C_in, C_out, 4, 4)).astype(dtype)
    b = rng.standard_normal(C_out).astype(dtype) if bias else None
    return x, Wt, b, (2, 2), (1, 1), (0, 0)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_subpixel_forward_equals_the_reference(shape, bias):
    for dtype, rtol in (("float64", 1e-13), ("float32", 16 * FLOAT32_EPS)):
        args = _args(shape, dtype, bias)
        y_ref, cache_ref = conv.conv_transpose2d_forward.reference(*args)
        y, cache = subpixel.conv_transpose2d_forward(*args)
        assert y.shape == y_ref.shape == (shape[0], shape[2], 2 * shape[3], 2 * shape[4]) and y.dtype == dtype
        assert_close(y, y_ref, rtol, err_msg=f"{dtype} {shape}")
        # the reference's cache, bit for bit: the backward that follows is the reference's
        for mine, theirs in zip(cache, cache_ref):
            if isinstance(theirs, np.ndarray):
                np.testing.assert_array_equal(mine, theirs)
            else:
                assert mine == theirs


@pytest.mark.parametrize("kwargs", [dict(kernel_size=4, stride=1, padding=0), dict(kernel_size=3, stride=2, padding=1),
                                    dict(kernel_size=4, stride=2, padding=1, output_padding=1),
                                    dict(kernel_size=4, stride=2, padding=0)])
def test_other_layers_fall_back_to_the_reference(kwargs):
    assert not subpixel.applies((2, 3, *(kwargs["kernel_size"],) * 2), (kwargs["stride"],) * 2,
                                (kwargs["padding"],) * 2, (kwargs.get("output_padding", 0),) * 2)
    layer = nn.ConvTranspose2d(2, 3, seed=0, dtype="float64", **kwargs)
    x = make_input((2, 2, 3, 3))
    y_ref = layer.forward(x)
    with fast.trying(NAME, "numpy"):
        np.testing.assert_array_equal(layer.forward(x), y_ref)


def test_trying_switches_it_on_and_off_again():
    x = make_input((2, 3, 4, 4))
    layer = nn.ConvTranspose2d(3, 2, 4, stride=2, padding=1, seed=0, dtype="float64")
    calls = []
    real = subpixel.conv_transpose2d_forward

    def counted(*args):
        calls.append(1)
        return real(*args)
    counted.replaces, counted.usable = real.replaces, real.usable
    try:
        subpixel.conv_transpose2d_forward = counted
        layer.forward(x)
        assert calls == [] and NAME not in fast.active("numpy")  # inactive by default
        with fast.trying(NAME, "numpy"):
            assert NAME in fast.active("numpy")
            layer.forward(x)
            with fast.disabled():  # --reference wins
                layer.forward(x)
        assert calls == [1]
        layer.forward(x)
        assert calls == [1]
    finally:
        subpixel.conv_transpose2d_forward = real
        fast.reset()
    with pytest.raises(KeyError):
        with fast.trying("scratchgan.nn.linear.linear_forward", "numpy"):
            pass


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("bias", [True, False])
def test_layer_with_subpixel_passes_central_differences(mode, bias):
    with fast.trying(NAME, "numpy"):
        layer = build_layer(lambda dt: nn.ConvTranspose2d(3, 2, 4, stride=2, padding=1, bias=bias, seed=1, dtype=dt),
                            "float64", mode)
        errors = gradcheck.check_module(layer, make_input((2, 3, 3, 2), "float64", seed=2), seed=3)
    assert set(errors) == {"x", "W"} | ({"b"} if bias else set())
    assert max(errors.values()) < 1e-7, errors


def test_layer_with_subpixel_matches_pytorch(torch):
    with fast.trying(NAME, "numpy"):
        ours = nn.ConvTranspose2d(8, 3, 4, stride=2, padding=1, seed=2, dtype="float64")
        theirs = torch.nn.ConvTranspose2d(8, 3, 4, stride=2, padding=1, dtype=torch.float64)
        with torch.no_grad():
            theirs.weight.copy_(torch.from_numpy(ours.W.data.copy()))
            theirs.bias.copy_(torch.from_numpy(ours.b.data.copy()))
        x = make_input((2, 8, 5, 4), seed=4)
        xt = torch.tensor(x, requires_grad=True)
        y, yt = ours.forward(x), theirs(xt)
        dy = random_like(y.shape, seed=5)
        dx = ours.backward(dy)
        yt.backward(torch.from_numpy(dy))
    for a, t, what in ((y, yt, "y"), (dx, xt.grad, "dx"), (ours.W.grad, theirs.weight.grad, "dW"),
                       (ours.b.grad, theirs.bias.grad, "db")):
        np.testing.assert_allclose(a, t.detach().numpy(), rtol=1e-12, atol=1e-13, err_msg=what)  # float64


def test_on_the_fake_device_without_numpy_calls(monkeypatch):
    """The same xp code on the device: no NumPy call on device data, and the NumPy run's bits."""
    import host_kernels
    from fake_device import DeviceArray, FakeElementwiseKernel, xp as fake_xp
    if host_kernels.compiler() is None:
        pytest.skip("no C++ compiler: the fake device's kernels cannot be built")
    monkeypatch.setattr(fake_xp, "ElementwiseKernel", FakeElementwiseKernel, raising=False)
    monkeypatch.setattr(replace, "_enabled", True)
    calls = []
    real = subpixel.conv_transpose2d_forward
    monkeypatch.setattr(subpixel, "conv_transpose2d_forward",
                        lambda *a: calls.append(type(a[0]).__name__) or real(*a))
    factory = lambda dt: nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1, seed=3, dtype=dt)  # noqa: E731
    with fast.trying(NAME, "numpy"), fast.trying(NAME, "cupy"):
        for dtype in ("float32", "float64"):
            host, dev = build_layer(factory, dtype), build_layer(factory, dtype, backend=fake_xp)
            x, dy = make_input((2, 4, 3, 5), dtype, seed=1), random_like((2, 3, 6, 10), dtype, seed=2)
            y, y_dev = host.forward(x), dev.forward(fake_xp.asarray(x))
            dx, dx_dev = host.backward(dy), dev.backward(fake_xp.asarray(dy))
            for a, d, what in ((y, y_dev, "y"), (dx, dx_dev, "dx"), (host.W.grad, dev.W.grad, "dW"),
                               (host.b.grad, dev.b.grad, "db")):
                assert isinstance(d, DeviceArray), what
                np.testing.assert_array_equal(d.get(), a, err_msg=f"{what} {dtype}")  # the same arithmetic
    assert {"ndarray", "DeviceArray"} <= set(calls)


def test_a_wrong_tap_is_caught(monkeypatch):
    """Kernel rows 3 - r - 2t: reading them in the other order (1 - r first) gives another result."""
    args = _args((2, 3, 4, 3, 3), "float64")
    y_ref = conv.conv_transpose2d_forward.reference(*args)[0]
    real = subpixel.phase_weight
    monkeypatch.setattr(subpixel, "phase_weight", lambda W, r, q: real(W[:, :, ::-1, :], 1 - r, q))
    y = subpixel.conv_transpose2d_forward(*args)[0]
    assert not np.allclose(y, y_ref)


def test_the_table_printout_says_why_it_is_inactive():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "scratchgan.fast"], capture_output=True, text=True, check=True)
    rows = [line for line in out.stdout.splitlines() if line.startswith(f"| {NAME} |")]
    assert len(rows) == 2 and all("| no: " in row for row in rows), rows
    assert "measured slower" in rows[0] and "not measured yet" in rows[1]
    for backend, (replacement, exact, why) in fast.INACTIVE[NAME].items():
        assert replace._resolve(replacement).replaces == NAME and exact == "close" and why
