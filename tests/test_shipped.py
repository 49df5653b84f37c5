"""Shipped artefacts (artifacts/ in the repository): used when the cache misses, under the same key check; stale or
damaged ones retrained with a warning naming them; ignored when retraining; cached evaluations keyed by content."""

import dataclasses
import warnings
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from metagan_lib import artifacts as A
from metagan_lib import fewshot, profiles, reproduce
from metagan_lib.inversion import LatentInversion
from metagan_lib.paths import cache_dir


@pytest.fixture
def store(tmp_path, monkeypatch):
    """An empty cache and an empty shipped folder; returns (cache path of an artefact, its shipped path)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(A, "shipped_dir", lambda: tmp_path / "shipped")
    monkeypatch.setenv(A.RETRAIN_ENV_VAR, "0")
    path = profiles.artifact_path("full", "glyphs", 0, "net")
    return path, tmp_path / "shipped" / "full" / "glyphs" / "seed0" / "net.pt"


def _build(value, calls):
    return lambda: calls.append(value) or {"w": torch.full((2,), float(value))}


def _load(path, key, build):
    return A.load_or_build(path, key, build, to_payload=lambda a: a, from_payload=lambda p: p)


def _ship(shipped, key, value):
    A.save_payload({"key": A.full_key(key), "artefact": {"w": torch.full((2,), float(value))}}, shipped)


def test_the_shipped_file_is_used_when_the_cache_misses(store):
    path, shipped = store
    assert A.shipped_path(path) == shipped
    _ship(shipped, {"seed": 0}, 7)
    calls = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a current shipped file is used silently
        assert _load(path, {"seed": 0}, _build(1, calls))["w"].tolist() == [7.0, 7.0]
    assert calls == [] and A.is_current(path, {"seed": 0})
    assert A.read_payload(path)["artefact"]["w"].tolist() == [7.0, 7.0]  # copied into the cache


def test_a_stale_shipped_file_is_retrained_with_a_warning_naming_it(store):
    path, shipped = store
    _ship(shipped, {"seed": 0}, 7)
    calls = []
    with pytest.warns(
        A.StaleArtifactWarning, match=r"net\.pt was trained under another key \(differing in: seed\).*retrain=True"
    ):
        assert _load(path, {"seed": 1}, _build(1, calls))["w"].tolist() == [1.0, 1.0]
    assert calls == [1] and A.is_current(path, {"seed": 1})  # the retrained one is in the cache now


def test_a_caller_that_does_not_rebuild_asks_quietly_and_gets_the_reason(store):
    path, shipped = store
    _ship(shipped, {"seed": 0}, 7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning announces a retraining that this caller will not do
        assert not A.is_current(path, {"seed": 1}, rebuilds=False)
        reason = A.stale_shipped_reason(path, {"seed": 1})
        assert A.stale_shipped_reason(path, {"seed": 0}) is None  # current: nothing to say
    assert "net.pt was trained under another key (differing in: seed); not loaded. " in reason
    with pytest.warns(A.StaleArtifactWarning, match="retraining it"):  # the default still announces it
        assert not A.is_current(path, {"seed": 1})


def test_a_damaged_shipped_file_is_named_as_shipped_with_how_to_restore_it(store):
    """A truncated shipped file: the loader says it rebuilds, a caller that does not rebuild says it is not loaded,
    and both give the command that restores the file."""
    path, shipped = store
    _ship(shipped, {"seed": 0}, 7)
    shipped.write_bytes(shipped.read_bytes()[:100])
    restore = f"restore it: git checkout -- {shipped}"
    with pytest.warns(A.DamagedArtifactWarning, match=f"stored file {shipped} cannot be used.*not loaded \\({restore}"):
        assert not A.is_current(path, {"seed": 0}, rebuilds=False)
    calls = []
    with pytest.warns(A.DamagedArtifactWarning, match=f"rebuilding it \\({restore}\\)"):
        assert _load(path, {"seed": 0}, _build(1, calls))["w"].tolist() == [1.0, 1.0]
    assert calls == [1]


def test_a_shipped_glyph_file_from_another_rendering_names_the_cpu_as_the_cause(store):
    path, shipped = store
    _ship(shipped, {"data": "645f7b52bce0e3fb", "seed": 0}, 7)  # the store's shipped file is under full/glyphs/seed0/
    with pytest.warns(A.StaleArtifactWarning) as caught:
        _load(path, {"data": "8a62342f591f407c", "seed": 0}, _build(1, []))
    message = str(caught[0].message)
    assert "(differing in: data)" in message and "vector kernels" in message and "nothing to commit" in message
    assert "git checkout metagan_lib/glyph_data metagan_lib/data.py" in message
    assert "commit the new artifacts" not in message


def test_differing_fields_names_changed_added_and_removed_fields():
    found, wanted = {"seed": 0, "steps": 10, "old": 1}, {"seed": 0, "steps": 20, "new": 2}
    assert A.differing_fields(found, wanted) == ["new", "old", "steps"]
    assert A.differing_fields(found, dict(found)) == []


def test_a_damaged_shipped_file_is_retrained_with_a_warning_naming_it(store):
    path, shipped = store
    shipped.parent.mkdir(parents=True)
    shipped.write_bytes(b"not a torch file")
    calls = []
    with pytest.warns(A.DamagedArtifactWarning, match=r"net\.pt cannot be used.*rebuilding it"):
        _load(path, {"seed": 0}, _build(1, calls))
    assert calls == [1]


def test_a_shipped_file_that_does_not_fit_is_retrained_with_a_warning(store):
    path, shipped = store
    _ship(shipped, {"seed": 0}, 7)

    def from_payload(payload):
        raise ValueError("parameter shapes differ")

    with pytest.warns(A.DamagedArtifactWarning, match=r"net\.pt cannot be used \(ValueError: parameter shapes"):
        A.load_or_build(path, {"seed": 0}, lambda: "built", to_payload=lambda a: {}, from_payload=from_payload)


def test_retraining_ignores_the_shipped_files_and_bad_settings_are_refused(store, monkeypatch, capsys):
    path, shipped = store
    _ship(shipped, {"seed": 0}, 7)
    monkeypatch.setenv(A.RETRAIN_ENV_VAR, "1")
    calls = []
    assert not A.is_current(path, {"seed": 0})
    assert _load(path, {"seed": 0}, _build(1, calls))["w"].tolist() == [1.0, 1.0] and calls == [1]
    assert profiles.resolve_profile("smoke") == "smoke"  # set outside, the variable wins over retrain=False
    assert "METAGAN_RETRAIN=1 overrides retrain=False" in capsys.readouterr().out and A.retraining()
    profiles.resolve_profile("smoke", retrain=True)
    assert A.retraining()
    monkeypatch.setenv(A.RETRAIN_ENV_VAR, "yes")
    with pytest.raises(ValueError, match=r"\$METAGAN_RETRAIN is 'yes'"):
        A.retraining()
    with pytest.raises(TypeError, match="retrain must be True or False"):
        A.set_retrain("no")


def test_only_files_in_the_versioned_cache_folder_have_a_shipped_counterpart(store, tmp_path):
    path, shipped = store
    assert A.shipped_path(tmp_path / "elsewhere" / "net.pt") is None
    assert A.shipped_path(cache_dir() / "omniglot-0123.pt") is None  # processed datasets are never shipped


def test_the_runner_passes_retrain_to_every_notebook(monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr(reproduce, "run_notebook", lambda notebook, output, parameters: calls.append(parameters) or 0.0)
    monkeypatch.setenv(A.RETRAIN_ENV_VAR, "0")
    assert reproduce.main(["--profile", "smoke", "--only", "01", "04", "--retrain", "--output-dir", str(tmp_path)]) == 0
    assert [c["retrain"] for c in calls] == [True, True] and ", retrain)" in capsys.readouterr().out
    reproduce.reproduce("smoke", only=["01"], output_root=tmp_path)
    assert calls[-1]["retrain"] is False


def test_content_hash_follows_the_values_of_weights_and_fields():
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    same = nn.Linear(3, 2)
    same.load_state_dict(net.state_dict())
    assert A.content_hash(net) == A.content_hash(same)
    assert A.content_hash(LatentInversion(net, 0.3)) != A.content_hash(LatentInversion(net, 0.4))
    with torch.no_grad():
        same.weight[0, 0] += 1e-6
    assert A.content_hash(net) != A.content_hash(same)
    assert A.content_hash(nn.Linear(3, 2, device="meta")) == A.content_hash(nn.Linear(3, 2, device="meta"))
    with pytest.raises(TypeError, match="cannot describe a object"):
        A.content_hash({"x": object()})


def test_content_hash_counts_a_key_when_set_field_only_when_it_is_set():
    """Adding a field marked KEY_WHEN_SET leaves the hash of every model with the field at its default as it was (so
    the evaluations shipped before the field stay valid), as config_key does for trained networks."""

    @dataclasses.dataclass
    class Before:
        width: int = 4

    @dataclasses.dataclass
    class After:
        width: int = 4
        spread: float = dataclasses.field(default=0.0, metadata={A.KEY_WHEN_SET: True})

    Before.__name__ = After.__name__ = "Config"  # the same class, before and after the field was added
    assert A.content_hash(After()) == A.content_hash(Before())
    assert A.content_hash([After(width=8)]) == A.content_hash([Before(width=8)])
    assert A.content_hash(After(spread=1.0)) != A.content_hash(Before())
    assert A.config_key(After()) == dataclasses.asdict(Before())


def _tiny_benchmark_inputs():
    g = torch.Generator().manual_seed(0)
    dataset = SimpleNamespace(
        name="tiny", images=torch.randint(0, 256, (8, 1, 28, 28), generator=g, dtype=torch.uint8),
        labels=torch.arange(8), seen_classes=torch.arange(4), unseen_classes=torch.arange(4, 8),
    )  # fmt: skip
    generator = nn.Linear(2, 2)
    method = fewshot.Method("inversion", kind="invert", model=LatentInversion(generator, 0.3), steps=5)
    return dataset, nn.Linear(2, 2), generator, [method, fewshot.Method("copy", kind="copy", role="reference")]


def test_a_cached_benchmark_is_reused_only_for_the_same_methods_and_settings(store, monkeypatch):
    path = profiles.artifact_path("full", "tiny", 0, "06_benchmark")
    dataset, net, generator, methods = _tiny_benchmark_inputs()
    calls = []
    monkeypatch.setattr(
        fewshot, "run_benchmark", lambda m, d, n, **s: calls.append(s["seeds"]) or {"by_shots": {}, "downstream": {}}
    )
    settings = dict(seeds=[0, 1], classifier=net, progress=print)
    fewshot.run_benchmark_or_load(path, methods, dataset, net, **settings)
    assert fewshot.run_benchmark_or_load(path, methods, dataset, net, **settings) == {"by_shots": {}, "downstream": {}}
    assert calls == [[0, 1]]
    fewshot.run_benchmark_or_load(path, methods, dataset, net, **{**settings, "seeds": [0, 1, 2]})
    with torch.no_grad():
        generator.weight += 1  # the method's network changed: its old numbers are not served
    fewshot.run_benchmark_or_load(path, methods, dataset, net, **settings)
    assert calls == [[0, 1], [0, 1, 2], [0, 1]]


def test_a_cached_setting_choice_is_reused_and_checked_against_the_grid(store, monkeypatch):
    path = profiles.artifact_path("full", "tiny", 0, "06_setting_x")
    dataset, net, generator, _ = _tiny_benchmark_inputs()
    make = lambda noise: fewshot.Method("inversion", kind="invert", model=LatentInversion(generator, noise), steps=5)
    calls = []
    monkeypatch.setattr(
        fewshot,
        "select_setting",
        lambda m, d, n, grid, **b: calls.append(grid) or (0.2, {0.1: 2.0, 0.2: 1.0, 0.4: 3.0}),
    )
    grid = [0.1, 0.2, 0.4]
    first = fewshot.select_setting_or_load(path, make, dataset, net, grid, shots=5)
    assert (
        fewshot.select_setting_or_load(path, make, dataset, net, grid, shots=5)
        == first
        == (0.2, {0.1: 2.0, 0.2: 1.0, 0.4: 3.0})
    )
    assert len(calls) == 1
    stored = torch.load(path, weights_only=True)  # a file under the right key whose scores are not the grid's
    stored["artefact"]["scores"] = [[0.1, 2.0], [0.3, 1.0], [0.4, 3.0]]
    torch.save(stored, path)
    with pytest.warns(A.DamagedArtifactWarning, match="not the grid.s"):
        assert fewshot.select_setting_or_load(path, make, dataset, net, grid, shots=5) == first  # chosen again
    assert len(calls) == 2
    fewshot.select_setting_or_load(path, make, dataset, net, grid, shots=1)
    assert len(calls) == 3


def test_the_readme_lists_every_shipped_file_with_its_size():
    from metagan_lib import report
    from metagan_lib.paths import repo_root

    text = (repo_root() / "README.md").read_text()
    assert report.replace_block(text, "artifacts", A.shipped_table()) == text, (
        "the README's shipped-artefacts table is out of date: run python -m metagan_lib.report --update-readme"
    )
    assert A.shipped_table().count("\n") >= 3, "no artefacts are shipped in artifacts/"
