"""--ema: the moving average of G's flat parameter buffer (scratchgan/gan/ema.py). The update against its formula,
in the GAN step after every G step, the fused kernel on the fake device against NumPy bit for bit, the
swap in and out for sampling (BatchNorm statistics G's own), and the checkpoint helpers.
"""
from __future__ import annotations

import host_kernels
import numpy as np
import pytest
from fake_device import FakeElementwiseKernel
from fake_device import xp as fake_xp
from layer_cases import make_input
from tolerances import FLOAT32_EPS, assert_close

from scratchgan import fast, nn, replace
from scratchgan.cli import train as train_command
from scratchgan.gan import models
from scratchgan.gan.ema import KEY, UPDATES_KEY, GeneratorEMA, ema_update, use_ema_weights
from scratchgan.gan.step import generate


def config(**extra):
    return dict(train_command.MLP_DEFAULTS, image_size=16, batch_size=4, g_hidden="8,6", d_hidden="8", latent_dim=3,
                dtype="float64", **extra)


def test_update_is_the_formula():
    rng = np.random.default_rng(0)
    ema, theta = rng.standard_normal(101), rng.standard_normal(101)
    expected = 0.9 * ema + 0.1 * theta
    ema_update(ema, theta, 0.9)
    np.testing.assert_allclose(ema, expected, rtol=1e-15, atol=1e-15)  # float64
    e32 = ema.astype(np.float32)
    ema_update(e32, theta.astype(np.float32), 0.999)
    assert e32.dtype == np.float32


def test_the_step_averages_g_after_every_g_update():
    step = models.build_step(config(ema=0.5), np)
    assert step.ema is not None and step.ema.beta == 0.5
    store = step.G.flat_store()
    expected = store.data.copy()  # the average starts at G's initial weights
    real = make_input((4, 16)).clip(-1, 1)
    for t in range(12):
        step.step([real])
        b = min(0.5, (1 + t) / (10 + t))  # the warm-up 0.1, 0.18, 0.25, ..., then beta from t = 8 on
        expected = b * expected + (1 - b) * store.data
    np.testing.assert_allclose(step.ema.params, expected, rtol=1e-12, atol=1e-14)  # float64
    assert step.ema.updates == 12 and step.ema.decay() == 0.5
    assert not np.allclose(step.ema.params, store.data)
    assert models.build_step(config(), np).ema is None  # off by default


def test_sampling_swaps_the_average_in_and_back():
    step = models.build_step(config(ema=0.5), np)
    real = make_input((4, 16)).clip(-1, 1)
    step.step([real])
    step.step([real])
    live = step.G.flat_store().data.copy()
    stats = {name: b.copy() for name, b in step.G.named_buffers()}
    assert stats, "the test wants a G with BatchNorm"
    z = make_input((5, 3), seed=4)
    with step.sampling() as G:
        assert G is step.G
        np.testing.assert_array_equal(G.flat_store().data, step.ema.params)
        averaged = generate(G, z)
    np.testing.assert_array_equal(step.G.flat_store().data, live)  # the live weights are back, bit for bit
    for name, b in step.G.named_buffers():  # BatchNorm's running statistics: G's own, untouched
        np.testing.assert_array_equal(b, stats[name])
    assert not np.allclose(averaged, generate(step.G, z))
    # the EMA generator is G's architecture with the averaged weights and G's running statistics
    other = models.build_step(config(ema=0.5), np).G
    other.load_state_dict(step.G.state_dict())
    other.flat_store().data[...] = step.ema.params
    np.testing.assert_array_equal(generate(other, z), averaged)


def test_beta_must_be_in_the_open_interval():
    G = models.mlp_generator(3, (4,), 5, dtype="float64").to("numpy", "float64")
    for beta in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="ema must be in"):
            GeneratorEMA(G, beta)


def test_checkpoint_helpers():
    G = models.mlp_generator(3, (4,), 5, dtype="float64").to("numpy", "float64")
    ema = GeneratorEMA(G, 0.9)
    ema.params += 1.0
    arrays = ema.state()
    ema.updates = 7
    arrays = ema.state()
    assert set(arrays) == {KEY, UPDATES_KEY}
    other = GeneratorEMA(G, 0.9)
    assert other.load(arrays) is True
    np.testing.assert_array_equal(other.params, ema.params)
    assert other.updates == 7
    assert other.load({}) is False  # a checkpoint of a run without --ema: restart from G's weights
    np.testing.assert_array_equal(other.params, G.flat_store().data)
    logged = []
    target = models.mlp_generator(3, (4,), 5, dtype="float64").to("numpy", "float64")
    assert use_ema_weights(target, {}) is False
    assert use_ema_weights(target, arrays, log=logged.append) is True
    np.testing.assert_array_equal(target.flat_store().data, ema.params)
    assert logged and "EMA generator" in logged[0]
    with pytest.raises(ValueError, match="shape"):
        use_ema_weights(target, {KEY: np.zeros(3)})


@pytest.fixture
def fused(monkeypatch):
    """The fake device with an ElementwiseKernel (the kernel body compiled for the CPU), fast paths on."""
    if host_kernels.compiler() is None:
        pytest.skip("no C++ compiler (g++ or c++): the kernels cannot be built for the CPU")
    made = {}

    def elementwise_kernel(in_params, out_params, operation, name, **kwargs):
        made[name.removeprefix("scratchgan_")] = FakeElementwiseKernel(in_params, out_params, operation, name,
                                                                       **kwargs)
        return made[name.removeprefix("scratchgan_")]

    monkeypatch.setattr(fake_xp, "ElementwiseKernel", elementwise_kernel, raising=False)
    monkeypatch.setattr(replace, "_enabled", True)
    fast.reset()
    yield made
    fast.reset()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_kernel_on_the_fake_device_equals_numpy_bit_for_bit(fused, dtype):
    host = models.mlp_generator(3, (8, 6), 5, dtype=dtype).to("numpy", dtype)
    dev = models.mlp_generator(3, (8, 6), 5, dtype=dtype).to(fake_xp, dtype)
    ema, ema_dev = GeneratorEMA(host, 0.999), GeneratorEMA(dev, 0.999)
    rng = np.random.default_rng(1)
    for _ in range(3):
        step = rng.standard_normal(host.flat_store().size).astype(dtype)
        host.flat_store().data[...] += step
        dev.flat_store().data[...] += fake_xp.asarray(step)
        with fast.disabled():  # the host runs ema.ema_update's reference line
            ema.update()
        ema_dev.update()
        got = ema_dev.params.get()
        assert got.dtype == ema.params.dtype
        np.testing.assert_array_equal(got.view(got.dtype.str.replace("f", "u")),
                                      ema.params.view(ema.params.dtype.str.replace("f", "u")))
    assert fused["ema_update"].calls == 3
    assert fast.replacement_for("scratchgan.gan.ema.ema_update", fake_xp) is not None


def test_the_reference_runs_on_the_fake_device_without_kernels():
    dev = models.mlp_generator(3, (8, 6), 5, dtype="float32").to(fake_xp, "float32")
    ema = GeneratorEMA(dev, 0.9)
    dev.flat_store().data[...] += 1.0
    ema.update()  # no NumPy call on device arrays (the fake device would raise)
    assert_close(ema.params.get(), dev.flat_store().data.get() - 0.1, 8 * FLOAT32_EPS)  # b_0 = 0.1
    assert isinstance(dev, nn.Sequential)
