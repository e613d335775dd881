"""A small feature network for the FID protocol's tests (scratchgan.eval.fid takes any network): it needs no
Inception weights, and its features move with the images as a real network's do."""
import numpy as np


class PooledProjection:
    """(N, 3, 299, 299) -> 8x8 average pools (37 x 37 pixels each, the last 3 rows and columns dropped) ->
    (N, 192) @ W (192, F), W fixed by ``seed``. ``weights_sha256``: a made-up name for its weights, as the
    Inception network names its own; ``calls``: the batch sizes it was given."""

    def __init__(self, F=16, seed=0, weights_sha256="ab" * 32):
        self.W = np.random.default_rng(seed).standard_normal((192, F)).astype(np.float32)
        self.weights_sha256 = weights_sha256
        self.calls = []

    def forward(self, x):
        assert x.shape[1:] == (3, 299, 299) and x.dtype == np.float32, (x.shape, x.dtype)
        assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0      # the network's range
        self.calls.append(len(x))
        p = x[:, :, :296, :296].reshape(len(x), 3, 8, 37, 8, 37).mean(axis=(3, 5))
        return p.reshape(len(x), -1) @ self.W                         # (N, 192) @ (192, F) -> (N, F)
