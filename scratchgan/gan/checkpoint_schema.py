"""What a run's checkpoint may say: its metadata checked against a table before anything in it is used.

A checkpoint is data, never instructions. Its ``meta`` (and the training ``config`` inside it) is read
back by ``train --resume``, ``sample``, ``interpolate``, ``evaluate`` and ``export``, and every number
in it sizes something: a network, a replay of random draws, an image. So before any of it is used:

- every key the tables below know is checked for its type and range (a key they do not know is
  left alone: a newer scratchgan may add some); a bad one is refused in one line that names it,
  e.g. ``config.latent_dim``, ``meta.noise.epoch``;
- the networks the config describes must fit the arrays the file declares (from the headers, before
  an array is read or a network built): a config cannot make a command allocate more than the file
  holds;
- ``check_replay``: the random draws a resumed run replays (noise, dropout) are bounded by the run.

``load_run_checkpoint(path, need)`` does all of it around ``checkpoint.load_checkpoint`` (which adds
the header checks and the NaN/Inf check of every array); ``need`` names what the caller uses: a
``"generator"`` to build, a ``"training"`` state to resume, or nothing more than a valid file.
"""
from __future__ import annotations

import math

from ..checkpoint import CheckpointError, load_checkpoint
from ..data import registry
from . import diffaugment, objectives, presets
from .models import DCGAN_SIZES, _dcgan_plan

# Ranges: far above anything trained with scratchgan, far below what would exhaust a machine.
MAX_WIDTH = 2**16            # latent_dim, a hidden layer, an embedding, an image side
MAX_CHANNELS = 2**12         # g_width, d_width (a DCGAN stage has up to 16 x width channels)
MAX_PIXELS = 2**24           # values in one image (image_size)
MAX_LAYERS = 64              # hidden layers of an MLP
MAX_COUNT = 2**53            # steps, epochs, images: exact as JSON numbers
MAX_SEED = 2**128
MAX_DRAWS = 2**40            # draws recorded for a replay; check_replay bounds them by the run
MAX_WEIGHTS = 2**28          # a network the file holds no arrays for (export's D): 1 GiB of float32
DATASETS = tuple(registry.BY_NAME)  # data/registry.py: every dataset a run may record
REPAIR = "the file is damaged or was not written by scratchgan"


class _Bad(Exception):
    """A value that breaks a rule: where it is (``config.latent_dim``) and what was expected."""

    def __init__(self, where, value, expected=None):
        super().__init__(where)
        self.where, self.value, self.expected = where, value, expected


def _shown(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ------------------------------------------------------------------------------------- the rules
class Int:
    """An integer (never a bool) in [low, high], or one of ``choices``; ``null``: None is allowed too."""

    def __init__(self, low=0, high=MAX_COUNT, choices=None, null=False):
        self.low, self.high, self.choices, self.null = low, high, choices, null
        self.expected = (f"one of {', '.join(map(str, choices))}" if choices else
                         f"an integer in [{low:,}, {high:,}]") + (" or null" if null else "")

    def __call__(self, value, where):
        if value is None and self.null:
            return
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(where, value, self.expected)
        if (self.choices and value not in self.choices) or not self.low <= value <= self.high:
            raise _Bad(where, value, self.expected)


class Number:
    """A finite number in [low, high] (``high_open``: below high)."""

    def __init__(self, low=-math.inf, high=math.inf, high_open=False, null=False, positive=False):
        self.low, self.high, self.high_open, self.null, self.positive = low, high, high_open, null, positive
        if positive:
            self.expected = "a finite number above 0"
        elif math.isinf(low) and math.isinf(high):
            self.expected = "a finite number"
        else:
            self.expected = f"a number in [{low:g}, {high:g}{')' if high_open else ']'}"
        self.expected += " or null" if null else ""

    def __call__(self, value, where):
        if value is None and self.null:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _Bad(where, value, self.expected)
        if value < self.low or value > self.high or (self.high_open and value >= self.high) or \
                (self.positive and value <= 0):
            raise _Bad(where, value, self.expected)


class Flag:
    expected = "true or false"

    def __call__(self, value, where):
        if not isinstance(value, bool):
            raise _Bad(where, value, self.expected)


class Text:
    """A string, one of ``choices`` when given; paths and names alike, at most ``max_len`` characters."""

    def __init__(self, choices=None, null=False, max_len=4096):
        self.choices, self.null, self.max_len = choices, null, max_len
        self.expected = (f"one of {', '.join(map(repr, choices))}" if choices else
                         f"a string of at most {max_len} characters") + (" or null" if null else "")

    def __call__(self, value, where):
        if value is None and self.null:
            return
        if not isinstance(value, str) or len(value) > self.max_len or (self.choices and value not in self.choices):
            raise _Bad(where, value, self.expected)


class Sizes:
    """Layer sizes as the flags write them: "128,512,1024", each in [1, MAX_WIDTH]."""
    expected = f"comma-separated integers in [1, {MAX_WIDTH:,}], at most {MAX_LAYERS} of them"

    def __call__(self, value, where):
        if not isinstance(value, str) or len(value) > 16 * MAX_LAYERS:
            raise _Bad(where, value, self.expected)
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if not 1 <= len(parts) <= MAX_LAYERS or not all(p.isdigit() and 1 <= int(p) <= MAX_WIDTH for p in parts):
            raise _Bad(where, value, self.expected)


class Words:
    """A comma-separated list of distinct ``choices``, or "" (none), as --diffaugment writes it."""

    def __init__(self, choices):
        self.choices = choices
        self.expected = f"'' or comma-separated, each at most once, of {', '.join(choices)}"

    def __call__(self, value, where):
        words = [w.strip() for w in value.split(",") if w.strip()] if isinstance(value, str) else None
        if words is None or len(value) > 256 or any(w not in self.choices for w in words) or \
                len(set(words)) != len(words):
            raise _Bad(where, value, self.expected)


class IntList:
    """A list of ``min_len`` to ``max_len`` integers in [low, high] (a shape)."""

    def __init__(self, min_len, max_len, low=1, high=MAX_WIDTH):
        self.min_len, self.max_len, self.item = min_len, max_len, Int(low, high)
        self.expected = f"a list of {min_len} to {max_len} integers in [{low:,}, {high:,}]"

    def __call__(self, value, where):
        if not isinstance(value, list) or not self.min_len <= len(value) <= self.max_len:
            raise _Bad(where, value, self.expected)
        for x in value:
            try:
                self.item(x, where)
            except _Bad:
                raise _Bad(where, value, self.expected) from None


class Record:
    """A JSON object checked key by key against ``table``; ``required`` keys must be there."""

    def __init__(self, table, required=(), null=False):
        self.table, self.required, self.null = table, tuple(required), null

    def __call__(self, value, where):
        if value is None and self.null:
            return
        if not isinstance(value, dict):
            raise _Bad(where, value, "an object" + (" or null" if self.null else ""))
        for key in self.required:
            if key not in value:
                raise _Bad(f"{where}.{key}", None)
        for key, rule in self.table.items():
            if key in value:
                rule(value[key], f"{where}.{key}")


class ListOf:
    def __init__(self, item, max_len):
        self.item, self.max_len = item, max_len
        self.expected = f"a list of at most {max_len} entries"

    def __call__(self, value, where):
        if not isinstance(value, list) or len(value) > self.max_len:
            raise _Bad(where, value, self.expected)
        for i, x in enumerate(value):
            self.item(x, f"{where}[{i}]")


class Stream:
    """One extra noise stream of NoiseSource.state(): [kind, shape, draws]."""
    expected = "[kind, shape, draws]"
    parts = (Text(("normal", "uniform")), IntList(1, 4, high=MAX_COUNT), Int(0, MAX_DRAWS))

    def __call__(self, value, where):
        if not isinstance(value, list) or len(value) != len(self.parts):
            raise _Bad(where, value, self.expected)
        for i, (rule, x) in enumerate(zip(self.parts, value)):
            rule(x, f"{where}[{i}]")


class Streams:
    """The named extra streams of NoiseSource.state() ("instance_noise", "gp_alpha", DiffAugment's)."""

    def __call__(self, value, where):
        if not isinstance(value, dict) or len(value) > 64:
            raise _Bad(where, value, "an object of at most 64 streams")
        for name, stream in value.items():
            if len(name) > 64:
                raise _Bad(where, name, "stream names of at most 64 characters")
            Stream()(stream, f"{where}.{name}")


class Anything:
    """Recorded for people, never read back (the environment of a run)."""

    def __call__(self, value, where):
        pass


# ------------------------------------------------------------------------------------- the tables
# config: the training flags a run records (cli/flags.py), and what the data made of them
CONFIG = {
    # the networks
    "arch":            Text(("mlp", "dcgan")),
    "latent_dim":      Int(1, MAX_WIDTH),
    "g_hidden":        Sizes(),
    "d_hidden":        Sizes(),
    "batchnorm":       Flag(),
    "dropout":         Number(0, 1, high_open=True),
    "conditional":     Flag(),
    "num_classes":     Int(1, MAX_WIDTH),
    "class_names":     ListOf(Text(max_len=256), MAX_WIDTH),  # an image folder's classes, by label
    "embedding_dim":   Int(0, MAX_WIDTH),
    "resolution":      Int(choices=DCGAN_SIZES, null=True),
    "channels":        Int(choices=(1, 3), null=True),
    "g_width":         Int(1, MAX_CHANNELS),
    "d_width":         Int(1, MAX_CHANNELS),
    "spectral_norm":   Flag(),
    "loss_on":         Text(("logits", "probs")),
    # the images
    "image_size":      Int(1, MAX_PIXELS),
    "image_shape":     IntList(2, 3),
    "num_images":      Int(1, MAX_COUNT),
    "dataset":         Text(DATASETS),
    "dry_run_of":      Text(DATASETS),
    "data_dir":        Text(null=True),
    "split":           Text(("train", "test")),
    "limit":           Int(1, MAX_COUNT, null=True),
    # the computation
    "backend":         Text(("numpy", "cupy")),
    "dtype":           Text(("float32", "float64")),
    "reference":       Flag(),
    "cuda_graph":      Flag(),
    "tf32":            Flag(),
    "ranks":           Int(1, 2**20),
    # training
    "epochs":          Int(1, 10**9),
    "batch_size":      Int(1, 2**30),
    "loss":            Text(objectives.NAMES),
    "preset":          Text(tuple(presets.PRESETS), null=True),
    "optimizer":       Text(("adam", "rmsprop")),
    "lr":              Number(positive=True),
    "lr_g":            Number(positive=True, null=True),
    "lr_d":            Number(positive=True, null=True),
    "beta1":           Number(0, 1, high_open=True),
    "beta2":           Number(0, 1, high_open=True),
    "label_smoothing": Number(0, 1, high_open=True),
    "d_steps":         Int(1, 10**6),
    "clip":            Number(0),
    "gp_lambda":       Number(0),
    "instance_noise":  Number(0),
    "r1":              Number(0),
    "ema":             Number(0, 1, high_open=True),
    "diffaugment":     Words(diffaugment.OPS),
    "seed":            Int(0, MAX_SEED),
    # outputs and logs
    "out":             Text(null=True),
    "name":            Text(null=True),
    "resume":          Text(null=True),
    "overwrite":       Flag(),
    "progress":        Flag(),
    "dry_run":         Flag(),
    "tensorboard":     Text(null=True),
    "sample_every":    Int(0, MAX_COUNT),
    "log_every":       Int(1, MAX_COUNT),
    "eval_every":      Int(0, MAX_COUNT),
    "evaluator":       Text(("cnn", "mlp")),
    "eval_metric":     Text(("classifier", "fid")),
    "snapshot_every":  Int(0, MAX_COUNT),
    "environment":     Anything(),
}

NOISE = Record({"epoch": Int(0, MAX_COUNT), "draws": Int(0, MAX_DRAWS), "extra": Streams()},
               required=("epoch", "draws"))
DROPOUT = Record({"seed": Int(0, 2**64 - 1), "draws": Int(0, MAX_DRAWS), "shape": IntList(0, 4, high=MAX_COUNT),
                  "dtype": Text(("float32", "float64", "None"))}, required=("seed", "draws", "shape", "dtype"))
BEST = Record({"frechet_distance": Number(), "step": Int(0, MAX_COUNT)}, required=("frechet_distance", "step"),
              null=True)

# meta: a training checkpoint (trainer.Trainer.state)
TRAINING = {
    "format":         Int(1, 10**6),
    "config":         Record(CONFIG),
    "epoch":          Int(0, MAX_COUNT),
    "batch_in_epoch": Int(0, MAX_COUNT),
    "global_step":    Int(0, MAX_COUNT),
    "noise":          NOISE,
    "backend":        Text(max_len=64),  # the array module's name (backend.backend_name), for people
    "dtype":          Text(("float32", "float64")),
    "dropout":        ListOf(DROPOUT, 4096),
    "best":           BEST,
    "opt_G_t":        Int(0, MAX_COUNT),
    "opt_D_t":        Int(0, MAX_COUNT),
    "run_id":         Text(null=True, max_len=64),  # rundir.Manifest's id (None: a Trainer used without a folder)
}
TRAINING_NEEDS = ("format", "config", "epoch", "batch_in_epoch", "global_step", "noise", "opt_G_t", "opt_D_t")

# meta: a generator written by `scratchgan export` (export.py)
GENERATOR = {
    "kind":        Text(("generator",)),
    "format":      Text(max_len=64),
    "config":      Record(CONFIG),
    "epoch":       Int(0, MAX_COUNT, null=True),
    "global_step": Int(0, MAX_COUNT, null=True),
    "source":      Text(),
    "best":        BEST,
}

# config keys the builders (models.build_gan) read, by architecture
BUILD_NEEDS = {"mlp": ("latent_dim", "dtype", "seed", "g_hidden", "image_size", "batchnorm", "d_hidden", "dropout",
                       "loss_on"),
               "dcgan": ("latent_dim", "dtype", "seed", "resolution", "channels", "g_width", "d_width", "loss_on")}
# the network weights may hold this much more than the config's lower bound (biases, BatchNorm, ...)
SLACK_FACTOR, SLACK_VALUES = 8, 2**16


# ------------------------------------------------------------------------------------- the checks
def _refuse(path, bad):
    if bad.expected is None:
        raise CheckpointError(f"{path}: {bad.where} is missing; {REPAIR}")
    raise CheckpointError(f"{path}: {bad.where} is {_shown(bad.value)}, expected {bad.expected}; {REPAIR}")


def check_meta(path, meta, need=None):
    """CheckpointError (one line naming the key) unless ``meta`` fits its table; ``need``: "training" or
    "generator" also asks for what resuming or building a generator reads."""
    config = meta.get("config")
    if need is not None and (not isinstance(config, dict) or "latent_dim" not in config):
        raise CheckpointError(f"{path} holds no model config; is it a scratchgan training checkpoint?")
    kind = meta.get("kind")
    if kind not in (None, "generator"):
        raise CheckpointError(f"{path}: meta.kind is {_shown(kind)}, not a training checkpoint or an exported "
                              "generator; pass a checkpoint.npz of `scratchgan train` or a file of `scratchgan export`")
    table = GENERATOR if kind == "generator" else TRAINING
    required = TRAINING_NEEDS if need == "training" else ("config",) if need == "generator" else ()
    try:
        Record({k: rule for k, rule in table.items() if k != "config"}, required)(meta, "meta")
        if "config" in meta:  # named "config.x", as users know its keys
            arch = config.get("arch", "mlp") if isinstance(config, dict) else None
            Record(CONFIG, BUILD_NEEDS.get(arch, ()) if need is not None else ())(config, "config")
            _check_config_agrees(config)
    except _Bad as bad:
        _refuse(path, bad)
    return meta


def _check_config_agrees(config):
    """The config's image fields describe one image; a DCGAN's, the resolution and channels it makes."""
    names, classes = config.get("class_names"), config.get("num_classes")
    if names is not None and classes is not None and len(names) != classes:
        raise _Bad("config.class_names", names, f"{classes} names, one per class (config.num_classes)")
    shape, size = config.get("image_shape"), config.get("image_size")
    if shape is not None and size is not None and math.prod(shape) != size:
        raise _Bad("config.image_shape", shape, f"{size} values in all, as config.image_size says")
    if config.get("arch") == "dcgan" and shape is not None and None not in (config.get("resolution"),
                                                                           config.get("channels")):
        res, channels = config["resolution"], config["channels"]
        if shape != [channels, res, res]:
            raise _Bad("config.image_shape", shape, f"[{channels}, {res}, {res}] (config.channels, config.resolution)")


def network_weights(config, net):
    """The weights of the Linear and convolution layers of network ``net`` ("G" or "D") that ``config``
    describes, without building it: a lower bound on its parameters (biases, BatchNorm and spectral-norm
    vectors come on top). None when the config lacks a size it needs. Follows models.py's builders."""
    try:
        latent = config["latent_dim"]
        conditional = config.get("conditional")
        classes, embedding = config.get("num_classes", 10), config.get("embedding_dim", 0)
        code = (embedding or classes) if conditional else 0
        if config.get("arch") == "dcgan":
            k, widths = _dcgan_plan(config["resolution"], config["g_width" if net == "G" else "d_width"])
            C = config["channels"]
            if net == "G":  # ConvTranspose2d latent (+ the label's code) -> widths[0] (k x k), 4 x 4 doublings to C
                chain = [(latent + code) * widths[0] * k * k] + [a * b * 16 for a, b in zip(widths, widths[1:])]
                return sum(chain) + widths[-1] * C * 16 + (classes * embedding if conditional else 0)
            widths = widths[::-1]  # Conv2d C -> widths[0] (4 x 4), halvings, then widths[-1] -> 1 (k x k)
            # (conditional: that last Conv2d is the projection's psi, Linear(F, 1), and V (classes, F) beside it)
            F = widths[-1] * k * k
            return (C * widths[0] * 16 + sum(a * b * 16 for a, b in zip(widths, widths[1:])) + F
                    + (classes * F if conditional else 0))
        hidden = [int(s) for s in config["g_hidden" if net == "G" else "d_hidden"].split(",") if s.strip()]
        image = config["image_size"]
        sizes = [latent + code, *hidden, image] if net == "G" else [image + code, *hidden, 1]
        return sum(a * b for a, b in zip(sizes, sizes[1:])) + (classes * embedding if conditional else 0)
    except (KeyError, TypeError, ValueError):
        return None


def check_sizes(path, meta, shapes, need=None):
    """The networks the config describes must fit the arrays the file declares under G/ and D/: at least
    their weights, at most SLACK_FACTOR times as much. A network the file holds nothing of (an export's D,
    which the builders make all the same) is bounded by MAX_WEIGHTS instead."""
    config = meta.get("config")
    if not isinstance(config, dict):
        return
    for net, name in (("G", "generator"), ("D", "discriminator")):
        weights = network_weights(config, net)
        if weights is None:
            continue
        held = sum(math.prod(shape) for key, (shape, _) in shapes.items() if key.startswith(f"{net}/"))
        keys = _size_keys(config, net)
        if held == 0 and not (net == "G" and need is not None):
            if weights > MAX_WEIGHTS:
                raise CheckpointError(f"{path}: its config ({keys}) describes a {name} of {weights:,} weights, more "
                                      f"than {MAX_WEIGHTS:,}; {REPAIR}")
            continue
        if not weights <= held <= SLACK_FACTOR * weights + SLACK_VALUES:
            raise CheckpointError(f"{path}: its config ({keys}) describes a {name} of {weights:,} weights, but the "
                                  f"file holds {held:,} values under {net}/; {REPAIR}")


def _size_keys(config, net):
    if config.get("arch") == "dcgan":
        keys = ("latent_dim", "resolution", "channels", "g_width" if net == "G" else "d_width")
    else:
        keys = ("latent_dim", "g_hidden" if net == "G" else "d_hidden", "image_size")
    return ", ".join(f"{k} {config[k]!r}" for k in keys if k in config)


def check_network_shapes(path, net, prefix, shapes):
    """The arrays under ``prefix`` must be exactly the state of the built network ``net``: the same names,
    the same shapes, floating point. Checked on the headers, before any array is read."""
    state = {name: tuple(value.shape) for name, value in net.state_dict().items()}
    held = {name[len(prefix):]: shape for name, (shape, _) in shapes.items() if name.startswith(prefix)}
    missing, unexpected = sorted(set(state) - set(held)), sorted(set(held) - set(state))
    if missing or unexpected:
        raise CheckpointError(f"{path}: its arrays do not fit the network its config describes: missing "
                              f"{[prefix + n for n in missing][:3]}, unexpected {[prefix + n for n in unexpected][:3]}")
    for name, shape in state.items():
        dtype = shapes[prefix + name][1]
        if held[name] != shape or dtype.kind != "f":
            raise CheckpointError(f"{path}: {prefix}{name} is {held[name]} of {dtype}, the network its config "
                                  f"describes has {shape} of floats; {REPAIR}")


def load_run_checkpoint(path, need=None, check=None):
    """``load_checkpoint`` of a run's checkpoint or an exported generator -> (arrays, meta), refused with a
    CheckpointError unless its metadata fits the tables and its arrays the networks its config describes
    (both before any array is read), and every array is finite. ``check(meta, shapes)``: more, also first."""
    def before_reading(meta, shapes):
        check_meta(path, meta, need)
        check_sizes(path, meta, shapes, need)
        if check is not None:
            check(meta, shapes)
    return load_checkpoint(path, check=before_reading)


# ------------------------------------------------------------------------------------- resuming
DRAWS_PER_BATCH = 16   # a step draws z once per D step and once for G, and each extra stream up to 3 times
REPLAY_FLOOR = 10_000  # draws always allowed (a resume on fewer images than the checkpoint's run had)
ROW_FLOOR = 2**16      # values per image always allowed in a draw (a 128 x 128 RGB image has 49,152)


def check_replay(path, meta, batches_per_epoch, batch_size, widest):
    """Resuming replays the noise and dropout draws of the checkpoint's epoch: refuse counts beyond what
    an epoch of this run draws (DRAWS_PER_BATCH per batch, at least REPLAY_FLOOR) and draws larger than a
    batch of ``widest`` values per image (at least ROW_FLOOR), so that no crafted count or shape can keep
    the replay running for ever or fill the memory."""
    limit = max(REPLAY_FLOOR, DRAWS_PER_BATCH * (int(batches_per_epoch) + 1))
    values_per_draw = int(batch_size) * max(int(widest), ROW_FLOOR)
    noise = meta["noise"]
    draws = [("meta.noise.draws", noise["draws"], None)]
    for name, (_, shape, n) in noise.get("extra", {}).items():
        draws.append((f"meta.noise.extra.{name}", n, shape))
    for i, state in enumerate(meta.get("dropout", [])):
        draws.append((f"meta.dropout[{i}]", state["draws"], state["shape"] if state["draws"] else None))
        if state["draws"] and (state["dtype"] == "None" or not state["shape"]):
            raise CheckpointError(f"{path}: meta.dropout[{i}] records {state['draws']} draws of shape "
                                  f"{state['shape']} and dtype {state['dtype']}; {REPAIR}")
    for where, n, shape in draws:
        if n > limit:
            raise CheckpointError(f"{path}: {where} records {n:,} draws to replay, more than the {limit:,} an "
                                  f"epoch of this run makes; {REPAIR}")
        if shape is not None and math.prod(shape) > values_per_draw:
            raise CheckpointError(f"{path}: {where} records draws of shape {shape}, larger than this run's "
                                  f"{values_per_draw:,} values per draw; {REPAIR}")
