"""Layers with hand-written forward and backward passes (PyTorch names and layouts)."""
from .activations import LeakyReLU, ReLU, Sigmoid, Tanh
from .batchnorm import BatchNorm1d, BatchNorm2d
from .concat import Concat
from .conv import Conv2d, ConvTranspose2d
from .dropout import Dropout
from .embedding import Conditional, Embedding, one_hot
from .linear import Linear
from .module import Module, Sequential
from .pooling import AvgPool2d, GlobalAvgPool2d, MaxPool2d
from .projection import Projection, ProjectionDiscriminator
from .reshape import Flatten, Reshape
from .spectral_norm import SpectralNorm, apply_spectral_norm
from .sync_batchnorm import SyncBatchNorm1d, SyncBatchNorm2d, convert_sync_batchnorm

__all__ = ["Module", "Sequential", "Linear", "LeakyReLU", "ReLU", "Tanh", "Sigmoid",
           "BatchNorm1d", "BatchNorm2d", "Conv2d", "ConvTranspose2d", "Dropout", "Flatten", "Reshape",
           "Embedding", "Conditional", "one_hot", "SpectralNorm", "apply_spectral_norm",
           "SyncBatchNorm1d", "SyncBatchNorm2d", "convert_sync_batchnorm",
           "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "Concat", "Projection", "ProjectionDiscriminator"]
