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
* the **outer rules** (one dispatch, :data:`OUTER_RULES_DISPATCH`): ``maml`` differentiates through the
  inner steps (second order), ``fomaml`` treats the inner gradients as constants, ``meta-sgd``
  learns one inner rate per context entry as well, ``reptile`` moves ``(theta, c0)`` towards the
  task-adapted values (the inner steps, then one step of all weights on the support loss); its
  direction ``theta - theta'`` is fed to Adam. A fifth rule, ``reptile-query``, is Reptile whose
  all-weights step fits the task's query images instead of the shots (a candidate that
  ``tools/validate_context.py`` compares on seen-class validation tasks; not one of the four
  standard learners); ``reptile-query-sgd`` adds Meta-SGD's per-entry inner rates to it, learned by their
  first-order gradient (a Reptile step moves only what the inner loop changes, and it never changes the rates);
* options, each tried on those validation tasks (``docs/experiments.md`` has the verdicts): a shot encoder that starts
  the inner loop from ``c0 + E(shots)`` (``shot_encoder``), a warm start from a DCGAN pretrained on the
  seen classes (:func:`warm_started_context_gan`), a moving average of the meta-parameters used at
  test time (``ema_decay``), a Gaussian blur of samples and images before every chamfer distance
  (``blur``), and nearest-neighbour upsampling instead of transposed convolutions in the generator
  (``upsample``).

The chamfer distance between sets ``A`` (samples) and ``B`` (images) of a class is
``mean_a min_b d(a, b) + mean_b min_a d(a, b)``, ``d`` the mean squared difference of the images
at 28x28, 14x14 and 7x7 (average pooling): every sample must be near some real image (fidelity)
and every real image near some sample (coverage), without any pairing between them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from . import checks, seeds
from .artifacts import KEY_WHEN_SET, check_same_parameters, load_or_build, load_stored, meta_training_key, save_payload
from .data import ImageDataset
from .evaluation import COPY_FLAG, FEATURE_WIDTH, FeatureNet, feature_net_key, train_or_load_feature_net
from .losses import chamfer_distance, pyramid_distances  # noqa: F401  (pyramid_distances: notebook 05 calls it here)
from .models import ADAM_BETAS, UPSAMPLING, ContextGenerator, ConvGenerator, PairDiscriminator, ShotEncoder, template
from .monitor import monitored_steps
from .runtime import choose_device
from .seeds import class_noise
from .tasks import TaskSampler

Params = dict[str, torch.Tensor]
ENCODER = "encoder."  # prefix of the shot encoder's entries in ``meta_params``
OUTER_RULES = ("maml", "fomaml", "meta-sgd", "reptile", "reptile-query", "reptile-query-sgd")
LEARNED_RATE_RULES = ("meta-sgd", "reptile-query-sgd")  # rules that meta-learn one inner rate per context entry


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
        shot_encoder: start the inner loop from ``c0 + E(shots)``, ``E`` a meta-learned
            :class:`~metagan_lib.models.ShotEncoder` of the task's shots (amortised conditioning), not ``c0`` alone.
        ema_decay: keep an exponential moving average of the meta-parameters with this decay, and adapt and sample
            with it at test time; ``None``: the meta-parameters themselves.
        upsample: the generator's doubling layers, ``"transposed"`` convolutions or ``"nearest"`` upsampling + 3x3
            convolutions (:func:`~metagan_lib.models.doubling`).
        blur: standard deviation (pixels) of a Gaussian blur of samples and images before every chamfer distance
            (inner and outer losses): strokes a pixel or two apart then still overlap; 0: no blur.
        inner_adv_weight: weight of the pair discriminator's term ``-log D([shot, G(z, c)])`` in the inner loss
            beside the chamfer distance (the discriminator held fixed while the context adapts); 0: the chamfer
            distance alone.
        refine: 0, or the channels of a third generator stage at 28x28 (GroupNorm, FiLM, ReLU, 3x3 convolution to
            the image; :class:`~metagan_lib.models.ContextGenerator`), a multiple of 8.
        inner_guide_weight: weight of a guide term in the inner loss: the squared distance between the mean features
            of the samples and of the shots in a frozen *guide* network's feature space (a classifier of the seen
            classes, :class:`~metagan_lib.evaluation.FeatureNet`, given to :func:`train_or_load_context_gan`); 0: none.
            Added after version 0.3.0's caches: it enters cache keys only when set.
        outer_spread_weight: weight of a spread term in the outer loss (the one Reptile's step of all weights descends,
            or MAML's): ``relu(spread(target) - spread(samples))``, ``spread`` the mean pairwise distance of the guide
            network's features (:func:`spread_shortfall`), so that the adapted samples spread at least as the
            images they fit; needs ``inner_guide_weight > 0`` (its guide network); 0: none. Enters cache keys only
            when set.
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
    shot_encoder: bool = False
    ema_decay: float | None = None
    blur: float = 0.0
    upsample: str = "transposed"
    refine: int = 0
    inner_adv_weight: float = 0.0
    inner_guide_weight: float = field(default=0.0, metadata={KEY_WHEN_SET: True})
    outer_spread_weight: float = field(default=0.0, metadata={KEY_WHEN_SET: True})

    def __post_init__(self) -> None:
        if self.rule not in OUTER_RULES:
            raise ValueError(f"Unknown outer rule {self.rule!r}; choose one of {', '.join(OUTER_RULES)}.")
        if self.upsample not in UPSAMPLING:
            raise ValueError(f"Unknown upsampling {self.upsample!r}; choose one of {', '.join(UPSAMPLING)}.")
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
        for name in ("adv_weight", "r1", "blur", "inner_adv_weight", "inner_guide_weight", "outer_spread_weight"):
            checks.non_negative(name, getattr(self, name))
        checks.flag("shot_encoder", self.shot_encoder)
        if self.outer_spread_weight and not self.inner_guide_weight:
            raise ValueError(
                f"ContextConfig(outer_spread_weight={self.outer_spread_weight:g}) measures spread in the guide network "
                "that inner_guide_weight > 0 brings: set inner_guide_weight > 0, or outer_spread_weight=0."
            )
        if self.outer_spread_weight:  # a spread is a mean over pairs: the outer loss's samples and target need two
            target = ("shots", self.shots) if self.rule == "reptile" else ("queries", self.queries)
            for name, value in (("outer_samples", self.outer_samples), target):
                checks.require(
                    value >= 2, name, value, "at least 2 with outer_spread_weight > 0 (a spread needs a pair)"
                )
        checks.require(
            type(self.refine) is int and self.refine >= 0 and self.refine % checks.GROUPS == 0,
            "refine",
            self.refine,
            f"0 or a multiple of {checks.GROUPS}",
        )
        if self.ema_decay is not None:
            checks.require(0 < self.ema_decay < 1, "ema_decay", self.ema_decay, "a decay in (0, 1), or None")

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
    """The candidate chosen on seen-class validation tasks (``tools/validate_context.py``; the runs are in
    ``docs/experiments.md``): Reptile whose all-weights step fits the query images, 5 inner steps at meta-training (at
    test: :func:`chosen_test_steps`), nearest upsampling, and the pair discriminator's term at weight 0.3 and a guide
    network's term at weight 1 in the inner loss (its guide: :func:`guide_network`, of :data:`GUIDE_WIDTH` channels);
    defined once for 05-06."""
    config = ContextConfig(tasks=tasks, shots=shots, rule="reptile-query", inner_steps=5)
    return {CHOSEN_CONTEXT_LEARNER: config.replace(upsample="nearest", inner_adv_weight=0.3, inner_guide_weight=1.0)}


MIN_DIVERSITY_RATIO = 0.8  # the targets' floor: within-class diversity at least 0.8x the real images'

CHOSEN_TEST_STEPS: dict[str, int] = {"omniglot": 20}
"""The fifth learner's test steps on the datasets whose seen-class validation sweep of test steps
(``tools/validate_context.py --test-steps 5 10 20 50``, scored by :func:`test_steps_by_rule`; the runs are in
``docs/experiments.md``) chose other than the 5 it is meta-trained with; every other dataset: its inner steps."""


def test_steps_by_rule(scores: dict[int, dict[str, float]], real_diversity: float) -> int:
    """The rule fixed before any unseen-class test: the most test steps of a validation sweep whose samples are not
    flagged as copies (mean copy score at most :data:`~metagan_lib.evaluation.COPY_FLAG`) at a diversity of at least
    :data:`MIN_DIVERSITY_RATIO` x the real images'. ``scores``: ``{steps: {"copy_score": mean, "diversity": mean}}``."""
    passing = [
        steps
        for steps, s in scores.items()
        if s["copy_score"] <= COPY_FLAG and s["diversity"] >= MIN_DIVERSITY_RATIO * real_diversity
    ]
    if not passing:
        raise ValueError(
            f"no test-step count in {sorted(scores)} passes the rule (copy score <= {COPY_FLAG}, diversity >= "
            f"{MIN_DIVERSITY_RATIO} x {real_diversity:.3f}); extend the sweep to fewer steps"
        )
    return max(passing)


def chosen_test_steps(config: ContextConfig, dataset: str) -> int:
    """The inner steps a context learner is tested with on ``dataset``: :data:`CHOSEN_TEST_STEPS` for the fifth learner
    where its validation sweep chose them, else the ``inner_steps`` it was meta-trained with."""
    return CHOSEN_TEST_STEPS.get(dataset, config.inner_steps) if _is_fifth_learner(config) else config.inner_steps


def _is_fifth_learner(config: ContextConfig) -> bool:
    return config == chosen_context_configs(config.tasks, config.shots)[CHOSEN_CONTEXT_LEARNER]


@dataclass(frozen=True)
class SampleFilter:
    """A sample filter the fifth learner is tested with on one dataset: ``steps`` inner steps, drawing
    ``inner_samples`` samples per inner step (``None``: as many as it was meta-trained with), then
    :class:`SampleSelection` with ``oversample``, ``judge`` and ``spread`` (:func:`adapt_and_select`)."""

    steps: int
    oversample: int
    judge: str
    spread: float
    inner_samples: int | None = None

    def selection(self, model: ContextMetaGAN) -> SampleSelection:
        """``model`` (its config's ``inner_samples`` replaced where this filter sets them) wrapped in the filter."""
        if self.inner_samples is not None:
            model = dataclasses.replace(model, config=model.config.replace(inner_samples=self.inner_samples))
        return SampleSelection(model, self.oversample, self.judge, self.spread)


CHOSEN_TEST_FILTERS: dict[str, SampleFilter] = {
    "omniglot": SampleFilter(steps=40, oversample=4, judge="guide-novelty", spread=0.05)
}
"""The fifth learner's sample filter on the datasets whose seen-class validation tasks adopted one: on Omniglot (Korean
held out) the guide-novelty judge keeping 1 in 4 at 40 test steps, the rule's pick among judges, ratios and test steps
(``tools/validate_context.py --select 2 4 --select-by ...``), spread 0.05 by a second rule written before any spread
was scored (``--select-spread``); the runs and rules are in ``docs/experiments.md`` ("Keeping the samples the guide
network judges best", "Keeping them spread apart"). Every other dataset: the samples as drawn after
:func:`chosen_test_steps`."""


def chosen_test_filter(config: ContextConfig, dataset: str) -> SampleFilter | None:
    """The sample filter a context learner is tested with on ``dataset``: :data:`CHOSEN_TEST_FILTERS` for the fifth
    learner where its validation adopted one, else ``None`` (the samples kept as drawn)."""
    return CHOSEN_TEST_FILTERS.get(dataset) if _is_fifth_learner(config) else None


WITHIN_INVERSION_COMPUTE_FILTERS: dict[str, SampleFilter] = {
    "omniglot": SampleFilter(steps=25, oversample=4, judge="guide-novelty", spread=0.1, inner_samples=4)
}
"""The fifth learner's second test setting on the datasets where :data:`CHOSEN_TEST_FILTERS` spends more adaptation
compute than latent inversion: on Omniglot 4 inner samples a step (not 16), 25 steps and the guide-novelty filter
keeping 1 in 4 at spread 0.1, 0.29x inversion's FLOPs and 0.74x its time (``tools/adaptation_compute.py``; 0.33x and
0.90x when it was chosen, before the inner loop computed the shots' guide features once), chosen on Korean held out by a
rule written before its scores (``docs/experiments.md``, "Within inversion's compute")."""


def within_inversion_compute_filter(config: ContextConfig, dataset: str) -> SampleFilter | None:
    """The fifth learner's :data:`WITHIN_INVERSION_COMPUTE_FILTERS` entry for ``dataset``, else ``None`` (another
    learner, or a dataset where its chosen test setting already stays within inversion's compute)."""
    return WITHIN_INVERSION_COMPUTE_FILTERS.get(dataset) if _is_fifth_learner(config) else None


@dataclass
class ContextMetaGAN:
    """Module templates (architecture only, on the ``meta`` device) and explicit parameters of a context meta-GAN.

    ``meta_params``: the generator's weights plus ``"context"`` (``c0``, ``[context_dim]``), for the
    :data:`LEARNED_RATE_RULES` ``"rates"`` (``[context_dim]``), with ``shot_encoder`` the encoder's weights
    (``"encoder.*"``);
    ``d_params``: the pair discriminator's weights;
    ``guide``, ``guide_params``: the frozen guide network's feature layers (template and weights) when the config has an
    ``inner_guide_weight`` (:func:`attach_guide`).
    """

    config: ContextConfig
    generator: ContextGenerator
    discriminator: PairDiscriminator
    meta_params: Params
    d_params: Params
    step: int = 0
    history: dict[str, list[float]] = field(default_factory=dict)
    encoder: ShotEncoder | None = None
    ema_params: Params | None = None
    guide: nn.Module | None = None
    guide_params: Params | None = None

    @property
    def device(self) -> torch.device:
        return self.meta_params["context"].device

    def generator_params(self, params: Params | None = None) -> Params:
        """The generator's weights among ``params`` (default: the meta-parameters)."""
        params = self.meta_params if params is None else params
        return {k: v for k, v in params.items() if k not in ("context", "rates") and not k.startswith(ENCODER)}

    def encoder_params(self, params: Params | None = None) -> Params:
        """The shot encoder's weights among ``params`` (default: the meta-parameters), without the prefix."""
        params = self.meta_params if params is None else params
        return {k[len(ENCODER) :]: v for k, v in params.items() if k.startswith(ENCODER)}

    def test_params(self) -> Params:
        """The parameters test time adapts and samples with (detached): the EMA when there is one, else the
        meta-parameters."""
        params = self.meta_params if self.ema_params is None else self.ema_params
        return {k: v.detach() for k, v in params.items()}


def new_context_gan(config: ContextConfig, device: torch.device | str = "cpu", seed: int = 0) -> ContextMetaGAN:
    """A fresh context meta-GAN with weights from ``seed``, ``c0 = 0`` (and Meta-SGD rates ``= inner_lr``)."""
    device = choose_device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = ContextGenerator(
            config.z_dim, config.context_dim, config.width, upsample=config.upsample, refine=config.refine
        )
        discriminator = PairDiscriminator(config.width)
        encoder = ShotEncoder(config.context_dim, config.width) if config.shot_encoder else None
    leaf = lambda t: t.detach().to(device).clone().requires_grad_(True)
    meta_params = {k: leaf(v) for k, v in generator.named_parameters()}
    meta_params["context"] = leaf(torch.zeros(config.context_dim))
    if config.rule in LEARNED_RATE_RULES:
        meta_params["rates"] = leaf(torch.full((config.context_dim,), config.inner_lr))
    if encoder is not None:
        meta_params.update({ENCODER + k: leaf(v) for k, v in encoder.named_parameters()})
    d_params = {k: leaf(v) for k, v in discriminator.named_parameters()}
    return ContextMetaGAN(
        config,
        template(generator),
        template(discriminator),
        meta_params,
        d_params,
        encoder=None if encoder is None else template(encoder),
    )


# the pretrained DCGAN's weight for each of the context generator's (``project.weight``: its noise columns)
WARM_START_WEIGHTS = {
    "project.bias": "project.bias",
    "norm1.weight": "net.0.weight",
    "norm1.bias": "net.0.bias",
    "up1.weight": "net.2.weight",
    "up1.bias": "net.2.bias",
    "norm2.weight": "net.3.weight",
    "norm2.bias": "net.3.bias",
    "up2.weight": "net.5.weight",
    "up2.bias": "net.5.bias",
}


def warm_started_context_gan(
    config: ContextConfig, pretrained: nn.Module, device: torch.device | str = "cpu", seed: int = 0
) -> ContextMetaGAN:
    """A context meta-GAN whose ``G(z, c0 = 0)`` is the pretrained DCGAN ``pretrained`` (a
    :class:`~metagan_lib.models.ConvGenerator` with the config's ``z_dim`` and ``width``), so that meta-learning starts
    from a generator of the seen classes: its weights are copied; the first layer's context columns keep their random
    start (through them the context moves the image from the first step) and FiLM starts at zero; the pair
    discriminator (and shot encoder) are fresh from ``seed``."""
    wanted = f"a ConvGenerator with z_dim {config.z_dim} and width {config.width} (the context config's)"
    if not isinstance(pretrained, ConvGenerator):
        raise ValueError(f"A warm start needs {wanted}, got a {type(pretrained).__name__}.")
    if config.upsample != "transposed":
        raise ValueError(
            f"A warm start copies a DCGAN's transposed convolutions; ContextConfig(upsample={config.upsample!r}) has "
            "none. Use upsample='transposed' with a warm start."
        )
    if config.refine:
        raise ValueError(
            f"A warm start copies a DCGAN's layers; ContextConfig(refine={config.refine}) adds a stage it lacks. "
            "Use refine=0 with a warm start."
        )
    if (pretrained.z_dim, pretrained.width) != (config.z_dim, config.width):
        raise ValueError(
            f"A warm start needs {wanted}, got ConvGenerator with z_dim {pretrained.z_dim}, width {pretrained.width}; "
            "set ContextConfig(z_dim=..., width=...) to the pretrained GAN's."
        )
    model = new_context_gan(config, device, seed)
    source = {k: v.detach().to(model.device) for k, v in pretrained.named_parameters()}
    with torch.no_grad():
        for target, name in WARM_START_WEIGHTS.items():
            model.meta_params[target].copy_(source[name])
        model.meta_params["project.weight"][:, : config.z_dim].copy_(source["project.weight"])
    return model


# ----------------------------------------------------------------------------------------------
# One task (pure functions of explicit parameters; vmap-able)
# ----------------------------------------------------------------------------------------------


def attach_guide(model: ContextMetaGAN, net: FeatureNet) -> ContextMetaGAN:
    """``model`` with ``net``'s feature layers (``net.body``, frozen) as its guide network."""
    checks.require(isinstance(net, FeatureNet), "guide network", type(net).__name__, "a FeatureNet")
    params = {k: v.detach().to(model.device).clone() for k, v in net.body.named_parameters()}
    return dataclasses.replace(model, guide=template(net.body), guide_params=params)


GUIDE_WIDTH = FEATURE_WIDTH // 2  # the guide network's channels, half the scoring network's: a cheaper inner step


def guide_network(
    path: Path | str,
    dataset: ImageDataset,
    steps: int,
    *,
    scoring_seed: int = 0,
    width: int = GUIDE_WIDTH,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> tuple[FeatureNet, dict]:
    """The guide term's network and its cache key: a :class:`~metagan_lib.evaluation.FeatureNet` of ``width``
    channels trained like notebook 06's scoring network on ``dataset``'s seen classes, but from the seed after the
    scoring network's (``scoring_seed + 1``), so the inner loop never sees the scoring network (cached at ``path``)."""
    seed = scoring_seed + 1
    net = train_or_load_feature_net(path, dataset, steps, seed=seed, width=width, device=device, progress=progress)
    return net, guide_network_key(dataset, steps, scoring_seed=scoring_seed, width=width)


def guide_network_key(dataset: ImageDataset, steps: int, *, scoring_seed: int = 0, width: int = GUIDE_WIDTH) -> dict:
    """The cache key of :func:`guide_network`'s network (trained from the seed after the scoring network's)."""
    return feature_net_key(dataset, steps, scoring_seed + 1, width)


def guide_features(model: ContextMetaGAN, images: torch.Tensor) -> torch.Tensor:
    """The guide network's L2-normalised features ``f``: images ``[B, 1, 28, 28]`` -> ``[B, d]``."""
    if model.guide is None:
        raise ValueError(
            "ContextConfig(inner_guide_weight > 0) needs a guide network: pass guide=(FeatureNet, key) to "
            "train_or_load_context_gan, or call attach_guide."
        )
    return F.normalize(functional_call(model.guide, model.guide_params, (images,)), dim=1)


def guide_prototype(model: ContextMetaGAN, images: torch.Tensor) -> torch.Tensor:
    """``mean_j f(images_j)``, the images' class prototype in the guide network's features: ``[K, 1, 28, 28]`` ->
    ``[d]``."""
    return guide_features(model, images).mean(0)


def guide_distance(
    model: ContextMetaGAN, samples: torch.Tensor, images: torch.Tensor, prototype: torch.Tensor | None = None
) -> torch.Tensor:
    """``|mean_i f(samples_i) - mean_j f(images_j)|^2``, ``f`` the guide network's L2-normalised features: how far the
    samples' class prototype lies from the images' (samples ``[M, 1, 28, 28]``, images ``[K, 1, 28, 28]``).
    ``prototype``: the images' :func:`guide_prototype` when already computed (the inner loop computes it once)."""
    prototype = guide_prototype(model, images) if prototype is None else prototype
    return (guide_prototype(model, samples) - prototype).pow(2).sum()


def guide_spread(model: ContextMetaGAN, images: torch.Tensor) -> torch.Tensor:
    """Mean distance over the pairs of distinct images in the guide network's L2-normalised features (their
    diversity as :func:`~metagan_lib.evaluation.mean_pairwise_distance` measures it, in the guide's features):
    ``[B, 1, 28, 28]`` -> a scalar. Differentiable everywhere (a pair at distance 0 has gradient 0)."""
    features = guide_features(model, images)
    n = len(features)
    squared = (features[:, None] - features[None]).pow(2).sum(-1)  # [B, B], exactly 0 on the diagonal
    distances = torch.where(squared > 0, squared.clamp_min(1e-12).sqrt(), torch.zeros_like(squared))
    return distances.sum() / (n * (n - 1))


def spread_shortfall(model: ContextMetaGAN, samples: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """``relu(spread(images) - spread(samples))`` (:func:`guide_spread`): how much less the samples spread than the
    images they fit (0 once they spread as much); the images' spread is a constant target."""
    return F.relu(guide_spread(model, images).detach() - guide_spread(model, samples))


def outer_loss(
    model: ContextMetaGAN, d_params: Params, support: torch.Tensor, target: torch.Tensor, fake: torch.Tensor
) -> torch.Tensor:
    """The outer loss of adapted samples ``fake`` ``[B, ...]``: ``chamfer(fake, target)`` + ``adv_weight`` x the pair
    discriminator's ``-log D([shot, fake])``, + ``outer_spread_weight`` x :func:`spread_shortfall` when that is
    positive (``target``: the query images, or the shots for plain Reptile)."""
    loss = set_distance(model, fake, target) + model.config.adv_weight * adversarial_loss(
        model, d_params, support, fake
    )
    if model.config.outer_spread_weight:
        loss = loss + model.config.outer_spread_weight * spread_shortfall(model, fake, target)
    return loss


def generate(model: ContextMetaGAN, g_params: Params, z: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """``G(z, c)`` with explicit generator weights: ``z [B, z_dim]``, ``context [context_dim]`` ->
    ``[B, 1, 28, 28]``."""
    return functional_call(model.generator, g_params, (z, context))


def initial_context(model: ContextMetaGAN, params: Params, support: torch.Tensor) -> torch.Tensor:
    """Where the inner loop starts: ``c0`` (``params["context"]``), plus ``E(support)`` with a shot encoder
    (support ``[K, 1, 28, 28]`` -> ``[context_dim]``)."""
    if model.encoder is None:
        return params["context"]
    return params["context"] + functional_call(model.encoder, model.encoder_params(params), (support,))


def set_distance(model: ContextMetaGAN, samples: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """The inner and outer losses' distance: the chamfer distance at the config's ``blur``."""
    return chamfer_distance(samples, images, model.config.blur)


def inner_loss(
    model: ContextMetaGAN,
    g_params: Params,
    d_params: Params | None,
    context: torch.Tensor,
    z: torch.Tensor,
    support: torch.Tensor,
    support_prototype: torch.Tensor | None = None,
) -> torch.Tensor:
    """What the inner loop descends: ``chamfer(G(z, c), support)``, plus ``inner_adv_weight`` x the pair
    discriminator's ``-log D([shot, G(z, c)])`` when that weight is positive (``d_params`` then required), plus
    ``inner_guide_weight`` x the :func:`guide_distance` when that one is (``support_prototype``: the shots'
    :func:`guide_prototype`, if already computed; it does not depend on ``c``)."""
    samples = generate(model, g_params, z, context)
    loss = set_distance(model, samples, support)
    if model.config.inner_adv_weight:
        if d_params is None:
            raise ValueError("ContextConfig(inner_adv_weight > 0) needs the discriminator's weights: pass d_params.")
        loss = loss + model.config.inner_adv_weight * adversarial_loss(model, d_params, support, samples)
    if model.config.inner_guide_weight:
        loss = loss + model.config.inner_guide_weight * guide_distance(model, samples, support, support_prototype)
    return loss


def inner_trajectory(
    model: ContextMetaGAN,
    params: Params,
    support: torch.Tensor,
    noise: torch.Tensor,
    first_order: bool = False,
    d_params: Params | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The inner loop: ``c <- c - alpha * grad_c L(c)`` from :func:`initial_context`, ``L`` the :func:`inner_loss`.

    Args:
        params: meta-parameters (generator weights, ``context``, optional ``rates``).
        support: the K shots ``[K, 1, 28, 28]`` in [-1, 1].
        noise: ``[steps, M, z_dim]``, one batch of noise per inner step.
        first_order: treat the inner gradients as constants.
        d_params: the pair discriminator's weights, held fixed (needed when ``inner_adv_weight > 0``).

    Returns:
        The adapted context ``c_S`` ``[context_dim]`` and the sum of the inner gradients ``G`` ``[context_dim]``, so
        that ``c_S = c_init - alpha * G`` (the rates are the same at every step).
    """
    g_params, context = model.generator_params(params), initial_context(model, params, support)
    rates = params.get("rates", model.config.inner_lr)
    prototype = guide_prototype(model, support) if model.config.inner_guide_weight else None  # the same at every step
    total = torch.zeros_like(context)
    for z in noise:
        step = grad(lambda c: inner_loss(model, g_params, d_params, c, z, support, prototype))(context)
        step = step.detach() if first_order else step
        context, total = context - rates * step, total + step
    return context, total


def inner_adapt(
    model: ContextMetaGAN,
    params: Params,
    support: torch.Tensor,
    noise: torch.Tensor,
    first_order: bool = False,
    d_params: Params | None = None,
) -> torch.Tensor:
    """The adapted context ``[context_dim]`` of :func:`inner_trajectory` (same arguments)."""
    return inner_trajectory(model, params, support, noise, first_order, d_params)[0]


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
    """One task's :func:`outer_loss` on the query images and the adapted samples ``[B, ...]``."""
    context = inner_adapt(model, params, support, inner_noise, first_order, d_params)
    fake = generate(model, model.generator_params(params), outer_noise, context)
    return outer_loss(model, d_params, support, query, fake), fake


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


def gradient_rule(first_order: bool) -> Callable:
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
    weights on the :func:`outer_loss` of ``G(z, c)`` against ``target`` (the shots for ``reptile``, the query images
    for ``reptile-query``).

    With learned rates (``params["rates"]``, ``reptile-query-sgd``) the adapted parameters hold ``rates - dL/d rates``
    too, ``L`` that loss at the adapted context ``c_S = c_init - rates * G`` with the inner gradients' sum ``G`` held
    constant (first order): ``dL/d rates = -G * dL/dc_S``, so that the Reptile direction of the rates is their
    (mean) first-order Meta-SGD gradient.

    Returns the adapted parameters, that loss and the samples it scored."""
    context, total = inner_trajectory(model, params, support, inner_noise, first_order=True, d_params=d_params)
    context, total = context.detach(), total.detach()

    def task_loss(p):
        fake = generate(model, model.generator_params(p), outer_noise, p["context"])
        loss = outer_loss(model, d_params, support, target, fake)
        return loss, (loss, fake)

    start = {**{k: v.detach() for k, v in model.generator_params(params).items()}, "context": context}
    grads, (loss, fake) = grad(task_loss, has_aux=True)(start)
    adapted = {k: v - model.config.reptile_lr * grads[k] for k, v in start.items()}
    if "rates" in params:
        adapted["rates"] = params["rates"].detach() + total * grads["context"]
    return adapted, loss, fake


def reptile_rule(fit_query: bool) -> Callable:
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
        directions = {k: (v - adapted[k].mean(0)).detach() for k, v in model.meta_params.items() if k in adapted}
        if model.encoder is not None:
            directions.update(amortised_start_directions(model, support, adapted["context"]))
        return directions, losses, fakes

    return reptile_directions


def amortised_start_directions(model: ContextMetaGAN, support: torch.Tensor, adapted: torch.Tensor) -> Params:
    """Reptile's directions for an encoder start ``c_init(S_i) = c0 + E(S_i)``: the gradients of
    ``0.5 * mean_i ||c_init(S_i) - c'_i||^2`` for ``c0`` and the encoder (support ``[T, K, ...]``, adapted contexts
    ``c'`` ``[T, context_dim]``). For ``c0`` this is ``mean_i (c_init(S_i) - c'_i)``, Reptile's own rule."""
    names = ["context", *(k for k in model.meta_params if k.startswith(ENCODER))]
    starts = vmap(lambda s: initial_context(model, model.meta_params, s))(support)
    loss = 0.5 * (starts - adapted.detach()).pow(2).sum(-1).mean()
    return dict(zip(names, torch.autograd.grad(loss, [model.meta_params[k] for k in names])))


OUTER_RULES_DISPATCH = {
    "maml": gradient_rule(False),
    "fomaml": gradient_rule(True),
    "meta-sgd": gradient_rule(False),
    "reptile": reptile_rule(fit_query=False),
    "reptile-query": reptile_rule(fit_query=True),
    "reptile-query-sgd": reptile_rule(fit_query=True),  # the rates' direction comes from reptile_task
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
        checks.same_device("sampler.device", sampler.device, model.device, "make the TaskSampler with that device")
        self.model, self.sampler, self.vectorised = model, sampler, vectorised
        self.noise = seeds.generator(seed, "meta-training noise", device=model.device)
        self.meta_optimizer = torch.optim.Adam(model.meta_params.values(), lr=model.config.meta_lr, betas=ADAM_BETAS)
        self.d_optimizer = torch.optim.Adam(model.d_params.values(), lr=model.config.d_lr, betas=ADAM_BETAS)
        for key in ("step", "outer_loss", "d_loss"):
            model.history.setdefault(key, [])
        if model.config.ema_decay is not None and model.ema_params is None:
            model.ema_params = {k: v.detach().clone() for k, v in model.meta_params.items()}

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
        if model.ema_params is not None:
            with torch.no_grad():
                for k, v in model.meta_params.items():
                    model.ema_params[k].lerp_(v, 1.0 - cfg.ema_decay)
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
        monitored_steps(
            lambda: dict(zip(("outer_loss", "d_loss"), self.step())),
            steps,
            lambda: self.model.step,
            description=description,
            progress=progress,
            log_dir=log_dir,
            postfix_every=20,
        )
        return self.model


# ----------------------------------------------------------------------------------------------
# Test time: adapt contexts to K shots of new classes, then sample
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def adapt_contexts(model: ContextMetaGAN, support: torch.Tensor, steps: int, seed: int = 0) -> torch.Tensor:
    """Contexts ``[C, context_dim]`` adapted to ``C`` classes at once (support ``[C, K, 1, 28, 28]``), ``steps`` inner
    steps."""
    support = checks.signed_images(support, "support images", model.meta_params["context"].dtype)
    checks.require(support.ndim == 5, "support images shape", tuple(support.shape), "[classes, K, 1, 28, 28]")
    checks.non_negative_int("steps", steps)
    classes = len(support)
    params = model.test_params()
    if steps == 0:
        return vmap(lambda s: initial_context(model, params, s))(support.to(model.device))
    noise = class_noise(seed, classes, (steps, model.config.inner_samples, model.config.z_dim), "adapt", model.device)
    d_params = {k: v.detach() for k, v in model.d_params.items()}
    adapt = lambda s, n: inner_adapt(model, params, s, n, first_order=True, d_params=d_params)
    return vmap(adapt)(support.to(model.device), noise)


@torch.no_grad()
def sample_contexts(
    model: ContextMetaGAN, contexts: torch.Tensor, n: int, seed: int = 0, scale: float = 1.0
) -> torch.Tensor:
    """``n`` images per context: contexts ``[C, context_dim]`` -> ``[C, n, 1, 28, 28]``, from ``z ~ N(0, scale^2 I)``
    (``scale`` 1: the noise of meta-training)."""
    checks.positive_int("n", n)
    checks.positive("scale", scale)
    dim = model.config.context_dim
    checks.require(
        contexts.ndim == 2 and contexts.shape[1] == dim, "contexts.shape", tuple(contexts.shape), f"[classes, {dim}]"
    )
    z = class_noise(seed, len(contexts), (n, model.config.z_dim), "sample", model.device) * scale
    g_params = model.generator_params(model.test_params())
    return vmap(lambda c, zz: generate(model, g_params, zz, c))(contexts.to(model.device), z)


def adapt_and_sample(
    model: ContextMetaGAN, support: torch.Tensor, steps: int, n: int, seed: int = 0, scale: float = 1.0
) -> torch.Tensor:
    """Adapt to each class's shots ``[C, K, ...]`` and draw ``n`` images per class ``[C, n, 1, 28, 28]`` (``scale``:
    the sampling noise's, :func:`sample_contexts`)."""
    return sample_contexts(model, adapt_contexts(model, support, steps, seed), n, seed, scale)


@torch.no_grad()
def pair_scores(model: ContextMetaGAN, support: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
    """The pair discriminator's logit for ``[shot, sample]``, averaged over a class's K shots: support
    ``[C, K, 1, 28, 28]``, samples ``[C, M, 1, 28, 28]`` -> ``[C, M]`` (higher: more like another image of the
    class)."""
    support, samples = _judged_pairs(model, support, samples)
    d_params = {k: v.detach() for k, v in model.d_params.items()}
    shots = support.shape[1]

    def one_class(class_shots: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        pairs = pair_up(class_shots, images.repeat_interleave(shots, dim=0))  # each image beside every shot
        return functional_call(model.discriminator, d_params, (pairs,)).reshape(len(images), shots).mean(1)

    return torch.stack([one_class(s, x) for s, x in zip(support, samples)])


def _judged_pairs(model: ContextMetaGAN, support: torch.Tensor, samples: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """A judge's inputs checked and converted (uint8 or [-1, 1] images, on the model's device and dtype): support
    ``[C, K, 1, 28, 28]`` and samples ``[C, M, 1, 28, 28]`` for the same C classes."""
    dtype = model.meta_params["context"].dtype
    support = checks.signed_images(support, "support images", dtype).to(model.device)
    samples = checks.signed_images(samples, "samples", dtype).to(model.device)
    checks.require(support.dim() == 5, "support images.shape", tuple(support.shape), "[C, K, 1, 28, 28]")
    checks.require(samples.dim() == 5, "samples.shape", tuple(samples.shape), "[C, M, 1, 28, 28]")
    checks.require(
        len(samples) == len(support),
        "samples.shape",
        tuple(samples.shape),
        f"one row per class of the support, [{len(support)}, M, 1, 28, 28]",
    )
    return support, samples


def class_guide_features(model: ContextMetaGAN, images: torch.Tensor) -> torch.Tensor:
    """:func:`guide_features` of each class's images: ``[C, M, 1, 28, 28]`` -> ``[C, M, d]``."""
    return guide_features(model, images.to(model.device).flatten(0, 1)).unflatten(0, images.shape[:2])


def _feature_distances(shot_features: torch.Tensor, sample_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distances of each sample's features ``[C, M, d]`` to its class's shots' prototype (``[C, M]``) and to
    each of its shots' features ``[C, K, d]`` (``[C, M, K]``)."""
    to_prototype = (sample_features - shot_features.mean(1, keepdim=True)).pow(2).sum(-1)
    return to_prototype, torch.cdist(sample_features, shot_features).pow(2)


def _prototype_nearness(to_prototype: torch.Tensor, to_shots: torch.Tensor) -> torch.Tensor:
    return -to_prototype


def _novelty(to_prototype: torch.Tensor, to_shots: torch.Tensor) -> torch.Tensor:
    return to_shots.min(-1).values - to_prototype


FEATURE_JUDGES = {"guide": _prototype_nearness, "guide-novelty": _novelty}  # judges scoring guide-feature distances


@torch.no_grad()
def guide_scores(model: ContextMetaGAN, support: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
    """Minus the squared distance of each sample's guide features to the mean guide features of its class's shots
    (L2-normalised, as in :func:`guide_distance`): support ``[C, K, 1, 28, 28]``, samples ``[C, M, 1, 28, 28]`` ->
    ``[C, M]`` (higher: nearer the shots' prototype)."""
    support, samples = _judged_pairs(model, support, samples)
    features = class_guide_features(model, support), class_guide_features(model, samples)
    return _prototype_nearness(*_feature_distances(*features))


@torch.no_grad()
def guide_novelty_scores(model: ContextMetaGAN, support: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
    """How much nearer each sample lies to its shots' prototype than to its nearest shot, in the guide network's
    features: ``min_k |f(x) - f(s_k)|^2 - |f(x) - mean_k f(s_k)|^2`` (``[C, M]``; higher: a new instance of the class
    rather than a copy of one shot; a copy of a shot scores below 0)."""
    support, samples = _judged_pairs(model, support, samples)
    features = class_guide_features(model, support), class_guide_features(model, samples)
    return _novelty(*_feature_distances(*features))


SELECTION_JUDGES = {"discriminator": pair_scores, "guide": guide_scores, "guide-novelty": guide_novelty_scores}


@dataclass(frozen=True)
class SampleSelection:
    """A context meta-GAN sampled with a filter: ``oversample`` x ``n`` images drawn per class after adaptation, the
    ``n`` its ``judge`` scores highest kept. ``"discriminator"``: the pair discriminator's :func:`pair_scores`
    (discriminator rejection sampling, Azadi et al. 2019, in its simplest form); ``"guide"``: nearness to the shots'
    prototype in the guide network's features, :func:`guide_scores`; ``"guide-novelty"``: nearer that prototype than
    to any one shot, :func:`guide_novelty_scores`. ``spread > 0`` keeps them greedily instead, each next sample the one
    whose score plus ``spread`` x its squared guide-feature distance to the nearest sample already kept is highest
    (:func:`keep_spread_out`), so the filter does not keep near-duplicates."""

    model: ContextMetaGAN
    oversample: int
    judge: str = "discriminator"
    spread: float = 0.0

    def __post_init__(self) -> None:
        checks.positive_int("oversample", self.oversample)
        if self.judge not in SELECTION_JUDGES:
            raise ValueError(f"Unknown selection judge {self.judge!r}; choose one of {', '.join(SELECTION_JUDGES)}.")
        if not self.spread >= 0:
            raise ValueError(f"spread must be >= 0 (0: keep the top-scored samples), got {self.spread}")
        needs_guide = self.judge.startswith("guide") or self.spread > 0
        if needs_guide and self.model.guide is None:
            what = f"judge={self.judge!r}" if self.judge.startswith("guide") else f"spread={self.spread}"
            raise ValueError(f"{what} needs a model with a guide network (inner_guide_weight > 0)")


def keep_spread_out(scores: torch.Tensor, features: torch.Tensor, n: int, spread: float) -> torch.Tensor:
    """Greedy maximal-marginal-relevance selection: per row of ``scores [C, M]`` (features ``[C, M, d]``), first the
    top-scored sample, then repeatedly the one maximising ``score + spread * min_kept |f - f_kept|^2``; returns the
    ``n`` kept indices ``[C, n]`` in the order kept (``spread = 0``: the top ``n`` by score)."""
    checks.positive_int("n", n)
    checks.require(n <= scores.shape[1], "n", n, f"at most the {scores.shape[1]} samples to choose from")
    checks.non_negative("spread", spread)
    rows = torch.arange(len(scores), device=scores.device)
    pairwise = torch.cdist(features, features).pow(2)  # [C, M, M]
    taken = torch.zeros_like(scores, dtype=torch.bool)
    nearest_kept, kept = torch.zeros_like(scores), []
    for _ in range(n):
        pick = (scores + spread * nearest_kept).masked_fill(taken, float("-inf")).argmax(1)  # [C]
        taken[rows, pick] = True
        to_pick = pairwise[rows, pick]  # [C, M]
        nearest_kept = to_pick if not kept else torch.minimum(nearest_kept, to_pick)
        kept.append(pick)
    return torch.stack(kept, dim=1)


def adapt_and_select(
    selection: SampleSelection, support: torch.Tensor, steps: int, n: int, seed: int = 0, scale: float = 1.0
) -> torch.Tensor:
    """:func:`adapt_and_sample` drawing ``oversample * n`` images per class and keeping the ``n`` the selection's
    judge scores highest (spread out when ``selection.spread > 0``), in the order drawn: ``[C, n, 1, 28, 28]``."""
    model = selection.model
    checks.positive_int("n", n)
    support = checks.signed_images(support, "support images", model.meta_params["context"].dtype).to(model.device)
    drawn = sample_contexts(model, adapt_contexts(model, support, steps, seed), n * selection.oversample, seed, scale)
    with torch.no_grad():  # the drawn images' guide features, computed once for the judge and the spread
        needs_features = selection.judge in FEATURE_JUDGES or selection.spread > 0
        features = class_guide_features(model, drawn) if needs_features else None  # [C, M, d]
        if selection.judge in FEATURE_JUDGES:
            distances = _feature_distances(class_guide_features(model, support), features)
            scores = FEATURE_JUDGES[selection.judge](*distances)
        else:
            scores = SELECTION_JUDGES[selection.judge](model, support, drawn)
    if selection.spread > 0:
        keep = keep_spread_out(scores, features, n, selection.spread).sort(dim=1).values
    else:
        keep = scores.topk(n, dim=1).indices.sort(dim=1).values  # [C, n]
    return drawn[torch.arange(len(drawn), device=drawn.device)[:, None], keep]


@dataclass(frozen=True)
class ScaledSampling:
    """A context meta-GAN, or a :class:`SampleSelection` of one, whose samples after adaptation are drawn from
    ``z ~ N(0, scale^2 I)`` instead of meta-training's ``N(0, I)`` (the inner loop's noise unchanged): a wider noise
    spreads a class's samples (more diversity), at the risk of leaving the class."""

    sampler: ContextMetaGAN | SampleSelection
    scale: float

    def __post_init__(self) -> None:
        checks.positive("scale", self.scale)
        if not isinstance(self.sampler, (ContextMetaGAN, SampleSelection)):
            raise TypeError(
                f"ScaledSampling needs a ContextMetaGAN or a SampleSelection, got {type(self.sampler).__name__}."
            )


def adapt_and_sample_scaled(
    scaled: ScaledSampling, support: torch.Tensor, steps: int, n: int, seed: int = 0
) -> torch.Tensor:
    """:func:`adapt_and_sample` (or :func:`adapt_and_select`, for a selection) with the sampling noise scaled by
    ``scaled.scale``: ``[C, n, 1, 28, 28]``."""
    sample = adapt_and_select if isinstance(scaled.sampler, SampleSelection) else adapt_and_sample
    return sample(scaled.sampler, support, steps, n, seed, scaled.scale)


@dataclass(frozen=True)
class PerShotContexts:
    """A context meta-GAN adapted to each shot alone: one context per shot, as latent inversion keeps one latent per
    shot, and a class's samples drawn from its K contexts in turn (shot 1, 2, ..., K, 1, 2, ...)."""

    model: ContextMetaGAN

    def __post_init__(self) -> None:
        if not isinstance(self.model, ContextMetaGAN):
            raise TypeError(f"PerShotContexts needs a ContextMetaGAN, got {type(self.model).__name__}.")


def adapt_each_shot(model: ContextMetaGAN, support: torch.Tensor, steps: int, seed: int = 0) -> torch.Tensor:
    """One context adapted to each shot alone, each shot a 1-shot task: support ``[C, K, 1, 28, 28]`` ->
    ``[C, K, context_dim]`` (:func:`adapt_contexts` on the C x K shots)."""
    support = checks.signed_images(support, "support images", model.meta_params["context"].dtype)
    checks.require(support.ndim == 5, "support images shape", tuple(support.shape), "[classes, K, 1, 28, 28]")
    classes, shots = support.shape[:2]
    one_shot_tasks = support.reshape(classes * shots, 1, *support.shape[2:])
    return adapt_contexts(model, one_shot_tasks, steps, seed).view(classes, shots, -1)


def adapt_per_shot_and_sample(
    per_shot: PerShotContexts, support: torch.Tensor, steps: int, n: int, seed: int = 0
) -> torch.Tensor:
    """Adapt one context to each of the C x K shots (:func:`adapt_each_shot`) and draw ``n`` images per class, sample
    ``j`` from shot ``j mod K``'s context: support ``[C, K, 1, 28, 28]`` -> ``[C, n, 1, 28, 28]``."""
    checks.positive_int("n", n)
    contexts = adapt_each_shot(per_shot.model, support, steps, seed)  # [C, K, context_dim]
    classes, shots = contexts.shape[:2]
    contexts = contexts.flatten(0, 1)  # [C * K, context_dim]
    per_context = -(-n // shots)  # ceil(n / K)
    drawn = sample_contexts(per_shot.model, contexts, per_context, seed)  # [C * K, per_context, 1, 28, 28]
    drawn = drawn.view(classes, shots, per_context, *drawn.shape[2:]).transpose(1, 2)  # [C, per_context, K, ...]
    return drawn.reshape(classes, per_context * shots, *drawn.shape[3:])[:, :n]


@dataclass(frozen=True)
class MixedShotContexts:
    """One context adapted to each shot alone (as :class:`PerShotContexts`), each sample drawn from its own random
    convex mix of the class's K contexts, as MatchingGAN and F2GAN fuse the shots' features with random weights:
    weights ``softmax(g / temperature)``, ``g ~ N(0, I_K)``; a low temperature puts each sample on one shot's context
    (near :class:`PerShotContexts`), a high one on the K contexts' mean. ``scale``: the sampling noise's, as in
    :func:`sample_contexts`."""

    model: ContextMetaGAN
    temperature: float
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.model, ContextMetaGAN):
            raise TypeError(f"MixedShotContexts needs a ContextMetaGAN, got {type(self.model).__name__}.")
        checks.positive("temperature", self.temperature)
        checks.positive("scale", self.scale)


def mixing_weights(
    seed: int, classes: int, n: int, shots: int, temperature: float, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Random convex weights ``[classes, n, shots]`` (each row sums to 1): ``softmax(g / temperature)``, ``g`` the
    seed rule's class noise of stream ``"mix"``."""
    checks.positive("temperature", temperature)
    return torch.softmax(class_noise(seed, classes, (n, shots), "mix", device) / temperature, dim=-1)


@torch.no_grad()
def adapt_mixed_shots_and_sample(
    mixed: MixedShotContexts, support: torch.Tensor, steps: int, n: int, seed: int = 0
) -> torch.Tensor:
    """Adapt one context to each of the C x K shots (:func:`adapt_each_shot`) and draw ``n`` images per class, each
    from a random mix of its class's K contexts (:func:`mixing_weights`): support ``[C, K, 1, 28, 28]`` ->
    ``[C, n, 1, 28, 28]``."""
    checks.positive_int("n", n)
    model = mixed.model
    contexts = adapt_each_shot(model, support, steps, seed)  # [C, K, context_dim]
    classes, shots = contexts.shape[:2]
    weights = mixing_weights(seed, classes, n, shots, mixed.temperature, model.device)
    mixes = torch.einsum("cnk,ckd->cnd", weights, contexts)  # [C, n, context_dim]
    z = class_noise(seed, classes, (n, 1, model.config.z_dim), "sample", model.device) * mixed.scale
    g_params = model.generator_params(model.test_params())
    one = lambda c, zz: generate(model, g_params, zz, c)[0]  # one sample from its own context
    return vmap(vmap(one))(mixes, z)


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
        "ema_params": None if model.ema_params is None else cpu(model.ema_params),
        "guide_params": None if model.guide_params is None else cpu(model.guide_params),
    }


def load_context_gan(path: Path | str, device: torch.device | str = "cpu") -> ContextMetaGAN:
    """Read a model written by :func:`save_context_gan` or :func:`train_or_load_context_gan`."""
    how = "train it with train_or_load_context_gan"
    return load_stored(path, device, _context_gan_from_payload, "context meta-GAN", how)


def _context_gan_from_payload(payload: dict, device: torch.device | str) -> ContextMetaGAN:
    model = new_context_gan(ContextConfig(**payload["config"]), device)
    for name, target in (("meta_params", model.meta_params), ("d_params", model.d_params)):
        check_same_parameters(target, payload[name], name)
        for k in target:
            target[k] = payload[name][k].to(device).clone().requires_grad_(True)
    model.step, model.history = payload["step"], payload["history"]
    if payload.get("ema_params") is not None:
        check_same_parameters(model.meta_params, payload["ema_params"], "ema_params")
        model.ema_params = {k: v.to(device) for k, v in payload["ema_params"].items()}
    if payload.get("guide_params") is not None:
        saved = payload["guide_params"]
        checks.require("0.weight" in saved, "guide_params", sorted(saved)[:3], "a FeatureNet body's (0.weight, ...)")
        guide = FeatureNet(num_classes=1, width=saved["0.weight"].shape[0]).body  # its width: the first layer's
        check_same_parameters(dict(guide.named_parameters()), saved, "guide_params")
        model.guide, model.guide_params = template(guide), {k: v.to(device) for k, v in saved.items()}
    return model


def train_or_load_context_gan(
    path: Path | str,
    config: ContextConfig,
    sampler: TaskSampler,
    meta_steps: int,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
    description: str = "context meta-training",
    warm_start: tuple[nn.Module, dict] | None = None,
    guide: tuple[FeatureNet, dict] | None = None,
) -> ContextMetaGAN:
    """The model cached at ``path`` under :func:`~metagan_lib.artifacts.meta_training_key`, else a freshly meta-trained
    one (saved there), its tasks drawn from ``sampler.restarted()`` (what the key's sampler seed names, whatever
    ``sampler`` drew before). ``warm_start``: a pretrained DCGAN generator and the cache key it was trained under;
    meta-training then starts from it (:func:`warm_started_context_gan`) and the key records it. ``guide``: the guide
    network a config with ``inner_guide_weight > 0`` needs (a :class:`~metagan_lib.evaluation.FeatureNet` of the
    seen classes) and its cache key, which the key records."""
    if bool(config.inner_guide_weight) != (guide is not None):
        raise ValueError(
            f"ContextConfig(inner_guide_weight={config.inner_guide_weight:g}) "
            + ("needs guide=(FeatureNet, key)." if guide is None else "has no guide term: pass guide=None.")
        )

    def build() -> ContextMetaGAN:
        start = (
            new_context_gan(config, device, seed=seed)
            if warm_start is None
            else warm_started_context_gan(config, warm_start[0], device, seed=seed)
        )
        start = start if guide is None else attach_guide(start, guide[0])
        return ContextTrainer(start, sampler.restarted(), seed=seed).train(
            meta_steps, progress=progress, description=description
        )

    key = context_gan_key(
        config, sampler, meta_steps, seed,
        warm_start_key=None if warm_start is None else warm_start[1], guide_key=None if guide is None else guide[1],
    )  # fmt: skip
    return load_or_build(
        path,
        key,
        build,
        to_payload=_context_gan_payload,
        from_payload=lambda payload: _context_gan_from_payload(payload, device),
        device=device,
    )


def context_gan_key(
    config: ContextConfig,
    sampler: TaskSampler,
    meta_steps: int,
    seed: int,
    *,
    warm_start_key: dict | None = None,
    guide_key: dict | None = None,
) -> dict:
    """The cache key of :func:`train_or_load_context_gan`'s model: :func:`~metagan_lib.artifacts.meta_training_key`,
    and the keys of the pretrained generator it started from and of its guide network, where it has them."""
    key = meta_training_key("context-gan", config, sampler, meta_steps, seed)
    if warm_start_key is not None:
        key["warm_start"] = warm_start_key
    if guide_key is not None:
        key["guide"] = guide_key
    return key
