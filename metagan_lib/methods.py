"""The generating methods the few-shot protocol compares, and how each turns K shots into images.

A :class:`Method` names a way to produce images of a class from its K shots; :data:`GENERATORS`
is the one dispatch from a method's ``kind`` to its generating function; :func:`generate` calls it
for all classes of an episode at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from . import checks, context, inversion, profiles, seeds, vae
from .adaptation import adapt_and_sample_many
from .augment import diff_augment
from .data import ImageDataset
from .meta import MetaGAN
from .train import GANConfig, GANRun, train_or_load

ROLES = ("meta-learner", "baseline", "reference")
# the kinds that hold a model and adapt it to the shots
GENERATIVE_KINDS = (
    "adapt",
    "context",
    "context-select",
    "context-scaled",
    "context-per-shot",
    "context-mixed-shots",
    "invert",
    "vae",
)


@dataclass(frozen=True)
class Method:
    """A way to produce images of a class from its K shots.

    ``kind`` picks the generating function (:data:`GENERATORS`): ``"adapt"`` adapts a whole
    :class:`~metagan_lib.meta.MetaGAN` (scratch, fine-tuning, notebook 04's meta-GANs),
    ``"context"`` a :class:`~metagan_lib.context.ContextMetaGAN`'s context (``"context-select"``: then keeps the
    samples its pair discriminator or guide network prefers, :class:`~metagan_lib.context.SampleSelection`;
    ``"context-scaled"``: either, its sampling noise scaled, :class:`~metagan_lib.context.ScaledSampling`;
    ``"context-per-shot"``: one context adapted to each shot, :class:`~metagan_lib.context.PerShotContexts`;
    ``"context-mixed-shots"``: each sample from a random mix of those, :class:`~metagan_lib.context.MixedShotContexts`),
    ``"invert"`` inverts the shots into a pretrained generator (:class:`~metagan_lib.inversion.LatentInversion`),
    ``"vae"`` encodes the shots into a VAE or VAE-GAN (:class:`~metagan_lib.vae.VAEFewShot`),
    ``"ceiling"`` returns held-out real images and ``"copy"`` the shots, repeated with augmentation.
    ``steps`` is the method's own adaptation budget (its inner steps, or inversion's and the VAE's Adam steps).
    ``compute_within``: the kind of a baseline whose adaptation compute this method's stays within (measured by
    ``tools/adaptation_compute.py``), compared with it in the verdicts; ``""`` for none.
    """

    name: str
    kind: str = "adapt"
    model: object = None
    steps: int = 0
    role: str = "baseline"
    compute_within: str = ""

    def __post_init__(self) -> None:
        if self.kind not in GENERATORS:
            raise ValueError(f"Unknown method kind {self.kind!r}; choose one of {', '.join(GENERATORS)}.")
        if self.role not in ROLES:
            raise ValueError(f"Unknown role {self.role!r}; choose one of {', '.join(ROLES)}.")
        if self.compute_within and self.compute_within not in GENERATORS:
            kinds = ", ".join(GENERATORS)
            raise ValueError(f"compute_within names a method kind, one of {kinds}; got {self.compute_within!r}.")
        if self.kind in GENERATIVE_KINDS and self.model is None:
            raise ValueError(f"Method {self.name!r} of kind {self.kind!r} needs a model.")
        expected = MODEL_TYPES.get(self.kind)
        if expected is not None and not isinstance(self.model, expected):
            raise TypeError(
                f"Method {self.name!r} of kind {self.kind!r} needs a {expected.__name__} as its model, got "
                f"{type(self.model).__name__}; pass the model that kind adapts, or choose the kind that fits the model."
            )


def pretrained_gan_job(profile: str, dataset_name: str, seed: int = 0) -> tuple[Path, GANConfig]:
    """Cache path and config of the baselines' pretrained GAN: notebook 02's long run (the non-saturating
    convolutional GAN, ``long_steps`` generator steps on the seen classes). Notebook 02 trains it, notebook 06 loads it
    (or trains it, when 02 has not run)."""
    steps = profiles.settings("02", profile)
    config = GANConfig(
        architecture="conv", steps=steps.long_steps, batch_size=steps.batch_size, sample_every=steps.long_steps // 6
    )
    return profiles.artifact_path(profile, dataset_name, seed, "02_conv_gan_long"), config


def pretrain_on_seen(
    dataset: ImageDataset, config: GANConfig, path: Path, *, seed: int = 0, device: torch.device | str = "cpu"
) -> GANRun:
    """The baselines' starting point: one GAN trained (or loaded from ``path``) on the seen classes only."""
    images, _ = dataset.subset(dataset.seen_classes)
    return train_or_load(path, images, config, seed=seed, device=device, description="pretraining on seen classes")


def context_method(name: str, model: context.ContextMetaGAN, dataset_name: str) -> Method:
    """A context meta-GAN as notebook 06 tests it on ``dataset_name``: adapted for
    :func:`~metagan_lib.context.chosen_test_steps`, or, for the fifth learner on a dataset whose validation adopted
    a sample filter (:func:`~metagan_lib.context.chosen_test_filter`), for the filter's steps, its samples filtered."""
    test_filter = context.chosen_test_filter(model.config, dataset_name)
    if test_filter is None:
        steps = context.chosen_test_steps(model.config, dataset_name)
        return Method(name, kind="context", model=model, steps=steps, role="meta-learner")
    return Method(
        name, kind="context-select", model=test_filter.selection(model), steps=test_filter.steps, role="meta-learner"
    )


def context_methods(name: str, model: context.ContextMetaGAN, dataset_name: str) -> list[Method]:
    """:func:`context_method`, then, for the fifth learner on a dataset where that spends more adaptation compute
    than latent inversion, its test setting within inversion's compute
    (:func:`~metagan_lib.context.within_inversion_compute_filter`), named ``"<name>, within inversion's compute"``."""
    methods = [context_method(name, model, dataset_name)]
    cheaper = context.within_inversion_compute_filter(model.config, dataset_name)
    if cheaper is not None:
        methods.append(
            Method(
                f"{name}, within inversion's compute",
                kind="context-select",
                model=cheaper.selection(model),
                steps=cheaper.steps,
                role="meta-learner",
                compute_within="invert",
            )
        )
    return methods


def _copy_shots(
    method: Method, shots: torch.Tensor, ceiling: torch.Tensor, n: int, steps: int, seed: int
) -> torch.Tensor:
    classes, k = shots.shape[:2]
    repeats = shots[:, torch.arange(n, device=shots.device) % k].flatten(0, 1)
    augmented = diff_augment(repeats, seeds.generator(seed, "augment", device=shots.device))
    return augmented.view(classes, n, *shots.shape[2:])


def held_out_images(ceiling: torch.Tensor | None, n: int) -> torch.Tensor:
    """The first ``n`` of each class's held-out real images ``[C, M, ...]`` -> ``[C, n, ...]`` (the ceiling method)."""
    if ceiling is None:
        raise ValueError("The ceiling method needs held-out real images; pass them as ceiling [C, M, 1, 28, 28].")
    checks.positive_int("n", n)
    checks.require(n <= ceiling.shape[1], "n", n, f"at most the {ceiling.shape[1]} held-out images per class given")
    return ceiling[:, :n]


# the type of model each generative kind adapts (checked when a Method is made)
MODEL_TYPES: dict[str, type] = {
    "adapt": MetaGAN,
    "context": context.ContextMetaGAN,
    "context-select": context.SampleSelection,
    "context-scaled": context.ScaledSampling,
    "context-per-shot": context.PerShotContexts,
    "context-mixed-shots": context.MixedShotContexts,
    "invert": inversion.LatentInversion,
    "vae": vae.VAEFewShot,
}

GENERATORS: dict[str, Callable[..., torch.Tensor]] = {
    "adapt": lambda method, shots, ceiling, n, steps, seed: adapt_and_sample_many(
        method.model, shots, steps, n, seed=seed
    ),
    "context": lambda method, shots, ceiling, n, steps, seed: context.adapt_and_sample(
        method.model, shots, steps, n, seed=seed
    ),
    "context-select": lambda method, shots, ceiling, n, steps, seed: context.adapt_and_select(
        method.model, shots, steps, n, seed=seed
    ),
    "context-scaled": lambda method, shots, ceiling, n, steps, seed: context.adapt_and_sample_scaled(
        method.model, shots, steps, n, seed=seed
    ),
    "context-per-shot": lambda method, shots, ceiling, n, steps, seed: context.adapt_per_shot_and_sample(
        method.model, shots, steps, n, seed=seed
    ),
    "context-mixed-shots": lambda method, shots, ceiling, n, steps, seed: context.adapt_mixed_shots_and_sample(
        method.model, shots, steps, n, seed=seed
    ),
    "invert": lambda method, shots, ceiling, n, steps, seed: inversion.invert_and_sample(
        method.model, shots, steps, n, seed=seed
    ),
    "vae": lambda method, shots, ceiling, n, steps, seed: vae.adapt_and_sample(
        method.model, shots, steps, n, seed=seed
    ),
    "ceiling": lambda method, shots, ceiling, n, steps, seed: held_out_images(ceiling, n),
    "copy": _copy_shots,
}


def generate(
    method: Method, shots: torch.Tensor, ceiling: torch.Tensor, n: int, steps: int | None, seed: int
) -> torch.Tensor:
    """``n`` images per class, ``[C, n, 1, 28, 28]`` in [-1, 1], from shots ``[C, K, ...]`` (all classes adapted at
    once).

    ``steps=None`` uses the method's own budget. ``ceiling`` (``[C, M, ...]``, held-out real images) is
    used by the ceiling method only (``n <= M``).
    """
    return GENERATORS[method.kind](method, shots, ceiling, n, method.steps if steps is None else steps, seed)


def replace_diverged(images: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Images whose adaptation diverged (non-finite pixels) become blank (-1) and count against the method;
    returns the images and the share that diverged."""
    bad = ~torch.isfinite(images).flatten(-3).all(dim=-1)
    blank = torch.full_like(images, -1.0)
    return torch.where(bad[..., None, None, None], blank, images), bad.float().mean().item()
