"""The embedded ``glyphs`` dataset: Unicode characters rendered with the fonts matplotlib ships.

Characters covered by enough fonts become classes; each image is one font's rendering, fitted to
a 28x28 canvas like MNIST and jittered (affine warp, stroke thickness) like a different hand.
Rendering is deterministic for its arguments on one CPU (another CPU's vector kernels move a few pixels by one grey
level); ``tools/build_glyphs.py`` renders it once into ``metagan_lib/glyph_data/``, which
:func:`metagan_lib.data.load_dataset` reads.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .images import fit_to_canvas, to_uint8
from .paths import DatasetError

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


def _distinct_classes(
    fonts: list, min_fonts: int, max_similarity: float, max_classes: int | None
) -> tuple[list[int], list[torch.Tensor]]:
    """Character codes covered by ``min_fonts`` fonts whose renderings are all visible and whose mean rendering
    correlates at most ``max_similarity`` with every earlier kept class; with each kept class's clean renderings
    ``[fonts, 28, 28]``."""
    coverage: dict[int, list[int]] = {}
    for index, font in enumerate(fonts):
        for code in font.get_charmap():
            if _is_candidate_character(code):
                coverage.setdefault(code, []).append(index)
    kept_codes: list[int] = []
    clean_by_class: list[torch.Tensor] = []
    signatures: list[torch.Tensor] = []
    for code in sorted(c for c, f in coverage.items() if len(f) >= min_fonts):
        if max_classes is not None and len(kept_codes) >= max_classes:
            break
        stack = torch.stack([fit_to_canvas(_render_glyph(fonts[i], chr(code))) for i in coverage[code]])
        if (stack.flatten(1).amax(dim=1) < 0.5).any() or (stack.flatten(1).mean(dim=1) < 0.01).any():
            continue  # blank or hair-thin in some font
        signature = stack.mean(dim=0).flatten()
        signature = (signature - signature.mean()) / (signature.std() + 1e-6)
        if signatures and float((torch.stack(signatures) @ signature / signature.numel()).max()) > max_similarity:
            continue
        signatures.append(signature)
        kept_codes.append(code)
        clean_by_class.append(stack)
    return kept_codes, clean_by_class


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
    kept_codes, clean_by_class = _distinct_classes(fonts, min_fonts, max_similarity, max_classes)
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
        "images": to_uint8(torch.cat(images)),
        "labels": torch.cat(labels),
        "class_names": tuple(f"U+{c:04X} {chr(c)}" for c in kept_codes),
        "seen_classes": order[num_unseen:].sort().values,
        "unseen_classes": order[:num_unseen].sort().values,
    }
