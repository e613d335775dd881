"""The replacement registry: which reference function a fast path may replace, and the one switch.

The maths in ``nn/``, ``losses.py``, ``optim.py``, ``params.py`` and ``ema.py`` is written once, as the
textbook on ``xp``. A function marked ``@replaceable`` looks, when called, for a replacement listed in
``TABLE`` for the backend of its first argument; if one is active it runs instead, else the function
itself (kept as ``.reference``). The replacements live in ``scratchgan/fast/`` (above the maths);
``TABLE`` names them by dotted path and this module imports one only when it is first chosen (``_resolve``,
the registry's loader), so the maths never imports ``fast/``.

One switch turns every replacement off, so that what runs is exactly the textbook:
``SCRATCHGAN_REFERENCE=1`` in the environment, ``--reference`` on ``scratchgan train`` and the examples,
or ``set_enabled(False)``. ``active(backend)`` says which replacements run here; ``python -m
scratchgan.fast`` prints the table. tests/fast/test_fast_paths.py runs each against its reference; a layer's
own file marks each replaceable function with a ``# fast:`` comment (tests/engine/test_replace.py keeps the
marks and this table in step). Importing this module changes nothing in the process.
"""
from __future__ import annotations

import contextlib
import functools
import os

# reference function -> {backend: (replacement, how it compares with the reference)}
# "numpy": NumPy arrays. "cupy": a device array module with ElementwiseKernel (CuPy; the tests'
# fake device when they lend it one). "bitwise": the same operations in the same order, so the same
# bits; "close": reordered or fused arithmetic (or CUDA's exp/log1p), equal to a few ulp.
TABLE = {
    "scratchgan.nn.linear.linear_forward": {
        "numpy": ("scratchgan.fast.cpu.linear_forward", "bitwise")},
    "scratchgan.nn.linear.linear_backward": {
        "numpy": ("scratchgan.fast.cpu.linear_backward", "close")},
    "scratchgan.nn.activations.leaky_relu_forward": {
        "numpy": ("scratchgan.fast.cpu.leaky_relu_forward", "bitwise"),
        "cupy": ("scratchgan.fast.kernels.leaky_relu_forward", "bitwise")},
    "scratchgan.nn.activations.leaky_relu_backward": {
        "numpy": ("scratchgan.fast.cpu.leaky_relu_backward", "bitwise"),
        "cupy": ("scratchgan.fast.kernels.leaky_relu_backward", "bitwise")},
    "scratchgan.nn.activations.relu_backward": {
        "cupy": ("scratchgan.fast.kernels.relu_backward", "bitwise")},
    "scratchgan.nn.activations.tanh_backward": {
        "numpy": ("scratchgan.fast.cpu.tanh_backward", "bitwise"),
        "cupy": ("scratchgan.fast.kernels.tanh_backward", "bitwise")},
    "scratchgan.nn.activations.sigmoid_forward": {
        "cupy": ("scratchgan.fast.kernels.sigmoid_forward", "close")},
    "scratchgan.nn.activations.sigmoid_backward": {
        "cupy": ("scratchgan.fast.kernels.sigmoid_backward", "bitwise")},
    "scratchgan.nn.batchnorm.batchnorm_forward": {
        "numpy": ("scratchgan.fast.cpu.batchnorm_forward", "bitwise"),
        "cupy": ("scratchgan.fast.kernels.batchnorm_forward", "bitwise")},
    "scratchgan.nn.batchnorm.batchnorm_train_forward": {
        "numpy": ("scratchgan.fast.cpu.batchnorm_train_forward", "close"),
        "cupy": ("scratchgan.fast.kernels.batchnorm_train_forward", "bitwise")},
    "scratchgan.nn.batchnorm.batchnorm_backward_train": {
        "numpy": ("scratchgan.fast.cpu.batchnorm_backward_train", "close"),
        "cupy": ("scratchgan.fast.kernels.batchnorm_backward_train", "bitwise")},
    "scratchgan.nn.batchnorm.batchnorm_backward_eval": {
        "numpy": ("scratchgan.fast.cpu.batchnorm_backward_eval", "close")},
    "scratchgan.nn.conv.channels_last": {
        "numpy": ("scratchgan.fast.cpu.channels_last", "bitwise")},
    "scratchgan.nn.conv.im2col": {
        "numpy": ("scratchgan.fast.cpu.im2col", "bitwise"),
        "cupy": ("scratchgan.fast.conv_kernels.im2col", "bitwise")},
    "scratchgan.nn.conv.col2im": {
        "numpy": ("scratchgan.fast.cpu.col2im", "bitwise"),
        "cupy": ("scratchgan.fast.conv_kernels.col2im", "bitwise")},
    "scratchgan.losses.bce_with_logits": {
        "cupy": ("scratchgan.fast.kernels.bce_with_logits", "close")},
    "scratchgan.optim.adam_update": {
        "numpy": ("scratchgan.fast.cpu.adam_update", "close"),
        "cupy": ("scratchgan.fast.kernels.adam_update", "bitwise")},
    "scratchgan.gan.ema.ema_update": {
        "numpy": ("scratchgan.fast.cpu.ema_update", "bitwise"),
        "cupy": ("scratchgan.fast.kernels.ema_update", "bitwise")},
}

# Replacements written and tested against their reference (tests/fast/test_conv_subpixel.py) but not active:
# measured slower where they could run, or not measured yet. Same format as TABLE, plus why not; a
# benchmark switches one on with ``trying(name, backend)`` to measure it again (bench_conv.py --subpixel).
INACTIVE = {
    "scratchgan.nn.conv.conv_transpose2d_forward": {  # kernel 4, stride 2, padding 1 only (the DCGAN's G)
        "numpy": ("scratchgan.fast.subpixel.conv_transpose2d_forward", "close",
                  "measured slower on 2 shared cores, batch 64 (benchmarks/RESULTS.md, Conv layers): forward + "
                  "backward G2 1.07x, G3 1.07x, G4 1.06x, G5 2.75x the reference's time"),
        "cupy": ("scratchgan.fast.subpixel.conv_transpose2d_forward", "close",
                 "not measured yet: no GPU so far (bench_conv.py --backend cupy --subpixel measures it)")},
}
_trying = set()  # (reference name, backend) switched on from INACTIVE by trying()

ENV = "SCRATCHGAN_REFERENCE"  # 1: run the reference (textbook) path only
_enabled = None  # set_enabled's value; None: ask the environment
_chosen = {}  # (reference name, type of the first argument) -> the function that runs


def enabled():
    """True unless the fast paths are switched off (``set_enabled(False)`` or SCRATCHGAN_REFERENCE=1)."""
    if _enabled is not None:
        return _enabled
    return os.environ.get(ENV, "").strip().lower() in ("", "0", "false", "no")


def set_enabled(flag):
    """Switch every replacement on (True) or off (False); None goes back to the environment's say."""
    global _enabled
    _enabled = None if flag is None else bool(flag)
    reset()


@contextlib.contextmanager
def disabled():
    """Inside the with-block every call runs its reference function; then back to the previous setting."""
    before = _enabled
    set_enabled(False)
    try:
        yield
    finally:
        set_enabled(before)


def reset():
    """Forget which function was chosen for which array type (after a switch, or a test's monkeypatch)."""
    _chosen.clear()


def _kind(xp):
    """'numpy', 'cupy' (a device module that can build ElementwiseKernels) or None."""
    if getattr(xp, "__name__", "") == "numpy":
        return "numpy"
    if getattr(xp, "ElementwiseKernel", None) is not None:
        return "cupy"
    return None


def _resolve(dotted):
    """'package.module.function' -> the function (imports the module)."""
    import importlib
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def replacement_for(name, xp):
    """The replacement of the reference function ``name`` active for array module ``xp``, or None."""
    kind = _kind(xp)
    entry = TABLE.get(name, {}).get(kind)
    if entry is None and (name, kind) in _trying:
        entry = INACTIVE[name][kind][:2]
    if entry is None or not enabled():
        return None
    function = _resolve(entry[0])
    usable = getattr(function, "usable", None)  # e.g. the BLAS path needs NumPy's own OpenBLAS
    return function if usable is None or usable(xp) else None


def replaceable(function):
    """Mark a reference function as one that a fast path may replace (looked up in TABLE, by its name).

    The call goes to the replacement active for the backend of the first argument, if any, else
    to ``function`` itself, which stays available as ``.reference``.
    """
    name = f"{function.__module__}.{function.__qualname__}"
    if name not in TABLE and name not in INACTIVE:
        raise KeyError(f"{name} is marked @replaceable but has no entry in scratchgan.replace.TABLE")

    @functools.wraps(function)
    def call(*args, **kwargs):
        key = (name, type(args[0]))
        chosen = _chosen.get(key)
        if chosen is None:
            from .backend import array_module
            chosen = _chosen[key] = replacement_for(name, array_module(args[0])) or function
        return chosen(*args, **kwargs)

    call.reference = function
    call.reference_name = name
    return call


def replaces(name, exact):
    """Mark a fast function as the replacement of ``name`` (checked against TABLE when it is defined)."""
    def mark(function):
        own = f"{function.__module__}.{function.__qualname__}"
        entries = [*TABLE.get(name, {}).values(), *(e[:2] for e in INACTIVE.get(name, {}).values())]
        if not any(entry == (own, exact) for entry in entries):
            raise KeyError(f"{own} says it replaces {name} ({exact}), but TABLE does not list it so")
        function.replaces = name
        return function
    return mark


@contextlib.contextmanager
def trying(name, backend):
    """Inside the with-block the INACTIVE replacement of ``name`` on ``backend`` runs as if it were in
    TABLE (for a benchmark that measures it against the reference); then it is inactive again."""
    INACTIVE[name][backend]  # KeyError for a name or backend that has no such replacement
    _trying.add((name, backend))
    reset()
    try:
        yield
    finally:
        _trying.discard((name, backend))
        reset()


def active(backend="numpy"):
    """{reference: replacement} of the replacements that run on ``backend`` ("numpy", "cupy" or an
    array module) right now; empty when the fast paths are switched off."""
    from .backend import get_xp
    xp = get_xp(backend)
    found = {}
    for name in [*TABLE, *(name for name in INACTIVE if name not in TABLE)]:  # INACTIVE: when trying() it
        function = replacement_for(name, xp)
        if function is not None:
            found[name] = f"{function.__module__}.{function.__qualname__}"
    return found


__all__ = ["TABLE", "INACTIVE", "trying", "ENV", "enabled", "set_enabled", "disabled", "reset", "replaceable",
           "replaces", "replacement_for", "active"]
