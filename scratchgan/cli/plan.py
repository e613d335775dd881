"""--dry-run's plan of the real run, printed before its synthetic steps: the dataset and its size, the steps per
epoch, every resolved setting with where it came from, the output folder and the estimated memory.

The memory is estimated, and the plan says how: the parameters and their gradients (the flat store and its
twin, at --dtype), the optimizer's state (Adam's m and v, RMSprop's one average), the activations (what the
layers keep for their backward, measured as the difference between one forward of G and D on two images and on
one, in eval mode, times the batch size: the backward's own temporaries come on top), and the dataset in
memory (the images as read, uint8, and the loader's copy, floats when they fit in 2 GiB as data/loader.py
keeps them, else a second uint8 copy).
"""
from __future__ import annotations

import numpy as np

from ..gan import presets
from ..nn import Conditional
from ..run import rundir
from . import flags, train_options
from .common import UserError

# the sizes of the datasets a run downloads, for a plan made before any download (--limit takes the first N)
KNOWN_SIZES = {("mnist", "train"): 60_000, ("mnist", "test"): 10_000, ("fashion-mnist", "train"): 60_000,
               ("fashion-mnist", "test"): 10_000, ("mnist-bundled", "test"): 10_000, ("cifar10", "train"): 50_000,
               ("cifar10", "test"): 10_000}
FROM_DATA = ("resolution", "channels")  # the DCGAN's, by default the images' own


def dataset_size(planned, count, whole):
    """(images the real run trains on, images of the whole split), each None where not known before reading:
    ``count`` and ``whole`` as the data's paths tell (with and without --limit), else the known sizes."""
    whole = whole if whole is not None else KNOWN_SIZES.get((planned["dataset"], planned["split"]))
    if count is None and whole is not None:
        count = min(whole, planned["limit"]) if planned.get("limit") else whole
    return count, whole


def sources(config, cmdline, from_file, config_path):
    """{key: where its value came from} for every setting of ``config``: a flag, the config file, the preset,
    the objective's default, the data (the DCGAN's --image-size and --channels), or the default."""
    preset = config.get("preset")
    recipe = presets.PRESETS.get(preset, {}) if preset else {}
    objective = flags.loss_defaults(config.get("loss", "bce"))
    said = {}
    for key in (f.key for f in flags.FLAGS if f.key in config):
        if key in cmdline:
            said[key] = f"flag {flags.name_of(key)}"
        elif key in from_file:
            said[key] = f"config file {config_path}"
        elif key in recipe:
            said[key] = f"preset {preset}"
        elif key in objective:
            said[key] = f"objective default (--loss {config['loss']})"
        elif key in FROM_DATA:
            said[key] = "the data's own"
        elif key == "split" and config["dataset"] == "mnist-bundled":
            said[key] = "default (the bundled digits are MNIST's test split)"
        else:
            by_arch = key != "arch" and isinstance(flags.BY_KEY[key].default, flags.ByArch)
            said[key] = "default" + (f" for --arch {config['arch']}" if by_arch else "")
    return said


def _size(n):
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024


def _kept_bytes(step, xp, config, n):
    """The bytes the layers of G and D keep for their backward after one forward of ``n`` images (eval mode:
    no BatchNorm statistics or Dropout draws change); the caches are dropped afterwards."""
    rng = np.random.default_rng(0)
    z = xp.asarray(rng.standard_normal((n, config["latent_dim"])), dtype=config["dtype"])
    labels = xp.zeros(n, dtype=np.int64) if isinstance(step.G, Conditional) else None
    seen, total = set(), 0
    nets = (step.G, step.D)
    modes = [net.training for net in nets]
    try:
        x = z
        for net in nets:
            net.eval()
            x = net.forward(x) if labels is None else net.forward(x, labels)
            for module in net.modules():
                for array in _arrays(module.cache):
                    if id(array) not in seen:
                        seen.add(id(array))
                        total += array.nbytes
        return total
    finally:
        for net, mode in zip(nets, modes):
            for module in net.modules():
                module.cache = None
            net.train(mode)


def _arrays(cache):
    if hasattr(cache, "nbytes") and hasattr(cache, "shape"):
        yield cache
    elif isinstance(cache, (tuple, list)):
        for item in cache:
            yield from _arrays(item)
    elif isinstance(cache, dict):
        for item in cache.values():
            yield from _arrays(item)


def memory(step, xp, config, count):
    """(total bytes, one line per part saying how it is estimated) of the real run."""
    itemsize = np.dtype(config["dtype"]).itemsize
    params = step.G.num_parameters() + step.D.num_parameters()
    ema = step.G.num_parameters() if config.get("ema") else 0
    slots = 2 if config.get("optimizer", "adam") == "adam" else 1
    batch = config["batch_size"]
    per_image = max(_kept_bytes(step, xp, config, 2) - _kept_bytes(step, xp, config, 1), 0)
    pixels = int(np.prod(config["image_shape"]))
    parts = [("parameters", (2 * params + ema) * itemsize,
              f"{params:,} values of G and D at {config['dtype']}, and as many gradients"
              + (f", and the EMA copy of G's {ema:,}" if ema else "")),
             ("optimizer state", slots * params * itemsize,
              "Adam's m and v per parameter" if slots == 2 else "RMSprop's average per parameter"),
             ("activations", per_image * batch,
              f"{_size(per_image)} per image that the layers keep for their backward (one forward of G and D on 2 "
              f"images less one on 1, eval mode) times the batch size {batch}; the backward's temporaries come on top")]
    if count is not None:
        copy = pixels * itemsize if count * pixels * itemsize <= 2 * 1024 ** 3 else pixels
        parts.append(("dataset", count * (pixels + copy),
                      f"{count:,} images of {pixels:,} values, as read (uint8) and as the loader keeps them "
                      f"({config['dtype'] if copy > pixels else 'uint8'})"))
    return sum(size for _, size, _ in parts), parts


def lines(planned, said, count, known, step, xp, config):
    """The plan's lines; ``planned``: the real run's config (before the dry run's changes), ``config``: the dry
    run's, whose networks have the real run's shapes. UserError for what the real run would refuse."""
    name, split, batch, d_steps = planned["dataset"], planned["split"], planned["batch_size"], planned["d_steps"]
    out = ["plan of the real run (then the dry run trains its steps on random images):"]
    if count is None:
        out.append(f"  dataset   {name}, split {split}: its size is known once it is read")
    else:
        whole = known if known is not None else count
        limit = f" (--limit {planned['limit']} of {whole:,})" if planned.get("limit") and whole != count else ""
        out.append(f"  dataset   {name}, split {split}: {count:,} images{limit}, each "
                   f"{'x'.join(map(str, config['image_shape']))}")
        batches = count // batch
        if batches < d_steps:
            raise UserError(f"the real run's epoch has {batches} batches of {batch}, fewer than the {d_steps} D steps "
                            "of one iteration; use a smaller --batch-size or --d-steps")
        steps = batches // d_steps
        out.append(f"  steps     {steps:,} per epoch ({count:,} images // batch size {batch} // {d_steps} D "
                   f"step{'s' if d_steps > 1 else ''}), {steps * planned['epochs']:,} in {planned['epochs']} "
                   f"epoch{'s' if planned['epochs'] > 1 else ''}")
    out.append(f"  output    {_output(planned)}" + _refusal(planned))
    total, parts = memory(step, xp, config, count)
    out.append(f"  memory    about {_size(total)}, estimated:")
    out.extend(f"    {part:<16} {_size(size):>12}  {how}" for part, size, how in parts)
    out.append("  settings  (where each comes from: a flag, the config file, the preset, the objective's default, "
               "the default)")
    width = max(map(len, said))
    shown = {**planned, **{k: config[k] for k in FROM_DATA if k in config}}
    values = {key: _value(shown[key]) for key in said}
    column = min(max(map(len, values.values())), 32)
    out.extend(f"    {key:<{width}}  {values[key]:<{column}}  {said[key]}" for key in said)
    return out


def _output(planned):
    """The real run's folder: its --out, or the new numbered folder it would make (nothing is made here)."""
    if planned.get("out") is not None:
        return planned["out"]
    return f"{train_options.numbered_folder(planned)} (a new numbered folder: no --out or --name given)"


def _refusal(planned):
    """'' where the real run may write into its --out, else why not, in the run folder's words."""
    if planned.get("out") is None:
        return ""
    try:
        rundir.check(planned["out"], None, planned.get("overwrite", False))
    except rundir.RunDirError as e:
        return f" (the real run would refuse it: {str(e).splitlines()[0]})"
    return ""


def _value(value):
    return "none" if value is None else "''" if value == "" else str(value)
