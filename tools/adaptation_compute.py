r"""Adaptation compute per few-shot task: the fifth learner's test-time adaptation against latent inversion's.

Counts the FLOPs (``torch.utils.flop_counter``'s formulas: convolutions and matrix products, forward and backward; the
same on every machine) and times one call of adapting to a C-way K-shot task and drawing n images per class, for the
networks notebooks 05-06 compare: the fifth learner (context Reptile-query with its pair discriminator's and guide
network's inner terms; optionally also with ``tools/validate_context.py``'s sample filter, or with fewer inner samples)
and latent inversion of the shots into notebook 02's pretrained DCGAN. The networks are freshly initialised: the compute
depends on their architecture, not their weights. Times are medians of ``--repeats`` calls in one run; compare them
within the run (the run in ``docs/experiments.md``: the second line)::

    python tools/adaptation_compute.py                  # 20-way K = 5, 20 images a class
    python tools/adaptation_compute.py --context-steps 5 20 40 --select 4 --select-spread 0.05 --inner-samples 4 \
        --inversion-steps 20 200 --repeats 5
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence

import torch

from metagan_lib import context, methods
from metagan_lib.bench import counted_flops, time_steps
from metagan_lib.evaluation import FeatureNet
from metagan_lib.inversion import LatentInversion, invert_and_sample
from metagan_lib.models import build_gan
from metagan_lib.runtime import choose_device

Job = tuple[str, int, Callable[[], torch.Tensor]]


def fifth_learner(shots: int, device: torch.device, inner_samples: int | None = None) -> context.ContextMetaGAN:
    """The fifth learner's architecture (:func:`context.chosen_context_configs`) with a guide network of
    :data:`context.GUIDE_WIDTH` channels, freshly initialised; ``inner_samples`` (if given) replaces the samples drawn
    per inner step, a test-time setting (``tools/validate_context.py --test-setting inner_samples=N``)."""
    config = context.chosen_context_configs(shots=shots)[context.CHOSEN_CONTEXT_LEARNER]
    if inner_samples is not None:
        config = config.replace(inner_samples=inner_samples)
    guide = FeatureNet(num_classes=1, width=context.GUIDE_WIDTH)
    return context.attach_guide(context.new_context_gan(config, device), guide)


def inversion_baseline(device: torch.device) -> LatentInversion:
    """Latent inversion into notebook 02's long-run DCGAN architecture (:func:`methods.pretrained_gan_job`), freshly
    initialised."""
    config = methods.pretrained_gan_job("full", "glyphs")[1]
    generator, _ = build_gan(config.architecture, config.z_dim, config.width)
    return LatentInversion(generator.to(device))


def adaptation_jobs(
    support: torch.Tensor,
    samples: int,
    context_steps: Sequence[int],
    inversion_steps: Sequence[int],
    select: int | None,
    spread: float = 0.0,
    inner_samples: Sequence[int] = (),
) -> list[Job]:
    """(method, adaptation steps, one call adapting to ``support`` ``[C, K, 1, 28, 28]`` and drawing ``samples``
    images per class) for every step count: the fifth learner (also with each test-time number of ``inner_samples``),
    with ``select`` each of those also keeping 1 in ``select`` of its samples by the guide-novelty judge (spread apart
    by ``spread``), and latent inversion."""
    device = support.device
    learners = {"fifth learner": fifth_learner(support.shape[1], device)} | {
        f"fifth learner, {count} inner samples": fifth_learner(support.shape[1], device, count)
        for count in inner_samples
    }
    inversion = inversion_baseline(device)
    jobs: list[Job] = [
        (name, s, lambda s=s, m=model: context.adapt_and_sample(m, support, s, samples))
        for name, model in learners.items()
        for s in context_steps
    ]
    if select is not None:
        kept = f"guide novelty keeps 1 in {select}" + (f", spread {spread:g}" if spread else "")
        for name, model in learners.items():
            selection = context.SampleSelection(model, select, "guide-novelty", spread)
            jobs += [
                (f"{name}, {kept}", s, lambda s=s, m=selection: context.adapt_and_select(m, support, s, samples))
                for s in context_steps
            ]
    jobs += [
        ("latent inversion", s, lambda s=s: invert_and_sample(inversion, support, s, samples)) for s in inversion_steps
    ]
    return jobs


def measure(jobs: list[Job], device: torch.device, repeats: int) -> list[dict]:
    """One row per job: its FLOPs and the median seconds of ``repeats`` calls (after one warm-up call)."""
    return [
        {
            "method": name,
            "steps": steps,
            "gflop": counted_flops(call) / 1e9,
            "seconds": time_steps(call, device, warmup=1, repeats=repeats),
        }
        for name, steps, call in jobs
    ]


def format_table(rows: list[dict], reference: dict) -> str:
    """A Markdown table of ``rows``, FLOPs and time also as multiples of ``reference``'s."""
    name = f"{reference['method']} at {reference['steps']} steps"
    lines = [
        f"| method | adaptation steps | GFLOP per task | ms per task | FLOPs (x {name}) | time (x {name}) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row['steps']} | {row['gflop']:.3g} | {1000 * row['seconds']:.0f} | "
            f"{row['gflop'] / reference['gflop']:.3f} | {row['seconds'] / reference['seconds']:.3f} |"
        )
    return "\n".join(lines)


def positive(text: str) -> int:
    """An argparse type: ``text`` as an integer of at least 1 (argparse's error naming the option otherwise)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ways", type=positive, default=20, help="classes per task (notebook 06: 20)")
    parser.add_argument("--shots", type=positive, default=5, help="K, shots per class")
    parser.add_argument("--samples", type=positive, default=20, help="images drawn per class (notebook 06: 20)")
    parser.add_argument("--context-steps", nargs="+", type=positive, default=[5, 20], help="the fifth learner's")
    parser.add_argument("--inversion-steps", nargs="+", type=positive, default=[20, 200], help="latent inversion's")
    parser.add_argument(
        "--select", type=positive, help="also the sample filter keeping 1 in SELECT (the validation tool's choice: 4)"
    )
    parser.add_argument("--select-spread", type=float, default=0.0, help="the filter's spread (the chosen one: 0.05)")
    parser.add_argument(
        "--inner-samples",
        nargs="+",
        type=positive,
        default=[],
        help="also the fifth learner with N inner samples (with --select: also filtered)",
    )
    parser.add_argument("--repeats", type=positive, default=3, help="timed calls per row (the median is printed)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    args = parser.parse_args(argv)
    if not (args.select_spread >= 0 and math.isfinite(args.select_spread)) or (
        args.select_spread and args.select is None
    ):
        parser.error("--select-spread must be a finite number >= 0, and > 0 only with --select (the filter it spreads)")
    try:
        device = choose_device(args.device)
    except ValueError as error:
        parser.error(f"--device: {error}")
    generator = torch.Generator(device=device).manual_seed(0)
    support = torch.rand(args.ways, args.shots, 1, 28, 28, generator=generator, device=device) * 2 - 1
    jobs = adaptation_jobs(
        support,
        args.samples,
        args.context_steps,
        args.inversion_steps,
        args.select,
        args.select_spread,
        args.inner_samples,
    )
    rows = measure(jobs, device, args.repeats)
    reference = next(r for r in rows if r["method"] == "latent inversion" and r["steps"] == max(args.inversion_steps))
    print(f"{args.ways}-way K = {args.shots}, {args.samples} images drawn per class, {torch.get_num_threads()} threads")
    print(format_table(rows, reference))
    return rows


if __name__ == "__main__":
    main()
