"""The artefact store: one key rule, atomic writes, damaged files rebuilt with a warning naming them."""

import dataclasses
import os
import pickle
import subprocess
import sys

import pytest
import torch

from metagan_lib import artifacts as A
from metagan_lib import context, meta, train
from metagan_lib import data as D
from metagan_lib.context import ContextConfig
from metagan_lib.tasks import TaskSampler
from metagan_lib.train import GANConfig, load_run, run_key, train_or_load


def _counting_build(value):
    calls = []

    def build():
        calls.append(1)
        return {"weights": torch.full((3,), float(value))}

    return build, calls


def _load(path, key, build):
    return A.load_or_build(path, key, build, to_payload=lambda a: a, from_payload=lambda p: p)


def test_a_file_is_reused_only_under_the_same_key(tmp_path):
    path = tmp_path / "net.pt"
    build, calls = _counting_build(1)
    first = _load(path, {"seed": 0, "data": "abc"}, build)
    again = _load(path, {"seed": 0, "data": "abc"}, build)
    assert torch.equal(first["weights"], again["weights"]) and len(calls) == 1
    for changed in ({"seed": 1, "data": "abc"}, {"seed": 0, "data": "xyz"}):
        _load(path, changed, build)
    assert len(calls) == 3


def test_a_folder_where_the_cache_file_belongs_is_refused_before_building(tmp_path):
    path = tmp_path / "net.pt"
    path.mkdir()
    build, calls = _counting_build(1)
    with pytest.raises(IsADirectoryError, match=f"{path} is a folder.*move or delete that folder"):
        _load(path, {"seed": 0}, build)
    assert calls == []  # refused before any training that could not be saved
    with pytest.raises(IsADirectoryError, match="is a folder"):
        A.save_payload({"key": {}, "artefact": {}}, path)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "not a store file", "bytes changed"])
def test_a_damaged_file_is_rebuilt_with_a_warning_naming_it(tmp_path, damage):
    path = tmp_path / "net.pt"
    build, calls = _counting_build(2)
    _load(path, {"seed": 0}, build)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "garbage":
        path.write_bytes(os.urandom(500))
    elif damage == "not a store file":
        torch.save({"weights": torch.zeros(3)}, path)
    else:  # the stored 2.0s turned into 1.0s in place: torch.load alone would load them, the checksum catches it
        stored, changed = torch.full((3,), 2.0).numpy().tobytes(), torch.full((3,), 1.0).numpy().tobytes()
        assert path.read_bytes().count(stored) == 1
        path.write_bytes(path.read_bytes().replace(stored, changed))
        assert torch.equal(torch.load(path, weights_only=True)["artefact"]["weights"], torch.ones(3))
    with pytest.warns(A.DamagedArtifactWarning, match=f"{path.name} cannot be used.*rebuilding it"):
        rebuilt = _load(path, {"seed": 0}, build)
    assert len(calls) == 2 and torch.equal(rebuilt["weights"], torch.full((3,), 2.0))
    assert _load(path, {"seed": 0}, build) is not None and len(calls) == 2  # the rebuilt file is good


class Planted:
    def __reduce__(self):
        return (print, ("code ran",))


def test_a_file_holding_code_is_refused_not_run(tmp_path, capsys):
    path = tmp_path / "net.pt"
    with open(path, "wb") as handle:
        pickle.dump({"key": A.full_key({"seed": 0}), "artefact": Planted()}, handle)
    build, calls = _counting_build(3)
    with pytest.warns(A.DamagedArtifactWarning):
        _load(path, {"seed": 0}, build)
    assert "code ran" not in capsys.readouterr().out and len(calls) == 1


def test_an_interrupted_write_leaves_no_file(tmp_path, monkeypatch):
    def failing_save(obj, f):
        open(f, "wb").write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(A.torch, "save", failing_save)
    with pytest.raises(KeyboardInterrupt):
        A.save_payload({"key": None, "artefact": 1}, tmp_path / "net.pt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # spawns processes
def test_two_processes_filling_an_empty_cache_both_succeed(tmp_path):
    script = (
        "import sys, torch\nfrom metagan_lib import artifacts as A\n"
        "for _ in range(20):\n"
        "    A.save_payload({'key': None, 'artefact': torch.randn(20000)}, sys.argv[1])\n"
    )
    runs = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "shared.pt")], stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    assert [run.wait(timeout=120) for run in runs] == [0, 0], [run.stderr.read() for run in runs]
    assert A.read_payload(tmp_path / "shared.pt") is not None and [p.name for p in tmp_path.iterdir()] == ["shared.pt"]


def test_gan_cache_key_holds_config_seed_and_training_images(tmp_path):
    images = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8)
    config = GANConfig(z_dim=8, width=8, steps=1, batch_size=8)
    path = tmp_path / "gan.pt"
    run = train_or_load(path, images, config, seed=0, progress=False)
    assert A.is_current(path, run_key(images, config, 0))
    for other in (
        run_key(images, config, 1),
        run_key(torch.zeros_like(images), config, 0),
        run_key(images, config.replace(steps=2), 0),
    ):
        assert not A.is_current(path, other)
    assert torch.equal(load_run(path).generator.project.weight, run.generator.project.weight)
    retrained = train_or_load(path, images, config, seed=1, progress=False)  # another seed: retrained, not served stale
    assert not torch.equal(retrained.generator.project.weight, run.generator.project.weight)


def _dataset_payload(images=None, **changes):
    """The fields of a two-class dataset in the form the dataset cache stores."""
    images = torch.zeros(4, 1, 28, 28, dtype=torch.uint8) if images is None else images
    fields = {
        "images": images,
        "labels": torch.tensor([0, 0, 1, 1]),
        "class_names": ("a", "b"),
        "seen_classes": torch.tensor([0]),
        "unseen_classes": torch.tensor([1]),
    }
    return {**fields, **changes}


def test_dataset_cache_from_an_older_format_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls = []
    path = tmp_path / "processed.pt"
    torch.save({"images": torch.zeros(1)}, path)  # written by an older version: no key
    with pytest.warns(A.DamagedArtifactWarning, match="processed.pt"):
        D._cached(path, {"name": "test"}, lambda: calls.append(1) or _dataset_payload())
    assert calls == [1] and torch.equal(
        D._cached(path, {"name": "test"}, lambda: pytest.fail("rebuilt twice"))["images"], _dataset_payload()["images"]
    )


@pytest.mark.parametrize(
    "changes,named",
    [
        ({"images": torch.zeros(4, 1, 14, 14, dtype=torch.uint8)}, "its images are not uint8 \\[N, 1, 28, 28\\]"),
        ({"images": torch.zeros(4, 1, 28, 28)}, "its images are not uint8"),  # float32 images
        ({"labels": torch.tensor([0, 0, 1, 1000])}, "its labels are not int64 \\[N\\], class indices"),
        ({"labels": torch.tensor([0, 1])}, "its labels are not"),  # fewer labels than images
        ({"unseen_classes": torch.tensor([0])}, "its seen/unseen classes are not disjoint class indices"),
        ({"extra": 1}, "its fields are not exactly images, labels"),
    ],
)
def test_a_dataset_cache_whose_contents_were_changed_under_its_key_is_rebuilt(tmp_path, changes, named):
    """A file that reads, under the right key, but whose fields are not a dataset's (written by hand, or by a bug):
    a warning naming the file and the field, then the dataset is built again, not loaded as if it were good."""
    path, key = tmp_path / "processed.pt", {"name": "test"}
    D._cached(path, key, _dataset_payload)
    A.save_payload({"key": A.full_key({"kind": "dataset", **key}), "artefact": _dataset_payload(**changes)}, path)
    with pytest.warns(A.DamagedArtifactWarning, match=f"processed.pt cannot be used \\(ValueError: {named}"):
        rebuilt = D._cached(path, key, lambda: _dataset_payload(images=torch.ones(4, 1, 28, 28, dtype=torch.uint8)))
    assert torch.equal(rebuilt["images"], torch.ones(4, 1, 28, 28, dtype=torch.uint8))


def test_an_empty_cache_file_is_named_as_empty(tmp_path):
    path = tmp_path / "processed.pt"
    path.write_bytes(b"")
    with pytest.warns(A.DamagedArtifactWarning, match=r"processed.pt cannot be used \(an empty file\)"):
        D._cached(path, {"name": "test"}, _dataset_payload)


def test_fingerprints_tell_values_apart_and_take_a_zero_dim_tensor():
    assert A.fingerprint(torch.tensor(1.0)) != A.fingerprint(torch.tensor(2.0))
    assert A.fingerprint(torch.tensor(1.0)) != A.fingerprint(torch.tensor([1.0]))  # the shape counts
    assert A.content_hash({"weight": torch.tensor(0.5)}) == A.content_hash({"weight": torch.tensor(0.5)})


def test_meta_training_and_seen_class_keys_change_with_everything_that_trains_differently(glyphs):
    """A meta-learner trained on other classes, from another sampler seed, config, length or seed, and a network
    trained on other seen classes, labels or images, must never be loaded in place of the one asked for."""
    config = ContextConfig(width=8)
    sampler = TaskSampler(glyphs, glyphs.seen_classes, seed=0)
    key = A.meta_training_key("context-gan", config, sampler, 10, 0)
    changed = [
        A.meta_training_key("context-gan", config, TaskSampler(glyphs, glyphs.seen_classes, seed=1), 10, 0),
        A.meta_training_key("context-gan", config, TaskSampler(glyphs, glyphs.seen_classes[:-1], seed=0), 10, 0),
        A.meta_training_key("context-gan", ContextConfig(width=16), sampler, 10, 0),
        A.meta_training_key("context-gan", config, sampler, 11, 0),
        A.meta_training_key("context-gan", config, sampler, 10, 1),
        A.meta_training_key("meta-gan", config, sampler, 10, 0),
    ]
    assert A.meta_training_key("context-gan", config, TaskSampler(glyphs, glyphs.seen_classes, seed=0), 10, 0) == key
    assert all(other != key for other in changed)
    seen = A.seen_classes_key(glyphs)
    images = glyphs.images.clone()
    images[-1, 0, 0, 0] ^= 1  # one pixel of one image
    variants = [
        dataclasses.replace(glyphs, seen_classes=glyphs.seen_classes[:-1]),
        dataclasses.replace(glyphs, labels=glyphs.labels.roll(1)),
        dataclasses.replace(glyphs, images=images),
    ]
    assert A.seen_classes_key(dataclasses.replace(glyphs)) == seen
    assert all(A.seen_classes_key(v) != seen for v in variants)


def test_each_loader_refuses_another_kind_of_file_by_name(tmp_path):
    """A GAN run read as a meta-GAN, a context meta-GAN read as a GAN run, ...: a ValueError naming the file and the
    loader of each kind, not a KeyError or a TypeError from inside the loader."""
    files = {"run": tmp_path / "run.pt", "meta": tmp_path / "meta.pt", "context": tmp_path / "context.pt"}
    train.save_run(train.new_run(GANConfig(width=8, z_dim=4), seed=0), files["run"])
    meta.save_meta(meta.new_meta_gan(meta.MetaConfig(width=8)), files["meta"])
    context.save_context_gan(context.new_context_gan(context.ContextConfig(width=8)), files["context"])
    loaders = {"run": train.load_run, "meta": meta.load_meta, "context": context.load_context_gan}
    for kind, loader in loaders.items():
        assert loader(files[kind]) is not None  # its own kind loads
        for other in set(files) - {kind}:
            with pytest.raises(ValueError, match=f"{files[other].name} does not hold a .* that loads here.*load_run"):
                loader(files[other])
    with pytest.raises(FileNotFoundError, match="No readable GAN run at .*missing.pt; train it with train_or_load"):
        train.load_run(tmp_path / "missing.pt")
