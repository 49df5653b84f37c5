import os
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.func import functional_call

from metagan_lib import adaptation as A
from metagan_lib import meta as M
from metagan_lib.artifacts import DamagedArtifactWarning
from metagan_lib.losses import discriminator_loss
from metagan_lib.runtime import limited_threads
from metagan_lib.seeds import class_noise, derive_seed
from metagan_lib.tasks import TaskSampler


class TinyGenerator(nn.Module):
    z_dim = 3

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 4), nn.Tanh())

    def forward(self, z):
        return self.net(z).view(-1, 1, 2, 2)


class TinyDiscriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 1))

    def forward(self, x):
        return self.net(x).squeeze(-1)


def tiny_problem(method="maml", first_order=False, tasks=3, steps=2, seed=0):
    torch.manual_seed(seed)
    config = M.MetaConfig(
        method=method,
        first_order=first_order,
        z_dim=3,
        inner_steps=steps,
        inner_lr=0.3,
        tasks=tasks,
        shots=4,
        queries=5,
        fake_batch=6,
    )
    meta = M.new_meta_gan(config, generator=TinyGenerator().double(), discriminator=TinyDiscriminator().double())
    g = torch.Generator().manual_seed(seed + 1)
    support = torch.rand(tasks, 4, 1, 2, 2, generator=g, dtype=torch.float64) * 2 - 1
    query = torch.rand(tasks, 5, 1, 2, 2, generator=g, dtype=torch.float64) * 2 - 1
    inner = torch.randn(tasks, steps, 2, 6, 3, generator=g, dtype=torch.float64)
    outer = torch.randn(tasks, 6, 3, generator=g, dtype=torch.float64)
    return meta, support, query, inner, outer


def flat_grads(meta, losses):
    return torch.cat([g.flatten() for g in M.meta_gradients(meta, losses)])


@pytest.mark.parametrize("method,first_order", [("maml", False), ("maml", True), ("meta-sgd", False)])
def test_vmap_path_equals_loop_path_on_the_real_networks(strokes, method, first_order):
    config = M.MetaConfig(
        method=method, first_order=first_order, tasks=3, shots=2, queries=3, fake_batch=4, inner_steps=2
    )
    meta = M.new_meta_gan(config, seed=0)
    episode = TaskSampler(strokes, strokes.seen_classes, seed=0).sample(3, 1, 2, 3)
    inner, outer = M.draw_noise(torch.Generator().manual_seed(0), 3, 2, 4, config.z_dim, torch.device("cpu"))
    args = (episode.support[:, 0], episode.query[:, 0], inner, outer)
    vectorised = M.batched_outer_losses(meta, *args, vectorised=True)
    looped = M.batched_outer_losses(meta, *args, vectorised=False)
    # float32: the two paths sum in different orders; 1e-5 relative is the tolerance
    assert torch.allclose(vectorised, looped, rtol=1e-5, atol=1e-6)
    gv, gl = flat_grads(meta, vectorised), flat_grads(meta, looped)
    assert torch.allclose(gv, gl, rtol=1e-4, atol=1e-5 * gl.abs().max().item())


def test_reptile_adaptation_vmap_equals_loop(strokes):
    meta = M.new_meta_gan(M.MetaConfig(method="reptile", inner_steps=3, fake_batch=4), seed=0)
    support = TaskSampler(strokes, strokes.seen_classes, seed=1).sample(3, 1, 2).support[:, 0]
    inner, _ = M.draw_noise(torch.Generator().manual_seed(0), 3, 3, 4, meta.config.z_dim, torch.device("cpu"))
    for a, b in zip(M.batched_adapt(meta, support, inner, True), M.batched_adapt(meta, support, inner, False)):
        for k in a:
            assert torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6), k


@pytest.mark.parametrize("method", ["maml", "meta-sgd"])  # Meta-SGD: the learned inner rates are directions too
def test_second_order_meta_gradient_matches_finite_differences(method):
    meta, support, query, inner, outer = tiny_problem(method, first_order=False)
    losses = M.batched_outer_losses(meta, support, query, inner, outer, vectorised=True)
    analytic = M.meta_gradients(meta, losses)
    tensors = meta.trainable()
    g_count = len(meta.generator_tensors())
    assert len(tensors) == len(meta.g_params) + len(meta.d_params) + (
        0 if method == "maml" else len(meta.g_lr) + len(meta.d_lr)
    )
    generator = torch.Generator().manual_seed(5)
    for player, index, which in (("G", slice(0, g_count), 1), ("D", slice(g_count, None), 0)):
        params = tensors[index]
        for _ in range(3):
            direction = [torch.randn(p.shape, generator=generator, dtype=torch.float64) for p in params]
            h = 1e-6

            def objective(sign):
                with torch.no_grad():
                    for p, v in zip(params, direction):
                        p.add_(sign * h * v)
                value = (
                    M.batched_outer_losses(meta, support, query, inner, outer, vectorised=False)[:, which].mean().item()
                )
                with torch.no_grad():
                    for p, v in zip(params, direction):
                        p.sub_(sign * h * v)
                return value

            numeric = (objective(+1) - objective(-1)) / (2 * h)
            directional = sum((g * v).sum() for g, v in zip(analytic[index], direction)).item()
            assert abs(numeric - directional) < 1e-6 * max(1.0, abs(numeric)), player


def test_first_order_meta_gradient_is_the_gradient_at_the_adapted_parameters():
    meta, support, query, inner, outer = tiny_problem("maml", first_order=True, tasks=2)
    losses = M.batched_outer_losses(meta, support, query, inner, outer, vectorised=False)
    first_order = M.meta_gradients(meta, losses)
    # explicit: adapt without any graph, then differentiate the outer losses w.r.t. the adapted parameters
    expected_g = [torch.zeros_like(p) for p in meta.g_params.values()]
    expected_d = [torch.zeros_like(p) for p in meta.d_params.values()]
    for t in range(2):
        g_ad, d_ad = M.inner_adapt(meta, meta.g_params, meta.d_params, support[t], inner[t], first_order=True)
        g_ad = {k: v.detach().requires_grad_(True) for k, v in g_ad.items()}
        d_ad = {k: v.detach().requires_grad_(True) for k, v in d_ad.items()}
        fake_logits = functional_call(meta.discriminator, d_ad, (functional_call(meta.generator, g_ad, (outer[t],)),))
        l_d = discriminator_loss(functional_call(meta.discriminator, d_ad, (query[t],)), fake_logits)
        l_g = torch.nn.functional.softplus(-fake_logits).mean()
        for acc, g in zip(expected_d, torch.autograd.grad(l_d, list(d_ad.values()), retain_graph=True)):
            acc += g / 2
        for acc, g in zip(expected_g, torch.autograd.grad(l_g, list(g_ad.values()))):
            acc += g / 2
    for got, want in zip(first_order, expected_g + expected_d):
        assert torch.allclose(got, want, atol=1e-12)
    second_order = M.meta_gradients(
        *(lambda m: (m, M.batched_outer_losses(m, support, query, inner, outer, False)))(
            tiny_problem("maml", first_order=False, tasks=2)[0]
        )
    )
    assert max((a - b).abs().max().item() for a, b in zip(first_order, second_order)) > 1e-4


def test_first_order_drops_exactly_the_hessian_term():
    """One inner step on a regression loss: d/dtheta L_q(theta') = (I - alpha H_s) grad L_q(theta')."""
    torch.manual_seed(0)
    x_s, y_s, x_q, y_q = (
        torch.randn(5, 3, dtype=torch.float64),
        torch.randn(5, dtype=torch.float64),
        torch.randn(7, 3, dtype=torch.float64),
        torch.randn(7, dtype=torch.float64),
    )
    loss = lambda p, x, y: ((torch.tanh(x @ p["w"]) * p["a"] - y) ** 2).mean()
    theta = {
        "w": torch.randn(3, dtype=torch.float64, requires_grad=True),
        "a": torch.tensor(1.3, dtype=torch.float64, requires_grad=True),
    }
    alpha = 0.1

    def outer_grad(first_order):
        adapted = M.sgd_step(theta, lambda p: loss(p, x_s, y_s), alpha, first_order)
        return torch.autograd.grad(loss(adapted, x_q, y_q), list(theta.values()))

    second, first = outer_grad(False), outer_grad(True)
    adapted = {k: v.detach() for k, v in M.sgd_step(theta, lambda p: loss(p, x_s, y_s), alpha).items()}
    adapted = {k: v.requires_grad_(True) for k, v in adapted.items()}
    g_q = torch.autograd.grad(loss(adapted, x_q, y_q), list(adapted.values()))
    flat = lambda w, a: {"w": w, "a": a}
    _, hvp = torch.autograd.functional.hvp(
        lambda w, a: loss(flat(w, a), x_s, y_s), tuple(v.detach() for v in theta.values()), g_q
    )
    for s, f, h in zip(second, first, hvp):
        assert torch.allclose(s - f, -alpha * h, atol=1e-12)
    for f, g in zip(first, g_q):
        assert torch.allclose(f, g, atol=1e-12)


def test_reptile_update_matches_its_formula():
    meta, support, _, inner, outer = tiny_problem("reptile", first_order=True)
    before = {
        k: v.detach().clone() for k, v in {**meta.g_params, **{f"d.{k}": v for k, v in meta.d_params.items()}}.items()
    }
    g_ad, d_ad = M.batched_adapt(meta, support, inner, vectorised=False)
    M.reptile_step(meta, support, inner, outer, vectorised=True)
    epsilon = meta.config.meta_lr
    for k, p in meta.g_params.items():
        assert torch.allclose(p, before[k] + epsilon * (g_ad[k].mean(0) - before[k]), atol=1e-12)
    for k, p in meta.d_params.items():
        assert torch.allclose(p, before[f"d.{k}"] + epsilon * (d_ad[k].mean(0) - before[f"d.{k}"]), atol=1e-12)


def test_meta_sgd_learning_rates_receive_gradients_and_change(strokes):
    config = M.MetaConfig(method="meta-sgd", tasks=2, shots=2, queries=2, fake_batch=4, inner_steps=1)
    meta = M.new_meta_gan(config, seed=0)
    trainer = M.MetaTrainer(meta, TaskSampler(strokes, strokes.seen_classes, seed=0))
    rates = lambda: {**{f"g.{k}": v for k, v in meta.g_lr.items()}, **{f"d.{k}": v for k, v in meta.d_lr.items()}}
    before = {k: v.detach().clone() for k, v in rates().items()}
    trainer.step()
    changed = [k for k, v in rates().items() if not torch.equal(before[k], v)]
    assert len(changed) == len(before) and any(k.startswith("d.") for k in changed)  # both players' rates
    meta2, support, query, inner, outer = tiny_problem("meta-sgd")
    grads = M.meta_gradients(meta2, M.batched_outer_losses(meta2, support, query, inner, outer))
    by_tensor = {id(t): g for t, g in zip(meta2.trainable(), grads)}
    rates = [*meta2.g_lr.values(), *meta2.d_lr.values()]  # selected by identity: every rate of both players
    assert len(rates) == len(meta2.g_params) + len(meta2.d_params)
    assert all(by_tensor[id(r)].abs().sum() > 0 for r in rates)  # their values: the finite-difference test above


def test_adapt_and_sample_api(strokes):
    meta = M.new_meta_gan(M.MetaConfig(), seed=0)
    shots = TaskSampler(strokes, strokes.unseen_classes, seed=0).sample(1, 1, 5).support[0, 0]
    adapted = A.adapt(meta, shots, steps=3, seed=0)
    images = A.sample(meta, adapted, 7, seed=1)
    assert images.shape == (7, 1, 28, 28) and images.abs().max() <= 1
    assert not torch.equal(images, A.sample(meta, None, 7, seed=1))  # adaptation changed the generator
    assert torch.equal(A.sample(meta, A.adapt(meta, shots, steps=3, seed=0), 7, seed=1), images)  # seeded
    with pytest.raises(ValueError, match=r"support images must have shape \[batch, 1, 28, 28\]"):
        A.adapt(meta, shots[:, :, :20], steps=1)
    with pytest.raises(ValueError, match="Unknown meta-learning method 'maml2'"):
        M.MetaConfig(method="maml2")


def test_meta_training_is_reproducible_and_saves(strokes, tmp_path):
    config = M.MetaConfig(method="meta-sgd", tasks=2, shots=2, queries=2, fake_batch=4, inner_steps=1, first_order=True)
    runs = []
    for _ in range(2):
        meta = M.new_meta_gan(config, seed=0)
        M.MetaTrainer(meta, TaskSampler(strokes, strokes.seen_classes, seed=0), seed=0).train(2, progress=False)
        runs.append(meta)
    assert runs[0].history == runs[1].history
    M.save_meta(runs[0], tmp_path / "meta.pt")
    loaded = M.load_meta(tmp_path / "meta.pt")
    assert torch.equal(A.sample(loaded, None, 3), A.sample(runs[0], None, 3)) and loaded.step == 2
    # every tensor comes back: both players' weights and Meta-SGD's learned rates, and the history
    assert len(loaded.trainable()) == len(runs[0].trainable()) and loaded.history == runs[0].history
    assert all(torch.equal(a, b) for a, b in zip(loaded.trainable(), runs[0].trainable()))


def test_adapting_many_classes_at_once_equals_one_by_one(strokes):
    meta = M.new_meta_gan(M.standard_configs()["Meta-SGD"], seed=0)
    support = TaskSampler(strokes, strokes.unseen_classes, seed=0).sample(1, 3, 5).support[0]
    shape = (3, 2, meta.config.fake_batch, meta.config.z_dim)
    # one thread: on two, batched and single convolutions split their sums differently (AVX-512 CPUs: up to 1e-3
    # after three GAN steps, which amplify rounding); the comparison is of the arithmetic, not of the rounding
    with limited_threads(1):
        many = A.adapt_and_sample_many(meta, support, steps=3, n=4, seed=10)
        for c in range(3):  # the reference loop: class c's own "adapt" and "sample" streams
            noise = class_noise(10, 3, shape, "adapt")[c]
            g_params, _ = M.inner_adapt(meta, meta.g_params, meta.d_params, support[c], noise, first_order=True)
            one = functional_call(meta.generator, g_params, (class_noise(10, 3, (4, meta.config.z_dim), "sample")[c],))
            assert torch.allclose(many[c], one.detach(), atol=1e-5)
        first = A.sample(meta, A.adapt(meta, support[0], steps=3, seed=10), 4, seed=10)
        assert torch.allclose(many[0], first, atol=1e-5)
    unadapted = A.adapt_and_sample_many(meta, support, steps=0, n=4, seed=10)
    assert torch.allclose(unadapted[0], A.sample(meta, None, 4, seed=10), atol=1e-6)
    assert not torch.allclose(unadapted[1], unadapted[0])


def test_adaptation_and_sampling_streams_of_different_classes_never_coincide():
    seeds = {derive_seed(s, stream, c) for s in range(5) for stream in ("adapt", "sample") for c in range(50)}
    assert len(seeds) == 5 * 2 * 50  # (the old rule gave class c's sampling seed to class c + 1's adaptation)
    noise = {stream: class_noise(0, 50, (8,), stream) for stream in ("adapt", "sample")}
    rows = torch.cat([noise["adapt"], noise["sample"]])
    assert len(torch.unique(rows, dim=0)) == 100
    assert 0 <= derive_seed(3, "adapt", 1) < 2**63


@pytest.mark.slow  # spawns processes
def test_derived_seeds_are_the_same_in_every_process_and_under_every_hash_seed():
    code = "from metagan_lib.seeds import derive_seed; print(derive_seed(3, 'adapt', 1), derive_seed(0, 'sample', 7))"
    here = f"{derive_seed(3, 'adapt', 1)} {derive_seed(0, 'sample', 7)}"
    for hash_seed in ("1", "2"):  # Python's own hash() of the labels would differ between these two processes
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        printed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert printed.stdout.strip() == here


def test_meta_sgd_rates_are_clamped_at_zero_after_an_outer_step(strokes):
    config = M.MetaConfig(method="meta-sgd", tasks=2, shots=2, queries=2, fake_batch=4, inner_steps=1)
    meta = M.new_meta_gan(config, seed=0)
    rates = [*meta.g_lr.values(), *meta.d_lr.values()]
    with torch.no_grad():  # a hair above zero: Adam's first step (about the outer rate per entry) pushes some below
        for rate in rates:
            rate.fill_(1e-9)
    M.MetaTrainer(meta, TaskSampler(strokes, strokes.seen_classes, seed=0)).step()
    flat = torch.cat([r.detach().flatten() for r in rates])
    assert (flat >= 0).all() and (flat == 0).any() and (flat > 1e-9).any()


@pytest.mark.parametrize("tamper", ["a tensor reshaped", "a tensor missing"])
def test_a_stored_meta_gan_whose_tensors_were_changed_is_refused_and_retrained(strokes, tmp_path, tamper):
    config = M.MetaConfig(method="meta-sgd", tasks=2, shots=2, queries=2, fake_batch=4, inner_steps=1)
    sampler = TaskSampler(strokes, strokes.seen_classes, seed=0)
    path = tmp_path / "meta.pt"
    trained = M.train_or_load_meta(path, config, sampler, 1, progress=False)
    stored = torch.load(path, weights_only=True)
    name = next(iter(stored["artefact"]["g_params"]))
    if tamper == "a tensor reshaped":
        stored["artefact"]["g_params"][name] = torch.zeros(3)
    else:
        del stored["artefact"]["g_params"][name]
    torch.save(stored, path)  # the key is untouched: only the contents betray the change
    expected = r"g_params: .* is \(3,\)" if tamper == "a tensor reshaped" else "g_params: parameter names differ"
    with pytest.raises(ValueError, match=expected):
        M.load_meta(path)
    with pytest.warns(DamagedArtifactWarning, match="meta.pt cannot be used.*g_params"):
        again = M.train_or_load_meta(path, config, sampler, 1, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(again.trainable(), trained.trainable()))  # retrained, the same


def test_meta_training_writes_both_players_losses_to_tensorboard(strokes, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = M.MetaConfig(method="reptile", tasks=2, shots=2, queries=2, fake_batch=4, inner_steps=1)
    meta = M.new_meta_gan(config, seed=0)
    M.MetaTrainer(meta, TaskSampler(strokes, strokes.seen_classes, seed=0), seed=0).train(
        3, progress=False, log_dir=tmp_path
    )
    events = EventAccumulator(str(tmp_path)).Reload()
    for name in ("d_loss", "g_loss"):
        logged = events.Scalars(name)
        assert [e.step for e in logged] == [1, 2, 3]  # the meta-step each loss came from
        assert [e.value for e in logged] == pytest.approx(meta.history[name], rel=1e-6)


def test_a_meta_gan_from_one_given_player_is_refused():
    generator, discriminator = TinyGenerator(), TinyDiscriminator()
    for given in ({"generator": generator}, {"discriminator": discriminator}):
        with pytest.raises(ValueError, match="both players or neither"):
            M.new_meta_gan(M.MetaConfig(), **given)


@pytest.mark.parametrize("method", ["maml", "meta-sgd"])  # Meta-SGD: a rate per entry, different for each player
def test_inner_adapt_is_the_two_player_step_written_out(method):
    """Each inner step, by hand: ``d <- d - alpha_D * grad_d L_D(D_d(S), D_d(G_g(n_t0)))``, then, against that new
    discriminator, ``g <- g - alpha_G * grad_g softplus(-D_d(G_g(n_t1)))``; step ``t`` uses its own noise ``n_t``."""
    meta, support, _, inner, _ = tiny_problem(method, steps=2)
    if method == "meta-sgd":  # distinct rates, so that swapping the players' rates or entries would show
        g = torch.Generator().manual_seed(3)
        for rates in (meta.g_lr, meta.d_lr):
            for k in rates:
                rates[k] = 0.1 + 0.5 * torch.rand(rates[k].shape, generator=g, dtype=torch.float64)
    G = lambda p, z: functional_call(meta.generator, p, (z,))
    D = lambda p, x: functional_call(meta.discriminator, p, (x,))
    g_params = {k: v.detach().requires_grad_(True) for k, v in meta.g_params.items()}
    d_params = {k: v.detach().requires_grad_(True) for k, v in meta.d_params.items()}
    for t in range(2):
        d_loss = discriminator_loss(D(d_params, support[0]), D(d_params, G(g_params, inner[0, t, 0])))
        d_grads = torch.autograd.grad(d_loss, list(d_params.values()))
        d_params = {
            k: (v - meta.d_lr[k] * gr).detach().requires_grad_(True) for (k, v), gr in zip(d_params.items(), d_grads)
        }
        g_loss = torch.nn.functional.softplus(-D(d_params, G(g_params, inner[0, t, 1]))).mean()
        g_grads = torch.autograd.grad(g_loss, list(g_params.values()))
        g_params = {
            k: (v - meta.g_lr[k] * gr).detach().requires_grad_(True) for (k, v), gr in zip(g_params.items(), g_grads)
        }
    g_library, d_library = M.inner_adapt(meta, meta.g_params, meta.d_params, support[0], inner[0], first_order=True)
    for want, got in ((g_params, g_library), (d_params, d_library)):
        for k in want:
            assert torch.allclose(got[k], want[k], rtol=0, atol=1e-12), k
