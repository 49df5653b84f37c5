"""The context meta-GAN: meta-learn a generator whose inner loop adapts only a task context.

Why (notebook 04 shows the failure this fixes): adapting a whole GAN from 5 images in a few
gradient steps asks the inner loop to move ~40k weights through an unstable two-player game, and
on a CPU budget the meta-initialisation never learns to make that work. Systems that get
recognisable unseen-class samples cheaply adapt a *small* part of a generator (CAVIA, Zintgraf et
al. 2019; Noguchi & Harada 2019) and/or condition on the shots (DAGAN's pair discriminator). So:

* the generator ``G(z, c)`` takes noise ``z`` and a **context** ``c`` (64 numbers) that sets a
  first linear layer's input and, by FiLM, the scale and shift after each normalisation;
* the **inner loop** is the documents' rule applied to the context only, starting from a
  meta-learned ``c0``: ``c <- c - alpha * grad_c J(c, D_i)`` with
  ``J`` = the chamfer distance between samples ``G(z, c)`` and the K shots (below);
* the **outer loss** scores the adapted generator on the task's held-out *query* images: the
  same chamfer distance plus ``adv_weight`` times the non-saturating GAN loss against a *pair*
  discriminator ``D([shot, image])`` that sees a shot next to a real or generated image of the
  class (DAGAN), trained alongside with R1;
* the **outer rules** (one dispatch, :data:`OUTER_RULES`): ``maml`` differentiates through the
  inner steps (second order), ``fomaml`` treats the inner gradients as constants, ``meta-sgd``
  learns one inner rate per context entry as well, ``reptile`` moves ``(theta, c0)`` towards the
  task-adapted values (the inner steps, then one step of all weights on the support loss); its
  direction ``theta - theta'`` is fed to Adam. A fifth rule, ``reptile-query``, is Reptile whose
  all-weights step fits the task's query images instead of the shots (a candidate that
  ``tools/validate_context.py`` compares on seen-class validation tasks; not one of the four
  standard learners).

The chamfer distance between sets ``A`` (samples) and ``B`` (images) of a class is
``mean_a min_b d(a, b) + mean_b min_a d(a, b)``, ``d`` the mean squared difference of the images
at 28x28, 14x14 and 7x7 (average pooling): every sample must be near some real image (fidelity)
and every real image near some sample (coverage), without any pairing between them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap
from tqdm.auto import tqdm

from . import checks, seeds
from .artifacts import load_or_build, meta_training_key, read_payload, save_payload
from .losses import chamfer_distance, pyramid_distances  # noqa: F401  (pyramid_distances: notebook 05 calls it here)
from .models import ContextGenerator, PairDiscriminator, template
from .monitor import Monitor
from .seeds import class_noise

Params = dict[str, torch.Tensor]
OUTER_RULES = ("maml", "fomaml", "meta-sgd", "reptile", "reptile-query")


def pair_up(shots: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Pairs ``[B, 2, 28, 28]``: image ``i`` next to shot ``i mod K`` (shots ``[K, 1, 28, 28]``, images
    ``[B, 1, 28, 28]``)."""
    index = torch.arange(len(images), device=images.device) % len(shots)
    return torch.cat([shots[index], images], dim=1)


# ----------------------------------------------------------------------------------------------
# Configuration and state
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContextConfig:
    """Settings of a context meta-GAN.

    Attributes:
        rule: outer rule, one of :data:`OUTER_RULES`.
        z_dim, context_dim, width: generator sizes (the discriminator has the same ``width``).
        inner_steps, inner_lr: steps and ``alpha`` of the context's inner loop (Meta-SGD: initial rates).
        inner_samples: samples ``G(z, c)`` per inner step.
        outer_samples: samples scored by the outer loss.
        adv_weight: weight of the adversarial term in the outer loss.
        reptile_lr: Reptile's step of all weights on the support loss after the inner loop.
        meta_lr, d_lr: Adam learning rates of the meta-parameters and of the discriminator.
        r1: R1 penalty weight ``gamma`` of the discriminator.
        tasks, shots, queries: tasks per meta-batch; support and query images per task.
    """

    rule: str = "maml"
    z_dim: int = 16
    context_dim: int = 64
    width: int = 32
    inner_steps: int = 3
    inner_lr: float = 1.0
    inner_samples: int = 16
    outer_samples: int = 24
    adv_weight: float = 0.3
    reptile_lr: float = 0.05
    meta_lr: float = 1e-3
    d_lr: float = 2e-4
    r1: float = 1.0
    tasks: int = 8
    shots: int = 5
    queries: int = 10

    def __post_init__(self) -> None:
        if self.rule not in OUTER_RULES:
            raise ValueError(f"Unknown outer rule {self.rule!r}; choose one of {', '.join(OUTER_RULES)}.")
        for name in (
            "z_dim",
            "context_dim",
            "inner_steps",
            "inner_samples",
            "outer_samples",
            "tasks",
            "shots",
            "queries",
        ):
            checks.positive_int(name, getattr(self, name))
        checks.conv_width("width", self.width)
        for name in ("inner_lr", "reptile_lr", "meta_lr", "d_lr"):
            checks.positive(name, getattr(self, name))
        for name in ("adv_weight", "r1"):
            checks.non_negative(name, getattr(self, name))

    def replace(self, **changes) -> "ContextConfig":
        return dataclasses.replace(self, **changes)


def standard_context_configs(tasks: int = 8, shots: int = 5) -> dict[str, ContextConfig]:
    """The four context meta-learners compared in notebooks 05-06, defined once."""
    base = ContextConfig(tasks=tasks, shots=shots)
    return {
        f"context {name}": base.replace(rule=rule)
        for name, rule in (("MAML", "maml"), ("FOMAML", "fomaml"), ("Meta-SGD", "meta-sgd"), ("Reptile", "reptile"))
    }


CHOSEN_CONTEXT_LEARNER = "context Reptile-query"


def chosen_context_configs(tasks: int = 8, shots: int = 5) -> dict[str, ContextConfig]:
    """The candidate chosen on seen-class validation tasks (``tools/validate_context.py``, README): Reptile whose
    all-weights step fits the query images, 5 inner steps at meta-training and test; defined once for 05-06."""
    return {CHOSEN_CONTEXT_LEARNER: ContextConfig(tasks=tasks, shots=shots, rule="reptile-query", inner_steps=5)}


@dataclass
class ContextMetaGAN:
    """Module templates (architecture only, on the ``meta`` device) and explicit parameters of a context meta-GAN.

    ``meta_params``: the generator's weights plus ``"context"`` (``c0``, ``[context_dim]``) and, for
    Meta-SGD, ``"rates"`` (``[context_dim]``); ``d_params``: the pair discriminator's weights.
    """

    config: ContextConfig
    generator: ContextGenerator
    discriminator: PairDiscriminator
    meta_params: Params
    d_params: Params
    step: int = 0
    history: dict[str, list[float]] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.meta_params["context"].device

    def generator_params(self, params: Params | None = None) -> Params:
        """The generator's weights among ``params`` (default: the meta-parameters)."""
        params = self.meta_params if params is None else params
        return {k: v for k, v in params.items() if k not in ("context", "rates")}

    def rates(self) -> float | torch.Tensor:
        """The inner learning rate: ``inner_lr``, or Meta-SGD's learned per-entry rates ``[context_dim]``."""
        return self.meta_params["rates"] if "rates" in self.meta_params else self.config.inner_lr


def new_context_gan(config: ContextConfig, device: torch.device | str = "cpu", seed: int = 0) -> ContextMetaGAN:
    """A fresh context meta-GAN with weights from ``seed``, ``c0 = 0`` (and Meta-SGD rates ``= inner_lr``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = ContextGenerator(config.z_dim, config.context_dim, config.width)
        discriminator = PairDiscriminator(config.width)
    leaf = lambda t: t.detach().to(device).clone().requires_grad_(True)
    meta_params = {k: leaf(v) for k, v in generator.named_parameters()}
    meta_params["context"] = leaf(torch.zeros(config.context_dim))
    if config.rule == "meta-sgd":
        meta_params["rates"] = leaf(torch.full((config.context_dim,), config.inner_lr))
    d_params = {k: leaf(v) for k, v in discriminator.named_parameters()}
    return ContextMetaGAN(config, template(generator), template(discriminator), meta_params, d_params)


# ----------------------------------------------------------------------------------------------
# One task (pure functions of explicit parameters; vmap-able)
# ----------------------------------------------------------------------------------------------


def generate(model: ContextMetaGAN, g_params: Params, z: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """``G(z, c)`` with explicit generator weights: ``z [B, z_dim]``, ``context [context_dim]`` ->
    ``[B, 1, 28, 28]``."""
    return functional_call(model.generator, g_params, (z, context))


def inner_adapt(
    model: ContextMetaGAN, params: Params, support: torch.Tensor, noise: torch.Tensor, first_order: bool = False
) -> torch.Tensor:
    """The inner loop: ``c <- c - alpha * grad_c chamfer(G(z_t, c), support)`` from ``params["context"]``.

    Args:
        params: meta-parameters (generator weights, ``context``, optional ``rates``).
        support: the K shots ``[K, 1, 28, 28]`` in [-1, 1].
        noise: ``[steps, M, z_dim]``, one batch of noise per inner step.
        first_order: treat the inner gradients as constants.

    Returns:
        The adapted context ``[context_dim]``.
    """
    g_params, context = model.generator_params(params), params["context"]
    rates = params.get("rates", model.config.inner_lr)
    for z in noise:
        step = grad(lambda c: chamfer_distance(generate(model, g_params, z, c), support))(context)
        context = context - rates * (step.detach() if first_order else step)
    return context


def adversarial_loss(model: ContextMetaGAN, d_params: Params, shots: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss ``-log D([shot, G(z, c)])``, averaged."""
    return F.softplus(-functional_call(model.discriminator, d_params, (pair_up(shots, fake),))).mean()


def task_outer_loss(
    model: ContextMetaGAN,
    params: Params,
    d_params: Params,
    support: torch.Tensor,
    query: torch.Tensor,
    inner_noise: torch.Tensor,
    outer_noise: torch.Tensor,
    first_order: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One task's outer loss (chamfer to the query images + ``adv_weight`` x adversarial) and the adapted samples
    ``[B, ...]``."""
    context = inner_adapt(model, params, support, inner_noise, first_order)
    fake = generate(model, model.generator_params(params), outer_noise, context)
    loss = chamfer_distance(fake, query) + model.config.adv_weight * adversarial_loss(model, d_params, support, fake)
    return loss, fake


def batched_outer_loss(
    model: ContextMetaGAN,
    support: torch.Tensor,
    query: torch.Tensor,
    inner_noise: torch.Tensor,
    outer_noise: torch.Tensor,
    first_order: bool,
    vectorised: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Outer losses ``[T]`` and adapted samples ``[T, B, ...]`` of ``T`` tasks; ``vectorised=False`` loops (the
    reference)."""
    d_params = {k: v.detach() for k, v in model.d_params.items()}

    def one_task(s, q, n_in, n_out):
        return task_outer_loss(model, model.meta_params, d_params, s, q, n_in, n_out, first_order)

    if vectorised:
        return vmap(one_task)(support, query, inner_noise, outer_noise)
    losses, fakes = zip(*[one_task(*args) for args in zip(support, query, inner_noise, outer_noise)])
    return torch.stack(losses), torch.stack(fakes)


# ----------------------------------------------------------------------------------------------
# Outer rules (one dispatch) and the discriminator's step
# ----------------------------------------------------------------------------------------------


def gradient_rule(first_order: bool):
    """MAML (second order), FOMAML (``first_order``) and Meta-SGD: gradients of the mean outer loss."""

    def meta_gradients(model, support, query, inner_noise, outer_noise, vectorised):
        losses, fakes = batched_outer_loss(model, support, query, inner_noise, outer_noise, first_order, vectorised)
        names = list(model.meta_params)
        grads = torch.autograd.grad(losses.mean(), [model.meta_params[k] for k in names], allow_unused=True)
        return (
            {k: torch.zeros_like(model.meta_params[k]) if g is None else g for k, g in zip(names, grads)},
            losses,
            fakes,
        )

    return meta_gradients


def reptile_task(
    model: ContextMetaGAN,
    params: Params,
    d_params: Params,
    support: torch.Tensor,
    target: torch.Tensor,
    inner_noise: torch.Tensor,
    outer_noise: torch.Tensor,
) -> tuple[Params, torch.Tensor, torch.Tensor]:
    """Reptile's adaptation to one task: the context's inner steps on the shots ``support``, then one step of all
    weights on ``chamfer(G(z, c), target) + adv_weight * adversarial`` (``target``: the shots for ``reptile``, the
    query images for ``reptile-query``).

    Returns the adapted parameters, that loss and the samples it scored."""
    context = inner_adapt(model, params, support, inner_noise, first_order=True).detach()

    def task_loss(p):
        fake = generate(model, model.generator_params(p), outer_noise, p["context"])
        loss = chamfer_distance(fake, target) + model.config.adv_weight * adversarial_loss(
            model, d_params, support, fake
        )
        return loss, (loss, fake)

    start = {**{k: v.detach() for k, v in model.generator_params(params).items()}, "context": context}
    grads, (loss, fake) = grad(task_loss, has_aux=True)(start)
    return {k: v - model.config.reptile_lr * grads[k] for k, v in start.items()}, loss, fake


def reptile_rule(fit_query: bool):
    """Reptile (``fit_query``: its weights step fits the query images, not the shots): the direction
    ``theta - mean_i theta'_i`` (Adam then moves ``theta`` towards the adapted values)."""

    def reptile_directions(model, support, query, inner_noise, outer_noise, vectorised):
        d_params = {k: v.detach() for k, v in model.d_params.items()}
        targets = query if fit_query else support
        one_task = lambda s, t, n_in, n_out: reptile_task(model, model.meta_params, d_params, s, t, n_in, n_out)
        if vectorised:
            adapted, losses, fakes = vmap(one_task)(support, targets, inner_noise, outer_noise)
        else:
            results = [one_task(*args) for args in zip(support, targets, inner_noise, outer_noise)]
            adapted = {k: torch.stack([r[0][k] for r in results]) for k in results[0][0]}
            losses, fakes = torch.stack([r[1] for r in results]), torch.stack([r[2] for r in results])
        return {k: (v - adapted[k].mean(0)).detach() for k, v in model.meta_params.items()}, losses, fakes

    return reptile_directions


OUTER_RULES_DISPATCH = {
    "maml": gradient_rule(False),
    "fomaml": gradient_rule(True),
    "meta-sgd": gradient_rule(False),
    "reptile": reptile_rule(fit_query=False),
    "reptile-query": reptile_rule(fit_query=True),
}


def discriminator_loss_r1(model: ContextMetaGAN, real_pairs: torch.Tensor, fake_pairs: torch.Tensor) -> torch.Tensor:
    """``softplus(-D(real)) + softplus(D(fake))`` averaged, plus ``r1 / 2 * E||grad_x D(real)||^2``."""
    real_pairs = real_pairs.detach().requires_grad_(True)
    real_logits = functional_call(model.discriminator, model.d_params, (real_pairs,))
    fake_logits = functional_call(model.discriminator, model.d_params, (fake_pairs.detach(),))
    (real_grad,) = torch.autograd.grad(real_logits.sum(), real_pairs, create_graph=True)
    penalty = real_grad.pow(2).flatten(1).sum(1).mean()
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean() + model.config.r1 / 2 * penalty


# ----------------------------------------------------------------------------------------------
# Meta-training
# ----------------------------------------------------------------------------------------------


class ContextTrainer:
    """Meta-steps of a :class:`ContextMetaGAN` on 1-way tasks from a :class:`~metagan_lib.tasks.TaskSampler`.

    Each step: the outer rule's update of the meta-parameters (Adam), then one discriminator step on
    (shot, query) pairs against (shot, adapted sample) pairs.
    """

    def __init__(self, model: ContextMetaGAN, sampler, seed: int = 0, vectorised: bool = True):
        self.model, self.sampler, self.vectorised = model, sampler, vectorised
        self.noise = seeds.generator(seed, "meta-training noise", device=model.device)
        self.meta_optimizer = torch.optim.Adam(model.meta_params.values(), lr=model.config.meta_lr, betas=(0.5, 0.999))
        self.d_optimizer = torch.optim.Adam(model.d_params.values(), lr=model.config.d_lr, betas=(0.5, 0.999))
        for key in ("step", "outer_loss", "d_loss"):
            model.history.setdefault(key, [])

    def step(self) -> tuple[float, float]:
        """One meta-step; returns (mean outer loss, discriminator loss)."""
        model, cfg = self.model, self.model.config
        episode = self.sampler.sample(cfg.tasks, ways=1, shots=cfg.shots, queries=cfg.queries)
        support, query = episode.support[:, 0], episode.query[:, 0]
        inner = torch.randn(
            cfg.tasks, cfg.inner_steps, cfg.inner_samples, cfg.z_dim, generator=self.noise, device=model.device
        )
        outer = torch.randn(cfg.tasks, cfg.outer_samples, cfg.z_dim, generator=self.noise, device=model.device)
        grads, losses, fakes = OUTER_RULES_DISPATCH[cfg.rule](model, support, query, inner, outer, self.vectorised)
        self.meta_optimizer.zero_grad(set_to_none=True)
        for k, g in grads.items():
            model.meta_params[k].grad = g
        self.meta_optimizer.step()
        if "rates" in model.meta_params:  # learned rates stay non-negative
            with torch.no_grad():
                model.meta_params["rates"].clamp_(min=0.0)
        real_pairs = torch.cat([pair_up(s, q) for s, q in zip(support, query)])
        fake_pairs = torch.cat([pair_up(s, f) for s, f in zip(support, fakes)])
        d_loss = discriminator_loss_r1(model, real_pairs, fake_pairs)
        self.d_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_optimizer.step()
        model.step += 1
        for key, value in (("step", model.step), ("outer_loss", losses.mean().item()), ("d_loss", d_loss.item())):
            model.history[key].append(value)
        return model.history["outer_loss"][-1], model.history["d_loss"][-1]

    def train(
        self,
        steps: int,
        progress: bool = True,
        description: str = "context meta-training",
        log_dir: Path | str | None = None,
    ) -> ContextMetaGAN:
        """``steps`` meta-steps; with ``log_dir``, the losses also go to TensorBoard there."""
        bar = tqdm(range(steps), desc=description, disable=not progress, leave=False)
        monitor = Monitor(log_dir)
        for index in bar:
            outer, d = self.step()
            monitor.scalars(self.model.step, {"outer_loss": outer, "d_loss": d})
            if progress and index % 20 == 0:
                bar.set_postfix(outer=f"{outer:.3f}", d=f"{d:.3f}")
        monitor.close()
        return self.model


# ----------------------------------------------------------------------------------------------
# Test time: adapt contexts to K shots of new classes, then sample
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def adapt_contexts(model: ContextMetaGAN, support: torch.Tensor, steps: int, seed: int = 0) -> torch.Tensor:
    """Contexts ``[C, context_dim]`` adapted to ``C`` classes at once (support ``[C, K, 1, 28, 28]``), ``steps`` inner
    steps."""
    support = checks.signed_images(support, "support images")
    checks.require(support.ndim == 5, "support images shape", tuple(support.shape), "[classes, K, 1, 28, 28]")
    checks.non_negative_int("steps", steps)
    classes = len(support)
    params = {k: v.detach() for k, v in model.meta_params.items()}
    if steps == 0:
        return params["context"].expand(classes, -1).clone()
    noise = class_noise(seed, classes, (steps, model.config.inner_samples, model.config.z_dim), "adapt", model.device)
    return vmap(lambda s, n: inner_adapt(model, params, s, n, first_order=True))(support.to(model.device), noise)


@torch.no_grad()
def sample_contexts(model: ContextMetaGAN, contexts: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` images per context: contexts ``[C, context_dim]`` -> ``[C, n, 1, 28, 28]``."""
    checks.positive_int("n", n)
    z = class_noise(seed, len(contexts), (n, model.config.z_dim), "sample", model.device)
    g_params = {k: v.detach() for k, v in model.generator_params().items()}
    return vmap(lambda c, zz: generate(model, g_params, zz, c))(contexts, z)


def adapt_and_sample(model: ContextMetaGAN, support: torch.Tensor, steps: int, n: int, seed: int = 0) -> torch.Tensor:
    """Adapt to each class's shots ``[C, K, ...]`` and draw ``n`` images per class ``[C, n, 1, 28, 28]``."""
    return sample_contexts(model, adapt_contexts(model, support, steps, seed), n, seed)


# ----------------------------------------------------------------------------------------------
# Cache
# ----------------------------------------------------------------------------------------------


def save_context_gan(model: ContextMetaGAN, path: Path | str) -> None:
    """Write config, parameters, step and history to ``path`` (atomically; no cache key: never reused as a cache)."""
    save_payload({"key": None, "artefact": _context_gan_payload(model)}, path)


def _context_gan_payload(model: ContextMetaGAN) -> dict:
    cpu = lambda params: {k: v.detach().cpu() for k, v in params.items()}
    return {
        "config": asdict(model.config),
        "meta_params": cpu(model.meta_params),
        "d_params": cpu(model.d_params),
        "step": model.step,
        "history": model.history,
    }


def load_context_gan(path: Path | str, device: torch.device | str = "cpu") -> ContextMetaGAN:
    """Read a model written by :func:`save_context_gan` or :func:`train_or_load_context_gan`."""
    payload = read_payload(path, device)
    if payload is None:
        raise FileNotFoundError(f"No readable context meta-GAN at {path}; train it with train_or_load_context_gan.")
    return _context_gan_from_payload(payload["artefact"], device)


def _context_gan_from_payload(payload: dict, device: torch.device | str) -> ContextMetaGAN:
    model = new_context_gan(ContextConfig(**payload["config"]), device)
    for target, saved in ((model.meta_params, payload["meta_params"]), (model.d_params, payload["d_params"])):
        if set(target) != set(saved) or any(target[k].shape != saved[k].shape for k in target):
            raise ValueError("parameter names or shapes differ from the config's")
        for k in target:
            target[k] = saved[k].to(device).clone().requires_grad_(True)
    model.step, model.history = payload["step"], payload["history"]
    return model


def train_or_load_context_gan(
    path: Path | str,
    config: ContextConfig,
    sampler,
    meta_steps: int,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
    description: str = "context meta-training",
) -> ContextMetaGAN:
    """The model cached at ``path`` under :func:`~metagan_lib.artifacts.meta_training_key`, else a freshly meta-trained
    one (saved there)."""

    def build() -> ContextMetaGAN:
        return ContextTrainer(new_context_gan(config, device, seed=seed), sampler, seed=seed).train(
            meta_steps, progress=progress, description=description
        )

    return load_or_build(
        path,
        meta_training_key("context-gan", config, sampler, meta_steps, seed),
        build,
        to_payload=_context_gan_payload,
        from_payload=lambda payload: _context_gan_from_payload(payload, device),
        device=device,
    )
