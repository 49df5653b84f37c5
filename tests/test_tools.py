"""The command-line tools in ``tools/``: the validation split of ``validate_context.py`` and its argument errors;
``adaptation_compute.py``'s counts."""

import dataclasses
import importlib.util
import re
import sys

import pytest
import torch

from metagan_lib import bench, context, fewshot, methods
from metagan_lib.evaluation import FeatureNet
from metagan_lib.models import build_gan
from metagan_lib.paths import repo_root


def load_tool(name):
    spec = importlib.util.spec_from_file_location(name, repo_root() / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_validation_split_holds_out_seen_classes_only(strokes):
    tool = load_tool("validate_context")
    split = tool.validation_split(strokes, held_out=2)
    held_out, training = split.unseen_classes, split.seen_classes
    assert len(held_out) == 2 and len(training) == len(strokes.seen_classes) - 2
    assert not torch.isin(held_out, training).any()  # disjoint
    assert torch.equal(torch.cat([held_out, training]).sort().values, strokes.seen_classes)  # all seen, nothing else
    assert not torch.isin(strokes.unseen_classes, torch.cat([held_out, training])).any()  # unseen never touched
    assert torch.equal(tool.validation_split(strokes, held_out=2).unseen_classes, held_out)  # fixed seed


def test_the_final_test_uses_the_real_split(strokes):
    tool = load_tool("validate_context")
    assert tool.evaluation_split(strokes, held_out=40, test_unseen=True) is strokes  # the real unseen classes
    validation = tool.evaluation_split(strokes, held_out=2, test_unseen=False)
    assert torch.equal(validation.unseen_classes, tool.validation_split(strokes, held_out=2).unseen_classes)


def test_another_split_seed_holds_out_other_seen_classes(strokes):
    tool = load_tool("validate_context")
    split = lambda seed: tool.evaluation_split(strokes, held_out=3, test_unseen=False, split_seed=seed).unseen_classes
    splits = [split(seed) for seed in range(4)]
    assert all(torch.isin(held_out, strokes.seen_classes).all() for held_out in splits)  # seen classes only
    assert any(not torch.equal(splits[0], other) for other in splits[1:])  # 6 seen classes: 20 ways to hold out 3
    assert torch.equal(splits[0], tool.validation_split(strokes, held_out=3).unseen_classes)  # seed 0: the README's


def alphabet_strokes(strokes):
    """``strokes`` named like Omniglot: seen classes 0-2 of alphabet A, 3-5 of B; unseen 6-9 of C."""
    names = tuple(f"{'A' if c < 3 else 'B' if c < 6 else 'C'}/character{c:02d}" for c in range(10))
    return dataclasses.replace(strokes, name="omniglot", class_names=names)


def test_an_alphabet_split_holds_out_whole_seen_alphabets(strokes):
    tool = load_tool("validate_context")
    data = alphabet_strokes(strokes)
    split = tool.evaluation_split(data, held_out=2, test_unseen=False, alphabets=["B"])
    assert split.unseen_classes.tolist() == [3, 4, 5]  # every character of B, and only those
    assert split.seen_classes.tolist() == [0, 1, 2]  # meta-training keeps the other alphabet
    assert tool.evaluation_split(data, held_out=2, test_unseen=True, alphabets=["B"]) is data  # final test: real split


@pytest.mark.parametrize(
    "alphabets,message",
    [
        (["C"], "C not among the seen alphabets (A, B)"),  # an unseen alphabet is never held out for validation
        (["A", "B"], "leaves no class to meta-train on"),
    ],
)
def test_a_bad_alphabet_split_is_a_clear_error(strokes, alphabets, message):
    tool = load_tool("validate_context")
    with pytest.raises(ValueError, match=re.escape(message)):
        tool.alphabet_split(alphabet_strokes(strokes), alphabets)


def test_an_alphabet_split_needs_alphabets(strokes):
    tool = load_tool("validate_context")
    with pytest.raises(ValueError, match="strokes's classes belong to no alphabets"):
        tool.alphabet_split(strokes, ["A"])


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--held-out", "1"], "--held-out must lie between 2 and 5"),
        (["--held-out", "6"], "--held-out must lie between 2 and 5"),
        (["--meta-steps", "0"], "--meta-steps must be at least 1"),
        (["--ema-decay", "1.0"], "--ema-decay must lie between 0 and 1"),
        (["--adv-weight", "0.3", "-1"], "--adv-weight must be non-negative"),
        (["--blur", "0", "-0.5"], "--blur must be non-negative"),
        (["--warm-start", "yes", "--upsample", "nearest"], "use it with --upsample transposed"),
        (["--warm-start-steps", "0"], "--warm-start-steps must be at least 1"),
        (["--inner-steps", "3", "0"], "--inner-steps must be at least 1"),
        (["--warm-start", "yes", "--refine", "16"], "use it with --refine 0"),
        (["--refine", "0", "12"], "--refine takes 0 or multiples of 8"),
        (["--width", "32", "20"], "--width takes positive multiples of 8"),
        (["--warm-start", "yes", "--width", "48"], "use it with --width 32"),
        (["--test-steps", "5", "-1"], "--test-steps must be non-negative"),
        (["--inner-adv-weight", "0", "-1"], "--inner-adv-weight must be non-negative"),
        (["--inner-guide-weight", "0", "-1"], "--inner-guide-weight must be non-negative"),
        (["--outer-spread-weight", "-1", "--inner-guide-weight", "1"], "--outer-spread-weight must be non-negative"),
        (["--outer-spread-weight", "4"], "--outer-spread-weight > 0 measures spread in the guide network"),
        (["--guide-width", "12"], "--guide-width takes a positive multiple of 8"),
        (["--test-setting", "blur=1"], "KEY one of inner_samples, inner_lr, inner_adv_weight, inner_guide_weight"),
        (["--test-setting", "inner_samples=1.5"], "inner_samples takes an integer"),
        (["--test-setting", "inner_guide_weight=2"], "inner_guide_weight needs candidates trained with a guide"),
        (["--test-setting", "inner_lr=-1"], "inner_lr must be a finite number > 0"),
        (["--test-setting", "inner_lr=0"], "inner_lr must be a finite number > 0"),
        (
            ["--test-setting", "inner_guide_weight=0", "--inner-guide-weight", "1", "--outer-spread-weight", "1"],
            "--test-setting inner_guide_weight=0 drops the guide that --outer-spread-weight > 0",
        ),
        (["--test-setting", "inner_adv_weight=nan"], "inner_adv_weight must be a finite number >= 0"),
        (["--inner-lr", "nan"], "argument --inner-lr: 'nan' is not a finite number"),
        (["--blur", "inf"], "argument --blur: 'inf' is not a finite number"),
        (["--held-out-alphabets", "A"], "strokes's classes belong to no alphabets"),
        (["--held-out-alphabets", "A", "--test-unseen"], "drop --test-unseen and --split-seed"),
        (["--rotated-classes", "--warm-start", "yes", "--upsample", "transposed"], "use --warm-start no"),
        (["--select", "4", "1"], "--select takes ratios of at least 2"),
        (["--select", "2", "--select-by", "guide"], "--select-by guide and guide-novelty need candidates"),
        (["--select-by", "guide-novelty", "--inner-guide-weight", "1"], "give --select RATIO too"),
        (["--select", "2", "--select-spread", "-1"], "--select-spread takes spreads of at least 0"),
        (["--select-spread", "1", "--inner-guide-weight", "1"], "--select-spread names the spreads of --select"),
        (["--select", "2", "--select-spread", "1"], "--select-spread > 0 measures distances in the guide network"),
        (["--sample-scale", "2", "1"], "--sample-scale takes finite scales > 0 other than 1"),
        (["--sample-scale", "0"], "--sample-scale takes finite scales > 0 other than 1"),
        (["--sample-scale", "nan"], "argument --sample-scale: 'nan' is not a finite number"),
        (["--mix-shots", "0"], "--mix-shots takes finite temperatures > 0"),
        (["--mix-shots", "1", "inf"], "argument --mix-shots: 'inf' is not a finite number"),
        (["--meta-lr", "0.001", "0"], "--meta-lr must be positive"),
        (["--d-lr", "-0.001"], "--d-lr must be positive"),
        (["--tasks", "8", "0"], "--tasks must be at least 1"),
        (["--context-dim", "64", "0"], "--context-dim must be at least 1"),
        (["--inner-lr", "1", "0"], "--inner-lr must be positive"),
    ],
)
def test_bad_arguments_are_clear_errors(argv, message, capsys, monkeypatch, strokes):
    tool = load_tool("validate_context")
    monkeypatch.setattr(tool, "load_dataset", lambda name: strokes)  # 6 seen classes: --held-out must be 2-5
    with pytest.raises(SystemExit) as stop:
        tool.main(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_an_unknown_dataset_is_a_clear_error_before_any_training(capsys):
    with pytest.raises(SystemExit) as stop:
        load_tool("validate_context").main(["--dataset", "nonsense"])
    assert stop.value.code == 2 and "--dataset nonsense: Unknown dataset 'nonsense'" in capsys.readouterr().err


def test_the_sample_grid_shows_each_class_shots_then_samples(strokes, tmp_path, monkeypatch):
    from PIL import Image

    from metagan_lib import context, fewshot, plotting
    from metagan_lib.tasks import TaskSampler

    tool = load_tool("validate_context")
    model = context.new_context_gan(context.ContextConfig(width=8), seed=0)
    method = fewshot.Method("context maml, 2 inner steps", kind="context", model=model, steps=2)
    split = tool.validation_split(strokes, held_out=5)
    drawn = []
    show_grid = plotting.show_grid
    monkeypatch.setattr(
        plotting, "show_grid", lambda images, **kw: drawn.append((images, kw)) or show_grid(images, **kw)
    )
    path = tool.save_sample_grid(method, split, tmp_path / "figures")
    assert path == tmp_path / "figures" / "validation_context-maml_2-inner-steps.png"
    width, height = Image.open(path).size
    assert width > 1.5 * height  # 12 thumbnails a row, 5 rows (one per held-out class)
    ((images, kw),) = drawn
    support = TaskSampler(split, split.unseen_classes, seed=0).sample(1, 5, 5).support[0]  # the held-out classes' task
    rows = images.view(5, 12, 1, 28, 28)
    assert kw["nrow"] == 12 and torch.equal(rows[:, :5], support)  # each row: the class's 5 shots ...
    torch.testing.assert_close(
        rows[:, 5:], fewshot.generate(method, support, None, 7, None, seed=0)
    )  # ... its 7 samples


def test_a_test_step_sweep_scores_one_model_at_each_number_of_steps():
    from metagan_lib import context

    tool = load_tool("validate_context")
    model = context.new_context_gan(context.ContextConfig(width=8), seed=0)
    methods = tool.scored_at("context reptile-query, 5 inner steps", model, 5, [5, 50])
    assert [m.name for m in methods] == [
        "context reptile-query, 5 inner steps",
        "context reptile-query, 5 inner steps, 50 test steps",
    ]
    assert [m.steps for m in methods] == [5, 50] and all(m.model is model for m in methods)
    assert [m.steps for m in tool.scored_at("x", model, 3, None)] == [3]  # no sweep: the training's inner steps


def test_the_fit_check_draws_meta_training_classes_only(strokes):
    tool = load_tool("validate_context")
    split = tool.validation_split(strokes, held_out=2)
    pool = tool.training_class_sample(split, 3)
    assert len(pool) == 3 and torch.isin(pool, split.seen_classes).all()  # classes the candidates trained on
    assert not torch.isin(pool, split.unseen_classes).any()
    assert torch.equal(pool, tool.training_class_sample(split, 3))  # fixed seed
    assert len(tool.training_class_sample(split, 99)) == len(split.seen_classes)  # at most all of them


def test_a_test_setting_changes_only_how_the_trained_model_adapts():
    from metagan_lib import context

    tool = load_tool("validate_context")
    assert tool.parse_test_setting("inner_samples=64") == ("inner_samples", 64)
    assert tool.parse_test_setting("inner_adv_weight=0.6") == ("inner_adv_weight", 0.6)
    model = context.new_context_gan(context.ContextConfig(width=8, inner_adv_weight=0.3), seed=0)
    name, changed = tool.with_test_setting("context reptile-query", model, "inner_adv_weight", 0.6)
    assert name == "context reptile-query, test inner_adv_weight 0.6"
    assert changed.config.inner_adv_weight == 0.6 and model.config.inner_adv_weight == 0.3  # a copy, not an edit
    assert changed.meta_params is model.meta_params and changed.d_params is model.d_params  # the same trained weights


def test_a_test_guide_weight_needs_a_model_trained_with_a_guide():
    from metagan_lib import context, evaluation

    tool = load_tool("validate_context")
    assert tool.parse_test_setting("inner_guide_weight=2") == ("inner_guide_weight", 2.0)
    unguided = context.new_context_gan(context.ContextConfig(width=8), seed=0)
    with pytest.raises(ValueError, match="meta-trained without a guide network"):
        tool.with_test_setting("context reptile-query", unguided, "inner_guide_weight", 2.0)
    guided = context.attach_guide(
        context.new_context_gan(context.ContextConfig(width=8, inner_guide_weight=1.0), seed=0),
        evaluation.FeatureNet(5, width=8),
    )
    name, changed = tool.with_test_setting("context reptile-query", guided, "inner_guide_weight", 2.0)
    assert name == "context reptile-query, test inner_guide_weight 2"
    assert changed.config.inner_guide_weight == 2.0 and changed.guide is guided.guide  # the same guide network


def test_a_selection_wraps_the_trained_model_and_names_its_ratio():
    from metagan_lib import context, fewshot

    tool = load_tool("validate_context")
    model = context.new_context_gan(context.ContextConfig(width=8), seed=0)
    (method,) = tool.scored_at("context reptile-query, 5 inner steps", model, 2, None)
    chosen = tool.selected(method, 4)
    assert chosen.name == "context reptile-query, 5 inner steps, D keeps 1 in 4" and chosen.steps == 2
    assert chosen.kind == "context-select" and chosen.model.model is model and chosen.model.oversample == 4
    support = torch.rand(2, 5, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    images = fewshot.generate(chosen, support, None, 3, None, seed=1)  # the protocol's dispatch reaches the selection
    assert torch.equal(images, context.adapt_and_select(chosen.model, support, 2, 3, seed=1))
    with pytest.raises(ValueError, match="guide network"):  # this model has none to judge with
        tool.selected(method, 2, "guide")
    guided = dataclasses.replace(method, model=context.attach_guide(model, FeatureNet(num_classes=3)))
    by_guide = tool.selected(guided, 2, "guide")
    assert by_guide.name == "context reptile-query, 5 inner steps, guide keeps 1 in 2"
    assert by_guide.model.judge == "guide"
    spread = tool.selected(guided, 4, "guide-novelty", 0.5)
    assert spread.name == "context reptile-query, 5 inner steps, guide novelty keeps 1 in 4, spread 0.5"
    assert spread.model.spread == 0.5 and by_guide.model.spread == 0


def test_a_scaled_method_wraps_the_plain_or_filtered_one_and_samples_through_the_dispatch():
    from metagan_lib import context, fewshot

    tool = load_tool("validate_context")
    model = context.new_context_gan(context.ContextConfig(width=8), seed=0)
    (method,) = tool.scored_at("c", model, 2, None)
    wide = tool.scaled(method, 2.0)
    assert wide.name == "c, noise x2" and wide.kind == "context-scaled" and wide.steps == 2
    assert wide.model.sampler is model and wide.model.scale == 2.0
    support = torch.rand(2, 5, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    images = fewshot.generate(wide, support, None, 3, None, seed=1)
    assert torch.equal(images, context.adapt_and_sample(model, support, 2, 3, seed=1, scale=2.0))
    filtered = tool.scaled(tool.selected(method, 4), 1.5)
    assert filtered.name == "c, D keeps 1 in 4, noise x1.5" and filtered.model.sampler.oversample == 4
    images = fewshot.generate(filtered, support, None, 3, None, seed=1)
    assert torch.equal(images, context.adapt_and_select(filtered.model.sampler, support, 2, 3, seed=1, scale=1.5))


def test_a_per_shot_method_adapts_a_context_to_each_shot():
    from metagan_lib import context, fewshot

    tool = load_tool("validate_context")
    model = context.new_context_gan(context.ContextConfig(width=8), seed=0)
    (method,) = tool.scored_at("c", model, 2, None)
    each = tool.per_shot(method)
    assert each.name == "c, a context per shot" and each.kind == "context-per-shot" and each.model.model is model
    support = torch.rand(2, 3, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    images = fewshot.generate(each, support, None, 5, None, seed=1)
    assert torch.equal(images, context.adapt_per_shot_and_sample(each.model, support, 2, 5, seed=1))


def test_a_mixed_shots_method_mixes_the_shots_contexts_at_its_temperature_and_noise():
    from metagan_lib import context, fewshot

    tool = load_tool("validate_context")
    model = context.new_context_gan(context.ContextConfig(width=8), seed=0)
    (method,) = tool.scored_at("c", model, 2, None)
    mixed = tool.mixed_shots(method, 0.3, 1.5)
    assert (
        mixed.name == "c, shots' contexts mixed at temperature 0.3, noise x1.5" and mixed.kind == "context-mixed-shots"
    )
    assert (mixed.model.model, mixed.model.temperature, mixed.model.scale) == (model, 0.3, 1.5)
    assert tool.mixed_shots(method, 1.0).name == "c, shots' contexts mixed at temperature 1"
    support = torch.rand(2, 3, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    images = fewshot.generate(mixed, support, None, 5, None, seed=1)
    assert torch.equal(images, context.adapt_mixed_shots_and_sample(mixed.model, support, 2, 5, seed=1))


def test_each_test_setting_is_scored_plain_and_through_each_filter():
    from metagan_lib import context

    tool = load_tool("validate_context")
    model = context.attach_guide(context.new_context_gan(context.ContextConfig(width=8), seed=0), FeatureNet(3))
    selections = [("discriminator", 4, 0.0), ("discriminator", 2, 0.5)]
    methods = tool.candidate_methods("c", model, 5, [10, 20], [("inner_samples", 4)], selections)
    assert [m.name for m in methods] == [
        "c, 10 test steps",
        "c, 20 test steps",
        "c, test inner_samples 4, 10 test steps",
        "c, test inner_samples 4, 20 test steps",
        "c, 10 test steps, D keeps 1 in 4",
        "c, 20 test steps, D keeps 1 in 4",
        "c, 10 test steps, D keeps 1 in 2, spread 0.5",
        "c, 20 test steps, D keeps 1 in 2, spread 0.5",
        "c, test inner_samples 4, 10 test steps, D keeps 1 in 4",
        "c, test inner_samples 4, 20 test steps, D keeps 1 in 4",
        "c, test inner_samples 4, 10 test steps, D keeps 1 in 2, spread 0.5",
        "c, test inner_samples 4, 20 test steps, D keeps 1 in 2, spread 0.5",
    ]
    assert [m.steps for m in methods] == [10, 20] * 6
    filtered_fewer = methods[-1].model  # the selection wraps the model whose test setting changed, not the trained one
    assert filtered_fewer.model.config.inner_samples == 4 and filtered_fewer.model.meta_params is model.meta_params
    assert (filtered_fewer.oversample, filtered_fewer.spread) == (2, 0.5)
    assert all(m.model.config.inner_samples == model.config.inner_samples for m in methods[:2])
    assert tool.candidate_methods("c", model, 5, None, [], []) == tool.scored_at("c", model, 5, None)


def test_the_guide_network_is_a_second_feature_network_never_the_scoring_one(strokes, tmp_path):
    from metagan_lib import evaluation

    tool = load_tool("validate_context")
    data = tool.validation_split(strokes, held_out=3)
    net, key = tool.guide_network(data, tmp_path, steps=2, width=16)
    assert key == evaluation.feature_net_key(data, 2, 1, 16)  # the scoring network's seed is 0
    assert key["width"] == 16 and "width" not in evaluation.feature_net_key(data, 2, 0)  # earlier keys stay valid
    assert net.body[0].out_channels == 16
    trained = evaluation.train_feature_net(data, 2, seed=1, width=16, progress=False)
    scoring = evaluation.train_feature_net(data, 2, seed=0, width=16, progress=False)
    guide_weights, scoring_weights = net.state_dict(), scoring.state_dict()
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in guide_weights.items())
    assert not all(torch.equal(v, scoring_weights[k]) for k, v in guide_weights.items())
    assert (tmp_path / "guide_net_width16.pt").exists()  # cached beside the validation split's other networks
    tool.guide_network(data, tmp_path, steps=2, width=32)
    assert (tmp_path / "guide_net.pt").exists()  # the scoring network's width keeps the earlier runs' file name
    tool.guide_network(data, tmp_path, steps=2, width=16, tag="_rot4")
    assert (tmp_path / "guide_net_width16_rot4.pt").exists()  # --rotated-classes' guide never overwrites the other
    name = tool.candidate("reptile-query", 5, False, False, {"inner_guide_weight": 1.0}, None, None)[1]
    assert name == "context reptile-query, 5 inner steps, inner guide 1"


def test_the_validation_table_prints_a_column_per_metric_coverage_included(strokes, capsys):
    tool = load_tool("validate_context")
    copy = fewshot.Method("copy shots + augmentation", kind="copy", role="reference")
    summary = tool.print_table([copy], strokes, FeatureNet(len(strokes.seen_classes)), [0, 1], "strokes")
    header, row = capsys.readouterr().out.splitlines()[1:3]
    assert header.split() == ["method", *tool.METRICS] and "class_coverage" in tool.METRICS
    assert row.startswith("copy shots + augmentation") and row.count("±") == len(tool.METRICS)
    assert 0 <= summary["copy shots + augmentation"]["class_coverage"]["mean"] <= 1


def test_the_validation_tool_prints_the_test_steps_the_rule_picks(capsys):
    tool = load_tool("validate_context")
    methods = [fewshot.Method(f"candidate, {t} test steps", kind="copy", steps=t) for t in (5, 10, 20)]
    entry = lambda copy, div: {"copy_score": {"mean": copy, "ci95": 0.1}, "diversity": {"mean": div, "ci95": 0.01}}
    summary = {"real held-out": entry(1.0, 0.4), **{m.name: entry(c, 0.4) for m, c in zip(methods, (1.3, 1.45, 1.6))}}
    tool.print_test_step_choice(summary, {"candidate": methods}, real="real held-out")
    assert capsys.readouterr().out.strip() == "test-step rule: 10 test steps for candidate"  # 20 steps flagged (1.6)
    summary = {**summary, methods[0].name: entry(1.7, 0.4), methods[1].name: entry(1.7, 0.4)}
    tool.print_test_step_choice(summary, {"candidate": methods}, real="real held-out")
    assert "no test-step count in [5, 10, 20] passes the rule" in capsys.readouterr().out


def test_adaptation_compute_counts_every_step_alike_and_inversions_step_in_closed_form(capsys):
    tool = load_tool("adaptation_compute")
    tiny = ["--shots", "2", "--samples", "2", "--context-steps", "1", "2", "3", "--inversion-steps", "1", "2", "3"]
    options = ["--select", "2", "--select-spread", "0.5", "--inner-samples", "4", "--repeats", "1"]
    two, one = (tool.main(["--ways", w, *tiny, *options]) for w in ("2", "1"))
    flops = {(r["method"], r["steps"]): 1e9 * r["gflop"] for r in two}
    filtered, fewer = "fifth learner, guide novelty keeps 1 in 2, spread 0.5", "fifth learner, 4 inner samples"
    fewer_filtered = f"{fewer}, guide novelty keeps 1 in 2, spread 0.5"
    assert {m for m, _ in flops} == {"fifth learner", fewer, filtered, fewer_filtered, "latent inversion"}
    step = {}
    for method in {m for m, _ in flops}:
        first, second, third = (flops[method, s] for s in (1, 2, 3))
        assert second > first and third - second == pytest.approx(second - first, rel=1e-9)  # each step alike
        step[method] = second - first
    assert step[filtered] == step["fifth learner"] and step[fewer] < step["fifth learner"] / 2  # 4 of 16 samples
    assert step[fewer_filtered] == step[fewer]  # the filter draws after adaptation: each step costs what it did
    assert flops[filtered, 1] > flops["fifth learner", 1]  # twice the samples drawn, and their guide features
    # one inversion step: the generator's forward and its backward to the 2 x 2 latents
    generator = tool.inversion_baseline(torch.device("cpu")).generator
    z = torch.randn(4, generator.z_dim, requires_grad=True)
    assert step["latent inversion"] == bench.counted_flops(lambda: torch.autograd.grad(generator(z).sum(), z))
    for row, single in zip(two, one):  # vmap over two classes: twice one class's work, less what they share
        assert 1.99 * single["gflop"] <= row["gflop"] <= 2 * single["gflop"]
    table = capsys.readouterr().out
    assert "FLOPs (x latent inversion at 3 steps)" in table
    assert re.search(r"^\| latent inversion \| 3 \| [^|]+ \| [^|]+ \| 1\.000 \| 1\.000 \|$", table, re.M)


def test_adaptation_compute_measures_the_networks_the_notebooks_compare():
    tool = load_tool("adaptation_compute")
    learner = tool.fifth_learner(5, torch.device("cpu"))
    assert learner.config == context.chosen_context_configs(shots=5)[context.CHOSEN_CONTEXT_LEARNER]
    assert learner.config.inner_guide_weight > 0 and learner.guide[0].out_channels == context.GUIDE_WIDTH
    assert tool.fifth_learner(5, torch.device("cpu"), 4).config.inner_samples == 4
    generator = tool.inversion_baseline(torch.device("cpu")).generator
    for dataset in ("glyphs", "omniglot", "digits"):  # notebook 06's inversion generator: notebook 02's long run
        config = methods.pretrained_gan_job("full", dataset)[1]
        reference = build_gan(config.architecture, config.z_dim, config.width)[0]
        assert [p.shape for p in generator.parameters()] == [p.shape for p in reference.parameters()]


@pytest.mark.parametrize(
    "bad, message",
    [
        (["--ways", "0"], "argument --ways: 0 is not a positive integer"),
        (["--context-steps", "5", "-1"], "argument --context-steps: -1 is not a positive integer"),
        (["--select", "x"], "argument --select: invalid positive value: 'x'"),
        (["--select-spread", "0.05"], "--select-spread must be a finite number >= 0, and > 0 only with --select"),
        (["--select", "4", "--select-spread", "-1"], "--select-spread must be a finite number >= 0"),
        (["--select", "4", "--select-spread", "nan"], "--select-spread must be a finite number >= 0"),
        (["--device", "gpu"], "--device: Unknown device 'gpu'; choose one of auto, cpu, cuda"),
    ],
)
def test_adaptation_compute_refuses_bad_arguments_with_the_reason(bad, message, capsys):
    with pytest.raises(SystemExit):
        load_tool("adaptation_compute").main(bad)
    assert message in capsys.readouterr().err


def test_compare_adaptation_time_runs_another_checkout_on_the_same_networks(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(repo_root() / "tools"))  # the tool imports adaptation_compute beside it
    tool = load_tool("compare_adaptation_time")
    with pytest.raises(SystemExit):
        tool.main([str(repo_root()), "--repeats", "0"])  # refused before any timing
    assert "argument --repeats: 0 is not a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="has no metagan_lib"):
        tool.load_package(tmp_path)
    package = tool.load_package(repo_root(), name="second_copy_of_metagan_lib")  # this checkout, imported a second time
    model = tool.fifth_learner(5, torch.device("cpu"), 4)
    other_context, other = tool.same_networks(package, model)
    assert other_context is not context and other.meta_params is model.meta_params
    support = torch.rand(2, 5, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ours = context.adapt_and_select(context.SampleSelection(model, 2, "guide-novelty", 0.1), support, 1, 3)
    selection = other_context.SampleSelection(other, 2, "guide-novelty", 0.1)
    theirs = other_context.adapt_and_select(selection, support, 1, 3)
    assert torch.equal(ours, theirs)


def test_build_glyphs_writes_the_classes_file_the_loader_reads(glyphs, monkeypatch):
    """The tool's JSON of a rendering (here, the shipped one) is the shipped file's, its versions aside; a rendering
    whose labels are not grouped by class is refused."""
    import json

    from metagan_lib import data

    monkeypatch.syspath_prepend(str(repo_root() / "tools"))  # the tool imports build_digits beside it
    tool = load_tool("build_glyphs")
    rendered = {name: getattr(glyphs, name) for name in ("labels", "class_names", "seen_classes", "unseen_classes")}
    written = json.loads(tool.classes_json(rendered))
    shipped = json.loads((data.GLYPHS_FOLDER / data.GLYPHS_CLASSES).read_text(encoding="utf-8"))
    assert {**written, "rendered_with": None} == {**shipped, "rendered_with": None}
    with pytest.raises(ValueError, match="not grouped by class"):
        tool.classes_json({**rendered, "labels": glyphs.labels.flip(0)})


def test_build_digits_round_trips_the_shipped_format_and_names_bad_arguments(tmp_path, monkeypatch, capsys):
    """Digits written from the npm package's JSON layout read back through the loader as the bytes they came from;
    --help writes nothing, a missing source file and a file as destination are named."""
    import json

    import numpy as np

    from metagan_lib import data

    tool = load_tool("build_digits")
    source, out = tmp_path / "src", tmp_path / "out"
    source.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, size=(10, 2, 28 * 28))
    for digit in range(10):
        (source / f"{digit}.json").write_text(json.dumps({"data": np.round(pixels[digit] / 255, 3).tolist()}))
    tool.main([str(source), str(out)])
    images, labels = data._read_mnist_split(out / data.DIGITS_IMAGES, out / data.DIGITS_LABELS)
    assert torch.equal(images, torch.from_numpy(pixels.reshape(20, 28, 28).astype(np.uint8)))
    assert labels.tolist() == [d for d in range(10) for _ in range(2)]
    assert "(NOT the shipped file's)" in capsys.readouterr().out
    monkeypatch.chdir(tmp_path)
    for argv, message in ((["--help"], "source"), ([str(source)], "required: destination")):
        with pytest.raises(SystemExit):
            tool.main(argv)
        captured = capsys.readouterr()
        assert message in captured.out + captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]  # --help wrote no folder
    (source / "3.json").unlink()
    with pytest.raises(SystemExit, match=r"3.json is missing: give the package's src/digits folder"):
        tool.main([str(source), str(out)])
    with pytest.raises(SystemExit):
        tool.main([str(source), str(source / "0.json")])
    assert "is a file; give the folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a file further up the destination's path
        tool.main([str(source), str(source / "0.json" / "digits")])
    assert "0.json is a file; give the folder" in capsys.readouterr().err
    (source / "3.json").write_text('{"data": [0.1, ')  # cut short
    with pytest.raises(SystemExit, match=r"3.json is not the package's digit file \(JSONDecodeError"):
        tool.main([str(source), str(out)])


def test_validate_context_refuses_a_samples_path_under_a_file_before_training(tmp_path, capsys):
    tool = load_tool("validate_context")
    blocker = tmp_path / "grids.png"
    blocker.write_text("a file")
    with pytest.raises(SystemExit):  # was a FileExistsError after the meta-training
        tool.main(["--rules", "fomaml", "--samples", str(blocker / "more")])
    assert f"--samples {blocker / 'more'}: {blocker} is a file" in capsys.readouterr().err


def test_every_mutant_of_the_mutation_check_applies_to_the_current_source_and_names_real_tests():
    """``tools/mutation_check.py`` refuses to run a mutant whose text the source no longer holds exactly once; this
    keeps the whole table in step with the code, so no mutant is skipped silently after an edit."""
    tool = load_tool("mutation_check")
    names = [m.name for m in tool.MUTANTS]
    assert len(names) == len(set(names)) and len(names) >= 60
    for mutant in tool.MUTANTS:
        assert tool.unmatched(mutant) == [], mutant.name
        text = tool.source(mutant).read_text()
        assert tool.apply(mutant, text) != text, mutant.name
        assert all((repo_root() / test).is_file() for test in mutant.tests), mutant.name


@pytest.mark.slow  # copies the checkout and runs a test file in a subprocess
def test_the_mutation_check_catches_a_planted_bug_and_leaves_the_checkout_alone(capsys):
    tool = load_tool("mutation_check")
    toy = repo_root() / "metagan_lib" / "toy.py"
    before = toy.read_text()
    assert tool.main(["S1"]) == 0
    out = capsys.readouterr().out
    assert "| S1 | notebook 03's MAML always first order | yes |" in out and "1 of 1 mutants caught" in out
    assert toy.read_text() == before  # the bug was planted in a copy
    with pytest.raises(SystemExit):
        tool.main(["Z9"])
    assert "unknown mutant(s) Z9" in capsys.readouterr().err


def test_build_glyphs_names_a_file_on_the_destination_path_before_rendering(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(repo_root() / "tools"))  # the tool imports build_digits beside it
    blocker = tmp_path / "afile"
    blocker.write_text("")
    with pytest.raises(SystemExit):
        load_tool("build_glyphs").main([str(blocker / "glyph_data")])
    assert f"{blocker} is a file; give the folder to write the glyph files into" in capsys.readouterr().err
