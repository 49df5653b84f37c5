"""Argument checks at the public API boundary: a failure names the argument, its value and what is accepted."""

from __future__ import annotations

import math

import torch

from .images import IMAGE_SIZE, to_signed

GROUPS = 8  # GroupNorm groups of the convolutional generators: channel widths must be multiples of it


def require(condition: bool, name: str, value: object, accepted: str) -> None:
    """Raise ``ValueError("name=value is not accepted: name must be accepted.")`` unless ``condition``."""
    if not condition:
        raise ValueError(f"{name}={value!r} is not accepted: {name} must be {accepted}.")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def positive_int(name: str, value: object) -> None:
    require(_is_int(value) and value > 0, name, value, "a positive integer")


def non_negative_int(name: str, value: object) -> None:
    require(_is_int(value) and value >= 0, name, value, "an integer >= 0")


def positive(name: str, value: object) -> None:
    require(_is_real(value) and value > 0, name, value, "a finite number > 0")


def non_negative(name: str, value: object) -> None:
    require(_is_real(value) and value >= 0, name, value, "a finite number >= 0")


def adam_betas(name: str, value: object) -> None:
    pair = isinstance(value, (tuple, list)) and len(value) == 2
    require(pair and all(_is_real(b) and 0 <= b < 1 for b in value), name, value, "two numbers in [0, 1)")


def flag(name: str, value: object) -> None:
    require(isinstance(value, bool), name, value, "True or False (a string such as 'no' would count as true)")


def conv_width(name: str, value: object) -> None:
    require(
        _is_int(value) and value > 0 and value % GROUPS == 0,
        name,
        value,
        f"a positive multiple of {GROUPS} (GroupNorm groups)",
    )


def trailing_shape(name: str, tensor: torch.Tensor, tail: tuple[int, ...], shown: str) -> None:
    """Refuse ``tensor`` (naming ``shown``, the accepted shape) unless its last dimensions are ``tail``."""
    fits = tensor.dim() >= len(tail) and tuple(tensor.shape[tensor.dim() - len(tail) :]) == tail
    require(fits, f"{name}.shape", tuple(tensor.shape), shown)


def devices_match(a: torch.device | str, b: torch.device | str) -> bool:
    """Whether ``a`` and ``b`` name one device (``cuda`` without an index is the current GPU, so ``cuda`` and
    ``cuda:0`` are one device where GPU 0 is current)."""
    current = torch.cuda.current_device() if torch.cuda.is_available() else 0
    indexed = lambda d: (torch.device(d).type, current if torch.device(d).index is None else torch.device(d).index)
    return indexed(a) == indexed(b)


def same_device(name: str, device: torch.device, expected: torch.device, fix: str) -> None:
    """Raise a clear ``ValueError`` unless ``device`` is ``expected`` (:func:`devices_match`)."""
    require(devices_match(device, expected), name, str(device), f"{expected}, where the model is ({fix})")


def signed_range(images: torch.Tensor, name: str = "images") -> tuple[float, float]:
    """``(min, max)`` of float images, refused (naming the fix) unless within [-1, 1] up to rounding."""
    low, high = (images.min().item(), images.max().item()) if images.numel() else (0.0, 0.0)
    require(
        low >= -1.0 - 1e-4 and high <= 1.0 + 1e-4,
        f"{name} range",
        (round(low, 3), round(high, 3)),
        "within [-1, 1] (scale uint8-like values with x / 127.5 - 1)",
    )
    return low, high


def signed_images(images: torch.Tensor, name: str = "images", dtype: torch.dtype | None = None) -> torch.Tensor:
    """Images as float in [-1, 1], ``[..., 1, 28, 28]``: ``uint8`` (0-255) is converted; a float tensor outside
    [-1, 1] (e.g. 0-255 floats), one with no negative value (images in [0, 1], whose background would read as grey),
    one with NaN/inf, or an empty one, is refused. ``dtype``: the model's, which the images are cast to (float64
    images for a float32 network, say)."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(images).__name__}.")
    given_as_float = images.is_floating_point()
    if images.dtype == torch.uint8:
        images = to_signed(images)
    require(images.is_floating_point(), f"{name}.dtype", images.dtype, "uint8 (0-255) or floating point in [-1, 1]")
    require(images.numel() > 0, f"{name}.shape", tuple(images.shape), "non-empty")
    size = (1, IMAGE_SIZE, IMAGE_SIZE)
    require(
        tuple(images.shape[-3:]) == size, f"{name}.shape", tuple(images.shape), f"[..., 1, {IMAGE_SIZE}, {IMAGE_SIZE}]"
    )
    require(bool(torch.isfinite(images).all()), name, "<tensor with NaN or inf>", "finite")
    low, high = signed_range(images, name)
    require(
        not given_as_float or low < 0,
        f"{name} range",
        (round(low, 3), round(high, 3)),
        "signed, the background at -1: these look like images in [0, 1]; convert them with x * 2 - 1",
    )
    return images if dtype is None else images.to(dtype)
