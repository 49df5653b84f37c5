import copy
import json

import pytest
import torch

from metagan_lib import evaluation as E
from metagan_lib import fewshot, profiles, report
from metagan_lib import meta as M
from metagan_lib import methods as method_module
from metagan_lib.artifacts import content_hash, load_or_build
from metagan_lib.augment import diff_augment
from metagan_lib.context import ContextConfig, ScaledSampling, new_context_gan
from metagan_lib.evaluation import FeatureNet
from metagan_lib.protonet import ProtoNet
from metagan_lib.runtime import WORKERS_ENV_VAR, limited_threads
from metagan_lib.seeds import generator as seeded_generator
from metagan_lib.tasks import TaskSampler
from metagan_lib.train import GANConfig
from metagan_lib.vae import VAE, VAEFewShot


@pytest.fixture(scope="module")
def methods():
    config = M.standard_configs(tasks=2, shots=5)["MAML"]
    return [
        fewshot.Method("scratch", model=M.new_meta_gan(config, seed=1), steps=1),
        fewshot.Method(
            "context FOMAML",
            kind="context",
            model=new_context_gan(ContextConfig(rule="fomaml", width=8)),
            steps=2,
            role="meta-learner",
        ),
        fewshot.Method("real held-out (ceiling)", kind="ceiling", role="reference"),
        fewshot.Method("copy shots + augmentation", kind="copy", role="reference"),
        fewshot.Method("VAE", kind="vae", model=VAEFewShot(VAE(z_dim=8, width=8)), steps=2),
    ]


@pytest.fixture(scope="module")
def net(glyphs):
    torch.manual_seed(0)
    return FeatureNet(len(glyphs.seen_classes)).eval()


def test_generate_shapes_for_every_kind(glyphs, methods):
    episode = TaskSampler(glyphs, glyphs.unseen_classes, seed=0).sample(1, 3, 5, 10)
    for method in methods:
        images = fewshot.generate(method, episode.support[0], episode.query[0], 6, steps=2, seed=0)
        assert images.shape == (3, 6, 1, 28, 28) and images.abs().max() <= 1
    ceiling = fewshot.generate(methods[2], episode.support[0], episode.query[0], 6, steps=2, seed=0)
    assert torch.equal(ceiling, episode.query[0, :, :6])


def test_the_copy_baseline_is_shot_i_mod_k_augmented_from_the_seeds_augment_stream(glyphs, methods):
    shots = TaskSampler(glyphs, glyphs.unseen_classes, seed=0).sample(1, 3, 5).support[0]  # [3, 5, 1, 28, 28]
    copies = fewshot.generate(methods[3], shots, None, 7, steps=None, seed=4)
    repeats = shots[:, torch.arange(7) % 5].flatten(0, 1)
    assert torch.equal(copies, diff_augment(repeats, seeded_generator(4, "augment")).view(3, 7, 1, 28, 28))


@pytest.fixture
def drawn(monkeypatch):
    """The classes of every episode a TaskSampler draws during the test, recorded as they are drawn
    (in this process: ``$METAGAN_WORKERS=1`` keeps every job here, where the spy is)."""
    monkeypatch.setenv(WORKERS_ENV_VAR, "1")
    classes = []
    original = TaskSampler.sample

    def spy(self, *args, **kwargs):
        episode = original(self, *args, **kwargs)
        classes.append(episode.classes.flatten())
        return episode

    monkeypatch.setattr(TaskSampler, "sample", spy)
    return classes


def test_evaluation_draws_unseen_classes_only_and_scores_every_method(glyphs, methods, net, drawn):
    scores = fewshot.evaluate_seed(methods, glyphs, net, shots=5, steps=None, classes=4, generated_per_class=6, seed=0)
    accuracy = fewshot.downstream_seed(methods, glyphs, net, ways=5, shots=1, generated_per_class=2, episodes=2, seed=0)
    unseen = set(glyphs.unseen_classes.tolist())
    assert drawn and all(set(d.tolist()) <= unseen for d in drawn)
    assert set(scores) == {m.name for m in methods} | {"_real_diversity"}
    for name in (m.name for m in methods):
        assert set(scores[name]) == set(fewshot.METRICS)
    ceiling = scores["real held-out (ceiling)"]
    assert (
        ceiling["precision"] > 0.5 and ceiling["copy_score"] < E.COPY_FLAG
    )  # held-out real images: new instances, not flagged
    # per class, real images land on the class's own images; blank images on none of them
    assert ceiling["class_precision"] > 0.5 and ceiling["class_coverage"] > 0.5
    assert all(
        0 <= scores[name][m] <= 1
        for name in scores
        if name != "_real_diversity"
        for m in ("class_precision", "class_coverage")
    )
    # the shots themselves, copied: flagged (through the same feature network)
    episode = TaskSampler(glyphs, glyphs.unseen_classes, seed=3).sample(1, 1, 5, 10)
    shots, held_out = E.embed(net, episode.support[0, 0]), E.embed(net, episode.query[0, 0])
    assert E.copy_score(shots.repeat(4, 1), held_out, shots) == pytest.approx(15 / 5) and 15 / 5 > E.COPY_FLAG
    assert set(accuracy) == {"none", "scratch", "context FOMAML", "copy shots + augmentation", "VAE"}
    assert all(set(by_weight) == set(fewshot.MIX_WEIGHTS) for name, by_weight in accuracy.items() if name != "none")
    assert all(0 <= v <= 1 for by_weight in accuracy.values() for v in by_weight.values())
    # weight 0 ignores the generated images: every method's accuracy there is the real-shots-only accuracy
    assert all(by_weight[0.0] == accuracy["none"][0.0] for by_weight in accuracy.values())


def test_the_ceiling_is_scored_on_the_held_out_half_that_the_reference_half_is_not(glyphs, methods, net, monkeypatch):
    """The held-out images split in two disjoint halves: the first (``ceil(Q / 2)``) is every method's reference
    (prototypes, class FD, copy score), the second the ceiling's "generated" images. Spied on: the episode drawn and
    what the ceiling method is given."""
    monkeypatch.setenv(WORKERS_ENV_VAR, "1")
    episodes, given = [], []
    original_sample, original_generate = TaskSampler.sample, fewshot.generate

    def sample(self, *args, **kwargs):
        episodes.append(original_sample(self, *args, **kwargs))
        return episodes[-1]

    def generate(method, shots, ceiling, n, steps, seed):
        images = original_generate(method, shots, ceiling, n, steps, seed)
        given.append((method.kind, shots, ceiling, images))
        return images

    monkeypatch.setattr(TaskSampler, "sample", sample)
    monkeypatch.setattr(fewshot, "generate", generate)
    scores = fewshot.evaluate_seed(
        [methods[2]], glyphs, net, shots=5, steps=None, classes=3, generated_per_class=6, seed=0
    )
    (episode,) = episodes
    queries = episode.query.shape[2]
    assert queries == min(20 - 5, fewshot.MAX_HELD_OUT)  # glyph classes hold 20 images
    half = (queries + 1) // 2
    ((kind, shots, ceiling, images),) = given
    assert kind == "ceiling" and torch.equal(shots, episode.support[0])
    assert torch.equal(ceiling, episode.query[0, :, half:]) and torch.equal(images, ceiling[:, :6])
    reference_rows, ceiling_rows = episode.query_index[0, :, :half], episode.query_index[0, :, half:]
    assert not set(reference_rows.flatten().tolist()) & set(ceiling_rows.flatten().tolist())
    expected = fewshot.method_scores(
        [E.embed(net, x) for x in images],
        [E.embed(net, r) for r in episode.query[0, :, :half]],
        [E.embed(net, s) for s in episode.support[0]],
        torch.stack([E.embed(net, r).mean(0) for r in episode.query[0, :, :half]]),
    )
    assert {k: v for k, v in scores[methods[2].name].items() if k != "diverged"} == expected


def test_downstream_labels_line_up_with_their_classes(monkeypatch, constant_classes):
    """Features that are the class's one-hot code: with the real shots only, every query is classified right (a
    query label order that did not match the prototypes' would score about 1 / ways)."""
    monkeypatch.setenv(WORKERS_ENV_VAR, "1")
    dataset = constant_classes([12] * 8, seen=3)

    class ClassCode(torch.nn.Module):  # image of pixel value 30 c -> one-hot of c
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))

        def embed(self, images):
            codes = ((images[:, 0, 0, 0] + 1) * 127.5 / 30).round().long()
            return torch.nn.functional.one_hot(codes, 8).float()

    for ways, shots in ((5, 1), (3, 2)):
        accuracy = fewshot.downstream_seed(
            [], dataset, ClassCode(), ways=ways, shots=shots, generated_per_class=2, episodes=4, seed=0
        )
        assert accuracy == {"none": {0.0: 1.0}}


def test_pretrained_gan_is_notebook_02s_long_run_per_profile():
    for profile in profiles.PROFILE_NAMES:
        path, config = fewshot.pretrained_gan_job(profile, "glyphs", seed=3)
        long_steps = profiles.settings("02", profile).long_steps
        assert (config.steps, config.architecture, config.loss) == (long_steps, "conv", "nonsaturating")
        assert path == profiles.artifact_path(profile, "glyphs", 3, "02_conv_gan_long")
    assert fewshot.pretrained_gan_job("smoke", "glyphs")[1] != fewshot.pretrained_gan_job("full", "glyphs")[1]


def test_pretraining_and_meta_training_see_seen_classes_only(glyphs, monkeypatch, tmp_path):
    captured = {}

    def fake_train_or_load(path, images, config, **kwargs):
        captured["images"] = images
        return "run"

    monkeypatch.setattr(method_module, "train_or_load", fake_train_or_load)
    assert fewshot.pretrain_on_seen(glyphs, GANConfig(steps=1), tmp_path / "gan.pt") == "run"
    seen_images, _ = glyphs.subset(glyphs.seen_classes)
    assert torch.equal(captured["images"], seen_images)
    unseen_images, _ = glyphs.subset(glyphs.unseen_classes)
    assert len(captured["images"]) + len(unseen_images) == len(glyphs.images)
    # meta-training draws its tasks from a sampler over the seen classes
    sampler = TaskSampler(glyphs, glyphs.seen_classes, seed=0)
    drawn = []
    original = sampler.sample
    sampler.sample = lambda *a, **k: drawn.append(original(*a, **k)) or drawn[-1]
    M.MetaTrainer(M.new_meta_gan(M.standard_configs(tasks=2, shots=2)["FOMAML"].replace(queries=2)), sampler).train(
        2, progress=False
    )
    assert drawn and all(set(e.classes.flatten().tolist()) <= set(glyphs.seen_classes.tolist()) for e in drawn)


def fake_results():
    entry = lambda m, c=0.01: {"mean": m, "ci95": c, "n": 3}
    metrics = lambda fd, copy=1.0: {
        "class_frechet_distance": entry(fd),
        "class_fidelity": entry(1 - fd),
        "diversity": entry(0.1),
        "copy_score": entry(copy),
        "class_precision": entry(0.5),
        "class_coverage": entry(0.5),
        "frechet_distance": entry(fd),
        "precision": entry(0.5),
        "recall": entry(0.4),
        "diverged": entry(0.0),
    }
    rows = {
        "context MAML": metrics(0.2),
        "fine-tune pretrained GAN": metrics(0.5),
        "scratch": metrics(0.9),
        "copy shots + augmentation": metrics(0.1, copy=2.5),
        "_real_diversity": {"diversity": entry(0.2)},
    }
    roles = {
        "context MAML": ("context", "meta-learner", 3),
        "fine-tune pretrained GAN": ("adapt", "baseline", 20),
        "scratch": ("adapt", "baseline", 20),
        "copy shots + augmentation": ("copy", "reference", 0),
    }
    return {
        "dataset": "glyphs",
        "profile": "smoke",
        "settings": {"default_shots": 5, "seeds": [0, 1, 2], "classes": 5},
        "methods": {m: {"kind": k, "role": r, "steps": s} for m, (k, r, s) in roles.items()},
        "by_shots": {"5": rows},
        "by_steps": {"20": rows},
        "downstream": {
            "20-way 1-shot": {
                "none": entry(0.5),
                "context MAML": {
                    **entry(0.7),
                    "weight": 0.25,
                    "by_weight": {"0.0": entry(0.5), "0.25": entry(0.7), "0.5": entry(0.3)},
                },
            }
        },
    }


DATASETS_SHOWN = ("glyphs", "omniglot", "digits")  # the README's order


def test_results_files_table_verdicts_and_readme(tmp_path):
    results = fake_results()
    path = report.write_results(results, tmp_path)
    assert path.name == "few_shot.json" and json.loads(path.read_text()) == results
    table = path.with_suffix(".md").read_text()
    assert "| context MAML | 3 | 0.2 ± 0.01 |" in table and "+ context MAML" in table and "(w=0.25)" in table
    verdicts = report.verdicts(results)
    assert any("class_frechet_distance: best context MAML" in v and "beyond the 95% intervals" in v for v in verdicts)
    assert any(
        v.startswith("vs fine-tune pretrained GAN (20 steps): class FD: context MAML (0.2 ± 0.01) beats fine-tune")
        for v in verdicts
    )
    assert any("Flagged as copying the shots: copy shots + augmentation" in v for v in verdicts)
    assert not any("Flagged" in v and "context MAML" in v for v in verdicts)
    assert any("help: context MAML" in v for v in verdicts)
    assert any(
        "Unselected weights" in v
        and "above real shots only beyond the intervals: none; below: context MAML at w=0.5" in v
        for v in verdicts
    )
    results["by_shots"]["5"]["context MAML"]["copy_score"] = {"mean": 1.4, "ci95": 0.2, "n": 3}
    assert any(v.startswith("Near the copy flag: context MAML") for v in report.verdicts(results))
    readme = tmp_path / "README.md"
    readme.write_text(
        "intro\n<!-- results:start -->\nold\n<!-- results:end -->\n"
        "<!-- artifacts:start -->\nstale\n<!-- artifacts:end -->\nend\n"
    )
    for dataset in ("digits", "omniglot"):  # a dataset other than the default folds, Omniglot's before the rest
        report.write_results({**fake_results(), "dataset": dataset}, tmp_path)
    report.update_readme(readme, tmp_path)
    text = readme.read_text()
    assert "old" not in text and "| context MAML |" in text and text.endswith("end\n")
    glyphs, omniglot, digits = (text.index(f"(from `{report.results_path(tmp_path, d).name}`)") for d in DATASETS_SHOWN)
    assert glyphs < omniglot < digits
    assert text.count("<details>") == text.count("</details>") == 2 and text.index("<details>") > glyphs
    assert "<summary><b>omniglot</b>" in text and "<summary><b>digits</b>" in text
    assert "stale" not in text and "| file | kB |" in text
    assert report.results_path(tmp_path, "omniglot").name == "few_shot_omniglot.json"


def test_a_learner_within_a_baselines_compute_is_compared_with_that_baseline():
    results = fake_results()
    assert not any(v.startswith("Within") for v in report.verdicts(results))  # no method sets compute_within
    entry = lambda m: {"mean": m, "ci95": 0.01, "n": 3}
    results["by_shots"]["5"]["context MAML, cheaper"] = {
        **results["by_shots"]["5"]["context MAML"],
        "class_frechet_distance": entry(0.7),
        "class_fidelity": entry(0.3),
    }
    results["methods"]["context MAML, cheaper"] = {
        "kind": "context",
        "role": "meta-learner",
        "steps": 2,
        "compute_within": "adapt",
    }
    within = [v for v in report.verdicts(results) if v.startswith("Within")]
    assert within == [  # each baseline of that kind, the per-class metrics compared at 95%
        "Within fine-tune pretrained GAN's adaptation compute (2 steps against 20; tools/adaptation_compute.py): "
        "class FD: fine-tune pretrained GAN (0.5 ± 0.01) beats context MAML, cheaper (0.7 ± 0.01) beyond the 95% "
        "intervals; class fidelity: fine-tune pretrained GAN (0.5 ± 0.01) beats context MAML, cheaper (0.3 ± 0.01) "
        "beyond the 95% intervals; diversity 0.50x vs 0.50x that of real images; copy score 1 ± 0.01 vs 1 ± 0.01.",
        "Within scratch's adaptation compute (2 steps against 20; tools/adaptation_compute.py): "
        "class FD: context MAML, cheaper (0.7 ± 0.01) beats scratch (0.9 ± 0.01) beyond the 95% intervals; "
        "class fidelity: context MAML, cheaper (0.3 ± 0.01) beats scratch (0.1 ± 0.01) beyond the 95% intervals; "
        "diversity 0.50x vs 0.50x that of real images; copy score 1 ± 0.01 vs 1 ± 0.01.",
    ]
    assert any(v.startswith("Best meta-learner: context MAML,") for v in report.verdicts(results))  # FD 0.2 < 0.7


def test_the_metric_list_enters_the_keys_of_evaluations_that_store_every_metric(glyphs, net, tmp_path, monkeypatch):
    copy = fewshot.Method("copy", kind="copy", role="reference")
    key = lambda kind: fewshot.evaluation_key(kind, [copy], glyphs, [net], {})
    assert key("benchmark")["metrics"] == key("sweep")["metrics"] == list(fewshot.METRICS)
    assert "metrics" not in key("setting")  # a setting stores one class FD per grid value, whatever the metric list
    # an evaluation stored before a metric was added is computed again, not loaded without it
    builds = []
    build = lambda: builds.append(1) or {"scores": len(fewshot.METRICS)}
    path = tmp_path / "evaluation.pt"
    plain = dict(to_payload=lambda x: x, from_payload=lambda x: x)
    load_or_build(path, key("benchmark"), build, **plain)
    assert load_or_build(path, key("benchmark"), build, **plain) and len(builds) == 1  # the same list: loaded
    monkeypatch.setattr(fewshot, "METRICS", (*fewshot.METRICS, "a new metric"))
    assert (
        load_or_build(path, key("benchmark"), build, **plain) == {"scores": len(fewshot.METRICS)} and len(builds) == 2
    )


def test_compute_within_enters_the_evaluation_key_only_where_set(glyphs, net):
    plain = fewshot.Method("copy", kind="copy", role="reference")
    within = fewshot.Method("copy", kind="copy", role="reference", compute_within="invert")
    key = lambda m: fewshot.evaluation_key("benchmark", [m], glyphs, [net], {})
    assert key(plain)["methods"] == [["copy", "copy", "reference", 0, content_hash(None)]]  # as before the field
    assert key(within)["methods"] == [["copy", "copy", "reference", 0, content_hash(None), "invert"]]


def test_diverged_images_become_blank_and_are_counted():
    images = torch.zeros(2, 3, 1, 28, 28)
    images[0, 1, 0, 5, 5] = float("nan")
    images[1, 2, 0, 0, 0] = float("inf")
    cleaned, share = fewshot.replace_diverged(images)
    assert share == pytest.approx(2 / 6) and torch.isfinite(cleaned).all()
    assert (cleaned[0, 1] == -1).all() and (cleaned[0, 0] == 0).all()


def test_verdicts_flag_every_diverged_method_and_only_those():
    results = fake_results()
    assert not any(v.startswith("Caveat") for v in report.verdicts(results))
    results["by_shots"]["5"]["fine-tune pretrained GAN"]["diverged"] = {"mean": 0.5, "ci95": 0.1, "n": 3}
    results["by_shots"]["5"]["context MAML"]["diverged"] = {"mean": 0.25, "ci95": 0.1, "n": 3}
    caveats = [v for v in report.verdicts(results) if v.startswith("Caveat")]
    assert len(caveats) == 2
    assert caveats[0].startswith("Caveat: context MAML diverged on 25%")
    assert caveats[1].startswith("Caveat: fine-tune pretrained GAN diverged on 50%")


def test_scores_over_seeds_summarise_each_seeds_evaluation(glyphs, methods, net):
    references = methods[2:4]  # the ceiling and the copied shots: no training, so the test is quick
    budget = dict(shots=5, steps=None, classes=3, generated_per_class=4)
    runs = [fewshot.evaluate_seed(references, glyphs, net, seed=seed, **budget) for seed in (0, 1)]
    summary = fewshot.scores_over_seeds(references, glyphs, net, [0, 1], **budget)
    assert summary.keys() == runs[0].keys()
    for name, metrics in runs[0].items():
        for metric in metrics:
            expected = E.mean_confidence_interval([run[name][metric] for run in runs])
            assert summary[name][metric].mean == pytest.approx(expected.mean)
            assert summary[name][metric].half_width == pytest.approx(expected.half_width, nan_ok=True)
    assert runs[0] != runs[1]  # the seeds draw different tasks


def test_setting_selection_uses_seen_classes_only(glyphs, net, drawn):
    config = M.standard_configs()["MAML"]
    grid = [0.05, 0.01, 0.001]
    best, scores = fewshot.select_setting(
        lambda lr: fewshot.Method("scratch", model=M.new_meta_gan(config.replace(inner_lr=lr), seed=1), steps=1),
        glyphs,
        net,
        grid,
        shots=2,
        classes=3,
        generated_per_class=4,
    )
    # each score is the validation metric of an ordinary evaluation on seen classes; lower class FD wins
    check = fewshot.evaluate_seed(
        [fewshot.Method("scratch", model=M.new_meta_gan(config.replace(inner_lr=0.01), seed=1), steps=1)],
        glyphs, net, shots=2, steps=None, classes=3, generated_per_class=4, seed=0, class_pool=glyphs.seen_classes,
    )  # fmt: skip
    assert scores[0.01] == check["scratch"]["class_frechet_distance"]
    assert best == min(grid, key=scores.get)
    assert drawn and all(set(d.tolist()) <= set(glyphs.seen_classes.tolist()) for d in drawn)
    assert fewshot.inside_grid(0.01, grid) and not fewshot.inside_grid(0.05, grid)


def test_setting_selection_takes_the_lowest_distance_or_the_highest_fidelity(glyphs, net, monkeypatch):
    """The direction of each metric: lower is better for the Fréchet distances, higher for the others (the scores are
    stubbed, one per grid value, in the grid's order)."""
    fidelity = {0.1: 0.5, 0.2: 0.9, 0.4: 0.7}
    distance = {0.1: 0.3, 0.2: 0.2, 0.4: 0.1}
    stub = [{"copy": {"class_fidelity": fidelity[v], "class_frechet_distance": distance[v]}} for v in fidelity]
    monkeypatch.setattr(fewshot, "parallel_calls", lambda calls, device: stub)
    select = lambda metric: fewshot.select_setting(
        lambda value: fewshot.Method("copy", kind="copy"), glyphs, net, list(fidelity), shots=1, classes=2,
        generated_per_class=2, metric=metric,
    )  # fmt: skip
    assert select("class_fidelity") == (0.2, fidelity)
    assert select("class_frechet_distance") == (0.4, distance)


def test_mixing_weights_prefer_the_real_shots_on_ties():
    rounding_tie = {"a": {0.0: 0.9860000014, 0.25: 0.986, 0.5: 0.9860000074}}  # float rounding is not a difference
    assert fewshot.choose_mix_weights(rounding_tie) == {"a": 0.0}
    assert fewshot.choose_mix_weights({"a": {0.0: 0.9, 0.25: 0.9, 0.5: 0.8}, "b": {0.0: 0.5, 0.25: 0.6, 0.5: 0.7}}) == {
        "a": 0.0,
        "b": 0.5,
    }


def test_method_kinds_and_roles_are_checked():
    with pytest.raises(ValueError, match="Unknown method kind 'gan'"):
        fewshot.Method("x", kind="gan")
    with pytest.raises(ValueError, match="needs a model"):
        fewshot.Method("x", kind="context")
    with pytest.raises(ValueError, match="Unknown role"):
        fewshot.Method("x", kind="copy", role="winner")


def test_benchmark_runs_every_setting_and_picks_weights_on_seen_classes(monkeypatch, glyphs, net):
    monkeypatch.setenv(WORKERS_ENV_VAR, "1")  # the fakes below live in this process only
    calls, pools, classifiers = [], [], []
    classifier = ProtoNet()

    def fake_evaluate(methods, dataset, features, *, shots, steps, seed, **kwargs):
        assert features is net  # metrics always use the feature network
        calls.append((shots, steps, seed))
        return {"MAML": {"class_frechet_distance": float(shots + (steps or 0) + seed)}}

    def fake_downstream(methods, dataset, features, *, seed, class_pool=None, **kwargs):
        pools.append(class_pool)
        classifiers.append(features)
        if class_pool is not None:  # validation: weight 0.25 is best
            return {"none": {0.0: 0.5}, "MAML": {0.0: 0.5, 0.25: 0.6, 0.5: 0.4}}
        return {"none": {0.0: 0.5 + 0.01 * seed}, "MAML": {0.0: 0.5, 0.25: 0.7 + 0.01 * seed, 0.5: 0.1}}

    monkeypatch.setattr(fewshot, "evaluate_seed", fake_evaluate)
    monkeypatch.setattr(fewshot, "downstream_seed", fake_downstream)
    results = fewshot.run_benchmark(
        [],
        glyphs,
        net,
        seeds=[0, 1],
        shot_counts=[1, 5],
        step_counts=[0, 20],
        default_shots=5,
        classes=2,
        generated_per_class=2,
        downstream_episodes=1,
        classifier=classifier,
    )
    assert classifiers and all(c is classifier for c in classifiers)
    assert results["downstream_classifier"] == "ProtoNet"
    assert sorted(calls, key=str) == sorted(
        [(1, None, 0), (1, None, 1), (5, None, 0), (5, None, 1), (5, 0, 0), (5, 0, 1), (5, 20, 0), (5, 20, 1)], key=str
    )
    assert results["by_steps"]["0"]["MAML"]["class_frechet_distance"]["mean"] == pytest.approx(5.5)
    assert sum(p is not None for p in pools) == 2 and all(
        torch.equal(p, glyphs.seen_classes) for p in pools if p is not None
    )
    assert set(results["downstream"]) == {"5-way 5-shot", "20-way 1-shot"}
    assert results["downstream"]["20-way 1-shot"]["MAML"]["weight"] == 0.25
    assert results["downstream"]["20-way 1-shot"]["MAML"]["mean"] == pytest.approx(0.705)
    assert results["downstream"]["20-way 1-shot"]["MAML"]["by_weight"]["0.5"]["mean"] == pytest.approx(
        0.1
    )  # reported, not chosen
    assert results["downstream_validation"]["20-way 1-shot"]["MAML"] == {"0.0": 0.5, "0.25": 0.6, "0.5": 0.4}
    assert results["dataset"] == glyphs.name and results["settings"]["seeds"] == [0, 1]
    assert results["settings"]["default_shots"] == 5 and results["settings"]["classes"] == 2


@pytest.mark.slow  # spawns processes
def test_benchmark_in_worker_processes_equals_the_benchmark_in_this_process(glyphs, methods, net, monkeypatch):
    budget = dict(
        seeds=[0, 1],
        shot_counts=[1, 2],
        step_counts=[0, 1],
        default_shots=2,
        classes=3,
        generated_per_class=4,
        downstream_episodes=1,
    )
    monkeypatch.setenv(WORKERS_ENV_VAR, "1")
    with limited_threads(max(1, torch.get_num_threads() // 2)):  # each of 2 workers' threads: sums in the same order
        in_process = fewshot.run_benchmark(methods, glyphs, net, **budget)
    monkeypatch.setenv(WORKERS_ENV_VAR, "2")
    in_workers = fewshot.run_benchmark(methods, glyphs, net, **budget)
    flat = lambda tree: {k: v for k, v in leaves(tree)}
    expected, got = flat(in_process), flat(in_workers)
    assert expected.keys() == got.keys() and len(expected) > 100
    for key, value in expected.items():
        assert got[key] == value, key


def test_the_step_sweep_takes_own_budget_scores_from_the_shots_sweep_bit_for_bit(glyphs, methods, net, monkeypatch):
    budget = dict(
        seeds=[0, 1],
        shot_counts=[2],
        step_counts=[0, 1, 2],
        default_shots=2,
        classes=3,
        generated_per_class=4,
        downstream_episodes=1,
    )
    monkeypatch.setenv(WORKERS_ENV_VAR, "1")
    scored, evaluate = [], fewshot.evaluate_seed
    monkeypatch.setattr(
        fewshot,
        "evaluate_seed",
        lambda ms, *a, **k: scored.append((k["steps"], {m.name for m in ms})) or evaluate(ms, *a, **k),
    )
    reused = fewshot.run_benchmark(methods, glyphs, net, **budget)
    skipped = {steps: {m.name for m in methods} - names for steps, names in scored}
    # scratch's budget is 1 step, the context learner's and the VAE's 2; the references adapt nothing
    references = {"real held-out (ceiling)", "copy shots + augmentation"}
    assert skipped == {
        None: set(),
        0: references,
        1: references | {"scratch"},
        2: references | {"context FOMAML", "VAE"},
    }
    monkeypatch.setattr(
        fewshot, "same_as_own_budget", lambda method, steps: False
    )  # score everything at every step count
    everything = fewshot.run_benchmark(methods, glyphs, net, **budget)
    assert reused == everything
    assert list(reused["by_steps"]["1"]) == list(reused["by_shots"]["2"])  # the methods in the same order


def leaves(tree, prefix=()):
    """``(path, number)`` for every number in a nested dict."""
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from leaves(value, prefix + (key,))
        else:
            yield prefix + (key,), value


def test_a_sweep_repeats_the_evaluation_of_each_value_and_is_cached_under_its_grids(glyphs, net, tmp_path, monkeypatch):
    monkeypatch.setenv(WORKERS_ENV_VAR, "1")  # in this process, on its threads, as the loop below: equal, not rounded
    model = new_context_gan(ContextConfig(rule="fomaml", width=8))
    scaled = lambda s: fewshot.Method(f"context x{s:g}", kind="context-scaled", model=ScaledSampling(model, s), steps=1)
    budget = dict(shots=5, classes=3, generated_per_class=4)
    sweeps = {"context": (scaled, [1.0, 3.0])}
    scores = fewshot.sweep_scores(sweeps, glyphs, net, [0, 1], **budget)
    plain = fewshot.Method("context", kind="context", model=model, steps=1)
    table = fewshot.scores_over_seeds([plain], glyphs, net, [0, 1], steps=None, **budget)
    for metric, estimate in table["context"].items():  # scale 1 is the plain method's row, on the same tasks
        assert scores["context"][1.0][metric]["mean"] == pytest.approx(estimate.mean)
    assert scores["_real_diversity"]["diversity"]["mean"] == pytest.approx(table["_real_diversity"]["diversity"].mean)
    assert scores["context"][3.0]["diversity"]["mean"] != scores["context"][1.0]["diversity"]["mean"]
    path = tmp_path / "sweeps.pt"
    assert fewshot.sweep_scores_or_load(path, sweeps, glyphs, net, [0, 1], **budget) == scores
    with monkeypatch.context() as patch:  # the stored sweep is loaded, not recomputed
        patch.setattr(fewshot, "sweep_scores", lambda *args, **kwargs: pytest.fail("recomputed a stored sweep"))
        assert fewshot.sweep_scores_or_load(path, sweeps, glyphs, net, [0, 1], **budget) == scores
    narrower = fewshot.sweep_scores_or_load(path, {"context": (scaled, [1.0])}, glyphs, net, [0, 1], **budget)
    assert list(narrower["context"]) == [1.0]  # another grid is another key: recomputed, not the stored sweep
    with pytest.raises(ValueError, match="its own name"):
        fewshot.sweep_scores({"a": (lambda s: plain, [1.0, 2.0])}, glyphs, net, [0], **budget)


def test_table_scores_repeat_the_plain_loop_and_are_cached_under_their_scoring_network(
    glyphs, net, tmp_path, monkeypatch
):
    monkeypatch.setenv(WORKERS_ENV_VAR, "1")  # in this process, on its threads, as the loop below: equal, not rounded
    model = new_context_gan(ContextConfig(rule="fomaml", width=8))
    methods = [
        fewshot.Method("context", kind="context", model=model, steps=1),
        fewshot.Method("copy shots + augmentation", kind="copy", role="reference"),
    ]
    budget = dict(shots=5, classes=3, generated_per_class=4)
    scores = fewshot.table_scores(methods, glyphs, net, [0, 1], **budget)
    loop = fewshot.scores_over_seeds(methods, glyphs, net, [0, 1], steps=None, **budget)  # in this process, in turn
    assert set(scores) == {"context", "copy shots + augmentation", "_real_diversity"}
    for name, row in loop.items():
        for metric, estimate in row.items():
            assert scores[name][metric]["mean"] == estimate.mean
            assert scores[name][metric]["ci95"] == estimate.half_width
    path = tmp_path / "scores.pt"
    assert fewshot.table_scores_or_load(path, methods, glyphs, net, [0, 1], **budget) == scores
    with monkeypatch.context() as patch:  # stored: loaded, not recomputed
        patch.setattr(fewshot, "table_scores", lambda *args, **kwargs: pytest.fail("recomputed stored scores"))
        assert fewshot.table_scores_or_load(path, methods, glyphs, net, [0, 1], **budget) == scores
    other = copy.deepcopy(net)
    with torch.no_grad():
        next(other.parameters()).add_(0.1)
    rescored = fewshot.table_scores_or_load(path, methods, glyphs, other, [0, 1], **budget)  # another net: another key
    assert rescored["context"]["class_frechet_distance"] != scores["context"]["class_frechet_distance"]


def test_rescored_lines_say_whether_two_feature_spaces_give_the_same_verdict():
    value = lambda mean, ci=0.01: {"mean": mean, "ci95": ci, "n": 5}
    row = lambda fidelity, fd: {"class_fidelity": value(fidelity), "class_frechet_distance": value(fd)}
    table = {"learner": row(0.9, 0.10), "baseline": row(0.7, 0.10)}
    rescored = {"learner": row(0.6, 12.0), "baseline": row(0.8, 12.5)}  # another network's units: compared within it
    fd, fidelity = report.rescored_lines(table, rescored, "learner", ["baseline"], "other net")
    assert fd.startswith(
        "class FD: feature network: learner (0.1 ± 0.01) and baseline (0.1 ± 0.01) do not differ at 95%"
    )
    assert "other net: learner (12 ± 0.01) beats baseline (12.5 ± 0.01) beyond the 95% intervals" in fd
    assert fd.endswith("(ANOTHER VERDICT)")
    assert "feature network: learner (0.9 ± 0.01) beats baseline (0.7 ± 0.01)" in fidelity
    assert "other net: baseline (0.8 ± 0.01) beats learner (0.6 ± 0.01)" in fidelity
    assert fidelity.endswith("(ANOTHER VERDICT)")
    rescored["learner"] = row(0.95, 12.5)
    assert all(
        line.endswith("(the same verdict)")
        for line in report.rescored_lines(table, rescored, "learner", ["baseline"], "x")
    )


def sweep_entry(fidelity, diversity, copy, fd=0.2, coverage=0.5):
    value = lambda mean, ci=0.01: {"mean": mean, "ci95": ci, "n": 5}
    return {
        "class_coverage": value(coverage, 0.05),
        "class_fidelity": value(fidelity, 0.05),
        "diversity": value(diversity),
        "copy_score": value(copy),
        "class_frechet_distance": value(fd),
    }


def test_sweep_lines_compare_at_the_nearest_diversity_and_skip_copies_and_low_diversity():
    sweeps = {
        "learner": {
            0.5: sweep_entry(0.95, 0.3, 1.2),
            1.0: sweep_entry(0.85, 0.45, 1.3, coverage=0.7),
            2.0: sweep_entry(0.6, 0.6, 1.2),
        },
        "baseline": {0.0: sweep_entry(0.8, 0.55, 2.2, fd=0.15), 1.6: sweep_entry(0.25, 0.9, 1.1, fd=0.5, coverage=0.6)},
        "_real_diversity": {"diversity": {"mean": 0.5, "ci95": 0.01, "n": 5}},
    }
    lines = report.sweep_lines(sweeps, "learner", "baseline", 0.0)
    assert lines[0].startswith("learner: 0.5: fidelity 0.95 ± 0.05, 0.60x real diversity, coverage 0.50, copy 1.20;")
    assert "0: fidelity 0.8 ± 0.05, 1.10x real diversity, coverage 0.50, copy 2.20 (flagged)" in lines[1]
    assert lines[2] == "Lowest diversity on baseline's grid: 1.10x real (at 0)."
    # the nearest learner point to 1.10x is 2 (1.20x, above it), not 1 (0.90x): compared at 95%
    assert "learner at 2 is nearest (1.200x, no lower than it)" in lines[3]
    assert "class fidelity: baseline (0.8 ± 0.05) beats learner at 2 (0.6 ± 0.05)" in lines[3]
    assert "class FD: baseline (0.15 ± 0.01) beats learner at 2 (0.2 ± 0.01)" in lines[3]
    # each method's point of highest coverage, compared at 95% (0.7 ± 0.05 against 0.6 ± 0.05: the intervals touch)
    assert lines[4] == (
        "Highest class coverage of the held-out images: learner at 1 (0.90x real diversity) (0.7 ± 0.05) and "
        "baseline at 1.6 (1.80x real diversity) (0.6 ± 0.05) do not differ at 95%."
    )
    # 0.5 is below 0.8x real diversity, so the learner's best kept point is 1; the baseline's flagged 0 is skipped
    assert lines[5].endswith("at 1: fidelity 0.85 ± 0.05, 0.90x real diversity, coverage 0.70, copy 1.30")
    assert lines[6].endswith("at 1.6: fidelity 0.25 ± 0.05, 1.80x real diversity, coverage 0.60, copy 1.10")
    sweeps["learner"][1.0] = sweep_entry(0.85, 0.45, 1.3, coverage=0.8)
    assert (
        "learner at 1 (0.90x real diversity) (0.8 ± 0.05) beats baseline at 1.6"
        in report.sweep_lines(sweeps, "learner", "baseline", 0.0)[4]
    )
    sweeps["baseline"][1.6] = sweep_entry(0.25, 0.9, 1.7)
    assert report.sweep_lines(sweeps, "learner", "baseline", 0.0)[6] == (
        "baseline: no point is not flagged as copying, at least 0.8x real diversity."
    )


def test_sweep_lines_add_the_least_diverse_point_above_when_the_nearest_is_below():
    sweeps = {
        "learner": {
            1.0: sweep_entry(0.85, 0.45, 1.3),
            2.0: sweep_entry(0.7, 0.54, 1.2),
            3.0: sweep_entry(0.5, 0.7, 1.1),
        },
        "baseline": {0.1: sweep_entry(0.75, 0.55, 2.2)},
        "_real_diversity": {"diversity": {"mean": 0.5, "ci95": 0.01, "n": 5}},
    }
    lines = report.sweep_lines(sweeps, "learner", "baseline", 0.1)
    assert "learner at 2 is nearest (1.080x, below it): class FD: learner at 2 (0.2 ± 0.01) and baseline" in lines[3]
    assert "class fidelity: learner at 2 (0.7 ± 0.05) and baseline (0.75 ± 0.05) do not differ at 95%" in lines[3]
    assert "learner at 3 is the least diverse point above (1.400x, no lower than it)" in lines[4]
    assert "class fidelity: baseline (0.75 ± 0.05) beats learner at 3 (0.5 ± 0.05)" in lines[4]
    del sweeps["learner"][3.0]
    assert report.sweep_lines(sweeps, "learner", "baseline", 0.1)[4] == (
        "At baseline's diversity (0.1, 1.100x real), no learner point is as diverse."
    )


def test_method_scores_are_per_class_metrics_with_the_real_and_generated_features_in_order():
    """Two tight classes; each class's samples: 2 next to its reference images, 4 far off (towards class 1's side)."""
    g = torch.Generator().manual_seed(0)
    reference = [torch.randn(8, 4, generator=g) * 0.1 + c for c in range(2)]
    fake = [torch.cat([r[:2] + 0.01, torch.randn(4, 4, generator=g) * 3 + 10]) for r in reference]
    shots = [torch.randn(3, 4, generator=g) * 0.1 + c for c in range(2)]
    prototypes = torch.stack([r.mean(0) for r in reference])
    scores = fewshot.method_scores(fake, reference, shots, prototypes)
    # closed forms: 2 of each class's 6 samples lie in its manifold; the far ones are all nearest class 1's prototype
    assert scores["class_precision"] == pytest.approx(2 / 6)
    assert scores["class_fidelity"] == pytest.approx((2 + 6) / 12)
    per_class = lambda fn: sum(fn(f, r, s) for f, r, s in zip(fake, reference, shots)) / 2
    assert scores["class_coverage"] == pytest.approx(per_class(lambda f, r, s: E.coverage(r, f)))
    assert scores["class_coverage"] != pytest.approx(per_class(lambda f, r, s: E.coverage(f, r)))  # order matters
    assert scores["copy_score"] == pytest.approx(per_class(E.copy_score))
    assert scores["diversity"] == pytest.approx(per_class(lambda f, r, s: E.mean_pairwise_distance(f)))
    assert scores["class_frechet_distance"] == pytest.approx(per_class(lambda f, r, s: E.frechet_distance(r, f)))
    pooled = E.precision_recall(torch.cat(reference), torch.cat(fake))
    assert (scores["precision"], scores["recall"]) == pytest.approx(pooled) and pooled[0] != pytest.approx(pooled[1])


def test_mixed_prototypes_move_with_the_weight_of_the_generated_images():
    """1-D: real shots of class 0 at 0, of class 1 at 2; a class-1 query at 1.2. Generated class-0 images at 1.1 pull
    class 0's prototype to (1 - w) * 0 + w * 1.1, which takes the query once it is nearer than class 1's (0.8 away)."""
    real = torch.tensor([[[0.0]], [[2.0]]])  # [N=2, K=1, d=1]
    extra = torch.tensor([[[1.1]], [[2.0]]])
    query, labels = torch.tensor([[1.2]]), torch.tensor([1])
    accuracy = {w: fewshot.mixed_prototype_accuracy(real, extra, query, labels, w) for w in (0.0, 0.25, 0.5, 1.0)}
    assert accuracy == {0.0: 1.0, 0.25: 1.0, 0.5: 0.0, 1.0: 0.0}  # prototype 0 at 0, 0.275, 0.55, 1.1


def test_a_method_refuses_a_model_of_another_kind_and_the_ceiling_refuses_more_images_than_it_holds(glyphs):
    meta = M.new_meta_gan(M.standard_configs(tasks=2, shots=5)["MAML"], seed=0)
    with pytest.raises(TypeError, match=r"kind 'context' needs a ContextMetaGAN as its model, got MetaGAN"):
        fewshot.Method("x", kind="context", model=meta)
    with pytest.raises(TypeError, match=r"kind 'invert' needs a LatentInversion as its model, got object"):
        fewshot.Method("x", kind="invert", model=object())
    ceiling_method = fewshot.Method("real", kind="ceiling", role="reference")
    shots, held_out = torch.zeros(2, 3, 1, 28, 28), torch.zeros(2, 4, 1, 28, 28)
    assert fewshot.generate(ceiling_method, shots, held_out, 4, None, 0).shape == (2, 4, 1, 28, 28)
    with pytest.raises(ValueError, match=r"^n=5 is not accepted: n must be at most the 4 held-out images"):
        fewshot.generate(ceiling_method, shots, held_out, 5, None, 0)  # it returned 4 images per class silently
    with pytest.raises(ValueError, match="needs held-out real images"):
        fewshot.generate(ceiling_method, shots, None, 4, None, 0)


def test_downstream_help_and_hurt_need_the_difference_beyond_both_intervals():
    """A generator above the real shots by less than the two half-widths together neither helps nor hurts; beyond
    them it helps (above) or hurts (below); the same rule for the unselected weights."""
    base = {"mean": 0.70, "ci95": 0.02, "n": 5}
    entry = lambda mean, by_weight=None: {
        "mean": mean,
        "ci95": 0.02,
        "n": 5,
        "weight": 0.25,
        "by_weight": by_weight or {},
    }
    downstream = {
        "20-way 1-shot": {
            "none": base,
            "inside": entry(0.73, {"0.5": {"mean": 0.739, "ci95": 0.02, "n": 5}}),  # +0.03, +0.039: inside 0.04
            "above": entry(0.75),  # +0.05 > 0.04
            "below": entry(0.65, {"0.5": {"mean": 0.75, "ci95": 0.02, "n": 5}}),  # -0.05; unselected +0.05
        }
    }
    chosen, unselected = report._downstream_lines(downstream)
    assert "help: above; hurt: below (beyond 95% intervals)" in chosen
    assert "above real shots only beyond the intervals: below at w=0.5; below: none." in unselected
