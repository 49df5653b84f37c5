import json

import pytest
import torch

from metagan_lib import fewshot
from metagan_lib import meta as M
from metagan_lib.evaluation import FeatureNet
from metagan_lib.runtime import WORKERS_ENV_VAR, limited_threads
from metagan_lib.tasks import TaskSampler
from metagan_lib.train import GANConfig


@pytest.fixture(scope="module")
def methods():
    config = M.standard_configs(tasks=2, shots=5)["MAML"]
    return [
        fewshot.Method("scratch", meta=M.new_meta_gan(config, seed=1)),
        fewshot.Method("real held-out (ceiling)", kind="ceiling"),
        fewshot.Method("copy shots + augmentation", kind="copy"),
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
    ceiling = fewshot.generate(methods[1], episode.support[0], episode.query[0], 6, steps=2, seed=0)
    assert torch.equal(ceiling, episode.query[0, :, :6])


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
    scores = fewshot.evaluate_seed(methods, glyphs, net, shots=5, steps=1, classes=4, generated_per_class=6, seed=0)
    accuracy = fewshot.downstream_seed(methods, glyphs, net, ways=5, shots=1, steps=1, generated_per_class=2, episodes=2, seed=0)
    unseen = set(glyphs.unseen_classes.tolist())
    assert drawn and all(set(d.tolist()) <= unseen for d in drawn)
    assert set(scores) == {m.name for m in methods} | {"_real_diversity"}
    for name in (m.name for m in methods):
        assert set(scores[name]) == set(fewshot.METRICS)
    ceiling = scores["real held-out (ceiling)"]
    assert ceiling["precision"] > 0.5 and 0.3 < ceiling["memorisation"] < 3.0  # real images are new, not copies
    assert set(accuracy) == {"none", "scratch", "copy shots + augmentation"}
    assert all(0 <= v <= 1 for v in accuracy.values())


def test_pretraining_and_meta_training_see_seen_classes_only(glyphs, monkeypatch, tmp_path):
    captured = {}

    def fake_train_or_load(path, images, config, **kwargs):
        captured["images"] = images
        return "run"

    monkeypatch.setattr(fewshot, "train_or_load", fake_train_or_load)
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
    M.MetaTrainer(M.new_meta_gan(M.standard_configs(tasks=2, shots=2)["FOMAML"].replace(queries=2)), sampler).train(2, progress=False)
    assert drawn and all(set(e.classes.flatten().tolist()) <= set(glyphs.seen_classes.tolist()) for e in drawn)


def fake_results():
    entry = lambda m, c=0.01: {"mean": m, "ci95": c, "n": 3}  # noqa: E731
    metrics = lambda fd: {"frechet_distance": entry(fd), "precision": entry(0.5), "recall": entry(0.4),  # noqa: E731
                          "diversity": entry(0.1), "class_fidelity": entry(0.3), "memorisation": entry(1.0), "diverged": entry(0.0)}
    rows = {"fine-tune pretrained GAN": metrics(0.5), "MAML": metrics(0.2), "scratch": metrics(0.9),
            "_real_diversity": {"diversity": entry(0.2)}}
    return {"dataset": "glyphs", "profile": "smoke",
            "settings": {"default_shots": 5, "default_steps": 20, "seeds": [0, 1, 2], "classes": 5},
            "by_shots": {"5": rows}, "by_steps": {"20": rows},
            "downstream": {"5-way 1-shot": {"none": entry(0.5), "MAML": entry(0.7)}}}


def test_results_files_table_verdicts_and_readme(tmp_path):
    results = fake_results()
    path = fewshot.write_results(results, tmp_path)
    assert path.name == "few_shot.json" and json.loads(path.read_text()) == results
    table = path.with_suffix(".md").read_text()
    assert "| MAML | 0.2 ± 0.01 |" in table and "+ MAML" in table
    verdicts = fewshot.verdicts(results)
    assert any("frechet_distance: best MAML" in v and "beyond the 95% intervals" in v for v in verdicts)
    assert any("MAML beats fine-tuning" in v for v in verdicts)
    assert any("help: MAML" in v for v in verdicts)
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:start -->\nold\n<!-- results:end -->\nend\n")
    fewshot.update_readme(readme, tmp_path)
    text = readme.read_text()
    assert "old" not in text and "| MAML |" in text and text.endswith("end\n")
    assert fewshot.results_path(tmp_path, "omniglot").name == "few_shot_omniglot.json"


def test_diverged_images_become_blank_and_are_counted():
    images = torch.zeros(2, 3, 1, 28, 28)
    images[0, 1, 0, 5, 5] = float("nan")
    images[1, 2, 0, 0, 0] = float("inf")
    cleaned, share = fewshot.replace_diverged(images)
    assert share == pytest.approx(2 / 6) and torch.isfinite(cleaned).all()
    assert (cleaned[0, 1] == -1).all() and (cleaned[0, 0] == 0).all()


def test_verdicts_flag_every_diverged_method_and_only_those():
    results = fake_results()
    assert not any(v.startswith("Caveat") for v in fewshot.verdicts(results))
    results["by_shots"]["5"]["fine-tune pretrained GAN"]["diverged"] = {"mean": 0.5, "ci95": 0.1, "n": 3}
    results["by_shots"]["5"]["MAML"]["diverged"] = {"mean": 0.25, "ci95": 0.1, "n": 3}
    caveats = [v for v in fewshot.verdicts(results) if v.startswith("Caveat")]
    assert len(caveats) == 2
    assert caveats[0].startswith("Caveat: fine-tune pretrained GAN diverged on 50%")
    assert caveats[1].startswith("Caveat: MAML diverged on 25%")


def test_step_size_selection_uses_seen_classes_only(glyphs, net, drawn):
    config = M.standard_configs()["MAML"]
    best, scores = fewshot.select_step_size(lambda lr: fewshot.Method("scratch", meta=M.new_meta_gan(config.replace(inner_lr=lr), seed=1)),
                                            glyphs, net, [0.05, 0.001], shots=2, steps=1, classes=3, generated_per_class=4)
    assert best in (0.05, 0.001) and scores[best] == min(scores.values())
    assert drawn and all(set(d.tolist()) <= set(glyphs.seen_classes.tolist()) for d in drawn)


def test_benchmark_measures_the_default_setting_once_and_reuses_it(monkeypatch, net):
    monkeypatch.setenv(WORKERS_ENV_VAR, "1")  # the fakes below live in this process only
    calls = []

    def fake_evaluate(methods, dataset, net, *, shots, steps, seed, **kwargs):
        calls.append((shots, steps, seed))
        return {"MAML": {"frechet_distance": float(shots + steps + seed)}}

    monkeypatch.setattr(fewshot, "evaluate_seed", fake_evaluate)
    monkeypatch.setattr(fewshot, "downstream_seed", lambda *a, seed, **k: {"none": 0.5 + 0.01 * seed})
    results = fewshot.run_benchmark([], None, net, seeds=[0, 1], shot_counts=[1, 5], step_counts=[0, 20], default_shots=5,
                                    default_steps=20, classes=2, generated_per_class=2, downstream_episodes=1)
    assert sorted(calls) == sorted([(1, 20, 0), (1, 20, 1), (5, 20, 0), (5, 20, 1), (5, 0, 0), (5, 0, 1)])
    assert results["by_steps"]["20"] == results["by_shots"]["5"]
    assert results["by_steps"]["0"]["MAML"]["frechet_distance"]["mean"] == pytest.approx(5.5)


def test_benchmark_in_worker_processes_equals_the_benchmark_in_this_process(glyphs, methods, net, monkeypatch):
    budget = dict(seeds=[0, 1], shot_counts=[1, 2], step_counts=[0, 1], default_shots=2, default_steps=1, classes=3,
                  generated_per_class=4, downstream_episodes=1)
    monkeypatch.setenv(WORKERS_ENV_VAR, "1")
    with limited_threads(1):  # a worker's thread count, so that sums run in the same order
        in_process = fewshot.run_benchmark(methods, glyphs, net, **budget)
    monkeypatch.setenv(WORKERS_ENV_VAR, "2")
    in_workers = fewshot.run_benchmark(methods, glyphs, net, **budget)
    flat = lambda tree: {k: v for k, v in leaves(tree)}  # noqa: E731
    expected, got = flat(in_process), flat(in_workers)
    assert expected.keys() == got.keys() and len(expected) > 100
    for key, value in expected.items():
        assert got[key] == value, key


def leaves(tree, prefix=()):
    """``(path, number)`` for every number in a nested dict."""
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from leaves(value, prefix + (key,))
        else:
            yield prefix + (key,), value
