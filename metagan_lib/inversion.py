"""The strongest cheap non-meta baseline: invert the K shots into a pretrained generator's latent space.

For each shot ``x_k`` find ``z_k = argmin_z ||G(z) - x_k||^2`` (Adam from a random start, the
generator frozen), then sample ``G(z_k + sigma * eps)`` around the inverted latents. No
meta-learning: the generator is a GAN trained on the seen classes (notebook 02's recipe).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.func import functional_call

from . import checks
from .images import IMAGE_SIZE
from .seeds import class_noise


@dataclass(frozen=True)
class LatentInversion:
    """A pretrained generator (``z_dim`` attribute), the Adam step size and the sampling noise ``sigma``."""

    generator: nn.Module
    noise_scale: float = 0.3
    lr: float = 0.05

    def __post_init__(self) -> None:
        checks.non_negative("noise_scale", self.noise_scale)
        checks.positive("lr", self.lr)


def fit_latents(
    decoder: nn.Module,
    latents: torch.Tensor,
    targets: torch.Tensor,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    steps: int,
    lr: float,
) -> torch.Tensor:
    """``steps`` Adam steps on latents ``[B, z_dim]`` minimising ``loss(decoder(latents), targets)`` (one value per
    image ``[B]``, summed), the decoder's weights frozen (no gradient reaches them); returns the fitted latents."""
    frozen = {k: v.detach() for k, v in decoder.named_parameters()}
    latents = latents.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([latents], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            total = loss(functional_call(decoder, frozen, (latents,)), targets).sum()
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
    return latents.detach()


def squared_error(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image: ``[B, 1, 28, 28]`` twice -> ``[B]``."""
    return (images - targets).pow(2).flatten(1).mean(1)


def invert(inversion: LatentInversion, images: torch.Tensor, steps: int, seed: int = 0) -> torch.Tensor:
    """Latents ``[C, K, z_dim]`` that reconstruct images ``[C, K, 1, 28, 28]``: ``steps`` Adam steps from
    ``N(0, I)``."""
    generator = inversion.generator
    images = checks.signed_images(images, "shots", next(generator.parameters()).dtype)
    checks.require(images.ndim == 5, "shots shape", tuple(images.shape), "[classes, K, 1, 28, 28]")
    checks.non_negative_int("steps", steps)
    device = next(generator.parameters()).device
    classes, shots = images.shape[:2]
    start = class_noise(seed, classes, (shots, generator.z_dim), "invert", device).flatten(0, 1)
    fitted = fit_latents(generator, start, images.flatten(0, 1).to(device), squared_error, steps, inversion.lr)
    return fitted.view(classes, shots, -1)


@torch.no_grad()
def decode_around(
    decoder: nn.Module, latents: torch.Tensor, spread: torch.Tensor | float, n: int, seed: int = 0
) -> torch.Tensor:
    """``n`` images per class ``[C, n, 1, 28, 28]`` around latents ``[C, K, z_dim]``: sample ``i`` of class ``c``
    decodes ``z_{c, i mod K} + spread_{c, i mod K} * eps`` (``spread``: a number, or ``[C, K, z_dim]``)."""
    classes, shots, z_dim = latents.shape
    index = torch.arange(n, device=latents.device) % shots
    eps = class_noise(seed, classes, (n, z_dim), "sample", latents.device)
    spread = spread[:, index] if isinstance(spread, torch.Tensor) else spread
    z = latents[:, index] + spread * eps
    return decoder(z.flatten(0, 1)).view(classes, n, 1, IMAGE_SIZE, IMAGE_SIZE)


def sample_around(inversion: LatentInversion, latents: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` images per class ``[C, n, 1, 28, 28]``: sample ``i`` of class ``c`` is
    ``G(z_{c, i mod K} + sigma * eps)``."""
    return decode_around(inversion.generator, latents, inversion.noise_scale, n, seed)


def invert_and_sample(
    inversion: LatentInversion, shots: torch.Tensor, steps: int, n: int, seed: int = 0
) -> torch.Tensor:
    """Invert each class's shots ``[C, K, ...]`` (``steps`` Adam steps) and draw ``n`` images per class around them."""
    checks.positive_int("n", n)  # before the inversion's steps; invert checks the shots and steps
    return sample_around(inversion, invert(inversion, shots, steps, seed), n, seed)
