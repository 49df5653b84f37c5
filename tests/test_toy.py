import dataclasses
import math

import torch

from metagan_lib.toy import adapt_regression, mse, query_losses, sample_sine_tasks, sine_model, train_sine


def test_sine_tasks_follow_their_formula_and_ranges():
    tasks = sample_sine_tasks(6, 4, 3, torch.Generator().manual_seed(0))
    assert tasks.x_s.shape == (6, 4, 1) and tasks.x_q.shape == (6, 3, 1)
    assert tasks.amplitude.min() >= 0.1 and tasks.amplitude.max() <= 5.0
    assert tasks.phase.min() >= 0 and tasks.phase.max() <= math.pi
    expected = tasks.amplitude[:, None, None] * torch.sin(tasks.x_q - tasks.phase[:, None, None])
    assert torch.allclose(tasks.y_q, expected)
    support = tasks.amplitude[:, None, None] * torch.sin(tasks.x_s - tasks.phase[:, None, None])
    assert torch.allclose(tasks.y_s, support)  # the support points follow the same task's curve
    assert tasks.x_s.abs().max() <= 5.0 and tasks.x_q.abs().max() <= 5.0


def test_adaptation_lowers_the_support_loss_and_vmap_equals_the_loop():
    model = sine_model(seed=0)
    params = {k: v.detach() for k, v in model.named_parameters()}
    tasks = sample_sine_tasks(5, 10, 10, torch.Generator().manual_seed(1))
    x, y = tasks.x_s[0], tasks.y_s[0]
    before = mse(model, params, x, y)
    after = mse(model, adapt_regression(model, params, x, y, inner_lr=0.01, steps=5), x, y)
    assert after < before
    batched = query_losses(model, params, tasks, 0.01, 2, first_order=True, vectorised=True)
    looped = query_losses(model, params, tasks, 0.01, 2, first_order=True, vectorised=False)
    assert torch.allclose(batched, looped, atol=1e-6)


def test_train_sine_is_repeatable_and_learns():
    model = sine_model(seed=0)
    runs = [train_sine(model, 150, meta_lr=0.01, seed=2, progress=False) for _ in range(2)]
    assert runs[0].history == runs[1].history and len(runs[0].history) == 150
    assert sum(runs[0].history[-30:]) < 0.8 * sum(runs[0].history[:30])  # the query loss after adaptation falls


def test_the_sine_meta_gradient_matches_finite_differences_and_first_order_drops_a_term():
    """Notebook 03's MAML: ``d/d theta`` of the mean query loss after two inner steps, against float64 central
    differences along random directions (second order); the first-order gradient differs from it."""
    model = sine_model(seed=0).double()
    params = {k: v.detach().double().requires_grad_(True) for k, v in model.named_parameters()}
    tasks = sample_sine_tasks(4, 5, 6, torch.Generator().manual_seed(3))
    tasks = dataclasses.replace(tasks, **{f.name: getattr(tasks, f.name).double() for f in dataclasses.fields(tasks)})
    objective = lambda p, first_order=False: query_losses(model, p, tasks, 0.02, 2, first_order).mean()
    names = list(params)
    analytic = torch.autograd.grad(objective(params), [params[k] for k in names])
    first = torch.autograd.grad(objective(params, first_order=True), [params[k] for k in names])
    g, h = torch.Generator().manual_seed(7), 1e-6
    for _ in range(3):
        direction = {k: torch.randn(params[k].shape, generator=g, dtype=torch.float64) for k in names}
        shifted = lambda sign: {k: (params[k] + sign * h * direction[k]).detach() for k in names}
        numeric = ((objective(shifted(1)) - objective(shifted(-1))) / (2 * h)).item()
        directional = sum((a * direction[k]).sum() for a, k in zip(analytic, names)).item()
        assert math.isclose(numeric, directional, rel_tol=1e-6, abs_tol=1e-9)
    assert max((a - f).abs().max().item() for a, f in zip(analytic, first)) > 1e-6
