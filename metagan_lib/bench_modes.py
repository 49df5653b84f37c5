"""The benchmark's other modes, all on a CPU: GAN trainings in turn vs side by side (``--parallel``), ``torch.compile``
vs eager (``--compile``), kernel-shape changes (``--layouts``) and each path's time in convolutions and matrix products
against the rest (``--kernels``). ``python -m metagan_lib.bench`` runs them."""

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


def run_compile_benchmark(steps_per_run: int = 3000, gan_step_only: bool = False) -> dict:
    """``torch.compile`` (inductor) against eager on a CPU: the GAN training step and (unless ``gan_step_only``) the
    vmap-over-tasks outer losses.

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
    if gan_step_only:
        cases = {name: case for name, case in cases.items() if name.startswith("GAN step")}
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


MATRIX_PRODUCTS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear")


def is_flop_operator(name: str) -> bool:
    """Whether a profiled operator carries the counted FLOPs: a convolution (forward, backward, transposed, any
    of their ATen levels) or a matrix product."""
    return name.startswith("aten::") and ("conv" in name or name in MATRIX_PRODUCTS)


def operator_times(step: Callable[[], object], repeats: int) -> dict[str, float]:
    """Self CPU seconds per call of ``step`` of every ATen operator it runs, by ``torch.profiler`` over ``repeats``
    calls (after one warm-up call)."""
    from torch.profiler import ProfilerActivity, profile

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            step()
    return {e.key: e.self_cpu_time_total / 1e6 / repeats for e in prof.key_averages() if e.key.startswith("aten::")}


def kernel_row(method: str, path: str, flops: float, step_s: float, operators: dict[str, float], peak: float) -> dict:
    """The roofline of one path split in two: the convolutions and matrix products (which carry ``flops``) and the
    rest. ``flop_operators_fraction_of_peak`` is the ceiling of the whole step: the fraction of the matmul peak it
    would reach if everything but those operators took no time."""
    flop_s = sum(seconds for name, seconds in operators.items() if is_flop_operator(name))
    others = sorted(((s, n) for n, s in operators.items() if not is_flop_operator(n)), reverse=True)
    return {
        "method": method,
        "path": path,
        "ms_per_step": 1000 * step_s,
        "fraction_of_matmul_peak": flops / step_s / 1e9 / peak,
        "flop_operators_ms": 1000 * flop_s,
        "flop_operators_share_of_step": flop_s / step_s,
        "flop_operators_fraction_of_peak": flops / flop_s / 1e9 / peak,
        "largest_other_operators_ms": {name: 1000 * seconds for seconds, name in others[:4]},
    }


def run_kernel_benchmark(quick: bool = False) -> dict:
    """Why the training paths stay below the matmul peak, on a CPU: for each path of the standard benchmark, the time
    its convolutions and matrix products take (``torch.profiler``, self time) and the fraction of the peak those
    operators reach on their own (the step's ceiling), beside the whole step's fraction (timed without the profiler)."""
    from .bench import _timed_paths, benchmark_tasks, counted_flops, matmul_peak_gflops

    device = torch.device("cpu")
    base, sampler = benchmark_tasks(quick=True, device=device)
    peak = matmul_peak_gflops(device)
    repeats = 3 if quick else 10
    paths = [p for p in _timed_paths(device, sampler, base, quick=True) if p[1] != "higher (loop)"]
    # every path timed (and its FLOPs counted) before any is profiled, so that no timing runs after the profiler
    timed = [(counted_flops(loop_step), time_steps(step, device, 1, repeats)) for _, _, _, step, loop_step in paths]
    rows = [
        kernel_row(method, path, flops, step_s, operator_times(step, repeats), peak)
        for (method, path, _, step, _), (flops, step_s) in zip(paths, timed)
    ]
    return {
        "device_name": _cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "matmul_peak_gflops": peak,
        "rows": rows,
    }


def format_kernels(result: dict) -> str:
    lines = [
        f"convolutions and matrix products vs the rest, {result['device_name']}, {result['threads']} threads, "
        f"matmul peak {result['matmul_peak_gflops']:.1f} GFLOP/s",
        f"{'method':34s} {'path':10s} {'ms/step':>8s} {'of peak':>7s} {'conv+mm ms':>10s} {'share':>6s} "
        f"{'ceiling':>7s}  largest other operators (ms/step)",
    ]
    for r in result["rows"]:
        others = ", ".join(f"{n.removeprefix('aten::')} {ms:.1f}" for n, ms in r["largest_other_operators_ms"].items())
        lines.append(
            f"{r['method']:34s} {r['path']:10s} {r['ms_per_step']:8.1f} {r['fraction_of_matmul_peak']:7.0%} "
            f"{r['flop_operators_ms']:10.1f} {r['flop_operators_share_of_step']:6.0%} "
            f"{r['flop_operators_fraction_of_peak']:7.0%}  {others}"
        )
    return "\n".join(lines)


def kernels_markdown(result: dict) -> str:
    """The ``--kernels`` run as docs/speed.md's table (a test checks that page holds the committed run's table)."""
    lines = [
        "| path | | ms / step | of matmul peak | convolutions + matrix products, ms | their share of the step "
        "| ceiling (their own fraction of peak) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['method']} | {r['path']} | {r['ms_per_step']:.1f} | {r['fraction_of_matmul_peak']:.0%} "
            f"| {r['flop_operators_ms']:.1f} | {r['flop_operators_share_of_step']:.0%} "
            f"| {r['flop_operators_fraction_of_peak']:.0%} |"
        )
    return "\n".join(lines)


def changes_over_eager(quick: bool) -> list[dict]:
    """Every change tried on the training paths, each against the trainer's eager call in this run (CPU): the
    kernel-shape changes of :func:`run_layout_benchmark` and ``torch.compile`` (:func:`run_compile_benchmark`;
    ``quick``: the GAN step only). Each row: ``change``, ``path``, ``eager_ms``, ``changed_ms``, ``speedup_over_eager``
    (steady state) and ``end_to_end_speedup`` (compilation included, over a 3,000-step run; the steady ratio when
    nothing compiles)."""
    rows = [
        {
            "change": r["change"].split(", ")[1],
            "path": f"{r['change'].split(', ')[0]} (width {r['width']}, batch 64, forward + backward)",
            "eager_ms": r["eager_ms"],
            "changed_ms": r["changed_ms"],
            "speedup_over_eager": r["speedup_over_eager"],
            "end_to_end_speedup": r["speedup_over_eager"],
        }
        for r in run_layout_benchmark(quick)["rows"]
    ]
    for r in run_compile_benchmark(gan_step_only=quick)["rows"]:
        rows.append(
            {
                "change": "torch.compile (inductor)",
                "path": r["path"],
                "eager_ms": r["eager_ms"],
                "changed_ms": r["compiled_ms"],
                "speedup_over_eager": r["speedup_over_eager"],
                "end_to_end_speedup": r["end_to_end_speedup"],
            }
        )
    return rows
