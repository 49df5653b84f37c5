r"""Time the fifth learner's filtered adaptation with another checkout's ``metagan_lib`` and with this one's, in a run.

A speed change to the adaptation path is measured here, not across two runs of ``tools/adaptation_compute.py``
(whose time ratios drift by some 10% between runs as the machine's speed does). Both versions adapt the same freshly
initialised networks to the same 20-way K = 5 task and keep 20 images a class through the guide-novelty filter (1 in 4,
spread 0.1); the calls are interleaved, so drift hits every row alike, and latent inversion's 200 steps are timed among
them as the reference. The outputs of the two versions are compared first (``torch.equal``)::

    git worktree add /tmp/previous a2c246a
    python tools/compare_adaptation_time.py /tmp/previous
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch

from metagan_lib import bench, context
from metagan_lib.inversion import invert_and_sample

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling tool, also when loaded from elsewhere
from adaptation_compute import fifth_learner, inversion_baseline, positive  # noqa: E402

SETTINGS = ((4, 25), (16, 40))  # (inner samples, test steps): Omniglot's within-compute row and its 40-step filter


def load_package(checkout: Path, name: str = "previous_metagan_lib") -> ModuleType:
    """``checkout``'s ``metagan_lib`` imported under ``name`` (beside this checkout's)."""
    init = checkout / "metagan_lib" / "__init__.py"
    if not init.is_file():
        raise SystemExit(f"{checkout} has no metagan_lib/__init__.py: pass a checkout's root (git worktree add ...)")
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    spec.loader.exec_module(package)
    return package


def same_networks(package: ModuleType, model: context.ContextMetaGAN):
    """``model``'s weights in ``package``'s context meta-GAN class."""
    other_context = importlib.import_module(f"{package.__name__}.context")
    other_evaluation = importlib.import_module(f"{package.__name__}.evaluation")
    config = other_context.ContextConfig(**dataclasses.asdict(model.config))
    guide = other_evaluation.FeatureNet(num_classes=1, width=context.GUIDE_WIDTH)
    other = other_context.attach_guide(other_context.new_context_gan(config, model.device), guide)
    weights = {k: getattr(model, k) for k in ("meta_params", "d_params", "guide_params")}
    return other_context, dataclasses.replace(other, **weights)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help="root of the other checkout (e.g. a git worktree)")
    parser.add_argument("--repeats", type=positive, default=5, help="timed calls per row (the median is printed)")
    args = parser.parse_args(argv)
    package = load_package(args.checkout.resolve())
    device = torch.device("cpu")
    support = torch.rand(20, 5, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    jobs = {}
    for samples, steps in SETTINGS:
        model = fifth_learner(5, device, samples)
        other_context, other = same_networks(package, model)
        ours = context.SampleSelection(model, 4, "guide-novelty", 0.1)
        theirs = other_context.SampleSelection(other, 4, "guide-novelty", 0.1)
        kept = context.adapt_and_select(ours, support, 3, 20), other_context.adapt_and_select(theirs, support, 3, 20)
        equal = torch.equal(*kept)
        print(f"{samples} inner samples: the two versions' kept images equal: {equal}")
        label = f"{samples} inner samples, {steps} steps, filter"
        jobs[f"other checkout, {label}"] = lambda s=theirs, n=steps, c=other_context: c.adapt_and_select(
            s, support, n, 20
        )
        jobs[f"this checkout, {label}"] = lambda s=ours, n=steps: context.adapt_and_select(s, support, n, 20)
    inversion = inversion_baseline(device)
    jobs["latent inversion, 200 steps"] = lambda: invert_and_sample(inversion, support, 200, 20)
    medians = bench.time_interleaved(jobs, device, warmup=1, repeats=args.repeats)
    reference = medians["latent inversion, 200 steps"]
    print("| adaptation | ms per task | time (x latent inversion at 200 steps) |\n|---|---:|---:|")
    for name, seconds in medians.items():
        print(f"| {name} | {1000 * seconds:.0f} | {seconds / reference:.3f} |")
    return medians


if __name__ == "__main__":
    main()
