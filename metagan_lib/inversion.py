"""The strongest cheap non-meta baseline: invert the K shots into a pretrained generator's latent space.

For each shot ``x_k`` find ``z_k = argmin_z ||G(z) - x_k||^2`` (Adam from a random start, the
generator frozen), then sample ``G(z_k + sigma * eps)`` around the inverted latents. No
meta-learning: the generator is a GAN trained on the seen classes (notebook 02's recipe).
"""

from __future__ import annotations

from dataclasses import dataclass

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


def invert(inversion: LatentInversion, images: torch.Tensor, steps: int, seed: int = 0) -> torch.Tensor:
    """Latents ``[C, K, z_dim]`` that reconstruct images ``[C, K, 1, 28, 28]``: ``steps`` Adam steps from
    ``N(0, I)``."""
    generator = inversion.generator
    device = next(generator.parameters()).device
    frozen = {k: v.detach() for k, v in generator.named_parameters()}
    classes, shots = images.shape[:2]
    z = class_noise(seed, classes, (shots, generator.z_dim), "invert", device).flatten(0, 1).requires_grad_(True)
    targets = images.flatten(0, 1).to(device)
    optimizer = torch.optim.Adam([z], lr=inversion.lr)
    with torch.enable_grad():
        for _ in range(steps):
            loss = (functional_call(generator, frozen, (z,)) - targets).pow(2).flatten(1).mean(1).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return z.detach().view(classes, shots, -1)


@torch.no_grad()
def sample_around(inversion: LatentInversion, latents: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` images per class ``[C, n, 1, 28, 28]``: sample ``i`` of class ``c`` is
    ``G(z_{c, i mod K} + sigma * eps)``."""
    classes, shots, z_dim = latents.shape
    index = torch.arange(n, device=latents.device) % shots
    eps = class_noise(seed, classes, (n, z_dim), "sample", latents.device)
    z = latents[:, index] + inversion.noise_scale * eps
    return inversion.generator(z.flatten(0, 1)).view(classes, n, 1, IMAGE_SIZE, IMAGE_SIZE)


def invert_and_sample(
    inversion: LatentInversion, shots: torch.Tensor, steps: int, n: int, seed: int = 0
) -> torch.Tensor:
    """Invert each class's shots ``[C, K, ...]`` (``steps`` Adam steps) and draw ``n`` images per class around them."""
    shots = checks.signed_images(shots, "shots", next(inversion.generator.parameters()).dtype)
    checks.require(shots.ndim == 5, "shots shape", tuple(shots.shape), "[classes, K, 1, 28, 28]")
    checks.non_negative_int("steps", steps)
    checks.positive_int("n", n)
    return sample_around(inversion, invert(inversion, shots, steps, seed), n, seed)
