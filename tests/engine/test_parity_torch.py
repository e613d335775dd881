"""PyTorch parity in float64 on the CPU: layers, losses and optimizers against their torch twins.

Each comparison asserts ``assert_allclose(ours, torch, rtol=1e-9, atol=1e-13)`` and records the
worst relative error max|ours - torch| / max|torch| per layer and quantity; the table is printed
at the end of the session. Skipped with the install command where PyTorch is absent.
"""
import numpy as np
import pytest

from layer_cases import make_input, random_like, record_error
from scratchgan import losses, nn, optim
from scratchgan.backend import to_numpy

RTOL, ATOL = 1e-9, 1e-13  # float64 only; ATOL matters only for entries within 1e-4 of 0
TABLE = "PyTorch parity: worst relative error max|ours - torch| / max|torch| (float64)"


def _np(a):
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy()
    return to_numpy(a)


def compare(ours, theirs, layer, quantity, mode="-"):
    ours, theirs = np.asarray(_np(ours)), np.asarray(_np(theirs))
    assert ours.shape == theirs.shape, f"{layer} {quantity}: shape {ours.shape} vs torch {theirs.shape}"
    scale = max(float(np.max(np.abs(theirs), initial=0.0)), 1e-300)
    err = float(np.max(np.abs(ours - theirs), initial=0.0)) / scale
    record_error(TABLE, layer, quantity, mode, err)
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL, err_msg=f"{layer} {quantity} {mode}")
    return err


def _t(torch, a, grad=False):
    return torch.tensor(np.array(a, dtype=np.float64), dtype=torch.float64, requires_grad=grad)


def _run_pair(torch, ours, theirs, x, dy, name, mode):
    """Forward and backward through both; compare y and dx. Returns the torch input tensor."""
    xt = _t(torch, x, grad=True)
    y = ours.forward(x)
    yt = theirs(xt)
    compare(y, yt, name, "y", mode)
    dx = ours.backward(dy.copy())
    yt.backward(_t(torch, dy))
    compare(dx, xt.grad, name, "dx", mode)


# ------------------------------------------------------------------------------------- layers

@pytest.mark.parametrize("d_in, d_out, n", [(5, 3, 4), (1, 7, 6), (16, 8, 1)])
def test_linear(torch, d_in, d_out, n):
    ours = nn.Linear(d_in, d_out, seed=d_in, dtype="float64").to()
    theirs = torch.nn.Linear(d_in, d_out, dtype=torch.float64)
    with torch.no_grad():  # our W is (D_in, D_out), torch's weight (D_out, D_in)
        theirs.weight.copy_(_t(torch, ours.W.data.T))
        theirs.bias.copy_(_t(torch, ours.b.data))
    x = make_input((n, d_in), seed=n)
    _run_pair(torch, ours, theirs, x, random_like((n, d_out), seed=n), "Linear", "-")
    compare(ours.W.grad, theirs.weight.grad.T, "Linear", "dW")
    compare(ours.b.grad, theirs.bias.grad, "Linear", "db")


ELEMENTWISE = [
    ("LeakyReLU(0.2)", lambda: nn.LeakyReLU(0.2), lambda torch: torch.nn.LeakyReLU(0.2)),
    ("LeakyReLU(0.01)", lambda: nn.LeakyReLU(), lambda torch: torch.nn.LeakyReLU()),
    ("ReLU", lambda: nn.ReLU(), lambda torch: torch.nn.ReLU()),
    ("Tanh", lambda: nn.Tanh(), lambda torch: torch.nn.Tanh()),
    ("Sigmoid", lambda: nn.Sigmoid(), lambda torch: torch.nn.Sigmoid()),
    ("Flatten", lambda: nn.Flatten(), lambda torch: torch.nn.Flatten()),
]


@pytest.mark.parametrize("scale", [1.0, 40.0])
@pytest.mark.parametrize("name, ours, theirs", ELEMENTWISE, ids=[c[0] for c in ELEMENTWISE])
def test_elementwise_and_flatten(torch, name, ours, theirs, scale):
    x = make_input((4, 3, 2, 5), seed=2) * scale  # scale 40: saturated tanh/sigmoid, exp(-|x|) tiny
    dy_shape = (4, 30) if name == "Flatten" else x.shape
    _run_pair(torch, ours().to(dtype="float64"), theirs(torch), x, random_like(dy_shape, seed=3),
              name, f"|x|~{scale:g}")


def test_reshape_against_unflatten(torch):
    x = make_input((5, 12))
    _run_pair(torch, nn.Reshape(3, 4), torch.nn.Unflatten(1, (3, 4)), x,
              random_like((5, 3, 4)), "Reshape", "-")


BATCHNORMS = [
    ("BatchNorm1d", lambda: nn.BatchNorm1d(6, dtype="float64"),
     lambda torch: torch.nn.BatchNorm1d(6, dtype=torch.float64), (8, 6)),
    ("BatchNorm1d(eps=1e-3, m=0.3)", lambda: nn.BatchNorm1d(4, eps=1e-3, momentum=0.3, dtype="float64"),
     lambda torch: torch.nn.BatchNorm1d(4, eps=1e-3, momentum=0.3, dtype=torch.float64), (5, 4)),
    ("BatchNorm2d", lambda: nn.BatchNorm2d(3, dtype="float64"),
     lambda torch: torch.nn.BatchNorm2d(3, dtype=torch.float64), (4, 3, 5, 5)),
]


@pytest.mark.parametrize("name, ours, theirs, shape", BATCHNORMS, ids=[c[0] for c in BATCHNORMS])
def test_batchnorm_train_three_batches_then_eval(torch, name, ours, theirs, shape):
    ours, theirs = ours().to(), theirs(torch)
    rng = np.random.default_rng(0)
    gamma, beta = rng.uniform(0.5, 1.5, ours.num_features), rng.normal(0.0, 0.5, ours.num_features)
    ours.gamma.data[...], ours.beta.data[...] = gamma, beta
    with torch.no_grad():
        theirs.weight.copy_(_t(torch, gamma))
        theirs.bias.copy_(_t(torch, beta))
    ours.train(), theirs.train()
    for batch in range(3):  # the running statistics must follow torch's after every batch
        x = make_input(shape, seed=batch) * (1.0 + batch) + 0.3 * batch
        ours.zero_grad()
        theirs.zero_grad()
        _run_pair(torch, ours, theirs, x, random_like(shape, seed=batch), name, "train")
        compare(ours.gamma.grad, theirs.weight.grad, name, "dgamma", "train")
        compare(ours.beta.grad, theirs.bias.grad, name, "dbeta", "train")
        compare(ours.running_mean, theirs.running_mean, name, "run_mean", "train")
        compare(ours.running_var, theirs.running_var, name, "run_var", "train")
    ours.eval(), theirs.eval()
    ours.zero_grad()
    theirs.zero_grad()
    x = make_input(shape, seed=9)
    _run_pair(torch, ours, theirs, x, random_like(shape, seed=9), name, "eval")
    compare(ours.gamma.grad, theirs.weight.grad, name, "dgamma", "eval")
    compare(ours.beta.grad, theirs.bias.grad, name, "dbeta", "eval")
    compare(ours.running_var, theirs.running_var, name, "run_var", "eval")  # eval leaves them alone


# ------------------------------------------------------------------------------------- losses

def _targets(kind, shape):
    if kind == "array":
        return np.random.default_rng(5).uniform(0.0, 1.0, shape)
    return {"1": 1.0, "0": 0.0, "0.9": 0.9}[kind]


def _loss_pair(torch, ours_fn, torch_fn, x, t, name, mode):
    loss, dx = ours_fn(x, t)
    assert np.isfinite(to_numpy(loss)) and np.all(np.isfinite(dx)), f"{name}: not finite"
    xt = _t(torch, x, grad=True)
    tt = _t(torch, np.broadcast_to(t, x.shape))
    loss_t = torch_fn(xt, tt)  # mean reduction, torch's default
    loss_t.backward()
    compare(loss, loss_t, name, "loss", mode)
    compare(dx, xt.grad, name, "dinput", mode)


TARGET_KINDS = ["1", "0", "0.9", "array"]


@pytest.mark.parametrize("target", TARGET_KINDS)
def test_bce_with_logits(torch, target):
    z = make_input((16, 1), seed=1) * 4.0
    _loss_pair(torch, losses.bce_with_logits, torch.nn.functional.binary_cross_entropy_with_logits,
               z, _targets(target, z.shape), "bce_with_logits", f"t={target}")


@pytest.mark.parametrize("target", TARGET_KINDS)
def test_bce_with_logits_extreme_logits(torch, target):
    z = np.array([[1e4], [-1e4], [700.0], [-700.0], [40.0], [-40.0], [0.5], [-1e4]])
    _loss_pair(torch, losses.bce_with_logits, torch.nn.functional.binary_cross_entropy_with_logits,
               z, _targets(target, z.shape), "bce_with_logits", f"z=+-1e4,t={target}")


@pytest.mark.parametrize("target", TARGET_KINDS)
def test_bce(torch, target):
    p = np.random.default_rng(2).uniform(0.01, 0.99, (16, 1))
    _loss_pair(torch, losses.bce, torch.nn.functional.binary_cross_entropy, p,
               _targets(target, p.shape), "bce", f"t={target}")


@pytest.mark.parametrize("target", TARGET_KINDS)
def test_bce_saturated_probabilities_clamp_like_torch(torch, target):
    """p = 0 and p = 1 exactly (a float32 sigmoid saturates there): logs clamped at -100."""
    p = np.array([[0.0], [1.0], [1e-300], [1.0 - 1e-16], [1e-50], [0.5]])
    _loss_pair(torch, losses.bce, torch.nn.functional.binary_cross_entropy, p,
               _targets(target, p.shape), "bce", f"p=0/1,t={target}")


@pytest.mark.parametrize("target", TARGET_KINDS)
def test_mse(torch, target):
    y = make_input((8, 3), seed=4)
    _loss_pair(torch, losses.mse, torch.nn.functional.mse_loss, y, _targets(target, y.shape),
               "mse", f"t={target}")


# --------------------------------------------------------------------------------- optimizers

def _mlp_and_torch_params(torch):
    model = nn.Sequential(nn.Linear(4, 6, seed=1, dtype="float64"), nn.LeakyReLU(0.2),
                          nn.Linear(6, 3, seed=2, dtype="float64")).to(dtype="float64")
    return model, [_t(torch, p.data, grad=True) for p in model.parameters()]


def _optimizer_parity(torch, ours_opt, torch_opt, model, torch_params, name, steps=10):
    assert ours_opt.store is model.flat_store()  # one pass over the network's flat store
    rng = np.random.default_rng(42)
    for step in range(steps):
        ours_opt.zero_grad()
        for p, tp in zip(model.parameters(), torch_params):
            g = rng.standard_normal(p.shape) * 0.1
            p.grad[...] = g  # writes into the flat gradient buffer
            tp.grad = _t(torch, g)
        ours_opt.step()
        torch_opt.step()
        for (pname, p), tp in zip(model.named_parameters(), torch_params):
            compare(p.data, tp, name, pname, "10 steps")


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
@pytest.mark.parametrize("betas", [(0.5, 0.999), (0.9, 0.99)])
def test_adam(torch, betas, weight_decay):
    model, tparams = _mlp_and_torch_params(torch)
    ours = optim.Adam(model.parameters(), lr=1e-2, betas=betas, weight_decay=weight_decay)
    theirs = torch.optim.Adam(tparams, lr=1e-2, betas=betas, eps=1e-8, weight_decay=weight_decay)
    name = f"Adam{betas}" + (f" wd={weight_decay}" if weight_decay else "")
    _optimizer_parity(torch, ours, theirs, model, tparams, name)


@pytest.mark.parametrize("momentum, nesterov, weight_decay", [
    (0.0, False, 0.0), (0.9, False, 0.0), (0.9, True, 0.0), (0.5, True, 0.01), (0.9, False, 0.01)])
def test_sgd(torch, momentum, nesterov, weight_decay):
    model, tparams = _mlp_and_torch_params(torch)
    kw = dict(lr=0.05, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    ours, theirs = optim.SGD(model.parameters(), **kw), torch.optim.SGD(tparams, **kw)
    name = f"SGD m={momentum}" + (" nesterov" if nesterov else "") + (f" wd={weight_decay}" if weight_decay else "")
    _optimizer_parity(torch, ours, theirs, model, tparams, name)


# ------------------------------------------------------------- the projection discriminator's head
def test_projection(torch):
    """nn.Projection against torch's Linear(F, 1) + Embedding(K, F): forward, every gradient, and three
    Adam steps of the parameters afterwards (the scatter-add of V's rows included)."""
    F, K = 7, 4
    ours = nn.Projection(F, K, seed=3, dtype="float64").to()
    psi, embed = torch.nn.Linear(F, 1, dtype=torch.float64), torch.nn.Embedding(K, F, dtype=torch.float64)
    with torch.no_grad():  # our W is (F, 1), torch's weight (1, F); V is the embedding's weight
        psi.weight.copy_(_t(torch, ours.W.data.T))
        psi.bias.copy_(_t(torch, ours.b.data))
        embed.weight.copy_(_t(torch, ours.V.data))
    opt = optim.Adam(ours.parameters(), lr=1e-2, betas=(0.5, 0.999))
    opt_t = torch.optim.Adam([psi.weight, psi.bias, embed.weight], lr=1e-2, betas=(0.5, 0.999))
    labels = np.array([3, 0, 3, 3, 1, 0])
    for step in range(3):
        phi = make_input((6, F), seed=step)
        dy = random_like((6, 1), seed=step)
        opt.zero_grad()
        opt_t.zero_grad()
        phi_t = _t(torch, phi, grad=True)
        y_t = psi(phi_t) + (embed(torch.from_numpy(labels)) * phi_t).sum(dim=1, keepdim=True)
        y = ours.forward(phi, labels)
        compare(y, y_t, "Projection", "y")
        dphi = ours.backward(dy.copy())
        y_t.backward(_t(torch, dy))
        compare(dphi, phi_t.grad, "Projection", "dphi")
        compare(ours.W.grad, psi.weight.grad.T, "Projection", "dW")
        compare(ours.b.grad, psi.bias.grad, "Projection", "db")
        compare(ours.V.grad, embed.weight.grad, "Projection", "dV")
        opt.step()
        opt_t.step()
        compare(ours.W.data, psi.weight.T, "Projection", "W after Adam")
        compare(ours.V.data, embed.weight, "Projection", "V after Adam")
