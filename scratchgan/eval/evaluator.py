"""The evaluator: a small classifier for the dataset, built and trained with scratchgan's own layers.

Its penultimate layer is the embedding in which scratchgan.eval.metrics measures generated images (the role
Inception-v3 plays for FID, at MNIST scale). Two kinds, each a builder; one training loop, one loss:

- ``cnn`` (the default): two stride-2 Conv2d/BatchNorm2d/LeakyReLU stages, then a 128-d feature layer
  (scratchgan.eval.evaluator_cnn). It sees local texture: blur, speckle and stripes move its features.
- ``mlp`` (``--evaluator mlp``, the numbers of earlier releases):

    image (N, 784) in [-1, 1] -> Linear 256 -> LeakyReLU(0.2) -> Dropout(0.2)
                              -> Linear 128 -> LeakyReLU(0.2)   <- features (N, 128)
                              -> Linear 10                      <- logits; softmax = p(y|x)

Trained with softmax cross-entropy (below, hand-written backward, gradient-checked) and Adam, seeded,
on the dataset's training split and scored on the test split. Where only the 10k MNIST test digits are
available (``mnist-bundled``, or MNIST offline), it trains on 8,000 of them and holds out the other
2,000 (a fixed split).

The default rulers ship with the package (scratchgan.eval.shipped): the CNN of seed 0 with the default
epochs for Fashion-MNIST (its 60k training images) and for MNIST (``mnist`` and ``mnist-bundled`` alike:
8,000 of the bundled test digits, the other 2,000 held out), each checked against its SHA-256 when
loaded, so they are never trained on a user's machine. Any other evaluator (the MLP, another seed, epochs
or limit) is trained on first use and cached as an .npz under ``<data cache>/evaluators/`` together with
the held-out accuracy, keyed by dataset, training data, kind, architecture, epochs and seed (an MLP file
never answers for a CNN, nor the reverse); later calls load it instead of training again. Training shows
a progress bar on a terminal (steps, loss, accuracy), else one line per epoch.
"""
from __future__ import annotations

import math
import sys
import time

import numpy as np

from .. import nn, optim
from ..backend import array_module, backend_name, get_xp, to_device, to_numpy
from ..checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..data import BatchLoader, DataError, load_dataset, load_mnist_bundled
from ..data import mnist as _mnist
from ..params import make_rng
from . import shipped
from .evaluator_cnn import DEFAULT_CHANNELS, DEFAULT_FEATURES, build_cnn_classifier, describe_cnn

EVALUATOR_FORMAT = 1
DEFAULT_HIDDEN = (256, 128)
DEFAULT_BATCH_SIZE = 128
DEFAULT_LR = 1e-3
TARGET_STEPS = 2400     # default epochs: about this many Adam steps (5 epochs of 60k, 39 of 8k)
KINDS = ("cnn", "mlp")  # the evaluator architectures; the first is the default
DEFAULT_KIND = KINDS[0]
TARGET_STEPS_BY_KIND = {"mlp": TARGET_STEPS, "cnn": 4700}  # cnn: 10 epochs of Fashion-MNIST's 60k
# the learning rate over training: constant (the MLP, as earlier releases trained it), or cosine
# lr_t = lr (1 + cos(pi t / T)) / 2 from lr down to 0 over the T steps (the CNN: its last, small steps
# settle the weights instead of leaving them where one large step happened to end)
LR_SCHEDULE_BY_KIND = {"mlp": "constant", "cnn": "cosine"}
MAX_AUTO_EPOCHS = 40
HOLDOUT_TEST_ONLY = 2000  # where only the 10k test images exist: train on 8,000, hold out 2,000
N_CLASSES = 10


# ---------------------------------------------------------------------------------- the loss

def softmax_cross_entropy(logits, labels):
    """L = mean_n( logsumexp(z_n) - z_n[y_n] ),  dL/dz = (softmax(z) - onehot(y)) / N.

    logits: (N, C) floats; labels: (N,) integers in [0, C). Returns (loss as a 0-d array on the
    logits' device, dlogits (N, C) in the logits' dtype). Stable for any finite logits: the max of
    each row is subtracted before exp, so exp never sees a positive number.
    """
    xp = array_module(logits)
    if logits.ndim != 2:
        raise ValueError(f"softmax_cross_entropy: logits must be (N, C), got shape {tuple(logits.shape)}")
    labels = xp.asarray(labels)
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"softmax_cross_entropy: labels must have shape ({logits.shape[0]},), "
                         f"got {tuple(labels.shape)}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"softmax_cross_entropy: labels must be integer class indices, got {labels.dtype}")
    N, C = logits.shape
    rows = xp.arange(N)
    shifted = logits - logits.max(axis=1, keepdims=True)        # (N, C), each row's max is 0
    e = xp.exp(shifted)                                          # in (0, 1]
    sum_e = e.sum(axis=1, keepdims=True)                         # (N, 1), >= 1
    log_probs_true = shifted[rows, labels] - xp.log(sum_e[:, 0])  # log softmax(z)[y], (N,)
    loss = -log_probs_true.mean()
    dlogits = e / sum_e                                          # softmax(z), (N, C)
    dlogits[rows, labels] -= 1.0                                 # - onehot(y)
    dlogits *= 1.0 / N                                           # mean reduction
    return xp.asarray(loss), dlogits.astype(logits.dtype, copy=False)


def softmax(logits):
    """p = exp(z - max z) / sum exp(z - max z), row-wise."""
    xp = array_module(logits)
    e = xp.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------------------------- the network

def build_classifier(in_dim=784, hidden=DEFAULT_HIDDEN, n_classes=N_CLASSES, slope=0.2, dropout=0.2,
                     seed=0, dtype="float32"):
    """The evaluator MLP: in_dim -> hidden[0] -> ... -> hidden[-1] (features) -> n_classes.

    Dropout follows every hidden activation but the last, so the feature layer's output is the same
    in train and eval mode up to the dropout of the layers before it.
    """
    sizes = [in_dim, *hidden, n_classes]
    if any(int(s) != s or s <= 0 for s in sizes) or not hidden:
        raise ValueError(f"classifier sizes must be positive integers with at least one hidden layer, got {sizes}")
    rng = make_rng(seed)
    layers, d_in = [], in_dim
    for i, d_out in enumerate(hidden):
        layers += [nn.Linear(d_in, d_out, seed=rng, dtype=dtype), nn.LeakyReLU(slope)]
        if dropout > 0 and i < len(hidden) - 1:
            layers.append(nn.Dropout(dropout, seed=int(rng.integers(2**31))))
        d_in = d_out
    layers.append(nn.Linear(d_in, n_classes, seed=rng, dtype=dtype))
    net = nn.Sequential(*layers)
    return net


def check_kind(kind):
    if kind not in KINDS:
        raise ValueError(f"unknown evaluator kind {kind!r}; choose one of: {', '.join(KINDS)}")
    return kind


def build_network(kind=DEFAULT_KIND, n_classes=N_CLASSES, hidden=DEFAULT_HIDDEN, seed=0, dtype="float32"):
    """The evaluator network of ``kind`` for 28x28 grey images fed flat, (N, 784): the builder per kind."""
    if check_kind(kind) == "cnn":
        return build_cnn_classifier((1, 28, 28), DEFAULT_CHANNELS, DEFAULT_FEATURES, n_classes, seed=seed,
                                    dtype=dtype)
    return build_classifier(784, hidden, n_classes, seed=seed, dtype=dtype)


def architecture(kind=DEFAULT_KIND, hidden=DEFAULT_HIDDEN):
    """A one-line description of the network, e.g. 'MLP 784 -> 256 -> 128 -> 10 (features: 128)'."""
    if check_kind(kind) == "cnn":
        return describe_cnn((1, 28, 28), DEFAULT_CHANNELS, DEFAULT_FEATURES, N_CLASSES)
    return "MLP " + " -> ".join(str(s) for s in (784, *hidden, N_CLASSES)) + f" (features: {hidden[-1]})"


def as_model_input(images, xp, dtype):
    """Images in any of the usual forms -> (N, D) on ``xp`` in ``dtype``, scaled to [-1, 1].

    uint8 images (0..255, any shape (N, ...)) are scaled by x / 127.5 - 1; float images are taken to
    be in [-1, 1] already (a tanh generator's output, a BatchLoader's batches).
    """
    N = images.shape[0]
    if images.dtype == np.uint8:
        x = to_device(np.asarray(to_numpy(images)).reshape(N, -1), xp).astype(dtype)
        x /= 127.5
        x -= 1.0
        return x
    if images.dtype.kind != "f":
        raise TypeError(f"images must be uint8 (0..255) or floats in [-1, 1], got {images.dtype}")
    return to_device(images.reshape(N, -1), xp, dtype)


class Evaluator:
    """A trained classifier: ``embed(images) -> (features, probs)`` as float64 host arrays.

    ``info`` holds what is known about it: accuracy on held-out data, what it was trained on, the
    cache file, whether it was loaded from the cache (``info["cached"]``) and the training time.
    """

    def __init__(self, net, info):
        self.net = net.eval()
        self.info = dict(info)
        # the features are the output of the last hidden activation: everything but the last Linear
        self.body, self.head = net[: len(net) - 1], net[len(net) - 1]
        first = net[0]  # an MLP starts with Linear(784, ...), the CNN with Reshape(1, 28, 28)
        self.in_dim = first.in_features if hasattr(first, "in_features") else math.prod(first.shape)
        self.feature_dim = self.head.in_features
        self.n_classes = self.head.out_features

    @property
    def accuracy(self):
        return self.info.get("accuracy")

    @property
    def xp(self):
        return self.net.xp

    def embed(self, images, batch_size=2000):
        """(features (N, F), p(y|x) (N, C)), float64 on the host, for images uint8 or in [-1, 1]."""
        xp, dtype = self.net.xp, self.net.dtype
        N = images.shape[0]
        if N == 0 or int(np.prod(images.shape[1:])) != self.in_dim:
            raise ValueError(f"the evaluator takes N > 0 images of {self.in_dim} pixels, got shape "
                             f"{tuple(images.shape)}")
        feats, probs = [], []
        for start in range(0, N, batch_size):
            x = as_model_input(images[start:start + batch_size], xp, dtype)
            f = self.body.forward(x)                 # (B, F)
            z = self.head.forward(f)                 # (B, F) @ (F, C) -> (B, C)
            feats.append(to_numpy(f).astype(np.float64))
            probs.append(to_numpy(softmax(z.astype(np.float64))))
        for m in self.net.modules():                 # inference only: drop the forward caches
            m.cache = None
        return np.concatenate(feats), np.concatenate(probs)

    def features(self, images, batch_size=2000):
        return self.embed(images, batch_size)[0]

    def predict_proba(self, images, batch_size=2000):
        return self.embed(images, batch_size)[1]

    def predict(self, images, batch_size=2000):
        return self.predict_proba(images, batch_size).argmax(axis=1)

    def describe(self):
        i = self.info
        acc = f"{100 * i['accuracy']:.2f}%" if i.get("accuracy") is not None else "?"
        if i.get("shipped"):
            how = "shipped with scratchgan"
        elif i.get("cached"):
            how = "loaded from cache"
        else:
            how = f"trained in {i.get('train_seconds', 0):.1f} s"
        return (f"evaluator {i.get('architecture')}: held-out accuracy {acc} on {i.get('held_out')}; "
                f"trained on {i.get('trained_on')}; {how} ({i.get('path')})")


# ---------------------------------------------------------------------------------- training

def accuracy(net, images, labels, batch_size=2000):
    """Fraction of ``images`` whose argmax logit is the label (eval mode)."""
    ev = Evaluator(net, {})
    pred = ev.predict(images, batch_size)
    return float((pred == np.asarray(labels)).mean())


def train_classifier(images, labels, *, kind="mlp", hidden=DEFAULT_HIDDEN, epochs=None,
                     batch_size=DEFAULT_BATCH_SIZE, lr=DEFAULT_LR, seed=0, backend="numpy", dtype="float32",
                     log=None, bar=None):
    """Train the evaluator network of ``kind`` on uint8 ``images`` (N, 28, 28) with ``labels`` (N,).

    One loop for every kind: softmax cross-entropy, Adam, flat (N, 784) batches (the CNN reshapes them
    itself). Seeded end to end: weights, dropout masks and batch order all follow ``seed``. Returns the
    net in eval mode. Progress (TrainingProgress): a bar when ``bar`` (default: stderr is a terminal),
    else one line per epoch through ``log``.
    """
    xp = get_xp(backend)
    n_classes = max(N_CLASSES, int(np.max(labels)) + 1)
    if check_kind(kind) == "mlp":  # the MLP takes any flat size (its tests use small ones)
        in_dim = int(np.prod(images.shape[1:]))
        net = build_classifier(in_dim, hidden, n_classes, seed=[seed, 0xC1A5], dtype=dtype)
    else:
        net = build_network(kind, n_classes, hidden, seed=[seed, 0xC1A5], dtype=dtype)
    net = net.to(xp, dtype)
    net.train()
    opt = optim.Adam(net.parameters(), lr=lr, betas=(0.9, 0.999))
    batch_size = min(batch_size, len(images))
    loader = BatchLoader(images, batch_size, xp=xp, dtype=dtype, seed=seed, labels=labels)
    epochs = resolve_epochs(epochs, len(images), batch_size, kind)
    cosine, t, T = LR_SCHEDULE_BY_KIND[kind] == "cosine", 0, epochs * len(loader)
    with TrainingProgress(T, epochs, log, bar) as progress:
        for epoch in range(epochs):
            for x, y in loader.epoch(epoch):
                if cosine:
                    opt.lr = lr * 0.5 * (1.0 + math.cos(math.pi * t / T))
                    t += 1
                opt.zero_grad()
                logits = net.forward(x)
                loss, dlogits = softmax_cross_entropy(logits, y)
                net.backward(dlogits, need_dx=False)  # nobody needs dL/d(image)
                opt.step()
                progress.step(loss, (logits.argmax(axis=1) == y).sum(), len(y))  # reads only: weights unchanged
            progress.end_epoch(epoch)
    return net.eval()


def _stderr_is_terminal():
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream
        return False


class TrainingProgress:
    """What a person sees while an evaluator trains: on a terminal a tqdm bar on stderr (steps, loss and
    training accuracy of the epoch so far), otherwise one line per epoch through ``log`` (a log file gets
    no \\r redraws). The running sums stay on the device; they are read every REFRESH steps."""

    REFRESH = 10

    def __init__(self, total_steps, epochs, log=None, bar=None):
        self.epochs, self.log = epochs, log
        self.loss = self.correct = 0.0
        self.steps = self.seen = 0
        self.t0 = time.perf_counter()
        self.bar = None
        if _stderr_is_terminal() if bar is None else bar:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total_steps, desc="training the evaluator", unit="step", dynamic_ncols=True,
                            leave=False, file=sys.stderr)

    def __enter__(self):
        return self

    def __exit__(self, *exc):  # also on Ctrl-C: the bar is gone before the command's one line
        if self.bar is not None:
            self.bar.close()
        return False

    def _means(self):
        return float(self.loss) / max(self.steps, 1), float(self.correct) / max(self.seen, 1)

    def step(self, loss, correct, n):
        self.loss, self.correct = self.loss + loss, self.correct + correct
        self.steps, self.seen = self.steps + 1, self.seen + n
        if self.bar is not None:
            self.bar.update(1)
            if self.steps % self.REFRESH == 0:
                mean_loss, acc = self._means()
                self.bar.set_postfix_str(f"loss {mean_loss:.4f}, accuracy {100 * acc:.1f}%", refresh=False)

    def end_epoch(self, epoch):
        mean_loss, acc = self._means()
        if self.bar is not None:
            self.bar.set_description(f"training the evaluator (epoch {epoch + 2}/{self.epochs})"
                                     if epoch + 1 < self.epochs else "training the evaluator")
        elif self.log:
            self.log(f"evaluator epoch {epoch + 1}/{self.epochs}: mean loss {mean_loss:.4f}, training accuracy "
                     f"{100 * acc:.2f}% ({time.perf_counter() - self.t0:.0f} s)")
        self.loss = self.correct = 0.0
        self.steps = self.seen = 0


def resolve_epochs(epochs, n_images, batch_size=DEFAULT_BATCH_SIZE, kind="mlp"):
    """``epochs``, or by default about TARGET_STEPS_BY_KIND[kind] Adam steps (1 to MAX_AUTO_EPOCHS)."""
    if epochs is not None:
        if int(epochs) != epochs or epochs <= 0:
            raise ValueError(f"evaluator epochs must be a positive integer, got {epochs!r}")
        return int(epochs)
    batches = max(1, n_images // min(batch_size, n_images))
    return int(min(MAX_AUTO_EPOCHS, max(1, round(TARGET_STEPS_BY_KIND[check_kind(kind)] / batches))))


def evaluator_data(dataset, data_dir=None, log=None):
    """The evaluator's training and held-out data for a dataset.

    Returns (family, train_images, train_labels, held_images, held_labels, trained_on, held_out):
    ``family`` is "mnist" or "fashion-mnist" (the bundled digits are MNIST's test split), the last
    two are descriptions such as "fashion-mnist train (60000 images)". Uses the training split and
    scores on the test split; where only the test split is available, trains on a fixed 8,000 of it
    and holds out the other 2,000.
    """
    name = _mnist._canonical(dataset)
    family = "mnist" if name == _mnist.BUNDLED else name
    if name == _mnist.BUNDLED:
        train = None
    else:
        try:
            train = load_dataset(name, "train", data_dir)
        except DataError as e:  # e.g. only the 10k MNIST test digits are available offline
            if log:
                log(f"evaluator: no {name} training split ({str(e).splitlines()[0][:120]}...); "
                    f"using the test split, {HOLDOUT_TEST_ONLY} images held out")
            train = None
    if train is not None:
        try:
            test = load_dataset(name, "test", data_dir)
        except DataError:
            test = None
        if test is not None:
            return (family, *train, *test, f"{family} train ({len(train[0])} images)",
                    f"{family} test ({len(test[0])} images)")
        images, labels, split = *train, "train"
    else:
        if name == "mnist" and data_dir is None:
            try:
                images, labels = load_dataset("mnist", "test", None)
            except DataError:
                images, labels = load_mnist_bundled("test")
        elif name == _mnist.BUNDLED:
            images, labels = load_mnist_bundled("test")
        else:
            images, labels = load_dataset(name, "test", data_dir)
        split = "test"
    # one split only: a fixed permutation (seed 0, independent of the evaluator seed), last part held out
    n = len(images)
    n_held = min(HOLDOUT_TEST_ONLY, n // 5)
    perm = np.random.default_rng(0).permutation(n)
    tr, he = np.sort(perm[: n - n_held]), np.sort(perm[n - n_held:])
    return (family, images[tr], labels[tr], images[he], labels[he],
            f"{family} {split}: {n - n_held} of its {n} images (fixed split, seed 0)",
            f"the other {n_held} {family} {split} images")


def cache_path(family, n_train, split_tag, hidden, epochs, seed, kind="mlp"):
    """The cache file; its name holds the kind and architecture, so kinds never share a file. The MLP's
    name is the one earlier releases wrote, so their cached evaluators still load."""
    if check_kind(kind) == "cnn":
        arch = "cnn1x28x28-" + "-".join(str(s) for s in (*DEFAULT_CHANNELS, DEFAULT_FEATURES, N_CLASSES))
    else:
        arch = "mlp" + "-".join(str(s) for s in (784, *hidden, N_CLASSES))
    return (_mnist.data_root() / "evaluators" /
            f"{family}_{split_tag}{n_train}_{arch}_e{epochs}_s{seed}_v{EVALUATOR_FORMAT}.npz")


def family_of(dataset):
    """The family a dataset's ruler belongs to: "mnist" for mnist and mnist-bundled, else the dataset."""
    name = _mnist._canonical(dataset)
    return "mnist" if name == _mnist.BUNDLED else name


def get_evaluator(dataset, data_dir=None, *, kind=DEFAULT_KIND, backend="numpy", seed=0, epochs=None,
                  limit=None, hidden=DEFAULT_HIDDEN, cache=True, log=None, bar=None):
    """The evaluator of ``kind`` ("cnn" or "mlp") for ``dataset``: the shipped one, else from the cache, else
    trained now.

    The default CNN (seed 0, default epochs, all data) of a dataset with shipped weights is loaded from the
    package (scratchgan.eval.shipped), checked against its SHA-256: no data is read and nothing is trained.
    Otherwise ``limit`` trains on only the first ``limit`` training images (quick trials and tests);
    ``epochs`` defaults to about TARGET_STEPS_BY_KIND[kind] Adam steps. The cache key is (dataset, training
    data, kind and architecture, epochs, seed); the file is written atomically. Raises DataError when the
    data cannot be loaded, CheckpointError when a shipped file does not match its hash.
    """
    check_kind(kind)
    hidden = tuple(int(h) for h in hidden)
    xp = get_xp(backend)
    if kind == shipped.KIND and seed == shipped.SEED and epochs is None and limit is None \
            and family_of(dataset) in shipped.FILES:
        return load_shipped(family_of(dataset), xp)
    data = TrainingData(dataset, data_dir, limit, log)
    epochs = resolve_epochs(epochs, data.n_train, kind=kind)
    path = cache_path(data.family, data.n_train, data.split_tag, hidden, epochs, seed, kind)

    if cache and path.exists():
        try:
            net, info = load_evaluator_file(path, kind, hidden, xp)
            return Evaluator(net, {**info, "cached": True, "path": str(path)})
        except (CheckpointError, ValueError, KeyError) as e:
            if log:
                log(f"evaluator cache {path} unusable ({str(e).splitlines()[0]}); training again")

    if log:
        log(f"training the evaluator ({architecture(kind, hidden)}) on {data.trained_on}, {epochs} epochs, "
            f"seed {seed}, on {backend_name(xp)}; cached afterwards in {path}")
    net, info = fit_evaluator(data, kind=kind, hidden=hidden, epochs=epochs, seed=seed, backend=xp, log=log, bar=bar)
    if cache:
        save_evaluator(path, net, info)
    return Evaluator(net, {**info, "cached": False, "path": str(path) if cache else None})


class TrainingData:
    """An evaluator's training and held-out images (evaluator_data), after ``limit``."""

    def __init__(self, dataset, data_dir=None, limit=None, log=None):
        (self.family, self.x, self.y, self.held_x, self.held_y, self.trained_on,
         self.held_out) = evaluator_data(dataset, data_dir, log)
        self.split_tag = "train" if self.trained_on.startswith(f"{self.family} train (") else "split"
        if limit is not None:
            if int(limit) != limit or limit <= 0:
                raise ValueError(f"evaluator limit must be a positive integer, got {limit!r}")
            if limit < len(self.x):
                self.x, self.y = self.x[:limit], self.y[:limit]
                self.trained_on = f"the first {limit} of {self.trained_on}"

    @property
    def n_train(self):
        return len(self.x)


TIMING_KEYS = ("train_seconds", "train_cpu_seconds")  # in a cache file's info; never in a shipped one


def fit_evaluator(data, *, kind=DEFAULT_KIND, hidden=DEFAULT_HIDDEN, epochs=None, seed=0, backend="numpy",
                  log=None, bar=None):
    """Train the evaluator of ``kind`` on ``data`` (TrainingData) and score it on its held-out images ->
    (net, info): what get_evaluator caches and `scratchgan evaluator` writes."""
    xp = get_xp(backend)
    epochs = resolve_epochs(epochs, data.n_train, kind=kind)
    t0, c0 = time.perf_counter(), time.process_time()
    net = train_classifier(data.x, data.y, kind=kind, hidden=hidden, epochs=epochs, seed=seed, backend=xp,
                           log=log, bar=bar)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    acc = accuracy(net, data.held_x, data.held_y)
    info = {"dataset": data.family, "kind": kind, "architecture": architecture(kind, hidden),
            "trained_on": data.trained_on, "held_out": data.held_out, "accuracy": acc,
            "n_train": int(data.n_train), "n_held_out": int(len(data.held_x)), "epochs": epochs, "seed": int(seed),
            "train_seconds": round(seconds, 2), "train_cpu_seconds": round(cpu_seconds, 2),
            "trained_backend": backend_name(xp)}
    if log:
        log(f"evaluator trained in {seconds:.1f} s: held-out accuracy {100 * acc:.2f}% on {data.held_out}")
    return net, info


def save_evaluator(path, net, info):
    """Write an evaluator file (atomically): the network's state and ``info``, as the cache and the shipped
    files hold them."""
    arrays = {f"net/{k}": v for k, v in net.state_dict().items()}
    return save_checkpoint(path, arrays, {"kind": "scratchgan-evaluator", "format": EVALUATOR_FORMAT, "info": info})


def load_evaluator_file(path, kind=DEFAULT_KIND, hidden=DEFAULT_HIDDEN, backend="numpy"):
    """(net on ``backend``, info) of an evaluator file; CheckpointError when it is not one of ``kind``."""
    arrays, meta = load_checkpoint(path)
    if meta.get("kind") != "scratchgan-evaluator" or meta.get("format") != EVALUATOR_FORMAT:
        raise CheckpointError(f"{path} is not a scratchgan evaluator of format {EVALUATOR_FORMAT}")
    file_kind = meta.get("info", {}).get("kind", "mlp")  # files of earlier releases: the MLP
    if file_kind != kind:
        raise CheckpointError(f"{path} holds a {file_kind} evaluator, not a {kind}")
    net = build_network(kind, N_CLASSES, hidden, seed=0).to(get_xp(backend), "float32")
    net.load_state_dict({k[4:]: v for k, v in arrays.items() if k.startswith("net/")})
    return net, {"kind": kind, **meta["info"]}


def load_shipped(family, backend="numpy"):
    """The shipped ruler of ``family`` ("mnist" or "fashion-mnist"), its file checked against the SHA-256
    recorded in scratchgan.eval.shipped (CheckpointError when it differs)."""
    path = shipped.verified_path(family)
    net, info = load_evaluator_file(path, shipped.KIND, DEFAULT_HIDDEN, backend)
    return Evaluator(net, {**info, "cached": False, "shipped": True, "path": str(path)})


__all__ = ["softmax_cross_entropy", "softmax", "build_classifier", "build_network", "architecture",
           "train_classifier", "Evaluator", "get_evaluator", "evaluator_data", "accuracy", "cache_path",
           "as_model_input", "KINDS", "DEFAULT_KIND", "TrainingProgress", "TrainingData", "fit_evaluator",
           "save_evaluator", "load_evaluator_file", "load_shipped", "family_of"]
