"""Optimizers over one flat parameter buffer: Adam and SGD (the updates of torch.optim).

Every parameter of a network is a view into one contiguous ``store.data`` array and every
gradient a view into ``store.grad`` (see params.py), so an update is a few whole-array passes.
On NumPy they run in place into one preallocated scratch array: no model-sized temporaries.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .backend import array_module, cpu_threads, fused_kernel, run_in_parts
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

    threads = None  # CPU threads for the update; None = the cores this process may use
    _pool = None  # the executor of the other threads, made on the first threaded update

    def _apply(self, update, *arrays):
        """Run ``update(*parts)`` over the flat arrays: on the CPU split into one contiguous part per
        thread (NumPy's ufuncs release the GIL), elsewhere over the whole arrays at once (a GPU
        launches one kernel per pass anyway). See backend.run_in_parts."""
        n = arrays[0].size
        threads = self.threads or cpu_threads()
        if self._pool is None and self.xp is np and threads > 1:
            # kept for the next steps: starting threads anew every step would cost ~0.2 ms
            self._pool = ThreadPoolExecutor(threads - 1, thread_name_prefix="scratchgan-optim")
        run_in_parts(self.xp, lambda start, stop: update(*(a[start:stop] for a in arrays)), n,
                     elements=n * len(arrays), threads=threads, pool=self._pool)

    def _check_store(self):
        if self.store.stale:
            raise RuntimeError("the model's parameters were re-packed after this optimizer was made "
                               "(model.to(...) moves them); create the optimizer after moving the model")

    def state_dict(self):
        raise NotImplementedError

    def load_state_dict(self, state):
        raise NotImplementedError

    def _load_buffers(self, state, names, into=None):
        """Copy ``state[name]`` into the buffer ``self.<into>`` (default: the same name), checking shapes."""
        for name, attr in zip(names, into or names):
            value = state[name]
            buf = getattr(self, attr)
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

    We keep the moments as exponentially weighted *sums* instead of averages,
        m_sum = m / (1 - beta1) = sum_k beta1^(t-k) g_k,   v_sum = v / (1 - beta2) = sum_k beta2^(t-k) g_k^2,
    because their updates  m_sum <- beta1 m_sum + g,  v_sum <- beta2 v_sum + g^2  take one whole-array
    pass fewer each, and the constant factors fold into two scalars of the parameter update:
        theta <- theta - step_size * m_sum / (sqrt(v_sum) + eps_sum)
        step_size = lr (1 - beta1) / ((1 - beta1^t) a),  eps_sum = eps / a,  a = sqrt((1 - beta2) / (1 - beta2^t)).
    That is 10 passes over the flat buffers instead of 13 (on the CPU the update is bound by memory
    traffic, so passes are time). The properties ``m`` and ``v`` give the textbook moments.
    """

    def __init__(self, params, lr=2e-4, betas=(0.5, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        beta1, beta2 = betas
        if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0):
            raise ValueError(f"Adam betas must be in [0, 1), got {betas}")
        self.beta1, self.beta2 = float(beta1), float(beta2)
        self.eps, self.weight_decay = float(eps), float(weight_decay)
        xp, data = self.xp, self.store.data
        self.m_sum = xp.zeros_like(data)
        self.v_sum = xp.zeros_like(data)
        self.scratch = xp.empty_like(data)  # reused every step instead of fresh temporaries
        self.t = 0

    @property
    def m(self):
        """The first moment m = (1 - beta1) m_sum, as torch's exp_avg (a new array)."""
        return self.m_sum * (1.0 - self.beta1)

    @property
    def v(self):
        """The second moment v = (1 - beta2) v_sum, as torch's exp_avg_sq (a new array)."""
        return self.v_sum * (1.0 - self.beta2)

    def step(self):
        self._check_store()
        self.t += 1
        beta1, beta2, eps, weight_decay = self.beta1, self.beta2, self.eps, self.weight_decay
        a = math.sqrt((1.0 - beta2) / (1.0 - beta2 ** self.t))  # sqrt(v_hat) = a sqrt(v_sum)
        step_size = self.lr * (1.0 - beta1) / ((1.0 - beta1 ** self.t) * a)
        eps_sum = eps / a
        xp = self.xp
        fused = fused_kernel(xp, "adam")  # CuPy: the passes of update() below in one kernel
        if fused is not None:
            fused(beta1, beta2, -step_size, eps_sum, weight_decay,
                  self.store.data, self.store.grad, self.m_sum, self.v_sum)
            return

        def update(theta, g, m_sum, v_sum, tmp):
            if weight_decay:
                # torch adds the decay into the gradient; we do it in the gradient buffer itself
                # (zeroed before the next backward anyway) to avoid a model-sized temporary
                xp.multiply(theta, weight_decay, out=tmp)
                g += tmp
            # m_sum <- beta1 m_sum + g
            m_sum *= beta1
            m_sum += g
            # v_sum <- beta2 v_sum + g^2
            v_sum *= beta2
            xp.multiply(g, g, out=tmp)
            v_sum += tmp
            # theta <- theta - step_size * m_sum / (sqrt(v_sum) + eps_sum)
            xp.sqrt(v_sum, out=tmp)
            tmp += eps_sum
            xp.divide(m_sum, tmp, out=tmp)
            tmp *= -step_size
            theta += tmp

        self._apply(update, self.store.data, self.store.grad, self.m_sum, self.v_sum, self.scratch)

    def state_dict(self):
        # the sums themselves, so that a resumed run continues bit for bit
        return {"m_sum": self.m_sum, "v_sum": self.v_sum, "t": self.t}

    def load_state_dict(self, state):
        if "m_sum" in state:
            self._load_buffers(state, ("m_sum", "v_sum"))
        else:  # the textbook moments (checkpoints of scratchgan 0.1, torch's exp_avg / exp_avg_sq)
            self._load_buffers(state, ("m", "v"), into=("m_sum", "v_sum"))
            self.m_sum /= 1.0 - self.beta1
            self.v_sum /= 1.0 - self.beta2
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
        self.t += 1
        xp, lr, momentum, nesterov, weight_decay = self.xp, self.lr, self.momentum, self.nesterov, self.weight_decay

        def update(theta, g, buf, tmp):
            if weight_decay:
                xp.multiply(theta, weight_decay, out=tmp)
                g += tmp
            if momentum:
                buf *= momentum
                buf += g  # torch starts the buffer at g; mu * 0 + g is the same
                if nesterov:
                    xp.multiply(buf, momentum, out=tmp)
                    tmp += g  # g + mu b
                else:
                    tmp[...] = buf
            else:
                tmp[...] = g
            tmp *= -lr
            theta += tmp

        self._apply(update, self.store.data, self.store.grad, self.buf, self.scratch)

    def state_dict(self):
        return {"buf": self.buf, "t": self.t}

    def load_state_dict(self, state):
        self._load_buffers(state, ("buf",))
        self.t = int(state["t"])


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
        self.scratch = xp.empty_like(data)
        self.t = 0

    def step(self):
        self._check_store()
        self.t += 1
        xp, lr, alpha, eps = self.xp, self.lr, self.alpha, self.eps
        weight_decay, momentum, centered = self.weight_decay, self.momentum, self.centered

        def update(theta, g, v, tmp, *rest):
            a = rest[0] if centered else None  # the optional buffers follow in this order
            b = rest[-1] if momentum else None
            if weight_decay:
                xp.multiply(theta, weight_decay, out=tmp)
                g += tmp  # in the gradient buffer, as Adam does (zeroed before the next backward)
            # v <- alpha v + (1 - alpha) g^2
            v *= alpha
            xp.multiply(g, g, out=tmp)
            tmp *= 1.0 - alpha
            v += tmp
            if centered:
                # a <- alpha a + (1 - alpha) g;  tmp = sqrt(v - a^2)
                a *= alpha
                xp.multiply(g, 1.0 - alpha, out=tmp)
                a += tmp
                xp.multiply(a, a, out=tmp)
                xp.subtract(v, tmp, out=tmp)
                xp.sqrt(tmp, out=tmp)
            else:
                xp.sqrt(v, out=tmp)
            tmp += eps  # tmp = d
            xp.divide(g, tmp, out=tmp)  # g / d
            if momentum:
                b *= momentum
                b += tmp
                xp.multiply(b, -lr, out=tmp)
            else:
                tmp *= -lr
            theta += tmp

        optional = [x for x in (self.grad_avg, self.buf) if x is not None]
        self._apply(update, self.store.data, self.store.grad, self.square_avg, self.scratch, *optional)

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
