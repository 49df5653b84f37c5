"""Prototypical networks (Snell, Swersky & Zemel, 2017): a few-shot classifier trained episodically.

An encoder ``f`` maps images to features. For an episode of ``N`` classes with ``K`` support images each,
the prototype of class ``k`` is the mean feature of its support images, ``c_k = (1/K) sum_i f(x_{k,i})``,
and a query ``x`` is classified by a softmax over negative squared distances,
``p(y = k | x) = exp(-||f(x) - c_k||^2) / sum_j exp(-||f(x) - c_j||^2)``. Training minimises the
cross-entropy of the queries on episodes drawn from the **seen** classes only, so the encoder learns a
space in which class means separate classes it has never seen (the alternative to MAML that the source
documents name: no inner loop, the adaptation is an average).

The encoder is :class:`~metagan_lib.evaluation.FeatureNet`'s body (the same architecture the evaluation's
feature network uses, trained with cross-entropy over all seen classes instead), so the two compare like for like.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import checks
from .artifacts import load_or_build_module, seen_classes_key
from .data import ImageDataset
from .evaluation import FeatureNet
from .runtime import choose_device
from .seeds import derive_seed
from .tasks import Episode, TaskSampler


class ProtoNet(FeatureNet):
    """FeatureNet's body as the encoder; ``embed`` returns raw features (Euclidean geometry, no normalisation)."""

    def __init__(self, width: int = 32, dim: int = 128):
        super().__init__(num_classes=1, width=width, dim=dim)
        del self.head  # classified by prototypes, not by a head

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Features ``[B, dim]`` of images in [-1, 1]."""
        return self.body(images)


def prototypes(support_features: torch.Tensor) -> torch.Tensor:
    """Class means ``[N, d]`` of support features ``[N, K, d]``."""
    return support_features.mean(dim=1)


def prototype_logits(query_features: torch.Tensor, class_prototypes: torch.Tensor) -> torch.Tensor:
    """Negative squared Euclidean distances ``[Q, N]`` of queries ``[Q, d]`` to prototypes ``[N, d]``."""
    return -torch.cdist(query_features, class_prototypes).pow(2)


def episode_loss(net: ProtoNet, support: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Cross-entropy of the queries and their accuracy, for one episode: support ``[N, K, 1, 28, 28]``,
    query ``[N, Q, 1, 28, 28]`` (images in [-1, 1]; the label of row ``k`` is ``k``)."""
    ways, shots = support.shape[:2]
    features = net.embed(torch.cat([support.flatten(0, 1), query.flatten(0, 1)]))
    class_prototypes = prototypes(features[: ways * shots].view(ways, shots, -1))
    logits = prototype_logits(features[ways * shots :], class_prototypes)
    labels = torch.arange(ways, device=logits.device).repeat_interleave(query.shape[1])
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    return F.cross_entropy(logits, labels), accuracy


def training_step(net: ProtoNet, optimizer: torch.optim.Optimizer, episode: Episode) -> float:
    """One Adam step on the episode loss of a one-task :class:`~metagan_lib.tasks.Episode`; returns the loss."""
    loss, _ = episode_loss(net, episode.support[0], episode.query[0])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def train_protonet(
    dataset: ImageDataset,
    episodes: int,
    *,
    ways: int = 20,
    shots: int = 5,
    queries: int = 5,
    lr: float = 1e-3,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> ProtoNet:
    """A :class:`ProtoNet` trained on ``episodes`` ``ways``-way ``shots``-shot episodes of the **seen** classes (Adam).

    ``ways`` is capped at the number of seen classes (MNIST-style datasets have five)."""
    for name, value in (("episodes", episodes), ("ways", ways), ("shots", shots), ("queries", queries)):
        checks.positive_int(name, value)  # an episode without queries has no loss
    checks.positive("lr", lr)
    device = choose_device(device)
    sampler = TaskSampler(dataset, dataset.seen_classes, device=device, seed=derive_seed(seed, "protonet episodes"))
    ways = min(ways, sampler.num_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "protonet init"))
        net = ProtoNet().to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in tqdm(range(episodes), desc="prototypical network", disable=not progress, leave=False):
        training_step(net, optimizer, sampler.sample(1, ways, shots, queries))
    return net.eval()


def train_or_load_protonet(
    path: Path | str,
    dataset: ImageDataset,
    episodes: int,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> ProtoNet:
    """The :class:`ProtoNet` cached at ``path`` for these settings, else trained (:func:`train_protonet`) and saved."""
    key = {"kind": "protonet", "episodes": episodes, "seed": seed, **seen_classes_key(dataset)}
    build = lambda: train_protonet(dataset, episodes, seed=seed, device=device, progress=progress)
    return load_or_build_module(path, key, build, ProtoNet, device)
