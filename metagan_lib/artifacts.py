"""The artefact store: one way to write, read and reuse every cached file (trained networks, processed datasets).

Every file holds ``{"key": ..., "artefact": ...}``. :func:`load_or_build` returns the cached artefact only when
its key equals the one asked for (the caller puts in it everything that determines the artefact: config, seed,
steps, a fingerprint of the training data), plus the package version; otherwise it builds the artefact and
writes it. Files are read with ``torch.load(weights_only=True)`` (tensors and plain Python values only, so a
planted file cannot run code) and written atomically under a unique temporary name, so an interrupted write
leaves no file and two processes filling an empty cache do not collide. A file that cannot be read, or whose
contents do not fit what the caller rebuilds from them, is rebuilt with a warning that names it.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch
from torch import nn

T = TypeVar("T")


class DamagedArtifactWarning(UserWarning):
    """A cached file could not be used and is being rebuilt; the message names it."""


def fingerprint(tensor: torch.Tensor) -> str:
    """A short hash of a tensor's dtype, shape and values (keys artefacts by their training data)."""
    data = tensor.detach().cpu().contiguous()
    digest = hashlib.sha256(f"{data.dtype}{tuple(data.shape)}".encode())
    digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()[:16]


def full_key(key: dict) -> dict:
    """``key`` plus the package version: a new version never reuses an old file."""
    from . import __version__

    return {"version": __version__, **key}


def meta_training_key(kind: str, config, sampler, meta_steps: int, seed: int) -> dict:
    """Everything that determines a meta-trained model: its kind, config (a dataclass), meta-steps, seed, and its task
    sampler's images and seed."""
    return {
        "kind": kind,
        "config": asdict(config),
        "steps": meta_steps,
        "seed": seed,
        "data": fingerprint(sampler.images),
        "sampler_seed": sampler.seed,
    }


def seen_classes_key(dataset) -> dict:
    """What determines a network trained on a dataset's seen classes: its name, the seen classes, images and labels."""
    return {
        "dataset": dataset.name,
        "seen_classes": dataset.seen_classes.tolist(),
        "data": fingerprint(dataset.images),
        "labels": fingerprint(dataset.labels),
    }


def load_or_build_module(
    path: Path | str,
    key: dict,
    build: Callable[[], nn.Module],
    empty: Callable[[], nn.Module],
    device: torch.device | str = "cpu",
) -> nn.Module:
    """:func:`load_or_build` for a network stored by its weights: ``empty()`` makes one of the right shape to load
    them into; returned in eval mode."""

    def from_payload(state: dict) -> nn.Module:
        module = empty().to(device)
        module.load_state_dict(state)
        return module.eval()

    return load_or_build(
        path, key, build, to_payload=lambda module: module.state_dict(), from_payload=from_payload, device=device
    )


def save_payload(payload: dict, path: Path | str) -> Path:
    """``torch.save`` ``payload`` to ``path`` atomically, through a unique temporary file in the same folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_payload(path: Path | str, device: torch.device | str = "cpu") -> dict | None:
    """The payload at ``path``; ``None`` when there is no file, or (with a warning naming it) when it is damaged."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as cause:  # truncated, garbage, or holding objects other than tensors and plain values
        return _damaged(path, cause)
    if not isinstance(payload, dict) or set(payload) != {"key", "artefact"}:
        return _damaged(path, ValueError("not an artefact-store file"))
    return payload


def _damaged(path: Path, cause: Exception) -> None:
    if isinstance(cause, pickle.UnpicklingError):
        reason = "not a torch file of tensors and plain values"
    else:
        reason = f"{type(cause).__name__}: {(str(cause).strip().splitlines() or [''])[0][:200]}"
    warnings.warn(
        f"The cached file {path} cannot be used ({reason}); rebuilding it.", DamagedArtifactWarning, stacklevel=3
    )
    return None


def is_current(path: Path | str, key: dict) -> bool:
    """Whether ``path`` holds a readable artefact with ``key`` (see :func:`load_or_build`)."""
    payload = read_payload(path)
    return payload is not None and payload["key"] == full_key(key)


def load_or_build(
    path: Path | str,
    key: dict,
    build: Callable[[], T],
    *,
    to_payload: Callable[[T], Any],
    from_payload: Callable[[Any], T],
    device: torch.device | str = "cpu",
) -> T:
    """The artefact cached at ``path`` under ``key``, else ``build()``, written there.

    ``to_payload`` turns the artefact into tensors and plain values; ``from_payload`` turns them back.
    """
    path = Path(path)
    payload = read_payload(path, device)
    if payload is not None and payload["key"] == full_key(key):
        try:
            return from_payload(payload["artefact"])
        except Exception as cause:  # readable, but not what the caller can rebuild from
            _damaged(path, cause)
    artefact = build()
    save_payload({"key": full_key(key), "artefact": to_payload(artefact)}, path)
    return artefact
