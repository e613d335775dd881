"""The main job: train the classic MLP GAN on MNIST and watch digits appear.

    python examples/mnist_mlp.py                      # NumPy on the CPU
    python examples/mnist_mlp.py --backend cupy       # CuPy on a CUDA GPU
    python examples/mnist_mlp.py --help               # every flag, with its default

Downloads MNIST (checksummed, cached in ~/.cache/scratchgan); offline it says so and trains on the
10k MNIST test digits bundled with the package. Outputs go to runs/mnist_mlp/ (see --out).
"""
import sys

from scratchgan.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main(prog="mnist_mlp.py"))
