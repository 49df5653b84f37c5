"""The few-shot generation benchmark: methods, tasks, seeds, metrics and the results file.

Protocol (one *seed*): draw ``classes`` unseen classes; for each, ``K`` shots are given to every
method and the class's other images are held out, split into two halves: ``reference`` (what
generated images are scored against) and ``ceiling`` (real images playing the generator, the
upper reference). Each method adapts with its own rule and its own budget (``Method.steps``),
reported beside its scores; the steps sweep runs every method at the same numbers of steps.
Metrics are computed in the feature space of a network trained on seen classes only: per class
(Fréchet distance to the class's reference images, class fidelity, diversity, copy score),
averaged over classes, and pooled over classes (FD, precision/recall). Numbers are means over
seeds with 95% confidence intervals. Seeds vary the classes, shots and noise; the networks being
compared are trained once (seed 0), which the notebook states.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import torch

from . import context, inversion, profiles, seeds
from . import evaluation as E
from .augment import diff_augment
from .data import ImageDataset
from .meta import adapt_and_sample_many
from .runtime import parallel_calls
from .seeds import derive_seed
from .tasks import TaskSampler
from .train import GANConfig, GANRun, train_or_load

METRICS = (
    "class_frechet_distance",
    "class_fidelity",
    "diversity",
    "copy_score",
    "frechet_distance",
    "precision",
    "recall",
    "diverged",
)
LOWER_IS_BETTER = {"frechet_distance", "class_frechet_distance"}
METRIC_RANGES = {m: (0.0, 1.0) for m in ("class_fidelity", "precision", "recall", "diverged")} | {
    m: (0.0, float("inf")) for m in ("class_frechet_distance", "frechet_distance", "diversity", "copy_score")
}
"""Where each metric's values can lie (for error bars that respect them)."""
MAX_HELD_OUT = 40  # held-out images per class (MNIST classes hold ~1000)
MIX_WEIGHTS = (0.0, 0.25, 0.5)  # downstream: weight of the generated images' mean in a class prototype
ROLES = ("meta-learner", "baseline", "reference")


@dataclass(frozen=True)
class Method:
    """A way to produce images of a class from its K shots.

    ``kind`` picks the generating function (:data:`GENERATORS`): ``"adapt"`` adapts a whole
    :class:`~metagan_lib.meta.MetaGAN` (scratch, fine-tuning, notebook 04's meta-GANs),
    ``"context"`` a :class:`~metagan_lib.context.ContextMetaGAN`'s context, ``"invert"`` inverts the
    shots into a pretrained generator (:class:`~metagan_lib.inversion.LatentInversion`),
    ``"ceiling"`` returns held-out real images and ``"copy"`` the shots, repeated with augmentation.
    ``steps`` is the method's own adaptation budget (its inner steps, or inversion's Adam steps).
    """

    name: str
    kind: str = "adapt"
    model: object = None
    steps: int = 0
    role: str = "baseline"

    def __post_init__(self) -> None:
        if self.kind not in GENERATORS:
            raise ValueError(f"Unknown method kind {self.kind!r}; choose one of {', '.join(GENERATORS)}.")
        if self.role not in ROLES:
            raise ValueError(f"Unknown role {self.role!r}; choose one of {', '.join(ROLES)}.")
        if self.kind in ("adapt", "context", "invert") and self.model is None:
            raise ValueError(f"Method {self.name!r} of kind {self.kind!r} needs a model.")


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


def _copy_shots(
    method: Method, shots: torch.Tensor, ceiling: torch.Tensor, n: int, steps: int, seed: int
) -> torch.Tensor:
    classes, k = shots.shape[:2]
    repeats = shots[:, torch.arange(n, device=shots.device) % k].flatten(0, 1)
    augmented = diff_augment(repeats, seeds.generator(seed, "augment", device=shots.device))
    return augmented.view(classes, n, *shots.shape[2:])


GENERATORS: dict[str, Callable[..., torch.Tensor]] = {
    "adapt": lambda method, shots, ceiling, n, steps, seed: adapt_and_sample_many(
        method.model, shots, steps, n, seed=seed
    ),
    "context": lambda method, shots, ceiling, n, steps, seed: context.adapt_and_sample(
        method.model, shots, steps, n, seed=seed
    ),
    "invert": lambda method, shots, ceiling, n, steps, seed: inversion.invert_and_sample(
        method.model, shots, steps, n, seed=seed
    ),
    "ceiling": lambda method, shots, ceiling, n, steps, seed: ceiling[:, :n],
    "copy": _copy_shots,
}


def generate(
    method: Method, shots: torch.Tensor, ceiling: torch.Tensor, n: int, steps: int | None, seed: int
) -> torch.Tensor:
    """``n`` images per class, ``[C, n, 1, 28, 28]`` in [-1, 1], from shots ``[C, K, ...]`` (all classes adapted at once).

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


def method_scores(
    fake_features: list[torch.Tensor],
    reference_features: list[torch.Tensor],
    shot_features: list[torch.Tensor],
    prototypes: torch.Tensor,
) -> dict[str, float]:
    """Metrics of one method on one seed from per-class features (lists of ``[n, d]``, one entry per class)."""
    ways, n = len(fake_features), len(fake_features[0])
    all_fake, all_reference = torch.cat(fake_features), torch.cat(reference_features)
    labels = torch.arange(ways, device=all_fake.device).repeat_interleave(n)
    precision, recall = E.precision_recall(all_reference, all_fake)
    per_class = lambda fn: sum(fn(*args) for args in zip(fake_features, reference_features, shot_features)) / ways
    return {
        "class_frechet_distance": per_class(lambda f, r, s: E.frechet_distance(r, f)),
        "class_fidelity": E.class_fidelity(all_fake, labels, prototypes),
        "diversity": sum(E.mean_pairwise_distance(f) for f in fake_features) / ways,
        "copy_score": per_class(E.copy_score),
        "frechet_distance": E.frechet_distance(all_reference, all_fake),
        "precision": precision,
        "recall": recall,
    }


def evaluate_seed(
    methods: list[Method],
    dataset: ImageDataset,
    net: E.FeatureNet,
    *,
    shots: int,
    steps: int | None,
    classes: int,
    generated_per_class: int,
    seed: int,
    class_pool: torch.Tensor | None = None,
) -> dict[str, dict[str, float]]:
    """All metrics of all methods on one seed's tasks: ``{method: {metric: value}}``.

    Tasks come from the unseen classes, or from ``class_pool`` (validation on seen classes);
    ``steps=None``: each method at its own budget.
    """
    device = next(net.parameters()).device
    pool = dataset.unseen_classes if class_pool is None else class_pool
    sampler = TaskSampler(dataset, pool, device=device, seed=derive_seed(seed, "benchmark tasks"))
    queries = min(sampler.min_count - shots, MAX_HELD_OUT)
    episode = sampler.sample(1, ways=min(classes, sampler.num_classes), shots=shots, queries=queries)
    support, held_out = episode.support[0], episode.query[0]  # [N, K, ...], [N, Q, ...]
    ways, half = len(support), (queries + 1) // 2
    reference, ceiling = held_out[:, :half], held_out[:, half:]
    reference_features = [E.embed(net, r) for r in reference]
    shot_features = [E.embed(net, s) for s in support]
    prototypes = torch.stack([f.mean(0) for f in reference_features])
    results = {}
    for method in methods:
        n = min(generated_per_class, ceiling.shape[1]) if method.kind == "ceiling" else generated_per_class
        images, diverged = replace_diverged(generate(method, support, ceiling, n, steps, derive_seed(seed, "generate")))
        results[method.name] = method_scores(
            [E.embed(net, x) for x in images], reference_features, shot_features, prototypes
        )
        results[method.name]["diverged"] = diverged
    results["_real_diversity"] = {"diversity": sum(E.mean_pairwise_distance(f) for f in reference_features) / ways}
    return results


def select_setting(
    make_method: Callable[[float], Method],
    dataset: ImageDataset,
    net: E.FeatureNet,
    grid: list[float],
    *,
    shots: int,
    classes: int,
    generated_per_class: int,
    seed: int = 0,
    metric: str = "class_frechet_distance",
) -> tuple[float, dict[float, float]]:
    """Choose a baseline's setting (a step size, inversion's noise): the value in ``grid`` with the best ``metric`` on
    tasks from the **seen** classes (a validation split: unseen classes never tune anything). Returns (best, {value: score}).

    The grid must bracket the optimum: check that ``best`` is not at its edge (:func:`inside_grid`). The values are tried side by side on a CPU (:func:`metagan_lib.runtime.parallel_calls`)."""
    methods = [make_method(value) for value in grid]
    calls = [
        partial(
            evaluate_seed,
            [method],
            dataset,
            net,
            shots=shots,
            steps=None,
            classes=classes,
            generated_per_class=generated_per_class,
            seed=seed,
            class_pool=dataset.seen_classes,
        )
        for method in methods
    ]
    results = parallel_calls(calls, device=next(net.parameters()).device)
    sign = 1 if metric in LOWER_IS_BETTER else -1
    scores = {value: result[method.name][metric] for value, method, result in zip(grid, methods, results)}
    return min(scores, key=lambda value: sign * scores[value]), scores


def inside_grid(best: float, grid: list[float]) -> bool:
    """Whether ``best`` lies strictly inside ``grid`` (so the grid brackets the optimum)."""
    return min(grid) < best < max(grid)


def mixed_prototype_accuracy(
    real: torch.Tensor, extra: torch.Tensor, query: torch.Tensor, query_labels: torch.Tensor, weight: float
) -> float:
    """Nearest-prototype accuracy with prototypes ``(1 - weight) mean(real) + weight mean(extra)`` (features ``[N, K, d]``, ``[N, n, d]``)."""
    prototypes = (1 - weight) * real.mean(1) + weight * extra.mean(1)
    return (torch.cdist(query, prototypes).argmin(1) == query_labels).float().mean().item()


def downstream_seed(
    methods: list[Method],
    dataset: ImageDataset,
    net: E.FeatureNet,
    *,
    ways: int,
    shots: int,
    generated_per_class: int,
    episodes: int,
    seed: int,
    class_pool: torch.Tensor | None = None,
) -> dict[str, dict[float, float]]:
    """Prototype-classifier accuracy on ``ways``-way ``shots``-shot episodes (unseen classes, or ``class_pool``) with each
    method's generated images mixed into the prototypes at each weight of :data:`MIX_WEIGHTS`: ``{method: {weight: accuracy}}``
    (key ``"none"``: real shots only). Generated images never replace the shots: weight 0 is the real-only classifier."""
    device = next(net.parameters()).device
    pool = dataset.unseen_classes if class_pool is None else class_pool
    sampler = TaskSampler(dataset, pool, device=device, seed=derive_seed(seed, "downstream tasks"))
    queries = min(10, sampler.min_count - shots)
    episode = sampler.sample(episodes, ways, shots, queries)
    query_labels = torch.arange(ways, device=device).repeat_interleave(queries)
    accuracy: dict[str, dict[float, list[float]]] = {}
    for t in range(episodes):
        support = episode.support[t]  # [ways, shots, 1, 28, 28]
        query = E.embed(net, episode.query[t].flatten(0, 1))
        real = E.embed(net, support.flatten(0, 1)).view(ways, shots, -1)
        accuracy.setdefault("none", {0.0: []})[0.0].append(
            mixed_prototype_accuracy(real, real, query, query_labels, 0.0)
        )
        for method in methods:
            if method.kind == "ceiling":
                continue
            images, _ = replace_diverged(
                generate(
                    method, support, support, generated_per_class, None, derive_seed(seed, "downstream generate", t)
                )
            )
            extra = E.embed(net, images.flatten(0, 1)).view(ways, generated_per_class, -1)
            for weight in MIX_WEIGHTS:
                accuracy.setdefault(method.name, {}).setdefault(weight, []).append(
                    mixed_prototype_accuracy(real, extra, query, query_labels, weight)
                )
    return {name: {w: sum(v) / len(v) for w, v in by_weight.items()} for name, by_weight in accuracy.items()}


def choose_mix_weights(validation: dict[str, dict[float, float]]) -> dict[str, float]:
    """Per method, the weight with the best validation accuracy (ties go to the smaller weight, i.e. to the real shots)."""
    return {name: max(sorted(by_weight), key=lambda w: (by_weight[w], -w)) for name, by_weight in validation.items()}


def summarise(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """``[{method: {metric: v}}]`` over seeds -> ``{method: {metric: {"mean", "ci95", "n"}}}``."""
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for method in per_seed[0]:
        summary[method] = {}
        for metric in per_seed[0][method]:
            estimate = E.mean_confidence_interval([seed[method][metric] for seed in per_seed])
            summary[method][metric] = {"mean": estimate.mean, "ci95": estimate.half_width, "n": estimate.n}
    return summary


def run_benchmark(
    methods: list[Method],
    dataset: ImageDataset,
    net: E.FeatureNet,
    *,
    seeds: list[int],
    shot_counts: list[int],
    step_counts: list[int],
    default_shots: int,
    classes: int,
    generated_per_class: int,
    downstream_episodes: int,
    progress: Callable[[str], None] = lambda message: None,
) -> dict:
    """The whole comparison: metrics vs K (each method at its own budget), vs adaptation steps (at ``default_shots``),
    and downstream accuracy (5-way 5-shot, 20-way 1-shot; mixing weights chosen on seen-class episodes).

    Every (setting, seed) pair is an independent job (it seeds itself); on a CPU the jobs run side
    by side in worker processes (:func:`metagan_lib.runtime.parallel_calls`), with, bit for bit,
    the numbers the same jobs give one after the other on one thread in this process (tested).
    """
    common = dict(classes=classes, generated_per_class=generated_per_class)
    settings = [("by_shots", str(k), dict(shots=k, steps=None)) for k in shot_counts]
    settings += [("by_steps", str(steps), dict(shots=default_shots, steps=steps)) for steps in step_counts]
    ways = min(20, len(dataset.unseen_classes), len(dataset.seen_classes))
    downstream_settings = [
        (f"5-way {default_shots}-shot", dict(ways=5, shots=default_shots)),
        (f"{ways}-way 1-shot", dict(ways=ways, shots=1)),
    ]
    calls, keys = [], []
    for name, budget in downstream_settings:  # the longest jobs first, so that no worker is left with one at the end
        calls.append(
            partial(
                downstream_seed,
                methods,
                dataset,
                net,
                generated_per_class=generated_per_class,
                seed=0,
                episodes=downstream_episodes,
                class_pool=dataset.seen_classes,
                **budget,
            )
        )
        keys.append(("validation", name))
        for s in seeds:
            calls.append(
                partial(
                    downstream_seed,
                    methods,
                    dataset,
                    net,
                    generated_per_class=generated_per_class,
                    seed=s,
                    episodes=downstream_episodes,
                    **budget,
                )
            )
            keys.append(("downstream", name))
    for sweep, value, budget in settings:
        for s in seeds:
            calls.append(partial(evaluate_seed, methods, dataset, net, seed=s, **common, **budget))
            keys.append((sweep, value))
    progress(
        f"{len(calls)} jobs: {len(settings)} settings and {len(downstream_settings)} downstream settings x {len(seeds)} seeds"
    )
    outputs = parallel_calls(calls, device=next(net.parameters()).device, description="few-shot benchmark")
    grouped: dict[tuple[str, str], list] = {}
    for key, output in zip(keys, outputs):
        grouped.setdefault(key, []).append(output)
    downstream = {}
    for name, _ in downstream_settings:
        weights = choose_mix_weights(grouped[("validation", name)][0])
        per_seed = grouped[("downstream", name)]
        downstream[name] = {
            method: {
                **_estimate([p[method][w] for p in per_seed]),
                "weight": w,
                "by_weight": {str(v): _estimate([p[method][v] for p in per_seed]) for v in per_seed[0][method]},
            }
            for method, w in weights.items()
        }
    validation = {
        name: {
            method: {str(w): v for w, v in by_weight.items()}
            for method, by_weight in grouped[("validation", name)][0].items()
        }
        for name, _ in downstream_settings
    }
    return {
        "by_shots": {str(k): summarise(grouped[("by_shots", str(k))]) for k in shot_counts},
        "by_steps": {str(steps): summarise(grouped[("by_steps", str(steps))]) for steps in step_counts},
        "downstream": downstream,
        "downstream_validation": validation,
        "methods": {m.name: {"kind": m.kind, "role": m.role, "steps": m.steps} for m in methods},
    }


def _estimate(values: list[float]) -> dict[str, float]:
    estimate = E.mean_confidence_interval(values)
    return {"mean": estimate.mean, "ci95": estimate.half_width, "n": estimate.n}


def results_path(folder: Path, dataset: str) -> Path:
    """``few_shot.json`` for the default dataset, ``few_shot_<dataset>.json`` for the others."""
    return Path(folder) / ("few_shot.json" if dataset == "glyphs" else f"few_shot_{dataset}.json")


def _cell(entry: dict[str, float]) -> str:
    return f"{entry['mean']:.3g} ± {entry['ci95']:.2g}"


def markdown_table(results: dict) -> str:
    """The headline tables: metrics at the default K (each method at its own adaptation budget), and downstream accuracy."""
    meta = results["settings"]
    rows = results["by_shots"][str(meta["default_shots"])]
    methods = [m for m in rows if not m.startswith("_")]
    lines = [
        f"**{results['dataset']}**, K = {meta['default_shots']} shots, {len(meta['seeds'])} seeds x {meta['classes']} unseen classes, "
        f"mean ± 95% CI; class fidelity chance {1 / meta['classes']:.2f}; real-image diversity {_cell(rows['_real_diversity']['diversity'])}; "
        f"copy score 1 = new instances, flagged above {E.COPY_FLAG}:",
        "",
        "| method | adaptation steps | " + " | ".join(METRICS) + " |",
        "|---|---:|" + "---:|" * len(METRICS),
    ]
    for method in methods:
        steps = (
            results["methods"][method]["steps"]
            if results["methods"][method]["kind"] in ("adapt", "context", "invert")
            else "-"
        )
        lines.append(f"| {method} | {steps} | " + " | ".join(_cell(rows[method][m]) for m in METRICS) + " |")
    lines += [
        "",
        "Downstream: prototype-classifier accuracy on unseen classes, generated images mixed into each prototype with the weight "
        "chosen on seen-class episodes (in brackets):",
        "",
        "| support set | " + " | ".join(results["downstream"]) + " |",
        "|---|" + "---:|" * len(results["downstream"]),
    ]
    for name in next(iter(results["downstream"].values())):
        label = "real shots only" if name == "none" else f"+ {name}"
        cells = [
            _cell(d[name]) + ("" if name == "none" else f" (w={d[name]['weight']})")
            for d in results["downstream"].values()
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(results: dict, folder: Path) -> Path:
    """Write ``few_shot[_<dataset>].json`` and the matching ``.md`` table; return the JSON path."""
    path = results_path(folder, results["dataset"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
    path.with_suffix(".md").write_text(markdown_table(results) + "\n")
    return path


def _separated(a: dict[str, float], b: dict[str, float]) -> bool:
    return abs(a["mean"] - b["mean"]) > a["ci95"] + b["ci95"]


def _compare(name_a: str, a: dict, name_b: str, b: dict, metric: str) -> str:
    """``"A beats B"``, ``"B beats A"`` or ``"A and B do not differ"`` on ``metric`` at 95%."""
    if not _separated(a, b):
        return f"{name_a} ({_cell(a)}) and {name_b} ({_cell(b)}) do not differ at 95%"
    a_better = (a["mean"] < b["mean"]) == (metric in LOWER_IS_BETTER)
    (w, wv), (l, lv) = ((name_a, a), (name_b, b)) if a_better else ((name_b, b), (name_a, a))
    return f"{w} ({_cell(wv)}) beats {l} ({_cell(lv)}) beyond the 95% intervals"


def verdicts(results: dict) -> list[str]:
    """Plain statements of who wins where, computed from the results (never typed by hand).

    Per-class metrics at the default K, each method at its own budget; a difference counts only
    where the 95% intervals do not overlap.
    """
    meta, roles = results["settings"], results["methods"]
    rows = results["by_shots"][str(meta["default_shots"])]
    real_diversity = rows["_real_diversity"]["diversity"]["mean"]
    generators = [m for m in rows if not m.startswith("_") and roles[m]["role"] != "reference"]
    learners = [m for m in generators if roles[m]["role"] == "meta-learner"]
    lines = []
    for metric in ("class_frechet_distance", "class_fidelity"):
        sign = -1 if metric in LOWER_IS_BETTER else 1
        ranked = sorted(generators, key=lambda m: sign * rows[m][metric]["mean"], reverse=True)
        lines.append(
            f"{metric}: best {ranked[0]}; "
            + _compare(ranked[0], rows[ranked[0]][metric], ranked[1], rows[ranked[1]][metric], metric)
        )
    if learners:
        best = min(learners, key=lambda m: rows[m]["class_frechet_distance"]["mean"])
        row = rows[best]
        lines.append(
            f"Best meta-learner: {best}, class fidelity {_cell(row['class_fidelity'])} (chance {1 / meta['classes']:.2f}), "
            f"diversity {row['diversity']['mean'] / real_diversity:.2f}x that of real images, copy score {_cell(row['copy_score'])}, "
            f"{roles[best]['steps']} adaptation steps."
        )
        for baseline in [m for m in generators if roles[m]["role"] == "baseline"]:
            other = rows[baseline]
            lines.append(
                f"vs {baseline} ({roles[baseline]['steps']} steps): "
                + "; ".join(
                    f"{label}: " + _compare(best, row[metric], baseline, other[metric], metric)
                    for label, metric in (("class FD", "class_frechet_distance"), ("class fidelity", "class_fidelity"))
                )
                + f"; diversity {row['diversity']['mean'] / real_diversity:.2f}x vs {other['diversity']['mean'] / real_diversity:.2f}x "
                f"that of real images; copy score {_cell(row['copy_score'])} vs {_cell(other['copy_score'])}."
            )
    for method in [m for m in rows if not m.startswith("_")]:
        copy = rows[method]["copy_score"]
        if copy["mean"] > E.COPY_FLAG:
            caveat = "" if copy["mean"] - copy["ci95"] > E.COPY_FLAG else f"; its interval reaches below {E.COPY_FLAG}"
            lines.append(
                f"Flagged as copying the shots: {method} (copy score {_cell(copy)}, mean above {E.COPY_FLAG}{caveat})."
            )
        elif copy["mean"] + copy["ci95"] > E.COPY_FLAG:
            lines.append(
                f"Near the copy flag: {method} (copy score {_cell(copy)}, mean below {E.COPY_FLAG}, interval reaching above it)."
            )
        if rows[method]["diverged"]["mean"] > 0:
            lines.append(
                f"Caveat: {method} diverged on {100 * rows[method]['diverged']['mean']:.0f}% of generated images (scored as blank)."
            )
    for setting, accuracy in results["downstream"].items():
        base = accuracy["none"]
        helped = [m for m, e in accuracy.items() if m != "none" and e["mean"] - base["mean"] > e["ci95"] + base["ci95"]]
        hurt = [m for m, e in accuracy.items() if m != "none" and base["mean"] - e["mean"] > e["ci95"] + base["ci95"]]
        chosen = sorted({e["weight"] for m, e in accuracy.items() if m != "none"})
        lines.append(
            f"Downstream {setting}: real shots only {_cell(base)}; with generated images at the weights chosen on seen classes "
            f"({', '.join(map(str, chosen))}): help: {', '.join(helped) or 'none'}; hurt: {', '.join(hurt) or 'none'} (beyond 95% intervals)."
        )
        unselected = [
            (m, w, v)
            for m, e in accuracy.items()
            if m != "none"
            for w, v in e.get("by_weight", {}).items()
            if float(w) != e["weight"]
        ]
        above = [f"{m} at w={w}" for m, w, v in unselected if v["mean"] - base["mean"] > v["ci95"] + base["ci95"]]
        below = [f"{m} at w={w}" for m, w, v in unselected if base["mean"] - v["mean"] > v["ci95"] + base["ci95"]]
        lines.append(
            f"  Unselected weights (reported, not chosen): above real shots only beyond the intervals: {', '.join(above) or 'none'}; "
            f"below: {', '.join(below) or 'none'}."
        )
    return lines


def read_results(path: Path) -> dict:
    """A results file written by :func:`write_results`; a damaged one is an error naming it and the fix."""
    try:
        results = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{path} is not valid JSON ({error}); re-run notebook 06 to rewrite it, or restore it with git."
        ) from None
    missing = {"by_shots", "by_steps", "downstream", "methods", "dataset"} - set(results)
    if missing:
        raise ValueError(f"{path} lacks {', '.join(sorted(missing))}; re-run notebook 06 to rewrite it.")
    return results


def update_readme(readme: Path, results_folder: Path) -> str:
    """Replace the README's block between ``<!-- results:start -->`` and ``<!-- results:end -->`` with the tables of ``results_folder``."""
    files = sorted(Path(results_folder).glob("few_shot*.json"))
    if not files:
        raise FileNotFoundError(f"No few_shot*.json in {results_folder}; run the full profile first (make full).")
    blocks = []
    for file in files:
        results = read_results(file)
        blocks.append(
            markdown_table(results)
            + "\n\n"
            + "\n".join(f"- {line}" for line in verdicts(results))
            + f"\n\n(from `{file.relative_to(readme.parent)}`)"
        )
    text = readme.read_text()
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    if start not in text or end not in text:
        raise ValueError(f"{readme} has no {start} ... {end} block")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    new = head + start + "\n" + "\n\n".join(blocks) + "\n" + end + tail
    readme.write_text(new)
    return new


def main(argv: list[str] | None = None) -> int:
    """``python -m metagan_lib.fewshot --update-readme [--profile full]``: regenerate the README's results tables."""
    import argparse

    from .paths import repo_root

    parser = argparse.ArgumentParser(prog="python -m metagan_lib.fewshot", description=main.__doc__, allow_abbrev=False)
    parser.add_argument("--update-readme", action="store_true", required=True)
    parser.add_argument("--profile", default="full")
    parser.add_argument(
        "--force", action="store_true", help="allow a profile other than full (the README publishes full runs)"
    )
    args = parser.parse_args(argv)
    if args.profile != "full" and not args.force:
        print(
            f"error: the README publishes full-profile results; --profile {args.profile} would replace them "
            "(add --force to do it anyway).",
            file=sys.stderr,
        )
        return 2
    try:
        update_readme(repo_root() / "README.md", repo_root() / "results" / args.profile)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"README.md results block regenerated from results/{args.profile}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
