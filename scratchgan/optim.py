"""Optimizers over one flat parameter buffer: Adam, SGD and RMSprop (the updates of torch.optim).

Every parameter of a network is a view into one contiguous ``store.data`` array and every
gradient a view into ``store.grad`` (see params.py), so a step is one call of an update function
on whole arrays: ``adam_update``, ``sgd_update``, ``rmsprop_update``, each its paper's formula.
(Adam has replacements: in place on the cores on NumPy, one fused kernel on CuPy:
scratchgan/fast/.)
"""
from __future__ import annotations

from .backend import array_module
from .replace import replaceable
from .params import FlatStore


class Optimizer:
    """Holds the flat store of the parameters it updates and their per-element state."""

    def __init__(self, params, lr):
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        params = list(params)
        if not params:
            raise ValueError("the optimizer got an empty parameter list")
        self.store = FlatStore.of(params)  # the model's own store if it has one: no copy
        self.lr = float(lr)  # Python floats keep float32 arrays float32 (NumPy 2's promotion rules)
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
        """Copy ``state[name]`` into the buffer ``self.<name>``, checking shapes."""
        for name in names:
            value = state[name]
            buf = getattr(self, name)
            if tuple(value.shape) != tuple(buf.shape):
                raise ValueError(f"optimizer state {name} has shape {tuple(value.shape)}, "
                                 f"expected {tuple(buf.shape)}: it belongs to another model")
            buf[...] = self.xp.asarray(value, dtype=buf.dtype)


# ---------------------------------------------------------------------------------------- Adam

@replaceable  # fast: fast/cpu.py (CPU), fast/kernels.py (CuPy)
def adam_update(theta, g, m, v, t, lr, beta1, beta2, eps, weight_decay=0.0):
    """One Adam step at step number t (from 1), in place on theta, m and v (Kingma & Ba, Algorithm 1)."""
    xp = array_module(theta)
    if weight_decay:
        g = g + weight_decay * theta  # L2 decay, added to the gradient as torch.optim.Adam does
    m[...] = beta1 * m + (1.0 - beta1) * g  # first moment: running mean of g
    v[...] = beta2 * v + (1.0 - beta2) * g * g  # second moment: running mean of g^2
    # m and v start at 0, so early on they are too small by the factors 1 - beta^t: undo that
    m_hat = m / (1.0 - beta1 ** t)
    v_hat = v / (1.0 - beta2 ** t)
    theta -= lr * m_hat / (xp.sqrt(v_hat) + eps)  # a step of about lr per weight, whatever g's scale


class Adam(Optimizer):
    """Adam (Kingma & Ba), exactly as torch.optim.Adam, with optional L2 weight decay.

        g <- g + weight_decay * theta              (if weight_decay)
        m <- beta1 m + (1 - beta1) g               first moment
        v <- beta2 v + (1 - beta2) g^2             second moment
        theta <- theta - lr * m_hat / (sqrt(v_hat) + eps),  m_hat = m / (1 - beta1^t), v_hat = v / (1 - beta2^t)
    """

    def __init__(self, params, lr=2e-4, betas=(0.5, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        beta1, beta2 = betas
        if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0):
            raise ValueError(f"Adam betas must be in [0, 1), got {betas}")
        self.beta1, self.beta2 = float(beta1), float(beta2)
        self.eps, self.weight_decay = float(eps), float(weight_decay)
        self.m = self.xp.zeros_like(self.store.data)  # one moment per parameter, flat like the store
        self.v = self.xp.zeros_like(self.store.data)
        self.t = 0  # steps taken: the bias corrections need it

    def step(self):
        self._check_store()
        self.t += 1
        adam_update(self.store.data, self.store.grad, self.m, self.v, self.t, self.lr,
                    self.beta1, self.beta2, self.eps, self.weight_decay)

    def state_dict(self):
        return {"m": self.m, "v": self.v, "t": self.t}

    def load_state_dict(self, state):
        self._load_buffers(state, ("m", "v"))  # the moments (torch's exp_avg / exp_avg_sq are the same numbers)
        self.t = int(state["t"])


# ----------------------------------------------------------------------------------------- SGD

def sgd_update(theta, g, buf, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
    """One SGD step in place on theta (and the momentum buffer), as torch.optim.SGD (dampening 0)."""
    if weight_decay:
        g = g + weight_decay * theta
    if momentum:
        buf[...] = momentum * buf + g  # torch starts the buffer at g; mu * 0 + g is the same
        g = g + momentum * buf if nesterov else buf  # Nesterov: look one momentum step ahead
    theta -= lr * g


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
        self.t = 0

    def step(self):
        self._check_store()
        self.t += 1
        sgd_update(self.store.data, self.store.grad, self.buf, self.lr, self.momentum, self.weight_decay,
                   self.nesterov)

    def state_dict(self):
        return {"buf": self.buf, "t": self.t}

    def load_state_dict(self, state):
        self._load_buffers(state, ("buf",))
        self.t = int(state["t"])


# ------------------------------------------------------------------------------------- RMSprop

def rmsprop_update(theta, g, square_avg, grad_avg, buf, lr, alpha, eps, weight_decay=0.0, momentum=0.0):
    """One RMSprop step in place on theta and the state arrays, as torch.optim.RMSprop.

    ``grad_avg`` is None unless centered; ``buf`` is None unless momentum > 0.
    """
    xp = array_module(theta)
    if weight_decay:
        g = g + weight_decay * theta
    square_avg[...] = alpha * square_avg + (1.0 - alpha) * g * g  # running mean of g^2
    if grad_avg is not None:  # centered: divide by the running standard deviation instead
        grad_avg[...] = alpha * grad_avg + (1.0 - alpha) * g
        denom = xp.sqrt(square_avg - grad_avg * grad_avg) + eps
    else:
        denom = xp.sqrt(square_avg) + eps
    if buf is not None:
        buf[...] = momentum * buf + g / denom
        theta -= lr * buf
    else:
        theta -= lr * g / denom


class RMSprop(Optimizer):
    """RMSprop, exactly as torch.optim.RMSprop (the WGAN paper's optimizer for critic and generator).

        g <- g + weight_decay * theta                 (if weight_decay)
        v <- alpha v + (1 - alpha) g^2                running mean of squared gradients
        a <- alpha a + (1 - alpha) g;  d = sqrt(v - a^2) + eps  (centered)   or   d = sqrt(v) + eps
        theta <- theta - lr g / d                     (momentum 0)
        b <- mu b + g / d;  theta <- theta - lr b     (momentum mu > 0)
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
        super().__init__(params, lr)
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"RMSprop alpha must be in [0, 1), got {alpha}")
        if momentum < 0:
            raise ValueError(f"momentum must be >= 0, got {momentum}")
        self.alpha, self.eps, self.weight_decay = float(alpha), float(eps), float(weight_decay)
        self.momentum, self.centered = float(momentum), bool(centered)
        xp, data = self.xp, self.store.data
        self.square_avg = xp.zeros_like(data)
        self.grad_avg = xp.zeros_like(data) if self.centered else None
        self.buf = xp.zeros_like(data) if self.momentum else None
        self.t = 0

    def step(self):
        self._check_store()
        self.t += 1
        rmsprop_update(self.store.data, self.store.grad, self.square_avg, self.grad_avg, self.buf, self.lr,
                       self.alpha, self.eps, self.weight_decay, self.momentum)

    def state_dict(self):
        state = {"square_avg": self.square_avg, "t": self.t}
        if self.centered:
            state["grad_avg"] = self.grad_avg
        if self.momentum:
            state["buf"] = self.buf
        return state

    def load_state_dict(self, state):
        self._load_buffers(state, [k for k in ("square_avg", "grad_avg", "buf") if getattr(self, k) is not None])
        self.t = int(state["t"])
