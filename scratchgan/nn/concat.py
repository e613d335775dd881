"""Concat: branches side by side on one input, their outputs joined along the channels.

forward:  y = concatenate([b_1(x), ..., b_B(x)], axis=1): b_k's C_k channels sit at [o_k, o_k + C_k)
backward: dx = sum_k b_k.backward(dy[:, o_k:o_k + C_k])  (x feeds every branch: its gradients add up)
Shapes: x: any the branches take; b_k(x): (N, C_k, ...) with the same N and trailing sizes for every k;
y: (N, C_1 + ... + C_B, ...).                                                  (docs/derivations/concat.md)
"""
from __future__ import annotations

from ..backend import array_module
from .module import Module


def concat_forward(ys):
    """y = the branches' outputs joined along axis 1.  ys: [(N, C_k, ...)] -> y: (N, sum C_k, ...), offsets.

    A 4-D y is laid out channels-last when the first branch's output is (the convolutions' layout), so the
    next convolution reads it without a copy; either way it is the same array of numbers.
    """
    xp = array_module(ys[0])
    N, rest = ys[0].shape[0], tuple(ys[0].shape[2:])
    for k, yk in enumerate(ys):
        if yk.ndim < 2 or yk.shape[0] != N or tuple(yk.shape[2:]) != rest:
            wanted = ", ".join(["N", "C_k", *map(str, rest)])
            raise ValueError(f"Concat: branch {k} gives {tuple(yk.shape)}, but branch 0 gives "
                             f"{tuple(ys[0].shape)}; every branch must give ({wanted})")
        if yk.dtype != ys[0].dtype:
            raise TypeError(f"Concat: branch {k} gives {yk.dtype}, branch 0 gives {ys[0].dtype}")
    sizes = [yk.shape[1] for yk in ys]
    offsets = [sum(sizes[:k]) for k in range(len(sizes) + 1)]  # branch k owns channels [o_k, o_{k+1})
    if ys[0].ndim == 4 and ys[0].transpose(0, 2, 3, 1).flags.c_contiguous:
        H, W = rest
        y = xp.empty((N, H, W, offsets[-1]), dtype=ys[0].dtype).transpose(0, 3, 1, 2)  # channels-last
        for k, yk in enumerate(ys):
            y[:, offsets[k]:offsets[k + 1]] = yk
    else:
        y = xp.concatenate(ys, axis=1)
    return y, offsets


def concat_backward_slices(dy, offsets):
    """dy: (N, sum C_k, ...) -> [dy[:, o_k:o_{k+1}]], each branch's share of dy (views, never written)."""
    return [dy[:, offsets[k]:offsets[k + 1]] for k in range(len(offsets) - 1)]


class Concat(Module):
    """``Concat(*branches)``: x -> concatenate([b(x) for b in branches], axis=1).

    A container, like Sequential: its parameters and buffers are the branches' (named "0.W", "1.2.gamma",
    ...), in branch order, so flat_store(), train()/eval(), to() and state_dict() reach them.
    """

    def __init__(self, *branches):
        super().__init__()
        if not branches:
            raise ValueError("Concat needs at least one branch")
        for b in branches:
            if not isinstance(b, Module):
                raise TypeError(f"Concat takes Modules, got {type(b).__name__}")
        self.branches = list(branches)

    def children(self):
        return self.branches

    def forward(self, x):
        y, self.cache = concat_forward([b.forward(x) for b in self.branches])
        return y

    def backward(self, dy, param_grads=True, need_dx=True):
        """dx = the sum of the branches' dx, each from its own slice of dy; each branch adds its own
        parameter gradients (``param_grads``). With ``need_dx`` False the branches skip their dx too."""
        offsets = self.pop_cache()
        dx = None
        for b, dy_k in zip(self.branches, concat_backward_slices(dy, offsets)):
            dx_k = b.backward(dy_k, param_grads=param_grads, need_dx=need_dx)
            if not need_dx:
                continue
            if dx is None:
                dx = dx_k.copy()  # a branch's dx may be a view of its own buffers: never add into it
            else:
                dx += dx_k
        return dx

    def __iter__(self):
        return iter(self.branches)

    def __len__(self):
        return len(self.branches)

    def __getitem__(self, i):
        return self.branches[i]

    def __repr__(self):
        inner = "\n".join(f"  ({i}): {b!r}" for i, b in enumerate(self.branches))
        return f"Concat(\n{inner}\n)"
