"""Choose between context meta-GAN candidates on *seen*-class validation tasks (unseen classes are never touched).

The seen classes are split once (fixed seed) into meta-training classes and ``--held-out`` validation
classes; a feature network is trained on the meta-training classes only; every candidate is
meta-trained on them and scored on 20-way, K = 5 validation tasks with notebook 06's metrics
(per-class distance, class fidelity, diversity, copy score), against real held-out images and the
copied shots. Example (Reptile's weights step on the shots or on the query images, ~7 min on 2 cores)::

    python tools/validate_context.py --rules reptile reptile-query --inner-steps 3

``--test-unseen`` scores candidates already chosen here on the real split instead: meta-trained on all seen classes,
notebook 06's feature network (loaded from its cache, or trained there), 20-way K = 5 tasks of the unseen classes.
It is the final test of a choice, not a way to make one.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools

import torch

from metagan_lib import context, evaluation, fewshot, profiles, runtime
from metagan_lib.data import load_dataset
from metagan_lib.paths import cache_dir
from metagan_lib.seeds import derive_seed
from metagan_lib.tasks import TaskSampler

METRICS = ("class_frechet_distance", "class_fidelity", "diversity", "copy_score")


def validation_split(dataset, held_out: int, seed: int = 0):
    """The dataset with ``held_out`` seen classes moved to the evaluated ("unseen") side, the rest kept for training."""
    g = torch.Generator().manual_seed(derive_seed(seed, "validation classes"))
    chosen = dataset.seen_classes[torch.randperm(len(dataset.seen_classes), generator=g)[:held_out]].sort().values
    keep = dataset.seen_classes[~torch.isin(dataset.seen_classes, chosen)]
    return dataclasses.replace(dataset, seen_classes=keep, unseen_classes=chosen)


def evaluation_split(dataset, held_out: int, test_unseen: bool):
    """The real split for the final test (``test_unseen``), else :func:`validation_split`."""
    return dataset if test_unseen else validation_split(dataset, held_out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="glyphs")
    parser.add_argument("--rules", nargs="+", default=["reptile", "reptile-query"], choices=context.OUTER_RULES)
    parser.add_argument("--inner-steps", nargs="+", type=int, default=[3])
    parser.add_argument("--meta-steps", type=int, default=profiles.settings("05", "full").context_steps)
    parser.add_argument("--held-out", type=int, default=40)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--train-seed", type=int, default=0, help="seed of the candidates' weights and task draws")
    parser.add_argument("--test-unseen", action="store_true", help="score on the unseen classes (a chosen candidate)")
    args = parser.parse_args(argv)
    if args.meta_steps < 1:
        parser.error(f"--meta-steps must be at least 1, got {args.meta_steps}")
    dataset = load_dataset(args.dataset)
    if not args.test_unseen and not 2 <= args.held_out < len(dataset.seen_classes):
        parser.error(
            f"--held-out must lie between 2 and {len(dataset.seen_classes) - 1} (the seen classes of {args.dataset} "
            f"minus one), got {args.held_out}"
        )
    runtime.seed_everything(0)
    data = evaluation_split(dataset, args.held_out, args.test_unseen)
    folder = cache_dir() / ("test-unseen" if args.test_unseen else "validation") / args.dataset
    folder.mkdir(parents=True, exist_ok=True)
    feature_steps = profiles.settings("06", "full").feature_steps
    # the final test shares notebook 06's feature network (same recipe and cache file); validation trains its own
    shared = profiles.artifact_path("full", args.dataset, 0, "06_feature_net")
    net_path = shared if args.test_unseen else folder / "feature_net.pt"
    net = evaluation.train_or_load_feature_net(net_path, data, feature_steps, seed=0)
    methods = [
        fewshot.Method("real held-out", kind="ceiling", role="reference"),
        fewshot.Method("copy shots", kind="copy", role="reference"),
    ]
    for rule, steps in itertools.product(args.rules, args.inner_steps):
        config = context.ContextConfig(rule=rule, inner_steps=steps)
        name = f"context {rule}, {steps} inner steps"
        seed_tag = f"_seed{args.train_seed}" if args.train_seed else ""
        path = folder / f"{rule}_{steps}_{args.meta_steps}{seed_tag}.pt"
        sampler = TaskSampler(data, data.seen_classes, seed=args.train_seed)
        model = context.train_or_load_context_gan(
            path, config, sampler, args.meta_steps, seed=args.train_seed, description=name
        )
        methods.append(fewshot.Method(name, kind="context", model=model, steps=steps, role="meta-learner"))
    per_seed = [
        fewshot.evaluate_seed(methods, data, net, shots=5, steps=None, classes=20, generated_per_class=20, seed=s)
        for s in args.seeds
    ]
    summary = fewshot.summarise([{m: r for m, r in seed.items() if not m.startswith("_")} for seed in per_seed])
    evaluated = "unseen classes" if args.test_unseen else f"{args.held_out} held-out seen classes"
    print(f"{args.dataset}: {evaluated}, 20-way K=5, seeds {args.seeds} (mean ± 95% CI)")
    print(f"{'method':44s}" + "".join(f"{m:>24s}" for m in METRICS))
    for method, scores in summary.items():
        cells = "".join(f"{scores[m]['mean']:>14.3f} ± {scores[m]['ci95']:<7.3f}" for m in METRICS)
        print(f"{method:44s}{cells}")


if __name__ == "__main__":
    main()
