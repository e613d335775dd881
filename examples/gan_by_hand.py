"""A GAN trained by hand: a generator G learns to turn noise z into digits while a discriminator D
learns to tell G's digits from real ones; each improves against the other. The whole MLP GAN
training loop in one file, from scratchgan's public layers.

    python examples/gan_by_hand.py                       # 3000 steps on the bundled MNIST digits (a few minutes)
    python examples/gan_by_hand.py --data-dir DIR        # or on a folder of MNIST-format IDX files
    python examples/gan_by_hand.py --fast                # the same GAN twice: textbook and fast paths side by side

Read it top to bottom: two networks, two optimizers, then one training step written out forward,
backward, update, in the order the maths runs. What runs is the textbook code of scratchgan/nn/,
losses.py and optim.py (a print in nn/activations.py's leaky_relu_backward prints here); ``--fast``
also trains a twin on the replacements of scratchgan/fast/ and prints both losses and times per step.
It is the step that scratchgan.gan.step.GANStep runs (tests/gan/test_gan_by_hand.py checks that they agree),
without GANStep's options: other objectives, several D steps, penalties, class labels, checkpoints.
"""
import argparse
import time
from pathlib import Path

import numpy as np

from scratchgan import losses, nn, optim, replace
from scratchgan.data import load_dataset, load_mnist_bundled
from scratchgan.run.viz import save_image_grid

LATENT = 100  # size of the noise vector z


def make_generator(seed):
    """G: z (N, 100) -> image (N, 784) in [-1, 1], the classic MNIST MLP generator.

    BatchNorm after the wider hidden layers keeps their activations in a healthy range; Tanh at the
    end matches the real images, which we scale to [-1, 1]. Every Linear draws its weights from one
    seeded generator, in order, so a seed gives the same network (scratchgan.gan.models.mlp_generator).
    """
    rng = np.random.default_rng([seed, 1])
    return nn.Sequential(
        nn.Linear(LATENT, 128, seed=rng), nn.LeakyReLU(0.2),
        nn.Linear(128, 512, seed=rng), nn.BatchNorm1d(512), nn.LeakyReLU(0.2),
        nn.Linear(512, 1024, seed=rng), nn.BatchNorm1d(1024), nn.LeakyReLU(0.2),
        nn.Linear(1024, 784, seed=rng), nn.Tanh())


def make_discriminator(seed):
    """D: image (N, 784) -> one logit per image (N, 1): > 0 means "real".

    D ends at the last Linear, without a Sigmoid: the loss takes logits (losses.bce_with_logits),
    which is exact for any logit, where log(sigmoid(x)) would round to log(0) for x << 0.
    """
    rng = np.random.default_rng([seed, 2])
    return nn.Sequential(
        nn.Linear(784, 512, seed=rng), nn.LeakyReLU(0.2),
        nn.Linear(512, 256, seed=rng), nn.LeakyReLU(0.2),
        nn.Linear(256, 128, seed=rng), nn.LeakyReLU(0.2),
        nn.Linear(128, 1, seed=rng))


def make_gan(seed):
    """G, D and their optimizers: Adam(lr 2e-4, betas 0.5/0.999), the DCGAN paper's choice."""
    G, D = make_generator(seed), make_discriminator(seed)
    return G, D, optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999)), \
        optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))


def sigmoid(x):
    """D's logit as a probability, for printing; the tanh form never overflows."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def train_step(G, D, opt_G, opt_D, real, z):
    """One GAN step on a real batch (N, 784) and a noise batch z (N, 100).

    Returns (loss_D, loss_G, D(x), D(G(z))); the losses as 0-d arrays, the D(.) as mean probabilities.
    """
    # G(z) once: D sees it as a constant in step 1, and G's forward cache serves its backward in step 2.
    fake = G.forward(z)  # (N, 100) -> (N, 784)

    # 1. D step: L_D = BCE(D(x), 1) + BCE(D(G(z)), 0). D learns to say "real" to x and "fake" to G(z).
    opt_D.zero_grad()  # backward ADDS into p.grad, so clear D's gradients first (one fill of its flat buffer)
    out_real = D.forward(real)  # (N, 1) logits; D keeps the cache its backward needs
    loss_real, dout = losses.bce_with_logits(out_real, 1.0)  # the loss and dL/dlogits = (sigmoid - 1) / N
    # adds dL/dW, dL/db into every D parameter's .grad; need_dx=False: nobody wants dL/d(real image),
    # so D's first Linear skips that matmul (PyTorch's autograd skips it too: x requires no grad)
    D.backward(dout, need_dx=False)
    out_fake = D.forward(fake)  # one backward per forward: D's cache now belongs to the fake batch
    loss_fake, dout = losses.bce_with_logits(out_fake, 0.0)
    D.backward(dout, need_dx=False)  # no dL/dfake: D's loss must not move G (PyTorch's .detach())
    opt_D.step()  # Adam over D's flat parameter buffer, with the sum of both gradients

    # 2. G step: L_G = BCE(D(G(z)), 1), through the UPDATED D. This is the "non-saturating" loss:
    # -log D(G(z)) instead of log(1 - D(G(z))), which gives G strong gradients when D rejects its fakes.
    opt_G.zero_grad()
    out = D.forward(fake)
    loss_G, dout = losses.bce_with_logits(out, 1.0)  # G wants D to call its fakes real
    dfake = D.backward(dout)  # the chain rule through D: dL_G/dG(z), (N, 784)
    # D.backward also added dL_G/dW into D's .grad. Nothing uses them: opt_D.zero_grad() clears them
    # before D's next update. (GANStep skips computing D's weight gradients here, as an optimisation.)
    G.backward(dfake, need_dx=False)  # ... and on through G: dL_G/dW for every G parameter (no dL/dz)
    opt_G.step()
    return loss_real + loss_fake, loss_G, sigmoid(out_real).mean(), sigmoid(out_fake).mean()


def load_images(data_dir):
    """uint8 (N, 28, 28) images: the 10,000 MNIST digits bundled with scratchgan, or IDX files in DIR."""
    if data_dir is None:
        return load_mnist_bundled()[0]
    # verify=False: any MNIST-format files will do (MNIST, Fashion-MNIST, your own), not only MNIST's
    return load_dataset("mnist", "train", data_dir=data_dir, verify=False)[0]


def main(argv=None):
    p = argparse.ArgumentParser(description="Train the classic MLP GAN by hand, in one readable loop.")
    p.add_argument("--steps", type=int, default=3000, help="training steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="(default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seeds weights, data order and noise (default: %(default)s)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="folder with train-images-idx3-ubyte[.gz] (default: the bundled MNIST digits)")
    p.add_argument("--out", default="runs/gan_by_hand", metavar="DIR",
                   help="where samples.png goes (default: %(default)s)")
    p.add_argument("--fast", action="store_true", help="also train a twin on the fast paths, side by side")
    args = p.parse_args(argv)

    # The data: uint8 pixels 0..255 -> float32 in [-1, 1], the range of G's Tanh. One row per image.
    images = load_images(args.data_dir)
    x_all = images.reshape(len(images), 784).astype(np.float32) / 127.5 - 1.0  # Python floats keep float32
    B = args.batch_size
    batches_per_epoch = len(x_all) // B  # the last partial batch is dropped, as PyTorch's drop_last=True
    if batches_per_epoch == 0:
        p.error(f"--batch-size {B} is larger than the {len(x_all)} images")

    # --fast: a twin GAN, same seeds and batches, on the fast path: equal losses at first, then apart by
    # the rounding differences a GAN amplifies step by step
    paths = ("reference", "fast") if args.fast else ("reference",)
    gans = {path: make_gan(args.seed) for path in paths}
    seconds = dict.fromkeys(paths, 0.0)
    G, D = gans["reference"][:2]
    print(f"G {G.num_parameters():,} and D {D.num_parameters():,} parameters; "
          f"{len(x_all)} images, {batches_per_epoch} batches of {B} per epoch")
    rng = np.random.default_rng(args.seed)
    fixed_z = rng.standard_normal((64, LATENT), dtype=np.float32)  # the same 64 z for the final grid
    for step in range(args.steps):
        i = step % batches_per_epoch
        if i == 0:  # a new epoch: a new order of the images
            order = rng.permutation(len(x_all))
        real = x_all[order[i * B:(i + 1) * B]]  # (B, 784)
        z = rng.standard_normal((B, LATENT), dtype=np.float32)  # z ~ N(0, I), (B, 100)
        stats = {}
        for path, gan in gans.items():
            replace.set_enabled(path == "fast")  # off: every layer runs its textbook pair
            start = time.perf_counter()
            stats[path] = [float(v) for v in train_step(*gan, real, z)]  # float(): waits for the result
            seconds[path] += time.perf_counter() - start
        if step % 100 == 0 or step == args.steps - 1:
            # A healthy GAN hovers: D(x) somewhat above 0.5, D(G(z)) somewhat below, neither loss to 0.
            d_loss, g_loss, d_x, d_g_z = stats["reference"]
            line = f"step {step:5d}  loss_D {d_loss:.4f}  loss_G {g_loss:.4f}  D(x) {d_x:.3f}  D(G(z)) {d_g_z:.3f}"
            if args.fast:  # the twin's losses (equal to rounding) and each path's time per step so far
                ms = {path: 1e3 * seconds[path] / (step + 1) for path in paths}
                line += (f"  | fast: loss_D {stats['fast'][0]:.4f}  loss_G {stats['fast'][1]:.4f}  "
                         f"| ms/step reference {ms['reference']:.1f}, fast {ms['fast']:.1f}")
            print(line)
    replace.set_enabled(None)  # back to the library's default (the environment's SCRATCHGAN_REFERENCE)
    if args.fast:
        print(f"the fast path took {seconds['fast'] / seconds['reference']:.2f}x the reference's time per step")

    # Samples: eval mode makes BatchNorm use its running statistics, not those of this one batch.
    G.eval()
    samples = G.forward(fixed_z)  # (64, 784) in [-1, 1]
    G.train()
    path = save_image_grid(samples, Path(args.out) / "samples.png", nrow=8, scale=2, image_shape=(28, 28))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
