"""The few-shot generation benchmark: methods, tasks, seeds, metrics and the results file.

Protocol (one *seed*): draw ``classes`` unseen classes; for each, ``K`` shots are given to every
method and the class's other images are held out, split into two halves: ``reference`` (what
generated images are scored against) and ``ceiling`` (real images playing the generator, the
upper reference). Every method adapts to the same shots with the same rule and budget: ``steps``
inner steps (a D step then a G step, plain gradient descent with the method's learning rate,
the same noise). Metrics are computed in the feature space of a network trained on seen
classes only; Fréchet distance and precision/recall pool all classes of a seed, as the
literature does; the rest are per class, averaged. Numbers are means over seeds with 95%
confidence intervals. Seeds vary the classes, shots and noise; the networks being compared are
trained once (seed 0), which the notebook states.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import torch

from . import evaluation as E
from .augment import diff_augment
from .data import ImageDataset
from .meta import MetaGAN, adapt_and_sample_many
from .runtime import parallel_calls
from .tasks import TaskSampler
from .train import GANConfig, GANRun, train_or_load

METRICS = ("frechet_distance", "precision", "recall", "diversity", "class_fidelity", "memorisation", "diverged")
LOWER_IS_BETTER = {"frechet_distance"}
MAX_HELD_OUT = 40  # held-out images per class (MNIST classes hold ~1000)


@dataclass(frozen=True)
class Method:
    """A way to produce images of a class from its K shots.

    ``meta`` methods adapt a (meta-learned, pretrained or random) initialisation with
    :func:`metagan_lib.meta.adapt`; ``kind="ceiling"`` returns held-out real images and
    ``kind="copy"`` the shots themselves, repeated with augmentation.
    """

    name: str
    kind: str = "adapt"
    meta: MetaGAN | None = None


def pretrain_on_seen(dataset: ImageDataset, config: GANConfig, path: Path, *, seed: int = 0,
                     device: torch.device | str = "cpu") -> GANRun:
    """The fine-tuning baseline's starting point: one GAN trained (or loaded from ``path``) on the seen classes only."""
    images, _ = dataset.subset(dataset.seen_classes)
    return train_or_load(path, images, config, seed=seed, device=device, description="pretraining on seen classes")


def generate(method: Method, shots: torch.Tensor, ceiling: torch.Tensor, n: int, steps: int, seed: int) -> torch.Tensor:
    """``n`` images per class, ``[C, n, 1, 28, 28]`` in [-1, 1], from shots ``[C, K, ...]`` (all classes adapted at once).

    ``ceiling`` (``[C, M, ...]``, held-out real images) is used by the ceiling method only (``n <= M``).
    """
    if method.kind == "ceiling":
        return ceiling[:, :n]
    if method.kind == "copy":
        classes, k = shots.shape[:2]
        repeats = shots[:, torch.arange(n, device=shots.device) % k].flatten(0, 1)
        augmented = diff_augment(repeats, torch.Generator(device=shots.device).manual_seed(seed))
        return augmented.view(classes, n, *shots.shape[2:])
    return adapt_and_sample_many(method.meta, shots, steps, n, seed=seed)


def replace_diverged(images: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Images whose adaptation diverged (non-finite pixels) become blank (-1) and count against the method;
    returns the images and the share that diverged."""
    bad = ~torch.isfinite(images).flatten(-3).all(dim=-1)
    blank = torch.full_like(images, -1.0)
    return torch.where(bad[..., None, None, None], blank, images), bad.float().mean().item()


def evaluate_seed(methods: list[Method], dataset: ImageDataset, net: E.FeatureNet, *, shots: int, steps: int, classes: int,
                  generated_per_class: int, seed: int, class_pool: torch.Tensor | None = None) -> dict[str, dict[str, float]]:
    """All metrics of all methods on one seed's tasks: ``{method: {metric: value}}``.

    Tasks come from the unseen classes, or from ``class_pool`` (validation on seen classes).
    """
    device = next(net.parameters()).device
    pool = dataset.unseen_classes if class_pool is None else class_pool
    sampler = TaskSampler(dataset, pool, device=device, seed=seed)
    queries = min(sampler.min_count - shots, MAX_HELD_OUT)
    episode = sampler.sample(1, ways=min(classes, sampler.num_classes), shots=shots, queries=queries)
    support, held_out = episode.support[0], episode.query[0]  # [N, K, ...], [N, Q, ...]
    ways, half = len(support), (queries + 1) // 2
    reference, ceiling = held_out[:, :half], held_out[:, half:]
    reference_features = [E.embed(net, r) for r in reference]
    shot_features = [E.embed(net, s) for s in support]
    prototypes = torch.stack([f.mean(0) for f in reference_features])
    all_reference = torch.cat(reference_features)
    results = {}
    for method in methods:
        n = min(generated_per_class, ceiling.shape[1]) if method.kind == "ceiling" else generated_per_class
        images, diverged = replace_diverged(generate(method, support, ceiling, n, steps, seed * 1000))
        fake_features = [E.embed(net, x) for x in images]
        all_fake = torch.cat(fake_features)
        labels = torch.arange(ways, device=device).repeat_interleave(n)
        precision, recall = E.precision_recall(all_reference, all_fake)
        results[method.name] = {
            "frechet_distance": E.frechet_distance(all_reference, all_fake),
            "precision": precision,
            "recall": recall,
            "diversity": sum(E.mean_pairwise_distance(f) for f in fake_features) / ways,
            "class_fidelity": E.class_fidelity(all_fake, labels, prototypes),
            "memorisation": float(torch.tensor([E.memorisation_ratio(f, r, s) for f, r, s in zip(fake_features, reference_features, shot_features)]).median()),
            "diverged": diverged,
        }
    results["_real_diversity"] = {"diversity": sum(E.mean_pairwise_distance(f) for f in reference_features) / ways}
    return results


def select_step_size(make_method: Callable[[float], Method], dataset: ImageDataset, net: E.FeatureNet, grid: list[float], *,
                     shots: int, steps: int, classes: int, generated_per_class: int, seed: int = 0) -> tuple[float, dict[float, float]]:
    """Choose a baseline's adaptation step size: the one in ``grid`` with the lowest Fréchet distance on tasks from the
    **seen** classes (a validation split: unseen classes are never used to tune anything). Returns (best, {step size: FD}).

    The step sizes are tried side by side on a CPU (:func:`metagan_lib.runtime.parallel_calls`)."""
    methods = [make_method(lr) for lr in grid]
    calls = [partial(evaluate_seed, [method], dataset, net, shots=shots, steps=steps, classes=classes,
                     generated_per_class=generated_per_class, seed=seed, class_pool=dataset.seen_classes) for method in methods]
    results = parallel_calls(calls, device=next(net.parameters()).device)
    scores = {lr: result[method.name]["frechet_distance"] for lr, method, result in zip(grid, methods, results)}
    return min(scores, key=scores.get), scores


def downstream_seed(methods: list[Method], dataset: ImageDataset, net: E.FeatureNet, *, ways: int, shots: int, steps: int,
                    generated_per_class: int, episodes: int, seed: int) -> dict[str, float]:
    """Prototype-classifier accuracy on ``ways``-way ``shots``-shot unseen episodes, with each method's generated
    images added to the support set (key ``"none"``: real shots only)."""
    device = next(net.parameters()).device
    sampler = TaskSampler(dataset, dataset.unseen_classes, device=device, seed=10_000 + seed)
    queries = min(10, sampler.min_count - shots)
    episode = sampler.sample(episodes, ways, shots, queries)
    query_labels = torch.arange(ways, device=device).repeat_interleave(queries)
    real_labels = torch.arange(ways, device=device).repeat_interleave(shots)
    augmented_labels = torch.arange(ways, device=device).repeat_interleave(shots + generated_per_class)
    accuracy: dict[str, list[float]] = {"none": []}
    for t in range(episodes):
        query = E.embed(net, episode.query[t].flatten(0, 1))
        real = E.embed(net, episode.support[t].flatten(0, 1)).view(ways, shots, -1)
        accuracy["none"].append(E.prototype_accuracy(real.flatten(0, 1), real_labels, query, query_labels, ways))
        for method in methods:
            if method.kind == "ceiling":
                continue
            images, _ = replace_diverged(generate(method, episode.support[t], episode.support[t], generated_per_class, steps, seed * 1000 + t * 10))
            extra = E.embed(net, images.flatten(0, 1)).view(ways, generated_per_class, -1)
            features = torch.cat([real, extra], dim=1).flatten(0, 1)
            accuracy.setdefault(method.name, []).append(E.prototype_accuracy(features, augmented_labels, query, query_labels, ways))
    return {name: sum(values) / len(values) for name, values in accuracy.items()}


def summarise(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """``[{method: {metric: v}}]`` over seeds -> ``{method: {metric: {"mean", "ci95", "n"}}}``."""
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for method in per_seed[0]:
        summary[method] = {}
        for metric in per_seed[0][method]:
            estimate = E.mean_confidence_interval([seed[method][metric] for seed in per_seed])
            summary[method][metric] = {"mean": estimate.mean, "ci95": estimate.half_width, "n": estimate.n}
    return summary


def run_benchmark(methods: list[Method], dataset: ImageDataset, net: E.FeatureNet, *, seeds: list[int], shot_counts: list[int],
                  step_counts: list[int], default_shots: int, default_steps: int, classes: int, generated_per_class: int,
                  downstream_episodes: int, progress: Callable[[str], None] = lambda message: None) -> dict:
    """The whole comparison: metrics vs K (at ``default_steps``), vs adaptation steps (at ``default_shots``), and downstream accuracy.

    Every (setting, seed) pair is an independent job (it seeds itself); on a CPU the jobs run side
    by side in worker processes (:func:`metagan_lib.runtime.parallel_calls`), with, bit for bit,
    the numbers the same jobs give one after the other on one thread in this process (tested).
    """
    common = dict(classes=classes, generated_per_class=generated_per_class)
    settings = [("by_shots", str(k), dict(shots=k, steps=default_steps)) for k in shot_counts]
    # (default_shots, default_steps) is the same tasks, seeds and budget as in by_shots: measured once, reused below
    settings += [("by_steps", str(steps), dict(shots=default_shots, steps=steps)) for steps in step_counts
                 if not (steps == default_steps and default_shots in shot_counts)]
    downstream_settings = [(f"5-way {k}-shot", dict(ways=5, shots=k, steps=default_steps, episodes=downstream_episodes)) for k in (1, 5)]
    calls, keys = [], []
    for name, budget in downstream_settings:  # the longest jobs first, so that no worker is left with one at the end
        for s in seeds:
            calls.append(partial(downstream_seed, methods, dataset, net, generated_per_class=generated_per_class, seed=s, **budget))
            keys.append(("downstream", name))
    for sweep, value, budget in settings:
        for s in seeds:
            calls.append(partial(evaluate_seed, methods, dataset, net, seed=s, **common, **budget))
            keys.append((sweep, value))
    progress(f"{len(calls)} jobs: {len(settings)} settings and {len(downstream_settings)} downstream settings x {len(seeds)} seeds")
    outputs = parallel_calls(calls, device=next(net.parameters()).device, description="few-shot benchmark")
    grouped: dict[tuple[str, str], list] = {}
    for key, output in zip(keys, outputs):
        grouped.setdefault(key, []).append(output)
    by_shots = {str(k): summarise(grouped[("by_shots", str(k))]) for k in shot_counts}
    by_steps = {str(steps): by_shots[str(default_shots)] if ("by_steps", str(steps)) not in grouped else summarise(grouped[("by_steps", str(steps))])
                for steps in step_counts}
    downstream = {}
    for name, _ in downstream_settings:
        per_seed = grouped[("downstream", name)]
        downstream[name] = {method: {"mean": (e := E.mean_confidence_interval([p[method] for p in per_seed])).mean, "ci95": e.half_width, "n": e.n}
                            for method in per_seed[0]}
    return {"by_shots": by_shots, "by_steps": by_steps, "downstream": downstream}


def results_path(folder: Path, dataset: str) -> Path:
    """``few_shot.json`` for the default dataset, ``few_shot_<dataset>.json`` for the others."""
    return Path(folder) / ("few_shot.json" if dataset == "glyphs" else f"few_shot_{dataset}.json")


def _cell(entry: dict[str, float]) -> str:
    return f"{entry['mean']:.4g} ± {entry['ci95']:.2g}"


def markdown_table(results: dict) -> str:
    """The headline tables: metrics at the default K and steps, and downstream accuracy."""
    meta = results["settings"]
    rows = results["by_shots"][str(meta["default_shots"])]
    methods = [m for m in rows if not m.startswith("_")]
    lines = [f"**{results['dataset']}**, K = {meta['default_shots']} shots, {meta['default_steps']} adaptation steps, "
             f"{len(meta['seeds'])} seeds x {meta['classes']} unseen classes, mean ± 95% CI "
             f"(FD lower is better; real-image diversity {_cell(rows['_real_diversity']['diversity'])}):", "",
             "| method | " + " | ".join(METRICS) + " |", "|---|" + "---:|" * len(METRICS)]
    for method in methods:
        lines.append(f"| {method} | " + " | ".join(_cell(rows[method][m]) for m in METRICS) + " |")
    lines += ["", "Downstream: prototype-classifier accuracy on unseen classes with generated images added to the support set:", "",
              "| support set | " + " | ".join(results["downstream"]) + " |", "|---|" + "---:|" * len(results["downstream"])]
    names = list(next(iter(results["downstream"].values())))
    for name in names:
        label = "real shots only" if name == "none" else f"+ {name}"
        lines.append(f"| {label} | " + " | ".join(_cell(results["downstream"][k][name]) for k in results["downstream"]) + " |")
    return "\n".join(lines)


def write_results(results: dict, folder: Path) -> Path:
    """Write ``few_shot[_<dataset>].json`` and the matching ``.md`` table; return the JSON path."""
    path = results_path(folder, results["dataset"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
    path.with_suffix(".md").write_text(markdown_table(results) + "\n")
    return path


def verdicts(results: dict) -> list[str]:
    """Plain statements of who wins where, computed from the results (never typed by hand).

    Compares the generating methods (not the real-image ceiling nor the copy baseline) at the
    default K and steps; a win counts only where the 95% intervals do not overlap.
    """
    meta = results["settings"]
    rows = results["by_shots"][str(meta["default_shots"])]
    generators = [m for m in rows if not m.startswith("_") and m not in ("real held-out (ceiling)", "copy shots + augmentation")]
    lines = []
    for metric in ("frechet_distance", "precision", "recall", "class_fidelity"):
        sign = -1 if metric in LOWER_IS_BETTER else 1
        ranked = sorted(generators, key=lambda m: sign * rows[m][metric]["mean"], reverse=True)
        best, second = rows[ranked[0]][metric], rows[ranked[1]][metric]
        separated = abs(best["mean"] - second["mean"]) > best["ci95"] + second["ci95"]
        lines.append(f"{metric}: best {ranked[0]} ({_cell(best)}), "
                     + (f"ahead of {ranked[1]} ({_cell(second)}) beyond the 95% intervals" if separated
                        else f"not separable from {ranked[1]} ({_cell(second)}) at 95%"))
    meta_learners = [m for m in generators if m in ("MAML", "FOMAML", "Reptile", "Meta-SGD")]
    baseline = "fine-tune pretrained GAN"
    if meta_learners and baseline in rows:
        fd = lambda m: rows[m]["frechet_distance"]  # noqa: E731
        best_meta = min(meta_learners, key=lambda m: fd(m)["mean"])
        gap = fd(baseline)["mean"] - fd(best_meta)["mean"]
        for method in generators:
            diverged = rows[method]["diverged"]["mean"]
            if diverged > 0:
                lines.append(f"Caveat: {method} diverged on {100 * diverged:.0f}% of generated images at {meta['default_steps']} adaptation "
                             "steps (scored as blank images); its row measures that instability more than its generator.")
        if abs(gap) <= fd(baseline)["ci95"] + fd(best_meta)["ci95"]:
            lines.append(f"Meta-learning vs fine-tuning (FD): the best meta-learner, {best_meta}, does not differ from fine-tuning a pretrained GAN at 95%.")
        elif gap > 0:
            lines.append(f"Meta-learning vs fine-tuning (FD): {best_meta} beats fine-tuning a pretrained GAN ({_cell(fd(best_meta))} vs {_cell(fd(baseline))}).")
        else:
            lines.append(f"Meta-learning vs fine-tuning (FD): fine-tuning a pretrained GAN beats every meta-learner ({_cell(fd(baseline))} vs {best_meta}'s {_cell(fd(best_meta))}).")
    for setting, accuracy in results["downstream"].items():
        base = accuracy["none"]
        helped = [m for m, e in accuracy.items() if m != "none" and e["mean"] - base["mean"] > e["ci95"] + base["ci95"]]
        hurt = [m for m, e in accuracy.items() if m != "none" and base["mean"] - e["mean"] > e["ci95"] + base["ci95"]]
        lines.append(f"Downstream {setting}: real shots only {_cell(base)}; generated images help: {', '.join(helped) or 'none'}; "
                     f"hurt: {', '.join(hurt) or 'none'} (beyond 95% intervals).")
    return lines


def update_readme(readme: Path, results_folder: Path) -> str:
    """Replace the README's block between ``<!-- results:start -->`` and ``<!-- results:end -->`` with the tables of ``results_folder``."""
    files = sorted(Path(results_folder).glob("few_shot*.json"))
    if not files:
        raise FileNotFoundError(f"No few_shot*.json in {results_folder}; run the full profile first (make full).")
    blocks = []
    for file in files:
        results = json.loads(file.read_text())
        blocks.append(markdown_table(results) + "\n\n" + "\n".join(f"- {line}" for line in verdicts(results))
                      + f"\n\n(from `{file.relative_to(readme.parent)}`)")
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

    parser = argparse.ArgumentParser(prog="python -m metagan_lib.fewshot", description=main.__doc__)
    parser.add_argument("--update-readme", action="store_true", required=True)
    parser.add_argument("--profile", default="full")
    args = parser.parse_args(argv)
    update_readme(repo_root() / "README.md", repo_root() / "results" / args.profile)
    print(f"README.md results block regenerated from results/{args.profile}/")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
