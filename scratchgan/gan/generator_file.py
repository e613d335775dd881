"""A trained generator from its file, and images from it in batches: what `sample`, `interpolate`,
`evaluate` and `export` share.

Its own module rather than step.py: loading rebuilds G from the file's config with the builders
(models.py, which import step.py) and checks the file (checkpoint_schema.py); step.py stays the step.
"""
from __future__ import annotations

import numpy as np

from ..backend import to_device, to_numpy
from ..checkpoint import CheckpointError
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
