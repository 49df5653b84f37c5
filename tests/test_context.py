"""The context meta-GAN: its set distance, inner loop, outer rules, test-time path and cache."""

import pytest
import torch

from metagan_lib import context as C
from metagan_lib import inversion, profiles
from metagan_lib.artifacts import DamagedArtifactWarning
from metagan_lib.models import ConvGenerator
from metagan_lib.tasks import TaskSampler


def tiny_model(rule="maml", dtype=torch.float64, seed=0):
    config = C.ContextConfig(
        rule=rule,
        z_dim=3,
        context_dim=4,
        width=8,
        inner_steps=2,
        inner_lr=0.7,
        inner_samples=5,
        outer_samples=6,
        tasks=3,
        shots=4,
        queries=5,
    )
    model = C.new_context_gan(config, seed=seed)
    model.generator, model.discriminator = model.generator.to(dtype), model.discriminator.to(dtype)
    g = torch.Generator().manual_seed(seed + 7)
    # FiLM starts at zero; give it values so that the context acts through every path
    for params in (model.meta_params, model.d_params):
        for k, v in params.items():
            noise = 0.1 * torch.randn(v.shape, generator=g) if "film" in k or k == "context" else 0
            params[k] = (v.detach() + noise).to(dtype).requires_grad_(True)
    return model


def tiny_batch(model, seed=1):
    cfg, g = model.config, torch.Generator().manual_seed(seed)
    dtype = model.meta_params["context"].dtype
    support = torch.rand(cfg.tasks, cfg.shots, 1, 28, 28, generator=g, dtype=dtype) * 2 - 1
    query = torch.rand(cfg.tasks, cfg.queries, 1, 28, 28, generator=g, dtype=dtype) * 2 - 1
    inner = torch.randn(cfg.tasks, cfg.inner_steps, cfg.inner_samples, cfg.z_dim, generator=g, dtype=dtype)
    outer = torch.randn(cfg.tasks, cfg.outer_samples, cfg.z_dim, generator=g, dtype=dtype)
    return support, query, inner, outer


def test_chamfer_distance_closed_forms():
    a = torch.rand(4, 1, 28, 28) * 2 - 1
    assert C.chamfer_distance(a, a).item() == pytest.approx(0.0, abs=1e-7)
    # constant images c and c + 0.5: every pair differs by 0.25 in squared value at each of the 3 scales
    x, y = torch.zeros(3, 1, 28, 28), torch.full((2, 1, 28, 28), 0.5)
    assert C.chamfer_distance(x, y).item() == pytest.approx(2 * 3 * 0.25)
    # a sample set that covers the images plus an extra far sample pays only for the extra one (on the sample side)
    far = torch.ones(1, 1, 28, 28)
    assert C.chamfer_distance(torch.cat([x[:1], far]), x[:1]).item() == pytest.approx(3 * 1.0 / 2)


def test_generator_shapes_and_film_starts_as_identity():
    model = C.new_context_gan(C.ContextConfig(), seed=0)
    z = torch.randn(5, model.config.z_dim)
    images = C.generate(model, model.generator_params(), z, model.meta_params["context"])
    assert images.shape == (5, 1, 28, 28) and images.abs().max() <= 1
    assert all(model.meta_params[k].abs().sum() == 0 for k in model.meta_params if "film" in k)


@pytest.mark.parametrize("rule", C.OUTER_RULES)
def test_vmap_equals_loop_for_every_outer_rule(rule):
    model = tiny_model(rule)
    batch = tiny_batch(model)
    rule_fn = C.OUTER_RULES_DISPATCH[rule]
    grads_v, losses_v, fakes_v = rule_fn(model, *batch, vectorised=True)
    grads_l, losses_l, fakes_l = rule_fn(model, *batch, vectorised=False)
    assert torch.allclose(losses_v, losses_l, rtol=1e-10) and torch.allclose(fakes_v, fakes_l, rtol=1e-10, atol=1e-12)
    for k in grads_l:
        assert torch.allclose(grads_v[k], grads_l[k], rtol=1e-8, atol=1e-12), k
    assert any(g.abs().sum() > 0 for k, g in grads_v.items() if k != "context")


@pytest.mark.parametrize("rule", ["maml", "meta-sgd"])
def test_second_order_meta_gradient_matches_finite_differences(rule):
    model = tiny_model(rule)
    support, query, inner, outer = tiny_batch(model)
    grads, _, _ = C.OUTER_RULES_DISPATCH[rule](model, support, query, inner, outer, vectorised=True)
    params = model.meta_params
    generator, h = torch.Generator().manual_seed(3), 1e-6

    def objective(direction, sign):
        with torch.no_grad():
            for k, v in direction.items():
                params[k].add_(sign * h * v)
        value = (
            C.batched_outer_loss(model, support, query, inner, outer, first_order=False, vectorised=False)[0]
            .mean()
            .item()
        )
        with torch.no_grad():
            for k, v in direction.items():
                params[k].sub_(sign * h * v)
        return value

    names = ["context", "project.weight", "film1.weight", "up2.bias"] + (["rates"] if rule == "meta-sgd" else [])
    for name in names:
        direction = {name: torch.randn(params[name].shape, generator=generator, dtype=torch.float64)}
        numeric = (objective(direction, +1) - objective(direction, -1)) / (2 * h)
        analytic = (grads[name] * direction[name]).sum().item()
        assert abs(numeric - analytic) < 1e-6 * max(1.0, abs(numeric)), name


def test_first_order_differs_from_second_order_only_through_the_inner_gradients():
    model = tiny_model("maml")
    batch = tiny_batch(model)
    second, losses2, _ = C.OUTER_RULES_DISPATCH["maml"](model, *batch, vectorised=True)
    first, losses1, _ = C.OUTER_RULES_DISPATCH["fomaml"](model, *batch, vectorised=True)
    assert torch.allclose(losses1, losses2)  # same forward pass
    assert not torch.allclose(first["context"], second["context"])  # different gradients


@pytest.mark.parametrize("rule", ["reptile", "reptile-query"])
def test_reptile_direction_is_start_minus_adapted(rule):
    """``theta - mean_i theta'_i``, with the weights step fitting the shots (reptile) or the query images."""
    model = tiny_model(rule)
    support, query, inner, outer = tiny_batch(model)
    direction, _, _ = C.OUTER_RULES_DISPATCH[rule](model, support, query, inner, outer, vectorised=False)
    d_params = {k: v.detach() for k, v in model.d_params.items()}
    targets = query if rule == "reptile-query" else support
    tasks = zip(support, targets, inner, outer)
    adapted = [C.reptile_task(model, model.meta_params, d_params, s, t, i, o)[0] for s, t, i, o in tasks]
    for k, v in model.meta_params.items():
        expected = v.detach() - torch.stack([a[k] for a in adapted]).mean(0)
        assert torch.allclose(direction[k], expected), k


def test_reptile_weights_step_loss_is_the_chamfer_distance_to_its_target():
    """Same inner loop and samples for both targets; the loss is chamfer(samples, target) + the adversarial term, and
    the two rules' directions differ."""
    model = tiny_model("reptile")
    support, query, inner, outer = tiny_batch(model)
    d_params = {k: v.detach() for k, v in model.d_params.items()}
    step = lambda target: C.reptile_task(model, model.meta_params, d_params, support[0], target, inner[0], outer[0])
    (_, loss_shots, fake_shots), (_, loss_query, fake_query) = step(support[0]), step(query[0])
    assert torch.equal(fake_shots, fake_query)
    adversarial = model.config.adv_weight * C.adversarial_loss(model, d_params, support[0], fake_shots)
    for loss, target in ((loss_shots, support[0]), (loss_query, query[0])):
        assert loss.item() == pytest.approx((C.chamfer_distance(fake_shots, target) + adversarial).item(), rel=1e-12)
    batch = (support, query, inner, outer)
    on_shots = C.OUTER_RULES_DISPATCH["reptile"](model, *batch, vectorised=True)[0]
    on_query = C.OUTER_RULES_DISPATCH["reptile-query"](model, *batch, vectorised=True)[0]
    assert not torch.allclose(on_shots["up2.weight"], on_query["up2.weight"])


def test_inner_loop_reduces_the_distance_to_the_shots(strokes):
    model = C.new_context_gan(C.ContextConfig(inner_lr=0.5), seed=0)
    with torch.no_grad():  # a random linear map of the context into the first layer: adaptation has something to move
        model.meta_params["project.weight"].mul_(3.0)
    shots = TaskSampler(strokes, strokes.seen_classes, seed=0).sample(1, 1, 5).support[0, 0]
    noise = torch.randn(20, 16, model.config.z_dim, generator=torch.Generator().manual_seed(0))
    params = {k: v.detach() for k, v in model.meta_params.items()}
    before = C.chamfer_distance(C.generate(model, model.generator_params(params), noise[0], params["context"]), shots)
    context = C.inner_adapt(model, params, shots, noise, first_order=True)
    after = C.chamfer_distance(C.generate(model, model.generator_params(params), noise[0], context), shots)
    assert after < before


def test_adapting_many_classes_equals_one_by_one(strokes):
    model = C.new_context_gan(C.ContextConfig(), seed=0)
    support = TaskSampler(strokes, strokes.unseen_classes, seed=0).sample(1, 3, 5).support[0]
    together = C.adapt_and_sample(model, support, steps=2, n=4, seed=11)
    alone = torch.cat([C.adapt_and_sample(model, support[c : c + 1], steps=2, n=4, seed=11) for c in range(1)])
    assert together.shape == (3, 4, 1, 28, 28)
    assert torch.allclose(together[:1], alone, atol=1e-5)
    assert not torch.allclose(together[0], together[1])  # classes draw different noise
    assert torch.equal(C.adapt_contexts(model, support, 0), model.meta_params["context"].detach().expand(3, -1))


def test_training_is_reproducible_caches_and_rebuilds_a_damaged_file(strokes, tmp_path):
    config = C.ContextConfig(rule="fomaml", width=8, tasks=2, shots=2, queries=2, inner_samples=4, outer_samples=4)
    sampler = lambda: TaskSampler(strokes, strokes.seen_classes, seed=0)
    a = C.train_or_load_context_gan(tmp_path / "a.pt", config, sampler(), 2, progress=False)
    b = C.train_or_load_context_gan(tmp_path / "b.pt", config, sampler(), 2, progress=False)
    assert all(torch.equal(a.meta_params[k], b.meta_params[k]) for k in a.meta_params)
    loaded = C.train_or_load_context_gan(tmp_path / "a.pt", config, sampler(), 2, progress=False)
    assert loaded.step == 2 and all(torch.equal(a.meta_params[k], loaded.meta_params[k]) for k in a.meta_params)
    (tmp_path / "a.pt").write_bytes(b"not a checkpoint")
    with pytest.warns(DamagedArtifactWarning, match="a.pt cannot be used.*rebuilding it"):
        rebuilt = C.train_or_load_context_gan(tmp_path / "a.pt", config, sampler(), 2, progress=False)
    assert all(torch.equal(a.meta_params[k], rebuilt.meta_params[k]) for k in a.meta_params)


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown outer rule 'mamal'"):
        C.ContextConfig(rule="mamal")
    with pytest.raises(ValueError, match="inner_steps"):
        C.ContextConfig(inner_steps=0)


def test_the_chosen_learner_is_the_validated_candidate_beside_the_four_rules():
    standard = C.standard_context_configs(tasks=4, shots=3)
    chosen = C.chosen_context_configs(tasks=4, shots=3)
    assert list(chosen) == [C.CHOSEN_CONTEXT_LEARNER] and not set(chosen) & set(standard)
    config = chosen[C.CHOSEN_CONTEXT_LEARNER]
    assert (config.rule, config.inner_steps, config.tasks, config.shots) == ("reptile-query", 5, 4, 3)
    assert [c.rule for c in standard.values()] == ["maml", "fomaml", "meta-sgd", "reptile"]
    full, smoke = profiles.settings("05", "full"), profiles.settings("05", "smoke")
    assert full.chosen_context_steps == 2 * full.context_steps
    assert 0 < smoke.chosen_context_steps < full.chosen_context_steps


def test_latent_inversion_reconstructs_images_the_generator_can_make():
    torch.manual_seed(0)
    generator = ConvGenerator(z_dim=8, width=8).eval()
    targets = generator(torch.randn(6, 8)).detach().view(2, 3, 1, 28, 28)
    method = inversion.LatentInversion(generator, noise_scale=0.0, lr=0.05)
    error = lambda steps: (inversion.invert_and_sample(method, targets, steps, n=3) - targets).pow(2).mean().item()
    assert error(100) < 0.5 * error(0)
    noisy = inversion.invert_and_sample(inversion.LatentInversion(generator, noise_scale=0.5), targets, 20, n=3)
    assert noisy.shape == (2, 3, 1, 28, 28) and not torch.allclose(
        noisy, inversion.invert_and_sample(method, targets, 20, n=3)
    )


def test_meta_training_writes_its_losses_to_tensorboard(strokes, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = C.ContextConfig(rule="reptile", width=8, tasks=2, shots=2, queries=2, inner_samples=4, outer_samples=4)
    model = C.new_context_gan(config, seed=0)
    sampler = TaskSampler(strokes, strokes.seen_classes, seed=0)
    C.ContextTrainer(model, sampler).train(2, progress=False, log_dir=tmp_path)
    events = EventAccumulator(str(tmp_path)).Reload()
    assert [e.value for e in events.Scalars("outer_loss")] == pytest.approx(model.history["outer_loss"], rel=1e-6)
