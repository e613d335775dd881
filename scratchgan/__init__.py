"""scratchgan: a GAN engine from scratch in NumPy (and CuPy), every backward pass written by hand."""
from .blas_setup import import_numpy

import_numpy()  # first: OpenBLAS reads its thread settings when NumPy loads it (blas_setup.py)

from . import backend, gradcheck, losses, nn, optim, params
from .backend import get_xp, to_numpy

__version__ = "0.1.0"
__all__ = ["backend", "gradcheck", "losses", "nn", "optim", "params", "get_xp", "to_numpy", "__version__"]
