import pytest
import torch

from metagan_lib import losses
from metagan_lib import train as train_module
from metagan_lib.augment import cutout, diff_augment, translate
from metagan_lib.runtime import WORKERS_ENV_VAR, limited_threads
from metagan_lib.tasks import to_signed
from metagan_lib.train import (
    LOSSES,
    GANConfig,
    load_run,
    new_run,
    relative_cost,
    save_run,
    train_gan,
    train_or_load,
    train_or_load_many,
    update_ema,
)

TINY = GANConfig(architecture="conv", width=8, z_dim=16, steps=30, batch_size=32)


@pytest.fixture(scope="module")
def images(glyphs):
    return glyphs.subset(glyphs.seen_classes[:40])[0]


def test_ema_arithmetic():
    ema, model = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in ema.parameters()]
    update_ema(ema, model, decay=0.75)
    for old, new, target in zip(before, ema.parameters(), model.parameters()):
        assert torch.allclose(new, 0.75 * old + 0.25 * target)


def test_augmentation_keeps_shape_range_and_gradient(images):
    x = to_signed(images[:16]).requires_grad_(True)
    generator = torch.Generator().manual_seed(0)
    for op in (translate, cutout, diff_augment):
        out = op(x, generator)
        assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1
    diff_augment(x, generator).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # translation moves ink and keeps it when the shift is zero
    same = translate(x.detach(), generator, max_fraction=0.0)
    assert torch.equal(same, x.detach())
    assert (cutout(x.detach(), generator) == -1).sum() > (x.detach() == -1).sum()


def test_translation_and_cutout_match_their_definitions_pixel_by_pixel(images):
    """translate: image ``b`` shifted by its drawn ``(dx, dy)`` whole pixels (``out[y, x] = in[y - dy, x - dx]``), the
    uncovered border at the background -1; cutout: one square of side ``round(0.25 x 28) = 7`` at its drawn corner set
    to -1, the rest unchanged. The draws are repeated from the same generator state."""
    x = to_signed(images[:6])
    g = torch.Generator().manual_seed(5)
    shifts = torch.randint(-4, 5, (6, 2), generator=torch.Generator().manual_seed(5))  # limit round(0.125 x 28) = 4
    shifted = translate(x, g)
    for b, (dx, dy) in enumerate(shifts.tolist()):
        expected = torch.full_like(x[b], -1.0)
        expected[:, max(dy, 0) : 28 + min(dy, 0), max(dx, 0) : 28 + min(dx, 0)] = x[
            b, :, max(-dy, 0) : 28 + min(-dy, 0), max(-dx, 0) : 28 + min(-dx, 0)
        ]
        assert torch.equal(shifted[b], expected), (b, dx, dy)
    assert shifts.abs().max() > 0  # the draw moved something
    g, again = torch.Generator().manual_seed(6), torch.Generator().manual_seed(6)
    corner_y, corner_x = (torch.randint(0, 28 - 7 + 1, (6,), generator=again) for _ in range(2))
    cut = cutout(x, g)
    for b in range(6):
        expected = x[b].clone()
        expected[:, corner_y[b] : corner_y[b] + 7, corner_x[b] : corner_x[b] + 7] = -1.0
        assert torch.equal(cut[b], expected), b


def test_training_is_reproducible_for_a_seed(images):
    a = train_gan(images, TINY, seed=3, progress=False)
    b = train_gan(images, TINY, seed=3, progress=False)
    c = train_gan(images, TINY, seed=4, progress=False)
    for pa, pb in zip(a.generator.parameters(), b.generator.parameters()):
        assert torch.equal(pa, pb)
    assert a.history["d_loss"] == b.history["d_loss"]
    assert a.history["d_loss"] != c.history["d_loss"]


def test_longer_run_repeats_the_shorter_runs_steps(images):
    """Notebook 02's long run relies on this: same config and seed, more steps -> the same first steps."""
    short = train_gan(images, TINY.replace(steps=10), seed=3, progress=False)
    long = train_gan(images, TINY.replace(steps=25, sample_every=5), seed=3, progress=False)
    for key in ("d_loss", "g_loss", "d_real", "d_fake"):
        assert long.history[key][:10] == short.history[key]
    assert len(long.history["d_loss"]) == 25 and long.step == 25
    assert [step for step, _ in long.snapshots] == [5, 10, 15, 20, 25]
    assert torch.equal(long.snapshots[1][1], short.snapshots[-1][1])  # same generator after 10 steps, same fixed noise


def discriminator_error(run, real):
    """Share of real images called fake plus noise images called real."""
    noise = torch.rand(len(real), 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        return float(((run.discriminator(real) < 0).float().mean() + (run.discriminator(noise) > 0).float().mean()) / 2)


def test_short_training_lowers_discriminator_error_on_real_vs_noise(images):
    real = to_signed(images[:200])
    untrained = new_run(TINY, seed=0)
    trained = train_gan(images, TINY.replace(steps=60), seed=0, progress=False)
    assert discriminator_error(untrained, real) >= 0.3
    assert discriminator_error(trained, real) < 0.1


@pytest.mark.parametrize("loss", ["saturating", "wgan-gp", "hinge"])
def test_every_loss_and_stabiliser_trains_without_error(images, loss):
    config = TINY.replace(loss=loss, steps=3, r1_gamma=1.0, ema_decay=0.9, augment=True, grad_clip=1.0, sample_every=1)
    run = train_gan(images, config, progress=False)
    assert run.step == 3 and len(run.snapshots) == 3
    assert all(torch.isfinite(torch.tensor(run.history["d_loss"])))
    # the average lags the trained weights, and the snapshots are drawn from it
    assert not torch.equal(run.ema_generator.project.weight, run.generator.project.weight)
    assert run.sampling_generator is run.ema_generator


@pytest.mark.parametrize("loss", ["nonsaturating", "wgan-gp"])
def test_the_discriminator_objective_is_its_loss_plus_the_configured_penalties(images, loss):
    run = new_run(TINY.replace(loss=loss, r1_gamma=2.0, gp_weight=7.0), seed=0)
    disc = run.discriminator
    real = to_signed(images[:8])
    fake = run.generator(torch.randn(8, TINY.z_dim, generator=torch.Generator().manual_seed(1))).detach()
    objective, stats = train_module._discriminator_objective(run, real, fake, torch.Generator().manual_seed(3))
    expected = LOSSES[loss][0](disc(real), disc(fake)) + 0.5 * 2.0 * losses.r1_penalty(disc, real)
    if loss == "wgan-gp":  # the interpolation weights come from the generator passed in
        mix = torch.rand(8, generator=torch.Generator().manual_seed(3))
        expected = expected + 7.0 * losses.gradient_penalty(disc, real, fake, mix)
    torch.testing.assert_close(objective, expected)
    assert losses.r1_penalty(disc, real) > 0  # each penalty is in play here, so leaving one out changes the objective
    assert loss != "wgan-gp" or losses.gradient_penalty(disc, real, fake, mix) > 0
    assert stats["d_real"] == pytest.approx(disc(real).mean().item())


def test_gradient_clipping_bounds_the_update_norm(images):
    run = new_run(TINY, seed=0)
    real = to_signed(images[:8])
    fake = run.generator(torch.randn(8, TINY.z_dim, generator=torch.Generator().manual_seed(1))).detach()
    norm = lambda: torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in run.discriminator.parameters()]))
    optimizer = torch.optim.SGD(run.discriminator.parameters(), lr=0.0)  # lr 0: the gradients are what is compared
    objective = lambda: train_module._discriminator_objective(run, real, fake, torch.Generator())[0]
    train_module._update(optimizer, objective(), run.discriminator, None)
    unclipped = norm().item()
    train_module._update(optimizer, objective(), run.discriminator, 0.01 * unclipped)
    assert unclipped > 0 and norm().item() == pytest.approx(0.01 * unclipped, rel=1e-4)


def test_mlp_architecture_trains(images):
    config = TINY.replace(architecture="mlp", steps=2)
    untrained, run = new_run(config, seed=0), train_gan(images, config, progress=False)
    assert run.sample(4).shape == (4, 1, 28, 28) and not torch.equal(run.sample(4), untrained.sample(4))
    assert all(torch.isfinite(torch.tensor(run.history[k])).all() for k in ("d_loss", "g_loss"))
    moved = [not torch.equal(a, b) for a, b in zip(run.generator.parameters(), untrained.generator.parameters())]
    assert all(moved)  # every generator weight took its two steps


def test_checkpoint_round_trip_and_cache(images, tmp_path, monkeypatch):
    config = TINY.replace(steps=2, ema_decay=0.9)
    run = train_gan(images, config, progress=False)
    path = save_run(run, tmp_path / "run.pt")
    restored = load_run(path)
    assert restored.config == config and restored.step == 2 and restored.history == run.history
    assert torch.equal(restored.sample(5, seed=2), run.sample(5, seed=2))
    cache = tmp_path / "cached.pt"
    trained = train_or_load(cache, images, config, progress=False)  # trains and saves under its key
    assert torch.equal(trained.sample(5, seed=2), run.sample(5, seed=2))
    with monkeypatch.context() as patched:  # a cache hit must load, never train
        patched.setattr(train_module, "train_gan", lambda *a, **k: pytest.fail("the cached run was trained again"))
        cached = train_or_load(cache, images, config, progress=False)
    assert cached.history == run.history and torch.equal(cached.sample(5, seed=2), run.sample(5, seed=2))
    retrained = train_or_load(cache, images, config.replace(steps=3), progress=False)
    assert retrained.step == 3  # a different config is trained again, not loaded


def test_bad_config_and_images_are_clear_errors(images, monkeypatch):
    with pytest.raises(ValueError, match="Unknown loss 'lsgan'"):
        GANConfig(loss="lsgan")
    with pytest.raises(ValueError, match="ema_decay must lie in"):
        GANConfig(ema_decay=1.5)
    with pytest.raises(ValueError, match=r"\[batch, 1, 28, 28\]"):
        train_gan(torch.zeros(10, 3, 28, 28, dtype=torch.uint8), TINY)
    cpu_run = train_gan(images, TINY, progress=False)
    assert train_gan(images, TINY, run=cpu_run, device="CPU", progress=False) is cpu_run  # where it is: fine
    monkeypatch.setattr(train_module, "choose_device", lambda spec: torch.device("cuda", 0))  # as on a GPU machine
    with pytest.raises(ValueError, match=r"the run's networks are on cpu; drop device="):
        train_gan(images, TINY, run=cpu_run, device="cuda", progress=False)


@pytest.mark.slow  # spawns processes
def test_runs_trained_side_by_side_equal_runs_trained_in_turn(images, tmp_path, monkeypatch):
    jobs = {
        "plain": (tmp_path / "a.pt", TINY),
        "R1 + EMA + augment": (tmp_path / "b.pt", TINY.replace(r1_gamma=1.0, ema_decay=0.9, augment=True)),
        "WGAN-GP": (tmp_path / "c.pt", TINY.replace(loss="wgan-gp")),
    }
    monkeypatch.setenv(WORKERS_ENV_VAR, "2")
    runs = train_or_load_many(jobs, images, seed=3)
    for name, (path, config) in jobs.items():
        assert path.exists() and runs[name].step == config.steps
        with limited_threads(max(1, torch.get_num_threads() // 2)):  # a worker's threads, so the same sums in order
            reference = train_gan(images, config, seed=3, progress=False)
        for a, b in zip(reference.generator.parameters(), runs[name].generator.parameters()):
            assert torch.equal(a, b)


def test_relative_cost_orders_runs_by_their_passes():
    plain = TINY.replace(steps=100)
    assert relative_cost(plain) == 100 * 2
    assert relative_cost(plain.replace(r1_gamma=1.0)) == 100 * 3
    assert relative_cost(plain.replace(loss="wgan-gp", d_steps=2)) == 100 * 5


def test_tensorboard_log_holds_the_losses_and_samples_the_run_recorded(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    images = torch.randint(0, 256, (32, 1, 28, 28), dtype=torch.uint8)
    config = GANConfig(z_dim=8, width=8, steps=3, batch_size=8, sample_every=2)
    run = train_gan(images, config, seed=0, progress=False, log_dir=tmp_path / "tb")
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0, "images": 0}).Reload()
    for key in ("d_loss", "g_loss", "d_real", "d_fake"):
        logged = events.Scalars(key)
        assert [e.step for e in logged] == [1, 2, 3]
        assert [e.value for e in logged] == pytest.approx(run.history[key], rel=1e-6)
    assert [e.step for e in events.Images("samples")] == [2]


@pytest.mark.parametrize(
    "loss,generator_loss",
    [
        ("nonsaturating", lambda logits: torch.nn.functional.softplus(-logits).mean()),  # -log D(G(z))
        ("saturating", lambda logits: -torch.nn.functional.softplus(logits).mean()),  # log(1 - D(G(z)))
        ("wgan-gp", lambda scores: -scores.mean()),
        ("hinge", lambda logits: -logits.mean()),
    ],
)
def test_a_generator_step_descends_its_named_loss_then_moves_the_average(images, loss, generator_loss):
    """With plain SGD at rate 1 a step changes the generator by minus the gradient of the loss its name stands for
    (written here from the formulas), returns that loss, and then moves the EMA generator towards the new weights."""
    run = new_run(TINY.replace(loss=loss, ema_decay=0.75), seed=0)
    run.generator, run.discriminator, run.ema_generator = (
        m.double() for m in (run.generator, run.discriminator, run.ema_generator)
    )
    z = torch.randn(6, TINY.z_dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    expected_loss = generator_loss(run.discriminator(run.generator(z)))
    gradients = torch.autograd.grad(expected_loss, list(run.generator.parameters()))
    before = [p.detach().clone() for p in run.generator.parameters()]
    ema_before = [p.detach().clone() for p in run.ema_generator.parameters()]
    returned = train_module.generator_step(run, torch.optim.SGD(run.generator.parameters(), lr=1.0), z, lambda x: x)
    assert returned == pytest.approx(expected_loss.item(), rel=1e-12)
    for old, new, g in zip(before, run.generator.parameters(), gradients):
        torch.testing.assert_close(new.detach(), old - g, rtol=1e-10, atol=1e-12)
    for old, new, target in zip(ema_before, run.ema_generator.parameters(), run.generator.parameters()):
        torch.testing.assert_close(new.detach(), 0.75 * old + 0.25 * target.detach(), rtol=1e-10, atol=1e-12)
