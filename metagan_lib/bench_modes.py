"""The benchmark's other modes: GAN trainings in turn vs side by side (``--parallel``) and ``torch.compile`` vs eager
(``--compile``), both on a CPU. ``python -m metagan_lib.bench`` runs them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from .bench import _cpu_name, gan_training_step, synthetic_dataset, time_steps
from .meta import MetaConfig, draw_noise, new_meta_gan
from .tasks import TaskSampler


def run_parallel_benchmark(quick: bool = False) -> dict:
    """Four GAN trainings (a mix of losses and penalties, width 32 as in notebook 02) on a CPU: one after
    the other on all threads (``in turn``) vs side by side in one-thread worker processes
    (``side by side``, :func:`metagan_lib.train.train_or_load_many`, start-up included)."""
    import tempfile

    from .train import GANConfig, train_gan, train_or_load_many

    threads = torch.get_num_threads()
    if threads < 2:
        raise ValueError(
            "the parallel benchmark needs at least 2 threads (unset OMP_NUM_THREADS or set it to the core count)"
        )
    steps = 60 if quick else 300
    images = synthetic_dataset(classes=50, per_class=20).images
    base = GANConfig(architecture="conv", steps=steps, batch_size=64)  # a mix of the trainer's losses and penalties
    variants = {
        "non-saturating": base,
        "WGAN-GP": base.replace(loss="wgan-gp"),
        "R1": base.replace(r1_gamma=1.0),
        "EMA + DiffAugment": base.replace(ema_decay=0.999, augment=True),
    }
    start = time.perf_counter()
    for config in variants.values():
        train_gan(images, config, seed=0, progress=False)
    in_turn = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as folder:
        jobs = {name: (Path(folder) / f"{i}.pt", config) for i, (name, config) in enumerate(variants.items())}
        start = time.perf_counter()
        train_or_load_many(jobs, images, seed=0)
        side_by_side = time.perf_counter() - start
    return {
        "device_name": _cpu_name(),
        "threads": threads,
        "torch": torch.__version__,
        "runs": len(variants),
        "steps_per_run": steps,
        "in_turn_s": in_turn,
        "side_by_side_s": side_by_side,
        "side_by_side_over_in_turn": in_turn / side_by_side,
    }


def _outer_losses_call(device: torch.device, compiled: bool) -> Callable[[], torch.Tensor]:
    """The forward pass of FOMAML's outer losses (``vmap`` over 8 tasks, inner ``torch.func.grad`` steps)."""
    from .meta import batched_outer_losses

    sampler = TaskSampler(synthetic_dataset(), torch.arange(20), device=device, seed=0)
    config = MetaConfig(tasks=8, shots=5, queries=10, fake_batch=16, inner_steps=2, first_order=True)
    meta = new_meta_gan(config, device, seed=0)
    episode = sampler.sample(8, 1, 5, 10)
    inner, outer = draw_noise(torch.Generator(device=device).manual_seed(0), 8, 2, 16, config.z_dim, device)
    call = lambda: batched_outer_losses(meta, episode.support[:, 0], episode.query[:, 0], inner, outer, True)
    return torch.compile(call) if compiled else call


def run_compile_benchmark(steps_per_run: int = 3000) -> dict:
    """``torch.compile`` (inductor) against eager on a CPU: the GAN training step and the vmap-over-tasks outer losses.

    Reports the first call (a cold compilation, on-disk caches disabled, included), the steady per-call time,
    ``speedup_over_eager`` (steady) and the
    end-to-end ratio over ``steps_per_run`` calls (notebook 02 trains 3,000 steps per variant), compile time included.
    """
    device = torch.device("cpu")
    cases = {
        "GAN step (conv, width 32)": (
            lambda: gan_training_step("conv", 32, 64, device),
            lambda: gan_training_step("conv", 32, 64, device, compiled=True),
        ),
        "FOMAML outer losses, forward (vmap, 8 tasks)": (
            lambda: _outer_losses_call(device, False),
            lambda: _outer_losses_call(device, True),
        ),
    }
    rows = []
    for name, (make_eager, make_compiled) in cases.items():
        eager = time_steps(make_eager(), device, warmup=2, repeats=10)
        compiled_step = make_compiled()
        start = time.perf_counter()
        with torch._inductor.config.patch(force_disable_caches=True):  # a cold compile, as on a fresh machine
            compiled_step()
        first = time.perf_counter() - start
        compiled = time_steps(compiled_step, device, warmup=1, repeats=10)
        end_to_end = steps_per_run * eager / (first + (steps_per_run - 1) * compiled)
        rows.append({"path": name, "eager_ms": 1000 * eager, "compiled_ms": 1000 * compiled, "first_call_s": first,
                     "speedup_over_eager": eager / compiled, "end_to_end_speedup": end_to_end})  # fmt: skip
    return {"device_name": _cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "steps_per_run": steps_per_run, "rows": rows}  # fmt: skip


def format_compile(result: dict) -> str:
    lines = [f"torch.compile (inductor) vs eager on {result['device_name']}, {result['threads']} threads:"]
    for r in result["rows"]:
        lines.append(
            f"  {r['path']}: eager {r['eager_ms']:.1f} ms, compiled {r['compiled_ms']:.1f} ms "
            f"(first call {r['first_call_s']:.1f} s): speedup_over_eager {r['speedup_over_eager']:.2f}x, "
            f"end to end over {result['steps_per_run']} calls {r['end_to_end_speedup']:.2f}x"
        )
    return "\n".join(lines)


def format_parallel(result: dict) -> str:
    return (
        f"{result['runs']} GAN runs x {result['steps_per_run']} steps (mixed losses and penalties) "
        f"on {result['device_name']}, {result['threads']} threads:\n"
        f"  in turn, {result['threads']} threads each: {result['in_turn_s']:.1f} s\n"
        f"  side by side, 1-thread workers (start-up included): {result['side_by_side_s']:.1f} s\n"
        f"side by side over in turn: {result['side_by_side_over_in_turn']:.2f}x"
    )


def layout_cases(width: int, batch: int) -> dict[str, tuple[Callable[[], None], Callable[[], None], tuple]]:
    """For each network of the convolutional GAN: (the trainer's eager call, a candidate change doing the same
    mathematics, (the network each call differentiates)), forward and backward: the discriminator on real then fake vs
    one concatenated batch, and each network in channels-last memory format (a copy with the same weights)."""
    import copy

    from .models import ConvDiscriminator, ConvGenerator

    torch.manual_seed(0)
    real = torch.rand(batch, 1, 28, 28) * 2 - 1
    fake = torch.rand(batch, 1, 28, 28) * 2 - 1
    z = torch.randn(batch, 64)
    disc, gen = ConvDiscriminator(width), ConvGenerator(64, width)
    disc_cl = copy.deepcopy(disc).to(memory_format=torch.channels_last)
    gen_cl = copy.deepcopy(gen).to(memory_format=torch.channels_last)
    real_cl, fake_cl = (x.contiguous(memory_format=torch.channels_last) for x in (real, fake))

    def critic(net, a, b):
        return lambda: (net(a).mean() - net(b).mean()).backward()

    def concatenated():
        logits = disc(torch.cat([real, fake]))
        (logits[:batch].mean() - logits[batch:].mean()).backward()

    return {
        "discriminator, one concatenated batch": (critic(disc, real, fake), concatenated, (disc, disc)),
        "discriminator, channels-last": (critic(disc, real, fake), critic(disc_cl, real_cl, fake_cl), (disc, disc_cl)),
        "generator, channels-last": (
            lambda: gen(z).mean().backward(),
            lambda: gen_cl(z).mean().backward(),
            (gen, gen_cl),
        ),
    }


def run_layout_benchmark(quick: bool = False) -> dict:
    """Kernel-shape changes of issue 15 on a CPU, forward and backward at the notebooks' widths (batch 64): the
    discriminator on a concatenated real + fake batch, channels-last memory format; ``speedup_over_eager`` is the
    trainer's call's median time over the change's, both timed in this run."""
    warmup, repeats = (2, 5) if quick else (5, 30)
    rows = []
    for width in (32, 64):
        for change, (eager, changed, _) in layout_cases(width, 64).items():
            eager_s, changed_s = (time_steps(call, torch.device("cpu"), warmup, repeats) for call in (eager, changed))
            rows.append(
                {
                    "change": change,
                    "width": width,
                    "eager_ms": 1000 * eager_s,
                    "changed_ms": 1000 * changed_s,
                    "speedup_over_eager": eager_s / changed_s,
                }
            )
    return {"device_name": _cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__, "rows": rows}


def format_layouts(result: dict) -> str:
    lines = [
        f"kernel-shape changes vs the trainer's eager calls on {result['device_name']}, {result['threads']} threads:"
    ]
    for r in result["rows"]:
        lines.append(
            f"  {r['change']} (width {r['width']}, batch 64): eager {r['eager_ms']:.1f} ms, changed "
            f"{r['changed_ms']:.1f} ms: speedup_over_eager {r['speedup_over_eager']:.2f}x"
        )
    return "\n".join(lines)
