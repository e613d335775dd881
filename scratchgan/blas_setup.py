"""Where OpenBLAS's thread wait used to be set on import; now scratchgan/fast/process.py does it,
only when an entry point calls ``scratchgan.fast.configure_process()``.

Kept for trainer.env_summary and older scripts: ``applied`` is the OPENBLAS_THREAD_TIMEOUT that
configure_process loaded NumPy with ('18'), or None.
"""
from .fast.process import OPENBLAS_THREAD_TIMEOUT, import_numpy_with_short_thread_wait as import_numpy  # noqa: F401


def __getattr__(name):
    if name == "applied":
        from .fast.process import applied
        return applied()["OPENBLAS_THREAD_TIMEOUT"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
