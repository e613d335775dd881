"""Model builders: the classic MNIST MLP GAN (and, later, DCGAN) from scratchgan.nn layers.

Each builder draws every weight from one seeded host generator, so the same seed gives the same
network on any backend; call ``.to(backend, dtype)`` on the result to move it and pack its
parameters into one flat buffer.
"""
from __future__ import annotations

from . import nn
from .params import make_rng


def mlp_generator(latent_dim=100, hidden=(128, 512, 1024), out_dim=784, batchnorm=True,
                  slope=0.2, seed=0, dtype="float32"):
    """z (N, latent_dim) -> image (N, out_dim) in [-1, 1].

    Default: z(100) -> 128 -> 512 (BN) -> 1024 (BN) -> 784, LeakyReLU(0.2), Tanh out. BatchNorm
    (when on) follows every hidden Linear but the first, as in the classic MNIST MLP GAN.
    """
    _check_sizes("mlp_generator", latent_dim, hidden, out_dim)
    rng = make_rng(seed)
    layers, d_in = [], latent_dim
    for i, d_out in enumerate(hidden):
        layers.append(nn.Linear(d_in, d_out, seed=rng, dtype=dtype))
        if batchnorm and i > 0:
            layers.append(nn.BatchNorm1d(d_out, eps=1e-5, momentum=0.1, dtype=dtype))
        layers.append(nn.LeakyReLU(slope))
        d_in = d_out
    layers += [nn.Linear(d_in, out_dim, seed=rng, dtype=dtype), nn.Tanh()]
    G = nn.Sequential(*layers)
    G.first_layer().need_input_grad = False  # nobody uses dL/dz: skip that matmul
    return G


def mlp_discriminator(in_dim=784, hidden=(512, 256, 128), slope=0.2, dropout=0.0, output="logits",
                      seed=1, dtype="float32"):
    """image (N, in_dim) -> one score per image (N, 1).

    Default: 784 -> 512 -> 256 -> 128 -> 1, LeakyReLU(0.2). ``output="logits"`` (the default,
    paired with ``losses.bce_with_logits``) ends at the last Linear; ``output="probs"`` adds a
    Sigmoid for ``losses.bce``. ``dropout`` > 0 adds Dropout after every hidden activation.
    """
    _check_sizes("mlp_discriminator", in_dim, hidden, 1)
    if output not in ("logits", "probs"):
        raise ValueError(f"mlp_discriminator output must be 'logits' or 'probs', got {output!r}")
    rng = make_rng(seed)
    layers, d_in = [], in_dim
    for i, d_out in enumerate(hidden):
        layers += [nn.Linear(d_in, d_out, seed=rng, dtype=dtype), nn.LeakyReLU(slope)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout, seed=int(rng.integers(2**31))))
        d_in = d_out
    layers.append(nn.Linear(d_in, 1, seed=rng, dtype=dtype))
    if output == "probs":
        layers.append(nn.Sigmoid())
    return nn.Sequential(*layers)


def _check_sizes(name, d_in, hidden, d_out):
    sizes = [d_in, *hidden, d_out]
    if any(int(s) != s or s <= 0 for s in sizes):
        raise ValueError(f"{name}: layer sizes must be positive integers, got {sizes}")
