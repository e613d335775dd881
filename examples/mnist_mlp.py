"""The main job: train the classic MLP GAN on MNIST and watch digits appear.

    python examples/mnist_mlp.py                      # NumPy on the CPU
    python examples/mnist_mlp.py --backend cupy       # CuPy on a CUDA GPU
    python examples/mnist_mlp.py --help               # every flag, with its default

Downloads MNIST (checksummed, cached in ~/.cache/scratchgan); offline it says so and trains on the
10k MNIST test digits bundled with the package. Outputs go to a new numbered folder, runs/00000-mlp-mnist-bce/
(--name NAME: runs/NAME/; --out DIR: DIR).

The same code as `scratchgan train --arch mlp` (the installed command, for both networks); this file fixes
the architecture and its defaults.
"""
import sys

from scratchgan import fast

if __name__ == "__main__":
    # first, before anything loads NumPy: OpenBLAS reads its thread wait only then (scratchgan/fast/process.py);
    # with --reference (or SCRATCHGAN_REFERENCE=1) nothing is set
    fast.configure_process(sys.argv[1:])
    from scratchgan.cli.train import train_main
    sys.exit(train_main(prog="mnist_mlp.py"))
