"""Spectral normalisation (Miyato et al. 2018): a Linear or Conv2d used through W_sn = W / sigma(W).

W is seen as a matrix with one row per output unit, Wm (D_out, D_in) (Linear: W^T; Conv2d: W
reshaped to (C_out, C_in kH kW)), as torch.nn.utils.parametrizations.spectral_norm sees it.
sigma(W), its largest singular value, is estimated by power iteration on vectors u (D_out,), v (D_in,):
    train mode, every forward:  u <- normalize(Wm v),  v <- normalize(Wm^T u)   (one step, u and v kept;
                                torch's order: the paper's Algorithm 1 updates v first, the same fixed point)
    eval mode:                  no step, the stored u and v
    sigma = u^T Wm v,   W_sn = W / sigma
Backward, with u and v constants (the paper's eq. 12 and torch: the update of u and v is not
differentiated), G = dL/dW_sn:
    dL/dW = (G - sum(G * W_sn) u v^T) / sigma           (docs/derivations/spectral_norm.md)
"""
from __future__ import annotations

from ..backend import array_module
from ..params import Parameter, make_rng
from .conv import Conv2d
from .linear import Linear
from .module import Module, Sequential

INIT_ITERATIONS = 15  # torch's spectral_norm runs 15 power steps when it is applied, as here


def normalize(a, eps):
    """a / max(||a||, eps): torch.nn.functional.normalize's guard against a zero vector."""
    xp = array_module(a)
    return a / xp.maximum(xp.linalg.norm(a), eps)


def power_iteration(Wm, u, v, steps, eps):
    """``steps`` power steps on Wm (D_out, D_in), written into u (D_out,) and v (D_in,) in place."""
    for _ in range(steps):
        u[...] = normalize(Wm @ v, eps)  # (D_out, D_in) @ (D_in,) -> (D_out,)
        v[...] = normalize(Wm.T @ u, eps)  # (D_in, D_out) @ (D_out,) -> (D_in,)


def spectral_norm_forward(W, Wm, u, v):
    """sigma = u^T Wm v and W_sn = W / sigma; ``Wm`` is W as the (D_out, D_in) matrix."""
    sigma = u @ (Wm @ v)  # (D_out,) . ((D_out, D_in) @ (D_in,)) -> a 0-d array
    W_sn = W / sigma
    return W_sn, (W_sn, sigma, u.copy(), v.copy())  # u, v copied: the next forward moves them


def spectral_norm_backward(dW_sn, cache, outer_shape):
    """dL/dW = (G - <G, W_sn> u v^T) / sigma, with u v^T laid out as W by ``outer_shape``."""
    W_sn, sigma, u, v = cache
    uv = outer_shape(u[:, None] * v[None, :])  # (D_out, 1) * (1, D_in) -> (D_out, D_in), in W's layout
    return (dW_sn - (dW_sn * W_sn).sum() * uv) / sigma


class SpectralNorm(Module):
    """``SpectralNorm(layer)`` for a Linear or Conv2d: the layer computes with W / sigma(W).

    The raw weight W is this module's parameter (the optimizer updates it); the wrapped layer keeps
    its bias and its maths, and its ``W`` becomes the derived W_sn of the last forward, a Parameter in
    no flat store whose ``grad`` receives dL/dW_sn. u and v are buffers (moved by ``to()``, saved in
    checkpoints like BatchNorm's running statistics).
    """

    def __init__(self, layer, n_power_iterations=1, eps=1e-12, seed=None):
        super().__init__()
        if not isinstance(layer, (Linear, Conv2d)):
            raise TypeError(f"SpectralNorm wraps a Linear or Conv2d, got {layer!r}")
        if n_power_iterations < 1:
            raise ValueError(f"SpectralNorm needs at least one power iteration, got {n_power_iterations}")
        self.layer, self.n_power_iterations, self.eps = layer, int(n_power_iterations), float(eps)
        W = layer._parameters.pop("W")  # the same Parameter (a view into the store, if packed): now ours
        self._parameters["W"] = W
        self.W = W
        layer.W = Parameter(W.data.copy())  # the derived W_sn and its dL/dW_sn
        xp = array_module(W.data)
        Wm = self._matrix(W.data)
        rng = make_rng(seed)
        # torch's init: u, v ~ N(0, I) normalised, then INIT_ITERATIONS power steps on the initial W
        u = normalize(xp.asarray(rng.standard_normal(Wm.shape[0]), dtype=W.data.dtype), self.eps)
        v = normalize(xp.asarray(rng.standard_normal(Wm.shape[1]), dtype=W.data.dtype), self.eps)
        self.register_buffer("u", u)
        self.register_buffer("v", v)
        power_iteration(Wm, self.u, self.v, INIT_ITERATIONS, self.eps)

    def children(self):
        return [self.layer]

    def _matrix(self, W):
        """W as the (D_out, D_in) matrix: Linear's W (D_in, D_out) transposed, Conv2d's W flattened."""
        return W.T if isinstance(self.layer, Linear) else W.reshape(W.shape[0], -1)

    def _outer_shape(self, uv):
        """u v^T (D_out, D_in) laid out as W."""
        return uv.T if isinstance(self.layer, Linear) else uv.reshape(self.W.data.shape)

    def on_moved(self, xp):
        """The derived W_sn follows W to the new backend and dtype (it is in no store)."""
        self.layer.W = Parameter(self.W.data.copy())

    def forward(self, x):
        W = self.W.data
        Wm = self._matrix(W)
        if self.training:
            power_iteration(Wm, self.u, self.v, self.n_power_iterations, self.eps)
        W_sn, cache = spectral_norm_forward(W, Wm, self.u, self.v)
        self.layer.W.data = W_sn  # a fresh array each forward: the layer's cache keeps its own
        y = self.layer.forward(x)
        self.cache = cache
        return y

    def backward(self, dy, param_grads=True, need_dx=True):
        cache = self.pop_cache()
        learn = param_grads and self.requires_grad
        if learn:
            self.layer.W.grad = array_module(dy).zeros_like(cache[0])  # dL/dW_sn of this backward only
        dx = self.layer.backward(dy, param_grads=param_grads, need_dx=need_dx)
        if learn:
            self.W.grad += spectral_norm_backward(self.layer.W.grad, cache, self._outer_shape)
        return dx

    def __repr__(self):
        return f"SpectralNorm({self.layer!r})"


def apply_spectral_norm(module, seed=0):
    """Wrap every Linear and Conv2d inside ``module`` (Sequentials, Conditional's net) in SpectralNorm.

    Returns the number wrapped. Parameters keep their order, so a packed flat store stays valid.
    """
    rng = make_rng(seed)
    count = 0
    for m in list(module.modules()):
        if isinstance(m, Sequential):
            for i, layer in enumerate(m.layers):
                if isinstance(layer, (Linear, Conv2d)):
                    m.layers[i] = SpectralNorm(layer, seed=rng)
                    count += 1
        elif hasattr(m, "net") and isinstance(m.net, (Linear, Conv2d)):
            m.net = SpectralNorm(m.net, seed=rng)
            count += 1
    return count
