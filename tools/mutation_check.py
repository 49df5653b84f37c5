r"""Plant known bugs in ``metagan_lib`` one at a time and check that the tests catch each (mutation testing, by hand).

Each mutant below replaces exact source text with a plausible bug (a sign, an index, a wrong term, a dropped check) in
a copy of the checkout's tracked files under a temporary folder, and runs the tests named for it (``pytest -x``, the
copy first on ``PYTHONPATH``); the repository itself is never changed. A mutant the tests let through is a test that
cannot fail where it should: the run lists it and exits 1. Each group of test files first runs with no mutant planted
and must pass (a failing or order-dependent test would count every mutant as caught)::

    python tools/mutation_check.py            # every mutant (about 17 minutes on 2 CPU cores)
    python tools/mutation_check.py L1 E4      # some of them
    python tools/mutation_check.py --list     # what each one breaks

Mutants that change nothing a test could observe are not listed (for instance detaching the spread term's target,
which has no gradient anyway). Only tracked files are copied: ``git add`` a new test file first. ``tests/test_tools.py``
checks that every mutant's text occurs exactly once in the current source, so none is skipped silently after an edit.
"""

# ruff: noqa: E501  (the mutant table: one exact source text per line reads better than wrapped strings)
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    module: str  # a file of metagan_lib, without .py
    edits: tuple[tuple[str, str], ...]  # (exact source text, its replacement), each text found exactly once
    tests: tuple[str, ...]  # the test files that must catch it
    breaks: str  # what the bug is, in words


LOSSES = ("tests/test_losses.py", "tests/test_context.py", "tests/test_train.py")
METRICS = ("tests/test_evaluation.py", "tests/test_fewshot.py")
META = ("tests/test_meta.py",)
CONTEXT = ("tests/test_context.py",)
TASKS = ("tests/test_tasks.py", "tests/test_data.py", "tests/test_fewshot.py")
KEYS = ("tests/test_artifacts.py",)
TRAINING = ("tests/test_train.py",)
REPORT = ("tests/test_fewshot.py", "tests/test_reliability.py")


def _m(name, module, edits, tests, breaks):
    return Mutant(name, module, tuple(edits), tuple(tests), breaks)


MUTANTS = (
    _m("L1", "losses", [("F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()",
                         "F.softplus(-real_logits).mean() + F.softplus(-fake_logits).mean()")], LOSSES,
       "L_D scores fakes as real"),
    _m("L2", "losses", [("return F.softplus(-fake_logits).mean()", "return F.softplus(fake_logits).mean()")], LOSSES,
       "non-saturating L_G with the wrong sign"),
    _m("L3", "losses", [("(grads.flatten(1).norm(dim=1) - 1.0).pow(2)", "(grads.flatten(1).norm(dim=1)).pow(2)")],
       LOSSES, "WGAN-GP penalises the gradient norm, not its distance to 1"),
    _m("L4", "losses", [("(1.0 - weights) * fake.detach()", "weights * fake.detach()")], LOSSES,
       "WGAN-GP interpolates with the wrong weights"),
    _m("L5", "losses", [("grads.flatten(1).pow(2).sum(dim=1).mean()", "grads.flatten(1).abs().sum(dim=1).mean()")],
       LOSSES, "R1 with an L1 norm"),
    _m("L6", "losses", [("m = 0.5 * (p + q)", "m = q")], LOSSES, "Jensen-Shannon against q, not the mixture"),
    _m("L7", "losses", [("return d.min(dim=1).values.mean() + d.min(dim=0).values.mean()",
                         "return d.min(dim=1).values.mean()")], LOSSES, "a one-sided chamfer distance"),
    _m("L8", "losses", [("for scale in (1, 2, 4):", "for scale in (1, 2):")], LOSSES, "a scale missing from the pyramid"),
    _m("L9", "losses", [('mode="replicate"', 'mode="constant"')], LOSSES, "the blur darkens the borders"),
    _m("L10", "losses", [("kernel = kernel / kernel.sum()", "kernel = kernel")], LOSSES, "an unnormalised blur"),
    _m("L11", "losses", [("return p_data / (p_data + p_model)", "return p_data / (p_data + p_model + 1e-3)")], LOSSES,
       "the optimal discriminator off its formula"),
    _m("L12", "losses", [("weight * discriminator_loss(real_logits, fake_logits)",
                          "discriminator_loss(real_logits, fake_logits)")], LOSSES, "the combined loss ignores lambda"),
    _m("L13", "losses", [("fa = (F.avg_pool2d(a, scale) if scale > 1 else a).flatten(1)", "fa = a.flatten(1)"),
                         ("fb = (F.avg_pool2d(b, scale) if scale > 1 else b).flatten(1)", "fb = b.flatten(1)")],
       LOSSES, "the pyramid's scales never pooled (3 x the pixel distance)"),
    _m("E1", "evaluation", [("- 2 * trace_root)", "- trace_root)")], METRICS, "FD's cross term halved"),
    _m("E2", "evaluation", [("scale_a, scale_b = max(len(a) - 1, 1), max(len(b) - 1, 1)",
                             "scale_a, scale_b = max(len(a), 1), max(len(b), 1)")], METRICS, "biased covariances in FD"),
    _m("E3", "evaluation", [("kthvalue(k + 1, dim=1)", "kthvalue(k, dim=1)")], METRICS, "k-NN radius counts the point"),
    _m("E4", "evaluation", [("return _inside_balls(real, fake, k).any(dim=0)",
                             "return _inside_balls(real, fake, k).any(dim=1)")], METRICS, "coverage computes precision"),
    _m("E5", "evaluation", [("torch.cdist(x, x).sum() / (n * (n - 1))", "torch.cdist(x, x).sum() / (n * n)")],
       METRICS, "diversity averages over the diagonal too"),
    _m("E6", "evaluation", [("* (len(shots) + len(reference)) / len(shots)", "* len(reference) / len(shots)")], METRICS,
       "copy score's chance level wrong"),
    _m("E7", "evaluation", [("argmin(dim=1) < len(shots)", "argmin(dim=1) <= len(shots)")], METRICS,
       "copy score counts the first held-out image as a shot"),
    _m("E8", "evaluation", [("scipy.stats.t.ppf(0.975, n - 1)", "scipy.stats.t.ppf(0.95, n - 1)")], METRICS,
       "90% intervals called 95%"),
    _m("E9", "evaluation", [("variance = sum((v - mean) ** 2 for v in values) / (n - 1)",
                             "variance = sum((v - mean) ** 2 for v in values) / n")], METRICS, "biased variance"),
    _m("E10", "evaluation", [("return share_inside(real, fake), share_inside(fake, real)",
                              "return share_inside(fake, real), share_inside(real, fake)")], METRICS,
       "precision and recall swapped"),
    _m("E11", "evaluation", [("radii[None, :] * (1 + 1e-6)", "radii[None, :] * 0.5")], METRICS, "k-NN balls halved"),
    _m("E12", "evaluation", [("kthvalue(k + 1, dim=1)", "kthvalue(k + 2, dim=1)")], METRICS, "k-NN radius one too far"),
    _m("M1", "meta", [("return {k: p - rates[k] * grads[k] for k, p in params.items()}",
                       "return {k: p + rates[k] * grads[k] for k, p in params.items()}")], META, "inner step ascends"),
    _m("M2", "meta", [("    if first_order:\n        grads = {k: g.detach()", "    if False:\n        grads = {k: g.detach()")],
       META, "first order is second order"),
    _m("M3", "meta", [("G(p, noise[step, 1])", "G(p, noise[step, 0])")], META,
       "the generator's inner step reuses the discriminator step's noise"),
    _m("M4", "meta", [("d_loss, g_loss = losses[:, 0].mean(), losses[:, 1].mean()",
                       "g_loss, d_loss = losses[:, 0].mean(), losses[:, 1].mean()")], META, "players' outer losses swapped"),
    _m("M5", "meta", [("p.add_(epsilon * (adapted[k].mean(dim=0) - p))", "p.add_(epsilon * (adapted[k][0] - p))")],
       META, "Reptile follows the first task only"),
    _m("M6", "meta", [("rate.clamp_(min=0.0)", "rate.clamp_(min=-1.0)")], META, "Meta-SGD rates may turn negative"),
    _m("M7", "meta", [("real_logits = functional_call(meta.discriminator, d_adapted, (query,))",
                       "real_logits = functional_call(meta.discriminator, d_adapted, (support,))")], META,
       "the outer loss scores the support set, not the query set"),
    _m("M8", "meta", [("        fake = G(g_params, noise[step, 0])\n        d_params = sgd_step(",
                       "        fake = G(g_params, noise[step, 0])\n        frozen_d = d_params\n        d_params = sgd_step("),
                      ("        frozen_d = d_params\n        g_params = sgd_step(", "        g_params = sgd_step(")],
       META, "the generator steps against the discriminator before its update"),
    _m("C1", "context", [("context, total = context - rates * step, total + step",
                          "context, total = context + rates * step, total + step")], CONTEXT, "context step ascends"),
    _m("C2", "context", [("step = step.detach() if first_order else step", "step = step")], CONTEXT,
       "FOMAML differentiates through the inner steps"),
    _m("C3", "context", [("return (guide_prototype(model, samples) - prototype).pow(2).sum()",
                          "return (guide_prototype(model, samples) - prototype).abs().sum()")], CONTEXT,
       "guide distance with an L1 norm"),
    _m("C4", "context", [("return distances.sum() / (n * (n - 1))", "return distances.sum() / (n * n)")], CONTEXT,
       "guide spread averages over the diagonal"),
    _m("C5", "context", [("spread_shortfall(model, fake, target)", "spread_shortfall(model, fake, support)")], CONTEXT,
       "spread measured against the shots, not the query images"),
    _m("C6", "context", [('adapted["rates"] = params["rates"].detach() + total * grads["context"]',
                          'adapted["rates"] = params["rates"].detach() - total * grads["context"]')], CONTEXT,
       "learned rates move the wrong way"),
    _m("C7", "context", [("targets = query if fit_query else support", "targets = support")], CONTEXT,
       "Reptile-query fits the shots"),
    _m("C8", "context", [("directions = {k: (v - adapted[k].mean(0)).detach()",
                          "directions = {k: (adapted[k].mean(0) - v).detach()")], CONTEXT, "Reptile direction reversed"),
    _m("C9", "context", [("loss = 0.5 * (starts - adapted.detach()).pow(2).sum(-1).mean()",
                          "loss = 1.0 * (starts - adapted.detach()).pow(2).sum(-1).mean()")], CONTEXT,
       "the shot encoder's regression doubled"),
    _m("C10", "context", [('return params["context"] + functional_call(model.encoder',
                           'return 0 * params["context"] + functional_call(model.encoder')], CONTEXT,
       "the encoder start drops c0"),
    _m("C11", "context", [("return to_shots.min(-1).values - to_prototype", "return to_shots.mean(-1) - to_prototype")],
       CONTEXT, "novelty against the mean shot, not the nearest"),
    _m("C12", "context", [("nearest_kept = to_pick if not kept else torch.minimum(nearest_kept, to_pick)",
                           "nearest_kept = to_pick")], CONTEXT, "the spread filter remembers only the last pick"),
    _m("C13", "context", [('and s["diversity"] >= MIN_DIVERSITY_RATIO * real_diversity',
                           'and s["diversity"] >= real_diversity')], CONTEXT, "the step rule's diversity floor at 1x"),
    _m("C14", "context", [("return max(passing)", "return min(passing)")], CONTEXT, "the step rule takes the fewest"),
    _m("C15", "context", [("adapted = {k: v - model.config.reptile_lr * grads[k] for k, v in start.items()}",
                           "adapted = {k: v - model.config.reptile_lr * grads[k].sign() for k, v in start.items()}")],
       CONTEXT, "Reptile's weights step by the gradient's sign"),
    _m("C16", "context", [("loss = loss + model.config.inner_guide_weight * guide_distance(",
                           "loss = loss + 0.5 * model.config.inner_guide_weight * guide_distance(")], CONTEXT,
       "the guide term at half its weight"),
    _m("C17", "context", [("    for z in noise:\n        step = grad(", "    for z in [noise[0]] * len(noise):\n        step = grad(")],
       CONTEXT, "every inner step on the first step's noise"),
    _m("F1", "fewshot", [("return min(grid) < best < max(grid)", "return min(grid) <= best <= max(grid)")], METRICS,
       "a step size at the grid's edge passes as bracketed"),
    _m("F2", "fewshot", [("(1 - weight) * real.mean(1) + weight * extra.mean(1)", "real.mean(1) + weight * extra.mean(1)")],
       METRICS, "mixed prototypes not a convex mix"),
    _m("F3", "fewshot", [("if by_weight[w] >= max(by_weight.values()) - TIE_TOLERANCE",
                          "if by_weight[w] >= max(by_weight.values()) + TIE_TOLERANCE or by_weight[w] == max(by_weight.values())")],
       METRICS, "rounding ties go to the generated images"),
    _m("F4", "fewshot", [("sign = 1 if metric in LOWER_IS_BETTER else -1", "sign = 1")], METRICS,
       "selection minimises a higher-is-better metric"),
    _m("F5", "fewshot", [("query_labels = torch.arange(ways, device=device).repeat_interleave(queries)",
                          "query_labels = torch.arange(ways, device=device).repeat(queries)")], METRICS,
       "downstream query labels out of order"),
    _m("F6", "fewshot", [("reference, ceiling = held_out[:, :half], held_out[:, half:]",
                          "reference, ceiling = held_out[:, :half], held_out[:, :half]")], METRICS,
       "the ceiling scored on the reference images themselves"),
    _m("F7", "fewshot", [("prototypes = torch.stack([f.mean(0) for f in reference_features])",
                          "prototypes = torch.stack([f.mean(0) for f in shot_features])")], METRICS,
       "class fidelity against the shots' prototypes"),
    _m("F8", "fewshot", [("queries = min(sampler.min_count - shots, MAX_HELD_OUT)",
                          "queries = min(sampler.min_count - shots - 1, MAX_HELD_OUT)")], METRICS,
       "one held-out image per class left unused"),
    _m("F9", "methods", [("repeats = shots[:, torch.arange(n, device=shots.device) % k].flatten(0, 1)",
                          "repeats = shots[:, torch.arange(n, device=shots.device) % 1].flatten(0, 1)")], METRICS,
       "the copy baseline copies the first shot only"),
    _m("T1", "tasks", [("noise = noise.masked_fill(~valid, 2.0)", "noise = noise")], TASKS,
       "padding rows drawn from classes smaller than the largest"),
    _m("T2", "tasks", [("query=images[:, :, shots:],",
                        "query=images[:, :, shots - 1 : -1] if shots > 1 else images[:, :, shots:],")], TASKS,
       "support and query sets overlap"),
    _m("I1", "inversion", [("z = latents[:, index] + spread * eps",
                            "z = latents[:, index[torch.randperm(len(index))]] + spread * eps")], CONTEXT,
       "samples not around their own shot's latent"),
    _m("I2", "inversion", [("return (images - targets).pow(2).flatten(1).mean(1)",
                            "return (images - targets).abs().flatten(1).mean(1)")], CONTEXT, "inversion fits an L1 error"),
    _m("I3", "inversion", [("frozen = {k: v.detach() for k, v in decoder.named_parameters()}",
                            "frozen = dict(decoder.named_parameters())")], CONTEXT,
       "inversion's gradients reach the generator"),
    _m("R1", "train", [('"saturating": (losses.discriminator_loss, losses.generator_loss_saturating)',
                        '"saturating": (losses.discriminator_loss, losses.generator_loss_nonsaturating)')], TRAINING,
       "the saturating loss trains with the non-saturating one"),
    _m("R2", "train", [('"hinge": (losses.hinge_discriminator_loss, losses.hinge_generator_loss)',
                        '"hinge": (losses.hinge_discriminator_loss, losses.generator_loss_nonsaturating)')], TRAINING,
       "the hinge generator loss swapped"),
    _m("R3", "train", [("    if run.ema_generator is not None:\n        update_ema(run.ema_generator, run.generator, "
                        "run.config.ema_decay)\n    return loss.item()", "    return loss.item()")], TRAINING,
       "the EMA generator never updated"),
    _m("R4", "augment", [("theta[:, 0, 2] = -2.0 * shifts[:, 0].to(images.dtype) / width",
                          "theta[:, 0, 2] = 2.0 * shifts[:, 0].to(images.dtype) / width")], TRAINING,
       "translation shifts the other way from its drawn shift"),
    _m("S1", "toy", [("return mse(model, adapt_regression(model, params, x_s, y_s, inner_lr, steps, first_order), x_q, y_q)",
                      "return mse(model, adapt_regression(model, params, x_s, y_s, inner_lr, steps, True), x_q, y_q)")],
       ("tests/test_toy.py",), "notebook 03's MAML always first order"),
    _m("V1", "report", [('return abs(a["mean"] - b["mean"]) > a["ci95"] + b["ci95"]',
                         'return abs(a["mean"] - b["mean"]) > max(a["ci95"], b["ci95"])')], REPORT,
       "a difference called beyond the intervals when it is inside their sum"),
    _m("V2", "report", [('return 1 if (a["mean"] < b["mean"]) == (metric in LOWER_IS_BETTER) else -1',
                         'return 1 if a["mean"] < b["mean"] else -1')], REPORT,
       "the verdict ignores which way the metric is better"),
    _m("V3", "report", [('above = lambda e: e["mean"] - base["mean"] > e["ci95"] + base["ci95"]',
                         'above = lambda e: e["mean"] - base["mean"] > 0')], REPORT,
       "downstream 'helps' without the intervals"),
    _m("P1", "protonet", [("return -torch.cdist(query_features, class_prototypes).pow(2)",
                           "return -torch.cdist(query_features, class_prototypes)")], ("tests/test_protonet.py",),
       "prototype logits from distances, not squared distances"),
    _m("P2", "protonet", [("labels = torch.arange(ways, device=logits.device).repeat_interleave(query.shape[1])",
                           "labels = torch.arange(ways, device=logits.device).repeat(query.shape[1])")],
       ("tests/test_protonet.py",), "episode labels out of order"),
    _m("A1", "vae", [("return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)",
                      "return 0.5 * (mu.pow(2) + logvar.exp() - logvar).sum(dim=1)")], ("tests/test_vae.py",),
       "the Gaussian KL off by a constant"),
    _m("A2", "vae", [("decoded = vae(mu + (0.5 * logvar).exp() * eps)", "decoded = vae(mu + logvar.exp() * eps)")],
       ("tests/test_vae.py",), "reparameterisation with the variance, not the standard deviation"),
    _m("D1", "seeds", [("text = repr((int(seed), *labels)).encode()", "text = repr((int(seed), *labels[:1])).encode()")],
       ("tests/test_meta.py", "tests/test_context.py"),
       "streams that differ only after their first label share a seed"),
    _m("K1", "artifacts", [('        "sampler_seed": sampler.seed,\n', "")], KEYS,
       "a meta-learner from another sampler seed loaded as this one"),
    _m("K2", "artifacts", [('        "labels": fingerprint(dataset.labels),\n', "")], KEYS,
       "a network trained on other labels loaded as this one"),
)  # fmt: skip


def source(mutant: Mutant, root: Path = ROOT) -> Path:
    return root / "metagan_lib" / f"{mutant.module}.py"


def unmatched(mutant: Mutant, root: Path = ROOT) -> list[str]:
    """The mutant's source texts not found exactly once in ``root``'s package (empty when it applies cleanly)."""
    text = source(mutant, root).read_text()
    return [old for old, _ in mutant.edits if text.count(old) != 1]


def apply(mutant: Mutant, text: str) -> str:
    for old, new in mutant.edits:
        text = text.replace(old, new)
    return text


def copy_checkout(folder: Path) -> Path:
    """The checkout's tracked files (the package, the tests and what they read beside it), as they are now, copied
    into ``folder``; returns it."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in tracked.splitlines():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, folder / name)
    return folder


def pytest(tests: tuple[str, ...], copy: Path) -> tuple[bool, str]:
    """Run ``tests`` in the checkout copy (its package first on the path), stopping at the first failure: (passed,
    the first failing test's line)."""
    command = [sys.executable, "-m", "pytest", *tests, "-x", "-q", "-p", "no:cacheprovider", "-W", "ignore"]
    done = subprocess.run(
        command, cwd=copy, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(copy)}
    )
    failed = next((line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))), "")
    return done.returncode == 0, failed


def run(mutant: Mutant, copy: Path) -> tuple[bool, float, str]:
    """Plant ``mutant`` in the package copy under ``copy``, run its tests, restore the file: (caught, seconds, what
    failed first)."""
    path = source(mutant, copy)
    original = path.read_text()
    path.write_text(apply(mutant, original))
    start = time.perf_counter()
    try:
        passed, failed = pytest(mutant.tests, copy)
    finally:
        path.write_text(original)
    return not passed, time.perf_counter() - start, failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and what each breaks, run nothing")
    args = parser.parse_args(argv)
    known = {m.name: m for m in MUTANTS}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"unknown mutant(s) {', '.join(unknown)}; --list names them")
    chosen = [known[n] for n in args.names] or list(MUTANTS)
    if args.list:
        for m in chosen:
            print(f"{m.name:4} {m.module + '.py':14} {m.breaks}")
        return 0
    stale = {m.name: unmatched(m) for m in chosen if unmatched(m)}
    if stale:
        print(f"error: the source changed under these mutants (text not found exactly once): {', '.join(stale)}")
        return 2
    survivors = []
    with tempfile.TemporaryDirectory(prefix="metagan-mutants-") as folder:
        copy = copy_checkout(Path(folder))
        for tests in sorted({m.tests for m in chosen}):  # each group of test files the mutants run, unmutated
            passed, failed = pytest(tests, copy)
            if not passed:  # a test failing with no bug planted would count every mutant as caught
                print(f"error: {' '.join(tests)} fail(s) with no mutant planted ({failed}); fix that first")
                return 2
        print("| mutant | what it breaks | caught | seconds | first failing test |\n|---|---|---|---:|---|", flush=True)
        for m in chosen:
            caught, seconds, failed = run(m, copy)
            survivors += [] if caught else [m.name]
            test = failed.split(" ")[1].split("::")[-1] if failed else ""
            print(f"| {m.name} | {m.breaks} | {'yes' if caught else '**no**'} | {seconds:.0f} | {test} |", flush=True)
    print(
        f"\n{len(chosen) - len(survivors)} of {len(chosen)} mutants caught"
        + (f"; not caught: {', '.join(survivors)}" if survivors else "")
    )
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
