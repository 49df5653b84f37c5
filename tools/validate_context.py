"""Choose between context meta-GAN candidates on *seen*-class validation tasks (unseen classes are never touched).

The seen classes are split once (fixed seed) into meta-training classes and ``--held-out`` validation
classes; a feature network is trained on the meta-training classes only; every candidate is
meta-trained on them and scored on 20-way, K = 5 validation tasks with notebook 06's metrics
(per-class distance, class fidelity, diversity, copy score), against real held-out images and the
copied shots. Example (Reptile's weights step on the shots or on the query images, ~7 min on 2 cores)::

    python tools/validate_context.py --rules reptile reptile-query --inner-steps 3

On Omniglot, whose unseen characters come from alphabets never meta-trained on, ``--held-out-alphabets`` holds out
every seen character of the named alphabets instead, so that validation asks for new alphabets as the final test does.
``--rotated-classes`` meta-trains (and trains the guide network) on each training class turned 90, 180 and 270 degrees
too, as three new classes.

``--test-unseen`` scores candidates already chosen here on the real split instead: meta-trained on all seen classes,
notebook 06's feature network (loaded from its cache, or trained there), 20-way K = 5 tasks of the unseen classes.
It is the final test of a choice, not a way to make one.

Candidates vary the outer rule, the inner steps, the meta-steps, the adversarial weight, a blur before the chamfer
distances, the generator's upsampling, its width and a refine stage, the context's size and the inner step, the
Adam learning rates of the meta-parameters and of the pair discriminator, the tasks per meta-step, a discriminator
term and a guide network's term in the inner loss, a spread term in the outer loss, a shot encoder, a warm start from
a pretrained DCGAN and a moving average of the meta-parameters (see ``--help``);
``--samples FOLDER`` writes each candidate's samples beside the shots of 6 evaluated classes; ``--test-steps`` scores
each candidate after several numbers of test-time inner steps, ``--test-setting`` with one inner-loop setting changed at
test time (no retraining), ``--select R --select-by JUDGE`` with R times the samples drawn and the best kept by the pair
discriminator or the guide network (``context.SampleSelection``), ``--select-spread S`` keeping them spread apart (with
``--test-setting`` too, each test setting is also scored filtered), ``--sample-scale S`` each scored method (filtered
too) with its samples drawn from ``z ~ N(0, S^2 I)`` (``context.ScaledSampling``), ``--per-shot`` with one context
adapted to each shot alone (``context.PerShotContexts``), ``--mix-shots T`` each sample from a random mix of those
contexts (``context.MixedShotContexts``);
``--fit-check`` scores them on meta-training classes
too (the feature network has seen those classes, so compare the candidate with the real images of the same table).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from metagan_lib import context, evaluation, fewshot, plotting, profiles, runtime
from metagan_lib.context import ContextConfig
from metagan_lib.data import load_dataset, omniglot_alphabet, with_rotated_seen_classes
from metagan_lib.models import UPSAMPLING
from metagan_lib.paths import DatasetError, cache_dir
from metagan_lib.seeds import derive_seed
from metagan_lib.tasks import TaskSampler
from metagan_lib.train import GANConfig, run_key

METRICS = (
    "class_frechet_distance",
    "class_fidelity",
    "diversity",
    "copy_score",
    "class_coverage",
)  # the printed columns


def validation_split(dataset, held_out: int, seed: int = 0):
    """The dataset with ``held_out`` seen classes moved to the evaluated ("unseen") side, the rest kept for training."""
    g = torch.Generator().manual_seed(derive_seed(seed, "validation classes"))
    chosen = dataset.seen_classes[torch.randperm(len(dataset.seen_classes), generator=g)[:held_out]].sort().values
    keep = dataset.seen_classes[~torch.isin(dataset.seen_classes, chosen)]
    return dataclasses.replace(dataset, seen_classes=keep, unseen_classes=chosen)


def seen_class_alphabets(dataset) -> dict[int, str]:
    """``{seen class: its alphabet}`` for Omniglot (class names ``"Korean/character07"``); empty for other datasets."""
    if dataset.name != "omniglot":
        return {}
    return {c: omniglot_alphabet(dataset.class_names[c]) for c in dataset.seen_classes.tolist()}


def alphabet_split(dataset, alphabets: Sequence[str]):
    """The dataset with every seen class of ``alphabets`` moved to the evaluated side: validation on new alphabets,
    as the unseen Omniglot classes are (a whole alphabet the meta-learner never drew from)."""
    class_alphabet = seen_class_alphabets(dataset)
    if not class_alphabet:
        raise ValueError(f"{dataset.name}'s classes belong to no alphabets: hold out classes with --held-out instead")
    seen_alphabets = sorted(set(class_alphabet.values()))
    unknown = sorted(set(alphabets) - set(seen_alphabets))
    if unknown:
        raise ValueError(f"{', '.join(unknown)} not among the seen alphabets ({', '.join(seen_alphabets)})")
    chosen = [c for c, alphabet in class_alphabet.items() if alphabet in alphabets]
    chosen = torch.tensor(chosen, dtype=dataset.seen_classes.dtype).sort().values
    keep = dataset.seen_classes[~torch.isin(dataset.seen_classes, chosen)]
    if len(keep) == 0:
        raise ValueError("holding out every seen alphabet leaves no class to meta-train on: name fewer alphabets")
    return dataclasses.replace(dataset, seen_classes=keep, unseen_classes=chosen)


def evaluation_split(dataset, held_out: int, test_unseen: bool, split_seed: int = 0, alphabets: Sequence[str] = ()):
    """The real split for the final test (``test_unseen``), else the seen classes of ``alphabets`` held out
    (:func:`alphabet_split`), else :func:`validation_split` with ``split_seed``."""
    if test_unseen:
        return dataset
    return alphabet_split(dataset, alphabets) if alphabets else validation_split(dataset, held_out, split_seed)


def pretrained_generator(data, folder, args):
    """The warm start's DCGAN and its cache key: notebook 02's long run for ``--test-unseen``, else a run of
    ``--warm-start-steps`` on the validation split's training classes (cached in ``folder``)."""
    if args.test_unseen:
        path, config = fewshot.pretrained_gan_job("full", args.dataset, 0)
    else:
        path, config = (
            folder / f"gan_{args.warm_start_steps}.pt",
            GANConfig(architecture="conv", steps=args.warm_start_steps),
        )
    run = fewshot.pretrain_on_seen(data, config, path, seed=0)
    images, _ = data.subset(data.seen_classes)
    return run.sampling_generator, run_key(images, config, 0)


def guide_network(data, folder: Path, steps: int, width: int, tag: str = ""):
    """:func:`~metagan_lib.context.guide_network` of the training classes, cached in ``folder`` (``tag`` names it)."""
    name = "guide_net" if width == evaluation.FEATURE_WIDTH else f"guide_net_width{width}"
    return context.guide_network(folder / f"{name}{tag}.pt", data, steps, width=width)


# the candidate settings that are ContextConfig fields (and options of the same name): (printed label, cache-file tag)
SETTINGS = {
    "adv_weight": (", adversarial weight {:g}", "_adv{:g}"),
    "blur": (", blur {:g}", "_blur{:g}"),
    "upsample": (", {} upsampling", "_{}"),
    "refine": (", refine stage {}", "_refine{}"),
    "inner_adv_weight": (", inner adversarial {:g}", "_inneradv{:g}"),
    "inner_guide_weight": (", inner guide {:g}", "_innerguide{:g}"),
    "outer_spread_weight": (", outer spread {:g}", "_outerspread{:g}"),
    "width": (", width {}", "_width{}"),
    "context_dim": (", context of {} entries", "_context{}"),
    "inner_lr": (", inner lr {:g}", "_innerlr{:g}"),
    "meta_lr": (", meta lr {:g}", "_metalr{:g}"),
    "d_lr": (", D lr {:g}", "_dlr{:g}"),
    "tasks": (", {} tasks a meta-step", "_tasks{}"),
}


def candidate(rule, steps, encoder: bool, warm: bool, settings: dict, ema_decay, pretrained):
    """A candidate's config, printed name and cache-file tags (each setting away from the default named in both);
    ``settings`` maps :data:`SETTINGS`' config fields to values."""
    config = ContextConfig(rule=rule, inner_steps=steps, shot_encoder=encoder, ema_decay=ema_decay, **settings)
    if warm:
        config = config.replace(z_dim=pretrained[0].z_dim)
    changed = [(field, value) for field, value in settings.items() if value != getattr(ContextConfig, field)]
    changes = [
        (encoder, ", shot encoder", "_encoder"),
        (warm, ", warm start", "_warm"),
        *[(True, SETTINGS[field][0].format(value), SETTINGS[field][1].format(value)) for field, value in changed],
        (ema_decay is not None, "", f"_ema{ema_decay:g}" if ema_decay is not None else ""),
    ]
    name = f"context {rule}, {steps} inner steps" + "".join(label for on, label, _ in changes if on)
    return config, name, "".join(tag for on, _, tag in changes if on)


def scored_at(name: str, model, steps: int, test_steps: list[int] | None) -> list:
    """The candidate as methods to score: at its meta-training's inner ``steps``, or at each of ``test_steps``
    (named by the test steps where they differ)."""
    return [
        fewshot.Method(
            name if t == steps else f"{name}, {t} test steps", kind="context", model=model, steps=t, role="meta-learner"
        )
        for t in (test_steps or [steps])
    ]


VALIDATION_META_STEPS = 1000  # the candidates' meta-training budget in the experiment log's validation runs
# what test time may change without retraining
TEST_SETTINGS = ("inner_samples", "inner_lr", "inner_adv_weight", "inner_guide_weight")


def finite_float(text: str) -> float:
    """An argparse type: a finite number (NaN and infinities are refused at parse time, not after the training)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def parse_test_setting(text: str) -> tuple[str, float | int]:
    """``"inner_samples=64"`` -> ``("inner_samples", 64)``: a :data:`TEST_SETTINGS` field and a value of its type
    that :class:`~metagan_lib.context.ContextConfig` accepts on its own (``ValueError`` naming the problem otherwise;
    :func:`check_test_time_arguments` checks it against the candidates' other settings)."""
    field, _, value = text.partition("=")
    if field not in TEST_SETTINGS or not value:
        raise ValueError(f"{text!r} is not KEY=VALUE with KEY one of {', '.join(TEST_SETTINGS)}")
    kind = type(getattr(ContextConfig, field))
    try:
        number = kind(value)
    except ValueError:
        raise ValueError(f"{field} takes {'an integer' if kind is int else 'a number'}, got {value!r}") from None
    ContextConfig().replace(
        **{field: number}
    )  # the config's check of the value alone, now rather than after the training
    return field, number


def with_test_setting(name: str, model, field: str, value) -> tuple[str, object]:
    """The same trained model adapted at test time with one :data:`TEST_SETTINGS` field changed, and its name
    (``ValueError`` for a guide weight on a model trained without a guide network: it has none to use)."""
    if field == "inner_guide_weight" and value > 0 and model.guide is None:
        raise ValueError(
            f"{name!r} was meta-trained without a guide network, so a test inner_guide_weight has none to use: "
            "give the candidate --inner-guide-weight > 0"
        )
    return f"{name}, test {field} {value:g}", dataclasses.replace(model, config=model.config.replace(**{field: value}))


def candidate_methods(name: str, model, steps: int, test_steps, test_settings, selections) -> list:
    """Every method one trained candidate is scored as: at ``steps`` (or each of ``test_steps``); with each
    ``(field, value)`` of ``test_settings``; and each of those filtered by each ``(judge, ratio, spread)`` of
    ``selections``."""
    variants = [(name, model), *(with_test_setting(name, model, field, value) for field, value in test_settings)]
    plain = [scored_at(*variant, steps, test_steps) for variant in variants]
    filtered = [selected(m, ratio, judge, spread) for ms in plain for judge, ratio, spread in selections for m in ms]
    return [m for ms in plain for m in ms] + filtered


SELECTION_NAMES = {"discriminator": "D", "guide": "guide", "guide-novelty": "guide novelty"}


def wrapped(method, suffix: str, kind: str, model):
    """``method`` renamed ``"<name>, <suffix>"`` and generating through ``kind`` with ``model`` (the trained model
    wrapped: filtered, its noise scaled, adapted per shot)."""
    return dataclasses.replace(method, name=f"{method.name}, {suffix}", kind=kind, model=model)


def selected(method, ratio: int, judge: str = "discriminator", spread: float = 0.0):
    """``method`` sampled ``ratio`` times over, keeping the samples ``judge`` (its pair discriminator or its guide
    network, :data:`~metagan_lib.context.SELECTION_JUDGES`) scores highest, spread out by ``spread``."""
    spread_name = f", spread {spread:g}" if spread else ""
    suffix = f"{SELECTION_NAMES[judge]} keeps 1 in {ratio}{spread_name}"
    return wrapped(method, suffix, "context-select", context.SampleSelection(method.model, ratio, judge, spread))


def scaled(method, scale: float):
    """``method`` (plain or filtered) with its samples drawn from ``z ~ N(0, scale^2 I)`` after adaptation."""
    return wrapped(method, f"noise x{scale:g}", "context-scaled", context.ScaledSampling(method.model, scale))


def per_shot(method):
    """``method`` with one context adapted to each shot alone (:class:`~metagan_lib.context.PerShotContexts`)."""
    return wrapped(method, "a context per shot", "context-per-shot", context.PerShotContexts(method.model))


def mixed_shots(method, temperature: float, scale: float = 1.0):
    """``method`` with one context adapted to each shot alone and each sample drawn from a random mix of them
    (:class:`~metagan_lib.context.MixedShotContexts` at ``temperature``, its noise scaled by ``scale``)."""
    suffix = f"shots' contexts mixed at temperature {temperature:g}" + (f", noise x{scale:g}" if scale != 1 else "")
    mixed = context.MixedShotContexts(method.model, temperature, scale)
    return wrapped(method, suffix, "context-mixed-shots", mixed)


def save_sample_grid(method, data, folder: Path, prefix: str = "validation") -> Path:
    """6 evaluated classes (one fixed task; fewer when there are fewer), each a row: its 5 shots, then 7 samples of
    ``method`` adapted to them."""
    support = TaskSampler(data, data.unseen_classes, seed=0).sample(1, min(6, len(data.unseen_classes)), 5).support[0]
    samples = fewshot.generate(method, support, None, 7, None, seed=0)
    fig, ax = plt.subplots(figsize=(8, 4.6))
    plotting.show_grid(torch.cat([support, samples], dim=1).flatten(0, 1), nrow=12, title=method.name, ax=ax)
    folder.mkdir(parents=True, exist_ok=True)
    path = plotting.save_figure(fig, folder, f"{prefix}_" + method.name.replace(", ", "_").replace(" ", "-"))
    plt.close(fig)
    return path


def build_parser() -> argparse.ArgumentParser:
    """The options: which candidates to meta-train, how to test them, and on which classes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _add_candidate_options(parser)
    _add_test_time_options(parser)
    _add_split_options(parser)
    return parser


def _add_candidate_options(parser: argparse.ArgumentParser) -> None:
    """The candidates: rule, inner steps, warm start, the ContextConfig settings, upsampling, moving average."""
    parser.add_argument("--dataset", default="glyphs")
    parser.add_argument("--rules", nargs="+", default=["reptile", "reptile-query"], choices=context.OUTER_RULES)
    parser.add_argument("--inner-steps", nargs="+", type=int, default=[3])
    for switch, meaning in (
        ("--shot-encoder", "start the inner loop from c0 + E(shots), not c0"),
        ("--warm-start", "meta-train from a DCGAN pretrained on the training classes (z_dim 64), not from scratch"),
    ):
        parser.add_argument(
            switch, nargs="+", choices=("no", "yes"), default=["no"], help=f"yes: {meaning}; no; or both"
        )
    parser.add_argument(
        "--warm-start-steps",
        type=int,
        default=4000,
        help="the validation split's pretrained DCGAN's steps (--test-unseen uses notebook 02's long run instead)",
    )
    for option, default, meaning in (
        ("--adv-weight", ContextConfig.adv_weight, "the outer loss's adversarial weight"),
        (
            "--blur",
            ContextConfig.blur,
            "Gaussian blur (pixels) of samples and images before the chamfer distances; 0: none",
        ),
        ("--refine", ContextConfig.refine, "channels of a third generator stage at 28x28 (a multiple of 8); 0: none"),
        (
            "--inner-adv-weight",
            ContextConfig.inner_adv_weight,
            "weight of the pair discriminator's term in the inner loss, beside the chamfer distance; 0: none",
        ),
        (
            "--inner-guide-weight",
            ContextConfig.inner_guide_weight,
            "weight of the guide term in the inner loss (the samples' mean features against the shots' in a second "
            "feature network of the training classes, seed 1, not the scoring one); 0: none",
        ),
        (
            "--outer-spread-weight",
            ContextConfig.outer_spread_weight,
            "weight of the spread term in the outer loss: relu(spread of the images fitted - spread of the samples) in "
            "the guide network's features (needs --inner-guide-weight > 0); 0: none",
        ),
        ("--width", ContextConfig.width, "channels of the generator and the pair discriminator (a multiple of 8)"),
        ("--context-dim", ContextConfig.context_dim, "entries of the context c, what the inner loop adapts"),
        (
            "--inner-lr",
            ContextConfig.inner_lr,
            "the inner loop's step alpha, in meta-training and at test (Meta-SGD: its initial rates)",
        ),
        ("--meta-lr", ContextConfig.meta_lr, "Adam's learning rate of the meta-parameters (the outer step)"),
        ("--d-lr", ContextConfig.d_lr, "Adam's learning rate of the pair discriminator"),
        ("--tasks", ContextConfig.tasks, "tasks per meta-step (a meta-step's cost grows with them)"),
    ):
        kind = finite_float if isinstance(default, float) else int  # float settings, or the integer channels and tasks
        parser.add_argument(option, nargs="+", type=kind, default=[default], help=f"{meaning}; one value or several")
    parser.add_argument(
        "--upsample",
        nargs="+",
        choices=UPSAMPLING,
        default=[ContextConfig.upsample],
        help="the generator's doubling layers: transposed convolutions, or nearest upsampling + 3x3 convolutions",
    )
    parser.add_argument(
        "--ema-decay",
        type=finite_float,
        default=None,
        help="keep a moving average of the meta-parameters with this decay; each candidate is then scored with it and "
        "with its raw weights (one training)",
    )


def _add_test_time_options(parser: argparse.ArgumentParser) -> None:
    """How each candidate is tested: sample grids, test steps and settings, filters, noise scales, per-shot contexts."""
    parser.add_argument(
        "--samples",
        type=Path,
        default=None,
        help="folder for a figure per candidate: 6 classes, 5 shots + 7 samples a row",
    )
    parser.add_argument(
        "--test-steps",
        nargs="+",
        type=int,
        default=None,
        help="score each candidate after these numbers of inner steps at test time (a sweep: more steps fit the shots "
        "closer); default: its meta-training's inner steps",
    )
    parser.add_argument(
        "--test-setting",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help=f"also score each candidate adapted at test time with one setting changed, no retraining (KEY: "
        f"{', '.join(TEST_SETTINGS)}); one scored method per KEY=VALUE (and with --select, its filtered ones)",
    )
    parser.add_argument(
        "--select",
        nargs="+",
        type=int,
        default=[],
        metavar="RATIO",
        help="also score each candidate sampled RATIO times over, keeping the samples --select-by scores highest "
        "(context.SampleSelection); no retraining",
    )
    parser.add_argument(
        "--select-by",
        nargs="+",
        choices=list(SELECTION_NAMES),
        default=["discriminator"],
        help="the judges of --select: the pair discriminator's score; nearness to the shots' prototype in the guide "
        "network's features (guide); how much nearer that prototype than to the nearest shot (guide-novelty); the "
        "guide judges need --inner-guide-weight > 0; one scored method per judge and ratio",
    )
    parser.add_argument(
        "--select-spread",
        nargs="+",
        type=finite_float,
        default=[0.0],
        metavar="SPREAD",
        help="the spreads of --select: 0 keeps the top-scored samples; SPREAD > 0 keeps them greedily, rewarding "
        "SPREAD x the squared guide-feature distance to the nearest sample kept (needs --inner-guide-weight > 0); "
        "one scored method per judge, ratio and spread",
    )
    parser.add_argument(
        "--sample-scale",
        nargs="+",
        type=finite_float,
        default=[],
        metavar="SCALE",
        help="also score each scored method (the filtered ones too) with its samples drawn from z ~ N(0, SCALE^2 I) "
        "after adaptation (context.ScaledSampling; the inner loop's noise unchanged); one method per scale",
    )
    parser.add_argument(
        "--per-shot",
        action="store_true",
        help="also score each candidate with one context adapted to each shot alone, its samples drawn from the K "
        "contexts in turn (context.PerShotContexts; as latent inversion keeps one latent per shot)",
    )
    parser.add_argument(
        "--mix-shots",
        nargs="+",
        type=finite_float,
        default=[],
        metavar="TEMPERATURE",
        help="also score each candidate with one context adapted to each shot alone and each sample drawn from a "
        "random convex mix of them, weights softmax(g / TEMPERATURE), g ~ N(0, I) (context.MixedShotContexts); one "
        "method per temperature (and per --sample-scale, each test step and each --test-setting)",
    )


def _add_split_options(parser: argparse.ArgumentParser) -> None:
    """Meta-steps, the validation split or the unseen classes, seeds, the guide network and the fit check."""
    parser.add_argument(
        "--meta-steps",
        type=int,
        default=VALIDATION_META_STEPS,
        help=f"meta-steps of each candidate (default {VALIDATION_META_STEPS}, the budget of the experiment log's runs)",
    )
    parser.add_argument("--held-out", type=int, default=40)
    parser.add_argument(
        "--split-seed",
        type=int,
        default=0,
        help="which seen classes are held out (0: the experiment log's split; another seed draws a fresh one)",
    )
    parser.add_argument(
        "--held-out-alphabets",
        nargs="+",
        default=[],
        metavar="ALPHABET",
        help="hold out every seen character of these alphabets instead of --held-out random classes (Omniglot: "
        "validation on new alphabets, like its unseen classes)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--train-seed", type=int, default=0, help="seed of the candidates' weights and task draws")
    parser.add_argument(
        "--guide-width",
        type=int,
        default=evaluation.FEATURE_WIDTH,
        help="channels of the guide network (a multiple of 8; the scoring network's 32 by default): a narrower guide "
        "makes each inner step cheaper",
    )
    parser.add_argument(
        "--rotated-classes",
        action="store_true",
        help="meta-train (and train the guide network) on the training classes plus each turned 90, 180 and 270 "
        "degrees as new classes (data.with_rotated_seen_classes); scoring and evaluated classes unchanged",
    )
    parser.add_argument("--test-unseen", action="store_true", help="score on the unseen classes (a chosen candidate)")
    parser.add_argument(
        "--fit-check",
        action="store_true",
        help="also score every candidate on as many of its own meta-training classes (underfitting or overfitting?)",
    )


def check_candidate_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse candidate settings that cannot be trained (``parser.error``: a message and exit code 2)."""
    if min(args.inner_steps) < 1:
        parser.error(f"--inner-steps must be at least 1, got {min(args.inner_steps)}")
    if min(args.adv_weight) < 0:
        parser.error(f"--adv-weight must be non-negative, got {min(args.adv_weight)}")
    if "yes" in args.warm_start and set(args.upsample) != {"transposed"}:
        parser.error("--warm-start yes copies a DCGAN's transposed convolutions: use it with --upsample transposed")
    if args.rotated_classes and "yes" in args.warm_start:
        parser.error("--rotated-classes trains on turned classes the warm start's DCGAN never saw: use --warm-start no")
    if "yes" in args.warm_start and set(args.refine) != {0}:
        parser.error("--warm-start yes copies a DCGAN's layers, which have no refine stage: use it with --refine 0")
    if any(r < 0 or r % 8 for r in args.refine):
        parser.error(f"--refine takes 0 or multiples of 8, got {args.refine}")
    for option, counts in (("--tasks", args.tasks), ("--context-dim", args.context_dim)):
        if min(counts) < 1:
            parser.error(f"{option} must be at least 1, got {min(counts)}")
    if args.guide_width < 8 or args.guide_width % 8:
        parser.error(f"--guide-width takes a positive multiple of 8, got {args.guide_width}")
    if any(w < 8 or w % 8 for w in args.width):
        parser.error(f"--width takes positive multiples of 8, got {args.width}")
    if "yes" in args.warm_start and set(args.width) != {GANConfig.width}:
        width = GANConfig.width
        parser.error(f"--warm-start yes copies a DCGAN of width {width}: use it with --width {width}")
    if min(args.blur) < 0:
        parser.error(f"--blur must be non-negative, got {min(args.blur)}")
    for option, rates in (("--meta-lr", args.meta_lr), ("--d-lr", args.d_lr), ("--inner-lr", args.inner_lr)):
        if min(rates) <= 0:
            parser.error(f"{option} must be positive, got {min(rates)}")
    for option, weights in (
        ("--inner-adv-weight", args.inner_adv_weight),
        ("--inner-guide-weight", args.inner_guide_weight),
        ("--outer-spread-weight", args.outer_spread_weight),
    ):
        if min(weights) < 0:
            parser.error(f"{option} must be non-negative, got {min(weights)}")
    if args.ema_decay is not None and not 0 < args.ema_decay < 1:
        parser.error(f"--ema-decay must lie between 0 and 1, got {args.ema_decay}")
    if args.warm_start_steps < 1:
        parser.error(f"--warm-start-steps must be at least 1, got {args.warm_start_steps}")
    if args.meta_steps < 1:
        parser.error(f"--meta-steps must be at least 1, got {args.meta_steps}")


def check_test_time_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[tuple[str, float]]:
    """Refuse test-time options that do not fit the candidates; return the parsed ``--test-setting`` pairs."""
    if args.select and min(args.select) < 2:
        parser.error(f"--select takes ratios of at least 2, got {min(args.select)}")
    if args.select_by != ["discriminator"] and not args.select:
        parser.error("--select-by names the judges of --select: give --select RATIO too")
    if min(args.select_spread) < 0:
        parser.error(f"--select-spread takes spreads of at least 0, got {min(args.select_spread)}")
    if args.select_spread != [0.0] and not args.select:
        parser.error("--select-spread names the spreads of --select: give --select RATIO too")
    if max(args.outer_spread_weight) > 0 and min(args.inner_guide_weight) == 0:
        parser.error(
            "--outer-spread-weight > 0 measures spread in the guide network's features: --inner-guide-weight > 0"
        )
    if max(args.select_spread) > 0 and min(args.inner_guide_weight) == 0:
        parser.error("--select-spread > 0 measures distances in the guide network's features: --inner-guide-weight > 0")
    if any(judge.startswith("guide") for judge in args.select_by) and min(args.inner_guide_weight) == 0:
        parser.error(
            "--select-by guide and guide-novelty need candidates trained with a guide: --inner-guide-weight > 0"
        )
    if args.sample_scale and not all(math.isfinite(v) and v > 0 and v != 1 for v in args.sample_scale):
        parser.error(
            f"--sample-scale takes finite scales > 0 other than 1 (1 is the plain method), got {args.sample_scale}"
        )
    if args.mix_shots and not all(math.isfinite(t) and t > 0 for t in args.mix_shots):
        parser.error(f"--mix-shots takes finite temperatures > 0, got {args.mix_shots}")
    if args.samples is not None:  # checked before the meta-training, not after
        blocking = next((p for p in (args.samples, *args.samples.parents) if p.exists()), None)
        if blocking is not None and not blocking.is_dir():
            parser.error(f"--samples {args.samples}: {blocking} is a file; give a folder for the figures")
    if args.test_steps is not None and min(args.test_steps) < 0:
        parser.error(f"--test-steps must be non-negative, got {min(args.test_steps)}")
    try:
        test_settings = [parse_test_setting(text) for text in args.test_setting]
    except ValueError as error:
        parser.error(f"--test-setting: {error}")
    if (
        any(field == "inner_guide_weight" and value > 0 for field, value in test_settings)
        and min(args.inner_guide_weight) == 0
    ):
        parser.error(
            "--test-setting inner_guide_weight needs candidates trained with a guide: --inner-guide-weight > 0"
        )
    if any(field == "inner_guide_weight" and value == 0 for field, value in test_settings) and max(
        args.outer_spread_weight
    ):
        parser.error(
            "--test-setting inner_guide_weight=0 drops the guide that --outer-spread-weight > 0 measures spread in: "
            "keep the guide weight above 0, or drop the outer spread weight"
        )
    return test_settings


def evaluation_data(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """The classes to evaluate (a validation split of the seen classes, or the unseen ones), the cache folder, the
    scoring feature network, its training steps and the split's tag: ``(data, folder, net, feature_steps, tag)``."""
    try:
        dataset = load_dataset(args.dataset)
    except (DatasetError, FileNotFoundError) as error:  # an unknown name, missing files, METAGAN_DATA pointing nowhere
        parser.error(f"--dataset {args.dataset}: {error}")
    if not (args.test_unseen or args.held_out_alphabets) and not 2 <= args.held_out < len(dataset.seen_classes):
        parser.error(
            f"--held-out must lie between 2 and {len(dataset.seen_classes) - 1} (the seen classes of {args.dataset} "
            f"minus one), got {args.held_out}"
        )
    if args.held_out_alphabets and (args.test_unseen or args.split_seed):
        parser.error("--held-out-alphabets chooses the validation classes: drop --test-unseen and --split-seed")
    runtime.seed_everything(0)
    try:
        data = evaluation_split(dataset, args.held_out, args.test_unseen, args.split_seed, args.held_out_alphabets)
    except ValueError as error:
        parser.error(f"--held-out-alphabets: {error}")
    split_tag = f"-split{args.split_seed}" if args.split_seed else ""
    if args.held_out_alphabets:
        split_tag = "-alphabets-" + "-".join(sorted(args.held_out_alphabets))
    split = "test-unseen" if args.test_unseen else "validation" + split_tag
    folder = cache_dir() / split / args.dataset
    folder.mkdir(parents=True, exist_ok=True)
    feature_steps = profiles.settings("06", "full").feature_steps
    # the final test shares notebook 06's feature network (same recipe and cache file); validation trains its own
    shared = profiles.artifact_path("full", args.dataset, 0, "06_feature_net")
    net_path = shared if args.test_unseen else folder / "feature_net.pt"
    net = evaluation.train_or_load_feature_net(net_path, data, feature_steps, seed=0)
    return data, folder, net, feature_steps, split_tag


def scored_candidates(
    args: argparse.Namespace, data, folder: Path, feature_steps: int, test_settings
) -> tuple[list, dict]:
    """Meta-train (or load) every candidate and list the methods to score: ``(methods, swept)``, ``swept`` each
    candidate's methods at its test-step counts."""
    methods = [
        fewshot.Method("real held-out", kind="ceiling", role="reference"),
        fewshot.Method("copy shots", kind="copy", role="reference"),
    ]
    swept = {}  # candidate name -> its methods at each test step count
    pretrained = pretrained_generator(data, folder, args) if "yes" in args.warm_start else None
    training_data = with_rotated_seen_classes(data) if args.rotated_classes else data
    rotation_tag = "_rot4" if args.rotated_classes else ""
    guided = max(args.inner_guide_weight) > 0
    guide = guide_network(training_data, folder, feature_steps, args.guide_width, rotation_tag) if guided else None
    candidates = itertools.product(
        args.rules,
        args.inner_steps,
        args.shot_encoder,
        args.warm_start,
        *[getattr(args, field) for field in SETTINGS],
    )
    for rule, steps, encoder, warm, *values in candidates:
        settings = dict(zip(SETTINGS, values))
        config, name, tags = candidate(
            rule, steps, encoder == "yes", warm == "yes", settings, args.ema_decay, pretrained
        )
        if config.inner_guide_weight and args.guide_width != evaluation.FEATURE_WIDTH:
            name, tags = name + f", guide width {args.guide_width}", tags + f"_guidewidth{args.guide_width}"
        if args.rotated_classes:
            name, tags = name + ", rotated classes", tags + rotation_tag
        seed_tag = f"_seed{args.train_seed}" if args.train_seed else ""
        path = folder / f"{rule}_{steps}_{args.meta_steps}{tags}{seed_tag}.pt"
        sampler = TaskSampler(training_data, training_data.seen_classes, seed=args.train_seed)
        model = context.train_or_load_context_gan(
            path,
            config,
            sampler,
            args.meta_steps,
            seed=args.train_seed,
            description=name,
            warm_start=pretrained if warm == "yes" else None,
            guide=guide if config.inner_guide_weight else None,
        )
        if args.ema_decay is not None:  # the same training's raw weights, then its moving average
            raw = dataclasses.replace(model, ema_params=None)
            methods += scored_at(name, raw, steps, args.test_steps)
            name += f", EMA {args.ema_decay:g}"
        swept[name] = scored_at(name, model, steps, args.test_steps)
        selections = list(itertools.product(args.select_by, args.select, args.select_spread))
        scored = candidate_methods(name, model, steps, args.test_steps, test_settings, selections)
        methods += scored + [scaled(method, scale) for scale in args.sample_scale for method in scored]
        methods += [per_shot(method) for method in swept[name]] if args.per_shot else []
        plain = [method for method in scored if method.kind == "context"]  # each test step and test setting
        methods += [mixed_shots(m, t, s) for t in args.mix_shots for s in [1.0, *args.sample_scale] for m in plain]
    return methods, swept


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_candidate_arguments(parser, args)
    test_settings = check_test_time_arguments(parser, args)
    data, folder, net, feature_steps, split_tag = evaluation_data(parser, args)
    methods, swept = scored_candidates(args, data, folder, feature_steps, test_settings)
    if args.samples is not None:
        for method in methods[2:]:
            prefix = f"{'unseen' if args.test_unseen else 'validation' + split_tag}_{args.meta_steps}-meta-steps"
            print("samples:", save_sample_grid(method, data, args.samples, prefix))
    evaluated = "unseen classes" if args.test_unseen else f"{len(data.unseen_classes)} held-out seen classes"
    if args.held_out_alphabets:
        evaluated += f" (alphabets {', '.join(sorted(args.held_out_alphabets))})"
    summary = print_table(methods, data, net, args.seeds, f"{args.dataset}: {evaluated}")
    if args.test_steps and len(args.test_steps) > 1 and not args.test_unseen:
        print_test_step_choice(summary, swept, real=methods[0].name)
    if args.fit_check:
        pool = training_class_sample(data, len(data.unseen_classes))
        print_table(methods, data, net, args.seeds, f"{args.dataset}: {len(pool)} of the meta-training classes", pool)


def training_class_sample(data, count: int, seed: int = 0) -> torch.Tensor:
    """``count`` of the meta-training (seen) classes, drawn once with a fixed seed, for ``--fit-check``."""
    g = torch.Generator().manual_seed(derive_seed(seed, "fit-check classes"))
    count = min(count, len(data.seen_classes))
    return data.seen_classes[torch.randperm(len(data.seen_classes), generator=g)[:count]].sort().values


def print_test_step_choice(summary: dict, swept: dict[str, list], real: str) -> None:
    """Per candidate, the test steps :func:`metagan_lib.context.test_steps_by_rule` picks from its validation sweep."""
    real_diversity = summary[real]["diversity"]["mean"]
    for name, sweep in swept.items():
        scores = {m.steps: {key: summary[m.name][key]["mean"] for key in ("copy_score", "diversity")} for m in sweep}
        try:
            print(f"test-step rule: {context.test_steps_by_rule(scores, real_diversity)} test steps for {name}")
        except ValueError as error:
            print(f"test-step rule for {name}: {error}")


def print_table(methods, data, net, seeds, title: str, class_pool: torch.Tensor | None = None) -> dict:
    """Score ``methods`` on 20-way K = 5 tasks of the evaluated classes (or ``class_pool``; fewer ways where it holds
    fewer classes) per seed; print means and 95% intervals; return the summary (method -> metric -> mean, ci95)."""
    per_seed = [
        fewshot.evaluate_seed(
            methods, data, net, shots=5, steps=None, classes=20, generated_per_class=20, seed=s, class_pool=class_pool
        )
        for s in seeds
    ]
    summary = fewshot.summarise([{m: r for m, r in seed.items() if not m.startswith("_")} for seed in per_seed])
    ways = min(20, len(data.unseen_classes if class_pool is None else class_pool))
    print(f"{title}, {ways}-way K=5, seeds {seeds} (mean ± 95% CI)")
    print(f"{'method':56s}" + "".join(f"{m:>24s}" for m in METRICS))
    for method, scores in summary.items():
        cells = "".join(f"{scores[m]['mean']:>14.3f} ± {scores[m]['ci95']:<7.3f}" for m in METRICS)
        print(f"{method:56s}{cells}")
    return summary


if __name__ == "__main__":
    main()
