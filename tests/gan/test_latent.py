"""scratchgan.gan.latent: the seeds a user names, the noise each seed gives, truncation, slerp."""
import numpy as np
import pytest
from tolerances import assert_close

from scratchgan.gan import latent

F64 = 1e-12  # float64 arithmetic on numbers of size ~1-10: a few ulps, relative


@pytest.mark.parametrize("text, seeds", [("0-4", [0, 1, 2, 3, 4]), ("3,5,9", [3, 5, 9]), ("7", [7]),
                                         ("0-2,9", [0, 1, 2, 9]), (" 4 , 2 ", [4, 2]), ("5-5", [5])])
def test_parse_seeds(text, seeds):
    assert latent.parse_seeds(text) == seeds


@pytest.mark.parametrize("text, message", [("5-2", "goes downwards; write it as 2-5"), ("abc", "expected seeds"),
                                           ("", "expected seeds"), ("1,,2", "expected seeds"),
                                           ("-3", "expected seeds"), ("1-", "expected seeds"),
                                           ("3,5,3", "seed 3 more than once"), ("0-2,1", "seed 1 more than once"),
                                           ("0-999999999", "more than 100,000 seeds")])
def test_parse_seeds_refuses(text, message):
    with pytest.raises(ValueError, match=message):
        latent.parse_seeds(text)


def test_a_seed_gives_the_same_noise_whatever_else_is_asked_for():
    alone = latent.seed_noise([5], 16)
    among = latent.seed_noise([3, 5, 9], 16)
    assert np.array_equal(alone[0], among[1])
    # and it is the first row of the batch that `sample --seed 5` draws
    assert np.array_equal(alone[0], np.random.default_rng(5).standard_normal((4, 16))[0])
    assert not np.array_equal(among[0], among[1])


def test_truncation_scales_towards_the_mean():
    z = latent.seed_noise([0, 1], 32)
    assert np.array_equal(latent.truncate(z, 1.0), z)
    assert_close(latent.truncate(z, 0.5), 0.5 * z, rtol=F64)
    for psi in (0.0, -1.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            latent.truncate(z, psi)


def test_slerp_endpoints_are_the_seeds_vectors():
    z0, z1 = latent.seed_noise([0, 1], 64)
    walk = latent.slerp(z0, z1, [0.0, 1.0])
    assert_close(walk[0], z0, rtol=F64)
    assert_close(walk[1], z1, rtol=F64)


def test_slerp_follows_the_formula_on_the_unit_circle():
    e0, e1 = np.eye(2)
    t = np.linspace(0, 1, 7)
    expected = np.stack([np.cos(t * np.pi / 2), np.sin(t * np.pi / 2)], axis=1)  # a quarter turn, omega = pi/2
    assert_close(latent.slerp(e0, e1, t), expected, rtol=F64)


def test_slerp_keeps_the_norm_where_lerp_dips():
    rng = np.random.default_rng(0)
    z0, z1 = rng.standard_normal((2, 100))
    z1 *= np.linalg.norm(z0) / np.linalg.norm(z1)  # equal norms
    t = np.linspace(0, 1, 11)
    norms = np.linalg.norm(latent.slerp(z0, z1, t), axis=1)
    assert_close(norms, np.full_like(norms, np.linalg.norm(z0)), rtol=F64)
    lerp = np.linalg.norm((1 - t)[:, None] * z0 + t[:, None] * z1, axis=1)
    assert lerp[5] < 0.8 * norms[5]  # nearly orthogonal Gaussian vectors: lerp's midpoint is ~1/sqrt(2) as long
    # orthogonal vectors of norms a and 3a: |slerp|^2 = a^2 cos^2(t pi/2) + 9 a^2 sin^2(t pi/2), from a to 3a
    u = z1 - (z1 @ z0) / (z0 @ z0) * z0
    u *= 3 * np.linalg.norm(z0) / np.linalg.norm(u)
    a, s = np.linalg.norm(z0), np.sin(t * np.pi / 2)
    assert_close(np.linalg.norm(latent.slerp(z0, u, t), axis=1), a * np.sqrt(1 + 8 * s ** 2), rtol=F64)


@pytest.mark.parametrize("factor", [2.0, -1.0, 0.0])
def test_slerp_falls_back_to_lerp_for_parallel_vectors(factor):
    z0 = latent.seed_noise([4], 10)[0]
    z1 = factor * z0  # parallel, opposite, or zero: no great circle through them
    t = np.linspace(0, 1, 5)
    walk = latent.slerp(z0, z1, t)
    assert np.isfinite(walk).all()
    assert_close(walk, (1 - t)[:, None] * z0 + t[:, None] * z1, rtol=F64)


def test_walk_noise_passes_through_every_seed():
    from scratchgan.cli.sample import walk_noise
    zs = latent.seed_noise([0, 5, 9], 12)
    walk = walk_noise(zs, 4)
    assert walk.shape == (9, 12)
    for i, row in enumerate((0, 4, 8)):
        assert_close(walk[row], zs[i], rtol=F64)
