"""The few-shot benchmark's report: results files, tables, verdicts and the README's results block.

Reads and writes what :func:`metagan_lib.fewshot.run_benchmark` returns (plus ``dataset``, ``profile``
and ``settings``, which notebook 06 adds). Verdicts find methods by their role (meta-learner,
baseline, reference), never by display name, and count a difference only where the 95%
intervals do not overlap. ``python -m metagan_lib.report --update-readme`` regenerates the README's
results block from ``results/full/``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from . import evaluation as E
from .artifacts import shipped_table
from .fewshot import LOWER_IS_BETTER, METRICS
from .methods import GENERATIVE_KINDS
from .profiles import PROFILE_NAMES

# what each verdict compares: (label, metric)
PER_CLASS_METRICS = (("class FD", "class_frechet_distance"), ("class fidelity", "class_fidelity"))


def results_path(folder: Path, dataset: str) -> Path:
    """``few_shot.json`` for the default dataset, ``few_shot_<dataset>.json`` for the others."""
    return Path(folder) / ("few_shot.json" if dataset == "glyphs" else f"few_shot_{dataset}.json")


def _cell(entry: dict[str, float]) -> str:
    return f"{entry['mean']:.3g} ± {entry['ci95']:.2g}"


def markdown_table(results: dict) -> str:
    """The headline tables: metrics at the default K (each method at its own adaptation budget), and downstream
    accuracy."""
    meta = results["settings"]
    rows = results["by_shots"][str(meta["default_shots"])]
    methods = [m for m in rows if not m.startswith("_")]
    lines = [
        f"**{results['dataset']}**, K = {meta['default_shots']} shots, {len(meta['seeds'])} seeds x "
        f"{meta['classes']} unseen classes, mean ± 95% CI; class fidelity chance {1 / meta['classes']:.2f}; "
        f"real-image diversity {_cell(rows['_real_diversity']['diversity'])}; "
        f"copy score 1 = new instances, flagged above {E.COPY_FLAG}:",
        "",
        "| method | adaptation steps | " + " | ".join(METRICS) + " |",
        "|---|---:|" + "---:|" * len(METRICS),
    ]
    for method in methods:
        steps = results["methods"][method]["steps"] if results["methods"][method]["kind"] in GENERATIVE_KINDS else "-"
        lines.append(f"| {method} | {steps} | " + " | ".join(_cell(rows[method][m]) for m in METRICS) + " |")
    lines += [
        "",
        "Downstream: prototype-classifier accuracy on unseen classes "
        f"({results.get('downstream_classifier', 'FeatureNet')} features), generated images mixed into each prototype "
        "with the weight chosen on seen-class episodes (in brackets):",
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


def _winner(a: dict, b: dict, metric: str) -> int:
    """1 if ``a`` beats ``b`` on ``metric`` beyond the 95% intervals, -1 if ``b`` beats ``a``, 0 if neither."""
    if not _separated(a, b):
        return 0
    return 1 if (a["mean"] < b["mean"]) == (metric in LOWER_IS_BETTER) else -1


def _compare(name_a: str, a: dict, name_b: str, b: dict, metric: str) -> str:
    """``"A beats B"``, ``"B beats A"`` or ``"A and B do not differ"`` on ``metric`` at 95%."""
    winner = _winner(a, b, metric)
    if winner == 0:
        return f"{name_a} ({_cell(a)}) and {name_b} ({_cell(b)}) do not differ at 95%"
    (first, w), (loser, v) = ((name_a, a), (name_b, b)) if winner == 1 else ((name_b, b), (name_a, a))
    return f"{first} ({_cell(w)}) beats {loser} ({_cell(v)}) beyond the 95% intervals"


def rescored_lines(table: dict, rescored: dict, learner: str, baselines: list[str], space: str) -> list[str]:
    """``learner`` against each of ``baselines`` on both per-class metrics, scored in the table's feature network
    (``table``) and in another network's features (``rescored``, named ``space``: the same methods, tasks and seeds,
    :func:`~metagan_lib.fewshot.table_scores`), each line saying whether the two verdicts agree."""
    lines = []
    for baseline in baselines:
        for label, metric in PER_CLASS_METRICS:
            pairs = [(rows[learner][metric], rows[baseline][metric]) for rows in (table, rescored)]
            agree = "the same verdict" if len({_winner(a, b, metric) for a, b in pairs}) == 1 else "ANOTHER VERDICT"
            verdicts = [f"{where}: {_compare(learner, a, baseline, b, metric)}" for where, (a, b) in zip(
                ("feature network", space), pairs)]  # fmt: skip
            lines.append(f"{label}: " + "; ".join(verdicts) + f" ({agree})")
    return lines


def _ranking_lines(rows: dict, generators: list[str]) -> list[str]:
    """The best generator on each per-class metric, against the runner-up."""
    lines = []
    for metric in ("class_frechet_distance", "class_fidelity"):
        sign = -1 if metric in LOWER_IS_BETTER else 1
        first, second = sorted(generators, key=lambda m: sign * rows[m][metric]["mean"], reverse=True)[:2]
        lines.append(
            f"{metric}: best {first}; " + _compare(first, rows[first][metric], second, rows[second][metric], metric)
        )
    return lines


def _relative_diversity(rows: dict, method: str) -> str:
    return f"{rows[method]['diversity']['mean'] / rows['_real_diversity']['diversity']['mean']:.2f}x"


def _against(rows: dict, learner: str, baseline: str) -> str:
    """``learner`` against ``baseline``: both per-class metrics compared at 95%, then diversity and copy score."""
    row, other = rows[learner], rows[baseline]
    comparisons = "; ".join(
        f"{label}: " + _compare(learner, row[metric], baseline, other[metric], metric)
        for label, metric in PER_CLASS_METRICS
    )
    return (
        f"{comparisons}; diversity {_relative_diversity(rows, learner)} vs {_relative_diversity(rows, baseline)} "
        f"that of real images; copy score {_cell(row['copy_score'])} vs {_cell(other['copy_score'])}."
    )


def _meta_learner_lines(rows: dict, roles: dict, generators: list[str], classes: int) -> list[str]:
    """The best meta-learner (by per-class FD) and how it compares with every baseline."""
    learners = [m for m in generators if roles[m]["role"] == "meta-learner"]
    if not learners:
        return []
    best = min(learners, key=lambda m: rows[m]["class_frechet_distance"]["mean"])
    row = rows[best]
    lines = [
        f"Best meta-learner: {best}, class fidelity {_cell(row['class_fidelity'])} (chance {1 / classes:.2f}), "
        f"diversity {_relative_diversity(rows, best)} that of real images, copy score {_cell(row['copy_score'])}, "
        f"{roles[best]['steps']} adaptation steps."
    ]
    for baseline in [m for m in generators if roles[m]["role"] == "baseline"]:
        lines.append(f"vs {baseline} ({roles[baseline]['steps']} steps): " + _against(rows, best, baseline))
    return lines


def _within_compute_lines(rows: dict, roles: dict, generators: list[str]) -> list[str]:
    """Each meta-learner whose adaptation compute stays within a baseline's (``compute_within``, a method kind)
    against that baseline."""
    return [
        f"Within {baseline}'s adaptation compute ({roles[learner]['steps']} steps against {roles[baseline]['steps']}; "
        "tools/adaptation_compute.py): " + _against(rows, learner, baseline)
        for learner in generators
        if roles[learner]["role"] == "meta-learner" and roles[learner].get("compute_within")
        for baseline in generators
        if roles[baseline]["kind"] == roles[learner]["compute_within"] and roles[baseline]["role"] == "baseline"
    ]


def _caveat_lines(rows: dict) -> list[str]:
    """Methods flagged as (or near) copying the shots, and methods whose adaptation diverged."""
    lines = []
    for method in [m for m in rows if not m.startswith("_")]:
        copy, flag = rows[method]["copy_score"], E.COPY_FLAG
        if copy["mean"] > flag:
            caveat = "" if copy["mean"] - copy["ci95"] > flag else f"; its interval reaches below {flag}"
            lines.append(
                f"Flagged as copying the shots: {method} (copy score {_cell(copy)}, mean above {flag}{caveat})."
            )
        elif copy["mean"] + copy["ci95"] > flag:
            lines.append(
                f"Near the copy flag: {method} (copy score {_cell(copy)}, mean below {flag}, "
                "interval reaching above it)."
            )
        diverged = rows[method]["diverged"]["mean"]
        if diverged > 0:
            lines.append(f"Caveat: {method} diverged on {100 * diverged:.0f}% of generated images (scored as blank).")
    return lines


def _downstream_lines(downstream: dict) -> list[str]:
    """Per downstream setting: which generators help or hurt at the chosen weights, and at the unselected ones."""
    lines = []
    for setting, accuracy in downstream.items():
        base = accuracy["none"]
        above = lambda e: e["mean"] - base["mean"] > e["ci95"] + base["ci95"]
        below = lambda e: base["mean"] - e["mean"] > e["ci95"] + base["ci95"]
        generators = {m: e for m, e in accuracy.items() if m != "none"}
        chosen = ", ".join(map(str, sorted({e["weight"] for e in generators.values()})))
        helped = ", ".join(m for m, e in generators.items() if above(e)) or "none"
        hurt = ", ".join(m for m, e in generators.items() if below(e)) or "none"
        lines.append(
            f"Downstream {setting}: real shots only {_cell(base)}; with generated images at the weights chosen on seen "
            f"classes ({chosen}): help: {helped}; hurt: {hurt} (beyond 95% intervals)."
        )
        unselected = [
            (f"{m} at w={w}", v)
            for m, e in generators.items()
            for w, v in e.get("by_weight", {}).items()
            if float(w) != e["weight"]
        ]
        lines.append(
            "  Unselected weights (reported, not chosen): above real shots only beyond the intervals: "
            f"{', '.join(n for n, v in unselected if above(v)) or 'none'}; "
            f"below: {', '.join(n for n, v in unselected if below(v)) or 'none'}."
        )
    return lines


def _sweep_point(entry: dict, label: str, real_diversity: float) -> str:
    flagged = " (flagged)" if entry["copy_score"]["mean"] > E.COPY_FLAG else ""
    ratio = entry["diversity"]["mean"] / real_diversity
    copy = entry["copy_score"]["mean"]
    coverage = entry["class_coverage"]["mean"]
    return (
        f"{label}: fidelity {_cell(entry['class_fidelity'])}, {ratio:.2f}x real diversity, coverage {coverage:.2f}, "
        f"copy {copy:.2f}{flagged}"
    )


def _at_diversity(sweeps: dict, learner: str, value: float, baseline: str, target: dict, how: str) -> str:
    """``learner`` at ``value`` against ``baseline``'s ``target`` point: both per-class metrics compared at 95%."""
    real = sweeps["_real_diversity"]["diversity"]["mean"]
    point, name = sweeps[learner][value], f"{learner} at {value:g}"
    side = "no lower than" if point["diversity"]["mean"] >= target["diversity"]["mean"] else "below"
    comparisons = "; ".join(
        f"{label}: " + _compare(name, point[metric], baseline, target[metric], metric)
        for label, metric in PER_CLASS_METRICS
    )
    return f"{name} {how} ({point['diversity']['mean'] / real:.3f}x, {side} it): {comparisons}."


def sweep_lines(
    sweeps: dict, learner: str, baseline: str, baseline_value: float, min_diversity: float = 0.8
) -> list[str]:
    """Statements about two methods' sweeps (:func:`~metagan_lib.fewshot.sweep_scores`): each point's fidelity,
    diversity beside real, class coverage and copy score; the lowest diversity on ``baseline``'s grid; ``learner``
    against ``baseline`` at its table setting ``baseline_value``, at the ``learner`` point nearest in diversity and,
    where that one is less diverse, at the least diverse point that is not (or that none is), compared at 95%; each
    method's point of highest class coverage, the two compared at 95%; and each method's best fidelity among its points
    neither flagged as copies nor below ``min_diversity`` x real diversity."""
    real = sweeps["_real_diversity"]["diversity"]["mean"]
    ratio = lambda entry: entry["diversity"]["mean"] / real
    lines = [
        f"{name}: " + "; ".join(_sweep_point(e, f"{v:g}", real) for v, e in sweeps[name].items())
        for name in (learner, baseline)
    ]
    lowest = min(sweeps[baseline], key=lambda v: sweeps[baseline][v]["diversity"]["mean"])
    lines.append(f"Lowest diversity on {baseline}'s grid: {ratio(sweeps[baseline][lowest]):.2f}x real (at {lowest:g}).")
    target = sweeps[baseline][baseline_value]
    head = f"At {baseline}'s diversity ({baseline_value:g}, {ratio(target):.3f}x real), "
    nearest = min(sweeps[learner], key=lambda v: abs(ratio(sweeps[learner][v]) - ratio(target)))
    as_diverse = [v for v, e in sweeps[learner].items() if e["diversity"]["mean"] >= target["diversity"]["mean"]]
    lines.append(head + _at_diversity(sweeps, learner, nearest, baseline, target, "is nearest"))
    if nearest not in as_diverse:
        if as_diverse:
            least = min(as_diverse, key=lambda v: sweeps[learner][v]["diversity"]["mean"])
            lines.append(
                head + _at_diversity(sweeps, learner, least, baseline, target, "is the least diverse point above")
            )
        else:
            lines.append(head + f"no {learner} point is as diverse.")

    def best_covered(name: str) -> tuple[str, dict]:
        value = max(sweeps[name], key=lambda v: sweeps[name][v]["class_coverage"]["mean"])
        point = sweeps[name][value]
        return f"{name} at {value:g} ({ratio(point):.2f}x real diversity)", point["class_coverage"]

    coverage = _compare(*best_covered(learner), *best_covered(baseline), "class_coverage")
    lines.append(f"Highest class coverage of the held-out images: {coverage}.")
    for method in (learner, baseline):
        kept = {
            v: e
            for v, e in sweeps[method].items()
            if e["copy_score"]["mean"] <= E.COPY_FLAG and ratio(e) >= min_diversity
        }
        condition = f"not flagged as copying, at least {min_diversity:g}x real diversity"
        if not kept:
            lines.append(f"{method}: no point is {condition}.")
            continue
        best = max(kept, key=lambda v: kept[v]["class_fidelity"]["mean"])
        lines.append(f"{method}, best fidelity {condition}: " + _sweep_point(kept[best], f"at {best:g}", real))
    return lines


def verdicts(results: dict) -> list[str]:
    """Plain statements of who wins where, computed from the results (never typed by hand).

    Per-class metrics at the default K, each method at its own budget; a difference counts only
    where the 95% intervals do not overlap. Methods are found by their role, never by name.
    """
    meta, roles = results["settings"], results["methods"]
    rows = results["by_shots"][str(meta["default_shots"])]
    generators = [m for m in rows if not m.startswith("_") and roles[m]["role"] != "reference"]
    return (
        _ranking_lines(rows, generators)
        + _meta_learner_lines(rows, roles, generators, meta["classes"])
        + _within_compute_lines(rows, roles, generators)
        + _caveat_lines(rows)
        + _downstream_lines(results["downstream"])
    )


def read_results(path: Path) -> dict:
    """A results file written by :func:`write_results`; a damaged one is an error naming it and the fix."""
    try:
        results = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{path} is not valid JSON ({error}); re-run notebook 06 to rewrite it, or restore it with git."
        ) from None
    if not isinstance(results, dict):
        raise ValueError(
            f"{path} holds JSON of type {type(results).__name__}, not notebook 06's results; re-run notebook 06."
        )
    missing = {"by_shots", "downstream", "methods", "dataset", "settings"} - set(results)  # what the tables read
    if missing:
        raise ValueError(f"{path} lacks {', '.join(sorted(missing))}; re-run notebook 06 to rewrite it.")
    scored = {name for rows in results["by_shots"].values() for name in rows if not name.startswith("_")}
    undescribed = sorted(scored - set(results["methods"]))
    if undescribed:
        raise ValueError(
            f"{path} scores {', '.join(undescribed)} in by_shots but does not describe them in methods; "
            "re-run notebook 06 to rewrite it."
        )
    return results


def update_readme(readme: Path, results_folder: Path, profile: str | None = None) -> str:
    """Replace the README's block between ``<!-- results:start -->`` and ``<!-- results:end -->`` with the tables of
    ``results_folder``; with ``profile``, every results file must have been written by that profile."""
    files = sorted(Path(results_folder).glob("few_shot*.json"), key=_readme_order)
    if not files:
        raise FileNotFoundError(f"No few_shot*.json in {results_folder}; run the full profile first (make full).")
    blocks = []
    for file in files:
        results = read_results(file)
        written_by = results.get("profile")
        if profile is not None and written_by != profile:
            raise ValueError(
                f"{file} was written by the {written_by!r} profile, not {profile!r}; rerun notebook 06 with "
                f"--profile {profile} (make full) or restore the file with git."
            )
        block = (
            markdown_table(results)
            + "\n\n"
            + "\n".join(f"- {line}" for line in verdicts(results))
            + f"\n\n(from `{file.relative_to(readme.parent)}`)"
        )
        if results["dataset"] != "glyphs":  # the default dataset's block is shown, the others fold
            summary = f"<b>{results['dataset']}</b>: the table, the downstream accuracies and the verdicts"
            block = f"<details>\n<summary>{summary}</summary>\n\n{block}\n\n</details>"
        blocks.append(block)
    new = replace_block(readme.read_text(), "results", "\n\n".join(blocks))
    new = replace_block(new, "artifacts", shipped_table())
    readme.write_text(new)
    return new


def _readme_order(file: Path) -> tuple[bool, bool, str]:
    """The README's order of results files: the default dataset's, then Omniglot's, then the rest by name."""
    name_of = lambda dataset: results_path(file.parent, dataset).name
    return file.name != name_of("glyphs"), file.name != name_of("omniglot"), file.name


def replace_block(text: str, name: str, body: str) -> str:
    """``text`` with the lines between ``<!-- name:start -->`` and ``<!-- name:end -->`` replaced by ``body`` (the
    README's generated blocks: results, artifacts, speed)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if text.count(start) != 1 or text.count(end) != 1:
        raise ValueError(f"the README must hold one {start} and one {end} line; add them around the {name} block.")
    head, rest = text.split(start)
    return head + start + "\n" + body + "\n" + end + rest.split(end)[1]


def main(argv: list[str] | None = None) -> int:
    """``python -m metagan_lib.report --update-readme [--profile full]``: regenerate the README's results tables."""
    import argparse

    from .paths import repo_root

    parser = argparse.ArgumentParser(prog="python -m metagan_lib.report", description=main.__doc__, allow_abbrev=False)
    parser.add_argument(
        "--update-readme", action="store_true", required=True, help="the one action, named: rewrite README.md's blocks"
    )
    parser.add_argument("--profile", default="full", choices=PROFILE_NAMES, type=str.lower)
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
        update_readme(repo_root() / "README.md", repo_root() / "results" / args.profile, args.profile)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"README.md results block regenerated from results/{args.profile}/, its shipped-artefacts table from artifacts/"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
