"""python -m metagan_lib.generate: shots read as the dataset's images are made, the shipped fifth learner loaded under
the notebooks' keys, samples of the shown class, and a clear error for each bad input."""

import json
import warnings
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from metagan_lib import context, data, evaluation, paths, profiles
from metagan_lib import generate as G
from metagan_lib.artifacts import shipped_dir
from metagan_lib.data import load_dataset
from metagan_lib.images import to_signed, to_uint8


@pytest.fixture(scope="module")
def glyphs():
    return load_dataset("glyphs")


@pytest.fixture(scope="module")
def fifth_learner(glyphs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the shipped file loads under the key the notebooks trained it with: no warning
        return G.fifth_learner_method(G.load_fifth_learner(glyphs, device=torch.device("cpu")), "glyphs")


@pytest.fixture(scope="module")
def latent_inversion(glyphs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the shipped GAN, feature network and setting load under notebook 06's keys
        return G.load_latent_inversion(glyphs, device=torch.device("cpu"))


def _write_png(path, pixels, mode="L"):
    Image.fromarray(pixels.numpy(), mode=mode).save(path)
    return path


def test_a_dataset_image_written_to_png_reads_back_unchanged_in_either_polarity(glyphs, tmp_path):
    images = glyphs.images[glyphs.labels == glyphs.unseen_classes[0]][:3]  # [3, 1, 28, 28], strokes 255 on 0
    light = [_write_png(tmp_path / f"light{i}.png", image[0]) for i, image in enumerate(images)]
    dark = [_write_png(tmp_path / f"dark{i}.png", 255 - image[0]) for i, image in enumerate(images)]  # ink on paper
    assert torch.equal(G.read_shots(light, "glyphs"), images)
    assert torch.equal(G.read_shots(dark, "glyphs"), images)
    assert torch.equal(G.read_shots([tmp_path], "glyphs"), torch.cat([images, images]))  # a folder: its files, sorted


def test_a_larger_drawing_is_cropped_and_centred_as_the_glyphs_are(tmp_path):
    paper = torch.full((90, 60), 255, dtype=torch.uint8)
    paper[10:70, 20:30] = 0  # a dark bar, 60 x 10, off centre, on white paper
    shot = G.read_shots([_write_png(tmp_path / "bar.png", paper)], "glyphs")[0, 0]
    rows, cols = torch.nonzero(shot > 127, as_tuple=True)
    assert rows.max() - rows.min() + 1 == 20 and 3 <= cols.max() - cols.min() + 1 <= 4  # longer side in a 20-px box
    assert (rows.min() + rows.max()) / 2 == pytest.approx(13.5, abs=0.5)  # centred on the 28x28 canvas
    assert (cols.min() + cols.max()) / 2 == pytest.approx(13.5, abs=1.0)


@pytest.mark.parametrize("colour", [0, 255])
def test_on_a_transparent_canvas_the_opaque_pixels_are_the_strokes_whatever_their_colour(colour, tmp_path):
    rgba = torch.zeros(28, 28, 4, dtype=torch.uint8)  # transparent everywhere ...
    rgba[8:20, 12:16] = torch.tensor([colour, colour, colour, 255], dtype=torch.uint8)  # ... but an opaque stroke
    shot = G.read_shots([_write_png(tmp_path / "stroke.png", rgba, "RGBA")], "glyphs")[0, 0]
    assert shot[8:20, 12:16].eq(255).all() and shot.sum() == 255 * 12 * 4


def _drawing(size=(200, 200), paper=255, ink=0, width=12):
    """A dark 'L' on light paper, as a user would draw it: ``[H, W]`` uint8."""
    image = torch.full(size, paper, dtype=torch.float32)
    image[40:160, 60 : 60 + width] = ink
    image[160 - width : 160, 60:140] = ink
    return image


def _fitted_box(shot):
    rows, cols = torch.nonzero(shot > 64, as_tuple=True)
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def test_a_noisy_background_is_not_taken_for_strokes(tmp_path):
    clean = G.read_shots([_write_png(tmp_path / "clean.png", _drawing().to(torch.uint8))], "glyphs")[0, 0]
    noisy_paper = _drawing(paper=150) + 20 * torch.randn(200, 200, generator=torch.Generator().manual_seed(0))
    noisy = G.read_shots([_write_png(tmp_path / "noisy.png", noisy_paper.clamp(0, 255).to(torch.uint8))], "glyphs")[
        0, 0
    ]
    assert _fitted_box(clean) == (20, 13) and _fitted_box(noisy)[0] == 20  # cropped to the L, not to the noise
    assert abs(_fitted_box(noisy)[1] - 13) <= 1
    near_the_l = torch.nn.functional.max_pool2d((clean > 0).float()[None], 3, stride=1, padding=1)[0] > 0
    assert not (noisy > 64)[~near_the_l].any()  # no visible specks on the canvas


def test_thin_strokes_stay_visible_once_shrunk(tmp_path):
    thin = G.read_shots([_write_png(tmp_path / "thin.png", _drawing(width=1).to(torch.uint8))], "glyphs")[0, 0]
    assert thin.max() == 255 and _fitted_box(thin)[0] == 20


def test_a_photo_is_turned_upright_by_its_exif_orientation(tmp_path):
    upright = _drawing().to(torch.uint8)
    stored = torch.rot90(upright, 1)  # a camera stores the pixels turned and names the turn in EXIF
    image = Image.fromarray(stored.numpy(), mode="L")
    exif = image.getexif()
    exif[0x0112] = 6  # orientation 6: turn 90 degrees clockwise to view
    image.save(tmp_path / "photo.jpg", exif=exif, quality=95)
    shot = G.read_shots([tmp_path / "photo.jpg"], "glyphs")[0, 0]
    expected = G.read_shots([_write_png(tmp_path / "upright.png", upright)], "glyphs")[0, 0]
    assert (shot.float() - expected.float()).abs().mean() < 8  # the same L, up to JPEG's loss (turned: ~60)


def test_omniglot_shots_are_shrunk_whole_as_its_scans_are(tmp_path):
    scan = torch.full((105, 105), 255, dtype=torch.uint8)
    scan[20:80, 40:47] = 0  # a black stroke on white, as Omniglot's PNGs
    path = _write_png(tmp_path / "scan.png", scan)
    expected = to_uint8(data._omniglot_resize([data._omniglot_png_to_ink(path.read_bytes())]))
    assert torch.equal(G.read_shots([path], "omniglot"), expected)


@pytest.mark.parametrize("method_fixture", ["fifth_learner", "latent_inversion"])
def test_each_shipped_method_draws_the_class_it_is_shown(glyphs, method_fixture, request):
    method = request.getfixturevalue(method_fixture)
    net = evaluation.train_or_load_feature_net(
        profiles.artifact_path("full", "glyphs", 0, "06_feature_net"), glyphs, 2000, progress=False
    )  # notebook 06's scoring network, shipped
    classes = glyphs.unseen_classes[:5].tolist()
    features, prototypes = [], []
    for index in classes:
        shots, held_out = G.class_shots(glyphs, index, 5)
        samples, diverged = G.generate_from_shots(method, shots, 10, device=torch.device("cpu"), seed=0)
        assert samples.shape == (10, 1, 28, 28) and diverged == 0.0
        features.append(evaluation.embed(net, samples))
        prototypes.append(evaluation.embed(net, held_out).mean(0))
    labels = torch.arange(len(classes)).repeat_interleave(10)
    fidelity = evaluation.class_fidelity(torch.cat(features), labels, torch.stack(prototypes))
    assert fidelity >= 0.6  # 5-way, chance 0.2; notebook 06 measures 0.865 at 20-way
    with pytest.raises(ValueError, match=r"n=0 is not accepted: n must be a positive integer"):
        G.generate_from_shots(method, shots, 0, device=torch.device("cpu"))


def test_latent_inversion_is_notebook_06s_baseline_and_draws_around_each_shot(glyphs, latent_inversion):
    stored = torch.load(shipped_dir() / "full" / "glyphs" / "seed0" / "06_setting_inversion_noise.pt")
    assert latent_inversion.model.noise_scale == stored["artefact"]["best"]  # the noise 06 chose on seen classes
    committed = json.loads((paths.repo_root() / "results" / "full" / "few_shot.json").read_text())["methods"]
    assert committed["latent inversion"] == {"kind": "invert", "role": "baseline", "steps": latent_inversion.steps}
    assert G.adaptation_summary(latent_inversion) == "200 Adam steps on each shot's latent, noise 0.1 around them"
    shots, _ = G.class_shots(glyphs, G.unseen_class(glyphs, "Q"), 5)
    samples, _ = G.generate_from_shots(latent_inversion, shots, 10, device=torch.device("cpu"))
    distances = torch.cdist(samples.flatten(1), to_signed(shots).flatten(1))  # [10 samples, 5 shots]
    assert torch.equal(distances.argmin(1), torch.arange(10) % 5)  # sample i is drawn around shot i mod K


def test_latent_inversion_is_loaded_only_under_notebook_06s_key(glyphs, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(G.NotTrainedError, match=r"reproduce --profile smoke --dataset glyphs --only 06\)\.$"):
        G.load_latent_inversion(glyphs, device=torch.device("cpu"), profile="smoke")  # nothing ships for smoke
    settings = profiles.settings

    def other_steps(
        notebook, profile
    ):  # as if notebook 06 now ran inversion for 100 steps: the shipped choice is stale
        found = settings(notebook, profile)
        return SimpleNamespace(**{**vars(found), "inversion_steps": 100}) if notebook == "06" else found

    monkeypatch.setattr(profiles, "settings", other_steps)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning announces a retraining that does not happen: the error says it
        with pytest.raises(G.NotTrainedError) as error:
            G.load_latent_inversion(glyphs, device=torch.device("cpu"))
    assert "--only 06). The shipped file " in str(error.value)
    assert "06_setting_inversion_noise.pt was trained under another key (differing in: methods); not loaded. " in str(
        error.value
    )


def test_nothing_is_trained_until_every_other_method_is_found_and_one_error_names_all(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(context, "guide_network", lambda *args, **kwargs: pytest.fail("meta-training started"))
    digits = load_dataset("digits")  # nothing of notebooks 05-06 ships for digits
    with pytest.raises(G.NotTrainedError) as error:
        G.load_methods(["fifth-learner", "latent-inversion"], digits, device=torch.device("cpu"), train=True)
    message = str(error.value)
    assert "No latent-inversion baseline for digits" in message and "--dataset digits --only 06)." in message
    assert "No meta-trained context Reptile-query for digits" in message  # found missing, not trained: 06 is missing


def test_both_methods_draw_from_the_same_shots_into_one_grid(glyphs, tmp_path, capsys):
    argv = ["--unseen-class", "Q", "--n", "6", "--out", str(tmp_path / "both.png"), "--save", str(tmp_path / "both.pt")]
    assert G.main([*argv, "--method", "fifth-learner", "latent-inversion"]) == 0
    out = capsys.readouterr().out
    assert "the fifth learner (context Reptile-query) (glyphs), 5 shots: 5 context steps; 6 samples" in out
    assert "latent inversion (glyphs), 5 shots: 200 Adam steps on each shot's latent, noise 0.1 around them" in out
    both = torch.load(tmp_path / "both.pt")
    assert list(both["samples"]) == ["fifth-learner", "latent-inversion"]
    assert all(samples.shape == (6, 1, 28, 28) for samples in both["samples"].values())
    one = ["--unseen-class", "Q", "--n", "6", "--out", str(tmp_path / "one.png"), "--save", str(tmp_path / "one.pt")]
    assert G.main([*one, "--method", "latent-inversion"]) == 0  # a method's samples do not depend on the other's
    assert torch.equal(
        torch.load(tmp_path / "one.pt")["samples"]["latent-inversion"], both["samples"]["latent-inversion"]
    )
    assert Image.open(tmp_path / "both.png").size[1] > Image.open(tmp_path / "one.png").size[1]  # a panel more


def test_the_command_writes_the_grid_and_tensors_and_repeats_with_its_seed(glyphs, tmp_path, capsys):
    runs = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        argv = ["--unseen-class", "Q", "--n", "12", "--seed", str(seed), "--out", str(tmp_path / f"{name}.png")]
        assert G.main([*argv, "--save", str(tmp_path / f"{name}.pt")]) == 0
        runs.append(torch.load(tmp_path / f"{name}.pt"))
        assert Image.open(tmp_path / f"{name}.png").size[0] > 300
    assert "5 shots: 5 context steps; 12 samples" in capsys.readouterr().out
    samples = [run["samples"]["fifth-learner"] for run in runs]
    assert list(runs[0]["samples"]) == ["fifth-learner"]
    assert samples[0].shape == (12, 1, 28, 28) and samples[0].dtype == torch.uint8
    assert torch.equal(samples[0], samples[1]) and not torch.equal(samples[0], samples[2])
    assert torch.equal(runs[0]["shots"], G.class_shots(glyphs, G.unseen_class(glyphs, "Q"), 5)[0])


def test_image_files_give_the_same_samples_as_the_same_images_taken_from_the_dataset(glyphs, tmp_path):
    index = G.unseen_class(glyphs, "Q")
    shots, _ = G.class_shots(glyphs, index, 5)
    for i, shot in enumerate(shots):
        _write_png(tmp_path / f"shot{i}.png", 255 - shot[0])  # as a user would draw them: dark on white
    from_files, from_class = tmp_path / "files.pt", tmp_path / "class.pt"
    assert G.main([str(tmp_path), "--out", str(tmp_path / "f.png"), "--save", str(from_files)]) == 0
    assert G.main(["--unseen-class", "U+0051 Q", "--out", str(tmp_path / "c.png"), "--save", str(from_class)]) == 0
    assert torch.equal(torch.load(from_files)["shots"], shots)
    assert torch.equal(
        torch.load(from_files)["samples"]["fifth-learner"], torch.load(from_class)["samples"]["fifth-learner"]
    )


def test_without_a_trained_network_it_names_what_to_run_and_trains_only_when_asked(glyphs, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(
        G.NotTrainedError, match=r"reproduce --profile smoke --dataset glyphs --only 05\), or add --train"
    ):
        G.load_fifth_learner(glyphs, device=torch.device("cpu"), profile="smoke")  # nothing ships for smoke
    trained = G.load_fifth_learner(glyphs, device=torch.device("cpu"), profile="smoke", train=True)
    loaded = G.load_fifth_learner(glyphs, device=torch.device("cpu"), profile="smoke")  # now cached: no error
    assert all(torch.equal(trained.meta_params[k], loaded.meta_params[k]) for k in trained.meta_params)
    assert isinstance(trained, context.ContextMetaGAN)
    shots, _ = G.class_shots(glyphs, G.unseen_class(glyphs, "Q"), 5)
    omniglot_method = G.fifth_learner_method(trained, "omniglot")  # Omniglot's test setting: its sample filter
    filtered, _ = G.generate_from_shots(omniglot_method, shots, 3, device=torch.device("cpu"))
    assert filtered.shape == (3, 1, 28, 28) and context.chosen_test_filter(trained.config, "omniglot") is not None
    assert "40 context steps, 4x the samples drawn and 1 in 4 kept" == G.adaptation_summary(omniglot_method)


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "give the shots as image files or folders, or --unseen-class NAME"),
        (["x.png", "--unseen-class", "Q"], "give the shots as image files or folders, or --unseen-class NAME"),
        (["--unseen-class", "Q", "--n", "0"], "--n must be at least 1, got 0"),
        (["--unseen-class", "Q", "--out", "q.jpg"], "--out q.jpg: give a file name ending in .png"),
        (["--unseen-class", "Q", "--out", "q.PNG"], "--out q.PNG: give a file name ending in .png"),
        (["a.png", "b.png", "--shots", "2"], "--shots picks how many images of --unseen-class to show"),
        (["a.png", "--shots", "5"], "--shots picks how many images of --unseen-class to show"),  # even at its default
        (["--unseen-class", "Q", "--save", "q.npz"], "--save q.npz: give a .pt file name"),
        (
            ["--unseen-class", "Q", "--method", "gan"],
            "--method gan: no such method; choose from fifth-learner, latent-",
        ),
        (
            ["--method", "latent-inversion", "."],
            "(put the image files before --method, or end its list with --)",
        ),
        (
            ["--unseen-class", "Q", "--method", "latent-inversion", "--train"],
            "drop --train, or add --method fifth-learner",
        ),
        (
            ["--unseen-class", "Q", "--method", "latent-inversion", "latent-inversion"],
            "--method names each method once",
        ),
    ],
)
def test_bad_arguments_are_refused_before_any_work(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        G.main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def _error_of(argv, capsys) -> str:
    assert G.main(argv) == 2
    return capsys.readouterr().err


def test_bad_shots_get_one_line_naming_the_file_and_the_fix(tmp_path, capsys):
    missing = tmp_path / "missing.png"
    assert f"error: {missing} does not exist; give image files or a folder" in _error_of([str(missing)], capsys)
    (tmp_path / "empty").mkdir()
    assert "holds no image files" in _error_of([str(tmp_path / "empty")], capsys)
    (tmp_path / "notes.png").write_text("not an image")
    assert "notes.png cannot be read as an image" in _error_of([str(tmp_path / "notes.png")], capsys)
    flat = _write_png(tmp_path / "flat.png", torch.full((28, 28), 200, dtype=torch.uint8))
    assert "flat.png is one flat grey level" in _error_of([str(flat)], capsys)


def test_class_names_are_checked_against_the_unseen_classes(glyphs, capsys):
    seen_name = glyphs.class_names[glyphs.seen_classes[0]]
    assert f"{seen_name!r} is a seen class of glyphs" in _error_of(["--unseen-class", seen_name], capsys)
    assert "'A' is a seen class of glyphs" in _error_of(["--unseen-class", "A"], capsys)  # its short name too
    assert "glyphs has no unseen class 'no such class'" in _error_of(["--unseen-class", "no such class"], capsys)
    assert "--shots must be between 1 and 19" in _error_of(["--unseen-class", "Q", "--shots", "20"], capsys)
    assert "--shots must be between 1 and 19" in _error_of(["--unseen-class", "Q", "--shots", "0"], capsys)
    assert G.main(["--list-unseen"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed == [glyphs.class_names[c] for c in glyphs.unseen_classes.tolist()] and "U+0051 Q" in listed


def test_an_unknown_dataset_is_named(capsys):
    assert "Unknown dataset 'fonts'" in _error_of(["--unseen-class", "Q", "--dataset", "fonts"], capsys)
