import os
from pathlib import Path

import pytest

from metagan_lib.data import load_dataset


def shared_data_folder(name: str) -> Path:
    """``$METAGAN_DATA/<name>``, or skip the test with the reason."""
    root = os.environ.get("METAGAN_DATA")
    if not root:
        pytest.skip("METAGAN_DATA is not set; point it at a folder with omniglot/ and mnist/ (CI uses ../shared/data)")
    folder = Path(root) / name
    if not folder.exists():
        pytest.skip(f"{folder} does not exist; nothing to test {name} on")
    return folder


@pytest.fixture(scope="session")
def glyphs():
    return load_dataset("glyphs")
