"""Central differences in float64 for every layer and loss: input and every parameter, train and eval.

``gradcheck.check_module`` draws a random upstream gradient dy (never all ones), sets
L = sum(y * dy) and compares backward's dx and parameter gradients with (L(+h) - L(-h)) / 2h
entry by entry; the relative error (norm of the difference over the sum of the norms) must stay
below 1e-7. The worst error per layer / quantity / mode is printed at the end of the session.
"""
import numpy as np
import pytest

from layer_cases import build_layer, concat_block, make_input, record_error
from scratchgan import gradcheck, losses, nn

TOL = 1e-7
TABLE = "gradient check: worst relative error (central differences, float64)"

# (name, factory, several input shapes); BatchNorm needs N > 2 for a well-conditioned check
# (at N = 2 its train-mode output is +-1 whatever x is, so dx is O(eps) and the check is vacuous)
GRADCHECK_CASES = [
    ("Linear", lambda dt: nn.Linear(5, 3, seed=1, dtype=dt), [(1, 5), (4, 5), (9, 5)]),
    ("Linear(1, 7)", lambda dt: nn.Linear(1, 7, seed=3, dtype=dt), [(6, 1)]),
    ("Linear(bias=False)", lambda dt: nn.Linear(6, 2, bias=False, seed=2, dtype=dt), [(3, 6)]),
    ("LeakyReLU(0.2)", lambda dt: nn.LeakyReLU(0.2), [(4, 6), (2, 3, 4, 5)]),
    ("LeakyReLU(0.01)", lambda dt: nn.LeakyReLU(), [(5, 4)]),
    ("ReLU", lambda dt: nn.ReLU(), [(4, 6), (2, 3, 4, 5)]),
    ("Tanh", lambda dt: nn.Tanh(), [(4, 6), (2, 3, 4, 5)]),
    ("Sigmoid", lambda dt: nn.Sigmoid(), [(4, 6), (2, 3, 4, 5)]),
    ("BatchNorm1d", lambda dt: nn.BatchNorm1d(6, dtype=dt), [(3, 6), (8, 6), (32, 6)]),
    ("BatchNorm1d(eps=1e-3, m=0.5)", lambda dt: nn.BatchNorm1d(4, eps=1e-3, momentum=0.5, dtype=dt),
     [(7, 4)]),
    ("BatchNorm2d", lambda dt: nn.BatchNorm2d(3, dtype=dt), [(4, 3, 5, 5), (2, 3, 2, 3), (3, 3, 1, 2)]),
    ("Dropout(0.3)", lambda dt: nn.Dropout(0.3, seed=5), [(5, 7), (2, 3, 4, 4)]),
    ("Dropout(0.0)", lambda dt: nn.Dropout(0.0), [(3, 4)]),
    ("Flatten", lambda dt: nn.Flatten(), [(2, 3, 4, 5), (3, 7)]),
    ("Reshape", lambda dt: nn.Reshape(3, 4), [(5, 12)]),
    ("Reshape(1, 2, 2)", lambda dt: nn.Reshape(1, 2, 2), [(3, 2, 2)]),
    # pooling: floor mode, odd sizes, overlapping windows (stride < kernel), padding, non-square kernels
    ("MaxPool2d(3, 2)", lambda dt: nn.MaxPool2d(3, 2), [(2, 3, 7, 8), (1, 2, 3, 3)]),
    ("MaxPool2d(3, 1, 1)", lambda dt: nn.MaxPool2d(3, 1, 1), [(2, 2, 5, 4)]),
    ("MaxPool2d(2)", lambda dt: nn.MaxPool2d(2), [(2, 2, 5, 7)]),
    ("MaxPool2d((3, 2), (2, 1), (1, 0))", lambda dt: nn.MaxPool2d((3, 2), (2, 1), (1, 0)), [(2, 2, 6, 5)]),
    ("AvgPool2d(3, 1, 1)", lambda dt: nn.AvgPool2d(3, 1, 1), [(2, 2, 5, 4)]),
    ("AvgPool2d(3, 1, 1, no pad count)", lambda dt: nn.AvgPool2d(3, 1, 1, count_include_pad=False),
     [(2, 2, 5, 4), (1, 3, 1, 2)]),
    ("AvgPool2d(3, 2, 1, no pad count)", lambda dt: nn.AvgPool2d(3, 2, 1, count_include_pad=False),
     [(2, 2, 7, 6)]),
    ("AvgPool2d((2, 3), (1, 2))", lambda dt: nn.AvgPool2d((2, 3), (1, 2)), [(2, 2, 4, 7)]),
    ("GlobalAvgPool2d", lambda dt: nn.GlobalAvgPool2d(), [(2, 3, 4, 5), (3, 2, 1, 1)]),
    # Concat: dx sums over the branches; the branches' W, b, gamma, beta are checked too
    ("Concat", lambda dt: concat_block(dt), [(4, 3, 5, 5)]),
    ("Concat(pools)", lambda dt: nn.Concat(nn.MaxPool2d(3, 1, 1), nn.AvgPool2d(3, 1, 1)), [(2, 2, 4, 5)]),
]


def _cases():
    for name, factory, shapes in GRADCHECK_CASES:
        for shape in shapes:
            for mode in ("train", "eval"):
                yield pytest.param(name, factory, shape, mode, id=f"{name}-{shape}-{mode}")


@pytest.mark.parametrize("name, factory, shape, mode", list(_cases()))
def test_layer_gradients_match_central_differences(name, factory, shape, mode):
    layer = build_layer(factory, "float64", mode, seed=len(shape))
    x = make_input(shape, "float64", seed=sum(shape))
    before = None
    if isinstance(layer, nn.Dropout):
        # the same mask in every forward of the check: reseed before each one
        before = lambda: layer.reseed(11)  # noqa: E731
    errors = gradcheck.check_module(layer, x, seed=3, before_forward=before)
    expected = {"x"} | {n for n, _ in layer.named_parameters()}
    assert set(errors) == expected
    for quantity, err in errors.items():
        record_error(TABLE, name, quantity, mode, err)
    bad = {q: e for q, e in errors.items() if not e < TOL}
    assert not bad, f"{name} {shape} {mode}: relative errors above {TOL}: {bad}"


def test_check_module_fails_on_a_wrong_backward(monkeypatch):
    """The check has teeth: a BatchNorm backward that forgets gamma's factor is caught."""
    from scratchgan.nn import batchnorm

    layer = build_layer(lambda dt: nn.BatchNorm1d(4, dtype=dt), "float64", "train")
    real = batchnorm.batchnorm_backward_train

    def wrong(dy, cache, axes=(0,)):
        dx, dgamma, dbeta = real(dy, cache, axes)
        xhat, gamma, inv_std = cache
        return dx / gamma, dgamma, dbeta  # as if gamma were 1

    monkeypatch.setattr(batchnorm, "batchnorm_backward_train", wrong)
    errors = gradcheck.check_module(layer, make_input((6, 4)))
    assert errors["x"] > 1e-3 and errors["gamma"] < TOL


# ------------------------------------------------------------------------------------- losses

def _logits(shape, seed):
    return make_input(shape, seed=seed) * 3.0


def _probs(shape, seed):
    # stay away from 0 and 1, where bce's clamps (and the +-h steps) would meet
    return np.random.default_rng(seed).uniform(0.05, 0.95, shape)


LOSS_CASES = [
    ("bce_with_logits", losses.bce_with_logits, _logits),
    ("bce", losses.bce, _probs),
    ("mse", losses.mse, lambda shape, seed: make_input(shape, seed=seed)),
]
TARGETS = {  # scalars, label smoothing (0.9), arrays, and an array broadcast over the features
    "t=1": lambda shape: 1.0,
    "t=0": lambda shape: 0.0,
    "t=0.9": lambda shape: 0.9,
    "t=U(0,1)": lambda shape: np.random.default_rng(7).uniform(0.0, 1.0, shape),
    "t=0/1": lambda shape: (np.random.default_rng(8).uniform(size=shape) > 0.5).astype(np.float64),
    "t=(N,1)": lambda shape: np.random.default_rng(9).uniform(0.0, 1.0, (shape[0], 1)),
}


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("name, loss_fn, make", LOSS_CASES, ids=[c[0] for c in LOSS_CASES])
def test_loss_gradients_match_central_differences(name, loss_fn, make, target):
    shape = (8, 3)
    x = make(shape, seed=len(target))
    t = TARGETS[target](shape)
    err = gradcheck.check_loss(loss_fn, x, t)
    record_error(TABLE, f"loss {name}", "input", target, err)
    assert err < TOL, f"{name} with target {target}: relative error {err:.2e}"


def test_check_loss_fails_on_a_wrong_gradient():
    def wrong_mse(y, t):
        loss, dy = losses.mse(y, t)
        return loss, dy * 0.5  # a factor 2 lost
    assert gradcheck.check_loss(wrong_mse, make_input((4, 2)), 0.3) > 0.1


def test_numerical_gradient_perturbs_non_contiguous_and_0d_arrays():
    """The finite differences must perturb x itself, whatever its memory layout."""
    base = make_input((4, 6))
    for x in (base.T, base[:, ::2], np.asarray(1.5)):
        assert gradcheck.numerical_gradient(lambda: (x ** 3).sum(), x).shape == x.shape
        # float64; atol: the central differences' roundoff, eps |sum x^3| / h
        np.testing.assert_allclose(gradcheck.numerical_gradient(lambda: (x ** 3).sum(), x),
                                   3 * x ** 2, rtol=1e-7, atol=1e-7)
    layer = build_layer(lambda dt: nn.Linear(4, 3, seed=0, dtype=dt))
    errors = gradcheck.check_module(layer, make_input((4, 4)).T)  # a transposed (N, D_in) input
    assert max(errors.values()) < TOL


# ---------------------------------------------------------------- Projection: (phi, labels) -> (N, 1)
class _ProjectionAtLabels(nn.Projection):
    """nn.Projection with its labels fixed, so that check_module (one input) checks phi -> out."""

    def __init__(self, num_features, num_classes, labels, seed, dtype):
        super().__init__(num_features, num_classes, seed=seed, dtype=dtype)
        self.labels = labels

    def forward(self, phi, labels=None):
        return super().forward(phi, self.labels)


@pytest.mark.parametrize("F, K, labels", [
    (6, 3, [2, 0, 2, 1, 2]),          # a repeated label: its rows of V's gradient add up
    (1, 2, [1, 1, 0]),
    (12, 5, [4, 4, 4, 4]),            # one class only: the other rows of V get no gradient
], ids=["F6-K3", "F1-K2", "F12-K5-one-class"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_projection_gradients_match_central_differences(F, K, labels, mode):
    labels = np.array(labels)
    layer = build_layer(lambda dt: _ProjectionAtLabels(F, K, labels, seed=F, dtype=dt), "float64", mode)
    errors = gradcheck.check_module(layer, make_input((len(labels), F), seed=F), seed=4)
    assert set(errors) == {"x", "W", "b", "V"}
    for quantity, err in errors.items():
        record_error(TABLE, "Projection", quantity, mode, err)
    bad = {q: e for q, e in errors.items() if not e < TOL}
    assert not bad, f"Projection F={F} K={K} {mode}: relative errors above {TOL}: {bad}"
    unused = np.setdiff1d(np.arange(K), labels)
    assert not np.any(layer.V.grad[unused]), "rows of labels not in the batch get no gradient"
