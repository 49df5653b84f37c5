"""A VAE and a VAE-GAN hybrid as few-shot generators: the baselines a reviewer asks for beside the GANs.

The VAE (Kingma & Welling, 2014) maximises the evidence lower bound of each image ``x``,
``ELBO(x) = E_{q(z|x)}[log p(x|z)] - KL(q(z|x) || N(0, I))``, with the encoder's
``q(z|x) = N(mu(x), diag(exp(logvar(x))))``, the reparameterisation ``z = mu + exp(logvar / 2) * eps``, a
Bernoulli likelihood of the ink (pixels mapped to [0, 1]) and the closed-form Gaussian KL
``0.5 * sum(mu^2 + exp(logvar) - 1 - logvar)``. The decoder is notebook 02's convolutional generator.

The VAE-GAN (after Larsen et al., 2016) adds a discriminator that tells real images from reconstructions
and prior samples; the decoder also minimises the non-saturating generator loss, weighted by
``adversarial_weight`` (the VAE's blur against the GAN's sharpness).

Few-shot use (:func:`adapt_and_sample`): encode each of the K shots, refine each shot's posterior mean for
``steps`` Adam steps on its reconstruction (the method's adaptation budget; the networks stay frozen), then
decode ``z ~ N(mu_k, noise_scale^2 * sigma_k^2)`` around shot ``k``. No meta-learning: both models are trained
on the seen classes only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import checks, losses
from .artifacts import config_key, fingerprint, load_or_build_module
from .images import check_image_batch
from .inversion import decode_around, fit_latents
from .models import ADAM_BETAS, ConvDiscriminator, ConvGenerator, strided_conv_features
from .runtime import choose_device
from .seeds import derive_seed, generator


class VAE(nn.Module):
    """Encoder (two stride-2 convolutions) -> ``mu, logvar [B, z_dim]``; decoder :class:`ConvGenerator` -> [-1, 1]."""

    def __init__(self, z_dim: int = 32, width: int = 32):
        super().__init__()
        self.z_dim = z_dim
        self.encoder = nn.Sequential(*strided_conv_features(1, width), nn.Linear(2 * width * 7 * 7, 2 * z_dim))
        self.decoder = ConvGenerator(z_dim, width)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance ``[B, z_dim]`` each, of images ``[B, 1, 28, 28]`` in [-1, 1]."""
        mu, logvar = self.encoder(images).chunk(2, dim=1)
        return mu, logvar.clamp(-10.0, 10.0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Decoded images ``[B, 1, 28, 28]`` in [-1, 1] (a generator's interface: ``z -> images``)."""
        return self.decoder(z)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, diag(exp(logvar))) || N(0, I))`` per row ``[B]``."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


def reconstruction_nll(decoded: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Bernoulli negative log-likelihood (nats) per image ``[B]``; both in [-1, 1], read as ink in [0, 1]."""
    probability = ((decoded + 1) / 2).clamp(1e-6, 1 - 1e-6)
    return F.binary_cross_entropy(probability, (images + 1) / 2, reduction="none").flatten(1).sum(dim=1)


def elbo_terms(vae: VAE, images: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reconstruction NLL ``[B]``, KL ``[B]`` and the reconstructions, with noise ``eps [B, z_dim]``."""
    mu, logvar = vae.encode(images)
    decoded = vae(mu + (0.5 * logvar).exp() * eps)
    return reconstruction_nll(decoded, images), gaussian_kl(mu, logvar), decoded


@dataclass(frozen=True)
class VAEConfig:
    """Training settings; ``adversarial_weight > 0`` makes it a VAE-GAN."""

    steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-3
    z_dim: int = 32
    width: int = 32
    adversarial_weight: float = 0.0

    def __post_init__(self) -> None:
        checks.non_negative_int("steps", self.steps)
        for name in ("batch_size", "z_dim"):
            checks.positive_int(name, getattr(self, name))
        checks.conv_width("width", self.width)
        checks.positive("lr", self.lr)
        checks.non_negative("adversarial_weight", self.adversarial_weight)


def _adversarial_step(vae, critic, critic_optimizer, real, decoded, prior_noise, weight) -> torch.Tensor:
    """One discriminator step on real vs decoded and prior samples; returns the decoder's weighted adversarial loss."""
    fake = torch.cat([decoded, vae(prior_noise)])
    critic_loss = losses.discriminator_loss(critic(real), critic(fake.detach()))
    critic_optimizer.zero_grad(set_to_none=True)
    critic_loss.backward()
    critic_optimizer.step()
    return weight * losses.generator_loss_nonsaturating(critic(fake))


def training_step(
    vae: VAE,
    critic: nn.Module,
    optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
    real: torch.Tensor,
    eps: torch.Tensor,
    prior: torch.Tensor,
    adversarial_weight: float,
) -> float:
    """One Adam step on the negative ELBO of ``real`` ``[B, 1, 28, 28]`` (noise ``eps``, ``[B, z_dim]``); with
    ``adversarial_weight > 0`` first a discriminator step, then the decoder's weighted adversarial loss on the
    reconstructions and on prior samples decoded from ``prior``. Returns the negative ELBO (nats per image)."""
    optimizer, critic_optimizer = optimizers
    nll, kl, decoded = elbo_terms(vae, real, eps)
    negative_elbo = (nll + kl).mean()
    loss = negative_elbo
    if adversarial_weight > 0:
        loss = loss + _adversarial_step(vae, critic, critic_optimizer, real, decoded, prior, adversarial_weight)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return negative_elbo.item()


def new_vae(
    config: VAEConfig, seed: int = 0, device: torch.device | str = "cpu"
) -> tuple[VAE, ConvDiscriminator, tuple[torch.optim.Adam, torch.optim.Adam]]:
    """A fresh VAE, its discriminator (used when ``adversarial_weight > 0``) and their two Adam optimisers."""
    device = choose_device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "vae init"))
        vae, critic = VAE(config.z_dim, config.width).to(device), ConvDiscriminator().to(device)
    optimizers = (
        torch.optim.Adam(vae.parameters(), lr=config.lr),
        torch.optim.Adam(critic.parameters(), lr=2e-4, betas=ADAM_BETAS),
    )
    return vae, critic, optimizers


def train_vae(
    images: torch.Tensor, config: VAEConfig, *, seed: int = 0, device: torch.device | str = "cpu", progress: bool = True
) -> VAE:
    """A :class:`VAE` (or VAE-GAN) trained on images ``[N, 1, 28, 28]`` (``uint8``, or float in [-1, 1]) with Adam;
    returned in eval mode."""
    check_image_batch(images, "training images")
    images = checks.signed_images(images.to(device), "training images").float()
    vae, critic, optimizers = new_vae(config, seed, device)
    noise = generator(seed, "vae batches", device=device)
    description = "VAE-GAN" if config.adversarial_weight > 0 else "VAE"
    for _ in tqdm(range(config.steps), desc=description, disable=not progress, leave=False):
        real = images[torch.randint(len(images), (config.batch_size,), generator=noise, device=device)]
        eps, prior = torch.randn(2, config.batch_size, config.z_dim, generator=noise, device=device)
        training_step(vae, critic, optimizers, real, eps, prior, config.adversarial_weight)
    return vae.eval()


def train_or_load_vae(
    path: Path | str,
    images: torch.Tensor,
    config: VAEConfig,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> VAE:
    """The VAE cached at ``path`` for these images, settings and seed, else trained (:func:`train_vae`) and saved."""
    key = {"kind": "vae", "config": config_key(config), "seed": seed, "data": fingerprint(images)}
    build = lambda: train_vae(images, config, seed=seed, device=device, progress=progress)
    return load_or_build_module(path, key, build, lambda: VAE(config.z_dim, config.width), device)


@dataclass(frozen=True)
class VAEFewShot:
    """A trained VAE used as a few-shot generator: Adam step size of the posterior refinement, sampling noise scale."""

    vae: VAE
    noise_scale: float = 1.0
    lr: float = 0.05

    def __post_init__(self) -> None:
        checks.non_negative("noise_scale", self.noise_scale)
        checks.positive("lr", self.lr)


def encode_shots(fewshot: VAEFewShot, shots: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means (refined by ``steps`` Adam steps on the reconstruction, the VAE frozen) and standard
    deviations, ``[C, K, z_dim]`` each, of shots ``[C, K, 1, 28, 28]``."""
    vae = fewshot.vae
    flat = shots.flatten(0, 1)
    with torch.no_grad():
        mu, logvar = vae.encode(flat)
    mu = fit_latents(vae, mu, flat, reconstruction_nll, steps, fewshot.lr)
    view = lambda t: t.view(*shots.shape[:2], -1)
    return view(mu), view((0.5 * logvar).exp())


def sample_around(fewshot: VAEFewShot, mu: torch.Tensor, sigma: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` images per class ``[C, n, 1, 28, 28]``: sample ``i`` of class ``c`` decodes
    ``mu_{c, i mod K} + noise_scale * sigma_{c, i mod K} * eps``."""
    return decode_around(fewshot.vae, mu, fewshot.noise_scale * sigma, n, seed)


def adapt_and_sample(fewshot: VAEFewShot, shots: torch.Tensor, steps: int, n: int, seed: int = 0) -> torch.Tensor:
    """Encode each class's shots ``[C, K, ...]`` (``steps`` refinement steps) and decode ``n`` images per class."""
    shots = checks.signed_images(shots, "shots", next(fewshot.vae.parameters()).dtype)
    checks.require(shots.ndim == 5, "shots shape", tuple(shots.shape), "[classes, K, 1, 28, 28]")
    checks.non_negative_int("steps", steps)
    checks.positive_int("n", n)
    device = next(fewshot.vae.parameters()).device
    return sample_around(fewshot, *encode_shots(fewshot, shots.to(device), steps), n, seed)
