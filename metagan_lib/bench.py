"""Speed of the meta-learning loops: loop vs vmap, first vs second order, MAML vs Reptile vs Meta-SGD.

    python -m metagan_lib.bench [--quick] [--device auto|cpu|cuda] [--json PATH]
    python -m metagan_lib.bench --parallel [--quick] [--json PATH]
    python -m metagan_lib.bench --compile [--json PATH]
    python -m metagan_lib.bench --layouts [--quick] [--json PATH]
    python -m metagan_lib.bench --kernels [--quick] [--json PATH]

Each row times full meta-steps (sampling, inner loop, outer update) on the same model and tasks
and reports meta-steps per second and generated images per second (every image the generators
produce in a meta-step: ``tasks * (2 * inner_steps + 1) * fake_batch``). ``vmap_over_loop`` is the
speed ratio of the vmap path over the plain loop for second-order MAML, measured in the same run.
On a GPU it also times the vmap path under bf16 autocast. Where ``higher`` (facebookresearch's
differentiable optimisers) is installed, a second-order MAML step written with it runs on the
same networks and tasks for comparison (it has no vmap path, so it loops over tasks).
The data are random images: speed does not depend on what the images show.

The roofline columns: each timed path's FLOPs per step by ``torch.utils.flop_counter``'s formulas (matrix
products and convolutions, forward and backward), counted on the loop path that does the same arithmetic, the
GFLOP/s that achieves, and ``fraction_of_matmul_peak`` against a dense float32 2048x2048 matmul timed in the same
run on the same threads (``counted_gflop_per_step`` is the timed path's own count; under ``vmap`` with per-task
weights it is higher). The rows cover the GAN
training step (notebooks 01-02, 06's baselines), the whole-network meta-learners (04-05) and the context
meta-GAN's outer rules (05-06). On a CPU the run also times every change tried on those paths against the trainer's
eager call (``changes``, each with ``speedup_over_eager``): the kernel-shape changes of ``--layouts`` and
``torch.compile`` (the GAN step with ``--quick``; the outer losses too without it).

``--parallel`` times something else, on a CPU: four GAN trainings (as notebook 02 runs) one after the other
on all threads vs side by side in one-thread worker processes
(:func:`metagan_lib.runtime.parallel_map`), and prints the ratio ``side_by_side_over_in_turn``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from .data import ImageDataset
from .images import to_signed
from .losses import discriminator_loss, generator_loss_nonsaturating
from .meta import MetaConfig, MetaTrainer, draw_noise, new_meta_gan
from .models import materialise
from .paths import repo_root
from .runtime import choose_device
from .tasks import TaskSampler


def synthetic_dataset(classes: int = 20, per_class: int = 20, seed: int = 0) -> ImageDataset:
    """Random ``uint8`` images with labels: a stand-in with the real shapes, built instantly."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (classes * per_class, 1, 28, 28), generator=generator, dtype=torch.uint8)
    labels = torch.arange(classes).repeat_interleave(per_class)
    return ImageDataset(
        "synthetic", images, labels, tuple(map(str, range(classes))), torch.arange(classes), torch.arange(0), "random"
    )


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    """Median seconds of one call of ``step`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    _synchronise(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        _synchronise(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_interleaved(steps: dict[str, Callable[[], object]], device: torch.device, warmup: int, repeats: int) -> dict:
    """Median seconds of one call of each of ``steps`` (name -> call), the calls interleaved (each round calls every
    step once, in order) so that a drift in the machine's speed hits every step alike: ``{name: seconds}``."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    _synchronise(device)
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            _synchronise(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def make_higher_maml_step(
    meta: MetaTrainer, sampler: TaskSampler, noise_generator: torch.Generator
) -> Callable[[], None]:
    """A second-order MAML meta-step written with ``higher``, task by task (same losses as metagan_lib.meta).

    ``higher`` needs real modules: they start from copies of the meta-GAN's parameter dicts.
    """
    import higher

    generator, discriminator = (
        materialise(meta.generator, meta.g_params),
        materialise(meta.discriminator, meta.d_params),
    )
    meta_optimizer = torch.optim.Adam(
        list(generator.parameters()) + list(discriminator.parameters()), lr=meta.config.meta_lr
    )

    def step() -> None:
        _higher_maml_step(higher, (generator, discriminator), meta, sampler, noise_generator, meta_optimizer)

    return step


def _higher_maml_step(higher, modules, meta, sampler, noise_generator, meta_optimizer) -> None:
    cfg = meta.config
    generator, discriminator = modules
    episode = sampler.sample(cfg.tasks, 1, cfg.shots, cfg.queries)
    inner, outer = draw_noise(noise_generator, cfg.tasks, cfg.inner_steps, cfg.fake_batch, cfg.z_dim, meta.device)
    meta_optimizer.zero_grad(set_to_none=True)
    for t in range(cfg.tasks):
        f_gen = higher.monkeypatch(generator, copy_initial_weights=False)
        f_disc = higher.monkeypatch(discriminator, copy_initial_weights=False)
        opt_g = higher.get_diff_optim(
            torch.optim.SGD(generator.parameters(), lr=cfg.inner_lr), generator.parameters(), fmodel=f_gen
        )
        opt_d = higher.get_diff_optim(
            torch.optim.SGD(discriminator.parameters(), lr=cfg.inner_lr), discriminator.parameters(), fmodel=f_disc
        )
        support = episode.support[t, 0]
        for s in range(cfg.inner_steps):
            opt_d.step(discriminator_loss(f_disc(support), f_disc(f_gen(inner[t, s, 0]))))
            opt_g.step(generator_loss_nonsaturating(f_disc(f_gen(inner[t, s, 1]))))
        fake_logits = f_disc(f_gen(outer[t]))
        d_loss = discriminator_loss(f_disc(episode.query[t, 0]), fake_logits) / cfg.tasks
        g_loss = generator_loss_nonsaturating(fake_logits) / cfg.tasks
        d_grads = torch.autograd.grad(d_loss, list(discriminator.parameters()), retain_graph=True)
        g_grads = torch.autograd.grad(g_loss, list(generator.parameters()))
        for p, g in zip(list(discriminator.parameters()) + list(generator.parameters()), d_grads + g_grads):
            p.grad = g if p.grad is None else p.grad + g
    meta_optimizer.step()


def matmul_peak_gflops(device: torch.device, size: int = 2048, repeats: int = 5) -> float:
    """The practical peak: GFLOP/s of a dense float32 ``size x size`` matmul on this device and thread count."""
    generator = torch.Generator(device=device).manual_seed(0)
    a, b = (torch.randn(size, size, generator=generator, device=device) for _ in range(2))
    return 2 * size**3 / time_steps(lambda: a @ b, device, warmup=1, repeats=repeats) / 1e9


class _FlopCount(TorchDispatchMode):
    """Sums ``torch.utils.flop_counter``'s formulas over the operators a call dispatches (no module hooks, so it
    also runs through ``torch.autograd.grad`` with ``create_graph``, which ``FlopCounterMode``'s hooks refuse)."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def counted_flops(step: Callable[[], object]) -> float:
    """FLOPs of one call of ``step`` by ``torch.utils.flop_counter``'s formulas: matrix products and convolutions,
    forward and backward (element-wise work is not counted, so the fractions of peak are lower bounds)."""
    with _FlopCount() as counter:
        step()
    return float(counter.total)


def gan_training_step(
    architecture: str, width: int, batch: int, device: torch.device, compiled: bool = False
) -> Callable[[], None]:
    """One step of :func:`metagan_lib.train.train_gan` (a discriminator step, then a generator step); with ``compiled``
    both networks run under ``torch.compile``."""
    from .train import GANConfig, discriminator_step, generator_step, new_run

    config = GANConfig(architecture=architecture, width=width, batch_size=batch)
    run = new_run(config, device, seed=0)
    if compiled:
        run.generator, run.discriminator = torch.compile(run.generator), torch.compile(run.discriminator)
    real = to_signed(synthetic_dataset().images[:batch]).to(device)
    rng = torch.Generator(device=device).manual_seed(0)
    opt_g = torch.optim.Adam(run.generator.parameters(), lr=config.lr_g, betas=config.betas)
    opt_d = torch.optim.Adam(run.discriminator.parameters(), lr=config.lr_d, betas=config.betas)

    def step() -> None:
        with torch.no_grad():
            fake = run.generator(torch.randn(batch, config.z_dim, generator=rng, device=device))
        discriminator_step(run, opt_d, real, fake, rng)
        generator_step(run, opt_g, torch.randn(batch, config.z_dim, generator=rng, device=device), lambda x: x)

    return step


def vae_training_step(adversarial_weight: float, batch: int, device: torch.device) -> Callable[[], None]:
    """One step of :func:`metagan_lib.vae.train_vae` (notebook 06's VAE, or with ``adversarial_weight`` its VAE-GAN)."""
    from . import vae

    config = vae.VAEConfig(batch_size=batch, adversarial_weight=adversarial_weight)
    model, critic, optimizers = vae.new_vae(config, seed=0, device=device)
    real = to_signed(synthetic_dataset().images[:batch]).to(device)
    rng = torch.Generator(device=device).manual_seed(0)

    def step() -> None:
        eps, prior = torch.randn(2, batch, config.z_dim, generator=rng, device=device)
        vae.training_step(model, critic, optimizers, real, eps, prior, adversarial_weight)

    return step


def images_per_meta_step(config: MetaConfig) -> int:
    """Generated images a meta-step of ``config`` produces: ``tasks * (2 * inner_steps + 1) * fake_batch``."""
    return config.tasks * (2 * config.inner_steps + 1) * config.fake_batch


def protonet_episode_step(ways: int, shots: int, queries: int, device: torch.device) -> Callable[[], None]:
    """One training episode of :func:`metagan_lib.protonet.train_protonet` (notebook 06's prototypical network)."""
    from . import protonet

    sampler = TaskSampler(synthetic_dataset(classes=ways), torch.arange(ways), device=device, seed=0)
    net = protonet.ProtoNet().to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)

    def step() -> None:
        protonet.training_step(net, optimizer, sampler.sample(1, ways, shots, queries))

    return step


def _meta_cases(base: MetaConfig, quick: bool) -> list[tuple[str, MetaConfig, tuple[str, ...]]]:
    return [
        ("MAML 2nd order", base, ("loop", "vmap")),
        ("MAML 1st order", base.replace(first_order=True), ("loop", "vmap")),
        ("Meta-SGD 2nd order", base.replace(method="meta-sgd"), ("vmap",) if quick else ("loop", "vmap")),
        ("Reptile (5 inner steps)", base.replace(method="reptile", inner_steps=5, meta_lr=0.1), ("loop", "vmap")),
    ]


def _timed_paths(device, sampler, base: MetaConfig, quick: bool) -> list[tuple]:
    """``(method, path, images per step, timed step, loop-path step)``: the loop-path step does the same arithmetic
    without ``vmap`` and is what the FLOPs are counted on (``vmap`` over per-task weights lowers convolutions to
    batched forms that the counter charges more for than the mathematics needs)."""
    from .context import (
        GUIDE_WIDTH,
        ContextTrainer,
        attach_guide,
        chosen_context_configs,
        new_context_gan,
        standard_context_configs,
    )
    from .evaluation import FeatureNet

    paths = []
    for architecture in ("mlp", "conv"):
        step = gan_training_step(architecture, 32, 64, device)
        paths.append((f"GAN step ({architecture}, width 32)", "batch 64", 3 * 64, step, step))
    for name, weight, images in (("VAE step (width 32)", 0.0, 64), ("VAE-GAN step (width 32)", 10.0, 2 * 64)):
        step = vae_training_step(weight, 64, device)  # images: decoded per step (reconstructions, + prior samples)
        paths.append((name, "batch 64", images, step, step))
    step = protonet_episode_step(20, 5, 5, device)
    paths.append(("ProtoNet episode", "20-way 5+5", 20 * 10, step, step))

    def meta_step(config, vectorised):
        return MetaTrainer(new_meta_gan(config, device, seed=0), sampler, seed=0, vectorised=vectorised).step

    for name, config, kinds in _meta_cases(base, quick):
        images = images_per_meta_step(config)
        paths += [(name, kind, images, meta_step(config, kind == "vmap"), meta_step(config, False)) for kind in kinds]

    def context_step(config, vectorised):
        model = new_context_gan(config, device, seed=0)
        if config.inner_guide_weight:  # an untrained guide network costs what the trained one does
            model = attach_guide(model, FeatureNet(num_classes=1, width=GUIDE_WIDTH).to(device))
        return ContextTrainer(model, sampler, seed=0, vectorised=vectorised).step

    chosen = chosen_context_configs(tasks=base.tasks, shots=base.shots)  # the fifth learner, timed in every run
    for name, config in {**standard_context_configs(tasks=base.tasks, shots=base.shots), **chosen}.items():
        if config.rule in ("maml", "reptile") or name in chosen or not quick:
            images = config.tasks * (config.inner_steps * config.inner_samples + config.outer_samples)
            paths.append((name, "vmap", images, context_step(config, True), context_step(config, False)))
    with contextlib.suppress(ImportError):
        import higher  # noqa: F401  (an availability probe: ImportError means not installed)

        step = make_higher_maml_step(
            new_meta_gan(base, device, seed=0), sampler, torch.Generator(device=device).manual_seed(1)
        )
        images = images_per_meta_step(base)
        paths.append(("MAML 2nd order", "higher (loop)", images, step, meta_step(base, False)))
    return paths


def _timed_rows(device, sampler, base: MetaConfig, quick: bool, peak: float) -> list[dict]:
    """Every timed path (GAN training steps, whole-network meta-learners, the context meta-GAN's rules) with its
    roofline numbers."""
    warmup, repeats = (1, 3) if quick else (2, 10)
    rows = []
    for method, path, images, step, loop_step in _timed_paths(device, sampler, base, quick):
        counted = counted_flops(step)  # also a warm-up call
        useful = counted if loop_step is step else counted_flops(loop_step)
        row = _row(method, path, images, useful, time_steps(step, device, warmup, repeats), peak)
        rows.append({**row, "counted_gflop_per_step": counted / 1e9})
    return rows


def benchmark_tasks(quick: bool, device: torch.device) -> tuple[MetaConfig, TaskSampler]:
    """The meta-learners' benchmark setting (8 tasks per meta-step with ``quick``, else 16) and a sampler of random
    images for it."""
    base = MetaConfig(tasks=8 if quick else 16, shots=5, queries=10, fake_batch=16, inner_steps=2)
    return base, TaskSampler(synthetic_dataset(), torch.arange(20), device=device, seed=0)


def run_benchmark(quick: bool = False, device_name: str = "auto") -> dict:
    """Time every training path (see the module docstring) and place each against the matmul peak of this run."""
    device = choose_device(device_name)
    base, sampler = benchmark_tasks(quick, device)
    peak = matmul_peak_gflops(device)
    rows = _timed_rows(device, sampler, base, quick, peak)
    if device.type == "cuda":
        trainer = MetaTrainer(new_meta_gan(base, device, seed=0), sampler, seed=0, vectorised=True)

        def autocast_step():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                trainer.step()

        images = images_per_meta_step(base)
        seconds = time_steps(autocast_step, device, 1, 3 if quick else 10)
        useful = next(r for r in rows if (r["method"], r["path"]) == ("MAML 2nd order", "loop"))["gflop_per_step"] * 1e9
        rows.append(_row("MAML 2nd order", "vmap + bf16 autocast", images, useful, seconds, peak))
    by_key = {(r["method"], r["path"]): r for r in rows}
    loop, vmap_ = by_key[("MAML 2nd order", "loop")], by_key[("MAML 2nd order", "vmap")]
    from .bench_modes import changes_over_eager

    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "vector_isa": "" if device.type == "cuda" else _vector_isa(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "quick": quick,
        "matmul_peak_gflops": peak,
        "tasks_per_meta_step": base.tasks,
        "rows": rows,
        "vmap_over_loop": vmap_["meta_steps_per_s"] / loop["meta_steps_per_s"],
        "second_over_first_order_vmap": by_key[("MAML 1st order", "vmap")]["meta_steps_per_s"]
        / vmap_["meta_steps_per_s"],
        "changes": changes_over_eager(quick) if device.type == "cpu" else [],
    }


def _row(method: str, path: str, images: int, flops: float, seconds: float, peak_gflops: float) -> dict:
    """One timed path: ``images`` generated per step, ``flops`` counted per step, median ``seconds`` per step."""
    achieved = flops / seconds / 1e9
    return {
        "method": method,
        "path": path,
        "ms_per_meta_step": 1000 * seconds,
        "meta_steps_per_s": 1.0 / seconds,
        "images_per_s": images / seconds,
        "gflop_per_step": flops / 1e9,
        "achieved_gflops": achieved,
        "fraction_of_matmul_peak": achieved / peak_gflops,
    }


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    import platform

    return platform.processor() or "cpu"


def _vector_isa() -> str:
    """The widest x86 vector instruction set the CPU reports (``"AVX-512"``, ``"AVX2"``), else ``""``."""
    with contextlib.suppress(OSError):
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
        return "AVX-512" if " avx512f" in flags else "AVX2" if " avx2" in flags else ""
    return ""


SPEED_MARKERS = ("<!-- speed:start -->", "<!-- speed:end -->")  # what report.replace_block writes for "speed"


def markdown_table(result: dict) -> str:
    """The README's speed block: the machine, one table row per timed path and the ratios, all from ``result``."""
    machine = ", ".join(
        part
        for part in (
            result["device_name"],
            f"{result['threads']} threads",
            result.get("vector_isa", ""),
            f"torch {result['torch']}",
            f"{result['tasks_per_meta_step']} tasks per meta-step",
        )
        if part
    )
    lines = [
        f"Machine: {machine}; matmul peak **{result['matmul_peak_gflops']:.1f} GFLOP/s** in this run.",
        "",
        "| path | | ms / step | images / s | GFLOP / step | GFLOP/s | of matmul peak |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['method']} | {r['path']} | {r['ms_per_meta_step']:.0f} | {r['images_per_s']:.0f} | "
            f"{r['gflop_per_step']:.2f} | {r['achieved_gflops']:.1f} | {r['fraction_of_matmul_peak']:.0%} |"
        )
    ratios = [
        f"vmap over loop (MAML, second order): **{result['vmap_over_loop']:.2f}x**",
        f"first over second order (vmap): {result['second_over_first_order_vmap']:.2f}x",
    ]
    speed = {(r["method"], r["path"]): r["meta_steps_per_s"] for r in result["rows"]}
    if ("MAML 2nd order", "higher (loop)") in speed:
        slower = speed[("MAML 2nd order", "vmap")] / speed[("MAML 2nd order", "higher (loop)")]
        ratios.append(f"`higher`, the peer, is {slower:.1f}x slower than the vmap path")
    lines += ["", "; ".join(ratios) + "."]
    if result.get("changes"):
        lines += [
            "",
            "| change, against the trainer's eager call in this run | path | eager ms | changed ms "
            "| speedup over eager | end to end, compilation included |",
            "|---|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {c['change']} | {c['path']} | {c['eager_ms']:.1f} | {c['changed_ms']:.1f} "
            f"| {c['speedup_over_eager']:.2f}x | {c['end_to_end_speedup']:.2f}x |"
            for c in result["changes"]
        ]
    return "\n".join(lines)


def update_readme(readme: Path, result: dict) -> None:
    """Replace the README's block between :data:`SPEED_MARKERS` with :func:`markdown_table` of ``result``."""
    from .report import replace_block

    readme.write_text(replace_block(readme.read_text(), "speed", markdown_table(result)))


def format_table(result: dict) -> str:
    lines = [
        f"device: {result['device']} ({result['device_name']}), {result['threads']} threads, torch {result['torch']}, "
        f"{result['tasks_per_meta_step']} tasks per meta-step; "
        f"float32 matmul peak {result['matmul_peak_gflops']:.1f} GFLOP/s",
        f"{'method':27s} {'path':21s} {'ms/step':>9s} {'steps/s':>8s} {'images/s':>9s} {'GFLOP/step':>10s} "
        f"{'GFLOP/s':>8s} {'of peak':>7s}",
    ]
    for r in result["rows"]:
        lines.append(
            f"{r['method']:27s} {r['path']:21s} {r['ms_per_meta_step']:9.1f} {r['meta_steps_per_s']:8.2f} "
            f"{r['images_per_s']:9.0f} {r['gflop_per_step']:10.3f} {r['achieved_gflops']:8.1f} "
            f"{r['fraction_of_matmul_peak']:7.0%}"
        )
    lines.append(f"vmap over loop (MAML 2nd order): {result['vmap_over_loop']:.2f}x")
    lines.append(f"1st over 2nd order (vmap): {result['second_over_first_order_vmap']:.2f}x")
    return "\n".join(lines)


OTHER_MODES = ("parallel", "compile", "layouts", "kernels")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m metagan_lib.bench", description=__doc__.split("\n\n")[0], allow_abbrev=False
    )
    parser.add_argument("--quick", action="store_true", help="fewer tasks and repeats (under a minute on a 2-core CPU)")
    parser.add_argument("--device", default="auto", type=str.lower, help="auto, cpu or cuda")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument(
        "--update-readme", action="store_true", help="also write this run's table into the README's speed block"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--parallel",
        action="store_true",
        help="instead: four GAN trainings in turn vs side by side in worker processes (CPU)",
    )
    mode.add_argument(
        "--compile", action="store_true", help="instead: torch.compile vs eager (CPU; minutes of compiling)"
    )
    mode.add_argument(
        "--layouts",
        action="store_true",
        help="instead: the discriminator on a concatenated batch, channels-last memory format, vs eager (CPU)",
    )
    mode.add_argument(
        "--kernels",
        action="store_true",
        help="instead: each path's convolutions and matrix products vs the rest (torch.profiler; CPU)",
    )
    return parser


def _run_mode(args: argparse.Namespace) -> tuple[dict, Callable[[dict], str]]:
    """Run the benchmark ``args`` name; return its result and the function that formats it."""
    from . import bench_modes

    if args.parallel:
        return bench_modes.run_parallel_benchmark(args.quick), bench_modes.format_parallel
    if args.compile:
        return bench_modes.run_compile_benchmark(), bench_modes.format_compile
    if args.layouts:
        return bench_modes.run_layout_benchmark(args.quick), bench_modes.format_layouts
    if args.kernels:
        return bench_modes.run_kernel_benchmark(args.quick), bench_modes.format_kernels
    return run_benchmark(args.quick, args.device), format_table


def _check_outputs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``parser.error`` when the ``--json`` file or the README's speed block cannot be written."""
    from .report import replace_block

    if args.json:
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            parser.error(f"--json {args.json}: the folder {args.json.parent} cannot be made ({error.strerror})")
        if args.json.is_dir():
            parser.error(f"--json {args.json} is a folder; give a file name")
    if args.update_readme:
        try:
            replace_block((repo_root() / "README.md").read_text(), "speed", "")
        except (OSError, ValueError) as error:
            parser.error(f"--update-readme: {error}")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    other_mode = next((f"--{m}" for m in OTHER_MODES if getattr(args, m)), None)
    if other_mode and args.device not in ("auto", "cpu"):
        parser.error(f"{other_mode} measures the CPU: drop --device {args.device} (or pass --device cpu)")
    if args.compile and args.quick:
        parser.error("--compile has no quick version (it compiles both cases, minutes): drop --quick")
    if other_mode and args.update_readme:
        parser.error(f"--update-readme writes the standard benchmark's table only: drop it or {other_mode}")
    _check_outputs(parser, args)  # before the minutes of measuring, not after
    try:
        result, text = _run_mode(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(text(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    if args.update_readme:
        update_readme(repo_root() / "README.md", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
