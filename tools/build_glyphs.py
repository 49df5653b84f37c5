"""Render the embedded ``glyphs`` dataset and write the files the package ships (``metagan_lib/glyph_data``).

    python tools/build_glyphs.py metagan_lib/glyph_data

Renders :func:`metagan_lib.glyphs.build_glyphs` (seed 0) and writes the images in MNIST's IDX format, gzipped with a
fixed timestamp, and the classes (names, images per class, seen/unseen split) as JSON; it prints both files'
SHA-256 and whether each is the shipped file's (``metagan_lib.data.GLYPHS_SHA256``). The rendering goes through float32
torch kernels that ATen picks by the CPU's vector instructions, so another CPU renders a few pixels one grey level apart
(and another matplotlib or torch version may too): the shipped files, rendered once on the AVX-512 development machine
with matplotlib 3.11.2 and torch 2.14.1, are what keeps the data, and so the shipped networks' keys, the same on every
machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import matplotlib
import numpy as np
import torch
from build_digits import idx_bytes, write_gzip

from metagan_lib.data import GLYPHS_CLASSES, GLYPHS_IMAGES, GLYPHS_SHA256
from metagan_lib.glyphs import build_glyphs


def classes_json(rendered: dict) -> str:
    """The classes of a rendering as JSON; checks that its labels are ``instances_per_class`` images per class, in
    class order (what the loader rebuilds them from)."""
    counts = torch.bincount(rendered["labels"])
    per_class = int(counts[0])
    expected = torch.arange(len(rendered["class_names"])).repeat_interleave(per_class)
    if not torch.equal(rendered["labels"], expected):
        raise ValueError("the rendering's labels are not grouped by class with the same count per class")
    meta = {
        "class_names": list(rendered["class_names"]),
        "instances_per_class": per_class,
        "seen_classes": rendered["seen_classes"].tolist(),
        "unseen_classes": rendered["unseen_classes"].tolist(),
        "rendered_with": {"matplotlib": matplotlib.__version__, "torch": torch.__version__.split("+")[0]},
    }
    return json.dumps(meta, ensure_ascii=False, indent=1, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument(
        "destination", type=Path, help="the folder to write into (the shipped files: metagan_lib/glyph_data)"
    )
    out = parser.parse_args(argv).destination
    blocking = next((p for p in (out, *out.parents) if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        parser.error(f"{blocking} is a file; give the folder to write the glyph files into")
    rendered = build_glyphs(seed=0)
    out.mkdir(parents=True, exist_ok=True)
    images = rendered["images"][:, 0].numpy().astype(np.uint8)
    print(f"{len(images)} images, {len(rendered['class_names'])} classes")
    written = {GLYPHS_IMAGES: write_gzip(out / GLYPHS_IMAGES, idx_bytes(images))}
    (out / GLYPHS_CLASSES).write_text(classes_json(rendered), encoding="utf-8")
    written[GLYPHS_CLASSES] = hashlib.sha256((out / GLYPHS_CLASSES).read_bytes()).hexdigest()
    for name, digest in written.items():
        same = (
            "the shipped file's" if digest == GLYPHS_SHA256[name] else "NOT the shipped file's (another CPU or version)"
        )
        print(f"{name} {digest}: {same}")


if __name__ == "__main__":
    main()
