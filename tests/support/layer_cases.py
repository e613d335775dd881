"""The layers every core test runs over, and the worst-error tables the test modules record.

A case is ``(name, factory, input_shape)``: ``factory(dtype)`` builds the layer with fixed seeds.
Other test files reuse them (``from layer_cases import LAYER_CASES, build_layer, make_input``)
and run their own cases (e.g. the conv layers) through the same helpers::

    from device_checks import check_layer_on_fake_device
    CONV_CASES = [("Conv2d", lambda dtype: nn.Conv2d(3, 4, 3, seed=0, dtype=dtype), (2, 3, 6, 6))]

    @pytest.mark.parametrize("mode", MODES)
    @pytest.mark.parametrize("factory, shape", layer_params(CONV_CASES))
    def test_conv_on_fake_device(factory, shape, mode):
        check_layer_on_fake_device(factory, shape, mode)

(and ``gradcheck.check_module(build_layer(factory, "float64", mode), make_input(shape))`` with
``record_error`` for the gradient-check table).
"""
from __future__ import annotations

import numpy as np
import pytest

from scratchgan import backend, nn

TORCH_REASON = "PyTorch not installed: parity tests need `pip install torch==2.13.0`"
CUPY_REASON = ('CuPy with a visible GPU not available: the cupy backend needs a GPU and '
               '`pip install "scratchgan[cuda12]"`')


def import_torch():
    """PyTorch, or skip the calling test with the install command."""
    return pytest.importorskip("torch", reason=TORCH_REASON)


def skip_unless_cupy():
    """Skip the calling test (with the reason) unless the cupy backend is usable here."""
    if not backend.cupy_available():
        pytest.skip(CUPY_REASON)


LAYER_CASES = [
    ("Linear", lambda dtype: nn.Linear(5, 3, seed=1, dtype=dtype), (4, 5)),
    ("Linear(bias=False)", lambda dtype: nn.Linear(6, 2, bias=False, seed=2, dtype=dtype), (3, 6)),
    ("LeakyReLU", lambda dtype: nn.LeakyReLU(0.2), (4, 6)),
    ("ReLU", lambda dtype: nn.ReLU(), (4, 6)),
    ("Tanh", lambda dtype: nn.Tanh(), (4, 6)),
    ("Sigmoid", lambda dtype: nn.Sigmoid(), (4, 6)),
    ("BatchNorm1d", lambda dtype: nn.BatchNorm1d(6, dtype=dtype), (8, 6)),
    ("BatchNorm2d", lambda dtype: nn.BatchNorm2d(3, dtype=dtype), (4, 3, 5, 5)),
    ("Dropout", lambda dtype: nn.Dropout(0.3, seed=5), (5, 7)),
    ("Flatten", lambda dtype: nn.Flatten(), (2, 3, 4, 5)),
    ("Reshape", lambda dtype: nn.Reshape(3, 4), (5, 12)),
    ("MaxPool2d(3, 2)", lambda dtype: nn.MaxPool2d(3, 2), (2, 3, 7, 8)),
    ("AvgPool2d(3, 1, 1, no pad count)", lambda dtype: nn.AvgPool2d(3, 1, 1, count_include_pad=False), (2, 3, 5, 6)),
    ("GlobalAvgPool2d", lambda dtype: nn.GlobalAvgPool2d(), (2, 3, 4, 5)),
    ("Concat", lambda dtype: concat_block(dtype), (4, 3, 5, 5)),
]


def concat_block(dtype, c_in=3):
    """An Inception-like Concat: a 1x1 conv branch, a conv-BatchNorm-ReLU branch (no bias before
    BatchNorm, as Inception: train mode would give the bias a zero gradient) and a pool branch."""
    return nn.Concat(nn.Conv2d(c_in, 2, 1, seed=11, dtype=dtype),
                     nn.Sequential(nn.Conv2d(c_in, 3, 3, padding=1, bias=False, seed=12, dtype=dtype),
                                   nn.BatchNorm2d(3, dtype=dtype), nn.ReLU()),
                     nn.AvgPool2d(3, 1, 1, count_include_pad=False))

MODES = ("train", "eval")


def layer_params(cases=None):
    """``pytest.mark.parametrize`` arguments ``(factory, shape)`` with readable ids."""
    cases = LAYER_CASES if cases is None else cases
    return [pytest.param(factory, shape, id=name) for name, factory, shape in cases]


def randomize_state(module, seed=0):
    """Move BatchNorm off its trivial init (gamma=1, beta=0, running stats 0/1), in place.

    A check at gamma = 1 cannot see a backward that forgets gamma; random running statistics
    make eval mode differ from the batch statistics.
    """
    rng = np.random.default_rng((seed, 0xB1))
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            d = m.num_features
            m.gamma.data[...] = _like(m.gamma.data, rng.uniform(0.5, 1.5, d))
            m.beta.data[...] = _like(m.beta.data, rng.normal(0.0, 0.5, d))
            m.running_mean[...] = _like(m.running_mean, rng.normal(0.0, 0.5, d))
            m.running_var[...] = _like(m.running_var, rng.uniform(0.5, 2.0, d))
    return module


def _like(target, host):
    """``host`` (a NumPy array) copied onto the backend and dtype of ``target``."""
    return backend.array_module(target).asarray(host, dtype=target.dtype)


def build_layer(factory, dtype="float64", mode="train", seed=0, backend=None):
    """The layer in ``dtype``, BatchNorm state randomised, packed into its flat store, in ``mode``."""
    layer = factory(dtype)
    randomize_state(layer, seed)
    layer.to(backend=backend, dtype=dtype)
    layer.train(mode == "train")
    return layer


def make_input(shape, dtype="float64", seed=0):
    """A host input with entries away from 0 (kinks of ReLU/LeakyReLU sit at 0)."""
    rng = np.random.default_rng((seed, 0x1A))
    x = rng.standard_normal(shape)
    x = np.where(np.abs(x) < 1e-3, 0.5, x)  # no entry within 1e-3 of a kink: h = 1e-6 never crosses it
    return x.astype(dtype)


def random_like(shape, dtype="float64", seed=0):
    """A random upstream gradient dy (never all ones)."""
    return np.random.default_rng((seed, 0xDD)).standard_normal(shape).astype(dtype)


# ------------------------------------------------------------------- worst-error tables
# {table title: {(layer, quantity, mode): worst error}}, printed by conftest at the session's end.
REPORT = {}


def record_error(table, layer, quantity, mode, error):
    rows = REPORT.setdefault(table, {})
    key = (layer, quantity, mode)
    rows[key] = max(rows.get(key, 0.0), float(error))


def format_report(table, full=False):
    """The table as text: one row per (layer, quantity, mode) if ``full``, else the worst per layer."""
    rows = REPORT.get(table, {})
    if not full:  # collapse to the worst entry of each layer, naming where it occurred
        worst = {}
        for (layer, quantity, mode), err in rows.items():
            if layer not in worst or err > worst[layer][2]:
                worst[layer] = (quantity, mode, err)
        rows = {(layer, q, m): e for layer, (q, m, e) in worst.items()}
    lines = [table, f"  {'layer / network':<30} {'quantity':<14} {'mode':<16} worst error",
             "  " + "-" * 74]
    for (layer, quantity, mode), err in rows.items():
        lines.append(f"  {layer:<30} {quantity:<14} {mode:<16} {err:.2e}")
    if rows:
        lines.append(f"  {'overall worst':<62} {max(rows.values()):.2e}")
    return "\n".join(lines)


def check_contract(layer, shape, dtype):
    """forward + backward once: dy and x untouched, output, dx, parameters, gradients and buffers keep dtype."""
    x = make_input(shape, dtype)
    x_copy = x.copy()
    y = layer.forward(x)
    assert y.dtype == np.dtype(dtype), f"{layer!r}: output {y.dtype} from {dtype} input"
    dy = random_like(y.shape, dtype)
    dy_copy = dy.copy()
    dx = layer.backward(dy)
    np.testing.assert_array_equal(dy, dy_copy, err_msg=f"{layer!r} modified dy")
    np.testing.assert_array_equal(x, x_copy, err_msg=f"{layer!r} modified x")
    assert dx.shape == x.shape and dx.dtype == np.dtype(dtype)
    for name, p in layer.named_parameters():
        assert p.data.dtype == p.grad.dtype == np.dtype(dtype), name
    for name, b in layer.named_buffers():
        assert b.dtype == np.dtype(dtype), f"buffer {name} is {b.dtype}"
