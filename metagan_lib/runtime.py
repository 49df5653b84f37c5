"""Device choice and seeding, done once at the top of a notebook or script."""

from __future__ import annotations

import random

import numpy as np
import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def choose_device(spec: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cpu"``/``"cuda"``/``"cuda:1"`` as given.

    Raises:
        ValueError: unknown spec, or CUDA asked for where none is available.
    """
    key = spec.strip().lower()
    if key == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if key == "cpu":
        return torch.device("cpu")
    if key.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device={spec!r} was asked for but no CUDA GPU is available here; use 'cpu' or 'auto'.")
        return torch.device(key)
    raise ValueError(f"Unknown device {spec!r}; choose one of {', '.join(DEVICE_CHOICES)}.")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch, and return a fresh CPU ``torch.Generator`` with that seed."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
