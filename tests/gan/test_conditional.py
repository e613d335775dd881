"""Conditional GAN: nn.Embedding (gradient check, PyTorch parity, the scatter-add), the label
concatenation nn.Conditional (gradient checks for flat and image inputs, one-hot and learned codes),
the conditional G step checked through D, and the path end to end: train a few steps with
--conditional, then `scratchgan sample --label K` writes the grid.
"""
from __future__ import annotations

import numpy as np
import pytest
from datasets import dataset_dir  # tests/support/datasets.py: ../shared/datasets, found relative
from fake_device import xp as fake_xp
from layer_cases import record_error
from PIL import Image

from scratchgan import losses, nn
from scratchgan.backend import scatter_add
from scratchgan.checkpoint import load_checkpoint
from scratchgan.cli import sample as sample_cli
from scratchgan.cli import train as train_command
from scratchgan.gradcheck import directional_check, numerical_gradient, relative_error

TABLE = "Conditional layers: analytic vs central differences (relative error)"
TOL = 1e-7


@pytest.fixture(autouse=True)
def no_download_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHGAN_DATA", str(tmp_path / "scratchgan-cache"))


# ---------------------------------------------------------------------------------- Embedding
def test_scatter_add_adds_every_repeat():
    a = np.zeros((4, 2))
    scatter_add(a, np.array([1, 3, 1, 1]), np.arange(8.0).reshape(4, 2))
    np.testing.assert_array_equal(a, [[0, 0], [0 + 4 + 6, 1 + 5 + 7], [0, 0], [2, 3]])
    d = fake_xp.zeros((4, 2))
    scatter_add(d, fake_xp.asarray(np.array([1, 3, 1, 1])), fake_xp.asarray(np.arange(8.0).reshape(4, 2)))
    np.testing.assert_array_equal(d.get(), a)


def test_embedding_gradcheck_with_repeated_indices():
    emb = nn.Embedding(5, 3, seed=0).to("numpy", "float64")
    idx = np.array([4, 0, 4, 2, 4, 0])
    dy = np.random.default_rng(1).standard_normal((6, 3))
    y = emb.forward(idx)
    np.testing.assert_array_equal(y, emb.W.data[idx])
    emb.zero_grad()
    dy_before = dy.copy()
    assert emb.backward(dy) is None  # no gradient for indices
    np.testing.assert_array_equal(dy, dy_before)

    def loss():
        out = emb.forward(idx)
        emb.cache = None
        return (out * dy).sum()
    err = relative_error(emb.W.grad, numerical_gradient(loss, emb.W.data))
    record_error(TABLE, "Embedding", "W", "train", err)
    assert err < TOL
    assert not np.any(emb.W.grad[[1, 3]]), "rows of unused labels get no gradient"


def test_embedding_parity_with_torch(torch):
    emb = nn.Embedding(10, 4, seed=3).to("numpy", "float64")
    t = torch.nn.Embedding(10, 4).double()
    with torch.no_grad():
        t.weight.copy_(torch.from_numpy(emb.W.data.copy()))
    idx = np.array([3, 3, 9, 0, 3, 7, 9, 1])
    dy = np.random.default_rng(2).standard_normal((8, 4))
    emb.zero_grad()
    y = emb.forward(idx)
    emb.backward(dy)
    y_t = t(torch.from_numpy(idx))
    (y_t * torch.from_numpy(dy)).sum().backward()
    np.testing.assert_array_equal(y, y_t.detach().numpy())
    err = relative_error(emb.W.grad, t.weight.grad.numpy())
    record_error("PyTorch parity (relative error)", "Embedding", "W", "float64", err)
    assert err < 1e-12


def test_embedding_default_init_is_standard_normal():
    W = nn.Embedding(200, 50, seed=0).W.data
    assert abs(W.mean()) < 0.02 and abs(W.std() - 1.0) < 0.02 and W.dtype == np.float32


@pytest.mark.parametrize("bad, error, match", [
    (np.array([0.0, 1.0]), TypeError, "integer"),
    (np.array([[0, 1]]), ValueError, "shape"),
    (np.array([0, 5]), ValueError, r"\[0, 5\)"),
    (np.array([-1, 2]), ValueError, r"\[0, 5\)"),
])
def test_embedding_refuses_bad_labels(bad, error, match):
    with pytest.raises(error, match=match):
        nn.Embedding(5, 2).forward(bad)


def test_embedding_on_the_fake_device_equals_numpy():
    host = nn.Embedding(6, 3, seed=1).to("numpy", "float32")
    dev = nn.Embedding(6, 3, seed=1).to(fake_xp, "float32")
    idx = np.array([5, 1, 1, 0])
    dy = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    np.testing.assert_array_equal(dev.forward(fake_xp.asarray(idx)).get(), host.forward(idx))
    host.backward(dy)
    dev.backward(fake_xp.asarray(dy))
    np.testing.assert_array_equal(dev.W.grad.get(), host.W.grad)


# ---------------------------------------------------------------------------------- Conditional
CASES = {
    "flat one-hot": (lambda: nn.Conditional(nn.Sequential(nn.Linear(5 + 4, 3, seed=1), nn.LeakyReLU(0.2),
                                                          nn.Linear(3, 2, seed=2)), 4), (6, 5)),
    "flat embedding": (lambda: nn.Conditional(nn.Sequential(nn.Linear(5 + 3, 3, seed=1), nn.Tanh(),
                                                            nn.Linear(3, 2, seed=2)), 4, 3, seed=5), (6, 5)),
    "image embedding": (lambda: nn.Conditional(nn.Sequential(nn.Conv2d(2 + 3, 2, 3, padding=1, seed=1),
                                                             nn.Flatten(), nn.Linear(2 * 4 * 4, 1, seed=2)),
                                               4, 3, seed=5), (3, 2, 4, 4)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_conditional_gradcheck_input_and_every_parameter(case):
    factory, shape = CASES[case]
    net = factory().to("numpy", "float64")
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape)
    labels = np.arange(shape[0]) % 4
    labels[0] = labels[1]  # a repeated label
    y = net.forward(x, labels)
    dy = rng.standard_normal(y.shape)
    dy_before = dy.copy()
    net.zero_grad()
    dx = net.backward(dy)
    np.testing.assert_array_equal(dy, dy_before)
    assert dx.shape == x.shape

    def loss():
        out = net.forward(x, labels)
        for m in net.modules():
            m.cache = None
        return (out * dy).sum()
    errors = {"x": relative_error(dx, numerical_gradient(loss, x))}
    grads = {name: p.grad.copy() for name, p in net.named_parameters()}
    for name, p in net.named_parameters():
        errors[name] = relative_error(grads[name], numerical_gradient(loss, p.data))
    for name, err in errors.items():
        record_error(TABLE, f"Conditional ({case})", name, "train", err)
        assert err < TOL, f"{name}: {err:.2e}"


def test_conditional_contract():
    net = nn.Conditional(nn.Sequential(nn.Linear(7, 1)), 4, 2).to("numpy", "float32")
    assert [n for n, _ in net.named_parameters()] == ["0.W", "1.0.W", "1.0.b"]
    x = np.zeros((3, 5), np.float32)
    with pytest.raises(ValueError, match="is conditional: call forward"):
        net.forward(x)
    with pytest.raises(ValueError, match=r"shape \(3,\) to match the batch"):
        net.forward(x, np.array([0, 1]))
    with pytest.raises(RuntimeError, match="without a forward"):
        net.backward(np.zeros((3, 1), np.float32))
    y = net.forward(x, np.array([0, 1, 3]))
    assert y.dtype == np.float32 and y.shape == (3, 1)
    with pytest.raises(ValueError, match="both G and D conditional"):
        from scratchgan import optim
        from scratchgan.gan.objectives import BCEObjective
        from scratchgan.gan.step import GANStep, NoiseSource
        D = nn.Sequential(nn.Linear(5, 1)).to("numpy")
        GANStep(net, D, optim.Adam(net.parameters()), optim.Adam(D.parameters()), BCEObjective(), 5,
                NoiseSource(np, 3, 5, 0, "float32"))


@pytest.mark.parametrize("embedding_dim", [0, 4], ids=["one-hot", "embedding"])
def test_conditional_generator_step_directional_through_d(embedding_dim):
    """L_G = bce(D(G(z, y), y), 1) over G's store (its embedding included) and over D's."""
    from scratchgan.gan import models
    G = models.mlp_generator(6, (8,), out_dim=10, batchnorm=False, seed=0, dtype="float64",
                             num_classes=3, embedding_dim=embedding_dim).to("numpy", "float64")
    D = models.mlp_discriminator(10, (8,), seed=1, dtype="float64", num_classes=3,
                                 embedding_dim=embedding_dim).to("numpy", "float64")
    rng = np.random.default_rng(4)
    z, labels = rng.standard_normal((5, 6)), np.array([2, 0, 1, 2, 2])

    def loss_and_backward():
        G.zero_grad()
        D.zero_grad()
        loss, dout = losses.bce_with_logits(D.forward(G.forward(z, labels), labels), 1.0)
        G.backward(D.backward(dout))
        return float(loss)

    for name, store in (("G", G.flat_store()), ("D", D.flat_store())):
        _, _, err = directional_check(loss_and_backward, store, seed=1)
        record_error(TABLE, f"conditional G step ({embedding_dim})", f"over {name}", "train", err)
        assert err < TOL, f"{name}: {err:.2e}"


# ---------------------------------------------------------------------------------- end to end
def fashion_args():
    return ["--dataset", "fashion-mnist", "--data-dir", str(dataset_dir("fashion-mnist")), "--split", "test"]


TINY = ["--g-hidden", "32,64", "--d-hidden", "64,32", "--latent-dim", "16", "--limit", "256", "--batch-size", "32",
        "--no-progress", "--sample-every", "0", "--log-every", "4"]


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("conditional") / "run"
    from scratchgan.run import viz
    plot, viz.plot_losses = viz.plot_losses, lambda *a, **k: None  # matplotlib is slow and not tested here
    try:
        assert train_command.train_main([*fashion_args(), *TINY, "--epochs", "1", "--conditional", "--embedding-dim", "8",
                               "--out", str(out)]) == 0
    finally:
        viz.plot_losses = plot
    return out


def test_conditional_training_writes_a_grid_with_one_row_per_class(conditional_run):
    arrays, meta = load_checkpoint(conditional_run / "checkpoint.npz")
    assert meta["config"]["conditional"] and meta["config"]["num_classes"] == 10
    assert arrays["G/0.W"].shape == (10, 8) and arrays["D/0.W"].shape == (10, 8)  # the two embeddings
    assert arrays["G/1.0.W"].shape == (16 + 8, 32) and arrays["D/1.0.W"].shape == (784 + 8, 64)
    assert arrays["fixed_noise"].shape == (100, 16)
    with Image.open(conditional_run / "samples" / "epoch_001.png") as im:
        # 10 x 10 tiles of 28 px with 2 px padding, scaled 2x
        assert im.size == (2 * (2 + 10 * 30), 2 * (2 + 10 * 30))


def test_sample_label_k_writes_that_class(conditional_run, tmp_path):
    out = tmp_path / "class3"
    assert sample_cli.sample_main(["--checkpoint", str(conditional_run / "checkpoint.npz"), "--label", "3", "--n", "16",
                            "--out", str(out)]) == 0
    images = np.load(out.with_suffix(".npy"))
    assert images.shape == (16, 28, 28) and images.dtype == np.float32
    assert np.all(np.abs(images) <= 1)
    with Image.open(out.with_suffix(".png")) as im:
        assert im.size == (2 * (2 + 4 * 30),) * 2
    # the same noise with another label gives other images: the label is used
    assert sample_cli.sample_main(["--checkpoint", str(conditional_run / "checkpoint.npz"), "--label", "7", "--n", "16",
                            "--out", str(tmp_path / "class7")]) == 0
    assert not np.array_equal(np.load(tmp_path / "class7.npy"), images)


def test_sample_without_label_gives_one_row_per_class(conditional_run, tmp_path):
    out = tmp_path / "all"
    assert sample_cli.sample_main(["--checkpoint", str(conditional_run / "checkpoint.npz"), "--n", "25",
                            "--out", str(out)]) == 0
    assert np.load(out.with_suffix(".npy")).shape == (30, 28, 28)  # rounded up to 3 per class
    with Image.open(out.with_suffix(".png")) as im:
        assert im.size == (2 * (2 + 3 * 30), 2 * (2 + 10 * 30))


def test_sample_label_errors_are_one_line(conditional_run, tmp_path, capsys):
    assert sample_cli.sample_main(["--checkpoint", str(conditional_run / "checkpoint.npz"), "--label", "10",
                            "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "classes 0 to 9" in err and len(err.strip().splitlines()) == 1


def test_conditional_wgan_gp_steps_without_nan(tmp_path):
    """The gradient penalty on a conditional critic (the code joins the input; the penalty is on dD/dx)."""
    from scratchgan.run import viz
    plot, viz.plot_losses = viz.plot_losses, lambda *a, **k: None
    try:
        assert train_command.train_main([*fashion_args(), *TINY[:-2], "--log-every", "1", "--limit", "320", "--epochs", "1",
                               "--conditional", "--loss", "wgan-gp", "--out", str(tmp_path / "run")]) == 0
    finally:
        viz.plot_losses = plot
    rows = viz.read_metrics_csv(tmp_path / "run" / "metrics.csv")
    assert len(rows) == 2 and all(np.isfinite(r["gp"]) and r["gp"] >= 0 for r in rows)


def test_label_on_an_unconditional_checkpoint_is_a_one_line_error(tmp_path, capsys):
    from scratchgan.run import viz
    plot, viz.plot_losses = viz.plot_losses, lambda *a, **k: None
    try:
        assert train_command.train_main([*fashion_args(), *TINY, "--limit", "64", "--epochs", "1",
                               "--out", str(tmp_path / "run")]) == 0
    finally:
        viz.plot_losses = plot
    capsys.readouterr()
    assert sample_cli.sample_main(["--checkpoint", str(tmp_path / "run" / "checkpoint.npz"), "--label", "1",
                            "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--label needs a conditional checkpoint" in err and len(err.strip().splitlines()) == 1
