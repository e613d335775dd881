"""scratchgan: a GAN engine from scratch in NumPy (and CuPy), every backward pass written by hand.

Importing it changes no process-wide setting and loads nothing heavy: the submodules (``nn``,
``losses``, ``optim``, ...) load on first use, so an entry point can call
``scratchgan.fast.configure_process()`` before NumPy loads (see scratchgan/fast/process.py).
"""
import importlib

__version__ = "0.1.0"
__all__ = ["backend", "gradcheck", "losses", "nn", "optim", "params", "fast", "get_xp", "to_numpy", "__version__"]
# the engine's modules, then the wings (gan, run, eval, cli) and data and fast beside them
_SUBMODULES = {"backend", "checkpoint", "errors", "fileio", "gradcheck", "losses", "nn", "optim", "params", "replace",
               "gan", "run", "eval", "cli", "data", "fast"}


def __getattr__(name):
    """``scratchgan.nn`` etc. import their module on first access (PEP 562)."""
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in ("get_xp", "to_numpy"):
        return getattr(importlib.import_module(".backend", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _SUBMODULES | {"get_xp", "to_numpy"})
