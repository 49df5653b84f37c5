"""GAN losses as small pure functions of discriminator **logits** ``l`` (``D(x) = sigmoid(l)``).

Writing ``log D = log sigmoid(l) = -softplus(-l)`` and ``log(1 - D) = -softplus(l)`` keeps every
loss finite for any logit (a probability of exactly 0 or 1 never appears). The GAN losses and
penalties return a scalar, the mean over the batch; the image distances at the end (``pyramid_distances``,
``chamfer_distance``) and ``gaussian_blur`` say their shapes.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from .images import IMAGE_SIZE

Critic = Callable[[torch.Tensor], torch.Tensor]


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Minimax discriminator loss ``L_D = -[log D(x) + log(1 - D(G(z)))]``.

    ``= softplus(-l_real) + softplus(l_fake)``; minimising it maximises ``V(D, G)``.
    """
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss_saturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """Saturating generator loss ``L_G = log(1 - D(G(z))) = -softplus(l_fake)``.

    The generator's side of the minimax game; its gradient vanishes when ``D(G(z)) -> 0``,
    i.e. exactly when the generator is bad and needs it most.
    """
    return -F.softplus(fake_logits).mean()


def generator_loss_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss ``L_G = -log D(G(z)) = softplus(-l_fake)``."""
    return F.softplus(-fake_logits).mean()


def combined_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, weight: float) -> torch.Tensor:
    """The single objective some texts write, ``L = L_G + weight * L_D`` (non-saturating ``L_G``). Descending it over
    both
    players' parameters is *not* the GAN game: per fake logit its gradient is ``-(1 - D) + weight * D``, zero at
    ``D(G(z)) = 1 / (1 + weight)`` for both players (notebook 01, section 4)."""
    return generator_loss_nonsaturating(fake_logits) + weight * discriminator_loss(real_logits, fake_logits)


def wasserstein_critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """WGAN critic loss ``E[f(G(z))] - E[f(x)]`` (the critic maximises ``E[f(x)] - E[f(G(z))]``)."""
    return fake_scores.mean() - real_scores.mean()


def wasserstein_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """WGAN generator loss ``-E[f(G(z))]``."""
    return -fake_scores.mean()


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss ``E[max(0, 1 - l_real)] + E[max(0, 1 + l_fake)]``."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def hinge_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge generator loss ``-E[l_fake]``."""
    return -fake_logits.mean()


def gradient_penalty(critic: Critic, real: torch.Tensor, fake: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """WGAN-GP penalty ``E[(||grad_x f(x_hat)||_2 - 1)^2]`` with ``x_hat = mix * real + (1 - mix) * fake``.

    Args:
        critic: images ``[B, 1, H, W]`` -> scores ``[B]``.
        real, fake: ``[B, 1, H, W]``.
        mix: ``[B]`` interpolation weights in [0, 1] (drawn by the caller from its own generator).
    """
    weights = mix.view(-1, *([1] * (real.ndim - 1)))
    interpolated = (weights * real + (1.0 - weights) * fake.detach()).requires_grad_(True)
    scores = critic(interpolated)
    (grads,) = torch.autograd.grad(scores.sum(), interpolated, create_graph=True)
    return (grads.flatten(1).norm(dim=1) - 1.0).pow(2).mean()


def r1_penalty(critic: Critic, real: torch.Tensor) -> torch.Tensor:
    """R1 penalty ``E[||grad_x D(x)||_2^2]`` on real images (Mescheder et al. 2018).

    The trainer adds ``gamma / 2`` times this to the discriminator loss.
    """
    real = real.detach().requires_grad_(True)
    (grads,) = torch.autograd.grad(critic(real).sum(), real, create_graph=True)
    return grads.flatten(1).pow(2).sum(dim=1).mean()


def optimal_discriminator(p_data: torch.Tensor, p_model: torch.Tensor) -> torch.Tensor:
    """``D*(x) = p_data(x) / (p_data(x) + p_g(x))``, the best response to a fixed generator."""
    return p_data / (p_data + p_model)


def jensen_shannon(p: torch.Tensor, q: torch.Tensor, dx: float) -> torch.Tensor:
    """Jensen-Shannon divergence of two densities tabulated on a grid with spacing ``dx``."""
    m = 0.5 * (p + q)
    kl = lambda a, b: torch.where(a > 0, a * (a / b).log(), torch.zeros_like(a)).sum() * dx
    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def value_function(d: torch.Tensor, p_data: torch.Tensor, p_model: torch.Tensor, dx: float) -> torch.Tensor:
    """``V(D, G) = E_data[log D] + E_g[log(1 - D)]`` on a grid (densities and ``D`` tabulated)."""
    tiny = torch.finfo(d.dtype).tiny  # D rounds to exactly 0 or 1 where one density is ~1e-40
    term = lambda a, b: torch.where(a > 0, a * b.clamp_min(tiny).log(), torch.zeros_like(a))
    return (term(p_data, d) + term(p_model, 1.0 - d)).sum() * dx


# Set distances (the context meta-GAN's inner and outer losses)


def pyramid_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[A, B]`` sum over scales 28/14/7 of the mean squared pixel difference between images ``a [A, 1, 28, 28]`` and
    ``b [B, ...]``."""
    total = a.new_zeros(len(a), len(b))
    for scale in (1, 2, 4):
        fa = (F.avg_pool2d(a, scale) if scale > 1 else a).flatten(1)
        fb = (F.avg_pool2d(b, scale) if scale > 1 else b).flatten(1)
        total = total + ((fa[:, None] - fb[None]) ** 2).mean(-1)
    return total


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """``images [B, C, H, W]`` convolved with a normalised Gaussian of standard deviation ``sigma`` pixels (separable,
    radius ``ceil(3 sigma)``, borders replicated, so a constant image stays constant); ``sigma = 0``: unchanged."""
    if sigma == 0:
        return images
    radius = math.ceil(3 * sigma)
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    padded = F.pad(images, (radius,) * 4, mode="replicate")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def chamfer_distance(samples: torch.Tensor, images: torch.Tensor, blur: float = 0.0) -> torch.Tensor:
    """``mean_a min_b d(a, b) + mean_b min_a d(a, b)`` (a scalar) between two sets of images, ``d`` the
    :func:`pyramid_distances` of the images after a :func:`gaussian_blur` of ``blur`` pixels."""
    for name, x in (("samples", samples), ("images", images)):
        if not (x.is_floating_point() and x.ndim == 4 and tuple(x.shape[1:]) == (1, IMAGE_SIZE, IMAGE_SIZE)):
            raise ValueError(
                f"chamfer_distance: {name} must be float images [B, 1, {IMAGE_SIZE}, {IMAGE_SIZE}] in [-1, 1]; got "
                f"{x.dtype} {list(x.shape)} (uint8 images: metagan_lib.images.to_signed(x))"
            )
    d = pyramid_distances(gaussian_blur(samples, blur), gaussian_blur(images, blur))
    return d.min(dim=1).values.mean() + d.min(dim=0).values.mean()
