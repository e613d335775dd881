"""The CPU-only guard: every layer, loss and optimizer run on the fake device (tests/support/fake_device.py).

A NumPy call on device data, or a host array mixed into device arithmetic, raises there as it
would on CuPy; and since the fake computes with NumPy underneath, every result must equal the
NumPy run of the reference code bit for bit (the NumPy side runs with the fast paths off: the fake
device has none of them, unless tests/fast/test_fused_kernels.py lends it the CUDA kernels, which give
the reference's bits too). Other test files reuse ``check_layer_on_fake_device`` for their layers.
"""
import numpy as np
import pytest
from device_checks import assert_on_device, assert_same, check_layer_on_fake_device

from fake_device import xp
from layer_cases import LAYER_CASES, MODES, build_layer, layer_params, make_input, random_like
from scratchgan import fast, losses, nn, optim

DTYPES = ("float32", "float64")



@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("factory, shape", layer_params())
def test_layer_on_fake_device_equals_numpy(factory, shape, mode, dtype):
    check_layer_on_fake_device(factory, shape, mode, dtype)


def _mlp(dtype, p_drop=0.0):
    layers = [nn.Linear(5, 8, seed=1, dtype=dtype), nn.BatchNorm1d(8, dtype=dtype), nn.LeakyReLU(0.2)]
    if p_drop:
        layers.append(nn.Dropout(p_drop, seed=4))
    layers += [nn.Linear(8, 4, seed=2, dtype=dtype), nn.Tanh(), nn.Flatten(), nn.Reshape(2, 2),
               nn.Flatten(), nn.Linear(4, 1, seed=3, dtype=dtype), nn.Sigmoid()]
    return nn.Sequential(*layers)


def test_model_to_fake_device_and_state_dict_round_trip():
    host = _mlp("float32", p_drop=0.25).to(dtype="float32")
    dev = _mlp("float32", p_drop=0.25).to(backend=xp)
    assert dev.dtype == np.float32  # moving keeps the dtype
    store = dev.flat_store()
    assert_on_device(store.data, "flat store")
    for p in dev.parameters():
        assert np.shares_memory(p.data._a, store.data._a)
    x = make_input((6, 5), "float32")
    with fast.disabled():  # the reference code on both sides
        y = host.forward(x)
    y_dev = dev.forward(xp.asarray(x))
    assert_same(y_dev, y, "MLP output")
    dy = random_like(y.shape, "float32")
    with fast.disabled():
        dx = host.backward(dy)
    assert_same(dev.backward(xp.asarray(dy)), dx, "MLP input gradient")

    state = dev.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    for name, value in host.state_dict().items():
        np.testing.assert_array_equal(state[name], value, err_msg=name)

    other = _mlp("float32", p_drop=0.25)
    for p in other.parameters():
        p.data[...] = 0.0
    other.to(backend=xp).load_state_dict(state)
    for p in other.parameters():
        assert_on_device(p.data, "loaded parameter")
    other.eval(), dev.eval()
    assert_same(other.forward(xp.asarray(x)), dev.forward(xp.asarray(x)).get(), "after load")

    back = dev.to(backend="numpy")
    assert all(isinstance(p.data, np.ndarray) for p in back.parameters())
    assert all(isinstance(b, np.ndarray) for _, b in back.named_buffers())
    with fast.disabled():
        np.testing.assert_array_equal(back.forward(x), host.eval().forward(x))


LOSS_CASES = [
    (losses.bce_with_logits, lambda x: x * 3.0),
    (losses.bce, lambda x: 1.0 / (1.0 + np.exp(-x))),
    (losses.mse, lambda x: x),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("target_kind", ["scalar", "smoothed", "array"])
@pytest.mark.parametrize("loss_fn, make", LOSS_CASES, ids=["bce_with_logits", "bce", "mse"])
def test_losses_on_fake_device_equal_numpy(loss_fn, make, target_kind, dtype):
    x = make(make_input((6, 1), "float64")).astype(dtype)
    if target_kind == "array":
        t = np.random.default_rng(1).uniform(0.0, 1.0, x.shape).astype(dtype)
        t_dev = xp.asarray(t)
    else:
        t = t_dev = 1.0 if target_kind == "scalar" else 0.9
    loss, dx = loss_fn(x, t)
    loss_dev, dx_dev = loss_fn(xp.asarray(x), t_dev)
    assert_same(loss_dev, np.asarray(loss), "loss")
    assert loss_dev.ndim == 0
    assert_same(dx_dev, dx, "loss gradient")


@pytest.mark.parametrize("make_opt", [
    lambda params: optim.Adam(params, lr=1e-2, betas=(0.5, 0.999)),
    lambda params: optim.Adam(params, lr=1e-2, weight_decay=0.01),
    lambda params: optim.SGD(params, lr=0.1),
    lambda params: optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-3),
    lambda params: optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True),
], ids=["adam", "adam-wd", "sgd", "sgd-momentum-wd", "sgd-nesterov"])
def test_optimizer_steps_on_fake_device_equal_numpy(make_opt):
    host, dev = _mlp("float32").to(), _mlp("float32").to(backend=xp)
    opt, opt_dev = make_opt(host.parameters()), make_opt(dev.parameters())
    assert_on_device(opt_dev.store.data, "optimizer store")
    for step in range(3):
        x = make_input((6, 5), "float32", seed=step)
        t = np.random.default_rng(step).uniform(0.0, 1.0, (6, 1)).astype(np.float32)
        opt.zero_grad(), opt_dev.zero_grad()
        with fast.disabled():  # the host runs the reference code, as the fake device does
            loss, dp = losses.bce(host.forward(x), t)
            host.backward(dp)
            opt.step()
        loss_dev, dp_dev = losses.bce(dev.forward(xp.asarray(x)), xp.asarray(t))
        dev.backward(dp_dev)
        opt_dev.step()
        for (name, p), p_dev in zip(host.named_parameters(), dev.parameters()):
            assert_same(p_dev.data, p.data, f"{name} after step {step}")
    for name, value in opt.state_dict().items():
        if hasattr(value, "shape"):
            assert_same(opt_dev.state_dict()[name], value, f"optimizer state {name}")


def test_gradcheck_itself_runs_on_the_fake_device():
    from scratchgan import gradcheck
    layer = build_layer(LAYER_CASES[0][1], "float64", backend=xp)
    errors = gradcheck.check_module(layer, xp.asarray(make_input((3, 5))))
    assert max(errors.values()) < 1e-7
    store = layer.flat_store()
    x = xp.asarray(make_input((3, 5)))

    def loss_and_backward():
        layer.zero_grad()
        loss, dy = losses.mse(layer.forward(x), 0.5)
        layer.backward(dy)
        return loss

    analytic, numeric, rel = gradcheck.directional_check(loss_and_backward, store)
    assert rel < 1e-7 and abs(analytic) > 1e-3


# ------------------------------------------------------------------------ the guard has teeth

def test_guard_catches_a_numpy_call_in_a_layer(monkeypatch):
    """A layer that calls numpy.tanh on its input passes on NumPy and must fail on the fake device."""
    from scratchgan.nn import activations

    def sloppy_tanh_forward(x):
        y = np.tanh(x)  # the bug the guard exists for: NumPy on what may be a CuPy array
        return y, y

    monkeypatch.setattr(activations, "tanh_forward", sloppy_tanh_forward)
    factory, shape = (lambda dtype: nn.Tanh()), (4, 6)
    layer = build_layer(factory)
    layer.forward(make_input(shape))  # fine on the host
    with pytest.raises(TypeError, match=r"numpy\.tanh called on a device array"):
        check_layer_on_fake_device(factory, shape)


def test_guard_catches_a_host_array_mixed_into_device_math(monkeypatch):
    """A host temporary (np.zeros) mixed into device arithmetic must fail as it does on CuPy."""
    from scratchgan.nn import linear

    real_forward = linear.linear_forward

    def sloppy_linear_forward(x, W, b):
        y, cache = real_forward(x, W, b)
        return y + np.zeros(y.shape[1], dtype=y.dtype), cache  # host array on a device array

    monkeypatch.setattr(linear, "linear_forward", sloppy_linear_forward)
    with pytest.raises(TypeError, match=r"Unsupported type <class 'numpy\.ndarray'>"):
        check_layer_on_fake_device(LAYER_CASES[0][1], LAYER_CASES[0][2])


def test_guard_catches_an_implicit_device_to_host_conversion(monkeypatch):
    from scratchgan.nn import activations

    def sloppy_sigmoid_forward(x):
        y = 1.0 / (1.0 + np.exp(-np.asarray(x)))
        return y, y

    monkeypatch.setattr(activations, "sigmoid_forward", sloppy_sigmoid_forward)
    with pytest.raises(TypeError, match="implicit conversion of a device array"):
        check_layer_on_fake_device(lambda dtype: nn.Sigmoid(), (3, 2))
