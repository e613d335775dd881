"""Adam and SGD: the textbook formulas, the flat store they update, state, dtypes, bad arguments."""
import copy

import numpy as np
import pytest
from layer_cases import make_input

from scratchgan import losses, nn, optim
from scratchgan.params import FlatStore, Parameter


def _mlp(dtype="float64", seed=0):
    return nn.Sequential(nn.Linear(3, 5, seed=seed + 1, dtype=dtype), nn.LeakyReLU(0.2),
                         nn.Linear(5, 2, seed=seed + 2, dtype=dtype)).to(dtype=dtype)


def _random_grads(model, rng):
    for p in model.parameters():
        p.grad[...] = rng.standard_normal(p.shape)


def textbook_adam(theta, grads, lr, beta1, beta2, eps, weight_decay=0.0):
    """Kingma & Ba, Algorithm 1 (with L2 decay added to g), written out step by step."""
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    out = []
    for t, g in enumerate(grads, start=1):
        g = g + weight_decay * theta
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1 ** t)
        v_hat = v / (1 - beta2 ** t)
        theta = theta - lr * m_hat / (np.sqrt(v_hat) + eps)
        out.append(theta)
    return out


@pytest.mark.parametrize("lr, betas, eps, weight_decay", [
    (2e-4, (0.5, 0.999), 1e-8, 0.0), (1e-2, (0.9, 0.999), 1e-8, 0.0),
    (5e-2, (0.0, 0.9), 1e-6, 0.0), (1e-2, (0.5, 0.999), 1e-8, 0.1)])
def test_adam_matches_the_textbook_formula(lr, betas, eps, weight_decay):
    model = _mlp()
    store = model.flat_store()
    theta0 = store.data.copy()
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(store.size) * rng.uniform(0.01, 10.0) for _ in range(6)]
    expected = textbook_adam(theta0, grads, lr, betas[0], betas[1], eps, weight_decay)
    opt = optim.Adam(model.parameters(), lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    for step, (g, want) in enumerate(zip(grads, expected), start=1):
        opt.zero_grad()
        store.grad[...] = g
        opt.step()
        assert opt.t == step
        # float64: the atol only matters for an entry within ~1e-3 of 0 (where rtol * |entry| < atol)
        np.testing.assert_allclose(store.data, want, rtol=1e-12, atol=1e-15, err_msg=f"step {step}")
    # bias correction matters: the first step moves every weight by about lr (|m_hat / sqrt(v_hat)| = 1)
    assert not np.allclose(expected[0], theta0)


def test_adam_moments_are_the_textbook_m_and_v():
    """Adam's m and v are Kingma & Ba's moments (state_dict saves them as they are)."""
    beta1, beta2 = 0.5, 0.999
    model = _mlp()
    store = model.flat_store()
    opt = optim.Adam(model.parameters(), lr=1e-3, betas=(beta1, beta2))
    rng = np.random.default_rng(5)
    m, v = np.zeros(store.size), np.zeros(store.size)
    for _ in range(5):
        g = rng.standard_normal(store.size)
        m, v = beta1 * m + (1 - beta1) * g, beta2 * v + (1 - beta2) * g * g
        opt.zero_grad()
        store.grad[...] = g
        opt.step()
    np.testing.assert_allclose(opt.m, m, rtol=1e-13)
    np.testing.assert_allclose(opt.v, v, rtol=1e-13)


def test_adam_loads_textbook_moments():
    """A state with the textbook m and v (scratchgan 0.1 checkpoints, torch's exp_avg/exp_avg_sq)
    continues the same trajectory as the optimizer it came from."""
    rng = np.random.default_rng(6)
    grads = [rng.standard_normal(_mlp().flat_store().size) for _ in range(6)]
    a, b, c = _mlp(), _mlp(), _mlp()
    opt_a, opt_b, opt_c = (optim.Adam(net.parameters(), lr=1e-2) for net in (a, b, c))
    for g in grads[:3]:
        opt_a.zero_grad()
        opt_a.store.grad[...] = g
        opt_a.step()
    b.load_state_dict(a.state_dict())
    c.load_state_dict(a.state_dict())  # the same weights, but fresh moments: must end elsewhere
    opt_b.load_state_dict({"m": opt_a.m, "v": opt_a.v, "t": opt_a.t})
    for g in grads[3:]:
        for opt in (opt_a, opt_b, opt_c):
            opt.zero_grad()
            opt.store.grad[...] = g
            opt.step()
    np.testing.assert_allclose(opt_b.store.data, opt_a.store.data, rtol=1e-14, atol=1e-15)  # float64
    assert not np.allclose(opt_c.store.data, opt_a.store.data, rtol=1e-6)


def test_adam_first_step_is_lr_times_sign_of_the_gradient():
    """With bias correction, step 1 is theta - lr * g / (|g| + eps): a check that cannot hide in rounding."""
    model = _mlp()
    store = model.flat_store()
    theta0 = store.data.copy()
    g = np.random.default_rng(1).standard_normal(store.size)
    store.grad[...] = g
    optim.Adam(model.parameters(), lr=0.01, betas=(0.5, 0.999), eps=0.0).step()
    np.testing.assert_allclose(store.data, theta0 - 0.01 * np.sign(g), rtol=1e-13)


@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_sgd_matches_the_formula(momentum, nesterov):
    model = _mlp()
    store = model.flat_store()
    theta, buf = store.data.copy(), np.zeros(store.size)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=momentum, nesterov=nesterov)
    rng = np.random.default_rng(2)
    for _ in range(4):
        g = rng.standard_normal(store.size)
        store.grad[...] = g
        opt.step()
        buf = momentum * buf + g
        theta = theta - 0.1 * ((g + momentum * buf) if nesterov else buf)
        np.testing.assert_allclose(store.data, theta, rtol=1e-13)


def test_optimizer_updates_the_models_flat_store_in_place():
    model = _mlp()
    params = model.parameters()
    opt = optim.Adam(params, lr=1e-2)
    store = opt.store
    assert store is model.flat_store()
    for p in params:  # every parameter and gradient is a view of the one buffer
        assert p.data.base is store.data and np.shares_memory(p.data, store.data)
        assert p.grad.base is store.grad and np.shares_memory(p.grad, store.grad)
    assert store.data.size == sum(p.size for p in params)
    x = make_input((4, 3))
    loss, dy = losses.mse(model.forward(x), 0.3)
    model.backward(dy)
    assert np.abs(store.grad).sum() > 0  # backward wrote into the flat buffer
    before = [p.data.copy() for p in params]
    data_buffer = store.data
    opt.step()
    assert store.data is data_buffer  # updated in place, not rebound
    for p, b in zip(params, before):
        assert p.data.base is store.data and not np.array_equal(p.data, b)
    opt.zero_grad()
    assert not store.grad.any() and all(not p.grad.any() for p in params)


def test_optimizer_packs_unpacked_parameters_into_a_store():
    params = [Parameter(np.arange(3.0)), Parameter(np.ones((2, 2)))]
    opt = optim.SGD(params, lr=0.5)
    assert all(np.shares_memory(p.data, opt.store.data) for p in params)
    params[0].grad[...] = 2.0
    opt.step()
    np.testing.assert_array_equal(params[0].data, np.arange(3.0) - 1.0)
    np.testing.assert_array_equal(params[1].data, np.ones((2, 2)))


def test_stale_store_after_model_to_raises_a_clear_error():
    model = _mlp("float32")
    opt = optim.Adam(model.parameters())
    model.to(dtype="float64")  # re-packs the parameters into a new store
    assert opt.store.stale
    with pytest.raises(RuntimeError, match=r"re-packed.*create the optimizer after moving the model"):
        opt.step()
    sgd_model = _mlp("float32")
    sgd = optim.SGD(sgd_model.parameters(), lr=0.1)
    sgd_model.to(backend="numpy")
    with pytest.raises(RuntimeError, match="re-packed"):
        sgd.step()
    optim.Adam(model.parameters()).step()  # a new optimizer on the moved model is fine


@pytest.mark.parametrize("make_opt", [
    lambda p: optim.Adam(p, lr=1e-2, weight_decay=0.01),
    lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True)], ids=["adam", "sgd"])
def test_state_dict_round_trip_continues_identically(make_opt):
    rng = np.random.default_rng(3)
    grads = [rng.standard_normal(_mlp().flat_store().size) for _ in range(6)]
    a = _mlp()
    opt_a = make_opt(a.parameters())
    for g in grads[:3]:
        opt_a.zero_grad()
        opt_a.store.grad[...] = g
        opt_a.step()
    saved_model, saved_opt = a.state_dict(), copy.deepcopy(opt_a.state_dict())

    b = _mlp(seed=10)  # other weights, fresh optimizer: loading must restore everything
    opt_b = make_opt(b.parameters())
    b.load_state_dict(saved_model)
    opt_b.load_state_dict(saved_opt)
    assert opt_b.t == 3
    for g in grads[3:]:
        for opt in (opt_a, opt_b):
            opt.zero_grad()
            opt.store.grad[...] = g
            opt.step()
    np.testing.assert_array_equal(opt_b.store.data, opt_a.store.data)
    for name, value in opt_a.state_dict().items():
        np.testing.assert_array_equal(opt_b.state_dict()[name], value)


def test_load_state_dict_of_another_model_raises():
    opt = optim.Adam(_mlp().parameters())
    small = optim.Adam(nn.Linear(2, 2, seed=0, dtype="float64").parameters())
    with pytest.raises(ValueError, match="belongs to another model"):
        opt.load_state_dict(small.state_dict())


@pytest.mark.parametrize("make_opt", [
    lambda p: optim.Adam(p, lr=1e-3, betas=(0.5, 0.999), weight_decay=1e-4),
    lambda p: optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-4)], ids=["adam", "sgd"])
def test_float32_stays_float32(make_opt):
    model = _mlp("float32")
    opt = make_opt(model.parameters())
    x = make_input((4, 3), "float32")
    for _ in range(3):
        opt.zero_grad()
        loss, dy = losses.bce_with_logits(model.forward(x), 0.9)
        model.backward(dy)
        opt.step()
    arrays = {"store.data": opt.store.data, "store.grad": opt.store.grad}
    arrays.update({k: v for k, v in vars(opt).items() if isinstance(v, np.ndarray)})  # m, v, buf, scratch
    arrays.update({f"{n}.data": p.data for n, p in model.named_parameters()})
    arrays.update({f"{n}.grad": p.grad for n, p in model.named_parameters()})
    assert len(arrays) > 6
    for name, a in arrays.items():
        assert a.dtype == np.float32, f"{name} is {a.dtype}"
    assert model.forward(x).dtype == np.float32


@pytest.mark.parametrize("make", [
    lambda p: optim.Adam(p, lr=0.0), lambda p: optim.Adam(p, lr=-1e-3),
    lambda p: optim.Adam(p, betas=(1.0, 0.999)), lambda p: optim.Adam(p, betas=(0.5, 1.0)),
    lambda p: optim.Adam(p, betas=(-0.1, 0.999)), lambda p: optim.Adam(p, betas=(0.5, 1.5)),
    lambda p: optim.SGD(p, lr=0.0), lambda p: optim.SGD(p, lr=-0.1),
    lambda p: optim.SGD(p, lr=0.1, momentum=-0.5), lambda p: optim.SGD(p, lr=0.1, nesterov=True),
    lambda p: optim.Adam([]),
], ids=["adam-lr0", "adam-lr<0", "beta1=1", "beta2=1", "beta1<0", "beta2>1",
        "sgd-lr0", "sgd-lr<0", "momentum<0", "nesterov-no-momentum", "empty"])
def test_bad_hyperparameters_raise_value_error(make):
    with pytest.raises(ValueError):
        make(_mlp().parameters())


def test_flat_store_rejects_duplicates_and_empties():
    p = Parameter(np.zeros(3))
    with pytest.raises(ValueError, match="twice"):
        FlatStore([p, p])
    with pytest.raises(ValueError):
        FlatStore([])


@pytest.mark.parametrize("make_opt", [lambda p: optim.Adam(p, lr=1e-3, weight_decay=0.01),
                                      lambda p: optim.SGD(p, lr=0.1, momentum=0.9),
                                      lambda p: optim.RMSprop(p, lr=1e-3, momentum=0.9, centered=True)])
def test_update_on_threads_equals_the_update_on_one_thread(make_opt, monkeypatch):
    # the fast path gives the parts of the flat buffer to different threads: elementwise, so bit for bit the same
    from scratchgan.fast import cpu
    runs = []
    for threads in (1, 3):
        monkeypatch.setattr(cpu, "cpu_threads", lambda: threads)
        model = nn.Linear(300, 1000, seed=0).to("numpy", "float32")  # big enough for threaded parts
        opt = make_opt(model.parameters())
        assert opt.store.data.size * 4 >= cpu.PARALLEL_MIN_ELEMENTS  # 4+ flat arrays per update
        initial = opt.store.data.copy()
        for step in range(3):
            g = np.random.default_rng(step).standard_normal(opt.store.grad.shape).astype(np.float32)
            opt.store.grad[...] = g
            opt.step()
        runs.append(opt.store.data.copy())
        assert not np.array_equal(runs[-1], initial)
    np.testing.assert_array_equal(runs[0], runs[1])


def test_a_training_checkpoint_too_old_to_load_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    """A checkpoint of a scratchgan before 0.1.0 (Adam's running sums opt_G/m_sum, opt_G/v_sum instead of the
    moments) is not read: resuming it says so in one line, exit 2, and changes nothing."""
    from scratchgan.checkpoint import load_checkpoint, save_checkpoint
    from scratchgan.cli import train as train_command
    monkeypatch.setenv("SCRATCHGAN_DATA", str(tmp_path / "cache"))
    tiny = ["--dataset", "mnist-bundled", "--limit", "64", "--batch-size", "32", "--g-hidden", "16",
            "--d-hidden", "16", "--latent-dim", "8", "--no-progress", "--sample-every", "0"]
    assert train_command.train_main([*tiny, "--epochs", "1", "--out", str(tmp_path / "old")]) == 0
    path = tmp_path / "old" / "checkpoint.npz"
    arrays, meta = load_checkpoint(path)
    beta1, beta2 = 0.5, 0.999  # the MLP GAN's Adam
    for name in ("opt_G", "opt_D"):
        arrays[f"{name}/m_sum"] = arrays.pop(f"{name}/m") / np.float32(1 - beta1)
        arrays[f"{name}/v_sum"] = arrays.pop(f"{name}/v") / np.float32(1 - beta2)
    save_checkpoint(path, arrays, meta)
    before = path.read_bytes()
    capsys.readouterr()
    assert train_command.train_main([*tiny, "--epochs", "2", "--out", str(tmp_path / "old"), "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is too old to load" in err[0] and "m_sum" in err[0], err
    assert path.read_bytes() == before
