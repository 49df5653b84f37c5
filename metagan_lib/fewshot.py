"""The few-shot generation benchmark's protocol: methods, tasks, seeds and metrics (the report:
:mod:`metagan_lib.report`).

Protocol (one *seed*): draw ``classes`` unseen classes; for each, ``K`` shots are given to every
method and the class's other images are held out, split into two halves: ``reference`` (what
generated images are scored against) and ``ceiling`` (real images playing the generator, the
upper reference). Each method adapts with its own rule and its own budget (``Method.steps``),
reported beside its scores; the steps sweep runs every method at the same numbers of steps.
Metrics are computed in the feature space of a network trained on seen classes only: per class
(Fréchet distance to the class's reference images, class fidelity, diversity, copy score, precision and
coverage of the class's reference images), averaged over classes, and pooled over classes (FD,
precision/recall). Numbers are means over seeds with 95% confidence intervals. Seeds vary the classes,
shots and noise; the networks being compared are trained once (seed 0), which the notebook states.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable, NotRequired, TypedDict

import torch

from . import evaluation as E
from .artifacts import content_hash, load_or_build
from .data import ImageDataset
from .methods import (
    GENERATIVE_KINDS,
    Method,
    context_method,
    context_methods,
    generate,
    pretrain_on_seen,
    pretrained_gan_job,
    replace_diverged,
)
from .runtime import parallel_calls
from .seeds import derive_seed
from .tasks import TaskSampler

__all__ = [  # the protocol's public names; Method, context_method and the pretrained-GAN job come from .methods
    "BenchmarkResult",
    "GENERATIVE_KINDS",
    "LOWER_IS_BETTER",
    "METRIC_RANGES",
    "MAX_HELD_OUT",
    "METRICS",
    "MIX_WEIGHTS",
    "Method",
    "choose_mix_weights",
    "context_method",
    "context_methods",
    "downstream_seed",
    "downstream_settings",
    "evaluate_seed",
    "generate",
    "inside_grid",
    "method_scores",
    "mixed_prototype_accuracy",
    "pretrain_on_seen",
    "pretrained_gan_job",
    "replace_diverged",
    "evaluation_key",
    "run_benchmark",
    "run_benchmark_or_load",
    "scores_over_seeds",
    "select_setting",
    "select_setting_or_load",
    "summarise",
    "sweep_scores",
    "sweep_scores_or_load",
    "table_scores",
    "table_scores_or_load",
]

METRICS = (
    "class_frechet_distance",
    "class_fidelity",
    "diversity",
    "copy_score",
    "class_precision",
    "class_coverage",
    "frechet_distance",
    "precision",
    "recall",
    "diverged",
)
LOWER_IS_BETTER = {"frechet_distance", "class_frechet_distance"}
METRIC_RANGES = {
    m: (0.0, 1.0) for m in ("class_fidelity", "class_precision", "class_coverage", "precision", "recall", "diverged")
} | {m: (0.0, float("inf")) for m in ("class_frechet_distance", "frechet_distance", "diversity", "copy_score")}
"""Where each metric's values can lie (for error bars that respect them)."""
MAX_HELD_OUT = 40  # held-out images per class (MNIST classes hold ~1000)
MIX_WEIGHTS = (0.0, 0.25, 0.5)  # downstream: weight of the generated images' mean in a class prototype


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
        "class_precision": per_class(lambda f, r, s: E.precision_recall(r, f)[0]),
        "class_coverage": per_class(lambda f, r, s: E.coverage(r, f)),
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


def scores_over_seeds(
    methods: list[Method], dataset: ImageDataset, net: E.FeatureNet, seeds: list[int], **budget
) -> dict[str, dict[str, E.Estimate]]:
    """:func:`evaluate_seed` on each seed's tasks (``budget``: its keyword arguments other than ``seed``), summarised as
    ``{method: {metric: mean ± 95% CI over seeds}}``; ``"_real_diversity"`` holds the held-out images' diversity."""
    runs = [evaluate_seed(methods, dataset, net, seed=seed, **budget) for seed in seeds]
    return {
        name: {metric: E.mean_confidence_interval([run[name][metric] for run in runs]) for metric in runs[0][name]}
        for name in runs[0]
    }


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
    tasks from the **seen** classes (a validation split: unseen classes never tune anything). Returns (best, {value:
    score}).

    The grid must bracket the optimum: check that ``best`` is not at its edge (:func:`inside_grid`). The values are
    tried side by side on a CPU (:func:`metagan_lib.runtime.parallel_calls`)."""
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
    """Nearest-prototype accuracy with prototypes ``(1 - weight) mean(real) + weight mean(extra)`` (features
    ``[N, K, d]``, ``[N, n, d]``)."""
    return E.nearest_prototype_accuracy((1 - weight) * real.mean(1) + weight * extra.mean(1), query, query_labels)


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
    """Prototype-classifier accuracy on ``ways``-way ``shots``-shot episodes (unseen classes, or ``class_pool``) with
    each
    method's generated images mixed into the prototypes at each weight of :data:`MIX_WEIGHTS`:
    ``{method: {weight: accuracy}}``
    (key ``"none"``: real shots only). Generated images never replace the shots: weight 0 is the real-only
    classifier."""
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


TIE_TOLERANCE = 1e-6  # validation accuracies closer than this are equal (one query moves a mean by 1 / queries >> 1e-6)


def choose_mix_weights(validation: dict[str, dict[float, float]]) -> dict[str, float]:
    """Per method, the smallest weight whose validation accuracy is within :data:`TIE_TOLERANCE` of the best (ties,
    including float-rounding ones, go to the smaller weight, i.e. to the real shots)."""
    return {
        name: min(w for w in by_weight if by_weight[w] >= max(by_weight.values()) - TIE_TOLERANCE)
        for name, by_weight in validation.items()
    }


def summarise(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """``[{method: {metric: v}}]`` over seeds -> ``{method: {metric: {"mean", "ci95", "n"}}}``."""
    return {
        method: {metric: _estimate([seed[method][metric] for seed in per_seed]) for metric in per_seed[0][method]}
        for method in per_seed[0]
    }


def downstream_settings(dataset: ImageDataset, default_shots: int) -> list[tuple[str, dict[str, int]]]:
    """The downstream classification settings: 5-way ``default_shots``-shot, and 20-way 1-shot (fewer ways when the
    dataset has fewer classes)."""
    ways = min(20, len(dataset.unseen_classes), len(dataset.seen_classes))
    return [
        (f"5-way {default_shots}-shot", dict(ways=5, shots=default_shots)),
        (f"{ways}-way 1-shot", dict(ways=ways, shots=1)),
    ]


def _benchmark_jobs(
    methods, dataset, net, classifier, *, seeds, settings, downstream, classes, generated_per_class, downstream_episodes
) -> list[tuple[tuple[str, str], Callable[[], dict]]]:
    """``(key, call)`` pairs: the downstream validation and test jobs first (the longest, so that no worker is left with
    one at the end), then one job per (setting, seed). Every job seeds itself."""
    classify = partial(
        downstream_seed, methods, dataset, classifier, generated_per_class=generated_per_class,
        episodes=downstream_episodes,
    )  # fmt: skip
    scores_of = lambda scored: partial(
        evaluate_seed, scored, dataset, net, classes=classes, generated_per_class=generated_per_class
    )
    own_budget_shots = {budget["shots"] for sweep, _, budget in settings if sweep == "by_shots"}
    jobs = []
    for name, budget in downstream:
        jobs.append((("validation", name), partial(classify, seed=0, class_pool=dataset.seen_classes, **budget)))
        jobs += [(("downstream", name), partial(classify, seed=s, **budget)) for s in seeds]
    for sweep, value, budget in settings:
        to_score = methods
        if sweep == "by_steps" and budget["shots"] in own_budget_shots:  # the rest is in by_shots at these shots
            to_score = [m for m in methods if not same_as_own_budget(m, budget["steps"])]
        jobs += [((sweep, value), partial(scores_of(to_score), seed=s, **budget)) for s in seeds]
    return jobs


def same_as_own_budget(method: Method, steps: int) -> bool:
    """Whether ``method`` scored after ``steps`` adaptation steps gives, bit for bit, its numbers at its own budget
    (same tasks, same seeds): it adapts nothing (the references), or ``steps`` is its budget."""
    return method.kind not in GENERATIVE_KINDS or method.steps == steps


def _with_own_budget_scores(scored: dict, own_budget: dict) -> dict:
    """One seed's ``{method: scores}`` at a step count, completed from the same seed's own-budget evaluation (the
    methods :func:`same_as_own_budget` skipped), in the own-budget evaluation's method order."""
    return {name: scored[name] if name in scored else own_budget[name] for name in own_budget}


def _downstream_summary(grouped: dict, downstream: list[tuple[str, dict]]) -> dict:
    """Per downstream setting and method: accuracy at the weight chosen on the validation episodes, and at every
    weight."""
    summary = {}
    for name, _ in downstream:
        weights = choose_mix_weights(grouped[("validation", name)][0])
        per_seed = grouped[("downstream", name)]
        summary[name] = {
            method: {
                **_estimate([p[method][w] for p in per_seed]),
                "weight": w,
                "by_weight": {str(v): _estimate([p[method][v] for p in per_seed]) for v in per_seed[0][method]},
            }
            for method, w in weights.items()
        }
    return summary


class BenchmarkResult(TypedDict):
    """What :func:`run_benchmark` returns (and ``results/<profile>/few_shot*.json`` holds)."""

    dataset: str  # the dataset's name
    settings: dict  # seeds, shot_counts, step_counts, default_shots, classes, generated_per_class, downstream_episodes
    by_shots: dict  # {K: {method: {metric: {"mean", "ci95", "n"}}}}, each method at its own step budget
    by_steps: dict  # {steps: {method: {metric: ...}}} at default_shots
    downstream: dict  # {"5-way 5-shot": {method: {"weight", "mean", "ci95", "n", "by_weight"}}, ...}
    downstream_validation: dict  # {setting: {method: {weight: seen-class accuracy}}}
    downstream_classifier: str  # whose features the downstream prototype classifier uses (FeatureNet or ProtoNet)
    methods: dict  # {method: {"kind", "role", "steps"[, "compute_within"]}}
    profile: NotRequired[str]  # added by notebook 06
    profile_settings: NotRequired[dict]  # added by notebook 06


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
    classifier: E.FeatureNet | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> BenchmarkResult:
    """The whole comparison: metrics vs K (each method at its own budget), vs adaptation steps (at ``default_shots``),
    and downstream accuracy (:func:`downstream_settings`; mixing weights chosen on seen-class episodes) of a
    nearest-prototype classifier on ``classifier``'s features (default: ``net``, the metrics' feature network). The
    result names its dataset, the classifier and the settings it was run with (what :mod:`metagan_lib.report` reads).

    Every (setting, seed) pair is an independent job (it seeds itself); on a CPU the jobs run side
    by side in worker processes (:func:`metagan_lib.runtime.parallel_calls`), with, bit for bit,
    the numbers the same jobs give one after the other on one thread in this process (tested). A method is scored
    once where the step sweep repeats its own budget (:func:`same_as_own_budget`): that ``by_steps`` entry is its
    ``by_shots`` entry at ``default_shots``, the same tasks and seeds, bit for bit (tested).
    """
    settings = [("by_shots", str(k), dict(shots=k, steps=None)) for k in shot_counts]
    settings += [("by_steps", str(steps), dict(shots=default_shots, steps=steps)) for steps in step_counts]
    downstream = downstream_settings(dataset, default_shots)
    classifier = net if classifier is None else classifier
    jobs = _benchmark_jobs(
        methods, dataset, net, classifier, seeds=seeds, settings=settings, downstream=downstream, classes=classes,
        generated_per_class=generated_per_class, downstream_episodes=downstream_episodes,
    )  # fmt: skip
    progress(
        f"{len(jobs)} jobs: {len(settings)} settings and {len(downstream)} downstream settings x {len(seeds)} seeds"
    )
    outputs = parallel_calls(
        [call for _, call in jobs], device=next(net.parameters()).device, description="few-shot benchmark"
    )
    grouped = _grouped_outputs(
        jobs, outputs, default_shots=default_shots, shot_counts=shot_counts, step_counts=step_counts
    )
    settings_used = dict(
        seeds=list(seeds), shot_counts=list(shot_counts), step_counts=list(step_counts), default_shots=default_shots,
        classes=min(classes, len(dataset.unseen_classes)),  # as drawn (all, when the dataset has fewer unseen classes)
        generated_per_class=generated_per_class, downstream_episodes=downstream_episodes,
    )  # fmt: skip
    return {
        "dataset": dataset.name,
        "settings": settings_used,
        "downstream_classifier": type(classifier).__name__,
        "by_shots": {str(k): summarise(grouped[("by_shots", str(k))]) for k in shot_counts},
        "by_steps": {str(steps): summarise(grouped[("by_steps", str(steps))]) for steps in step_counts},
        "downstream": _downstream_summary(grouped, downstream),
        "downstream_validation": _downstream_validation(grouped, downstream),
        "methods": {m.name: _method_entry(m) for m in methods},
    }


def _grouped_outputs(
    jobs: list, outputs: list, *, default_shots: int, shot_counts: list[int], step_counts: list[int]
) -> dict[tuple[str, str], list]:
    """The jobs' outputs by setting key, in seed order; each ``by_steps`` entry takes the scores of methods whose own
    budget it repeats from the ``by_shots`` entry at ``default_shots`` (:func:`_with_own_budget_scores`)."""
    grouped: dict[tuple[str, str], list] = {}
    for (key, _), output in zip(jobs, outputs):
        grouped.setdefault(key, []).append(output)
    if str(default_shots) in {str(k) for k in shot_counts}:
        own_budget = grouped[("by_shots", str(default_shots))]
        for steps in step_counts:
            scored = grouped[("by_steps", str(steps))]
            grouped[("by_steps", str(steps))] = [_with_own_budget_scores(s, o) for s, o in zip(scored, own_budget)]
    return grouped


def _downstream_validation(grouped: dict[tuple[str, str], list], downstream: list) -> dict:
    """Each downstream setting's seen-class validation accuracies, ``{setting: {method: {weight: accuracy}}}``."""
    return {
        name: {
            method: {str(w): v for w, v in by_w.items()} for method, by_w in grouped[("validation", name)][0].items()
        }
        for name, _ in downstream
    }


def _method_entry(method: Method) -> dict:
    """What the results keep of a method: its kind, role and budget, and ``compute_within`` where it is set."""
    entry = {"kind": method.kind, "role": method.role, "steps": method.steps}
    return entry | ({"compute_within": method.compute_within} if method.compute_within else {})


def _method_key(method: Method) -> list:
    within = [method.compute_within] if method.compute_within else []  # keys of methods without one stay as they were
    return [method.name, method.kind, method.role, method.steps, content_hash(method.model), *within]


def _estimate(values: list[float]) -> dict[str, float]:
    estimate = E.mean_confidence_interval(values)
    return {"mean": estimate.mean, "ci95": estimate.half_width, "n": estimate.n}


# ----------------------------------------------------------------------------------------------
# Cached evaluations (notebook 06 loads them, like the trained networks, from the cache or the shipped artefacts)
# ----------------------------------------------------------------------------------------------


def evaluation_key(kind: str, methods: list[Method], dataset: ImageDataset, nets: list, settings: dict) -> dict:
    """Everything that determines an evaluation's numbers: each method's name, kind, role, budget, the contents of its
    model (:func:`~metagan_lib.artifacts.content_hash`) and its ``compute_within`` where set, the dataset, the scoring
    networks and the settings; for the kinds that store every metric (``"benchmark"``, ``"sweep"``, ``"scores"``),
    :data:`METRICS`, so that an evaluation stored before a metric was added is computed again, not loaded without it."""
    stored = {"metrics": list(METRICS)} if kind in ("benchmark", "sweep", "scores") else {}
    return stored | {
        "kind": kind,
        "methods": [_method_key(m) for m in methods],
        "dataset": dataset.name,
        "data": content_hash([dataset.images, dataset.labels, dataset.seen_classes, dataset.unseen_classes]),
        "nets": [content_hash(net) for net in nets],
        "settings": {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in settings.items()},
    }


def _plain(result: dict) -> dict:
    if not isinstance(result, dict) or "by_shots" not in result or "downstream" not in result:
        raise ValueError("not a benchmark result")
    return result


Sweeps = dict[str, tuple[Callable[[float], Method], list[float]]]  # sweep name -> (method at a value, the values)
SweepScores = dict[str, dict[float, dict[str, dict[str, float]]]]  # sweep -> value -> metric -> mean, ci95, n


def sweep_scores(sweeps: Sweeps, dataset: ImageDataset, net: E.FeatureNet, seeds: list[int], **budget) -> SweepScores:
    """Every sweep's method at each of its values (its sampling noise, say), scored by :func:`evaluate_seed` on each
    seed's tasks at the methods' own budgets (``budget``: ``shots``, ``classes``, ``generated_per_class``): the same
    tasks, shots and noise as :func:`run_benchmark`'s table, each seed a job in a worker process as there, so a sweep's
    point at a table method's setting repeats its row bit for bit (on the same machine). Returns
    ``{sweep: {value: {metric: {"mean", "ci95", "n"}}}}`` plus ``"_real_diversity"``: ``{"diversity": ...}`` of the
    held-out images."""
    made = {(name, value): make(value) for name, (make, grid) in sweeps.items() for value in grid}
    names = [method.name for method in made.values()]
    if len(set(names)) < len(names):
        raise ValueError(f"Each swept method needs its own name (one per sweep and value), got {names}.")
    rows = table_scores(list(made.values()), dataset, net, seeds, description="sweeps", **budget)
    scores: SweepScores = {name: {} for name in sweeps}
    for (name, value), method in made.items():
        scores[name][value] = rows[method.name]
    scores["_real_diversity"] = {"diversity": rows["_real_diversity"]["diversity"]}
    return scores


TableScores = dict[str, dict[str, dict[str, float]]]  # method (and "_real_diversity") -> metric -> mean, ci95, n


def table_scores(
    methods: list[Method], dataset: ImageDataset, net: E.FeatureNet, seeds: list[int], description: str = "scores",
    **budget,
) -> TableScores:  # fmt: skip
    """Each method scored by :func:`evaluate_seed` in ``net``'s features on each seed's tasks at its own budget
    (``budget``: ``shots``, ``classes``, ``generated_per_class``): the tasks, shots and noise of :func:`run_benchmark`'s
    table, each seed a job in a worker process as there, so with the table's ``net`` a method's entry repeats its row
    bit for bit (on the same machine). Returns ``{method: {metric: {"mean", "ci95", "n"}}}`` plus
    ``"_real_diversity"``."""
    jobs = [partial(evaluate_seed, methods, dataset, net, steps=None, seed=seed, **budget) for seed in seeds]
    return summarise(parallel_calls(jobs, device=next(net.parameters()).device, description=description))


def table_scores_or_load(
    path: Path | str, methods: list[Method], dataset: ImageDataset, net: E.FeatureNet, seeds: list[int], **budget
) -> TableScores:
    """:func:`table_scores` cached at ``path`` (or shipped), keyed by the methods, the data, ``net`` and the budget
    (:func:`evaluation_key`), else computed."""
    key = evaluation_key("scores", methods, dataset, [net], {"seeds": list(seeds), **budget})

    def from_payload(payload: TableScores) -> TableScores:
        if set(payload) != {m.name for m in methods} | {"_real_diversity"}:
            raise ValueError("the stored scores are not these methods'")
        return payload

    return load_or_build(
        path,
        key,
        lambda: table_scores(methods, dataset, net, seeds, **budget),
        to_payload=dict,
        from_payload=from_payload,
    )


def sweep_scores_or_load(
    path: Path | str, sweeps: Sweeps, dataset: ImageDataset, net: E.FeatureNet, seeds: list[int], **budget
) -> SweepScores:
    """:func:`sweep_scores` cached at ``path`` (or shipped), keyed by every swept method (:func:`evaluation_key`),
    else computed."""
    methods = [make(value) for make, grid in sweeps.values() for value in grid]
    grids = {name: list(grid) for name, (_, grid) in sweeps.items()}
    key = evaluation_key("sweep", methods, dataset, [net], {"seeds": list(seeds), "grids": grids, **budget})

    def from_payload(payload: dict) -> SweepScores:
        scores = {name: {float(value): entry for value, entry in pairs} for name, pairs in payload["sweeps"].items()}
        if {name: list(values) for name, values in scores.items()} != grids:
            raise ValueError("the stored sweeps are not these grids")
        return {**scores, "_real_diversity": payload["real_diversity"]}

    def to_payload(scores: SweepScores) -> dict:
        swept = {name: [[value, entry] for value, entry in scores[name].items()] for name in sweeps}
        return {"sweeps": swept, "real_diversity": scores["_real_diversity"]}

    return load_or_build(
        path,
        key,
        lambda: sweep_scores(sweeps, dataset, net, seeds, **budget),
        to_payload=to_payload,
        from_payload=from_payload,
    )


def run_benchmark_or_load(
    path: Path | str, methods: list[Method], dataset: ImageDataset, net: E.FeatureNet, **settings
) -> BenchmarkResult:
    """:func:`run_benchmark`'s result cached at ``path`` (or shipped) under :func:`evaluation_key`, else computed."""
    nets = [net] if settings.get("classifier") is None else [net, settings["classifier"]]
    plain = {k: v for k, v in settings.items() if k not in ("classifier", "progress")}
    return load_or_build(
        path,
        evaluation_key("benchmark", methods, dataset, nets, plain),
        lambda: run_benchmark(methods, dataset, net, **settings),
        to_payload=_plain,
        from_payload=_plain,
    )


def select_setting_or_load(
    path: Path | str, make_method: Callable[[float], Method], dataset: ImageDataset, net: E.FeatureNet,
    grid: list[float], **budget,
) -> tuple[float, dict[float, float]]:  # fmt: skip
    """:func:`select_setting`'s choice and scores cached at ``path`` (or shipped), keyed by the method made at every
    value of ``grid`` (:func:`evaluation_key`), else computed."""
    key = evaluation_key("setting", [make_method(value) for value in grid], dataset, [net], {"grid": grid, **budget})

    def from_payload(payload: dict) -> tuple[float, dict[float, float]]:
        scores = {float(value): float(score) for value, score in payload["scores"]}
        if list(scores) != [float(v) for v in grid] or payload["best"] not in scores:
            raise ValueError("the stored scores are not the grid's")
        return payload["best"], scores

    return load_or_build(
        path,
        key,
        lambda: select_setting(make_method, dataset, net, grid, **budget),
        to_payload=lambda chosen: {"best": chosen[0], "scores": [[v, s] for v, s in chosen[1].items()]},
        from_payload=from_payload,
    )
