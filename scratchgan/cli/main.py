"""`scratchgan COMMAND ...` (and `python -m scratchgan`): which command runs. Each command's module is
imported only when that command runs, so `scratchgan sample` never loads the trainer."""
from __future__ import annotations

import importlib
import sys

from .common import EXIT_USAGE, say

COMMANDS = {  # name: (module, its entry point, one line for the usage)
    "train": ("train", "command_main", "train the MLP GAN or, with --arch dcgan, the DCGAN (the flags of "
                                       "examples/mnist_mlp.py and examples/dcgan.py)"),
    "sample": ("sample", "sample_main", "generate images from a checkpoint"),
    "evaluate": ("evaluate", "evaluate_main", "measure a checkpoint's samples: Frechet distance (classifier "
                                              "features), coverage, precision/recall"),
    "export": ("export", "export_main", "write a checkpoint's generator alone (weights, BatchNorm buffers, config)"),
    "interpolate": ("sample", "interpolate_main", "a latent walk between seeds (slerp) as a GIF and a strip PNG"),
}


def main(argv=None):
    """`scratchgan COMMAND ARGS` -> the command's exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("--version", "-V"):
        from .. import __version__
        say(f"scratchgan {__version__}")
        return 0
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        asked = bool(argv) and argv[0] in ("-h", "--help")
        stream = sys.stdout if asked else sys.stderr  # as argparse: help on stdout, a usage error on stderr
        width = max(map(len, COMMANDS))
        say("usage: python -m scratchgan {" + ",".join(COMMANDS) + "} [--help]\n" + "\n".join(
            f"  {name:<{width}}  {line}" for name, (_, _, line) in COMMANDS.items()), file=stream)
        if asked:
            return 0
        problem = f"unknown command {argv[0]!r}" if argv else "a command is required"
        say(f"scratchgan: error: {problem}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return EXIT_USAGE
    module, entry, _ = COMMANDS[argv[0]]
    command = importlib.import_module(f".{module}", __package__)
    return getattr(command, entry)(argv[1:])
