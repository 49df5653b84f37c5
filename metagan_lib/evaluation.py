"""Few-shot evaluation: a feature network trained on seen classes only, and the metrics.

No downloaded weights: the feature space is a small convolutional classifier trained on the
**seen** classes (cross-entropy); its L2-normalised penultimate layer embeds images, and its
quality is reported as prototype-classifier accuracy on **unseen** classes.

Metrics (all on features ``[n, d]``):

* :func:`frechet_distance` between two sets (Gaussian fit), as FID does with Inception features;
* :func:`precision_recall` with k-NN manifolds (Kynkäänniemi et al. 2019), and :func:`coverage` (Naeem et al. 2020);
* :func:`mean_pairwise_distance` (diversity);
* :func:`class_fidelity`: share of generated images whose nearest class prototype is their own class;
* :func:`copy_score`: how much more often than a new real image a generated image lies next to a shot (1 = new
instances, flagged above 1.5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import scipy.stats
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import checks, seeds
from .artifacts import load_or_build_module, seen_classes_key
from .data import ImageDataset
from .images import check_image_batch, to_signed
from .runtime import choose_device
from .tasks import TaskSampler

FEATURE_WIDTH = 32  # the scoring feature network's channels (FeatureNet's default width)


class FeatureNet(nn.Module):
    """Three conv blocks (3x3, GroupNorm, ReLU, 2x2 max-pool): ``[B, 1, 28, 28]`` -> features ``[B, dim]``, plus a
    classifier head."""

    def __init__(self, num_classes: int, width: int = FEATURE_WIDTH, dim: int = 128):
        checks.positive_int("num_classes", num_classes)
        checks.conv_width("width", width)
        checks.positive_int("dim", dim)
        super().__init__()
        blocks, channels = [], 1
        for _ in range(3):
            blocks += [nn.Conv2d(channels, width, 3, padding=1), nn.GroupNorm(8, width), nn.ReLU(), nn.MaxPool2d(2)]
            channels = width
        self.body = nn.Sequential(*blocks, nn.Flatten(), nn.Linear(width * 3 * 3, dim))
        self.head = nn.Linear(dim, num_classes)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised features ``[B, dim]`` of images in [-1, 1]."""
        return F.normalize(self.body(images), dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.body(images)))


def train_feature_net(
    dataset: ImageDataset,
    steps: int,
    *,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    width: int = FEATURE_WIDTH,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> FeatureNet:
    """Train a :class:`FeatureNet` of ``width`` channels to classify the **seen** classes only (unseen images never
    enter)."""
    device = choose_device(device)
    images, labels = dataset.subset(dataset.seen_classes)
    remap = torch.full((dataset.num_classes,), -1, dtype=torch.int64)
    remap[dataset.seen_classes] = torch.arange(len(dataset.seen_classes))
    images, targets = images.to(device), remap[labels].to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = FeatureNet(len(dataset.seen_classes), width=width).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    generator = seeds.generator(seed, "feature-net batches", device=device)
    for _ in tqdm(range(steps), desc="feature network", disable=not progress, leave=False):
        rows = torch.randint(len(images), (batch_size,), generator=generator, device=device)
        batch = to_signed(images[rows])
        shift = torch.randint(-2, 3, (2,), generator=generator, device=device).tolist()  # light augmentation
        batch = torch.roll(batch, shifts=shift, dims=(2, 3))
        loss = F.cross_entropy(net(batch), targets[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return net.eval()


def _image_batch(images: torch.Tensor) -> None:
    """Refuse what :func:`embed` cannot read as images: not a tensor, not ``[N, 1, 28, 28]``, floats outside [-1, 1].
    (Floats in [0, 1] pass: a collapsed generator's all-white images are valid input.)"""
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            f"images must be a torch.Tensor [N, 1, 28, 28]; got {type(images).__name__} (torch.from_numpy)."
        )
    check_image_batch(images, "images")
    if images.dtype != torch.uint8:
        checks.require(images.is_floating_point(), "images.dtype", images.dtype, "uint8 (0-255) or floating point")
        checks.signed_range(images)


@torch.no_grad()
def embed(net: FeatureNet, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Features ``[N, dim]`` of images ``[N, 1, 28, 28]`` (``uint8`` or float in [-1, 1]), computed in batches."""
    _image_batch(images)
    device = next(net.parameters()).device
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size].to(device)
        out.append(net.embed(to_signed(chunk) if chunk.dtype == torch.uint8 else chunk.float()))
    return torch.cat(out)


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------


def _features(*named: tuple[str, torch.Tensor]) -> None:
    """Refuse anything but non-empty floating-point feature sets ``[n, d]`` of one width ``d``, naming the argument
    (images: embed them first)."""
    for name, x in named:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of features [n, d]; got {type(x).__name__}.")
        fix = "non-empty features [n, d], floating point (embed images first: evaluation.embed(net, images))"
        checks.require(x.ndim == 2 and x.is_floating_point() and len(x) > 0, f"{name}.shape", tuple(x.shape), fix)
    widths = {name: x.shape[1] for name, x in named}
    checks.require(len(set(widths.values())) == 1, "feature widths", widths, "one width d for every set")


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` of two feature sets ``[n, d]`` (float64 internally).

    With centred data ``A``, ``B``: ``S_a = A^T A / (n_a - 1)``, and the non-zero eigenvalues of ``S_a S_b``
    are the squared singular values of ``A B^T / sqrt((n_a - 1)(n_b - 1))``, so the trace of the matrix
    square root is that matrix's nuclear norm: an SVD, stable even when ``n < d`` or a set has collapsed.
    """
    _features(("a", a), ("b", b))
    a, b = a.double(), b.double()
    centred_a, centred_b = a - a.mean(0), b - b.mean(0)
    scale_a, scale_b = max(len(a) - 1, 1), max(len(b) - 1, 1)
    trace_root = torch.linalg.svdvals(centred_a @ centred_b.T).sum() / (scale_a * scale_b) ** 0.5
    trace_a, trace_b = centred_a.pow(2).sum() / scale_a, centred_b.pow(2).sum() / scale_b
    return float((a.mean(0) - b.mean(0)).pow(2).sum() + trace_a + trace_b - 2 * trace_root)


def _kth_neighbour_radius(x: torch.Tensor, k: int) -> torch.Tensor:
    distances = torch.cdist(x, x)
    return distances.kthvalue(k + 1, dim=1).values  # k+1: the point itself is at distance 0


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019).

    Precision: share of fake points inside the real manifold (the union of balls around each real
    point reaching its k-th nearest real neighbour); recall: share of real points inside the fake manifold.
    """
    _features(("real", real), ("fake", fake))
    checks.positive_int("k", k)
    share_inside = lambda reference, queries: _inside_balls(reference, queries, k).any(dim=1).float().mean().item()
    return share_inside(real, fake), share_inside(fake, real)


def _inside_balls(reference: torch.Tensor, queries: torch.Tensor, k: int) -> torch.Tensor:
    """``[Q, R]``: whether query ``q`` lies inside the ball around reference point ``r`` reaching ``r``'s k-th nearest
    reference neighbour."""
    radii = _kth_neighbour_radius(reference, min(k, len(reference) - 1))
    return torch.cdist(queries, reference) <= radii[None, :] * (1 + 1e-6)


def coverage(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> float:
    """Coverage (Naeem et al. 2020): share of real points (``[R, d]``) whose ball reaching their k-th nearest *real*
    neighbour holds at least one fake point (``[n, d]``).

    Unlike recall it uses the real points' balls only, so scattered fakes cannot inflate it: it rises when the fakes
    land next to many different real images, and is about 1 for a second sample of the same distribution.
    """
    _features(("real", real), ("fake", fake))
    checks.positive_int("k", k)
    return _inside_balls(real, fake, k).any(dim=0).float().mean().item()


def mean_pairwise_distance(x: torch.Tensor) -> float:
    """Mean Euclidean distance over all pairs of distinct rows of ``x [n, d]`` (diversity; 0 for one row)."""
    _features(("x", x))
    n = len(x)
    if n < 2:
        return 0.0
    return float(torch.cdist(x, x).sum() / (n * (n - 1)))


def sample_quality(net: FeatureNet, fake: torch.Tensor, real: torch.Tensor, k: int = 3) -> dict[str, float]:
    """Unconditional quality of generated images against real ones, in ``net``'s feature space.

    Args:
        fake, real: images ``[N, 1, H, W]`` (``uint8`` or float in [-1, 1]); the sets may differ in size.
    Returns:
        ``frechet_distance`` (lower is better), ``precision``, ``recall`` (k-NN manifolds) and the
        mean pairwise feature distance of each set (``diversity``, ``real_diversity``).
    """
    fake_features, real_features = embed(net, fake), embed(net, real)
    precision, recall = precision_recall(real_features, fake_features, k=k)
    return {
        "frechet_distance": frechet_distance(fake_features, real_features),
        "precision": precision,
        "recall": recall,
        "diversity": mean_pairwise_distance(fake_features),
        "real_diversity": mean_pairwise_distance(real_features),
    }


def class_fidelity(fake: torch.Tensor, fake_labels: torch.Tensor, prototypes: torch.Tensor) -> float:
    """Share of generated features whose nearest prototype (``[C, d]``, row = label) is their own label."""
    _features(("fake", fake), ("prototypes", prototypes))
    valid = isinstance(fake_labels, torch.Tensor) and not fake_labels.is_floating_point() and fake_labels.ndim == 1
    valid = (
        valid
        and len(fake_labels) == len(fake)
        and 0 <= int(fake_labels.min()) <= int(fake_labels.max()) < len(prototypes)
    )
    checks.require(valid, "fake_labels", fake_labels, f"integer class indices [{len(fake)}] in [0, {len(prototypes)})")
    nearest = torch.cdist(fake, prototypes).argmin(dim=1)
    return (nearest == fake_labels).float().mean().item()


COPY_FLAG = 1.5  # copy scores above this flag a method as copying its shots


def copy_score(fake: torch.Tensor, reference: torch.Tensor, shots: torch.Tensor) -> float:
    """How much more often than a new real image a generated image has a *shot* as its nearest neighbour.

    Each generated feature (``fake [n, d]``) finds its nearest neighbour among the shots (``[K, d]``)
    and the class's held-out reference images (``[R, d]``). A new real image of the class is as
    likely to land next to any of the ``K + R`` real images, so it picks a shot with probability
    ``K / (K + R)``; the score is the observed share over that chance level: about 1 for new
    instances of the class, up to ``(K + R) / K`` for copies of the shots. Above :data:`COPY_FLAG`
    a method is flagged as copying.
    """
    _features(("fake", fake), ("reference", reference), ("shots", shots))
    nearest_is_shot = torch.cdist(fake, torch.cat([shots, reference])).argmin(dim=1) < len(shots)
    return nearest_is_shot.float().mean().item() * (len(shots) + len(reference)) / len(shots)


def nearest_prototype_accuracy(prototypes: torch.Tensor, query: torch.Tensor, query_labels: torch.Tensor) -> float:
    """The fraction of queries ``[Q, d]`` whose nearest prototype ``[ways, d]`` (Euclidean) is their label's."""
    return (torch.cdist(query, prototypes).argmin(1) == query_labels).float().mean().item()


def prototype_accuracy(
    support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, query_labels: torch.Tensor, ways: int
) -> float:
    """Nearest-prototype classification accuracy; labels in ``0..ways-1``."""
    prototypes = torch.stack([support[support_labels == c].mean(0) for c in range(ways)])
    return nearest_prototype_accuracy(prototypes, query, query_labels)


@torch.no_grad()
def few_shot_accuracy(
    net: FeatureNet, dataset: ImageDataset, ways: int, shots: int, episodes: int, queries: int = 10, seed: int = 0
) -> list[float]:
    """Prototype-classifier accuracy of ``ways``-way ``shots``-shot episodes on **unseen** classes, one value per
    episode."""
    device = next(net.parameters()).device
    sampler = TaskSampler(dataset, dataset.unseen_classes, device=device, seed=seed)
    episode = sampler.sample(episodes, ways, shots, queries)
    labels_s = torch.arange(ways, device=device).repeat_interleave(shots)
    labels_q = torch.arange(ways, device=device).repeat_interleave(queries)
    accuracies = []
    for t in range(episodes):
        support = net.embed(episode.support[t].flatten(0, 1))
        query = net.embed(episode.query[t].flatten(0, 1))
        accuracies.append(prototype_accuracy(support, labels_s, query, labels_q, ways))
    return accuracies


# ----------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """Mean of ``n`` values with the half-width of its 95% confidence interval (Student's t)."""

    mean: float
    half_width: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.3f} ± {self.half_width:.3f}"


def mean_confidence_interval(values: list[float]) -> Estimate:
    """Mean and 95% CI half-width ``t_{n-1} * s / sqrt(n)``; ``nan`` half-width for a single value."""
    numbers = isinstance(values, (list, tuple)) and all(isinstance(v, (int, float)) for v in values)
    checks.require(numbers and len(values) > 0, "values", values, "a non-empty list of numbers (floats, not tensors)")
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return Estimate(mean, float("nan"), n)
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    t = float(scipy.stats.t.ppf(0.975, n - 1))
    return Estimate(mean, t * math.sqrt(variance / n), n)


def feature_net_key(dataset: ImageDataset, steps: int, seed: int, width: int = FEATURE_WIDTH) -> dict:
    """What determines a :func:`train_feature_net` network: steps, seed, width (named only when not
    :data:`FEATURE_WIDTH`, so earlier keys stay valid) and the dataset's seen classes and images."""
    key = {"kind": "feature-net", "steps": steps, "seed": seed, **seen_classes_key(dataset)}
    return key if width == FEATURE_WIDTH else {**key, "width": width}


def train_or_load_feature_net(
    path: Path | str,
    dataset: ImageDataset,
    steps: int,
    *,
    seed: int = 0,
    width: int = FEATURE_WIDTH,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> FeatureNet:
    """The feature network cached at ``path`` (``width`` channels, trained for ``steps`` with ``seed`` on these seen
    classes), else train and save it."""
    key = feature_net_key(dataset, steps, seed, width)
    build = lambda: train_feature_net(dataset, steps, seed=seed, width=width, device=device, progress=progress)
    return load_or_build_module(path, key, build, lambda: FeatureNet(len(dataset.seen_classes), width=width), device)
