"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) for images in [-1, 1].

Applied to real *and* generated images before the discriminator, so the generator is not
pushed to reproduce the augmentation. Every op is differentiable with respect to the images
and draws its randomness from an explicit ``torch.Generator``. Uncovered pixels become -1,
the background of these datasets, so the value range stays [-1, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BACKGROUND = -1.0


def translate(images: torch.Tensor, generator: torch.Generator, max_fraction: float = 0.125) -> torch.Tensor:
    """Shift each image ``[B, C, H, W]`` by whole pixels, up to ``max_fraction`` of its size."""
    batch, _, height, width = images.shape
    limit = int(round(max_fraction * width))
    shifts = torch.randint(-limit, limit + 1, (batch, 2), generator=generator, device=images.device)
    theta = torch.zeros(batch, 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0] = 1.0
    theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = -2.0 * shifts[:, 0].to(images.dtype) / width
    theta[:, 1, 2] = -2.0 * shifts[:, 1].to(images.dtype) / height
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    shifted = F.grid_sample(images - BACKGROUND, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return shifted + BACKGROUND


def cutout(images: torch.Tensor, generator: torch.Generator, fraction: float = 0.25) -> torch.Tensor:
    """Set a random square of side ``fraction * size`` in each image to the background."""
    batch, _, height, width = images.shape
    side = max(1, int(round(fraction * width)))
    corner_y = torch.randint(0, height - side + 1, (batch, 1, 1), generator=generator, device=images.device)
    corner_x = torch.randint(0, width - side + 1, (batch, 1, 1), generator=generator, device=images.device)
    ys = torch.arange(height, device=images.device).view(1, -1, 1)
    xs = torch.arange(width, device=images.device).view(1, 1, -1)
    inside = (ys >= corner_y) & (ys < corner_y + side) & (xs >= corner_x) & (xs < corner_x + side)
    return torch.where(inside[:, None], torch.full_like(images, BACKGROUND), images)


def diff_augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Translation then cutout, the DiffAugment policy used for small grayscale images."""
    return cutout(translate(images, generator), generator)
