"""The plain GAN trainer: alternating D and G steps with optional stabilisers.

One function, :func:`train_gan`, serves every plain-GAN use in the notebooks (the MLP GAN, the
convolutional GAN and its stabilised variants, pretraining on seen classes, fine-tuning on K
shots, training from scratch on K shots). All randomness (real batches, noise, augmentation,
penalty mixing) comes from one explicit generator derived from ``seed``, so a run is repeatable.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from . import checks, losses, seeds
from .artifacts import config_key, fingerprint, is_current, load_or_build, load_stored, save_payload
from .augment import diff_augment
from .images import check_image_batch
from .models import ADAM_BETAS, build_gan
from .monitor import Monitor
from .runtime import choose_device

LossName = Literal["nonsaturating", "saturating", "wgan-gp", "hinge"]
LOSSES: dict[str, tuple[Callable[..., torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]] = {
    "nonsaturating": (losses.discriminator_loss, losses.generator_loss_nonsaturating),
    "saturating": (losses.discriminator_loss, losses.generator_loss_saturating),
    "wgan-gp": (losses.wasserstein_critic_loss, losses.wasserstein_generator_loss),
    "hinge": (losses.hinge_discriminator_loss, losses.hinge_generator_loss),
}
"""The one table from a loss name to its (discriminator loss, generator loss), both of logits."""
LOSS_NAMES = tuple(LOSSES)
HISTORY_KEYS = ("step", "d_loss", "g_loss", "d_real", "d_fake")


@dataclass(frozen=True)
class GANConfig:
    """Everything that defines a GAN run besides the data and the seed.

    Attributes:
        architecture: ``"mlp"`` or ``"conv"`` (see :mod:`metagan_lib.models`).
        z_dim, width: latent size and channel width of the networks.
        loss: ``"nonsaturating"``, ``"saturating"``, ``"wgan-gp"`` or ``"hinge"``.
        steps: generator updates.
        batch_size: images per D and per G step.
        d_steps: discriminator updates per generator update.
        lr_g, lr_d, betas: Adam settings.
        gp_weight: weight of the WGAN-GP gradient penalty (``loss="wgan-gp"`` only).
        r1_gamma: R1 penalty ``gamma / 2 * E||grad D(x)||^2`` on real images; 0 disables.
        grad_clip: maximum gradient norm for both networks; ``None`` disables.
        ema_decay: decay of the exponential moving average of generator weights; ``None`` disables.
        augment: apply differentiable augmentation (translation + cutout) to real and fake images.
        sample_every: steps between sample grids kept in the history; 0 keeps only the last.
    """

    architecture: str = "conv"
    z_dim: int = 64
    width: int = 32
    loss: LossName = "nonsaturating"
    steps: int = 1000
    batch_size: int = 64
    d_steps: int = 1
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = ADAM_BETAS
    gp_weight: float = 10.0
    r1_gamma: float = 0.0
    grad_clip: float | None = None
    ema_decay: float | None = None
    augment: bool = False
    sample_every: int = 0

    def __post_init__(self) -> None:
        if self.loss not in LOSS_NAMES:
            raise ValueError(f"Unknown loss {self.loss!r}; choose one of {', '.join(LOSS_NAMES)}.")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in (0, 1); got {self.ema_decay}.")
        checks.require(self.architecture in ("mlp", "conv"), "architecture", self.architecture, "'mlp' or 'conv'")
        checks.positive_int("z_dim", self.z_dim)
        (checks.conv_width if self.architecture == "conv" else checks.positive_int)("width", self.width)
        for name in ("batch_size", "d_steps"):
            checks.positive_int(name, getattr(self, name))
        for name in ("steps", "sample_every"):
            checks.non_negative_int(name, getattr(self, name))
        for name in ("lr_g", "lr_d"):
            checks.positive(name, getattr(self, name))
        for name in ("gp_weight", "r1_gamma"):
            checks.non_negative(name, getattr(self, name))
        checks.adam_betas("betas", self.betas)
        checks.flag("augment", self.augment)
        if self.grad_clip is not None:
            checks.positive("grad_clip", self.grad_clip)

    def replace(self, **changes) -> "GANConfig":
        return dataclasses.replace(self, **changes)


@dataclass
class GANRun:
    """A trained (or training) GAN: networks, EMA copy, loss history and sample snapshots."""

    config: GANConfig
    generator: nn.Module
    discriminator: nn.Module
    ema_generator: nn.Module | None
    step: int = 0
    history: dict[str, list[float]] = field(default_factory=dict)
    snapshots: list[tuple[int, torch.Tensor]] = field(default_factory=list)

    @property
    def sampling_generator(self) -> nn.Module:
        """The EMA generator when there is one, else the raw generator."""
        return self.ema_generator if self.ema_generator is not None else self.generator

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """``n`` images ``[n, 1, 28, 28]`` in [-1, 1] from fixed noise (same ``seed`` -> same noise)."""
        checks.positive_int("n", n)
        gen = self.sampling_generator
        device = next(gen.parameters()).device
        z = torch.randn(n, gen.z_dim, generator=seeds.generator(seed, "sample", device=device), device=device)
        return gen(z)


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * model``, parameter by parameter."""
    for ema_p, p in zip(ema.parameters(), model.parameters()):
        ema_p.lerp_(p, 1.0 - decay)


def new_run(config: GANConfig, device: torch.device | str = "cpu", seed: int = 0) -> GANRun:
    """Fresh networks for ``config`` on ``device``, initialised from ``seed``."""
    device = choose_device(device)  # a clear error for a device this machine lacks, before any tensor moves
    generator, discriminator = build_gan(config.architecture, config.z_dim, config.width, seed=seed)
    generator, discriminator = generator.to(device), discriminator.to(device)
    ema = copy.deepcopy(generator) if config.ema_decay is not None else None
    return GANRun(config=config, generator=generator, discriminator=discriminator, ema_generator=ema)


def _discriminator_objective(
    run: GANRun, real: torch.Tensor, fake: torch.Tensor, rng: torch.Generator
) -> tuple[torch.Tensor, dict[str, float]]:
    """The discriminator's loss from :data:`LOSSES`, plus WGAN-GP's or R1's penalty when configured."""
    cfg, disc = run.config, run.discriminator
    real_logits, fake_logits = disc(real), disc(fake)
    loss = LOSSES[cfg.loss][0](real_logits, fake_logits)
    if cfg.loss == "wgan-gp":
        mix = torch.rand(len(real), generator=rng, device=real.device)
        loss = loss + cfg.gp_weight * losses.gradient_penalty(disc, real, fake, mix)
    if cfg.r1_gamma > 0:
        loss = loss + 0.5 * cfg.r1_gamma * losses.r1_penalty(disc, real)
    return loss, {"d_real": real_logits.mean().item(), "d_fake": fake_logits.mean().item()}


def _update(optimizer: torch.optim.Optimizer, loss: torch.Tensor, module: nn.Module, grad_clip: float | None) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(module.parameters(), grad_clip)
    optimizer.step()


def discriminator_step(
    run: GANRun, optimizer: torch.optim.Optimizer, real: torch.Tensor, fake: torch.Tensor, rng: torch.Generator
) -> dict[str, float]:
    """One discriminator update on a real and a (detached) generated batch ``[B, 1, 28, 28]``.

    Returns ``d_loss`` and the mean logits ``d_real``, ``d_fake``.
    """
    loss, stats = _discriminator_objective(run, real, fake, rng)
    _update(optimizer, loss, run.discriminator, run.config.grad_clip)
    return {"d_loss": loss.item(), **stats}


def generator_step(
    run: GANRun, optimizer: torch.optim.Optimizer, z: torch.Tensor, augment: Callable[[torch.Tensor], torch.Tensor]
) -> float:
    """One generator update on noise ``z [B, z_dim]`` (then the EMA update); returns the generator's loss."""
    loss = LOSSES[run.config.loss][1](run.discriminator(augment(run.generator(z))))
    _update(optimizer, loss, run.generator, run.config.grad_clip)
    if run.ema_generator is not None:
        update_ema(run.ema_generator, run.generator, run.config.ema_decay)
    return loss.item()


def _record(run: GANRun, stats: dict[str, float], monitor: Monitor, fixed_z: torch.Tensor) -> None:
    """Count the step, append its numbers to the history (and TensorBoard), keep a snapshot when due."""
    run.step += 1
    for key, value in {"step": run.step, **stats}.items():
        run.history[key].append(value)
    monitor.scalars(run.step, stats)
    if run.config.sample_every and run.step % run.config.sample_every == 0:
        _snapshot(run, fixed_z)
        monitor.images("samples", run.step, run.snapshots[-1][1])


@torch.no_grad()
def _snapshot(run: GANRun, fixed_z: torch.Tensor) -> None:
    run.snapshots.append((run.step, run.sampling_generator(fixed_z).cpu()))


def _continue_or_start(run: GANRun | None, config: GANConfig, device, seed: int) -> GANRun:
    if run is None:
        run = new_run(config, device or "cpu", seed)
    elif device is not None:
        held, asked = next(run.generator.parameters()).device, choose_device(device)
        if not checks.devices_match(held, asked):
            raise ValueError(
                f"train_gan(run=..., device={device!r}): the run's networks are on {held}; drop device= to train "
                "them where they are, or move the run first (load_run(path, device))."
            )
    run.config = config
    if config.ema_decay is not None and run.ema_generator is None:
        run.ema_generator = copy.deepcopy(run.generator)
    for key in HISTORY_KEYS:
        run.history.setdefault(key, [])
    return run


def train_gan(
    images: torch.Tensor,
    config: GANConfig,
    *,
    run: GANRun | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
    description: str = "GAN",
    log_dir: str | Path | None = None,
) -> GANRun:
    """Train a GAN on ``images`` (``uint8`` or float in [-1, 1], ``[N, 1, 28, 28]``, moved to the device once): per
    step, ``config.d_steps`` :func:`discriminator_step` s, then one :func:`generator_step`; ``config.steps`` steps.

    ``run`` continues (fine-tunes) that run's networks; a fresh run is initialised from ``seed``, and all sampling
    comes from its ``"training noise"`` stream (:func:`~metagan_lib.seeds.derive_seed`). ``device``: where a fresh
    run trains (default CPU); a given run trains where its networks are (a different ``device`` is refused). With
    ``log_dir``, losses and sample grids also go to TensorBoard (:class:`~metagan_lib.monitor.Monitor`). Returns the
    run: ``history`` holds the per-step ``d_loss``, ``g_loss``, ``d_real``, ``d_fake`` (mean logits), ``snapshots``
    the pairs ``(step, samples [16, 1, 28, 28])``.
    """
    check_image_batch(images, "training images")
    run = _continue_or_start(run, config, device, seed)
    device = next(run.generator.parameters()).device
    data = checks.signed_images(images.to(device), "training images").float()  # floats must already be in [-1, 1]
    rng = seeds.generator(seed, "training noise", device=device)
    fixed_z = torch.randn(16, run.generator.z_dim, generator=rng, device=device)
    opt_g = torch.optim.Adam(run.generator.parameters(), lr=config.lr_g, betas=config.betas)
    opt_d = torch.optim.Adam(run.discriminator.parameters(), lr=config.lr_d, betas=config.betas)
    augment = (lambda x: diff_augment(x, rng)) if config.augment else (lambda x: x)
    batch = min(config.batch_size, len(data))
    noise = lambda: torch.randn(batch, run.generator.z_dim, generator=rng, device=device)
    monitor = Monitor(log_dir)
    bar = tqdm(range(config.steps), desc=description, disable=not progress, leave=False)
    for _ in bar:
        for _ in range(config.d_steps):
            real = data[torch.randint(len(data), (batch,), generator=rng, device=device)]
            with torch.no_grad():
                fake = run.generator(noise())
            stats = discriminator_step(run, opt_d, augment(real), augment(fake), rng)
        stats["g_loss"] = generator_step(run, opt_g, noise(), augment)
        _record(run, stats, monitor, fixed_z)
        if progress and run.step % 25 == 0:
            bar.set_postfix(d=f"{stats['d_loss']:.3f}", g=f"{stats['g_loss']:.3f}")
    if not run.snapshots or run.snapshots[-1][0] != run.step:
        _snapshot(run, fixed_z)
    monitor.close()
    return run


def save_run(run: GANRun, path: str | Path) -> Path:
    """Write a run (config, weights, EMA weights, history, snapshots) to ``path`` (no cache key: :func:`train_or_load`
    never reuses it)."""
    return save_payload({"key": None, "artefact": _run_payload(run)}, path)


def _run_payload(run: GANRun) -> dict:
    return {
        "config": asdict(run.config),
        "generator": run.generator.state_dict(),
        "discriminator": run.discriminator.state_dict(),
        "ema_generator": run.ema_generator.state_dict() if run.ema_generator is not None else None,
        "step": run.step,
        "history": run.history,
        "snapshots": run.snapshots,
    }


def load_run(path: str | Path, device: torch.device | str = "cpu") -> GANRun:
    """Read a run written by :func:`save_run` or :func:`train_or_load` onto ``device``."""
    return load_stored(path, device, _run_from_payload, "GAN run", "train it with train_or_load (it writes the file)")


def run_key(images: torch.Tensor, config: GANConfig, seed: int) -> dict:
    """Everything that determines a trained GAN: its config, seed and training images."""
    return {"kind": "gan", "config": config_key(config), "seed": seed, "data": fingerprint(images)}


def _run_from_payload(payload: dict, device: torch.device | str) -> GANRun:
    config_dict = payload["config"]
    config_dict["betas"] = tuple(config_dict["betas"])
    config = GANConfig(**config_dict)
    run = new_run(config, device)
    run.generator.load_state_dict(payload["generator"])
    run.discriminator.load_state_dict(payload["discriminator"])
    if payload["ema_generator"] is not None:
        if run.ema_generator is None:
            run.ema_generator = copy.deepcopy(run.generator)
        run.ema_generator.load_state_dict(payload["ema_generator"])
    run.step, run.history, run.snapshots = payload["step"], payload["history"], payload["snapshots"]
    return run


def train_or_load(
    path: str | Path,
    images: torch.Tensor,
    config: GANConfig,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
    description: str = "GAN",
) -> GANRun:
    """The run cached at ``path`` if it was trained with this config and seed on these images, else train it and save it
    there."""
    return load_or_build(
        path,
        run_key(images, config, seed),
        lambda: train_gan(images, config, seed=seed, device=device, progress=progress, description=description),
        to_payload=_run_payload,
        from_payload=lambda payload: _run_from_payload(payload, device),
        device=device,
    )


def relative_cost(config: GANConfig) -> float:
    """A rough cost of a run, in units of one plain forward-backward pass, for scheduling: each D step
    costs 1, or 2 with a gradient penalty (WGAN-GP, R1: a double backward), each G step 1."""
    penalised = config.loss == "wgan-gp" or config.r1_gamma > 0
    return config.steps * (config.d_steps * (2 if penalised else 1) + 1)


def _train_and_save(path: Path, images: torch.Tensor, config: GANConfig, seed: int, description: str) -> None:
    train_or_load(path, images, config, seed=seed, device="cpu", progress=False, description=description)


def train_or_load_many(
    jobs: dict[str, tuple[str | Path, GANConfig]],
    images: torch.Tensor,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, GANRun]:
    """:func:`train_or_load` for several independent runs ``{name: (path, config)}``, all on ``images`` with ``seed``.

    On a CPU the runs not yet cached train side by side in worker processes
    (:func:`metagan_lib.runtime.parallel_map`), then everything is loaded from the cache; on a
    GPU they train one after the other. Each run is the one :func:`train_or_load` gives on one
    thread, bit for bit (its randomness comes from ``seed`` alone); against a run on two threads
    it can differ by floating-point rounding (sums split across threads add in another order), which
    a GAN's training can amplify.
    """
    from functools import partial

    from .runtime import parallel_calls, worker_count

    device = choose_device(device)
    missing = {
        name: (Path(path), config)
        for name, (path, config) in jobs.items()
        if not is_current(path, run_key(images, config, seed))
    }
    if missing and worker_count(len(missing), device) > 1:
        longest_first = sorted(
            missing.items(), key=lambda item: -relative_cost(item[1][1])
        )  # no worker is left with a long run at the end
        parallel_calls(
            [partial(_train_and_save, path, images, config, seed, name) for name, (path, config) in longest_first],
            device=device,
            description=f"training {len(missing)} GANs in parallel",
        )
    return {
        name: train_or_load(path, images, config, seed=seed, device=device, description=name)
        for name, (path, config) in jobs.items()
    }
