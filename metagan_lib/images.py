"""The image convention shared by every module: 28x28 grayscale, stored as ``uint8`` in [0, 255],
trained on as float in [-1, 1] (the generators' ``tanh`` range), shown in [0, 1]."""

from __future__ import annotations

import torch

IMAGE_SIZE = 28


def to_signed(images: torch.Tensor) -> torch.Tensor:
    """``uint8`` images in [0, 255] -> float in [-1, 1] (the generator's ``tanh`` range)."""
    return images.float().div(127.5).sub(1.0)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1] -> [0, 1] for display."""
    return images.add(1.0).div(2.0).clamp(0.0, 1.0)
