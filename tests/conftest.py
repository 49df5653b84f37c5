import os
from pathlib import Path

import pytest
import torch

from metagan_lib.data import ImageDataset, load_dataset


def shared_data_folder(name: str) -> Path:
    """``$METAGAN_DATA/<name>``, or skip the test with the reason."""
    root = os.environ.get("METAGAN_DATA")
    if not root:
        pytest.skip("METAGAN_DATA is not set; point it at a folder with omniglot/ and mnist/ (CI uses ../shared/data)")
    folder = Path(root) / name
    if not folder.exists():
        pytest.skip(f"{folder} does not exist; nothing to test {name} on")
    return folder


@pytest.fixture(autouse=True)
def same_global_rng_state_for_every_test():
    """Each test starts from the same global torch RNG state, whatever ran before it: a test that draws weights without
    its own seed (``FeatureNet(3)``, ``torch.randn``) passes or fails on its own, not on the order the tests ran in."""
    torch.manual_seed(0)


PIXEL_PER_LABEL = 30  # constant_classes: every pixel of an image of class c is 30 c


@pytest.fixture
def constant_classes():
    """A maker of datasets whose images name their class: ``constant_classes(sizes, seen)`` has ``sizes[c]`` images of
    class ``c``, every pixel at ``30 c``; the first ``seen`` classes seen, the rest unseen."""
    return _constant_classes


def _constant_classes(sizes: list[int], seen: int) -> ImageDataset:
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])
    images = (labels * PIXEL_PER_LABEL).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 28, 28).clone()
    return ImageDataset(
        name="constant classes",
        images=images,
        labels=labels,
        class_names=tuple(str(c) for c in range(len(sizes))),
        seen_classes=torch.arange(seen),
        unseen_classes=torch.arange(seen, len(sizes)),
        source="tests/conftest.py",
    )


@pytest.fixture(scope="session")
def glyphs():
    return load_dataset("glyphs")


@pytest.fixture(scope="session")
def strokes() -> ImageDataset:
    """A synthetic dataset for algorithm tests: 10 classes x 12 images ``[1, 28, 28]``; class ``c`` is a bar at row
    ``2c + 4`` plus a class-specific random mask, each image with its own pixel noise. Seen 0-5, unseen 6-9."""
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(10, 1, 28, 28, generator=g) > 0.85
    images = []
    for c in range(10):
        base = masks[c].float()
        base[:, 2 * c + 4 : 2 * c + 6, 4:24] = 1.0
        noisy = (base + 0.2 * torch.rand(12, 1, 28, 28, generator=g)).clamp(0, 1)
        images.append((noisy * 255).to(torch.uint8))
    return ImageDataset(
        name="strokes",
        images=torch.cat(images),
        labels=torch.arange(10).repeat_interleave(12),
        class_names=tuple(f"stroke {c}" for c in range(10)),
        seen_classes=torch.arange(6),
        unseen_classes=torch.arange(6, 10),
        source="tests/conftest.py",
    )
