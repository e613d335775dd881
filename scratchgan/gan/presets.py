"""Named recipes: ``--preset NAME`` sets the flags you do not give to values chosen by measurement.

A preset is a dict of config values: keys of flags.FLAGS (tests/cli/test_flags.py checks them), nothing else. It sits between the defaults and the command line: a flag you
give wins over the preset, and the objective's own defaults (``--loss wgan-gp`` brings Adam 1e-4 with
betas (0, 0.9), 5 critic steps and lambda 10) fill what neither sets. The numbers behind each preset
are in docs/quality.md and benchmarks/RESULTS.md.
"""
from __future__ import annotations

from ..errors import UserError

PRESETS = {
    # the lowest Inception FID of the MLP objectives measured on Fashion-MNIST (benchmarks/quality_table.py
    # --fid-n 2000; docs/quality.md): WGAN-GP with its paper's settings
    "quality": {"loss": "wgan-gp"},
}
ARCHES = {"quality": ("mlp",)}  # the architectures each preset was measured on
# the datasets each preset was chosen on; elsewhere it is refused, because the objectives rank differently from
# one dataset to the next (on the bundled MNIST digits WGAN-GP ranks last of the MLP objectives at 20 epochs)
DATASETS = {"quality": ("fashion-mnist",)}


def describe(name):
    """'loss=wgan-gp, ...' for --help and the log."""
    return ", ".join(f"{k}={v}" for k, v in PRESETS[name].items())


def apply(config, explicit):
    """Write the preset's values into ``config`` where the flag was not given; return the flags that
    count as chosen (the preset's, then the explicit ones on top) for the objective's defaults."""
    name = config.get("preset")
    if not name:
        return explicit
    arch = config.get("arch", "mlp")
    if arch not in ARCHES[name]:
        raise UserError(f"--preset {name} was measured for --arch {' / '.join(ARCHES[name])} only; drop --preset "
                        f"for --arch {arch} and give its flags yourself")
    dataset = config.get("dataset")
    if dataset not in DATASETS[name]:
        raise UserError(f"--preset {name} was chosen by measurement on --dataset {' / '.join(DATASETS[name])} only "
                        f"(the objectives rank differently elsewhere); drop --preset for --dataset {dataset} and give "
                        "its flags yourself")
    for key, value in PRESETS[name].items():
        if key not in explicit:
            config[key] = value
    return {**PRESETS[name], **explicit}
