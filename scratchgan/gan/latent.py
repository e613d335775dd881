"""The generator's noise for the sampling commands: seeds, truncation, spherical interpolation.

- ``parse_seeds("0-99")``, ``parse_seeds("3,5,9")``: the seeds a user asks for; each seed is one noise
  vector ``seed_noise(seeds, D)[i] = default_rng(seed).standard_normal(D)``, the same whatever other seeds
  are asked for (and the first row of ``--seed S``'s batch).
- ``truncate(z, psi)``: the truncation trick for Gaussian z, ``z <- psi z`` (towards the mean latent, 0).
- ``slerp(z0, z1, t)``: the walk between two noise vectors along the great circle (Shoemake 1985).
All on the host in float64; the caller moves the result to the generator's device and dtype.
"""
from __future__ import annotations

import numpy as np

MAX_SEEDS = 100_000  # a guard against --seeds 0-999999999 filling the memory with noise vectors


def parse_seeds(text):
    """"0-99" -> [0, ..., 99]; "3,5,9" -> [3, 5, 9]; mixed "0-3,7" too. ValueError says what is wrong."""
    seeds = []
    for item in str(text).split(","):
        item = item.strip()
        low, dash, high = item.partition("-")
        try:
            a = int(low)
            b = int(high) if dash else a
        except ValueError:
            raise ValueError(f"expected seeds such as 0-99 or 3,5,9, got {text!r}") from None
        if a < 0 or b < 0:
            raise ValueError(f"seeds are 0 or more, got {text!r}")
        if b < a:
            raise ValueError(f"range {item} goes downwards; write it as {b}-{a}")
        if len(seeds) + (b - a + 1) > MAX_SEEDS:
            raise ValueError(f"{text} asks for more than {MAX_SEEDS:,} seeds")
        seeds.extend(range(a, b + 1))
    if len(set(seeds)) < len(seeds):
        seen = set()
        twice = next(s for s in seeds if s in seen or seen.add(s))
        raise ValueError(f"{text} names seed {twice} more than once")
    return seeds


def seed_noise(seeds, latent_dim):
    """(len(seeds), latent_dim) float64: row i is N(0, I) noise drawn from ``default_rng(seeds[i])``."""
    z = np.empty((len(seeds), int(latent_dim)))
    for i, seed in enumerate(seeds):
        z[i] = np.random.default_rng(seed).standard_normal(int(latent_dim))
    return z


def truncate(z, psi):
    """The truncation trick for z ~ N(0, I): ``psi z``, pulling each vector towards the mean latent 0.

    psi = 1 leaves z as drawn; smaller psi trades variety for more typical images (0 < psi <= 1).
    """
    psi = float(psi)
    if not 0.0 < psi <= 1.0:
        raise ValueError(f"truncation psi must be in (0, 1], got {psi}")
    return z * psi


def slerp(z0, z1, t, eps=1e-7):
    """Spherical linear interpolation between vectors z0 and z1 (D,) at fractions t (T,) -> (T, D).

        omega = arccos(z0 . z1 / (|z0| |z1|))
        slerp(z0, z1; t) = sin((1 - t) omega) / sin(omega) z0 + sin(t omega) / sin(omega) z1

    t = 0 gives z0, t = 1 gives z1; for |z0| = |z1| the norm stays |z0| all the way (lerp's dips in the
    middle, where Gaussian noise is never found). Where sin(omega) < eps (parallel or opposite vectors,
    or a zero vector) the great circle is not defined, and it falls back to lerp: (1 - t) z0 + t z1.
    """
    z0, z1 = np.asarray(z0, dtype=np.float64), np.asarray(z1, dtype=np.float64)
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))[:, None]                  # (T, 1)
    n0, n1 = np.linalg.norm(z0), np.linalg.norm(z1)
    cos = float(z0 @ z1) / (n0 * n1) if n0 > 0 and n1 > 0 else 1.0
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    so = np.sin(omega)
    if so < eps:
        return (1.0 - t) * z0 + t * z1                                            # (T, D)
    return np.sin((1.0 - t) * omega) / so * z0 + np.sin(t * omega) / so * z1    # (T, D)
