"""The artefact store: one way to write, read and reuse every cached file (trained networks, processed datasets).

A file is written atomically (a temporary name, then a rename), so an interrupted run never leaves half a
file; a file that cannot be read, or whose contents do not fit what the caller rebuilds from it, is an
error that names it and the fix (never a silent retrain, never a damaged file used as if it were good).
A cached file is reused only when the caller says it is current (same config, same step count).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, TypeVar

import torch

T = TypeVar("T")


def save_payload(payload: dict, path: Path | str) -> Path:
    """``torch.save`` ``payload`` to ``path`` atomically (creating its folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_payload(path: Path | str, rebuild: Callable[[dict], T], *, what: str, device: torch.device | str = "cpu",
                 error: type[Exception] = ValueError) -> T:
    """``rebuild(payload)`` of the file at ``path``; an unreadable or inconsistent file raises ``error`` naming it."""
    try:
        return rebuild(torch.load(Path(path), map_location=device, weights_only=False))
    except Exception as cause:  # torch.load and the rebuild raise many types on a damaged file
        raise error(f"The cached {what} {path} is damaged ({type(cause).__name__}: {cause}); "
                    "delete it and run again to rebuild it.") from None


def load_or_build(path: Path | str, load: Callable[[Path], T], is_current: Callable[[T], bool],
                  build: Callable[[], T], save: Callable[[T, Path], object]) -> T:
    """The artefact cached at ``path`` when ``is_current`` says it is what is asked for, else ``build()``, saved there."""
    path = Path(path)
    if path.exists():
        cached = load(path)
        if is_current(cached):
            return cached
    artefact = build()
    save(artefact, path)
    return artefact
