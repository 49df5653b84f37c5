"""The one seed rule: every random stream gets its own seed, derived from a parent seed and labels.

``derive_seed(seed, "adapt", c)`` names the stream (what it draws, for which class or episode);
two different label tuples give unrelated seeds, so streams never overlap the way ``seed + 1``
style arithmetic makes them (class ``c``'s sampling seed ``seed + c + 1`` was class ``c + 1``'s
adaptation seed). The hash is ``blake2b`` of the labels' ``repr``: stable across runs, processes
and ``PYTHONHASHSEED``.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *labels: int | str) -> int:
    """A child seed in ``[0, 2**63)`` for the stream named by ``labels`` under ``seed``."""
    text = repr((int(seed), *labels)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def generator(seed: int, *labels: int | str, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with :func:`derive_seed` ``(seed, *labels)``."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, *labels))


def class_noise(
    seed: int, classes: int, shape: tuple[int, ...], stream: str, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Standard normal noise ``[classes, *shape]``; class ``c`` draws from ``derive_seed(seed, stream, c)``.

    A class's noise depends on its index, not on how many classes are processed together.
    """
    return torch.stack(
        [
            torch.randn(*shape, generator=generator(seed, stream, c, device=device), device=device)
            for c in range(classes)
        ]
    )
