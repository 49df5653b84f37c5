import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from conftest import shared_data_folder
from metagan_lib import data as data_module
from metagan_lib.artifacts import fingerprint
from metagan_lib.data import DatasetError, load_dataset
from metagan_lib.glyphs import build_glyphs
from metagan_lib.images import check_image_batch


def assert_well_formed(dataset, min_classes, min_per_class):
    images, labels = dataset.images, dataset.labels
    assert images.dtype == torch.uint8 and images.ndim == 4
    assert tuple(images.shape[1:]) == (1, 28, 28)
    assert labels.dtype == torch.int64 and labels.shape == (len(images),)
    assert int(labels.min()) == 0 and int(labels.max()) == dataset.num_classes - 1
    assert dataset.num_classes >= min_classes
    assert int(dataset.class_counts().min()) >= min_per_class
    # ink is bright on a dark background, the full range is used
    assert int(images.max()) == 255 and int(images.min()) == 0
    assert images.float().mean() < 100
    seen, unseen = set(dataset.seen_classes.tolist()), set(dataset.unseen_classes.tolist())
    assert seen and unseen and not seen & unseen
    assert seen | unseen == set(range(dataset.num_classes))


def test_glyphs_shapes_labels_and_split(glyphs):
    assert_well_formed(glyphs, min_classes=500, min_per_class=10)
    assert len(glyphs.class_names) == len(set(glyphs.class_names)) == glyphs.num_classes


def test_glyph_instances_of_a_class_differ(glyphs):
    first_class = glyphs.images[glyphs.labels == 0].float()
    assert len(first_class) >= 10
    pairwise = (first_class[:, None] - first_class[None]).abs().flatten(2).mean(-1)
    off_diagonal = pairwise[~torch.eye(len(first_class), dtype=torch.bool)]
    assert float(off_diagonal.min()) > 1.0  # no two instances are the same image


def test_glyph_rendering_is_deterministic_for_a_seed():
    a = build_glyphs(seed=3, max_classes=12, instances_per_class=5)
    b = build_glyphs(seed=3, max_classes=12, instances_per_class=5)
    c = build_glyphs(seed=4, max_classes=12, instances_per_class=5)
    assert torch.equal(a["images"], b["images"]) and a["class_names"] == b["class_names"]
    assert not torch.equal(a["images"], c["images"])


def test_glyphs_skip_accented_variants_and_blanks(glyphs):
    characters = {name.split(" ", 1)[1] for name in glyphs.class_names}
    assert "A" in characters or "a" in characters
    for variant in ("é", "Å", "ﬁ", " ", "\u00a0"):  # accented, ligature, blanks
        assert variant not in characters


def test_glyphs_reload_identical_tensors(glyphs):
    again = load_dataset("glyphs")
    assert torch.equal(again.images, glyphs.images) and torch.equal(again.unseen_classes, glyphs.unseen_classes)


def test_shipped_glyphs_are_the_images_the_shipped_networks_were_trained_on(glyphs):
    """The shipped files hold the AVX-512 machine's rendering, whose fingerprint every shipped glyph network's key
    records; 951 classes of 20 images, 761 seen / 190 unseen, offline."""
    assert fingerprint(glyphs.images) == "645f7b52bce0e3fb"
    assert glyphs.class_counts().unique().tolist() == [20] and glyphs.num_classes == 951
    assert (len(glyphs.seen_classes), len(glyphs.unseen_classes)) == (761, 190)
    assert not set(glyphs.seen_classes.tolist()) & set(glyphs.unseen_classes.tolist())


def test_the_renderer_draws_the_shipped_glyphs_up_to_a_grey_level():
    """The first classes rendered here equal the shipped ones in names and, pixel for pixel, within one grey level on
    a few pixels (what another CPU's vector kernels change: on the AVX2 machine its scalar kernels alone move 345 of
    14.9 million pixels)."""
    rendered = build_glyphs(seed=0, max_classes=8)
    shipped = data_module.load_glyphs()
    assert rendered["class_names"] == shipped.class_names[:8]
    difference = (rendered["images"].int() - shipped.images[: len(rendered["images"])].int()).abs()
    assert int(difference.max()) <= 1 and float((difference > 0).float().mean()) < 1e-3


def test_damaged_or_missing_glyph_files_are_clear_errors(tmp_path):
    for name in data_module.GLYPHS_SHA256:
        shutil.copy(data_module.GLYPHS_FOLDER / name, tmp_path / name)
    assert data_module.load_glyphs(tmp_path).num_classes == 951
    classes = tmp_path / data_module.GLYPHS_CLASSES
    classes.write_text(classes.read_text(encoding="utf-8") + " ", encoding="utf-8")
    with pytest.raises(DatasetError, match="does not match its SHA-256.*git checkout metagan_lib/glyph_data"):
        data_module.load_glyphs(tmp_path)
    classes.unlink()
    with pytest.raises(DatasetError, match="is missing.*git checkout metagan_lib/glyph_data"):
        data_module.load_glyphs(tmp_path)


def test_omniglot_small_sets_from_data_folder(monkeypatch):
    folder = shared_data_folder("omniglot")
    omniglot = load_dataset("omniglot", download=False)
    assert_well_formed(omniglot, min_classes=242, min_per_class=20)
    assert len(omniglot.images) == 4840 and omniglot.num_classes == 242
    alphabets = lambda classes: {data_module.omniglot_alphabet(omniglot.class_names[c]) for c in classes.tolist()}
    assert alphabets(omniglot.unseen_classes) == set(data_module.OMNIGLOT_SMALL_UNSEEN_ALPHABETS)
    assert not alphabets(omniglot.seen_classes) & alphabets(omniglot.unseen_classes)
    assert str(folder) in omniglot.source


def test_rotated_seen_classes_are_new_seen_classes_and_leave_the_rest_alone(strokes):
    turned = data_module.with_rotated_seen_classes(strokes)
    seen, old = strokes.seen_classes, strokes.num_classes
    assert turned.num_classes == old + 3 * len(seen) and len(turned.seen_classes) == 4 * len(seen)
    assert torch.equal(turned.unseen_classes, strokes.unseen_classes)  # evaluated classes and their images unchanged
    assert torch.equal(turned.images[: len(strokes.images)], strokes.images)
    assert torch.equal(turned.labels[: len(strokes.labels)], strokes.labels)
    assert not torch.isin(turned.seen_classes[len(seen) :], torch.arange(old)).any()  # appended, none reused
    for turn, degrees in enumerate(data_module.ROTATIONS, start=1):
        new_class = old + (turn - 1) * len(seen) + 1  # the second seen class, turned
        assert turned.class_names[new_class] == f"{strokes.class_names[int(seen[1])]}@rot{degrees}"
        expected = torch.rot90(strokes.images[strokes.labels == seen[1]], turn, dims=(2, 3))
        assert torch.equal(turned.images[turned.labels == new_class], expected)
    with pytest.raises(ValueError, match="already hold turned copies"):
        data_module.with_rotated_seen_classes(turned)


def test_mnist_test_split_alone_loads():
    shared_data_folder("mnist")
    mnist = load_dataset("mnist", download=False)
    assert_well_formed(mnist, min_classes=10, min_per_class=800)
    assert len(mnist.images) == 10000
    assert mnist.unseen_classes.tolist() == [5, 6, 7, 8, 9]


def test_embedded_digits_load_offline_with_their_split_and_checksums(monkeypatch, tmp_path):
    monkeypatch.setenv("METAGAN_DATA", str(tmp_path))  # an empty data folder: nothing is read from it
    digits = load_dataset("digits", download=False)
    assert_well_formed(digits, min_classes=10, min_per_class=800)
    assert len(digits.images) == 10000 and digits.class_names == tuple("0123456789")
    assert digits.class_counts().tolist() == [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
    assert digits.seen_classes.tolist() == [0, 1, 2, 3, 4] and digits.unseen_classes.tolist() == [5, 6, 7, 8, 9]
    for name, expected in data_module.DIGITS_SHA256.items():
        assert hashlib.sha256((data_module.DIGITS_FOLDER / name).read_bytes()).hexdigest() == expected


def test_damaged_or_missing_digit_files_are_clear_errors(tmp_path):
    for name in data_module.DIGITS_SHA256:
        shutil.copy(data_module.DIGITS_FOLDER / name, tmp_path / name)
    assert len(data_module.load_digits(tmp_path).images) == 10000
    images = tmp_path / "digits-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:-10])
    with pytest.raises(DatasetError, match="does not match its SHA-256.*git checkout"):
        data_module.load_digits(tmp_path)
    images.unlink()
    with pytest.raises(DatasetError, match="is missing.*git checkout"):
        data_module.load_digits(tmp_path)


def test_embedded_digits_are_not_images_of_the_mnist_test_split():
    shared_data_folder("mnist")
    test_split = load_dataset("mnist", download=False).images.flatten(1)
    embedded = load_dataset("digits").images.flatten(1)
    shared = set(map(bytes, test_split.numpy())) & set(map(bytes, embedded.numpy()))
    assert not shared  # what metagan_lib/digits/README.md says about their provenance


def test_unknown_dataset_name_is_a_clear_error():
    with pytest.raises(DatasetError, match="Unknown dataset 'cifar'.*glyphs, digits, omniglot, mnist"):
        load_dataset("cifar")


@pytest.mark.parametrize("name", ["omniglot", "mnist"])
def test_missing_data_offline_names_dataset_folder_and_fixes(name, tmp_path, monkeypatch):
    monkeypatch.setenv("METAGAN_DATA", str(tmp_path))

    def no_network(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    import torchvision.datasets as tv

    monkeypatch.setattr(tv, "Omniglot", no_network)
    monkeypatch.setattr(tv, "MNIST", no_network)
    with pytest.raises(DatasetError) as caught:
        load_dataset(name)
    message = str(caught.value)
    assert repr(name) in message and str(tmp_path / name) in message
    assert "connect to the internet" in message and "METAGAN_DATA" in message
    assert "name resolution" in message  # the download's own failure is reported
    with pytest.raises(DatasetError, match="download disabled"):
        load_dataset(name, download=False)


@pytest.mark.parametrize("name,marks", [("omniglot", ("images_background_small1.zip",)), ("mnist", ("MNIST",))])
def test_a_data_setting_one_level_too_deep_is_named_and_a_failed_download_leaves_no_folders(
    name, marks, tmp_path, monkeypatch
):
    """``$METAGAN_DATA`` pointing at ``omniglot/`` (or ``mnist/``) itself: the message says to set it one level up; the
    download that failed (offline) leaves no empty folders behind in the user's data folder."""
    too_deep = tmp_path / name
    too_deep.mkdir()
    for mark in marks:
        (too_deep / mark).mkdir() if mark == "MNIST" else (too_deep / mark).write_bytes(b"zip")
    monkeypatch.setenv("METAGAN_DATA", str(too_deep))
    before = sorted(tmp_path.rglob("*"))

    def no_network(root, *args, **kwargs):
        (Path(root) / "omniglot-py" / "partial").mkdir(parents=True, exist_ok=True)  # as torchvision does, then fails
        raise OSError("[Errno -3] Temporary failure in name resolution")

    import torchvision.datasets as tv

    monkeypatch.setattr(tv, "Omniglot", no_network)
    monkeypatch.setattr(tv, "MNIST", no_network)
    with pytest.raises(
        DatasetError, match=f"{too_deep} holds these files itself: set METAGAN_DATA to the folder above it, {tmp_path}"
    ):
        load_dataset(name)
    assert sorted(tmp_path.rglob("*")) == before


def test_one_of_the_two_small_omniglot_files_is_named_as_found(tmp_path):
    folder = tmp_path / "omniglot"
    folder.mkdir()
    (folder / "images_background_small1.zip").write_bytes(b"zip")
    with pytest.raises(DatasetError, match="Found images_background_small1.zip but not the other one"):
        load_dataset("omniglot", download=False, root=tmp_path)


def test_wrong_image_size_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\[batch, 1, 28, 28\].*got \[4, 1, 32, 32\]"):
        check_image_batch(torch.zeros(4, 1, 32, 32))


@pytest.mark.parametrize("name", ["omniglot", "mnist"])
def test_a_folder_that_cannot_be_written_gets_its_own_fix_not_connect_to_the_internet(name, tmp_path, monkeypatch):
    monkeypatch.setenv("METAGAN_DATA", str(tmp_path))

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / name))

    import torchvision.datasets as tv

    monkeypatch.setattr(tv, "Omniglot", read_only)
    monkeypatch.setattr(tv, "MNIST", read_only)
    with pytest.raises(DatasetError, match="point METAGAN_DATA at a writable folder") as caught:
        load_dataset(name)
    assert "connect to the internet" not in str(caught.value)
