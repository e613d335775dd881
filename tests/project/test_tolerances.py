"""The suite's own rule: no absolute tolerance on a float32 result (DESIGN.md, "Tests").

A float32 result is right to a few ulps of the numbers it is made from, so a fixed ``atol=1e-6`` is too
loose for a result of size 1e-3 and too tight for one of size 1e3. Tolerances scale with the quantity
(tests/support/tolerances.py); a literal absolute tolerance is allowed only on a float64 comparison, said on
its line or one of the two above (a call spread over lines).
"""
import re
from pathlib import Path

import numpy as np
import pytest

from tolerances import assert_close, scale

TESTS = Path(__file__).resolve().parents[1]  # tests/
LITERAL_ABSOLUTE = re.compile(r"\b(atol|abs)\s*=\s*(\d+(\.\d*)?|\.\d+)([eE]-?\d+)?(?!\s*\*)\s*[,)]")


def test_every_literal_absolute_tolerance_is_on_a_float64_comparison():
    bare = []
    for path in sorted(TESTS.rglob("*.py")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            m = LITERAL_ABSOLUTE.search(line.split("#")[0])
            if (m and m.group(2).strip("0.") and "``" not in line  # a docstring quoting code
                    and not any("float64" in l for l in lines[max(i - 2, 0):i + 1])):
                bare.append(f"{path.name}:{i + 1}: {line.strip()}")
    assert not bare, ("absolute tolerances on what may be float32 results; scale them with the quantity "
                      "(tests/support/tolerances.py) or say 'float64' on the line:\n" + "\n".join(bare))


def test_assert_close_scales_the_absolute_tolerance_with_the_result():
    big = np.array([1000.0, 0.0], dtype=np.float32)
    assert_close(big + np.float32([0.0, 1e-3]), big, 1e-5)      # 1e-3 off a 0 in a result of size 1000: rounding
    with pytest.raises(AssertionError):
        assert_close(np.float32([1e-3, 0.0]), np.float32([1e-3, 1e-6]), 1e-5)  # 1e-6 off in a result of size 1e-3
    assert scale(np.array([np.inf, -3.0, np.nan])) == 3.0 and scale(np.zeros(0)) == 0.0
