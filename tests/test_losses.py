import math

import pytest
import torch

from metagan_lib import losses

REAL = torch.tensor([2.0, -1.0, 0.5, 3.0, -4.0], dtype=torch.float64)
FAKE = torch.tensor([-2.5, 0.0, 1.0, -0.3, 6.0], dtype=torch.float64)
D_REAL, D_FAKE = torch.sigmoid(REAL), torch.sigmoid(FAKE)


def close(a, b, tol=1e-12):
    value = lambda x: float(x.detach()) if isinstance(x, torch.Tensor) else float(x)  # no float32 round trip
    return abs(value(a) - value(b)) < tol


def test_minimax_discriminator_loss_matches_closed_form():
    expected = -(D_REAL.log() + (1 - D_FAKE).log()).mean()
    assert close(losses.discriminator_loss(REAL, FAKE), expected)


def test_generator_losses_match_closed_forms():
    assert close(losses.generator_loss_saturating(FAKE), (1 - D_FAKE).log().mean())
    assert close(losses.generator_loss_nonsaturating(FAKE), -D_FAKE.log().mean())


def test_losses_stay_finite_where_probabilities_underflow():
    extreme = torch.tensor([-500.0, 500.0])
    for value in (
        losses.discriminator_loss(extreme, extreme),
        losses.generator_loss_saturating(extreme),
        losses.generator_loss_nonsaturating(extreme),
    ):
        assert torch.isfinite(value)
    assert close(losses.generator_loss_nonsaturating(torch.tensor([-500.0])), 500.0, 1e-3)


def test_wasserstein_and_hinge_losses():
    assert close(losses.wasserstein_critic_loss(REAL, FAKE), FAKE.mean() - REAL.mean())
    assert close(losses.wasserstein_generator_loss(FAKE), -FAKE.mean())
    hinge = sum(max(0.0, 1 - r) for r in REAL.tolist()) / 5 + sum(max(0.0, 1 + f) for f in FAKE.tolist()) / 5
    assert close(losses.hinge_discriminator_loss(REAL, FAKE), hinge, 1e-9)
    assert close(losses.hinge_generator_loss(FAKE), -FAKE.mean())


def test_equilibrium_values():
    zero = torch.zeros(3)
    assert close(losses.discriminator_loss(zero, zero), 2 * math.log(2), 1e-6)
    assert close(losses.generator_loss_nonsaturating(zero), math.log(2), 1e-6)


def nonlinear_critic():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)
    ).double()


def per_sample_gradients(critic, images):
    grads = []
    for image in images:
        x = image[None].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(critic(x).sum(), x)
        grads.append(g[0])
    return torch.stack(grads)


def test_gradient_penalty_matches_a_computation_by_hand():
    critic = nonlinear_critic()
    score = lambda x: critic(x).squeeze(-1)
    real, fake = torch.randn(6, 1, 4, 4, dtype=torch.float64), torch.randn(6, 1, 4, 4, dtype=torch.float64)
    mix = torch.rand(6, dtype=torch.float64)
    interpolated = mix.view(-1, 1, 1, 1) * real + (1 - mix.view(-1, 1, 1, 1)) * fake
    norms = per_sample_gradients(score, interpolated).flatten(1).norm(dim=1)
    assert close(losses.gradient_penalty(score, real, fake, mix), ((norms - 1) ** 2).mean(), 1e-10)


def test_gradient_penalty_of_a_linear_critic_is_closed_form():
    weight = torch.randn(16, dtype=torch.float64)
    critic = lambda x: x.flatten(1) @ weight  # gradient = weight everywhere
    real, fake = torch.randn(3, 1, 4, 4, dtype=torch.float64), torch.randn(3, 1, 4, 4, dtype=torch.float64)
    penalty = losses.gradient_penalty(critic, real, fake, torch.rand(3, dtype=torch.float64))
    assert close(penalty, (weight.norm() - 1) ** 2, 1e-10)


def test_gradient_penalty_is_differentiable_in_the_critic():
    critic = nonlinear_critic()
    penalty = losses.gradient_penalty(
        lambda x: critic(x).squeeze(-1),
        torch.randn(4, 1, 4, 4, dtype=torch.float64),
        torch.randn(4, 1, 4, 4, dtype=torch.float64),
        torch.rand(4, dtype=torch.float64),
    )
    penalty.backward()
    # every weight shapes the input gradient; the last bias does not, so it gets none
    for name, p in critic.named_parameters():
        if name.endswith("weight"):
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_r1_penalty_matches_a_computation_by_hand():
    critic = nonlinear_critic()
    score = lambda x: critic(x).squeeze(-1)
    real = torch.randn(5, 1, 4, 4, dtype=torch.float64)
    expected = per_sample_gradients(score, real).flatten(1).pow(2).sum(dim=1).mean()
    assert close(losses.r1_penalty(score, real), expected, 1e-10)


def test_optimal_discriminator_identity():
    grid = torch.linspace(-10, 10, 40001, dtype=torch.float64)
    dx = float(grid[1] - grid[0])
    normal = lambda mu, s: torch.exp(-0.5 * ((grid - mu) / s) ** 2) / (s * math.sqrt(2 * math.pi))
    p_data, p_model = normal(0.0, 1.0), normal(1.5, 0.7)
    d_star = losses.optimal_discriminator(p_data, p_model)
    v_star = losses.value_function(d_star, p_data, p_model, dx)
    assert close(v_star, -math.log(4) + 2 * losses.jensen_shannon(p_data, p_model, dx), 1e-8)
    # D* beats any other discriminator, e.g. constant ones and a shifted sigmoid
    for other in (torch.full_like(grid, 0.5), torch.full_like(grid, 0.3), torch.sigmoid(-grid)):
        assert losses.value_function(other, p_data, p_model, dx) < v_star
    # the JSD of a distribution with itself is 0 and V(D*, G) = -log 4 there (D* = 1/2 everywhere)
    assert close(losses.jensen_shannon(p_data, p_data, dx), 0.0, 1e-12)
    d_half = losses.optimal_discriminator(p_data, p_data)
    assert close(losses.value_function(d_half, p_data, p_data, dx), -math.log(4), 1e-8)


@pytest.mark.parametrize("weight", [0.1, 1.0, 10.0])
def test_combined_loss_gradients_match_the_hand_derived_ones(weight):
    real = torch.tensor([1.5, -0.5, 3.0], dtype=torch.float64, requires_grad=True)
    fake = torch.tensor([-2.0, 0.0, 0.7, 4.0], dtype=torch.float64, requires_grad=True)
    grad_real, grad_fake = torch.autograd.grad(losses.combined_loss(real, fake, weight), (real, fake))
    d_real, d_fake = torch.sigmoid(real.detach()), torch.sigmoid(fake.detach())
    assert torch.allclose(grad_fake, (-(1 - d_fake) + weight * d_fake) / len(fake), atol=1e-12)
    assert torch.allclose(grad_real, -weight * (1 - d_real) / len(real), atol=1e-12)
    at_rest = torch.logit(torch.tensor([1 / (1 + weight)], dtype=torch.float64)).requires_grad_(True)
    (grad_at_rest,) = torch.autograd.grad(losses.combined_loss(real.detach(), at_rest, weight), at_rest)
    assert abs(grad_at_rest.item()) < 1e-12  # both players stop at D(G(z)) = 1 / (1 + weight)
