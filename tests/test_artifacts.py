"""The artefact store: one key rule, atomic writes, damaged files rebuilt with a warning naming them."""

import os
import pickle
import subprocess
import sys

import pytest
import torch

from metagan_lib import artifacts as A
from metagan_lib import data as D
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


def test_dataset_cache_from_an_older_format_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls = []
    path = tmp_path / "processed.pt"
    torch.save({"images": torch.zeros(1)}, path)  # written by an older version: no key
    with pytest.warns(A.DamagedArtifactWarning, match="processed.pt"):
        D._cached(path, {"name": "test"}, lambda: calls.append(1) or {"images": torch.ones(1)})
    assert calls == [1] and torch.equal(
        D._cached(path, {"name": "test"}, lambda: pytest.fail("rebuilt twice"))["images"], torch.ones(1)
    )


def test_fingerprints_tell_values_apart_and_take_a_zero_dim_tensor():
    assert A.fingerprint(torch.tensor(1.0)) != A.fingerprint(torch.tensor(2.0))
    assert A.fingerprint(torch.tensor(1.0)) != A.fingerprint(torch.tensor([1.0]))  # the shape counts
    assert A.content_hash({"weight": torch.tensor(0.5)}) == A.content_hash({"weight": torch.tensor(0.5)})
