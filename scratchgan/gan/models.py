"""Builders: the classic MNIST MLP GAN and the DCGAN (each optionally class-conditional) from scratchgan.nn
layers, and a whole GAN step (networks, optimizers, objective, noise) from a config dict of the training flags.

Each network builder draws every weight from one seeded host generator, so the same seed gives the
same network on any backend; call ``.to(backend, dtype)`` on the result to move it and pack its
parameters into one flat buffer. The config builders at the end (``build_gan``, ``build_step``)
do that for you; cli/train.py parses the flags and calls them. Bad values raise ValueError.
"""
from __future__ import annotations

from .. import nn, optim
from ..errors import SettingError
from ..params import make_rng, normal
from . import objectives
from .step import GANStep, NoiseSource


def mlp_generator(latent_dim=100, hidden=(128, 512, 1024), out_dim=784, batchnorm=True,
                  slope=0.2, seed=0, dtype="float32", num_classes=0, embedding_dim=0):
    """z (N, latent_dim) -> image (N, out_dim) in [-1, 1].

    Default: z(100) -> 128 -> 512 (BN) -> 1024 (BN) -> 784, LeakyReLU(0.2), Tanh out. BatchNorm
    (when on) follows every hidden Linear but the first, as in the classic MNIST MLP GAN.
    ``num_classes`` > 0 makes it conditional, G(z, y): the label's code (one-hot, or a learned
    Embedding(num_classes, embedding_dim) when that is > 0) is concatenated to z (nn.Conditional).
    """
    _check_sizes("mlp_generator", latent_dim, hidden, out_dim)
    rng = make_rng(seed)
    code_dim = (embedding_dim or num_classes) if num_classes else 0
    layers, d_in = [], latent_dim + code_dim
    for i, d_out in enumerate(hidden):
        layers.append(nn.Linear(d_in, d_out, seed=rng, dtype=dtype))
        if batchnorm and i > 0:
            layers.append(nn.BatchNorm1d(d_out, eps=1e-5, momentum=0.1, dtype=dtype))
        layers.append(nn.LeakyReLU(slope))
        d_in = d_out
    layers += [nn.Linear(d_in, out_dim, seed=rng, dtype=dtype), nn.Tanh()]
    G = nn.Sequential(*layers)
    if num_classes:
        G = nn.Conditional(G, num_classes, embedding_dim, seed=rng, dtype=dtype)
    return G


def mlp_discriminator(in_dim=784, hidden=(512, 256, 128), slope=0.2, dropout=0.0, output="logits",
                      seed=1, dtype="float32", num_classes=0, embedding_dim=0):
    """image (N, in_dim) -> one score per image (N, 1).

    Default: 784 -> 512 -> 256 -> 128 -> 1, LeakyReLU(0.2). ``output="logits"`` (the default,
    paired with ``losses.bce_with_logits``) ends at the last Linear; ``output="probs"`` adds a
    Sigmoid for ``losses.bce``. ``dropout`` > 0 adds Dropout after every hidden activation.
    ``num_classes`` > 0 makes it conditional, D(x, y), the label's code concatenated to x.
    """
    _check_sizes("mlp_discriminator", in_dim, hidden, 1)
    if output not in ("logits", "probs"):
        raise ValueError(f"mlp_discriminator output must be 'logits' or 'probs', got {output!r}")
    rng = make_rng(seed)
    code_dim = (embedding_dim or num_classes) if num_classes else 0
    layers, d_in = [], in_dim + code_dim
    for i, d_out in enumerate(hidden):
        layers += [nn.Linear(d_in, d_out, seed=rng, dtype=dtype), nn.LeakyReLU(slope)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout, seed=int(rng.integers(2**31))))
        d_in = d_out
    layers.append(nn.Linear(d_in, 1, seed=rng, dtype=dtype))
    if output == "probs":
        layers.append(nn.Sigmoid())
    D = nn.Sequential(*layers)
    return nn.Conditional(D, num_classes, embedding_dim, seed=rng, dtype=dtype) if num_classes else D


def _check_sizes(name, d_in, hidden, d_out):
    sizes = [d_in, *hidden, d_out]
    if any(int(s) != s or s <= 0 for s in sizes):
        raise ValueError(f"{name}: layer sizes must be positive integers, got {sizes}")


# ------------------------------------------------------------------------------------------ DCGAN
DCGAN_SIZES = (28, 32, 64, 128)


def _dcgan_plan(image_size, width):
    """Channel widths and spatial sizes of the DCGAN stages for a square image of ``image_size``.

    128: 4 -> 8 -> 16 -> 32 -> 64 -> 128 with 16w, 8w, 4w, 2w, w (the tutorial's network with one more
    doubling stage); 64: 4 -> 8 -> 16 -> 32 -> 64 with widths 8w, 4w, 2w, w (the tutorial's); 32: 4 -> 8 ->
    16 -> 32 with 4w, 2w, w; 28: 7 -> 14 -> 28 with 2w, w. Returns (first_kernel, [widths from small to big]).
    """
    if image_size == 128:
        return 4, [16 * width, 8 * width, 4 * width, 2 * width, width]
    if image_size == 64:
        return 4, [8 * width, 4 * width, 2 * width, width]
    if image_size == 32:
        return 4, [4 * width, 2 * width, width]
    if image_size == 28:
        return 7, [2 * width, width]
    raise ValueError(f"DCGAN image size must be one of {DCGAN_SIZES}, got {image_size}")


def dcgan_init(module, rng):
    """The DCGAN paper's initialisation: conv weights N(0, 0.02), BatchNorm gamma N(1, 0.02), beta 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            m.W.data[...] = normal(m.W.data.shape, rng, 0.0, 0.02)
            if m.has_bias:
                m.b.data[...] = 0.0
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.gamma.data[...] = normal(m.gamma.data.shape, rng, 1.0, 0.02)
            m.beta.data[...] = 0.0
    return module


def dcgan_generator(latent_dim=100, image_size=64, channels=3, width=64, seed=0, dtype="float32",
                    num_classes=0, embedding_dim=0):
    """z (N, latent_dim) -> images (N, channels, S, S) in [-1, 1], S = ``image_size`` (28, 32, 64 or 128).

    The tutorial's generator for 64: ConvTranspose2d(nz, 8w, 4, 1, 0) from 1x1 to 4x4, then
    ConvTranspose2d(k4, s2, p1) doubling the size each stage, BatchNorm2d + ReLU after each but the
    last, Tanh out. ``width`` is the tutorial's ngf. ``num_classes`` > 0 makes it conditional, G(z, y):
    the label's code (one-hot, or a learned Embedding(num_classes, embedding_dim)) is concatenated to z
    (nn.Conditional), so the first ConvTranspose2d takes latent_dim + code channels.
    """
    first_kernel, widths = _dcgan_plan(image_size, width)
    rng = make_rng(seed)
    z_dim = latent_dim + ((embedding_dim or num_classes) if num_classes else 0)
    layers = [nn.Reshape(z_dim, 1, 1),
              nn.ConvTranspose2d(z_dim, widths[0], first_kernel, 1, 0, bias=False, seed=rng, dtype=dtype),
              nn.BatchNorm2d(widths[0], dtype=dtype), nn.ReLU()]
    for c_in, c_out in zip(widths, widths[1:]):
        layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False, seed=rng, dtype=dtype),
                   nn.BatchNorm2d(c_out, dtype=dtype), nn.ReLU()]
    layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1, bias=False, seed=rng, dtype=dtype), nn.Tanh()]
    G = dcgan_init(nn.Sequential(*layers), rng)
    if num_classes:
        G = nn.Conditional(G, num_classes, embedding_dim, seed=rng, dtype=dtype)
    return G


def dcgan_discriminator(image_size=64, channels=3, width=64, seed=1, dtype="float32", num_classes=0):
    """images (N, channels, S, S) -> logits (N, 1). The tutorial's discriminator for 64:
    Conv2d(k4, s2, p1) halving the size each stage, LeakyReLU(0.2), BatchNorm2d after all but the
    first, then Conv2d(8w, 1, 4, 1, 0) from 4x4 to 1x1. ``width`` is the tutorial's ndf.

    ``num_classes`` > 0 makes it the projection discriminator D(x, y) = psi(phi(x)) + <V[y], phi(x)>
    (Miyato & Koyama 2018, nn.ProjectionDiscriminator): phi(x) is the last feature map, flattened
    (F = 8w * 4 * 4 for 64), and psi the last Conv2d written as a Linear(F, 1) on it."""
    first_kernel, widths = _dcgan_plan(image_size, width)
    widths = widths[::-1]  # small to big channel counts as the image shrinks
    rng = make_rng(seed)
    layers = [nn.Conv2d(channels, widths[0], 4, 2, 1, bias=False, seed=rng, dtype=dtype), nn.LeakyReLU(0.2)]
    for c_in, c_out in zip(widths, widths[1:]):
        layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False, seed=rng, dtype=dtype),
                   nn.BatchNorm2d(c_out, dtype=dtype), nn.LeakyReLU(0.2)]
    if num_classes:  # phi(x): the k x k map flattened; psi and the class embedding in the Projection head
        features = dcgan_init(nn.Sequential(*layers, nn.Flatten()), rng)
        F = widths[-1] * first_kernel * first_kernel
        return nn.ProjectionDiscriminator(features, F, num_classes, seed=rng, dtype=dtype)
    layers += [nn.Conv2d(widths[-1], 1, first_kernel, 1, 0, bias=False, seed=rng, dtype=dtype), nn.Flatten()]
    return dcgan_init(nn.Sequential(*layers), rng)


# ------------------------------------------------------------------ from a config of the training flags
def parse_sizes(text, setting):
    """"128,512,1024" -> (128, 512, 1024); SettingError naming ``setting`` (a config key) for anything else."""
    try:
        sizes = tuple(int(s) for s in str(text).split(",") if s.strip())
    except ValueError:
        sizes = ()
    if not sizes or any(s <= 0 for s in sizes):
        raise SettingError(setting, f"must be comma-separated positive integers, got {text!r}")
    return sizes


def build_mlp_gan(config, xp):
    """G, D (moved to the backend, packed) from a config dict of the training flags."""
    dtype = config["dtype"]
    # conditional runs: one-hot labels or a learned embedding joined to z and to the image
    labels = {"num_classes": config.get("num_classes", 10), "embedding_dim": config.get("embedding_dim", 0)} \
        if config.get("conditional") else {}
    G = mlp_generator(latent_dim=config["latent_dim"], hidden=parse_sizes(config["g_hidden"], "g_hidden"),
                      out_dim=config["image_size"], batchnorm=config["batchnorm"],
                      seed=[config["seed"], 1], dtype=dtype, **labels).to(xp, dtype)
    D = mlp_discriminator(in_dim=config["image_size"], hidden=parse_sizes(config["d_hidden"], "d_hidden"),
                          dropout=config["dropout"], output=config["loss_on"],
                          seed=[config["seed"], 2], dtype=dtype, **labels).to(xp, dtype)
    return G, D


def build_dcgan(config, xp):
    """The DCGAN pair for square images of config["resolution"] with config["channels"] channels."""
    dtype = config["dtype"]
    classes = config.get("num_classes", 10) if config.get("conditional") else 0
    if classes and config["loss_on"] == "probs":
        raise SettingError("loss_on", "must be 'logits' for the conditional DCGAN: its projection discriminator "
                                      "ends at the logit psi(phi(x)) + <V[y], phi(x)>")
    G = dcgan_generator(config["latent_dim"], config["resolution"], config["channels"],
                        width=config["g_width"], seed=[config["seed"], 1], dtype=dtype, num_classes=classes,
                        embedding_dim=config.get("embedding_dim", 0))
    D = dcgan_discriminator(config["resolution"], config["channels"], width=config["d_width"],
                            seed=[config["seed"], 2], dtype=dtype, num_classes=classes)
    if config["loss_on"] == "probs":
        D.layers.append(nn.Sigmoid())
    return G.to(xp, dtype), D.to(xp, dtype)


def build_gan(config, xp):
    """G and D for the config's architecture ("mlp" or "dcgan"), on backend xp."""
    return build_dcgan(config, xp) if config.get("arch") == "dcgan" else build_mlp_gan(config, xp)


def make_optimizer(config, params, lr):
    """Adam (betas from config beta1, beta2) or RMSprop (torch's defaults), per config["optimizer"]."""
    if config.get("optimizer", "adam") == "rmsprop":
        return optim.RMSprop(params, lr=lr)
    return optim.Adam(params, lr=lr, betas=(config["beta1"], config["beta2"]))


def build_step(config, xp):
    """The GANStep of a run: G and D (build_gan), their optimizers, the objective and the noise source."""
    loss = config.get("loss", "bce")
    objective = objectives.make_objective(loss, on_logits=config["loss_on"] == "logits",
                                          real_target=1.0 - config["label_smoothing"],
                                          gp_lambda=config.get("gp_lambda") or None)
    G, D = build_gan(config, xp)
    if config.get("spectral_norm"):  # D's Linear/Conv2d through W / sigma(W) (nn/spectral_norm.py)
        nn.apply_spectral_norm(D, seed=[config["seed"], 3])
    opt_G = make_optimizer(config, G.parameters(), config["lr_g"] or config["lr"])
    opt_D = make_optimizer(config, D.parameters(), config["lr_d"] or config["lr"])
    noise = NoiseSource(xp, config["batch_size"], config["latent_dim"], seed=config["seed"], dtype=config["dtype"])
    return GANStep(G, D, opt_G, opt_D, objective, config["latent_dim"], noise, clip=config.get("clip"),
                   gp_lambda=config.get("gp_lambda") or None, instance_noise=config.get("instance_noise", 0.0),
                   r1=config.get("r1", 0.0), ema=config.get("ema", 0.0),
                   diffaugment=config.get("diffaugment") or None)
