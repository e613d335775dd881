"""scratchgan: a GAN engine from scratch in NumPy (and CuPy), every backward pass written by hand.

Importing it changes no process-wide setting and loads nothing heavy: the submodules (``nn``,
``losses``, ``optim``, ...) load on first use, so an entry point can call
``scratchgan.fast.configure_process()`` before NumPy loads (see scratchgan/fast/process.py).

The engine from Python (docs/python.md), loaded on first use like the submodules:
- ``scratchgan.load_generator(path)`` -> (G, config), ``G.generate(n, seed=..., truncation=..., label=...)``:
  scratchgan/gan/generator_file.py (the GAN wing: the checked loader the commands use);
- ``scratchgan.train(config, callbacks=...)``: scratchgan/cli/api.py (the command line's wing, because it runs
  the steps of `scratchgan train` itself: the flag table's checks, the run folder, the trainer).
"""
import importlib

__version__ = "0.1.0"
__all__ = ["backend", "gradcheck", "losses", "nn", "optim", "params", "fast", "get_xp", "to_numpy", "load_generator",
           "train", "__version__"]
# the engine's modules, then the wings (gan, run, eval, cli) and data and fast beside them
_SUBMODULES = {"backend", "checkpoint", "errors", "fileio", "gradcheck", "losses", "nn", "optim", "params", "replace",
               "gan", "run", "eval", "cli", "data", "fast"}
# the public functions of the wings: name -> (module, its name there); the module loads on first access only
_FUNCTIONS = {"get_xp": ("backend", "get_xp"), "to_numpy": ("backend", "to_numpy"),
              "load_generator": ("gan.generator_file", "load"), "train": ("cli.api", "train")}


def __getattr__(name):
    """``scratchgan.nn`` etc. import their module on first access (PEP 562)."""
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _FUNCTIONS:
        module, attribute = _FUNCTIONS[name]
        return getattr(importlib.import_module(f".{module}", __name__), attribute)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _SUBMODULES | set(_FUNCTIONS))
