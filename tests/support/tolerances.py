"""Tolerances that scale with the quantity: no absolute tolerance on a float32 result.

A float32 result is correct to a few ulps *of the numbers it is made from*, so "near 0" means near 0
on that scale, not below a fixed 1e-6. ``scale(a)`` is a result's size (its largest finite magnitude);
``assert_close`` is ``assert_allclose`` with ``atol = rtol * scale(expected)``.
"""
import numpy as np

FLOAT32_EPS = float(np.finfo(np.float32).eps)  # 1.19e-7: one ulp at 1.0


def scale(a):
    """The size of a result: its largest finite magnitude (0.0 when it has none)."""
    a = np.abs(np.asarray(a, dtype=np.float64))
    a = a[np.isfinite(a)]
    return float(a.max()) if a.size else 0.0


def assert_close(actual, expected, rtol, err_msg=""):
    """Each entry within ``rtol`` of the expected one, or within ``rtol`` times the expected result's
    size: an entry near 0 of a result of size 1 is held to that size's rounding, not to a fixed number."""
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale(expected), err_msg=err_msg)
