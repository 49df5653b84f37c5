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
    20% of classes, drawn with a fixed seed (``split_seed``).
``omniglot``
    torchvision's ``Omniglot``: ``images_background`` = seen, ``images_evaluation`` = unseen,
    downloaded when missing. A folder holding only the two ``images_background_small1/2.zip``
    sets (8 alphabets, 242 characters) is used with the alphabets in
    :data:`OMNIGLOT_SMALL_UNSEEN_ALPHABETS` as unseen classes.
``mnist``
    torchvision's ``MNIST`` (digits 0-4 seen, 5-9 unseen), downloaded when missing; offline, the
    test split's two IDX files alone are enough.

Raw data is looked up under ``$METAGAN_DATA/<name>/`` (see :mod:`metagan_lib.paths`).
"""

from __future__ import annotations

import hashlib
import io
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .artifacts import load_or_build
from .images import IMAGE_SIZE
from .paths import DATA_ENV_VAR, cache_dir, data_dir

DATASET_NAMES = ("glyphs", "omniglot", "mnist")

OMNIGLOT_SMALL_UNSEEN_ALPHABETS = ("Early_Aramaic", "Greek", "Tagalog")
MNIST_UNSEEN_DIGITS = (5, 6, 7, 8, 9)


class DatasetError(RuntimeError):
    """A dataset cannot be provided; the message says why and how to fix it."""


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
        return len(self.class_names)

    def subset(self, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``[M, 1, H, W]`` and labels ``[M]`` of the given classes only."""
        mask = torch.isin(self.labels, classes)
        return self.images[mask], self.labels[mask]

    def class_counts(self) -> torch.Tensor:
        """Number of images per class, ``int64`` ``[C]``."""
        return torch.bincount(self.labels, minlength=self.num_classes)

    def summary(self) -> str:
        counts = self.class_counts()
        return (
            f"{self.name}: {len(self.images)} images {tuple(self.images.shape[1:])} uint8, "
            f"{self.num_classes} classes ({len(self.seen_classes)} seen / "
            f"{len(self.unseen_classes)} unseen), {int(counts.min())}-{int(counts.max())} images per class"
        )


def load_dataset(
    name: str = "glyphs",
    *,
    download: bool = True,
    root: str | Path | None = None,
) -> ImageDataset:
    """Load a dataset by name (``glyphs``, ``omniglot`` or ``mnist``).

    Args:
        name: dataset name.
        download: for ``omniglot``/``mnist``, fetch the data when it is not on disk.
        root: folder with the raw data; default ``$METAGAN_DATA`` (see :mod:`metagan_lib.paths`).

    Raises:
        DatasetError: unknown name, or data missing and not downloadable (the message names the
            folder searched and the fixes).
    """
    key = name.strip().lower()
    if key not in DATASET_NAMES:
        raise DatasetError(
            f"Unknown dataset {name!r}. Choose one of {', '.join(DATASET_NAMES)} "
            "('glyphs' is embedded and needs no download)."
        )
    if key == "glyphs":
        return load_glyphs()
    base = Path(root).expanduser() if root is not None else data_dir()
    if key == "omniglot":
        return load_omniglot(base / "omniglot", download=download)
    return load_mnist(base / "mnist", download=download)


def _missing_data_error(name: str, folder: Path, expected: str, cause: Exception | None) -> DatasetError:
    reason = f" (download failed: {type(cause).__name__}: {cause})" if cause else " (download disabled)"
    return DatasetError(
        f"Dataset {name!r} was not found in {folder}{reason}. Expected {expected}. "
        f"Fix: connect to the internet so that it can be downloaded, or set {DATA_ENV_VAR} to a "
        f"folder that holds '{name}/' with the data. It will not be replaced by another dataset; "
        "use name='glyphs' for the embedded dataset that needs no download."
    )


def _try_download(download: bool, fetch: Callable[[], None]) -> Exception | None:
    """Run ``fetch`` when downloads are allowed; return the error it raised (network errors come in many types)."""
    if not download:
        return None
    try:
        fetch()
    except Exception as error:
        return error
    return None


# ----------------------------------------------------------------------------------------------
# Shared image helpers
# ----------------------------------------------------------------------------------------------


def _fit_to_canvas(ink: torch.Tensor, size: int = IMAGE_SIZE, box: int = 20) -> torch.Tensor:
    """Crop a float ink image ``[H, W]`` in [0, 1] to its bounding box, scale its longer side
    to ``box`` pixels (aspect kept, as MNIST does) and centre it on a ``size`` x ``size`` canvas."""
    rows = torch.nonzero(ink.amax(dim=1) > 0.05).flatten()
    cols = torch.nonzero(ink.amax(dim=0) > 0.05).flatten()
    canvas = torch.zeros(size, size)
    if len(rows) == 0:
        return canvas
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = crop.shape
    scale = box / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    resized = F.interpolate(
        crop[None, None], size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False
    )[0, 0]
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = resized.clamp(0, 1)
    return canvas


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def _cached(path: Path, key: dict, build: Callable[[], dict]) -> dict:
    """The processed dataset cached at ``path`` under ``key`` (the artefact store), else ``build()``, saved there."""
    return load_or_build(
        path,
        {"kind": "dataset", **key},
        build,
        to_payload=lambda payload: payload,
        from_payload=lambda payload: payload,
    )


# ----------------------------------------------------------------------------------------------
# glyphs: the embedded default
# ----------------------------------------------------------------------------------------------

GLYPHS_VERSION = 1
GLYPH_EXCLUDED_FONT_PATTERNS = ("Display", "LastResort", "STIXNonUni", "STIXSiz", "cmex10")


def glyph_font_paths() -> list[Path]:
    """The text fonts matplotlib ships (23 with matplotlib 3.8+), sorted by file name."""
    import matplotlib

    font_dir = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    fonts = sorted(p for p in font_dir.glob("*.ttf") if not any(s in p.name for s in GLYPH_EXCLUDED_FONT_PATTERNS))
    if not fonts:
        raise DatasetError(f"No fonts found in {font_dir}; the 'glyphs' dataset needs matplotlib's bundled fonts.")
    return fonts


def _is_candidate_character(code: int) -> bool:
    char = chr(code)
    category = unicodedata.category(char)
    if category[0] not in "LNSP":  # letters, numbers, symbols, punctuation; no marks/controls/spaces
        return False
    if 0xE000 <= code <= 0xF8FF:  # private use area
        return False
    if unicodedata.normalize("NFKD", char) != char:  # accented or compatibility variant
        return False
    return True


def _render_glyph(font, char: str) -> torch.Tensor:
    """Render one character with an FT2Font at a large size; float ``[H, W]`` in [0, 1]."""
    font.clear()
    font.set_text(char, 0.0)
    font.draw_glyphs_to_bitmap(antialiased=True)
    return torch.from_numpy(np.asarray(font.get_image(), dtype=np.float32) / 255.0)


def _jitter(clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random affine + elastic warp + stroke-width change of ``[B, 1, H, W]`` images in [0, 1]."""
    batch, _, height, width = clean.shape
    u = lambda *shape: torch.rand(*shape, generator=generator)
    angle = (u(batch) - 0.5) * 2 * np.deg2rad(12)
    scale = 0.9 + 0.2 * u(batch)
    shear = (u(batch) - 0.5) * 0.3
    shift = (u(batch, 2) - 0.5) * 2 * (1.5 / (width / 2))
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0] = cos / scale
    theta[:, 0, 1] = (-sin + shear * cos) / scale
    theta[:, 1, 0] = sin / scale
    theta[:, 1, 1] = (cos + shear * sin) / scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(clean.shape), align_corners=False)
    # elastic: a smooth random displacement field (coarse noise upsampled), about 1 pixel
    coarse = (u(batch, 2, 4, 4) - 0.5) * 2 * (1.2 / (width / 2))
    displacement = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    grid = grid + displacement.permute(0, 2, 3, 1)
    warped = F.grid_sample(clean, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # stroke width: a third thicker (3x3 max), a third thinner (3x3 min), a third unchanged
    choice = u(batch)
    thick = F.max_pool2d(warped, 3, stride=1, padding=1)
    thin = -F.max_pool2d(-warped, 3, stride=1, padding=1)
    out = torch.where((choice < 1 / 3)[:, None, None, None], thick, warped)
    out = torch.where((choice > 2 / 3)[:, None, None, None], 0.5 * (thin + warped), out)
    return out.clamp(0, 1)


def build_glyphs(
    seed: int = 0,
    instances_per_class: int = 20,
    min_fonts: int = 10,
    split_seed: int = 0,
    unseen_fraction: float = 0.2,
    max_similarity: float = 0.92,
    max_classes: int | None = None,
) -> dict:
    """Render the ``glyphs`` dataset (deterministic for its arguments; no caching here).

    Characters covered by at least ``min_fonts`` fonts become classes; each class gets
    ``instances_per_class`` images cycling through its fonts, each with its own jitter. A class
    whose clean mean rendering correlates above ``max_similarity`` with an earlier class's
    (a look-alike such as Latin 'A' and Greek 'Alpha') is skipped. ``max_classes`` stops after
    that many classes (for quick tests).
    """
    from matplotlib.ft2font import FT2Font

    fonts = [FT2Font(str(p)) for p in glyph_font_paths()]
    for font in fonts:
        font.set_size(48, 72)
    coverage: dict[int, list[int]] = {}
    for index, font in enumerate(fonts):
        for code in font.get_charmap():
            if _is_candidate_character(code):
                coverage.setdefault(code, []).append(index)
    codes = sorted(c for c, f in coverage.items() if len(f) >= min_fonts)

    clean_by_class: list[torch.Tensor] = []
    kept_codes: list[int] = []
    signatures: list[torch.Tensor] = []
    for code in codes:
        if max_classes is not None and len(kept_codes) >= max_classes:
            break
        renders = [_fit_to_canvas(_render_glyph(fonts[i], chr(code))) for i in coverage[code]]
        stack = torch.stack(renders)
        if (stack.flatten(1).amax(dim=1) < 0.5).any() or (stack.flatten(1).mean(dim=1) < 0.01).any():
            continue  # blank or hair-thin in some font
        signature = stack.mean(dim=0).flatten()
        signature = (signature - signature.mean()) / (signature.std() + 1e-6)
        if signatures:
            similarity = torch.stack(signatures) @ signature / signature.numel()
            if float(similarity.max()) > max_similarity:
                continue
        signatures.append(signature)
        kept_codes.append(code)
        clean_by_class.append(stack)

    generator = torch.Generator().manual_seed(seed)
    images, labels = [], []
    for label, stack in enumerate(clean_by_class):
        picks = torch.arange(instances_per_class) % len(stack)
        images.append(_jitter(stack[picks][:, None], generator))
        labels.append(torch.full((instances_per_class,), label, dtype=torch.int64))
    num_classes = len(kept_codes)
    order = torch.randperm(num_classes, generator=torch.Generator().manual_seed(split_seed))
    num_unseen = int(round(unseen_fraction * num_classes))
    return {
        "images": _to_uint8(torch.cat(images)),
        "labels": torch.cat(labels),
        "class_names": tuple(f"U+{c:04X} {chr(c)}" for c in kept_codes),
        "seen_classes": order[num_unseen:].sort().values,
        "unseen_classes": order[:num_unseen].sort().values,
    }


def load_glyphs(seed: int = 0) -> ImageDataset:
    """The embedded ``glyphs`` dataset, rendered on first use and cached."""
    import matplotlib

    fingerprint = hashlib.sha256(
        f"v{GLYPHS_VERSION}-seed{seed}-mpl{matplotlib.__version__}-torch{torch.__version__.split('+')[0]}".encode()
    ).hexdigest()[:12]
    path = cache_dir() / f"glyphs-{fingerprint}.pt"
    payload = _cached(path, {"name": "glyphs", "fingerprint": fingerprint}, lambda: build_glyphs(seed=seed))
    return ImageDataset(name="glyphs", source=str(path), **payload)


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


def _assemble_omniglot(groups: list[tuple[dict[tuple[str, str], list[bytes]], bool]]) -> dict:
    """Build the payload from ``[(characters, is_unseen), ...]``."""
    images, labels, names, unseen = [], [], [], []
    for characters, is_unseen in groups:
        for (alphabet, character), pngs in characters.items():
            label = len(names)
            names.append(f"{alphabet}/{character}")
            if is_unseen:
                unseen.append(label)
            images.append(_omniglot_resize([_omniglot_png_to_ink(b) for b in pngs]))
            labels.append(torch.full((len(pngs),), label, dtype=torch.int64))
    all_classes = torch.arange(len(names))
    unseen_t = torch.tensor(sorted(unseen), dtype=torch.int64)
    return {
        "images": _to_uint8(torch.cat(images)),
        "labels": torch.cat(labels),
        "class_names": tuple(names),
        "seen_classes": all_classes[~torch.isin(all_classes, unseen_t)],
        "unseen_classes": unseen_t,
    }


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

        cause = _try_download(download, fetch)
        if not (background.is_dir() and evaluation.is_dir()):
            raise _missing_data_error(
                "omniglot",
                folder,
                "omniglot-py/images_background and images_evaluation (torchvision's layout), "
                f"or the two files {' and '.join(OMNIGLOT_SMALL_ZIPS)}",
                cause,
            )
    if background.is_dir() and evaluation.is_dir():
        key = f"full-{background.stat().st_mtime_ns}"
        build = lambda: _assemble_omniglot(
            [(_read_omniglot_folder(background), False), (_read_omniglot_folder(evaluation), True)]
        )
        source = str(full_root)
    else:
        key = "small-" + "-".join(str(p.stat().st_size) for p in small)

        def build() -> dict:
            characters = _read_omniglot_zips(small)
            seen = {k: v for k, v in characters.items() if k[0] not in OMNIGLOT_SMALL_UNSEEN_ALPHABETS}
            unseen = {k: v for k, v in characters.items() if k[0] in OMNIGLOT_SMALL_UNSEEN_ALPHABETS}
            return _assemble_omniglot([(seen, False), (unseen, True)])

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
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    values = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if values.size != int(np.prod(shape)):
        raise DatasetError(f"{path} is truncated ({values.size} values, header says {shape}); download it again.")
    return torch.from_numpy(values.reshape(shape).copy())


def load_mnist(folder: Path, download: bool = True) -> ImageDataset:
    """MNIST from ``folder/MNIST/raw`` (all splits found there are used)."""
    raw = folder / "MNIST" / "raw"

    def available() -> dict[str, tuple[Path, Path]]:
        found = {}
        for split, (img, lab) in MNIST_FILES.items():
            img_path, lab_path = _find_idx(raw, img), _find_idx(raw, lab)
            if img_path and lab_path:
                found[split] = (img_path, lab_path)
        return found

    splits = available()
    if not splits:

        def fetch() -> None:
            from torchvision.datasets import MNIST

            MNIST(str(folder), train=True, download=True)
            MNIST(str(folder), train=False, download=True)

        cause = _try_download(download, fetch)
        splits = available()
        if not splits:
            raise _missing_data_error(
                "mnist",
                raw,
                "the IDX files of at least one split (e.g. t10k-images-idx3-ubyte[.gz] "
                "and t10k-labels-idx1-ubyte[.gz])",
                cause,
            )
    pairs = [(_read_idx(splits[s][0]), _read_idx(splits[s][1])) for s in sorted(splits)]
    for split, (split_images, split_labels) in zip(sorted(splits), pairs):
        if split_labels.ndim != 1 or len(split_images) != len(split_labels):
            raise DatasetError(
                f"{splits[split][1]} holds {len(split_labels)} labels but {splits[split][0]} holds "
                f"{len(split_images)} images; download both files again."
            )
    images = torch.cat([i for i, _ in pairs])
    labels = torch.cat([lab for _, lab in pairs]).to(torch.int64)
    unseen = torch.tensor(MNIST_UNSEEN_DIGITS, dtype=torch.int64)
    classes = torch.arange(10)
    return ImageDataset(
        name="mnist",
        images=images[:, None].contiguous().to(torch.uint8),
        labels=labels,
        class_names=tuple(str(d) for d in range(10)),
        seen_classes=classes[~torch.isin(classes, unseen)],
        unseen_classes=unseen,
        source=f"{raw} ({', '.join(sorted(splits))})",
    )


def check_image_batch(images: torch.Tensor, what: str = "images") -> None:
    """Raise a clear ``ValueError`` unless ``images`` is ``[B, 1, 28, 28]``."""
    if images.ndim != 4 or tuple(images.shape[1:]) != (1, IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(
            f"{what} must have shape [batch, 1, {IMAGE_SIZE}, {IMAGE_SIZE}] (grayscale, "
            f"{IMAGE_SIZE}x{IMAGE_SIZE}); got {list(images.shape)}. Resize with "
            f"torch.nn.functional.interpolate(x, size=({IMAGE_SIZE}, {IMAGE_SIZE}), mode='area')."
        )
