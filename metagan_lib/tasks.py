"""Few-shot task sampling on the device, without a DataLoader in the hot path.

The images of the chosen classes live on the device as one ``uint8`` tensor; an episode is
drawn with a handful of tensor ops (random permutations by ``argsort`` of uniform noise) from
an explicit ``torch.Generator``, so the same seed gives the same episodes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from .data import ImageDataset
from .images import to_signed
from .runtime import choose_device


@dataclass(frozen=True)
class Episode:
    """A batch of ``T`` tasks, each ``N``-way with ``K`` support and ``Q`` query images per class.

    Attributes:
        support: float ``[T, N, K, 1, H, W]`` in [-1, 1].
        query: float ``[T, N, Q, 1, H, W]`` in [-1, 1]; never the same image as a support shot.
        classes: ``int64`` ``[T, N]``, dataset class indices.
        support_index / query_index: ``int64`` ``[T, N, K]`` / ``[T, N, Q]``, rows of the sampler's image tensor.
    """

    support: torch.Tensor
    query: torch.Tensor
    classes: torch.Tensor
    support_index: torch.Tensor
    query_index: torch.Tensor


class TaskSampler:
    """Draws N-way K-shot episodes from a fixed set of classes, all on ``device``.

    Args:
        dataset: the dataset.
        classes: class indices to draw from (e.g. ``dataset.seen_classes``).
        device: where images are stored and episodes are returned.
        seed: seed of the sampler's own generator.
    """

    def __init__(self, dataset: ImageDataset, classes: torch.Tensor, device: torch.device | str = "cpu", seed: int = 0):
        self.device = choose_device(device)
        try:
            given = torch.as_tensor(classes) if not isinstance(classes, str) else None
        except (TypeError, ValueError, RuntimeError):
            given = None
        if given is None:
            raise TypeError(f"classes must be class indices, e.g. dataset.seen_classes; got {classes!r}.")
        if given.numel() == 0:
            raise ValueError("TaskSampler needs at least one class; classes is empty.")
        if given.is_floating_point() or given.is_complex() or given.dtype == torch.bool:
            raise TypeError(f"classes must be integer class indices; got a {given.dtype} tensor ({given.tolist()}).")
        self.classes = given.to(torch.int64).flatten()
        if len(torch.unique(self.classes)) != len(self.classes):
            raise ValueError(f"classes holds duplicates ({self.classes.tolist()}); pass each class index once.")
        if self.classes.min() < 0 or self.classes.max() >= dataset.num_classes:
            raise ValueError(
                f"classes must be indices in [0, {dataset.num_classes - 1}] of {dataset.name!r}; "
                f"got min {int(self.classes.min())}, max {int(self.classes.max())}."
            )
        images, labels = dataset.subset(self.classes)
        self.images = images.to(self.device)
        counts = torch.stack([(labels == c).sum() for c in self.classes])
        self.min_count = int(counts.min())
        # padded [C, max_count] table of row indices into self.images; -1 marks padding
        table = torch.full((len(self.classes), int(counts.max())), -1, dtype=torch.int64)
        for row, c in enumerate(self.classes):
            members = torch.nonzero(labels == c).flatten()
            table[row, : len(members)] = members
        self.table = table.to(self.device)
        self.counts = counts.to(self.device)
        self.seed = seed
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.dataset_name = dataset.name

    @property
    def num_classes(self) -> int:
        """Classes the sampler draws tasks from."""
        return len(self.classes)

    def restarted(self) -> "TaskSampler":
        """The same sampler (classes, images, device, seed) at the start of its stream: the episodes a new
        ``TaskSampler`` with this seed would draw, whatever this one has drawn already. Shares the image tensors."""
        fresh = copy.copy(self)
        fresh.generator = torch.Generator(device=self.device).manual_seed(self.seed)
        return fresh

    def _check(self, ways: int, shots: int, queries: int) -> None:
        for name, value in (("ways", ways), ("shots", shots), ("queries", queries)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an integer; got {value!r}.")
        if ways < 1 or shots < 1 or queries < 0:
            raise ValueError(
                f"Need ways >= 1, shots >= 1 and queries >= 0; got ways={ways}, shots={shots}, queries={queries}."
            )
        if ways > self.num_classes:
            raise ValueError(
                f"{ways}-way tasks need {ways} classes but this sampler has {self.num_classes}; "
                "lower the number of ways."
            )
        if shots + queries > self.min_count:
            raise ValueError(
                f"K={shots} shots + {queries} query images = {shots + queries} images per class, but the smallest "
                f"class of {self.dataset_name!r} holds {self.min_count}; lower K or the number of query images."
            )

    def sample(self, tasks: int, ways: int, shots: int, queries: int = 0) -> Episode:
        """Draw ``tasks`` episodes of ``ways`` classes with ``shots`` + ``queries`` distinct images each."""
        if not isinstance(tasks, int) or isinstance(tasks, bool) or tasks < 1:
            raise ValueError(f"tasks must be a positive integer; got {tasks!r}.")
        self._check(ways, shots, queries)
        g = self.generator
        class_rows = torch.rand(tasks, self.num_classes, generator=g, device=self.device).argsort(dim=1)[:, :ways]
        width = self.table.shape[1]
        noise = torch.rand(tasks, ways, width, generator=g, device=self.device)
        valid = torch.arange(width, device=self.device) < self.counts[class_rows][..., None]
        noise = noise.masked_fill(~valid, 2.0)  # padding sorts last
        picks = noise.argsort(dim=2)[..., : shots + queries]
        rows = torch.gather(self.table[class_rows], 2, picks)  # [T, N, K+Q]
        images = to_signed(self.images[rows])  # [T, N, K+Q, 1, H, W]
        return Episode(
            support=images[:, :, :shots],
            query=images[:, :, shots:],
            classes=self.classes.to(self.device)[class_rows],
            support_index=rows[..., :shots],
            query_index=rows[..., shots:],
        )
