"""Meta-learned GANs with ``torch.func``: MAML (second and first order), Reptile and Meta-SGD.

Parameters are explicit dicts of tensors and the networks are called with
``torch.func.functional_call``, so one inner loop serves three uses: a Python loop over tasks
(the reference), ``vmap`` over a batch of tasks (the fast path) and adaptation at test time.

**The inner game.** A task is one class, given by its K support images. One inner step is a
discriminator step then a generator step, each plain gradient descent
``theta' = theta - alpha * grad_theta J(theta, D_i)`` on the non-saturating GAN losses, with the
support images as the real data and fresh noise for the fakes. All noise is drawn before the
step and passed in, so ``vmap`` needs no randomness of its own and the loop and the vmap path
see the same numbers.

**The outer objective** (MAML, Meta-SGD): the adapted networks' losses on the task's *query*
images (held-out images of the same class): ``L_D = -[log D'(x_q) + log(1 - D'(G'(z)))]`` updates
the discriminator's initialisation, ``L_G = -log D'(G'(z))`` the generator's. With
``first_order=True`` the inner gradients are treated as constants (FOMAML), which drops the
second-derivative terms. Meta-SGD learns one inner learning rate per parameter entry as well.
**Reptile** (as in FIGR) adapts with more inner steps and moves the initialisation towards the
adapted weights: ``theta <- theta + epsilon * mean_i (theta'_i - theta)``; it needs no query set.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal, get_args

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from . import checks, seeds
from .artifacts import check_same_parameters, load_or_build, load_stored, meta_training_key, save_payload
from .losses import discriminator_loss, generator_loss_nonsaturating
from .models import ADAM_BETAS, build_gan, template
from .monitor import monitored_steps
from .runtime import choose_device
from .tasks import TaskSampler

Params = dict[str, torch.Tensor]
MethodName = Literal["maml", "reptile", "meta-sgd"]
METHODS: tuple[str, ...] = get_args(MethodName)  # the names, from the type (one list)


def sgd_step(
    params: Params, loss_fn: Callable[[Params], torch.Tensor], lr: float | Params, first_order: bool = False
) -> Params:
    """One differentiable step ``theta - lr * grad loss_fn(theta)``.

    ``lr`` is the formula's scalar ``alpha`` or a dict of per-entry rates shaped like ``params``
    (what a :class:`MetaGAN` always holds). With ``first_order`` the gradient is detached, so nothing
    is differentiated through it later.
    """
    grads = grad(loss_fn)(params)
    if first_order:
        grads = {k: g.detach() for k, g in grads.items()}
    rates = lr if isinstance(lr, dict) else dict.fromkeys(params, lr)
    return {k: p - rates[k] * grads[k] for k, p in params.items()}


@dataclass(frozen=True)
class MetaConfig:
    """Settings of a meta-GAN.

    Attributes:
        method: ``"maml"``, ``"reptile"`` or ``"meta-sgd"``.
        first_order: MAML/Meta-SGD only: drop the second-order terms.
        z_dim, width: generator latent size and channel width (``conv`` networks).
        inner_steps: D+G steps of adaptation during meta-training.
        inner_lr: ``alpha`` (the initial value for Meta-SGD's learned rates).
        meta_lr: Adam learning rate of the outer loop (MAML, Meta-SGD); Reptile's ``epsilon``.
        tasks: tasks per meta-batch.
        shots, queries: support and query images per task.
        fake_batch: generated images per inner and outer loss.
    """

    method: MethodName = "maml"
    first_order: bool = False
    z_dim: int = 32
    width: int = 16
    inner_steps: int = 2
    inner_lr: float = 0.05
    meta_lr: float = 1e-3
    tasks: int = 8
    shots: int = 5
    queries: int = 10
    fake_batch: int = 16

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"Unknown meta-learning method {self.method!r}; choose one of {', '.join(METHODS)}.")
        checks.positive_int("z_dim", self.z_dim)
        checks.conv_width("width", self.width)
        for name in ("inner_steps", "tasks", "shots", "fake_batch"):
            checks.positive_int(name, getattr(self, name))
        (checks.non_negative_int if self.method == "reptile" else checks.positive_int)("queries", self.queries)
        checks.positive("inner_lr", self.inner_lr)
        checks.positive("meta_lr", self.meta_lr)
        checks.flag("first_order", self.first_order)

    def replace(self, **changes) -> "MetaConfig":
        return dataclasses.replace(self, **changes)

    @property
    def learns_rates(self) -> bool:
        """Meta-SGD: the inner learning rates are meta-parameters too."""
        return self.method == "meta-sgd"


def standard_configs(tasks: int = 8, shots: int = 5) -> dict[str, MetaConfig]:
    """The meta-learners of notebooks 04-06, defined once: MAML, FOMAML, Reptile and Meta-SGD.

    MAML-family: 2 inner steps, alpha = 0.05, Adam 2e-3 outer, 10 query images per task.
    Reptile: 5 inner steps (it can afford more, having no second-order terms), epsilon = 0.1.
    """
    maml = MetaConfig(
        method="maml",
        first_order=False,
        inner_steps=2,
        inner_lr=0.05,
        meta_lr=2e-3,
        tasks=tasks,
        shots=shots,
        queries=10,
        fake_batch=16,
    )
    return {
        "MAML": maml,
        "FOMAML": maml.replace(first_order=True),
        "Reptile": maml.replace(method="reptile", first_order=True, inner_steps=5, meta_lr=0.1),
        "Meta-SGD": maml.replace(method="meta-sgd"),
    }


@dataclass
class MetaGAN:
    """A meta-GAN: architecture templates, meta-parameters and inner learning rates.

    ``generator``/``discriminator`` are templates on the ``meta`` device (shapes, no values): they
    are only ever called through ``functional_call`` with explicit parameters, so the parameter
    dicts are the one source of truth. ``g_params``/``d_params`` are leaf tensors (the
    initialisation that is meta-learned); ``g_lr``/``d_lr`` are per-entry rates shaped like them,
    constant ``inner_lr`` for MAML and Reptile, learned (leaf tensors) for Meta-SGD.
    """

    config: MetaConfig
    generator: nn.Module
    discriminator: nn.Module
    g_params: Params
    d_params: Params
    g_lr: Params
    d_lr: Params
    step: int = 0
    history: dict[str, list[float]] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(iter(self.g_params.values())).device

    def generator_tensors(self) -> list[torch.Tensor]:
        """What the generator's outer loss updates: its parameters (and Meta-SGD's rates for them)."""
        return list(self.g_params.values()) + (list(self.g_lr.values()) if self.config.learns_rates else [])

    def discriminator_tensors(self) -> list[torch.Tensor]:
        """What the discriminator's outer loss updates: its parameters (and Meta-SGD's rates for them)."""
        return list(self.d_params.values()) + (list(self.d_lr.values()) if self.config.learns_rates else [])

    def trainable(self) -> list[torch.Tensor]:
        """Everything the outer loop updates, generator's first."""
        return self.generator_tensors() + self.discriminator_tensors()


def _leaf_copy(params: Params, device: torch.device | str) -> Params:
    return {k: v.detach().to(device).clone().requires_grad_(True) for k, v in params.items()}


def constant_rates(params: Params, value: float, learnable: bool) -> Params:
    """Per-entry rates ``value`` shaped like ``params`` (leaf tensors when ``learnable``)."""
    return {k: torch.full_like(v, value).detach().requires_grad_(learnable) for k, v in params.items()}


def new_meta_gan(
    config: MetaConfig,
    device: torch.device | str = "cpu",
    seed: int = 0,
    generator: nn.Module | None = None,
    discriminator: nn.Module | None = None,
) -> MetaGAN:
    """A meta-GAN with fresh ``conv`` networks from ``seed`` (or the weights of the given generator and
    discriminator: both, or neither)."""
    if (generator is None) != (discriminator is None):
        raise ValueError(
            "new_meta_gan takes both players or neither: pass generator= and discriminator= together "
            "(e.g. models.build_gan('conv', z_dim, width)), or neither for fresh networks from seed."
        )
    if generator is None:
        generator, discriminator = build_gan("conv", config.z_dim, config.width, seed=seed)
    device = choose_device(device)
    g_params = _leaf_copy(dict(generator.named_parameters()), device)
    d_params = _leaf_copy(dict(discriminator.named_parameters()), device)
    g_lr = constant_rates(g_params, config.inner_lr, config.learns_rates)
    d_lr = constant_rates(d_params, config.inner_lr, config.learns_rates)
    return MetaGAN(config, template(generator), template(discriminator), g_params, d_params, g_lr, d_lr)


# ----------------------------------------------------------------------------------------------
# One task: adaptation and the outer losses (pure functions; vmap-able)
# ----------------------------------------------------------------------------------------------


def inner_adapt(
    meta: MetaGAN, g_params: Params, d_params: Params, support: torch.Tensor, noise: torch.Tensor, first_order: bool
) -> tuple[Params, Params]:
    """Adapt both players to one task.

    Args:
        support: the task's real images ``[K, 1, 28, 28]`` in [-1, 1].
        noise: ``[steps, 2, B, z_dim]``: for each inner step, the D step's and the G step's noise.
        first_order: detach the inner gradients.

    Returns:
        Adapted ``(g_params, d_params)``.
    """
    G = lambda p, z: functional_call(meta.generator, p, (z,))
    D = lambda p, x: functional_call(meta.discriminator, p, (x,))
    for step in range(noise.shape[0]):
        fake = G(g_params, noise[step, 0])
        d_params = sgd_step(d_params, lambda p: discriminator_loss(D(p, support), D(p, fake)), meta.d_lr, first_order)
        frozen_d = d_params
        g_params = sgd_step(
            g_params, lambda p: generator_loss_nonsaturating(D(frozen_d, G(p, noise[step, 1]))), meta.g_lr, first_order
        )
    return g_params, d_params


def task_outer_losses(
    meta: MetaGAN,
    g_params: Params,
    d_params: Params,
    support: torch.Tensor,
    query: torch.Tensor,
    inner_noise: torch.Tensor,
    outer_noise: torch.Tensor,
    first_order: bool,
) -> torch.Tensor:
    """MAML's outer losses of one task: ``[L_D, L_G]`` of the adapted networks on the query images."""
    g_adapted, d_adapted = inner_adapt(meta, g_params, d_params, support, inner_noise, first_order)
    fake = functional_call(meta.generator, g_adapted, (outer_noise,))
    fake_logits = functional_call(meta.discriminator, d_adapted, (fake,))
    real_logits = functional_call(meta.discriminator, d_adapted, (query,))
    return torch.stack([discriminator_loss(real_logits, fake_logits), generator_loss_nonsaturating(fake_logits)])


def batched_outer_losses(
    meta: MetaGAN,
    support: torch.Tensor,
    query: torch.Tensor,
    inner_noise: torch.Tensor,
    outer_noise: torch.Tensor,
    vectorised: bool = True,
) -> torch.Tensor:
    """Outer losses ``[T, 2]`` for ``T`` tasks (support ``[T, K, ...]``, query ``[T, Q, ...]``).

    ``vectorised=True`` runs all tasks at once with ``vmap``; ``False`` loops over tasks (the reference).
    """
    first_order = meta.config.first_order

    def one_task(s, q, n_in, n_out):
        return task_outer_losses(meta, meta.g_params, meta.d_params, s, q, n_in, n_out, first_order)

    if vectorised:
        return vmap(one_task)(support, query, inner_noise, outer_noise)
    return torch.stack([one_task(*args) for args in zip(support, query, inner_noise, outer_noise)])


def batched_adapt(
    meta: MetaGAN, support: torch.Tensor, inner_noise: torch.Tensor, vectorised: bool = True
) -> tuple[Params, Params]:
    """Adapt to ``T`` tasks without tracking meta-gradients; parameters gain a leading task axis ``[T, ...]``."""

    def one_task(s, n):
        return inner_adapt(meta, meta.g_params, meta.d_params, s, n, first_order=True)

    with torch.no_grad():
        if vectorised:
            return vmap(one_task)(support, inner_noise)
        results = [one_task(s, n) for s, n in zip(support, inner_noise)]
    stack = lambda dicts: {k: torch.stack([d[k] for d in dicts]) for k in dicts[0]}
    return stack([r[0] for r in results]), stack([r[1] for r in results])


# ----------------------------------------------------------------------------------------------
# Meta-training
# ----------------------------------------------------------------------------------------------


def draw_noise(
    generator: torch.Generator, tasks: int, steps: int, batch: int, z_dim: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inner noise ``[T, steps, 2, B, z]`` and outer noise ``[T, B, z]``."""
    inner = torch.randn(tasks, steps, 2, batch, z_dim, generator=generator, device=device)
    outer = torch.randn(tasks, batch, z_dim, generator=generator, device=device)
    return inner, outer


def meta_gradients(meta: MetaGAN, losses: torch.Tensor) -> list[torch.Tensor]:
    """Gradients for :meth:`MetaGAN.trainable`: ``mean L_G`` for the generator's tensors, ``mean L_D`` for D's."""
    d_loss, g_loss = losses[:, 0].mean(), losses[:, 1].mean()
    g_tensors, d_tensors = meta.generator_tensors(), meta.discriminator_tensors()
    g_grads = torch.autograd.grad(g_loss, g_tensors, retain_graph=True, allow_unused=True)
    d_grads = torch.autograd.grad(d_loss, d_tensors, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(g_tensors + d_tensors, g_grads + d_grads)]


def gradient_outer_step(
    meta: MetaGAN,
    optimizer: torch.optim.Optimizer,
    support: torch.Tensor,
    query: torch.Tensor,
    inner_noise: torch.Tensor,
    outer_noise: torch.Tensor,
    vectorised: bool,
) -> tuple[float, float]:
    """MAML / FOMAML / Meta-SGD: an optimiser step on the query losses of the adapted networks.

    Meta-SGD's learned rates are clamped at 0 after the step. Returns (mean L_D, mean L_G).
    """
    losses = batched_outer_losses(meta, support, query, inner_noise, outer_noise, vectorised)
    grads = meta_gradients(meta, losses)
    optimizer.zero_grad(set_to_none=True)
    for tensor, g in zip(meta.trainable(), grads):
        tensor.grad = g
    optimizer.step()
    if meta.config.learns_rates:
        with torch.no_grad():
            for rate in list(meta.g_lr.values()) + list(meta.d_lr.values()):
                rate.clamp_(min=0.0)
    return losses[:, 0].mean().item(), losses[:, 1].mean().item()


def reptile_outer_step(
    meta: MetaGAN,
    optimizer: torch.optim.Optimizer | None,
    support: torch.Tensor,
    query: torch.Tensor,
    inner_noise: torch.Tensor,
    outer_noise: torch.Tensor,
    vectorised: bool,
) -> tuple[float, float]:
    """Reptile: no optimiser, no query set (see :func:`reptile_step`)."""
    return reptile_step(meta, support, inner_noise, outer_noise, vectorised)


OUTER_STEPS = {"maml": gradient_outer_step, "meta-sgd": gradient_outer_step, "reptile": reptile_outer_step}
"""The one dispatch from :attr:`MetaConfig.method` to its outer step."""


class MetaTrainer:
    """Runs meta-steps of one :class:`MetaGAN` on episodes from a :class:`~metagan_lib.tasks.TaskSampler`.

    Holds the outer optimiser (Adam for MAML/Meta-SGD; none for Reptile) and the noise generator.
    """

    def __init__(self, meta: MetaGAN, sampler, seed: int = 0, vectorised: bool = True):
        checks.same_device("sampler.device", sampler.device, meta.device, "make the TaskSampler with that device")
        self.meta, self.sampler, self.vectorised = meta, sampler, vectorised
        self.noise = seeds.generator(seed, "meta-training noise", device=meta.device)
        uses_optimizer = meta.config.method != "reptile"
        self.optimizer = (
            torch.optim.Adam(meta.trainable(), lr=meta.config.meta_lr, betas=ADAM_BETAS) if uses_optimizer else None
        )
        for key in ("step", "d_loss", "g_loss"):
            meta.history.setdefault(key, [])

    def step(self) -> tuple[float, float]:
        """One meta-step on a fresh batch of 1-way tasks; returns (mean L_D, mean L_G)."""
        meta, cfg = self.meta, self.meta.config
        queries = 0 if cfg.method == "reptile" else cfg.queries
        episode = self.sampler.sample(cfg.tasks, ways=1, shots=cfg.shots, queries=queries)
        inner, outer = draw_noise(self.noise, cfg.tasks, cfg.inner_steps, cfg.fake_batch, cfg.z_dim, meta.device)
        outer_step = OUTER_STEPS[cfg.method]
        d_value, g_value = outer_step(
            meta, self.optimizer, episode.support[:, 0], episode.query[:, 0], inner, outer, self.vectorised
        )
        meta.step += 1
        for key, value in (("step", meta.step), ("d_loss", d_value), ("g_loss", g_value)):
            meta.history[key].append(value)
        return d_value, g_value

    def train(
        self, steps: int, progress: bool = True, description: str = "meta-training", log_dir: str | Path | None = None
    ) -> MetaGAN:
        """``steps`` meta-steps; with ``log_dir``, the losses also go to TensorBoard there."""
        monitored_steps(
            lambda: dict(zip(("d_loss", "g_loss"), self.step())),
            steps,
            lambda: self.meta.step,
            description=description,
            progress=progress,
            log_dir=log_dir,
        )
        return self.meta


def reptile_step(
    meta: MetaGAN, support: torch.Tensor, inner_noise: torch.Tensor, outer_noise: torch.Tensor, vectorised: bool = True
) -> tuple[float, float]:
    """``theta <- theta + epsilon * mean_i (theta'_i - theta)`` for both players.

    Returns the adapted networks' mean (L_D, L_G) on the support images (for monitoring).
    """
    g_adapted, d_adapted = batched_adapt(meta, support, inner_noise, vectorised)
    epsilon = meta.config.meta_lr
    with torch.no_grad():
        for params, adapted in ((meta.g_params, g_adapted), (meta.d_params, d_adapted)):
            for k, p in params.items():
                p.add_(epsilon * (adapted[k].mean(dim=0) - p))
        fake = vmap(lambda g, z: functional_call(meta.generator, g, (z,)))(g_adapted, outer_noise)
        fake_logits = vmap(lambda d, x: functional_call(meta.discriminator, d, (x,)))(d_adapted, fake)
        real_logits = vmap(lambda d, x: functional_call(meta.discriminator, d, (x,)))(d_adapted, support)
    return discriminator_loss(real_logits, fake_logits).item(), generator_loss_nonsaturating(fake_logits).item()


def save_meta(meta: MetaGAN, path: Path | str) -> None:
    """Write a meta-GAN (config, meta-parameters, rates, history) to ``path`` (no cache key: never reused as a
    cache)."""
    save_payload({"key": None, "artefact": _meta_payload(meta)}, path)


def _meta_payload(meta: MetaGAN) -> dict:
    detach = lambda params: {k: v.detach().cpu() for k, v in params.items()}
    learned = meta.config.learns_rates  # constant rates are rebuilt from the config
    return {
        "config": asdict(meta.config),
        "g_params": detach(meta.g_params),
        "d_params": detach(meta.d_params),
        "g_lr": detach(meta.g_lr) if learned else None,
        "d_lr": detach(meta.d_lr) if learned else None,
        "step": meta.step,
        "history": meta.history,
    }


def load_meta(path: Path | str, device: torch.device | str = "cpu") -> MetaGAN:
    """Read a meta-GAN written by :func:`save_meta` or :func:`train_or_load_meta`."""
    how = "train it with train_or_load_meta (it writes the file)"
    return load_stored(path, device, _meta_from_payload, "meta-GAN", how)


def _meta_from_payload(payload: dict, device: torch.device | str) -> MetaGAN:
    meta = new_meta_gan(MetaConfig(**payload["config"]), device)
    stored = ["g_params", "d_params"] + (["g_lr", "d_lr"] if meta.config.learns_rates else [])
    for name in stored:  # a file under the right key whose tensors were changed is refused, not half-loaded
        check_same_parameters(getattr(meta, name), payload[name], name)
        setattr(meta, name, _leaf_copy(payload[name], device))
    meta.step, meta.history = payload["step"], payload["history"]
    return meta


def train_or_load_meta(
    path: Path | str,
    config: MetaConfig,
    sampler: TaskSampler,
    meta_steps: int,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
    description: str = "meta-training",
) -> MetaGAN:
    """The meta-GAN cached at ``path`` under :func:`~metagan_lib.artifacts.meta_training_key`, else meta-train it and
    save it there. Training draws its tasks from ``sampler.restarted()``, so the network depends on the key's sampler
    seed only, not on what ``sampler`` drew before."""

    def build() -> MetaGAN:
        return MetaTrainer(new_meta_gan(config, device, seed=seed), sampler.restarted(), seed=seed).train(
            meta_steps, progress=progress, description=description
        )

    return load_or_build(
        path,
        meta_training_key("meta-gan", config, sampler, meta_steps, seed),
        build,
        to_payload=_meta_payload,
        from_payload=lambda payload: _meta_from_payload(payload, device),
        device=device,
    )
