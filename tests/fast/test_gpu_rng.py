"""The device generators have a fixed number of states (scratchgan.backend.GPU_RNG_STATES), whatever the GPU.

CuPy's default_rng(seed) keeps 8 * 256 * (the GPU's SM count) XORWOW states, and a draw larger than that takes
values from the states in a card-dependent way; so every generator the engine makes on a device goes through
backend.random_generator. Checked on the fake device, whose default_rng has CuPy's card-dependent count (None).
"""
import numpy as np
from fake_device import xp

from scratchgan import nn
from scratchgan.backend import GPU_RNG_STATES, random_generator
from scratchgan.cli import flags
from scratchgan.cli import train as train_command
from scratchgan.gan import models


def test_the_state_count_fits_cupys_kernels():
    assert GPU_RNG_STATES == 1 << 16  # the value the comment in backend.py argues for
    assert GPU_RNG_STATES % 256 == 0  # CuPy's draw kernels run blocks of 256 threads, one per state


def test_random_generator_keeps_numpys_stream_and_fixes_the_device_states():
    np.testing.assert_array_equal(random_generator(np, 7).random(4), np.random.default_rng(7).random(4))
    on_device = random_generator(xp, 7)
    assert on_device.bit_generator._state_size() == GPU_RNG_STATES
    np.testing.assert_array_equal(on_device.random(4).get(), np.random.default_rng(7).random(4))


def test_every_generator_of_a_training_step_on_the_device_has_the_fixed_states():
    config = dict(train_command.MLP_DEFAULTS, image_size=20, batch_size=8, g_hidden="16,32", d_hidden="24,12", latent_dim=6,
                  loss="wgan-gp", seed=5, dropout=0.3)
    config.update(flags.loss_defaults("wgan-gp"))
    step = models.build_step(config, xp)
    numpy_step = models.build_step(config, np)
    step.step([xp.asarray(np.zeros((8, 20), np.float32)) for _ in range(config["d_steps"])])
    alpha = step.noise.stream("gp_alpha", (8, 1), "uniform")[0]
    dropouts = [m for m in step.D.modules() if isinstance(m, nn.Dropout)]
    assert dropouts and all(m.rng.bit_generator._state_size() == GPU_RNG_STATES for m in dropouts)
    for rng in (step.noise.rng, alpha):
        assert rng.bit_generator._state_size() == GPU_RNG_STATES
    step.noise.start_epoch(1)  # a new epoch's generator too, with the NumPy run's values
    numpy_step.noise.start_epoch(1)
    assert step.noise.rng.bit_generator._state_size() == GPU_RNG_STATES
    np.testing.assert_array_equal(step.noise.sample().get(), numpy_step.noise.sample())
