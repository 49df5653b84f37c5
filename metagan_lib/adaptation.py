"""Test time for a whole-network meta-GAN: adapt the meta-initialisation to K shots of new classes, then sample.

Adaptation is the meta-training inner loop (:func:`metagan_lib.meta.inner_adapt`) without
meta-gradients. All noise comes from :func:`metagan_lib.seeds.class_noise`: class ``c`` adapts
with its ``"adapt"`` stream and samples with its ``"sample"`` stream, so a class's images do not
depend on which other classes are adapted with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.func import functional_call, vmap

from . import checks
from .images import check_image_batch
from .meta import MetaGAN, Params, inner_adapt
from .seeds import class_noise


@dataclass
class AdaptedGAN:
    """Generator and discriminator parameters adapted to one class."""

    g_params: Params
    d_params: Params
    steps: int


def _dtype(meta: MetaGAN) -> torch.dtype:
    """The meta-GAN's weights' dtype (support images are cast to it)."""
    return next(iter(meta.g_params.values())).dtype


def adapt(meta: MetaGAN, support_images: torch.Tensor, steps: int, seed: int = 0) -> AdaptedGAN:
    """Adapt the meta-initialisation to ``support_images`` (``[K, 1, 28, 28]`` in [-1, 1]) with ``steps`` inner steps.

    The noise is class 0's ``"adapt"`` stream of :func:`~metagan_lib.seeds.class_noise` (as in
    :func:`adapt_and_sample_many`).
    """
    check_image_batch(support_images, "support images")
    support_images = checks.signed_images(support_images, "support images", _dtype(meta))
    checks.non_negative_int("steps", steps)
    noise = class_noise(seed, 1, (steps, 2, meta.config.fake_batch, meta.config.z_dim), "adapt", meta.device)[0]
    with torch.no_grad():
        g_params, d_params = inner_adapt(
            meta, meta.g_params, meta.d_params, support_images.to(meta.device), noise, first_order=True
        )
    return AdaptedGAN({k: v.detach() for k, v in g_params.items()}, {k: v.detach() for k, v in d_params.items()}, steps)


def adapt_and_sample_many(
    meta: MetaGAN, support_images: torch.Tensor, steps: int, n: int, seed: int = 0
) -> torch.Tensor:
    """Adapt to ``C`` classes at once (``vmap``) and sample: support ``[C, K, 1, 28, 28]`` -> ``[C, n, 1, 28, 28]``.

    Class ``c`` adapts with the ``"adapt"`` stream and samples with the ``"sample"`` stream of
    :func:`~metagan_lib.seeds.class_noise`, seeds ``derive_seed(seed, stream, c)``: no two streams overlap,
    and class 0 gets what ``sample(meta, adapt(meta, support_images[0], steps, seed), n, seed)`` gives (tested).
    """
    support_images = checks.signed_images(support_images, "support images", _dtype(meta))
    checks.require(
        support_images.ndim == 5, "support images shape", tuple(support_images.shape), "[classes, K, 1, 28, 28]"
    )
    checks.non_negative_int("steps", steps)
    checks.positive_int("n", n)
    device, classes, z_dim = meta.device, len(support_images), meta.config.z_dim
    with torch.no_grad():
        if steps > 0:
            noise = class_noise(seed, classes, (steps, 2, meta.config.fake_batch, z_dim), "adapt", device)
            g_params, _ = vmap(lambda s, z: inner_adapt(meta, meta.g_params, meta.d_params, s, z, first_order=True))(
                support_images.to(device), noise
            )
        else:
            g_params = {k: v.detach().expand(classes, *v.shape) for k, v in meta.g_params.items()}
        z = class_noise(seed, classes, (n, z_dim), "sample", device)
        return vmap(lambda p, zz: functional_call(meta.generator, p, (zz,)))(g_params, z)


def sample(meta: MetaGAN, adapted: AdaptedGAN | None, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` images ``[n, 1, 28, 28]`` from the adapted generator (the meta-initialisation when ``adapted`` is
    ``None``), from class 0's ``"sample"`` stream of :func:`~metagan_lib.seeds.class_noise`."""
    checks.positive_int("n", n)
    params = meta.g_params if adapted is None else adapted.g_params
    z = class_noise(seed, 1, (n, meta.config.z_dim), "sample", meta.device)[0]
    with torch.no_grad():
        return functional_call(meta.generator, params, (z,))
