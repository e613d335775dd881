"""Optimizers over one flat parameter buffer: Adam and SGD (the updates of torch.optim).

Every parameter of a network is a view into one contiguous ``store.data`` array and every
gradient a view into ``store.grad`` (see params.py), so an update is a few whole-array passes.
On NumPy they run in place into one preallocated scratch array: no model-sized temporaries.
"""
from __future__ import annotations

import math

from .backend import array_module
from .params import FlatStore


class Optimizer:
    """Holds the flat store of the parameters it updates and their per-element state."""

    def __init__(self, params, lr):
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        params = list(params)
        if not params:
            raise ValueError("the optimizer got an empty parameter list")
        self.store = FlatStore.of(params)
        self.lr = float(lr)
        self.xp = array_module(self.store.data)

    def zero_grad(self):
        self.store.zero_grad()

    def _check_store(self):
        if self.store.stale:
            raise RuntimeError("the model's parameters were re-packed after this optimizer was made "
                               "(model.to(...) moves them); create the optimizer after moving the model")

    def state_dict(self):
        raise NotImplementedError

    def load_state_dict(self, state):
        raise NotImplementedError

    def _load_buffers(self, state, names):
        for name in names:
            value = state[name]
            buf = getattr(self, name)
            if tuple(value.shape) != tuple(buf.shape):
                raise ValueError(f"optimizer state {name} has shape {tuple(value.shape)}, "
                                 f"expected {tuple(buf.shape)}: it belongs to another model")
            buf[...] = self.xp.asarray(value, dtype=buf.dtype)


class Adam(Optimizer):
    """Adam (Kingma & Ba), exactly as torch.optim.Adam, with optional L2 weight decay.

        g <- g + weight_decay * theta              (if weight_decay)
        m <- beta1 m + (1 - beta1) g               first moment
        v <- beta2 v + (1 - beta2) g^2             second moment
        theta <- theta - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    """

    def __init__(self, params, lr=2e-4, betas=(0.5, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        beta1, beta2 = betas
        if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0):
            raise ValueError(f"Adam betas must be in [0, 1), got {betas}")
        self.beta1, self.beta2 = float(beta1), float(beta2)
        self.eps, self.weight_decay = float(eps), float(weight_decay)
        xp, data = self.xp, self.store.data
        self.m = xp.zeros_like(data)
        self.v = xp.zeros_like(data)
        self.scratch = xp.empty_like(data)  # reused every step instead of fresh temporaries
        self.t = 0

    def step(self):
        self._check_store()
        xp, theta, g, m, v, tmp = self.xp, self.store.data, self.store.grad, self.m, self.v, self.scratch
        self.t += 1
        if self.weight_decay:
            # torch adds the decay into the gradient; we do it in the gradient buffer itself
            # (zeroed before the next backward anyway) to avoid a model-sized temporary
            xp.multiply(theta, self.weight_decay, out=tmp)
            g += tmp
        bias_correction1 = 1.0 - self.beta1 ** self.t
        bias_correction2_sqrt = math.sqrt(1.0 - self.beta2 ** self.t)
        step_size = self.lr / bias_correction1
        # m <- beta1 m + (1 - beta1) g
        m *= self.beta1
        xp.multiply(g, 1.0 - self.beta1, out=tmp)
        m += tmp
        # v <- beta2 v + (1 - beta2) g^2
        v *= self.beta2
        xp.multiply(g, g, out=tmp)
        tmp *= 1.0 - self.beta2
        v += tmp
        # theta <- theta - step_size * m / (sqrt(v) / sqrt(bc2) + eps)
        xp.sqrt(v, out=tmp)
        tmp *= 1.0 / bias_correction2_sqrt
        tmp += self.eps
        xp.divide(m, tmp, out=tmp)
        tmp *= -step_size
        theta += tmp

    def state_dict(self):
        return {"m": self.m, "v": self.v, "t": self.t}

    def load_state_dict(self, state):
        self._load_buffers(state, ("m", "v"))
        self.t = int(state["t"])


class SGD(Optimizer):
    """SGD with momentum, as torch.optim.SGD (dampening 0):  b <- mu b + g;  theta <- theta - lr b."""

    def __init__(self, params, lr=0.01, momentum=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, lr)
        if momentum < 0:
            raise ValueError(f"momentum must be >= 0, got {momentum}")
        if nesterov and momentum == 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.momentum, self.weight_decay, self.nesterov = float(momentum), float(weight_decay), nesterov
        self.buf = self.xp.zeros_like(self.store.data)
        self.scratch = self.xp.empty_like(self.store.data)
        self.t = 0

    def step(self):
        self._check_store()
        xp, theta, g, tmp = self.xp, self.store.data, self.store.grad, self.scratch
        self.t += 1
        if self.weight_decay:
            xp.multiply(theta, self.weight_decay, out=tmp)
            g += tmp
        if self.momentum:
            self.buf *= self.momentum
            self.buf += g  # torch starts the buffer at g; mu * 0 + g is the same
            if self.nesterov:
                xp.multiply(self.buf, self.momentum, out=tmp)
                tmp += g  # g + mu b
            else:
                tmp[...] = self.buf
        else:
            tmp[...] = g
        tmp *= -self.lr
        theta += tmp

    def state_dict(self):
        return {"buf": self.buf, "t": self.t}

    def load_state_dict(self, state):
        self._load_buffers(state, ("buf",))
        self.t = int(state["t"])
