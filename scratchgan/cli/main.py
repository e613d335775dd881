"""`scratchgan COMMAND ...` (and `python -m scratchgan`): which command runs. Each command's module is
imported only when that command runs, so `scratchgan sample` never loads the trainer."""
from __future__ import annotations

import importlib
import os
import sys

from .. import __version__
from .common import EXIT_USAGE, Parser, say

COMMANDS = {  # name: (module, its entry point, one line for the usage)
    "train": ("train", "command_main", "train the MLP GAN or, with --arch dcgan, the DCGAN (the flags of "
                                       "examples/mnist_mlp.py and examples/dcgan.py)"),
    "sample": ("sample", "sample_main", "generate images from a checkpoint"),
    "evaluate": ("evaluate", "evaluate_main", "measure a checkpoint's samples: Frechet distance (classifier "
                                              "features), coverage, precision/recall"),
    "evaluator": ("evaluate", "evaluator_main", "train an evaluator classifier into a file (rebuilds the shipped "
                                                "MNIST and Fashion-MNIST ones bit for bit)"),
    "export": ("export", "export_main", "write a checkpoint's generator alone (weights, BatchNorm buffers, config)"),
    "interpolate": ("sample", "interpolate_main", "a latent walk between seeds (slerp) as a GIF and a strip PNG"),
}


def program():
    """How the user started it: `scratchgan` (the installed command, or any script named so) or
    `python -m scratchgan`."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "python -m scratchgan" if name in ("__main__.py", "-m", "-c", "") else name


def make_parser(prog=None):
    """The top-level parser: one sub-command per command, each with its line; the commands parse their own
    flags (``scratchgan COMMAND --help``), so only this parser's help, usage and errors are used."""
    parser = Parser(prog=prog or program(), description="A GAN engine from scratch in NumPy and CuPy.",
                    epilog="Run `%(prog)s COMMAND --help` for a command's flags.")
    parser.add_argument("--version", "-V", action="version", version=f"scratchgan {__version__}",
                        help="print the version and exit")
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for name, (_, _, line) in COMMANDS.items():
        commands.add_parser(name, help=line, add_help=False)
    return parser


def main(argv=None):
    """`scratchgan COMMAND ARGS` -> the command's exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        module, entry, _ = COMMANDS[argv[0]]
        command = importlib.import_module(f".{module}", __package__)
        return getattr(command, entry)(argv[1:])
    parser = make_parser()
    if argv and argv[0] in ("-h", "--help", "--version", "-V"):
        try:
            parser.parse_args(argv[:1])  # argparse prints the help or the version and exits 0
        except SystemExit as e:
            return e.code
    problem = f"unknown command {argv[0]!r}" if argv else "a command is required"
    parser.print_usage(sys.stderr)
    say(f"{parser.prog.split()[-1]}: error: {problem}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
    return EXIT_USAGE
