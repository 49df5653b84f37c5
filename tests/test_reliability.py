"""Bad input is a clear error naming the argument or file; interrupted runs stop cleanly."""

import gzip
import json
import os
import signal
import subprocess
import sys
import time
import warnings
import zipfile
from functools import partial
from pathlib import Path

import nbformat
import pytest
import torch

from metagan_lib import adaptation, meta, profiles, report, reproduce
from metagan_lib import data as D
from metagan_lib.context import ContextConfig
from metagan_lib.evaluation import FeatureNet
from metagan_lib.inversion import LatentInversion
from metagan_lib.meta import MetaConfig
from metagan_lib.models import build_gan
from metagan_lib.paths import DATA_ENV_VAR
from metagan_lib.tasks import TaskSampler
from metagan_lib.train import GANConfig, new_run
from metagan_lib.vae import VAEConfig, VAEFewShot

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- profile, CLI


def test_profile_override_is_announced_and_a_bad_value_names_the_variable(monkeypatch, capsys):
    monkeypatch.setenv(profiles.PROFILE_ENV_VAR, "full")
    assert profiles.resolve_profile("smoke") == "full"
    assert "METAGAN_PROFILE=full overrides profile='smoke'" in capsys.readouterr().out
    assert profiles.resolve_profile("full") == "full" and capsys.readouterr().out == ""
    monkeypatch.setenv(profiles.PROFILE_ENV_VAR, "fast")
    with pytest.raises(ValueError, match=r"\$METAGAN_PROFILE is 'fast'"):
        profiles.resolve_profile("smoke")


def _record_runs(monkeypatch) -> list:
    calls = []
    monkeypatch.setattr(
        reproduce, "run_notebook", lambda notebook, output, parameters: calls.append((output, parameters)) or 0.0
    )
    return calls


def test_runner_refuses_bad_settings_before_the_first_notebook(monkeypatch, capsys, tmp_path):
    calls = _record_runs(monkeypatch)
    monkeypatch.setenv(profiles.PROFILE_ENV_VAR, "fast")
    assert reproduce.main(["--profile", "smoke", "--only", "01"]) == 2
    assert "METAGAN_PROFILE" in capsys.readouterr().err and calls == []
    monkeypatch.setenv(profiles.PROFILE_ENV_VAR, "full")  # the override decides the profile, the banner and the folder
    reproduce.reproduce("smoke", only=["01"], output_root=tmp_path)
    assert calls[-1][1]["profile"] == "full" and "(profile=full" in capsys.readouterr().out
    monkeypatch.delenv(profiles.PROFILE_ENV_VAR)
    reproduce.reproduce("smoke", dataset="MNIST", only=["01"], output_root=tmp_path)
    assert calls[-1][1]["dataset"] == "mnist"
    reproduce.reproduce("Smoke", device="CPU", only=["01"], output_root=tmp_path)  # names in any case, as datasets
    assert (calls[-1][1]["profile"], calls[-1][1]["device"]) == ("smoke", "cpu")
    count = len(calls)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without a GPU, on every machine
    assert reproduce.main(["--profile", "smoke", "--device", "cuda", "--only", "01"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err and len(calls) == count
    monkeypatch.setenv("METAGAN_WORKERS", "-3")  # the settings the notebooks read, refused before the first one
    assert reproduce.main(["--profile", "smoke", "--only", "01"]) == 2
    assert "METAGAN_WORKERS='-3' is not a positive integer" in capsys.readouterr().err and len(calls) == count
    monkeypatch.delenv("METAGAN_WORKERS")
    monkeypatch.setenv("METAGAN_DATA", str(tmp_path / "typo"))
    assert reproduce.main(["--profile", "smoke", "--dataset", "omniglot", "--only", "01"]) == 2
    assert "METAGAN_DATA is" in capsys.readouterr().err and len(calls) == count
    reproduce.reproduce("smoke", dataset="digits", only=["01"], output_root=tmp_path)  # embedded: no data folder read
    assert calls[-1][1]["dataset"] == "digits"


@pytest.mark.parametrize("argv", [["--profil", "smoke"], ["--profile", "smoke", "--dev", "cpu"]])
def test_abbreviated_flags_are_refused(argv, monkeypatch, capsys):
    # were an abbreviation taken, nothing would run: no notebook, no README rewritten
    monkeypatch.setattr(reproduce, "run_notebook", lambda *a, **k: pytest.fail("ran a notebook"))
    monkeypatch.setattr(report, "update_readme", lambda *a, **k: pytest.fail("rewrote the README"))
    with pytest.raises(SystemExit) as exit_info:
        reproduce.main(argv)
    assert exit_info.value.code == 2 and "error:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        report.main(["--update", "--profile", "full"])
    assert exit_info.value.code == 2 and "required: --update-readme" in capsys.readouterr().err


@pytest.mark.slow  # spawns processes
def test_a_failed_notebook_leaves_the_previous_executed_copy_in_place(tmp_path):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("raise ValueError('boom')")]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "07_broken.ipynb"
    nbformat.write(notebook, path)
    output = tmp_path / "out" / path.name
    output.parent.mkdir()
    output.write_text("previous good run")
    with pytest.raises(reproduce.NotebookFailed, match="07_broken.partial.ipynb"):
        reproduce.run_notebook(path, output, {})
    assert output.read_text() == "previous good run"


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.slow  # spawns processes
def test_sigterm_stops_the_runner_its_kernel_and_its_workers(tmp_path):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(
            "import time\nfrom metagan_lib.runtime import parallel_map\nparallel_map(time.sleep, [120, 120], workers=2)"
        )
    ]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, tmp_path / "07_sleep.ipynb")
    out = tmp_path / "runs"
    out.mkdir()
    (out / "07_sleep.ipynb").write_text("previous good run")
    script = (
        "import sys\nfrom pathlib import Path\nfrom metagan_lib import reproduce\n"
        f"reproduce.find_notebooks = lambda folder=None, only=None: [Path({str(tmp_path)!r}) / '07_sleep.ipynb']\n"
        f"sys.exit(reproduce.main(['--profile', 'smoke', '--output-dir', {str(out)!r}]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != profiles.PROFILE_ENV_VAR}
    runner = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    deadline, family = time.time() + 120, set()
    while time.time() < deadline and len(family) < 3:  # kernel + two workers
        time.sleep(0.5)
        family = {
            p
            for p in _descendants(runner.pid)
            if "spawn" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")
            or "kernel" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")
        }
    assert len(family) >= 3, f"workers never started: {family}"
    runner.send_signal(signal.SIGTERM)
    _, stderr = runner.communicate(timeout=60)
    deadline = time.time() + 30
    while time.time() < deadline and any(_alive(p) for p in family):
        time.sleep(0.5)
    assert not [p for p in family if _alive(p)], "a kernel or worker survived SIGTERM"
    assert runner.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr
    assert (out / "07_sleep.ipynb").read_text() == "previous good run"


def test_update_readme_refuses_other_profiles_and_names_a_damaged_results_file(tmp_path, capsys, monkeypatch):
    update_readme = report.update_readme
    monkeypatch.setattr(report, "update_readme", lambda *args: pytest.fail("the README must not be touched"))
    assert report.main(["--update-readme", "--profile", "smoke"]) == 2
    assert "--force" in capsys.readouterr().err
    damaged = tmp_path / "few_shot.json"
    damaged.write_text('{"by_shots": {')
    with pytest.raises(ValueError, match="few_shot.json is not valid JSON"):
        report.read_results(damaged)
    damaged.write_text(json.dumps({"by_shots": {}}))
    with pytest.raises(ValueError, match="lacks dataset, downstream, methods, settings"):
        report.read_results(damaged)
    damaged.write_text("3")
    with pytest.raises(ValueError, match="holds JSON of type int, not notebook 06's results"):
        report.read_results(damaged)
    described = {
        "by_shots": {"5": {"a": {}, "_real_diversity": {}}},
        "downstream": {},
        "dataset": "glyphs",
        "settings": {},
    }
    damaged.write_text(json.dumps({**described, "methods": {}}))
    with pytest.raises(ValueError, match="scores a in by_shots but does not describe them in methods"):
        report.read_results(damaged)
    damaged.write_text(json.dumps({**described, "methods": {"a": {}}, "profile": "smoke"}))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:start -->\nfull numbers\n<!-- results:end -->\n")
    with pytest.raises(ValueError, match="few_shot.json was written by the 'smoke' profile, not 'full'"):
        update_readme(readme, tmp_path, "full")  # smoke results copied into results/full/ never reach the README
    assert "full numbers" in readme.read_text()
    with pytest.raises(SystemExit) as stop:  # an unknown profile is named as such, not as one that would replace tables
        report.main(["--update-readme", "--profile", "bogus"])
    assert stop.value.code == 2 and "invalid choice: 'bogus'" in capsys.readouterr().err


# ---------------------------------------------------------------- data files


def test_data_setting_pointing_nowhere_is_an_error_and_glyphs_need_no_data(monkeypatch, tmp_path):
    missing = tmp_path / "typo"
    monkeypatch.setenv(DATA_ENV_VAR, str(missing))
    with pytest.raises(FileNotFoundError, match=r"\$METAGAN_DATA is .*typo.*not a folder"):
        D.load_dataset("mnist")
    assert not missing.exists()
    assert D.load_dataset("glyphs").name == "glyphs"


def _small_omniglot(folder: Path, damage: str) -> None:
    folder.mkdir(parents=True)
    for name in D.OMNIGLOT_SMALL_ZIPS:
        with zipfile.ZipFile(folder / name, "w") as archive:
            archive.writestr("images_background_small1/Greek/character01/0001_01.png", b"not really a png" * 50)
    target = folder / D.OMNIGLOT_SMALL_ZIPS[0]
    raw = bytearray(target.read_bytes())
    if damage == "truncated":
        target.write_bytes(bytes(raw[: len(raw) // 2]))
    elif damage == "bit flip":
        raw[60] ^= 0xFF  # inside the stored member: its CRC no longer matches
        target.write_bytes(bytes(raw))
    else:
        with zipfile.ZipFile(target, "w") as archive:
            archive.writestr("readme.txt", "no images here")


@pytest.mark.parametrize("damage", ["truncated", "bit flip", "no images"])
def test_damaged_omniglot_zip_names_the_file(tmp_path, monkeypatch, damage):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _small_omniglot(tmp_path / "omniglot", damage)
    with pytest.raises(D.DatasetError, match=f"{D.OMNIGLOT_SMALL_ZIPS[0]} (is damaged|holds no Omniglot images)"):
        D.load_omniglot(tmp_path / "omniglot", download=False)


def _idx(values: bytes, shape: tuple[int, ...]) -> bytes:
    return bytes([0, 0, 8, len(shape)]) + b"".join(n.to_bytes(4, "big") for n in shape) + values


MNIST_DAMAGE = {
    "truncated gzip": "t10k-images-idx3-ubyte.gz is damaged",
    "label count": "t10k-labels-idx1-ubyte.gz holds 2 labels but",
    "label 42": "t10k-labels-idx1-ubyte.gz holds label 42, not a digit 0-9",
    "files swapped": r"should hold images \[N, 28, 28\] .* \(swapped or wrong files\?\)",
    "32x32 images": r"should hold images \[N, 28, 28\] .* hold \(3, 32, 32\)",
    "header only": "t10k-images-idx3-ubyte.gz is truncated inside its header",
}


@pytest.mark.parametrize("damage", sorted(MNIST_DAMAGE))
def test_damaged_mnist_files_name_the_file(tmp_path, damage):
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = gzip.compress(_idx(bytes(3 * 28 * 28), (3, 28, 28)))
    if damage == "32x32 images":
        images = gzip.compress(_idx(bytes(3 * 32 * 32), (3, 32, 32)))
    elif damage == "header only":
        images = gzip.compress(bytes([0, 0, 8, 3]))
    label_bytes = {"label count": bytes([1, 2]), "label 42": bytes([1, 42, 3])}.get(damage, bytes([1, 2, 3]))
    labels = gzip.compress(_idx(label_bytes, (len(label_bytes),)))
    if damage == "files swapped":
        images, labels = labels, images
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(
        images[: len(images) // 2] if damage == "truncated gzip" else images
    )
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(labels)
    expected = MNIST_DAMAGE[damage]
    with pytest.raises(D.DatasetError, match=expected):
        D.load_mnist(tmp_path / "mnist", download=False)


# ---------------------------------------------------------------- API arguments

BAD_CONFIGS = [
    (GANConfig, dict(z_dim=0), "z_dim"),
    (GANConfig, dict(width=12), "width"),
    (GANConfig, dict(steps=-1), "steps"),
    (GANConfig, dict(batch_size=0), "batch_size"),
    (GANConfig, dict(d_steps=0), "d_steps"),
    (GANConfig, dict(r1_gamma=-1.0), "r1_gamma"),
    (GANConfig, dict(grad_clip=-1.0), "grad_clip"),
    (GANConfig, dict(lr_g=0.0), "lr_g"),
    (GANConfig, dict(architecture="resnet"), "architecture"),
    (MetaConfig, dict(inner_lr=-0.1), "inner_lr"),
    (MetaConfig, dict(meta_lr=0.0), "meta_lr"),
    (MetaConfig, dict(z_dim=0), "z_dim"),
    (MetaConfig, dict(queries=0), "queries"),
    (MetaConfig, dict(fake_batch=0), "fake_batch"),
    (MetaConfig, dict(width=4), "width"),
    (ContextConfig, dict(inner_lr=-1.0), "inner_lr"),
    (ContextConfig, dict(context_dim=0), "context_dim"),
    (ContextConfig, dict(r1=-1.0), "r1"),
    (GANConfig, dict(augment="yes"), "augment"),  # yes/no settings take booleans: 'no' would count as true
    (GANConfig, dict(betas=0.5), "betas"),
    (MetaConfig, dict(first_order="yes"), "first_order"),
    (ContextConfig, dict(shot_encoder="no"), "shot_encoder"),
    (VAEConfig, dict(steps=-5), "steps"),
    (VAEConfig, dict(steps=2.5), "steps"),
    (VAEConfig, dict(batch_size=0), "batch_size"),
    (VAEConfig, dict(z_dim=0), "z_dim"),
    (VAEConfig, dict(width=30), "width"),
    (VAEConfig, dict(lr=-1.0), "lr"),
    (VAEConfig, dict(adversarial_weight=-1.0), "adversarial_weight"),
    (partial(VAEFewShot, None), dict(noise_scale=-1.0), "noise_scale"),
    (partial(LatentInversion, None), dict(lr=0.0), "lr"),
]


@pytest.mark.parametrize("config_class, changes, name", BAD_CONFIGS)
def test_configs_refuse_values_that_make_no_sense(config_class, changes, name):
    with pytest.raises(ValueError, match=rf"^{name}=.* is not accepted: {name} must be"):
        config_class(**changes)


def test_reptile_may_have_no_query_images():
    assert MetaConfig(method="reptile", queries=0).queries == 0


@pytest.fixture(scope="module")
def tiny_meta():
    return meta.new_meta_gan(MetaConfig(z_dim=8, width=8, fake_batch=4), "cpu", seed=0)


@pytest.mark.parametrize(
    "support, match",
    [
        (torch.full((5, 1, 28, 28), 200.0), r"support images range=.* within \[-1, 1\]"),
        (torch.full((5, 1, 28, 28), float("nan")), "support images=.* must be finite"),
        (torch.zeros(0, 1, 28, 28), r"support images.shape=.* must be non-empty"),
        (torch.zeros(5, 3, 28, 28), r"support images must have shape \[batch, 1, 28, 28\]"),
        (
            torch.rand(5, 1, 28, 28),
            r"support images range=.* look like images in \[0, 1\]; convert them with x \* 2 - 1",
        ),
    ],
)
def test_adapt_refuses_bad_support_images(tiny_meta, support, match):
    with pytest.raises(ValueError, match=match):
        adaptation.adapt(tiny_meta, support, steps=1)


def test_adapt_converts_uint8_like_training_and_refuses_bad_counts(tiny_meta):
    images = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    as_uint8 = adaptation.adapt(tiny_meta, images, steps=1)
    as_float = adaptation.adapt(tiny_meta, images.float() / 127.5 - 1, steps=1)
    assert all(torch.equal(as_uint8.g_params[k], as_float.g_params[k]) for k in as_uint8.g_params)
    as_double = adaptation.adapt(tiny_meta, images.double() / 127.5 - 1, steps=1)  # cast to the network's float32
    assert all(torch.allclose(as_double.g_params[k], as_float.g_params[k]) for k in as_float.g_params)
    signed = images.float() / 127.5 - 1
    for call, name in [
        (lambda: adaptation.adapt(tiny_meta, signed, steps=-3), "steps"),
        (lambda: adaptation.sample(tiny_meta, None, n=-1), "n"),
        (lambda: new_run(GANConfig(z_dim=8, width=8), "cpu").sample(-1), "n"),
    ]:
        with pytest.raises(ValueError, match=rf"^{name}=-?\d+ is not accepted"):
            call()


@pytest.mark.parametrize(
    "classes, ways, match",
    [
        ([3, 3], 2, "duplicates"),
        ([0, 10_000], 2, r"indices in \[0, 950\]"),
        ([-1, 2], 2, "indices in"),
        ([1, 2, 3], 2.5, "ways must be an integer"),
        ([0.5, 1.7], 2, "classes must be integer class indices"),  # (they were truncated to 0 and 1)
    ],
)
def test_task_sampler_refuses_bad_classes_and_counts(glyphs, classes, ways, match):
    with pytest.raises((ValueError, TypeError), match=match):
        TaskSampler(glyphs, torch.tensor(classes), seed=0).sample(1, ways=ways, shots=1)


@pytest.mark.parametrize(
    "classes, error, match",
    [
        ("seen", TypeError, "classes must be class indices, e.g. dataset.seen_classes; got 'seen'"),
        ([], ValueError, "needs at least one class; classes is empty"),
        (torch.tensor([], dtype=torch.int64), ValueError, "classes is empty"),
    ],
)
def test_task_sampler_names_classes_that_are_no_indices_or_none(glyphs, classes, error, match):
    with pytest.raises(error, match=match):
        TaskSampler(glyphs, classes, seed=0)
    assert TaskSampler(glyphs, torch.tensor(3), seed=0).classes.tolist() == [3]  # one index: one class


def test_a_feature_network_refuses_sizes_it_cannot_build_by_name():
    for kwargs, match in (({"num_classes": 0}, "num_classes=0"), ({"num_classes": 3, "width": 12}, "width=12")):
        with pytest.raises(ValueError, match=match):
            FeatureNet(**kwargs)


@pytest.mark.parametrize("width, z_dim, match", [(12, 64, "width=12 .* multiple of 8"), (32, -1, "z_dim=-1")])
def test_build_gan_refuses_sizes_it_cannot_build_by_name(width, z_dim, match):
    with pytest.raises(ValueError, match=match):
        build_gan("conv", z_dim=z_dim, width=width)


@pytest.mark.parametrize("tasks", [0, -1, 2.0])
def test_task_sampler_refuses_a_task_count_that_is_not_positive(glyphs, tasks):
    with pytest.raises(ValueError, match=f"tasks must be a positive integer; got {tasks}"):
        TaskSampler(glyphs, glyphs.seen_classes[:5], seed=0).sample(tasks, ways=2, shots=1)


@pytest.mark.parametrize("case", ["not an image", "no seen characters", "empty folders"])
def test_omniglot_files_that_hold_no_usable_characters_are_named(tmp_path, monkeypatch, case):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "omniglot"
    if case == "empty folders":  # torchvision's layout, both sets present but empty
        for name in ("images_background", "images_evaluation"):
            (folder / "omniglot-py" / name).mkdir(parents=True)
        expected = r"omniglot-py holds no seen Omniglot characters"
    else:
        folder.mkdir(parents=True)
        alphabets = ("Greek",) if case == "no seen characters" else ("Latin", "Greek")  # Greek is an unseen alphabet
        for name in D.OMNIGLOT_SMALL_ZIPS:
            with zipfile.ZipFile(folder / name, "w") as archive:
                for alphabet in alphabets:
                    archive.writestr(f"images_background_small1/{alphabet}/character01/0001_01.png", b"not a png")
        expected = (
            "holds no seen Omniglot characters"
            if case == "no seen characters"
            else r"An image of Latin/character01 in .*omniglot cannot be read \(UnidentifiedImageError\)"
        )
    with pytest.raises(D.DatasetError, match=expected):
        D.load_omniglot(folder, download=False)


def test_places_that_cannot_be_folders_are_named(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    assert reproduce.main(["--profile", "smoke", "--only", "01", "--output-dir", str(blocker / "runs")]) == 2
    assert f"{blocker} is a file; choose another --output-dir" in capsys.readouterr().err
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    with pytest.raises(NotADirectoryError, match="point XDG_CACHE_HOME at a folder"):
        profiles.artifact_path("smoke", "glyphs", 0, "04_maml")
    monkeypatch.setenv("XDG_CACHE_HOME", "/proc/metagan-cache")  # a file system where no folder can be made
    with pytest.raises(FileNotFoundError, match="cannot be made .*point XDG_CACHE_HOME at a writable folder"):
        profiles.artifact_path("smoke", "glyphs", 0, "04_maml")


@pytest.mark.parametrize("name", ["../../escape", "sub/04_maml", ""])
def test_an_artefact_name_is_a_plain_file_name(name):
    with pytest.raises(ValueError, match="must be a plain file name"):
        profiles.artifact_path("smoke", "glyphs", 0, name)


def test_contexts_of_the_wrong_size_are_named():
    from metagan_lib import context

    model = context.new_context_gan(ContextConfig(width=8, context_dim=6), seed=0)
    with pytest.raises(
        ValueError, match=r"contexts.shape=\(2, 7\) is not accepted: contexts.shape must be \[classes, 6\]"
    ):
        context.sample_contexts(model, torch.zeros(2, 7), 4)


def test_names_are_taken_in_any_case_and_non_names_are_named(monkeypatch):
    assert profiles.check_profile(" Smoke ") == "smoke"
    assert profiles.settings("06", "Full") == profiles.settings("06", "full")
    assert profiles.figure_dir("FULL") == profiles.figure_dir("full")
    monkeypatch.setenv(profiles.PROFILE_ENV_VAR, "SMOKE")
    assert profiles.resolve_profile("smoke") == "smoke"
    from metagan_lib.runtime import choose_device

    assert choose_device(torch.device("cpu")) == torch.device("cpu") == choose_device("CPU")
    with pytest.raises(TypeError, match="device must be a string"):
        choose_device(5)
    for name in (None, 5):
        with pytest.raises(D.DatasetError, match=f"Unknown dataset {name!r}"):
            D.load_dataset(name)


def test_a_sampler_on_another_device_than_the_model_is_named_before_training(glyphs):
    from types import SimpleNamespace

    from metagan_lib import checks
    from metagan_lib import context as C

    on_gpu = SimpleNamespace(device=torch.device("cuda", 0))  # a sampler's device, as a GPU machine would have it
    with pytest.raises(ValueError, match=r"sampler.device='cuda:0' is not accepted.*cpu, where the model is"):
        meta.MetaTrainer(meta.new_meta_gan(MetaConfig()), on_gpu)
    with pytest.raises(ValueError, match=r"sampler.device='cuda:0' is not accepted.*cpu, where the model is"):
        C.ContextTrainer(C.new_context_gan(C.ContextConfig(width=8)), on_gpu)
    checks.same_device("d", torch.device("cuda"), torch.device("cuda", 0), "")  # no index: the current GPU, 0 here
    for other in ("cuda", "cuda:0"):
        with pytest.raises(ValueError, match="cuda"):
            checks.same_device("d", torch.device(other), torch.device("cuda", 1), "")


def write_omniglot_png(path: Path, value: int = 255, size: int = 105) -> None:
    """A grey PNG (``value``: 255 white paper, 0 solid ink), ``size`` x ``size`` pixels, as Omniglot stores them."""
    import io

    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.new("L", (size, size), value).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())


def test_a_rewritten_omniglot_image_is_read_again_not_taken_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "omniglot" / "omniglot-py"

    for name, alphabet in (("images_background", "Latin"), ("images_evaluation", "Greek")):
        for i in range(2):
            write_omniglot_png(root / name / alphabet / "character01" / f"000{i}.png", 255)  # white paper: no ink
    first = D.load_omniglot(tmp_path / "omniglot", download=False)
    assert first.images[first.labels == 1].max() == 0
    for i in range(2):  # the unseen character's images rewritten in place as solid ink
        path = root / "images_evaluation" / "Greek" / "character01" / f"000{i}.png"
        write_omniglot_png(path, 0)
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # a later write, surely
    again = D.load_omniglot(tmp_path / "omniglot", download=False)
    assert again.images[again.labels == 1].min() == 255
    moved = root / "images_evaluation" / "Greek" / "character02" / "0001.png"  # a relabel: sizes and times unchanged
    moved.parent.mkdir()
    os.replace(root / "images_evaluation" / "Greek" / "character01" / "0001.png", moved)
    assert D.load_omniglot(tmp_path / "omniglot", download=False).class_names[-1] == "Greek/character02"


@pytest.mark.parametrize("case", ["an empty character folder", "images of two sizes"])
def test_an_incomplete_omniglot_character_is_named_not_stacked_inside_torch(tmp_path, monkeypatch, case):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "omniglot" / "omniglot-py"

    write_omniglot_png(root / "images_background" / "Latin" / "character01" / "0001.png")
    write_omniglot_png(root / "images_evaluation" / "Greek" / "character01" / "0001.png")
    if case == "an empty character folder":  # an interrupted extraction
        (root / "images_background" / "Latin" / "character02").mkdir()
        expected = r"Latin/character02 in .* holds no .png image; the copy is incomplete"
    else:
        write_omniglot_png(root / "images_background" / "Latin" / "character01" / "0002.png", size=64)
        expected = r"Latin/character01 in .* holds images of several sizes \(\(64, 64\), \(105, 105\)\)"
    with pytest.raises(D.DatasetError, match=expected):
        D.load_omniglot(tmp_path / "omniglot", download=False)


def test_relative_folder_settings_are_made_absolute_before_a_kernel_starts_elsewhere(tmp_path, monkeypatch):
    from metagan_lib.paths import absolute_path_settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(DATA_ENV_VAR, "shared/data")
    monkeypatch.setenv("XDG_CACHE_HOME", "~/cache")  # absolute once expanded: left as given
    absolute_path_settings()
    assert os.environ[DATA_ENV_VAR] == str(tmp_path / "shared" / "data")
    assert os.environ["XDG_CACHE_HOME"] == "~/cache"


def test_no_notebooks_and_a_dead_kernel_are_named(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"No notebook NN_\*.ipynb in .*pip install -e \."):
        reproduce.find_notebooks(tmp_path)  # as outside a checkout: it printed an empty table and exited 0
    import papermill

    def die(*args, **kwargs):
        raise RuntimeError("Kernel died")  # nbclient's DeadKernelError is a RuntimeError

    monkeypatch.setattr(papermill, "execute_notebook", die)
    notebook = reproduce.find_notebooks(only=["01"])[0]
    with pytest.raises(reproduce.NotebookFailed, match=r"^01_gan_from_formulas.ipynb stopped: RuntimeError: Kernel"):
        reproduce.run_notebook(notebook, tmp_path / "out.ipynb", {"profile": "smoke"})


def test_options_that_would_be_ignored_or_fail_late_are_refused_up_front(tmp_path, capsys):
    from metagan_lib import bench

    with pytest.raises(SystemExit):
        bench.main(["--compile", "--quick"])  # --quick was ignored: minutes of compiling
    assert "--compile has no quick version" in capsys.readouterr().err
    assert report.main(["--update-readme", "--profile", "Smoke"]) == 2  # any case, as elsewhere; then refused
    assert "--profile smoke would replace them" in capsys.readouterr().err


def test_a_package_outside_a_checkout_warns_that_it_trains_every_network(tmp_path, monkeypatch):
    from metagan_lib import artifacts, paths

    monkeypatch.setattr(paths, "repo_root", lambda: tmp_path)  # as a non-editable install: no artifacts/ beside it
    artifacts.warn_no_shipped_folder.cache_clear()
    with pytest.warns(UserWarning, match=r"No shipped networks at .*: every network is trained here"):
        assert artifacts.shipped_dir() == tmp_path / "artifacts"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process, not once per network
        artifacts.shipped_dir()
