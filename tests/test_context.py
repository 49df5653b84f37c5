"""The context meta-GAN: its set distance, inner loop, outer rules, test-time path and cache."""

import dataclasses

import pytest
import torch
from torch.func import functional_call

from metagan_lib import context as C
from metagan_lib import evaluation, fewshot, inversion, losses, profiles
from metagan_lib import meta as M
from metagan_lib.artifacts import DamagedArtifactWarning, meta_training_key
from metagan_lib.evaluation import FeatureNet
from metagan_lib.images import to_signed
from metagan_lib.models import ConvGenerator
from metagan_lib.runtime import limited_threads
from metagan_lib.tasks import TaskSampler


def tiny_model(
    rule="maml",
    dtype=torch.float64,
    seed=0,
    shot_encoder=False,
    blur=0.0,
    upsample="transposed",
    refine=0,
    inner_adv_weight=0.0,
    inner_guide_weight=0.0,
    outer_spread_weight=0.0,
):
    config = C.ContextConfig(
        inner_adv_weight=inner_adv_weight,
        inner_guide_weight=inner_guide_weight,
        outer_spread_weight=outer_spread_weight,
        shot_encoder=shot_encoder,
        blur=blur,
        upsample=upsample,
        refine=refine,
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
    if model.encoder is not None:
        model.encoder = model.encoder.to(dtype)
    g = torch.Generator().manual_seed(seed + 7)
    # FiLM and the encoder's head start at zero; give them values so that the context acts through every path
    for params in (model.meta_params, model.d_params):
        for k, v in params.items():
            starts_at_zero = "film" in k or k == "context" or k.startswith("encoder.head")
            noise = 0.1 * torch.randn(v.shape, generator=g) if starts_at_zero else 0
            params[k] = (v.detach() + noise).to(dtype).requires_grad_(True)
    if inner_guide_weight:
        model = C.attach_guide(model, tiny_guide(dtype, seed + 11))
    return model


def tiny_guide(dtype=torch.float64, seed=11):
    """A guide network with FeatureNet's parameters and smooth activations (softplus, average pooling): second-order
    meta-gradients through ReLU and max-pooling jump wherever a unit switches, which finite differences cannot check."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = FeatureNet(num_classes=3).to(dtype)
    for index, layer in enumerate(net.body):
        if isinstance(layer, torch.nn.ReLU):
            net.body[index] = torch.nn.Softplus()
        elif isinstance(layer, torch.nn.MaxPool2d):
            net.body[index] = torch.nn.AvgPool2d(2)
    return net


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


def test_pyramid_distances_are_mean_squared_differences_at_three_scales_written_out():
    """``d(a_i, b_j) = sum over s in (1, 2, 4) of mean((pool_s a_i - pool_s b_j)^2)`` on random images, pair by pair."""
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 1, 28, 28, generator=g, dtype=torch.float64) * 2 - 1
    b = torch.rand(2, 1, 28, 28, generator=g, dtype=torch.float64) * 2 - 1
    pool = lambda x, s: x if s == 1 else torch.nn.functional.avg_pool2d(x, s)
    expected = torch.tensor(
        [
            [
                sum((pool(a[i : i + 1], s) - pool(b[j : j + 1], s)).pow(2).mean().item() for s in (1, 2, 4))
                for j in range(2)
            ]
            for i in range(3)
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(losses.pyramid_distances(a, b), expected, rtol=1e-12, atol=0)
    d = losses.pyramid_distances(a, b)  # chamfer: each image's nearest neighbour in the other set, both ways
    assert C.chamfer_distance(a, b).item() == pytest.approx((d.min(1).values.mean() + d.min(0).values.mean()).item())


def test_gaussian_blur_is_the_separable_normalised_kernel():
    sigma, radius = 1.0, 3
    weights = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float64) / sigma) ** 2)
    weights = weights / weights.sum()
    impulse = torch.zeros(1, 1, 28, 28, dtype=torch.float64)
    impulse[0, 0, 14, 10] = 1.0
    response = losses.gaussian_blur(impulse, sigma)[0, 0]
    expected = torch.zeros(28, 28, dtype=torch.float64)
    expected[14 - radius : 14 + radius + 1, 10 - radius : 10 + radius + 1] = torch.outer(weights, weights)
    assert torch.allclose(response, expected, atol=1e-15)
    flat = torch.full((2, 1, 28, 28), -0.7, dtype=torch.float64)  # replicated borders: a constant image stays constant
    assert torch.allclose(losses.gaussian_blur(flat, 1.5), flat)
    images = torch.rand(3, 1, 28, 28)
    assert torch.equal(losses.gaussian_blur(images, 0.0), images)


def test_a_blurred_chamfer_distance_sees_a_stroke_one_pixel_off_as_near():
    def vertical_stroke(column):
        image = -torch.ones(1, 1, 28, 28, dtype=torch.float64)
        image[..., 6:22, column] = 1.0
        return image

    stroke, near, far = vertical_stroke(12), vertical_stroke(13), vertical_stroke(18)
    for blur in (0.0, 1.0):
        assert losses.chamfer_distance(stroke, stroke, blur).item() == pytest.approx(0.0, abs=1e-12)
    sharp = losses.chamfer_distance(near, stroke).item() / losses.chamfer_distance(far, stroke).item()
    blurred = losses.chamfer_distance(near, stroke, 1.0).item() / losses.chamfer_distance(far, stroke, 1.0).item()
    assert blurred < 0.5 * sharp  # the blur separates "a pixel off" from "far off" much more


def test_generator_shapes_and_film_starts_as_identity():
    model = C.new_context_gan(C.ContextConfig(), seed=0)
    z = torch.randn(5, model.config.z_dim)
    images = C.generate(model, model.generator_params(), z, model.meta_params["context"])
    assert images.shape == (5, 1, 28, 28) and images.abs().max() <= 1
    assert all(model.meta_params[k].abs().sum() == 0 for k in model.meta_params if "film" in k)


VARIANTS = [  # tiny_model's options: the default, and each option alone
    {},
    {"shot_encoder": True},
    {"blur": 1.0},
    {"upsample": "nearest"},
    {"refine": 8},
    {"inner_adv_weight": 0.5},
    {"inner_guide_weight": 0.7},
    {"inner_guide_weight": 0.7, "outer_spread_weight": 2.0},  # the spread term needs the guide
]
VARIANT_IDS = ["-".join(f"{k}={v}" for k, v in variant.items()) or "default" for variant in VARIANTS]


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("rule", C.OUTER_RULES)
def test_vmap_equals_loop_for_every_outer_rule(rule, variant):
    model = tiny_model(rule, **variant)
    refine = model.config.refine
    batch = tiny_batch(model)
    rule_fn = C.OUTER_RULES_DISPATCH[rule]
    grads_v, losses_v, fakes_v = rule_fn(model, *batch, vectorised=True)
    grads_l, losses_l, fakes_l = rule_fn(model, *batch, vectorised=False)
    assert torch.allclose(losses_v, losses_l, rtol=1e-10) and torch.allclose(fakes_v, fakes_l, rtol=1e-10, atol=1e-12)
    assert set(grads_l) == set(grads_v) == set(model.meta_params)
    for k in grads_l:
        assert torch.allclose(grads_v[k], grads_l[k], rtol=1e-8, atol=1e-12), k
    # up1's bias is constant over each channel, and norm2 (8 groups of the tiny model's 8 channels) removes it: its
    # gradient is zero in exact arithmetic, so it may round to exactly 0 (likewise up2's bias before norm3 of the
    # refine stage); every other weight must get a gradient
    removed_by_norm = ("up1.bias", "up2.bias") if refine else ("up1.bias",)
    assert all(g.abs().sum() > 0 for k, g in grads_v.items() if k not in ("context", *removed_by_norm)), [
        k for k, g in grads_v.items() if not g.abs().sum()
    ]
    assert all(grads_v[k].abs().max() < 1e-12 for k in removed_by_norm)


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("rule", ["maml", "meta-sgd"])
def test_second_order_meta_gradient_matches_finite_differences(rule, variant):
    model = tiny_model(rule, **variant)
    shot_encoder, refine = model.config.shot_encoder, model.config.refine
    support, query, inner, outer = tiny_batch(model)
    grads, _, _ = C.OUTER_RULES_DISPATCH[rule](model, support, query, inner, outer, vectorised=True)
    params = model.meta_params
    # the loss is piecewise smooth (the chamfer distance's minima, ReLU): a step small enough to cross no kink (1e-7
    # crossed one for up1.weight with the adversarial inner term: 0.617140 against 0.617120, which 1e-8 gives)
    generator, h = torch.Generator().manual_seed(3), 1e-8

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

    assert (rule == "meta-sgd") == ("rates" in params) and shot_encoder == any(k.startswith("encoder.") for k in params)
    assert bool(refine) == ("film3.weight" in params)
    for name in params:  # every tensor the rule trains
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
    # different gradients, by far more than the finite-difference test's tolerance (1e-6), so that test sees the term
    assert (first["context"] - second["context"]).abs().max() > 1e-3
    # FOMAML written out: adapt with no graph, then differentiate the outer loss at the adapted context (whose
    # derivative with respect to the meta-context is then the identity) and at the generator's weights
    support, query, inner, outer = batch
    d_params = {k: v.detach() for k, v in model.d_params.items()}
    weights = {k: v.detach().requires_grad_(True) for k, v in model.generator_params(model.meta_params).items()}
    expected = {k: torch.zeros_like(v) for k, v in model.meta_params.items()}
    for s, q, i, o in zip(support, query, inner, outer):
        adapted = C.inner_adapt(model, model.meta_params, s, i, first_order=True, d_params=d_params)
        adapted = adapted.detach().requires_grad_(True)
        loss = C.outer_loss(model, d_params, s, q, C.generate(model, weights, o, adapted))
        names = list(weights)
        grads = torch.autograd.grad(loss, [adapted] + [weights[k] for k in names])
        for k, g in zip(["context"] + names, grads):
            expected[k] += g / len(support)
    for k in expected:
        torch.testing.assert_close(first[k], expected[k], msg=k)


@pytest.mark.parametrize("rule", ["reptile", "reptile-query", "reptile-query-sgd"])
def test_reptile_direction_is_start_minus_adapted(rule):
    """``theta - mean_i theta'_i``, with the weights step fitting the shots (reptile) or the query images."""
    model = tiny_model(rule)
    support, query, inner, outer = tiny_batch(model)
    direction, _, _ = C.OUTER_RULES_DISPATCH[rule](model, support, query, inner, outer, vectorised=False)
    d_params = {k: v.detach() for k, v in model.d_params.items()}
    targets = support if rule == "reptile" else query
    adapted = []  # written out: the inner loop, then one step of all weights down the outer loss, by autograd
    for s, t, i, o in zip(support, targets, inner, outer):
        context = C.inner_adapt(model, model.meta_params, s, i, first_order=True, d_params=d_params)
        start = {**model.generator_params(model.meta_params), "context": context}
        start = {k: v.detach().requires_grad_(True) for k, v in start.items()}
        weights = {k: v for k, v in start.items() if k != "context"}
        loss = C.outer_loss(model, d_params, s, t, C.generate(model, weights, o, start["context"]))
        grads = dict(zip(start, torch.autograd.grad(loss, list(start.values()))))
        adapted.append({k: v.detach() - model.config.reptile_lr * grads[k] for k, v in start.items()})
    assert model.config.reptile_lr != 1.0 and set(direction) == set(model.meta_params)
    for k, v in model.meta_params.items():
        if k == "rates":  # the rates' own test: test_learned_rates_get_their_first_order_meta_gradient_checked_by_...
            continue
        expected = v.detach() - torch.stack([a[k] for a in adapted]).mean(0)
        torch.testing.assert_close(direction[k], expected, msg=k)


def test_the_inner_trajectory_sums_its_gradients_so_that_the_adapted_context_is_a_rate_step():
    """``c_S = c_init - rates * G`` with ``G`` the sum of the inner gradients (learned per-entry rates, float64)."""
    model = tiny_model("reptile-query-sgd", inner_adv_weight=0.5)
    with torch.no_grad():
        model.meta_params["rates"].mul_(torch.linspace(0.5, 1.5, model.config.context_dim, dtype=torch.float64))
    support, _, inner, _ = tiny_batch(model)
    d_params = {k: v.detach() for k, v in model.d_params.items()}
    context, total = C.inner_trajectory(model, model.meta_params, support[0], inner[0], True, d_params)
    start = C.initial_context(model, model.meta_params, support[0])
    assert torch.allclose(context, start - model.meta_params["rates"] * total, rtol=1e-12, atol=1e-14)
    assert torch.equal(context, C.inner_adapt(model, model.meta_params, support[0], inner[0], True, d_params))


def test_the_inner_loop_is_the_documented_step_written_out_on_each_steps_noise():
    """Two inner steps by hand, ``c <- c - alpha * grad_c L(c)`` on step ``t``'s own noise, ``L`` written from its
    parts: the chamfer distance to the shots, ``w_adv`` x ``softplus(-D([shot_(i mod K), G(z_i, c)]))`` averaged, and
    ``w_guide`` x ``|mean_i f(G(z_i, c)) - mean_j f(shot_j)|^2`` (``f`` the guide's L2-normalised features)."""
    model = tiny_model("fomaml", inner_adv_weight=0.5, inner_guide_weight=2.0)
    support, _, inner, _ = tiny_batch(model)
    shots, noise = support[0], inner[0]
    d_params = {k: v.detach() for k, v in model.d_params.items()}
    g_params = {k: v.detach() for k, v in model.generator_params().items()}
    features = lambda x: torch.nn.functional.normalize(functional_call(model.guide, model.guide_params, (x,)), dim=1)

    def loss(c, z):
        samples = functional_call(model.generator, g_params, (z, c))
        pairs = torch.cat([shots[torch.arange(len(samples)) % len(shots)], samples], dim=1)
        adversarial = torch.nn.functional.softplus(-functional_call(model.discriminator, d_params, (pairs,))).mean()
        guide = (features(samples).mean(0) - features(shots).mean(0)).pow(2).sum()
        return losses.chamfer_distance(samples, shots) + 0.5 * adversarial + 2.0 * guide

    context = model.meta_params["context"].detach()
    for z in noise:
        c = context.clone().requires_grad_(True)
        context = context - model.config.inner_lr * torch.autograd.grad(loss(c, z), c)[0]
    assert len(noise) == 2 and not torch.equal(noise[0], noise[1])
    got = C.inner_adapt(model, model.meta_params, shots, noise, first_order=True, d_params=d_params)
    torch.testing.assert_close(got, context, rtol=0, atol=1e-12)


def test_learned_rates_get_their_first_order_meta_gradient_checked_by_finite_differences():
    """``reptile-query-sgd``: the rates' direction is the mean over tasks of ``d/d rates`` of the weights step's loss
    at ``c_init - rates * G``, ``G`` (the inner gradients' sum) held constant; float64 central differences."""
    model = tiny_model("reptile-query-sgd", inner_adv_weight=0.5)
    support, query, inner, outer = tiny_batch(model)
    direction, _, _ = C.OUTER_RULES_DISPATCH["reptile-query-sgd"](model, support, query, inner, outer, vectorised=True)
    params, d_params = model.meta_params, {k: v.detach() for k, v in model.d_params.items()}
    g_params = {k: v.detach() for k, v in model.generator_params().items()}
    tasks = []
    for s, q, i, o in zip(support, query, inner, outer):
        _, total = C.inner_trajectory(model, params, s, i, True, d_params)
        tasks.append((s, q, o, C.initial_context(model, params, s).detach(), total.detach()))

    def mean_loss(rates):
        values = []
        for s, q, o, start, total in tasks:
            fake = C.generate(model, g_params, o, start - rates * total)
            adversarial = C.adversarial_loss(model, d_params, s, fake)
            values.append(C.set_distance(model, fake, q) + model.config.adv_weight * adversarial)
        return torch.stack(values).mean().item()

    rates, h = params["rates"].detach(), 1e-6
    v = torch.randn(rates.shape, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    numeric = (mean_loss(rates + h * v) - mean_loss(rates - h * v)) / (2 * h)
    assert numeric == pytest.approx((direction["rates"] * v).sum().item(), rel=1e-6, abs=1e-10)
    assert direction["rates"].abs().sum() > 0


def test_a_learned_rate_rule_starts_its_rates_at_the_inner_rate_and_only_those_rules_have_them():
    for rule in C.OUTER_RULES:
        config = C.ContextConfig(rule=rule, width=8, context_dim=4, inner_lr=0.7)
        params = C.new_context_gan(config).meta_params
        assert ("rates" in params) == (rule in C.LEARNED_RATE_RULES), rule
        if rule in C.LEARNED_RATE_RULES:
            assert torch.equal(params["rates"], torch.full((4,), 0.7))


@pytest.mark.parametrize("rule", ["reptile", "reptile-query"])
def test_reptile_with_a_shot_encoder_regresses_the_start_on_the_adapted_context(rule):
    """Generator weights: ``theta - mean_i theta'_i``; ``c0`` and the encoder: the gradient of
    ``0.5 * mean_i ||c0 + E(S_i) - c'_i||^2`` (for ``c0``: ``mean_i (c_init_i - c'_i)``), checked by finite
    differences."""
    model = tiny_model(rule, shot_encoder=True)
    support, query, inner, outer = tiny_batch(model)
    direction, _, _ = C.OUTER_RULES_DISPATCH[rule](model, support, query, inner, outer, vectorised=False)
    d_params = {k: v.detach() for k, v in model.d_params.items()}
    targets = query if rule == "reptile-query" else support
    adapted = [
        C.reptile_task(model, model.meta_params, d_params, *task)[0] for task in zip(support, targets, inner, outer)
    ]
    for k in model.generator_params():
        assert torch.allclose(
            direction[k], model.meta_params[k].detach() - torch.stack([a[k] for a in adapted]).mean(0)
        )
    adapted_contexts = torch.stack([a["context"] for a in adapted])
    starts = torch.stack([C.initial_context(model, model.meta_params, s) for s in support]).detach()
    assert torch.allclose(direction["context"], (starts - adapted_contexts).mean(0))
    params, h, g = model.meta_params, 1e-6, torch.Generator().manual_seed(5)

    def regression(name, step):
        with torch.no_grad():
            params[name].add_(step)
            value = sum(
                0.5 * (C.initial_context(model, params, s) - c).pow(2).sum() for s, c in zip(support, adapted_contexts)
            )
            params[name].sub_(step)
        return value.item() / len(support)

    for name in ("encoder.head.weight", "encoder.features.0.weight"):
        v = torch.randn(params[name].shape, generator=g, dtype=torch.float64)
        numeric = (regression(name, h * v) - regression(name, -h * v)) / (2 * h)
        assert numeric == pytest.approx((direction[name] * v).sum().item(), rel=1e-6, abs=1e-9), name


def test_an_untrained_shot_encoder_adds_nothing_and_leaves_the_weights_of_the_same_seed(strokes):
    plain = C.new_context_gan(C.ContextConfig(), seed=0)
    encoded = C.new_context_gan(C.ContextConfig(shot_encoder=True), seed=0)
    assert all(torch.equal(plain.meta_params[k], encoded.meta_params[k]) for k in plain.meta_params)
    assert all(torch.equal(plain.d_params[k], encoded.d_params[k]) for k in plain.d_params)
    assert set(encoded.meta_params) - set(plain.meta_params) == {
        k for k in encoded.meta_params if k.startswith("encoder.")
    }
    support = TaskSampler(strokes, strokes.unseen_classes, seed=0).sample(1, 3, 5).support[0]
    assert torch.equal(C.adapt_contexts(encoded, support, 0), C.adapt_contexts(plain, support, 0))
    with torch.no_grad():  # a trained head: each class starts from c0 + E(its shots)
        encoded.meta_params["encoder.head.bias"].fill_(0.3)
        encoded.meta_params["encoder.head.weight"].normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    starts = C.adapt_contexts(encoded, support, 0)
    for c in range(3):
        assert torch.allclose(
            starts[c], C.initial_context(encoded, encoded.meta_params, support[c]).detach(), atol=1e-6
        )
    assert not torch.allclose(starts[0], starts[1])
    shuffled = support[:, torch.randperm(5, generator=torch.Generator().manual_seed(1))]
    assert torch.allclose(C.adapt_contexts(encoded, shuffled, 0), starts, atol=1e-6)  # the shots' order is irrelevant


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


TEST_TIME_VARIANTS = [  # the default, the fifth learner's inner terms and upsampling, and averaged weights
    {},
    {"inner_adv_weight": 0.3, "inner_guide_weight": 1.0, "upsample": "nearest"},
    {"ema_decay": 0.5},
]


@pytest.mark.parametrize("variant", TEST_TIME_VARIANTS, ids=["default", "fifth-learner-terms", "ema"])
def test_adapting_many_classes_equals_one_by_one(strokes, variant):
    model = C.new_context_gan(C.ContextConfig(width=8, **variant), seed=0)
    if model.config.inner_guide_weight:  # a seeded guide: its weights must not depend on what ran before this test
        model = C.attach_guide(model, tiny_guide(torch.float32, seed=3))
    support = TaskSampler(strokes, strokes.unseen_classes, seed=0).sample(1, 3, 5).support[0]
    # one thread: on two, batched and single convolutions split their sums differently, which two inner steps
    # amplify past 1e-5 for some weights; the comparison is of the arithmetic, not of the rounding
    with limited_threads(1):
        together = C.adapt_and_sample(model, support, steps=2, n=4, seed=11)
    assert together.shape == (3, 4, 1, 28, 28)
    params, d_params = model.test_params(), {k: v.detach() for k, v in model.d_params.items()}
    g_params = model.generator_params(params)
    adapt_noise = C.class_noise(11, 3, (2, model.config.inner_samples, model.config.z_dim), "adapt")
    sample_noise = C.class_noise(11, 3, (4, model.config.z_dim), "sample")
    assert not torch.equal(adapt_noise[1], adapt_noise[2]) and not torch.equal(sample_noise[1], sample_noise[2])
    for c in range(3):  # the reference loop: class c alone, with its own "adapt" and "sample" streams
        with limited_threads(1):
            context = C.inner_adapt(model, params, support[c], adapt_noise[c], first_order=True, d_params=d_params)
            one = C.generate(model, g_params, sample_noise[c], context.detach())
        assert torch.allclose(together[c], one.detach(), atol=1e-5), f"class {c}"
    assert not torch.allclose(together[0], together[1])  # classes draw different noise
    assert torch.equal(C.adapt_contexts(model, support, 0), model.meta_params["context"].detach().expand(3, -1))


def test_training_is_reproducible_caches_and_rebuilds_a_damaged_file(strokes, tmp_path, monkeypatch):
    config = C.ContextConfig(rule="fomaml", width=8, tasks=2, shots=2, queries=2, inner_samples=4, outer_samples=4)
    sampler = lambda: TaskSampler(strokes, strokes.seen_classes, seed=0)
    a = C.train_or_load_context_gan(tmp_path / "a.pt", config, sampler(), 2, progress=False)
    b = C.train_or_load_context_gan(tmp_path / "b.pt", config, sampler(), 2, progress=False)
    assert all(torch.equal(a.meta_params[k], b.meta_params[k]) for k in a.meta_params)
    with monkeypatch.context() as patched:  # a cache hit loads, it never meta-trains
        patched.setattr(C.ContextTrainer, "train", lambda *a, **k: pytest.fail("the cached network was trained again"))
        loaded = C.train_or_load_context_gan(tmp_path / "a.pt", config, sampler(), 2, progress=False)
    assert loaded.step == 2 and all(torch.equal(a.meta_params[k], loaded.meta_params[k]) for k in a.meta_params)
    (tmp_path / "a.pt").write_bytes(b"not a checkpoint")
    with pytest.warns(DamagedArtifactWarning, match="a.pt cannot be used.*rebuilding it"):
        rebuilt = C.train_or_load_context_gan(tmp_path / "a.pt", config, sampler(), 2, progress=False)
    assert all(torch.equal(a.meta_params[k], rebuilt.meta_params[k]) for k in a.meta_params)


def test_a_trained_network_depends_on_its_key_not_on_what_the_sampler_drew_before(strokes, tmp_path):
    # one sampler shared by two trainings in a row (as a notebook does): the second trains as if it came first, so
    # the file under its key is the same whichever trainings ran before it
    config = C.ContextConfig(rule="fomaml", width=8, tasks=2, shots=2, queries=2, inner_samples=4, outer_samples=4)
    shared = TaskSampler(strokes, strokes.seen_classes, seed=0)
    C.train_or_load_context_gan(tmp_path / "first.pt", config.replace(rule="reptile"), shared, 3, progress=False)
    second = C.train_or_load_context_gan(tmp_path / "second.pt", config, shared, 2, progress=False)
    alone = C.train_or_load_context_gan(
        tmp_path / "alone.pt", config, TaskSampler(strokes, strokes.seen_classes, seed=0), 2, progress=False
    )
    assert all(torch.equal(second.meta_params[k], alone.meta_params[k]) for k in alone.meta_params)
    meta_config = M.standard_configs(tasks=2, shots=2)["FOMAML"].replace(width=8, z_dim=8)
    M.train_or_load_meta(tmp_path / "m1.pt", meta_config, shared, 2, progress=False)
    after_others = M.train_or_load_meta(
        tmp_path / "m2.pt", meta_config.replace(inner_lr=0.01), shared, 2, progress=False
    )
    fresh = TaskSampler(strokes, strokes.seen_classes, seed=0)
    first = M.train_or_load_meta(tmp_path / "m3.pt", meta_config.replace(inner_lr=0.01), fresh, 2, progress=False)
    assert all(torch.equal(after_others.g_params[k], first.g_params[k]) for k in first.g_params)


def test_a_shot_encoder_model_trains_caches_and_reloads(strokes, tmp_path):
    config = C.ContextConfig(
        rule="reptile-query", width=8, tasks=2, shots=2, queries=2, inner_samples=4, outer_samples=4, shot_encoder=True
    )
    sampler = TaskSampler(strokes, strokes.seen_classes, seed=0)
    trained = C.train_or_load_context_gan(tmp_path / "e.pt", config, sampler, 2, progress=False)
    assert not torch.equal(
        trained.meta_params["encoder.head.weight"], torch.zeros_like(trained.meta_params["encoder.head.weight"])
    )
    loaded = C.load_context_gan(tmp_path / "e.pt")
    assert loaded.config.shot_encoder and loaded.encoder is not None
    assert all(torch.equal(trained.meta_params[k], loaded.meta_params[k]) for k in trained.meta_params)


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown outer rule 'mamal'"):
        C.ContextConfig(rule="mamal")
    with pytest.raises(ValueError, match="inner_steps"):
        C.ContextConfig(inner_steps=0)
    with pytest.raises(ValueError, match="blur"):
        C.ContextConfig(blur=-1.0)
    with pytest.raises(ValueError, match="Unknown upsampling 'bicubic'"):
        C.ContextConfig(upsample="bicubic")
    for bad in (-8, 12, 16.0):
        with pytest.raises(ValueError, match="refine must be 0 or a multiple of 8"):
            C.ContextConfig(refine=bad)
    with pytest.raises(ValueError, match="inner_adv_weight"):
        C.ContextConfig(inner_adv_weight=-0.1)


def test_the_chosen_learner_is_the_validated_candidate_beside_the_four_rules():
    standard = C.standard_context_configs(tasks=4, shots=3)
    chosen = C.chosen_context_configs(tasks=4, shots=3)
    assert list(chosen) == [C.CHOSEN_CONTEXT_LEARNER] and not set(chosen) & set(standard)
    config = chosen[C.CHOSEN_CONTEXT_LEARNER]
    assert (config.rule, config.inner_steps, config.tasks, config.shots) == ("reptile-query", 5, 4, 3)
    assert (config.upsample, config.inner_adv_weight, config.refine) == ("nearest", 0.3, 0)
    assert config.inner_guide_weight == 1.0 and C.GUIDE_WIDTH == 16  # validated at 2,000 meta-steps (README)
    assert [c.rule for c in standard.values()] == ["maml", "fomaml", "meta-sgd", "reptile"]
    full, smoke = profiles.settings("05", "full"), profiles.settings("05", "smoke")
    assert full.chosen_context_steps == 2000  # the budget validated (README), five times the four rules' comparison
    assert 0 < smoke.chosen_context_steps < full.chosen_context_steps
    assert full.guide_steps == profiles.settings("06", "full").feature_steps  # trained like the scoring network
    assert smoke.guide_steps == profiles.settings("06", "smoke").feature_steps


def test_the_test_step_rule_takes_the_most_steps_not_flagged_at_enough_diversity():
    sweep = lambda *rows: {steps: {"copy_score": copy, "diversity": div} for steps, copy, div in rows}
    # the Omniglot validation sweep of the fifth learner (docs/experiments.md): 50 steps are flagged (1.651 > 1.5)
    omniglot = sweep((5, 1.313, 0.422), (10, 1.435, 0.405), (20, 1.482, 0.384), (50, 1.651, 0.357))
    assert C.test_steps_by_rule(omniglot, real_diversity=0.402) == 20 == C.CHOSEN_TEST_STEPS["omniglot"]
    assert C.test_steps_by_rule(sweep((5, 1.2, 0.4), (10, 1.5, 0.4)), real_diversity=0.4) == 10  # 1.5: not flagged
    assert C.test_steps_by_rule(sweep((5, 1.2, 0.4), (10, 1.3, 0.31)), real_diversity=0.4) == 5  # 0.31 < 0.8 x 0.4
    with pytest.raises(ValueError, match="no test-step count .* extend the sweep"):
        C.test_steps_by_rule(sweep((5, 1.6, 0.4)), real_diversity=0.4)


def test_only_the_fifth_learner_takes_the_test_steps_chosen_for_a_dataset():
    fifth = C.chosen_context_configs(tasks=4, shots=3)[C.CHOSEN_CONTEXT_LEARNER]
    assert C.chosen_test_steps(fifth, "omniglot") == C.CHOSEN_TEST_STEPS["omniglot"] != fifth.inner_steps
    assert C.chosen_test_steps(fifth, "glyphs") == C.chosen_test_steps(fifth, "digits") == fifth.inner_steps == 5
    for config in C.standard_context_configs(tasks=4, shots=3).values():  # the four rules: as meta-trained
        assert C.chosen_test_steps(config, "omniglot") == config.inner_steps == 3
    assert C.chosen_test_steps(fifth.replace(inner_lr=2.0), "omniglot") == 5  # another candidate: not the chosen one


def test_only_the_fifth_learner_takes_the_sample_filter_chosen_for_a_dataset(strokes):
    fifth = C.chosen_context_configs(tasks=4, shots=3)[C.CHOSEN_CONTEXT_LEARNER]
    omniglot = C.chosen_test_filter(fifth, "omniglot")
    # the validation's pick (docs/experiments.md): guide novelty keeps 1 in 4 after 40 test steps, spread 0.05
    assert (omniglot.steps, omniglot.oversample, omniglot.judge, omniglot.spread) == (40, 4, "guide-novelty", 0.05)
    assert C.chosen_test_filter(fifth, "glyphs") is C.chosen_test_filter(fifth, "digits") is None
    for config in [*C.standard_context_configs(tasks=4, shots=3).values(), fifth.replace(inner_lr=2.0)]:
        assert C.chosen_test_filter(config, "omniglot") is None
    guided = C.attach_guide(C.new_context_gan(fifth, seed=0), FeatureNet(num_classes=3))
    filtered = fewshot.context_method("fifth", guided, "omniglot")
    plain = fewshot.context_method("fifth", guided, "glyphs")
    assert (filtered.kind, filtered.steps, filtered.role) == ("context-select", 40, "meta-learner")
    assert filtered.model == C.SampleSelection(guided, 4, "guide-novelty", 0.05)
    assert (plain.kind, plain.steps, plain.model) == ("context", 5, guided)
    four_rules = C.new_context_gan(C.standard_context_configs(tasks=4, shots=3)["context Reptile"], seed=0)
    four_rules_method = fewshot.context_method("Reptile", four_rules, "omniglot")
    assert (four_rules_method.kind, four_rules_method.steps) == ("context", 3)
    support = TaskSampler(strokes, strokes.unseen_classes, seed=0).sample(1, 2, 3).support[0]
    images = fewshot.generate(filtered, support, None, n=3, steps=1, seed=0)  # 12 drawn a class, the 3 kept
    assert images.shape == (2, 3, 1, 28, 28) and torch.isfinite(images).all()


def test_the_fifth_learner_alone_gets_a_second_test_setting_within_inversions_compute(strokes):
    fifth = C.chosen_context_configs(tasks=4, shots=3)[C.CHOSEN_CONTEXT_LEARNER]
    cheaper = C.within_inversion_compute_filter(fifth, "omniglot")
    # the Korean validation's pick (docs/experiments.md): 4 inner samples, 25 steps, guide novelty 1 in 4, spread 0.1
    assert (cheaper.steps, cheaper.inner_samples, cheaper.oversample, cheaper.judge, cheaper.spread) == (
        25, 4, 4, "guide-novelty", 0.1
    )  # fmt: skip
    assert C.within_inversion_compute_filter(fifth, "glyphs") is None  # its 5 steps already stay within inversion's
    for config in [*C.standard_context_configs(tasks=4, shots=3).values(), fifth.replace(inner_lr=2.0)]:
        assert C.within_inversion_compute_filter(config, "omniglot") is None
    guided = C.attach_guide(C.new_context_gan(fifth, seed=0), FeatureNet(num_classes=3))
    chosen, within = fewshot.context_methods("fifth", guided, "omniglot")
    assert chosen == fewshot.context_method("fifth", guided, "omniglot") and chosen.compute_within == ""
    assert (within.name, within.kind, within.steps, within.role, within.compute_within) == (
        "fifth, within inversion's compute", "context-select", 25, "meta-learner", "invert"
    )  # fmt: skip
    # the selection wraps the same weights, adapted with 4 inner samples instead of the 16 meta-trained with
    assert within.model.model.config == guided.config.replace(inner_samples=4) != guided.config
    assert within.model.model.meta_params is guided.meta_params and within.model.model.guide is guided.guide
    assert (within.model.oversample, within.model.judge, within.model.spread) == (4, "guide-novelty", 0.1)
    assert [m.name for m in fewshot.context_methods("fifth", guided, "glyphs")] == ["fifth"]
    support = TaskSampler(strokes, strokes.unseen_classes, seed=0).sample(1, 2, 3).support[0]
    images = fewshot.generate(within, support, None, n=3, steps=1, seed=0)
    assert images.shape == (2, 3, 1, 28, 28) and torch.isfinite(images).all()
    with pytest.raises(ValueError, match="compute_within names a method kind"):
        fewshot.Method("x", kind="context", model=guided, compute_within="inversion")


def test_inversion_and_the_set_distance_refuse_images_they_cannot_read_by_name():
    """``invert`` takes the checks ``invert_and_sample`` made (a notebook calls it directly): a [K, 1, 28, 28] batch
    would have been read as K classes of one shot, uint8 values fitted against tanh outputs; the chamfer distance
    names the images it was given."""
    method = inversion.LatentInversion(ConvGenerator(z_dim=8, width=8).eval())
    shots = torch.rand(2, 3, 1, 28, 28) * 2 - 1
    with pytest.raises(ValueError, match=r"shots shape=\(3, 1, 28, 28\).*\[classes, K, 1, 28, 28\]"):
        inversion.invert(method, shots[0], steps=1)
    with pytest.raises(ValueError, match="look like images in \\[0, 1\\]"):
        inversion.invert(method, (shots + 1) / 2, steps=1)
    with pytest.raises(ValueError, match="steps=-1 is not accepted"):
        inversion.invert(method, shots, steps=-1)
    uint8 = ((shots + 1) * 127.5).round().to(torch.uint8)  # uint8 shots are converted, as everywhere
    torch.testing.assert_close(inversion.invert(method, uint8, 2), inversion.invert(method, to_signed(uint8), 2))
    with pytest.raises(ValueError, match=r"chamfer_distance: images must be float images \[B, 1, 28, 28\].*to_signed"):
        losses.chamfer_distance(shots[0], uint8[0])
    with pytest.raises(ValueError, match=r"samples must be float images.*\[3, 1, 32, 32\]"):
        losses.chamfer_distance(torch.zeros(3, 1, 32, 32), shots[0])


def test_inversion_fits_the_mean_squared_error_and_leaves_the_generator_untouched():
    """``squared_error`` is the per-image mean of squared pixel differences, and inverting moves only the latents: the
    generator's weights are unchanged and hold no gradient afterwards (its weights are frozen, not trained)."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 1, 28, 28, generator=g), torch.rand(2, 1, 28, 28, generator=g)
    expected = torch.stack([((a[i] - b[i]) ** 2).sum() / 784 for i in range(2)])
    torch.testing.assert_close(inversion.squared_error(a, b), expected)
    generator = ConvGenerator(z_dim=8, width=8).eval()
    before = {k: v.detach().clone() for k, v in generator.state_dict().items()}
    inversion.invert(inversion.LatentInversion(generator), torch.rand(1, 2, 1, 28, 28) * 2 - 1, steps=3)
    assert all(torch.equal(before[k], v) for k, v in generator.state_dict().items())
    assert all(p.grad is None for p in generator.parameters())


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
    latents = torch.randn(2, 3, 8)
    around = inversion.decode_around(generator, latents, 0.0, n=7)  # sample i of class c decodes z_{c, i mod K}
    with torch.no_grad():
        torch.testing.assert_close(
            around, generator(latents[:, torch.arange(7) % 3].flatten(0, 1)).view(2, 7, 1, 28, 28)
        )


def test_meta_training_writes_its_losses_to_tensorboard(strokes, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = C.ContextConfig(rule="reptile", width=8, tasks=2, shots=2, queries=2, inner_samples=4, outer_samples=4)
    model = C.new_context_gan(config, seed=0)
    sampler = TaskSampler(strokes, strokes.seen_classes, seed=0)
    C.ContextTrainer(model, sampler).train(2, progress=False, log_dir=tmp_path)
    events = EventAccumulator(str(tmp_path)).Reload()
    assert [e.value for e in events.Scalars("outer_loss")] == pytest.approx(model.history["outer_loss"], rel=1e-6)


def test_a_warm_start_is_the_pretrained_generator_at_the_initial_context():
    pretrained = ConvGenerator(z_dim=8, width=8).eval()
    config = C.ContextConfig(z_dim=8, width=8, context_dim=6)
    model = C.warm_started_context_gan(config, pretrained, seed=0)
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    g_params = {k: v.detach() for k, v in model.generator_params().items()}
    with torch.no_grad():
        assert torch.equal(C.generate(model, g_params, z, model.meta_params["context"].detach()), pretrained(z))
        moved = C.generate(model, g_params, z, torch.full((6,), 0.5))
    assert not torch.allclose(moved, pretrained(z).detach())  # the context acts from the first step
    assert all(model.meta_params[k].abs().sum() == 0 for k in model.meta_params if "film" in k)
    with pytest.raises(ValueError, match="z_dim 16 and width 8.*got ConvGenerator with z_dim 8, width 8"):
        C.warm_started_context_gan(C.ContextConfig(width=8), pretrained)
    with pytest.raises(ValueError, match="Use upsample='transposed' with a warm start"):
        C.warm_started_context_gan(config.replace(upsample="nearest"), pretrained)
    with pytest.raises(ValueError, match="Use refine=0 with a warm start"):
        C.warm_started_context_gan(config.replace(refine=8), pretrained)


def test_the_cache_key_records_the_warm_start(strokes, tmp_path):
    config = C.ContextConfig(
        rule="fomaml", z_dim=8, width=8, tasks=2, shots=2, queries=2, inner_samples=4, outer_samples=4
    )
    sampler = lambda: TaskSampler(strokes, strokes.seen_classes, seed=0)
    first, second = (ConvGenerator(z_dim=8, width=8) for _ in range(2))
    train = lambda path, start: C.train_or_load_context_gan(
        path, config, sampler(), 1, progress=False, warm_start=start
    )
    a = train(tmp_path / "a.pt", (first, {"gan": "first"}))
    from_second = train(tmp_path / "b.pt", (second, {"gan": "second"}))
    again = train(tmp_path / "a.pt", (second, {"gan": "second"}))  # another pretrained GAN: retrained, not reused
    assert not torch.equal(a.meta_params["up2.weight"], again.meta_params["up2.weight"])
    assert all(torch.equal(from_second.meta_params[k], again.meta_params[k]) for k in again.meta_params)


def test_a_moving_average_leaves_training_unchanged_and_is_what_test_time_uses(strokes, tmp_path):
    base = C.ContextConfig(rule="reptile-query", width=8, tasks=2, shots=2, queries=2, inner_samples=4, outer_samples=4)
    sampler = lambda: TaskSampler(strokes, strokes.seen_classes, seed=0)
    plain = C.train_or_load_context_gan(tmp_path / "plain.pt", base, sampler(), 3, progress=False)
    averaged = C.train_or_load_context_gan(
        tmp_path / "ema.pt", base.replace(ema_decay=0.5), sampler(), 3, progress=False
    )
    assert all(torch.equal(plain.meta_params[k], averaged.meta_params[k]) for k in plain.meta_params)
    # three steps of ema <- 0.5 ema + 0.5 theta_t from theta_0
    history = [C.new_context_gan(base, seed=0).meta_params["context"].detach()]
    trainer = C.ContextTrainer(C.new_context_gan(base, seed=0), sampler(), seed=0)
    for _ in range(3):
        trainer.step()
        history.append(trainer.model.meta_params["context"].detach().clone())
    expected = history[0]
    for value in history[1:]:
        expected = 0.5 * expected + 0.5 * value
    assert torch.allclose(averaged.ema_params["context"], expected, atol=1e-7)
    assert torch.equal(averaged.test_params()["context"], averaged.ema_params["context"])
    assert torch.equal(plain.test_params()["context"], plain.meta_params["context"])
    support = TaskSampler(strokes, strokes.unseen_classes, seed=0).sample(1, 2, 2).support[0]
    assert not torch.allclose(C.adapt_contexts(averaged, support, 1), C.adapt_contexts(plain, support, 1))
    loaded = C.load_context_gan(tmp_path / "ema.pt")
    assert all(torch.equal(loaded.ema_params[k], averaged.ema_params[k]) for k in averaged.ema_params)
    with pytest.raises(
        ValueError, match=r"^ema_decay=1.0 is not accepted: ema_decay must be a decay in \(0, 1\), or None"
    ):
        C.ContextConfig(ema_decay=1.0)


def test_the_inner_discriminator_term_moves_the_context_and_needs_the_discriminator():
    plain, with_d = tiny_model("fomaml"), tiny_model("fomaml", inner_adv_weight=0.5)
    support, _, inner, _ = tiny_batch(plain)
    params = {k: v.detach() for k, v in plain.meta_params.items()}
    d_params = {k: v.detach() for k, v in plain.d_params.items()}
    a = C.inner_adapt(plain, params, support[0], inner[0], first_order=True, d_params=d_params)
    b = C.inner_adapt(with_d, params, support[0], inner[0], first_order=True, d_params=d_params)
    assert torch.equal(a, C.inner_adapt(plain, params, support[0], inner[0], first_order=True))  # weight 0: unused
    assert not torch.allclose(a, b)  # the discriminator's term changes the adapted context
    # its inner loss is the chamfer distance plus the weighted adversarial term
    g_params, c, z = with_d.generator_params(params), params["context"], inner[0, 0]
    samples = C.generate(with_d, g_params, z, c)
    expected = C.set_distance(with_d, samples, support[0]) + 0.5 * C.adversarial_loss(
        with_d, d_params, support[0], samples
    )
    assert torch.allclose(C.inner_loss(with_d, g_params, d_params, c, z, support[0]), expected)
    with pytest.raises(ValueError, match="needs the discriminator's weights: pass d_params"):
        C.inner_adapt(with_d, params, support[0], inner[0], first_order=True)


def test_the_guide_term_is_the_distance_between_feature_prototypes_and_needs_a_guide():
    plain, guided = tiny_model("fomaml"), tiny_model("fomaml", inner_guide_weight=0.7)
    support, _, inner, _ = tiny_batch(plain)
    params = {k: v.detach() for k, v in plain.meta_params.items()}
    g_params, c, z = guided.generator_params(params), params["context"], inner[0, 0]
    samples = C.generate(guided, g_params, z, c)
    net = tiny_guide()  # tiny_model's guide (the same seed)
    expected = (net.embed(samples).mean(0) - net.embed(support[0]).mean(0)).pow(2).sum()
    assert torch.allclose(C.guide_distance(guided, samples, support[0]), expected, rtol=1e-12)
    assert C.guide_distance(guided, support[0], support[0]).abs() < 1e-12  # the shots' own prototype: distance 0
    inner_value = C.inner_loss(guided, g_params, None, c, z, support[0])
    assert torch.allclose(inner_value, C.set_distance(guided, samples, support[0]) + 0.7 * expected, rtol=1e-12)
    prototype = C.guide_prototype(guided, support[0])  # what the inner loop computes once, before its steps
    assert torch.allclose(prototype, net.embed(support[0]).mean(0), rtol=1e-12)
    assert torch.equal(C.inner_loss(guided, g_params, None, c, z, support[0], prototype), inner_value)
    a = C.inner_adapt(plain, params, support[0], inner[0], first_order=True)
    assert not torch.allclose(a, C.inner_adapt(guided, params, support[0], inner[0], first_order=True))
    no_guide = C.new_context_gan(guided.config)  # the weight set, no guide attached
    with pytest.raises(ValueError, match="needs a guide network"):
        C.inner_adapt(no_guide, no_guide.meta_params, support[0].float(), inner[0].float())
    with pytest.raises(ValueError, match="inner_guide_weight"):
        C.ContextConfig(inner_guide_weight=-1.0)


def test_the_spread_term_is_the_shortfall_of_the_samples_pairwise_guide_distances():
    model = tiny_model("reptile-query", inner_guide_weight=0.7, outer_spread_weight=2.0)
    support, query, _, outer = tiny_batch(model)
    net = tiny_guide()  # tiny_model's guide (the same seed)
    with torch.no_grad():
        features = torch.nn.functional.normalize(net.body(query[0]), dim=1)
    expected = evaluation.mean_pairwise_distance(features)  # the diversity metric's formula, in the guide's features
    assert C.guide_spread(model, query[0]).item() == pytest.approx(expected, rel=1e-12)
    a, b = query[0, :1], query[0, 1:2]  # two images: their one distance
    distance = (C.guide_features(model, a) - C.guide_features(model, b)).norm()
    assert torch.allclose(C.guide_spread(model, torch.cat([a, b])), distance, rtol=1e-12)
    # copies do not spread: the shortfall is the images' whole spread, and its gradient is finite (zero distances)
    copies = a.expand(4, -1, -1, -1).clone().requires_grad_(True)
    shortfall = C.spread_shortfall(model, copies, query[0])
    assert shortfall.item() == pytest.approx(expected, rel=1e-12)
    assert torch.isfinite(torch.autograd.grad(shortfall, copies)[0]).all()
    fewer = (C.guide_spread(model, query[0, :3]) - C.guide_spread(model, query[0])).clamp_min(0)
    assert C.spread_shortfall(model, query[0], query[0, :3]).item() == pytest.approx(fewer.item(), rel=1e-12)
    spread_out = C.spread_shortfall(model, query[0], copies.detach())  # samples spread more than the images: 0
    assert spread_out.item() == 0.0
    # the outer loss adds the weighted shortfall to the chamfer and adversarial terms, and only when weighted
    fake = C.generate(model, model.generator_params(), outer[0], model.meta_params["context"])
    d_params = {k: v.detach() for k, v in model.d_params.items()}
    plain = C.set_distance(model, fake, query[0]) + model.config.adv_weight * C.adversarial_loss(
        model, d_params, support[0], fake
    )
    with_spread = C.outer_loss(model, d_params, support[0], query[0], fake)
    assert torch.allclose(with_spread, plain + 2.0 * C.spread_shortfall(model, fake, query[0]), rtol=1e-12)
    unweighted = tiny_model("reptile-query", inner_guide_weight=0.7)
    assert torch.equal(C.outer_loss(unweighted, d_params, support[0], query[0], fake), plain)
    with pytest.raises(ValueError, match="set inner_guide_weight > 0"):
        C.ContextConfig(outer_spread_weight=1.0)
    with pytest.raises(ValueError, match="outer_spread_weight"):
        C.ContextConfig(inner_guide_weight=1.0, outer_spread_weight=-1.0)
    spread = dict(inner_guide_weight=1.0, outer_spread_weight=1.0)  # a spread of one image would be 0/0
    for rule, one_image in (("reptile-query", "queries"), ("reptile", "shots"), ("maml", "outer_samples")):
        with pytest.raises(ValueError, match=f"{one_image}.*at least 2 with outer_spread_weight > 0"):
            C.ContextConfig(rule=rule, **spread, **{one_image: 1})
    C.ContextConfig(rule="reptile-query", shots=1, **spread)  # its target is the queries: one shot is fine


def test_the_guide_weight_enters_cache_keys_only_when_set_and_the_guide_is_saved(strokes, tmp_path):
    sampler = TaskSampler(strokes, strokes.seen_classes, seed=0)
    config = C.ContextConfig(
        z_dim=4, context_dim=4, width=8, inner_steps=1, inner_samples=4, tasks=2, shots=2, queries=2
    )
    plain_key = meta_training_key("context-gan", config, sampler, 2, 0)["config"]
    assert "inner_guide_weight" not in plain_key  # the keys of caches written before the field existed still match
    assert set(plain_key) == set(dataclasses.asdict(config)) - {"inner_guide_weight", "outer_spread_weight"}
    guided = config.replace(inner_guide_weight=0.5)
    assert meta_training_key("context-gan", guided, sampler, 2, 0)["config"]["inner_guide_weight"] == 0.5
    with pytest.raises(ValueError, match="needs guide="):
        C.train_or_load_context_gan(tmp_path / "g.pt", guided, sampler, 2, progress=False)
    with pytest.raises(ValueError, match="has no guide term"):
        C.train_or_load_context_gan(tmp_path / "g.pt", config, sampler, 2, progress=False, guide=(FeatureNet(3), {}))
    net = FeatureNet(num_classes=3, width=16)  # the chosen guide's width (C.GUIDE_WIDTH), not FeatureNet's default
    model = C.train_or_load_context_gan(
        tmp_path / "g.pt", guided, sampler, 2, progress=False, guide=(net, {"kind": "feature-net", "seed": 1})
    )
    loaded = C.load_context_gan(tmp_path / "g.pt")
    assert loaded.guide_params["0.weight"].shape[0] == 16
    assert all(torch.equal(loaded.guide_params[k], v) for k, v in model.guide_params.items())
    assert all(torch.equal(v, dict(net.body.named_parameters())[k]) for k, v in model.guide_params.items())
    support = TaskSampler(strokes, strokes.unseen_classes, seed=0).sample(1, 2, 2).support[0]
    assert torch.equal(C.adapt_contexts(loaded, support, 1), C.adapt_contexts(model, support, 1))
    C.save_context_gan(loaded, tmp_path / "saved.pt")  # a model kept outside the cache reads back the same
    again = C.load_context_gan(tmp_path / "saved.pt")
    assert torch.equal(C.adapt_contexts(again, support, 1), C.adapt_contexts(model, support, 1))
    last = list(loaded.guide_params)[-1]
    loaded.guide_params = {**loaded.guide_params, last: torch.zeros(1)}  # a changed file, names intact
    C.save_context_gan(loaded, tmp_path / "changed.pt")
    with pytest.raises(ValueError, match=f"guide_params: {last} is \\(1,\\)"):
        C.load_context_gan(tmp_path / "changed.pt")


def test_pair_scores_average_the_discriminator_over_the_shots():
    model = tiny_model(dtype=torch.float32)
    g = torch.Generator().manual_seed(3)
    support, samples = (
        torch.rand(2, 4, 1, 28, 28, generator=g) * 2 - 1,
        torch.rand(2, 6, 1, 28, 28, generator=g) * 2 - 1,
    )
    scores = C.pair_scores(model, support, samples)
    logit = lambda shot, image: torch.func.functional_call(
        model.discriminator, model.d_params, (torch.cat([shot, image])[None],)
    ).reshape(())
    with torch.no_grad():
        expected = torch.tensor(
            [[sum(logit(shot, image) for shot in support[c]) / 4 for image in samples[c]] for c in range(2)]
        )
    assert scores.shape == (2, 6)
    assert torch.allclose(scores, expected, atol=1e-5)


def test_discriminator_selection_keeps_the_best_scored_of_the_oversampled_draw(strokes):
    model = C.new_context_gan(C.ContextConfig(width=8), seed=0)
    support = TaskSampler(strokes, strokes.unseen_classes, seed=0).sample(1, 3, 5).support[0]
    drawn = C.adapt_and_sample(model, support, steps=2, n=12, seed=5)  # what the selection draws: 4 x 3 per class
    kept = C.adapt_and_select(C.SampleSelection(model, oversample=4), support, steps=2, n=3, seed=5)
    scores = C.pair_scores(model, support, drawn)
    assert kept.shape == (3, 3, 1, 28, 28)
    for c in range(3):
        index = [next(i for i in range(12) if torch.equal(drawn[c, i], image)) for image in kept[c]]
        assert index == sorted(index)  # in the order drawn
        dropped = [i for i in range(12) if i not in index]
        assert scores[c, index].min() >= scores[c, dropped].max()
    with pytest.raises(ValueError, match="oversample"):
        C.SampleSelection(model, oversample=0)


def test_guide_judges_score_nearness_to_the_prototype_and_novelty_and_select_by_it(strokes):
    net = FeatureNet(num_classes=3)
    guided = C.attach_guide(C.new_context_gan(C.ContextConfig(width=8), seed=0), net)
    support = TaskSampler(strokes, strokes.unseen_classes, seed=0).sample(1, 3, 5).support[0]
    drawn = C.adapt_and_sample(guided, support, steps=2, n=12, seed=5)
    scores = C.guide_scores(guided, support, drawn)
    features = lambda x: torch.nn.functional.normalize(net.body(x), dim=1)
    with torch.no_grad():
        for c in range(3):  # minus the squared distance to the mean normalised feature of the class's shots
            expected = -(features(drawn[c]) - features(support[c]).mean(0)).pow(2).sum(1)
            assert torch.allclose(scores[c], expected, atol=1e-5)
            to_nearest_shot = torch.cdist(features(drawn[c]), features(support[c])).pow(2).min(1).values
            novelty = C.guide_novelty_scores(guided, support[c : c + 1], drawn[c : c + 1])[0]
            assert torch.allclose(novelty, to_nearest_shot + expected, atol=1e-5)
    copies = C.guide_novelty_scores(guided, support, support)  # each shot is its own nearest shot: below 0
    assert (copies < 0).all()
    kept = C.adapt_and_select(C.SampleSelection(guided, oversample=4, judge="guide"), support, steps=2, n=3, seed=5)
    for c in range(3):
        index = [next(i for i in range(12) if torch.equal(drawn[c, i], image)) for image in kept[c]]
        dropped = [i for i in range(12) if i not in index]
        assert index == sorted(index) and scores[c, index].min() >= scores[c, dropped].max()
    with pytest.raises(
        ValueError, match=r"^Unknown selection judge 'oracle'; choose one of discriminator, guide, guide-novelty"
    ):
        C.SampleSelection(guided, oversample=2, judge="oracle")
    for judge in ("guide", "guide-novelty"):  # a model without a guide network has nothing to judge with
        with pytest.raises(ValueError, match="guide network"):
            C.SampleSelection(C.new_context_gan(C.ContextConfig(width=8), seed=0), oversample=2, judge=judge)


@pytest.mark.parametrize("judge", ["discriminator", "guide", "guide-novelty"])
def test_selection_from_uint8_shots_keeps_what_signed_shots_keep(strokes, judge):
    guided = C.attach_guide(C.new_context_gan(C.ContextConfig(width=8), seed=0), FeatureNet(num_classes=3))
    raw = TaskSampler(strokes, strokes.unseen_classes, seed=0).sample(1, 3, 5).support_index[0]
    shots = strokes.images[raw]  # uint8, [3, 5, 1, 28, 28]
    selection = C.SampleSelection(guided, oversample=4, judge=judge, spread=0.1)
    kept_uint8 = C.adapt_and_select(selection, shots, steps=2, n=3, seed=5)
    assert torch.equal(kept_uint8, C.adapt_and_select(selection, to_signed(shots), steps=2, n=3, seed=5))


def test_spread_out_selection_is_greedy_marginal_relevance_and_keeps_no_duplicate(strokes):
    torch.manual_seed(0)
    scores, features = torch.randn(3, 12), torch.nn.functional.normalize(torch.randn(3, 12, 4), dim=-1)
    assert torch.equal(C.keep_spread_out(scores, features, 5, 0.0), scores.topk(5, dim=1).indices)
    for c in range(3):  # the plain greedy loop: the next kept sample maximises score + spread * distance to the kept
        kept = [int(scores[c].argmax())]
        while len(kept) < 5:
            gain = lambda i: scores[c, i] + 2.0 * min((features[c, i] - features[c, j]).pow(2).sum() for j in kept)
            kept.append(max((i for i in range(12) if i not in kept), key=gain))
        assert C.keep_spread_out(scores, features, 5, 2.0)[c].tolist() == kept
    twins = torch.cat([features[:, :1], features[:, :1], features[:, 2:]], dim=1)  # samples 0 and 1 identical
    top_two = torch.tensor([[5.0, 4.9] + [0.0] * 10] * 3)
    assert C.keep_spread_out(top_two, twins, 2, 0.0).tolist() == [[0, 1]] * 3
    assert 1 not in C.keep_spread_out(top_two, twins, 2, 100.0)[0].tolist()  # a near-duplicate loses to a far sample
    guided = C.attach_guide(C.new_context_gan(C.ContextConfig(width=8), seed=0), FeatureNet(num_classes=3))
    support = TaskSampler(strokes, strokes.unseen_classes, seed=0).sample(1, 3, 5).support[0]
    selection = C.SampleSelection(guided, oversample=3, judge="guide-novelty", spread=1.0)
    kept = C.adapt_and_select(selection, support, steps=1, n=4, seed=2)
    drawn = C.adapt_and_sample(guided, support, steps=1, n=12, seed=2)  # the same draw, judged and spread step by step
    with torch.no_grad():
        features = C.class_guide_features(guided, drawn)
    index = C.keep_spread_out(C.guide_novelty_scores(guided, support, drawn), features, 4, 1.0).sort(dim=1).values
    assert kept.shape == (3, 4, 1, 28, 28) and torch.equal(kept, drawn[torch.arange(3)[:, None], index])
    with pytest.raises(ValueError, match="spread must be >= 0"):
        C.SampleSelection(guided, oversample=2, spread=-1.0)
    with pytest.raises(ValueError, match="spread=1.0 needs a model with a guide network"):
        C.SampleSelection(C.new_context_gan(C.ContextConfig(width=8), seed=0), oversample=2, spread=1.0)


def test_scaled_sampling_draws_the_same_noise_scaled_and_keeps_the_adapted_context(strokes):
    model = C.new_context_gan(C.ContextConfig(width=8), seed=0)
    support = TaskSampler(strokes, strokes.unseen_classes, seed=0).sample(1, 3, 5).support[0]
    contexts = C.adapt_contexts(model, support, steps=2, seed=5)
    plain = C.adapt_and_sample(model, support, steps=2, n=4, seed=5)
    assert torch.equal(C.adapt_and_sample_scaled(C.ScaledSampling(model, 1.0), support, 2, 4, seed=5), plain)
    wider = C.adapt_and_sample_scaled(C.ScaledSampling(model, 2.5), support, 2, 4, seed=5)
    z = C.class_noise(5, 3, (4, model.config.z_dim), "sample", model.device)  # the noise sample_contexts draws
    g_params = model.generator_params(model.test_params())
    by_hand = torch.stack([C.generate(model, g_params, 2.5 * z[c], contexts[c]) for c in range(3)])
    assert torch.allclose(wider, by_hand, atol=1e-6) and not torch.allclose(wider, plain)
    selection = C.SampleSelection(model, oversample=2)
    assert torch.equal(
        C.adapt_and_sample_scaled(C.ScaledSampling(selection, 2.5), support, 2, 4, seed=5),
        C.adapt_and_select(selection, support, 2, 4, seed=5, scale=2.5),
    )
    with pytest.raises(ValueError, match="scale"):
        C.ScaledSampling(model, 0.0)
    with pytest.raises(TypeError, match="ContextMetaGAN or a SampleSelection"):
        C.ScaledSampling(model.generator, 2.0)
    with pytest.raises(ValueError, match="scale"):
        C.sample_contexts(model, contexts, 4, scale=-1.0)


def test_per_shot_contexts_adapt_one_context_to_each_shot_and_draw_from_them_in_turn(strokes):
    model = C.new_context_gan(C.ContextConfig(width=8), seed=0)
    support = TaskSampler(strokes, strokes.unseen_classes, seed=0).sample(1, 2, 3).support[0]  # [2 classes, 3 shots]
    images = C.adapt_per_shot_and_sample(C.PerShotContexts(model), support, steps=2, n=5, seed=4)
    assert images.shape == (2, 5, 1, 28, 28)
    # by hand: shot k of class c is 1-shot task 3c + k; sample j of class c is shot (j mod 3)'s (j // 3)-th draw
    contexts = C.adapt_contexts(model, support.reshape(6, 1, 1, 28, 28), steps=2, seed=4)
    assert not torch.allclose(contexts[0], contexts[1])  # each shot its own context
    z = C.class_noise(4, 6, (2, model.config.z_dim), "sample", model.device)
    g_params = model.generator_params(model.test_params())
    by_hand = torch.stack(
        [
            torch.stack(
                [
                    C.generate(model, g_params, z[3 * c + j % 3][j // 3 : j // 3 + 1], contexts[3 * c + j % 3])[0]
                    for j in range(5)
                ]
            )
            for c in range(2)
        ]
    )
    assert torch.allclose(images, by_hand, atol=1e-6)
    with pytest.raises(TypeError, match="needs a ContextMetaGAN"):
        C.PerShotContexts(model.generator)
    with pytest.raises(ValueError, match="support images shape"):
        C.adapt_per_shot_and_sample(C.PerShotContexts(model), support[0], steps=2, n=5)


def test_mixed_shot_contexts_draw_each_sample_from_a_convex_mix_of_the_shots_contexts(strokes):
    model = C.new_context_gan(C.ContextConfig(width=8), seed=0)
    support = TaskSampler(strokes, strokes.unseen_classes, seed=0).sample(1, 2, 3).support[0]  # [2 classes, 3 shots]
    images = C.adapt_mixed_shots_and_sample(C.MixedShotContexts(model, 0.5, scale=1.5), support, steps=2, n=4, seed=4)
    assert images.shape == (2, 4, 1, 28, 28)
    # by hand: the 6 one-shot contexts, sample j of class c from its weights' mix of class c's 3, noise scaled by 1.5
    contexts = C.adapt_contexts(model, support.reshape(6, 1, 1, 28, 28), steps=2, seed=4).view(2, 3, -1)
    weights = C.mixing_weights(4, 2, 4, 3, 0.5, model.device)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 4)) and (weights > 0).all()
    z = C.class_noise(4, 2, (4, 1, model.config.z_dim), "sample", model.device) * 1.5
    g_params = model.generator_params(model.test_params())
    by_hand = torch.stack(
        [
            torch.stack([C.generate(model, g_params, z[c, j], weights[c, j] @ contexts[c])[0] for j in range(4)])
            for c in range(2)
        ]
    )
    assert torch.allclose(images, by_hand, atol=1e-5)
    # a low temperature puts each sample on one shot's context, a high one on their mean
    assert C.mixing_weights(4, 2, 4, 3, 1e-3, model.device).amax(-1).min() > 0.999
    assert torch.allclose(C.mixing_weights(4, 2, 4, 3, 1e3, model.device), torch.full((2, 4, 3), 1 / 3), atol=1e-2)
    with pytest.raises(TypeError, match="needs a ContextMetaGAN"):
        C.MixedShotContexts(model.generator, 1.0)
    for bad in ({"temperature": 0.0}, {"temperature": 1.0, "scale": -1.0}):
        with pytest.raises(ValueError, match="temperature|scale"):
            C.MixedShotContexts(model, **bad)
    with pytest.raises(ValueError, match="support images shape"):
        C.adapt_mixed_shots_and_sample(C.MixedShotContexts(model, 1.0), support[0], steps=2, n=4)


def test_the_pair_discriminator_loss_is_the_gan_loss_plus_its_r1_penalty_and_a_step_trains_it(strokes):
    model = C.new_context_gan(C.ContextConfig(width=8, r1=3.0, tasks=2, shots=2, queries=2), seed=0)
    critic = lambda pairs: functional_call(model.discriminator, model.d_params, (pairs,))
    g = torch.Generator().manual_seed(0)
    real, fake = torch.rand(4, 2, 28, 28, generator=g) * 2 - 1, torch.rand(4, 2, 28, 28, generator=g) * 2 - 1
    expected = losses.discriminator_loss(critic(real), critic(fake)) + 3.0 / 2 * losses.r1_penalty(critic, real)
    torch.testing.assert_close(C.discriminator_loss_r1(model, real, fake), expected)
    assert losses.r1_penalty(critic, real) > 0
    before = {k: v.detach().clone() for k, v in model.d_params.items()}
    C.ContextTrainer(model, TaskSampler(strokes, strokes.seen_classes, seed=0)).step()
    assert all(not torch.equal(before[k], model.d_params[k]) for k in before)  # every weight of D moved


@pytest.mark.parametrize("rule", sorted(C.LEARNED_RATE_RULES))
def test_learned_rates_are_clamped_at_zero_after_a_meta_step(strokes, rule):
    config = C.ContextConfig(rule=rule, width=8, tasks=2, shots=2, queries=2, inner_samples=4, outer_samples=4)
    model = C.new_context_gan(config, seed=0)
    with torch.no_grad():  # rates a hair above zero: Adam's first step (about meta_lr per entry) pushes some below
        model.meta_params["rates"].fill_(1e-9)
    C.ContextTrainer(model, TaskSampler(strokes, strokes.seen_classes, seed=0)).step()
    rates = model.meta_params["rates"]
    assert (rates >= 0).all() and (rates == 0).any() and (rates > 1e-9).any()


def test_every_named_rule_has_its_outer_step_and_no_step_is_unnamed():
    assert tuple(C.OUTER_RULES_DISPATCH) == C.OUTER_RULES
    assert set(M.OUTER_STEPS) == set(M.METHODS)


def test_judges_spread_filter_and_mixing_refuse_inputs_they_cannot_score(strokes):
    guided = C.attach_guide(C.new_context_gan(C.ContextConfig(width=8), seed=0), FeatureNet(num_classes=3))
    support = TaskSampler(strokes, strokes.unseen_classes, seed=0).sample(1, 3, 5).support[0]  # [3, 5, 1, 28, 28]
    for judge in C.SELECTION_JUDGES.values():
        with pytest.raises(ValueError, match=r"^samples.shape=\(2, 4, 1, 28, 28\) is not accepted: .*per class"):
            judge(guided, support, support[:2, :4])  # samples for 2 classes, shots for 3: zip would drop one
        with pytest.raises(ValueError, match=r"^samples range=.* is not accepted: .* must be within \[-1, 1\]"):
            judge(guided, support, (support + 1) * 127.5)  # 0-255 floats
        uint8 = ((support + 1) * 127.5).round().to(torch.uint8)
        assert torch.allclose(judge(guided, uint8, support), judge(guided, to_signed(uint8), support))
    scores, features = torch.randn(3, 6), torch.randn(3, 6, 4)
    with pytest.raises(ValueError, match=r"^n=7 is not accepted: n must be at most the 6 samples to choose from"):
        C.keep_spread_out(scores, features, 7, 0.0)  # it returned sample 0 again once all six were taken
    with pytest.raises(ValueError, match=r"^n=0 is not accepted: n must be a positive integer"):
        C.keep_spread_out(scores, features, 0, 0.0)
    with pytest.raises(ValueError, match=r"^spread=-1.0 is not accepted"):
        C.keep_spread_out(scores, features, 2, -1.0)
    with pytest.raises(ValueError, match=r"^temperature=0.0 is not accepted: temperature must be"):
        C.mixing_weights(0, 2, 4, 3, 0.0)  # it returned NaN weights
    selection = C.SampleSelection(guided, oversample=4)
    with pytest.raises(ValueError, match=r"^n=-1 is not accepted"):  # was reported as the oversampled n=-4
        C.adapt_and_select(selection, support, steps=1, n=-1)
