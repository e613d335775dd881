"""DCGAN (Radford et al.) from scratch: Conv2d / ConvTranspose2d / BatchNorm2d written by hand.

    python examples/dcgan.py --dataset fashion-mnist --data-dir ../shared/datasets/fashion-mnist --epochs 1
    python examples/dcgan.py --dataset folder --data-dir img_align_celeba/    # 64x64 RGB, the tutorial's
    python examples/dcgan.py --help                                           # every flag, with its default

Same outputs, checkpoints, resume and progress display as examples/mnist_mlp.py (shared code in
scratchgan/cli/train.py). A folder of images is decoded once into a cached uint8 array.

The same code as `scratchgan train --arch dcgan` (the installed command, for both networks); this file fixes
the architecture and its defaults.
"""
import sys

from scratchgan import fast

if __name__ == "__main__":
    # first, before anything loads NumPy: OpenBLAS reads its thread wait only then (scratchgan/fast/process.py);
    # with --reference (or SCRATCHGAN_REFERENCE=1) nothing is set
    fast.configure_process(sys.argv[1:])
    from scratchgan.cli.train import DCGAN_DEFAULTS, train_main
    sys.exit(train_main(prog="dcgan.py", defaults=DCGAN_DEFAULTS,
                        description="Train a DCGAN on MNIST-like data or a folder of images, from scratch in "
                                    "NumPy (or CuPy with --backend cupy)."))
