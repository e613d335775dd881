"""Named recipes: ``--preset NAME`` sets the flags you do not give to values chosen by measurement.

A preset is a dict of config values: keys of flags.FLAGS (tests/cli/test_flags.py checks them), nothing else.
It sits between the defaults and the command line: a flag you give wins over the preset, and the objective's
own defaults (``--loss wgan-gp`` brings Adam 1e-4 with betas (0, 0.9), 5 critic steps and lambda 10) fill what
neither sets. A preset that names an ``arch`` chooses the architecture when the command line does not (and
with it that architecture's defaults: `scratchgan train --preset quality` is a DCGAN run). The numbers behind
each preset are in docs/quality.md and benchmarks/RESULTS.md.
"""
from __future__ import annotations

from ..errors import UserError

PRESETS = {
    # the lowest Inception FID within about ten minutes of a 2-core CPU on Fashion-MNIST (docs/quality.md,
    # "time to quality"): the 28x28 DCGAN at half the tutorial's widths, batch 64, with an EMA of G's weights
    "quality": {"arch": "dcgan", "g_width": 32, "d_width": 32, "batch_size": 64, "ema": 0.999, "epochs": 12},
}
# the datasets each preset was chosen on; elsewhere it is refused, because what is best differs from one
# dataset to the next (on the bundled MNIST digits Inception FID and the CNN distance do not even agree on the MLPs)
DATASETS = {"quality": ("fashion-mnist",)}


def describe(name):
    """'arch=dcgan, g_width=32, ...' for --help and the log."""
    return ", ".join(f"{k}={v}" for k, v in PRESETS[name].items())


def arch_of(name):
    """The architecture preset ``name`` runs, or None (no such preset, or one for either)."""
    return PRESETS.get(name, {}).get("arch") if isinstance(name, str) else None


def apply(config, explicit):
    """Write the preset's values into ``config`` where the flag was not given; return the flags that
    count as chosen (the preset's, then the explicit ones on top) for the objective's defaults."""
    name = config.get("preset")
    if not name:
        return explicit
    recipe = PRESETS[name]
    arch = config.get("arch", "mlp")
    if recipe.get("arch", arch) != arch:
        raise UserError(f"--preset {name} is a --arch {recipe['arch']} recipe: run it with `scratchgan train --preset "
                        f"{name} --dataset {DATASETS[name][0]}` (without --arch {arch})")
    dataset = config.get("dataset")
    if dataset not in DATASETS[name]:
        raise UserError(f"--preset {name} was chosen by measurement on --dataset {' / '.join(DATASETS[name])} only "
                        f"(what is best differs elsewhere); drop --preset for --dataset {dataset} and give "
                        "its flags yourself")
    for key, value in recipe.items():
        if key not in explicit:
            config[key] = value
    return {**recipe, **explicit}
