"""The CNN evaluator: a small convolutional classifier, the default embedding of scratchgan.eval.metrics.

Built from layers that are already gradient-checked (Conv2d, BatchNorm2d, LeakyReLU, Flatten, Linear,
Dropout); trained by scratchgan.eval.evaluator's shared loop (softmax cross-entropy, Adam, seeded):

    image (N, 784) in [-1, 1] -> Reshape (N, 1, 28, 28)
      -> Conv2d 1 -> C1, 3x3, stride 2, pad 1  -> BatchNorm2d -> LeakyReLU(0.2)   (N, C1, 14, 14)
      -> Conv2d C1 -> C2, 3x3, stride 2, pad 1 -> BatchNorm2d -> LeakyReLU(0.2)   (N, C2, 7, 7)
      -> Flatten (N, 49 C2) -> Dropout(0.3) -> Linear 128 -> LeakyReLU(0.2)      <- features (N, 128)
      -> Linear 10                                                                <- logits

Why convolutions: the MLP evaluator's features see global shape and little local texture, so blur,
speckle and stripes barely move them; the convolutions' local filters respond to exactly those.
Strided convolutions (no pooling layer) keep the network to layers the engine already has.
The convolutions have no bias: the BatchNorm after each one adds its own shift (beta).
"""
from __future__ import annotations

from .. import nn
from ..params import make_rng

DEFAULT_CHANNELS = (16, 32)
DEFAULT_FEATURES = 128
DEFAULT_DROPOUT = 0.3


def build_cnn_classifier(image_shape=(1, 28, 28), channels=DEFAULT_CHANNELS, features=DEFAULT_FEATURES,
                         n_classes=10, slope=0.2, dropout=DEFAULT_DROPOUT, seed=0, dtype="float32"):
    """The evaluator CNN (module docstring): stride-2 conv stages, then the feature Linear, then the head.

    Takes flat (N, C*H*W) inputs (what scratchgan.eval.evaluator.as_model_input and a flattening BatchLoader
    give) and reshapes them to images first, so MLP and CNN evaluators are fed alike.
    """
    C, H, W = (int(s) for s in image_shape)
    channels = tuple(int(c) for c in channels)
    if not channels or any(c <= 0 for c in channels) or features <= 0 or min(C, H, W) <= 0:
        raise ValueError(f"CNN evaluator sizes must be positive with at least one conv stage, got "
                         f"image {image_shape}, channels {channels}, features {features}")
    rng = make_rng(seed)
    layers, c_in = [nn.Reshape(C, H, W)], C
    for c_out in channels:
        layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False, seed=rng, dtype=dtype),
                   nn.BatchNorm2d(c_out, dtype=dtype), nn.LeakyReLU(slope)]
        c_in = c_out
        H, W = (H + 1) // 2, (W + 1) // 2      # (H + 2*1 - 3) // 2 + 1
    layers.append(nn.Flatten())
    if dropout > 0:
        layers.append(nn.Dropout(dropout, seed=int(rng.integers(2**31))))
    layers += [nn.Linear(c_in * H * W, features, seed=rng, dtype=dtype), nn.LeakyReLU(slope),
               nn.Linear(features, n_classes, seed=rng, dtype=dtype)]
    return nn.Sequential(*layers)


def describe_cnn(image_shape=(1, 28, 28), channels=DEFAULT_CHANNELS, features=DEFAULT_FEATURES, n_classes=10):
    """e.g. 'CNN 1x28x28 -> conv16/2 -> conv32/2 -> 1568 -> 128 -> 10 (features: 128)'."""
    C, H, W = image_shape
    stages = " -> ".join(f"conv{c}/2" for c in channels)
    for _ in channels:
        H, W = (H + 1) // 2, (W + 1) // 2
    return (f"CNN {C}x{image_shape[1]}x{image_shape[2]} -> {stages} -> {channels[-1] * H * W} -> {features} "
            f"-> {n_classes} (features: {features})")


__all__ = ["build_cnn_classifier", "describe_cnn", "DEFAULT_CHANNELS", "DEFAULT_FEATURES"]
