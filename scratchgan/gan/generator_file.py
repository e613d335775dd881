"""A trained generator from its file, and images from it in batches: what `sample`, `interpolate`,
`evaluate` and `export` share, and the public ``scratchgan.load_generator`` (``load``, the ``Generator``
whose ``generate`` makes the images `scratchgan sample --seeds` writes).

Its own module rather than step.py: loading rebuilds G from the file's config with the builders
(models.py, which import step.py) and checks the file (checkpoint_schema.py); step.py stays the step.
"""
from __future__ import annotations

import numbers

import numpy as np

from ..backend import get_xp, to_device, to_numpy
from ..checkpoint import CheckpointError
from ..data.transforms import to_uint8
from ..errors import SettingError
from ..nn import Conditional
from . import latent
from .checkpoint_schema import check_network_shapes, load_run_checkpoint
from .ema import use_ema_weights
from .models import build_gan
from .step import generate


def load_generator(path, xp, log=None):
    """(G, config, meta) from a training checkpoint or a generator exported from one (export.py), on
    backend ``xp``; the averaged weights of an --ema run. CheckpointError for a file that cannot be one."""
    built = {}

    def build_to_fit(meta, shapes):  # on the headers: G is built and compared before any array is read
        try:
            built["G"], _ = build_gan(meta["config"], xp)
        except KeyError as e:
            raise CheckpointError(f"{path}: its config lacks {e}; is it a scratchgan training checkpoint?") from None
        check_network_shapes(path, built["G"], "G/", shapes)

    arrays, meta = load_run_checkpoint(path, need="generator", check=build_to_fit)
    G, config = built["G"], meta["config"]
    try:
        G.load_state_dict({k[2:]: v for k, v in arrays.items() if k.startswith("G/")})
        use_ema_weights(G, arrays, log=log)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return G, config, meta


def generate_on_host(G, z, labels=None, batch_size=1000):
    """G(z) in batches, float32 on the host in [-1, 1], shaped as G makes them (n, ...). ``z``: (n, latent)
    on the host; ``labels`` (n,) for a conditional G, else None (each batch makes the classes in turn)."""
    out = []
    for s in range(0, len(z), batch_size):
        y = None if labels is None else to_device(labels[s:s + batch_size], G.xp, np.int64)
        out.append(to_numpy(generate(G, to_device(z[s:s + batch_size], G.xp, G.dtype), y)).astype(np.float32))
    return np.concatenate(out)


def class_index(config, label, num_classes):
    """The class index of ``label``: an int, its digits ("3"), or a class name the run recorded
    (config["class_names"], an image folder's sub-folders or dataset.json classes). ValueError saying what
    the generator knows otherwise."""
    names = list(config.get("class_names") or [])
    if isinstance(label, str):
        if label in names:
            return names.index(label)
        if not label.strip().isdigit():
            known = f"its classes are {', '.join(names[:12])}{', ...' if len(names) > 12 else ''}" if names \
                else "its classes have no names: give an index"
            raise ValueError(f"this generator knows no class {label!r}; {known} (or an index 0 to {num_classes - 1})")
        label = int(label)
    if isinstance(label, bool) or not isinstance(label, numbers.Integral) or not 0 <= label < num_classes:
        raise ValueError(f"class {label!r}: this generator knows classes 0 to {num_classes - 1}")
    return int(label)


# ------------------------------------------------------------------------------ the public API
def load(path, backend="numpy", log=None):
    """``scratchgan.load_generator``: (Generator, config) of a training checkpoint or an exported generator,
    checked as `scratchgan sample` checks it (CheckpointError for a file that cannot be one); ``backend``
    "numpy" or "cupy"; ``log``: a function for the loader's notes (the EMA weights used), None for none."""
    G, config, _ = load_generator(path, get_xp(backend), log=log)
    return Generator(G, config), config


class Generator:
    """A trained generator: ``generate(n, seed=0, truncation=1.0, label=None)`` -> uint8 images.

    ``network`` is the nn.Module itself (``forward(z)`` in [-1, 1]); ``latent_dim``, ``image_shape`` ((H, W) or
    (C, H, W), as trained), ``num_classes`` (None for an unconditional one) and ``class_names`` (an image
    folder's classes, by index; None where the data named none) describe it."""

    def __init__(self, network, config):
        self.network, self.config = network, config
        self.latent_dim = int(config["latent_dim"])
        self.image_shape = tuple(config.get("image_shape", [28, 28]))
        self.num_classes = network.num_classes if isinstance(network, Conditional) else None
        self.class_names = list(config["class_names"]) if config.get("class_names") else None

    def __repr__(self):
        kind = f"conditional, {self.num_classes} classes" if self.num_classes else "unconditional"
        return f"Generator({self.config.get('arch', 'mlp')}, {kind}, images {self.image_shape}, z {self.latent_dim})"

    def generate(self, n=None, seed=0, truncation=1.0, label=None):
        """uint8 images (n, H, W) grey or (n, H, W, 3) RGB: image i from the noise of seed ``seed + i``, the PNG
        `scratchgan sample --seeds` writes for that seed. ``seed`` may also list the seeds ([3, 5, 9] or "0-99"),
        one image each (``n`` then None or their number). ``truncation``: psi in (0, 1]. ``label``: a class (an
        index, or a name of ``class_names``), or one index per image, for a conditional generator (without it,
        the classes in turn). SettingError names the argument that cannot be used."""
        seeds = self._seeds(n, seed)
        labels = self._labels(label, len(seeds))
        try:
            z = latent.truncate(latent.seed_noise(seeds, self.latent_dim), truncation)
        except (TypeError, ValueError):
            raise SettingError("truncation", f"must be a number in (0, 1], got {truncation!r}") from None
        images = generate_on_host(self.network, z, labels).reshape((-1, *self.image_shape))
        pixels = to_uint8(images)                                       # (n, H, W) or (n, C, H, W)
        if pixels.ndim == 4:                                            # (n, C, H, W) -> (n, H, W, C)
            pixels = pixels[:, 0] if pixels.shape[1] == 1 else np.ascontiguousarray(pixels.transpose(0, 2, 3, 1))
        return pixels

    @staticmethod
    def _seeds(n, seed):
        if n is not None and (not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1):
            raise SettingError("n", f"must be a positive integer, got {n!r}")
        if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
            if seed < 0:
                raise SettingError("seed", f"must be 0 or more, got {seed}")
            return list(range(int(seed), int(seed) + (1 if n is None else int(n))))
        try:
            seeds = latent.parse_seeds(seed) if isinstance(seed, str) else [int(s) for s in seed]
            seeds = latent.parse_seeds(",".join(map(str, seeds)))  # 0 or more, each once
        except (TypeError, ValueError) as e:
            raise SettingError("seed", f"must be a seed, a list of seeds or a range such as '0-99' ({e})") from None
        if not seeds or (n is not None and n != len(seeds)):
            raise SettingError("n", f"is {n} but seed lists {len(seeds)} seeds; leave n out")
        return seeds

    def _labels(self, label, n):
        """(n,) class labels, or None for an unconditional generator (which refuses a label)."""
        K = self.num_classes
        if K is None:
            if label is not None:
                raise SettingError("label", "needs a conditional generator (trained with --conditional); this one "
                                            "is unconditional")
            return None
        if label is None:
            return np.arange(n) % K
        if isinstance(label, str):  # a class name the run recorded (an image folder's), or its index as text
            try:
                label = class_index(self.config, label, K)
            except ValueError as e:
                raise SettingError("label", str(e)) from None
        labels = np.asarray(label)
        if labels.ndim == 0:
            labels = np.full(n, labels)
        if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= K:
            raise SettingError("label", f"must be a class from 0 to {K - 1}, or one per image ({n}), got {label!r}")
        return labels
