"""The image convention shared by every module: 28x28 grayscale, stored as ``uint8`` in [0, 255],
trained on as float in [-1, 1] (the generators' ``tanh`` range), shown in [0, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IMAGE_SIZE = 28


def to_signed(images: torch.Tensor) -> torch.Tensor:
    """``uint8`` images in [0, 255] -> float in [-1, 1] (the generator's ``tanh`` range)."""
    return images.float().div(127.5).sub(1.0)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1] -> [0, 1] for display."""
    return images.add(1.0).div(2.0).clamp(0.0, 1.0)


def check_image_batch(images: torch.Tensor, what: str = "images") -> None:
    """Raise a clear ``ValueError`` unless ``images`` is ``[B, 1, 28, 28]``."""
    if images.ndim != 4 or tuple(images.shape[1:]) != (1, IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(
            f"{what} must have shape [batch, 1, {IMAGE_SIZE}, {IMAGE_SIZE}] (grayscale, "
            f"{IMAGE_SIZE}x{IMAGE_SIZE}); got {list(images.shape)}. Resize with "
            f"torch.nn.functional.interpolate(x, size=({IMAGE_SIZE}, {IMAGE_SIZE}), mode='area')."
        )


def fit_to_canvas(ink: torch.Tensor, size: int = IMAGE_SIZE, box: int = 20) -> torch.Tensor:
    """Crop a float ink image ``[H, W]`` in [0, 1] to its bounding box, scale its longer side
    to ``box`` pixels (aspect kept, as MNIST does) and centre it on a ``size`` x ``size`` canvas."""
    rows = torch.nonzero(ink.amax(dim=1) > 0.05).flatten()
    cols = torch.nonzero(ink.amax(dim=0) > 0.05).flatten()
    canvas = torch.zeros(size, size, device=ink.device)
    if len(rows) == 0:
        return canvas
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = crop.shape
    scale = box / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    resized = F.interpolate(
        crop[None, None], size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False
    )[0, 0]
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = resized.clamp(0, 1)
    return canvas


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] -> ``uint8`` in [0, 255] (rounded)."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)
