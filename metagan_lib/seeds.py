"""Per-class noise streams: one rule for the noise a class's adaptation and sampling draw.

Class ``c`` of stream ``s`` draws from its own ``torch.Generator`` seeded with
``hash((seed, s, c)) % 2**62`` (Python hashes tuples of ints the same way in every process), so a
class's noise never depends on how many classes are processed with it and the streams of
different classes and purposes never share a generator.
"""

from __future__ import annotations

import torch


def class_noise(
    seed: int, classes: int, shape: tuple[int, ...], stream: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Normal noise ``[classes, *shape]``; class ``c`` draws from a generator seeded by ``(seed, stream, c)``."""
    return torch.stack(
        [
            torch.randn(
                *shape,
                generator=torch.Generator(device=device).manual_seed(hash((seed, stream, c)) % 2**62),
                device=device,
            )
            for c in range(classes)
        ]
    )
