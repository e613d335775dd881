"""Quality metrics during a training run (``--eval-every``): every few steps, ``n`` samples from one fixed
noise batch are measured against the run's real images with the dataset's evaluator (metrics.py's maths),
and a fall in coverage or spread is reported once as a possible mode collapse."""
from __future__ import annotations

import numpy as np

from ..backend import array_module, to_device, to_numpy
from ..data import registry
from ..eval import fid
from ..eval.metrics import DEFAULT_K, METRIC_KEYS, RealReference, collapse_check, compare
from ..gan.step import generate


class EvalHook:
    """Periodic quality metrics during training, on ``n`` samples from a fixed noise batch.

        hook = EvalHook(evaluator, real_images, n=2000, every=1000, seed=0)
        if hook.due(step):
            values = hook(G, step)        # {"frechet_distance": ..., ...}: floats for metrics.csv
            if hook.warning: log(hook.warning)

    ``real_images``: uint8 or [-1, 1] floats (N, ...) on any backend (e.g. a BatchLoader's ``x``); a
    seeded subset of ``n`` of them is the reference. ``history`` keeps every row; ``warning`` is the
    collapse_check text when a call newly detects a fall (None otherwise, so it is logged once).
    """

    def __init__(self, evaluator, real_images, n=2000, every=1000, seed=0, k=DEFAULT_K, latent_dim=None):
        if int(every) < 0 or int(n) < k + 2:
            raise ValueError(f"EvalHook needs every >= 0 and n >= {k + 2}, got every={every}, n={n}")
        self.evaluator, self.every, self.seed, self.k = evaluator, int(every), int(seed), int(k)
        self.latent_dim = latent_dim
        N = real_images.shape[0]
        self.n = min(int(n), N)
        rng = np.random.default_rng([self.seed, 0xE7A1])
        idx = np.sort(rng.choice(N, self.n, replace=False))
        subset = real_images[to_device(idx, array_module(real_images))]
        self.reference = RealReference(evaluator, subset, self.k)
        self.z = None  # the fixed noise, made at the first call (latent size and backend come from G)
        self.history = []
        self.warning = None
        self._flagged = set()

    def load_history(self, rows):
        """Refill ``history`` from metrics.csv rows (after a resume), so collapse_check sees the past."""
        self.history = [{"step": int(r["step"]), **{k: r.get(k) for k in METRIC_KEYS}}
                        for r in rows if r.get("classes_covered") not in (None, "")]
        return self

    def due(self, step):
        return self.every > 0 and step > 0 and step % self.every == 0

    def fixed_noise(self, G):
        if self.z is None:
            latent = self.latent_dim
            if latent is None:  # an MLP generator starts with Linear(latent, ...)
                first = G[0] if hasattr(G, "__getitem__") else None
                if not hasattr(first, "in_features"):
                    raise ValueError("EvalHook: pass latent_dim= (this generator does not start with Linear)")
                latent = first.in_features
            z = np.random.default_rng([self.seed, 0x2E]).standard_normal((self.n, latent))
            self.z = to_device(z, G.xp, G.dtype)
        return self.z

    def __call__(self, G, step, batch_size=1000):
        """Metrics of G's samples from the fixed noise at ``step``: {key: float} for METRIC_KEYS."""
        z = self.fixed_noise(G)
        feats, probs = [], []
        for s in range(0, self.n, batch_size):
            f, p = self.evaluator.embed(generate(G, z[s:s + batch_size]))
            feats.append(f)
            probs.append(p)
        values = compare(self.reference, features=np.concatenate(feats), probs=np.concatenate(probs))
        row = {key: values[key] for key in METRIC_KEYS}
        self.history.append({"step": int(step), **row})
        text = collapse_check(self.history, reference_spread=self.reference.spread)
        flags = set()
        if text:
            flags = {name for name in ("classes covered", "feature spread") if name in text}
        new = flags - self._flagged
        self._flagged = flags
        self.warning = text if new else None
        return row


def measured(dataset):
    """Whether runs on ``dataset`` get a quality metric: the evaluator's classifiers know 28x28 grey digits and
    clothes only (registry's mnist_like: mnist, fashion-mnist, mnist-bundled)."""
    return dataset in registry.BY_NAME and registry.BY_NAME[dataset].mnist_like


def no_metric(dataset, checkpoint="RUN/checkpoint.npz"):
    """The one line that says a ``dataset`` run gets no metric from the classifier, and the commands that do score
    its samples (the one place this advice is written)."""
    known = ", ".join(name for name, d in registry.BY_NAME.items() if d.mnist_like)
    return (f"{dataset} runs get no quality metric from the classifier (it knows only {known}); the Inception FID "
            f"measures them: `scratchgan evaluate {checkpoint} --metric fid`, or --eval-metric fid while training")


def make_eval_hook(config, real_images, backend="numpy", n=2000, every=None, log=None):
    """An EvalHook for a training run's config (dataset, data_dir, seed, eval_every, latent_dim, evaluator).

    The default CNN of MNIST and Fashion-MNIST ships with the package (loaded in milliseconds); any other
    evaluator of kind ``config["evaluator"]`` comes from the cache, or is trained now (seconds for the MLP;
    minutes of CPU for a CNN), with a progress bar on a terminal and lines through ``log`` otherwise.
    ``real_images``: the run's training images, e.g. ``loader.x``. ``config["eval_metric"] == "fid"``: a FIDHook
    instead (make_fid_hook).
    """
    if config.get("eval_metric") == "fid":
        return make_fid_hook(config, real_images, backend=backend, n=n, every=every, log=log)
    from ..eval.evaluator import get_evaluator  # here, not at the top: loaded only when a run asks for metrics

    evaluator = get_evaluator(config["dataset"], config.get("data_dir"), kind=config.get("evaluator", "cnn"),
                              backend=backend, log=log)
    if log:
        log(evaluator.describe())
    every = config.get("eval_every", 0) if every is None else every
    return EvalHook(evaluator, real_images, n=n, every=every, seed=int(config.get("seed", 0)),
                    latent_dim=config.get("latent_dim"))


# ---------------------------------------------------------------------------------- --eval-metric fid

class FIDHook:
    """The Inception FID (scratchgan.eval.fid) every ``every`` steps: ``n`` samples from one fixed noise batch
    against ``n`` of the run's real images, whose statistics are computed once (and cached in ``cache``).

        hook = FIDHook(net, real_images, n=2000, every=5000, image_shape=(1, 28, 28), cache=path, log=print)
        if hook.due(step):
            values = hook(G, step)        # {"fid": ...}: a float for metrics.csv; the protocol line is logged

    ``real_images``: uint8 or [-1, 1] floats (N, ...) on any backend; ``image_shape``: what G's flat output
    is reshaped to ((C, H, W) or (H, W)); ``source``: the real images in words, for the protocol line.
    """

    def __init__(self, net, real_images, n=fid.DEFAULT_N, every=1000, seed=0, latent_dim=None, image_shape=None,
                 source="the run's images", cache=None, log=None):
        if int(every) < 0 or int(n) < 2:
            raise ValueError(f"FIDHook needs every >= 0 and n >= 2, got every={every}, n={n}")
        self.net, self.every, self.seed, self.latent_dim = net, int(every), int(seed), latent_dim
        self.image_shape, self.source, self.log = image_shape, source, log
        N = real_images.shape[0]
        self.n = min(int(n), N)
        self.real = real_images[to_device(fid.choose(N, self.n, self.seed), array_module(real_images))]
        self.cache = cache
        self.real_stats = None  # computed at the first evaluation, not while the run starts
        self.z = None
        self.history = []
        self.warning = None  # (no collapse check: the classifier's coverage and spread are not measured here)

    def load_history(self, rows):
        """Refill ``history`` from metrics.csv rows (after a resume)."""
        self.history = [{"step": int(r["step"]), "fid": r["fid"]} for r in rows if r.get("fid") not in (None, "")]
        return self

    def due(self, step):
        return self.every > 0 and step > 0 and step % self.every == 0

    def __call__(self, G, step, batch_size=500):
        """{"fid": float} of G's samples from the fixed noise at ``step``; logs the FID with its protocol."""
        if self.real_stats is None:
            self.real_stats = fid.real_statistics(self.net, self.real, self.cache, self.source, log=self.log,
                                                  bar=False)
        if self.z is None:
            z = np.random.default_rng([self.seed, 0xF1D2]).standard_normal((self.n, int(self.latent_dim)))
            self.z = to_device(z, G.xp, G.dtype)
        images = np.concatenate([to_numpy(generate(G, self.z[s:s + batch_size]))
                                 for s in range(0, self.n, batch_size)])
        if images.ndim == 2 and self.image_shape is not None:
            images = images.reshape(len(images), *self.image_shape)
        value = fid.frechet_distance(fid.statistics(fid.features(self.net, images, bar=False)), self.real_stats)
        if self.log:
            self.log(f"step {step}: " + fid.protocol_line(value, self.net, self.n, self.n, self.source,
                                                          fid.is_grey(images)))
        self.history.append({"step": int(step), "fid": value})
        return {"fid": value}


def make_fid_hook(config, real_images, backend="numpy", n=fid.DEFAULT_N, every=None, log=None):
    """A FIDHook for a training run's config (dataset, split, seed, eval_every, latent_dim, image_shape): the FID
    Inception network loaded now (fid.load_network), the cost said in one line first."""
    from ..data import data_root

    every = config.get("eval_every", 0) if every is None else every
    n = min(int(n), int(real_images.shape[0]))
    if log:
        log(f"--eval-metric fid: every {every} steps, Inception-v3 features of {n} generated images (and once of "
            f"{n} real ones): minutes on a CPU each time")
    net = fid.load_network(backend, log=log)
    source = f"{config['dataset']} {config['split']}"
    tag = "x".join(str(s) for s in real_images.shape[1:]) + "-run"  # the run's loader images (after --limit)
    cache = fid.stats_cache_path(data_root(), config["dataset"], config["split"], n, fid.weights_sha256(net), tag)
    shape = config.get("image_shape")
    return FIDHook(net, real_images, n=n, every=every, seed=int(config.get("seed", 0)),
                   latent_dim=config.get("latent_dim"), image_shape=tuple(shape) if shape else None, source=source,
                   cache=cache, log=log)
