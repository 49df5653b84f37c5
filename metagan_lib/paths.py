"""Where data and caches live: one setting, the ``METAGAN_DATA`` environment variable.

``METAGAN_DATA`` names the folder that holds the raw datasets, one sub-folder each
(``omniglot/``, ``mnist/``). Unset, it defaults to ``~/.cache/metagan/data`` (or
``$XDG_CACHE_HOME/metagan/data``). Processed tensors (resized Omniglot)
and trained artefacts are cached under ``~/.cache/metagan`` (``$XDG_CACHE_HOME/metagan``), so
``METAGAN_DATA`` may point at a read-only folder.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV_VAR = "METAGAN_DATA"


class DatasetError(RuntimeError):
    """A dataset cannot be provided; the message says why and how to fix it."""


def cache_dir() -> Path:
    """Folder for processed datasets and trained artefacts (created on demand)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    path = Path(base) / "metagan"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise NotADirectoryError(
            f"The cache folder {path} cannot be made: {base} (XDG_CACHE_HOME, else ~/.cache) or {path} is a file; "
            "point XDG_CACHE_HOME at a folder."
        ) from None
    except OSError as error:  # no permission, a read-only or missing file system: the same kind of error, named
        raise type(error)(
            error.errno,
            f"The cache folder {path} cannot be made ({error.strerror}); point XDG_CACHE_HOME at a writable folder",
        ) from None
    return path


def data_dir() -> Path:
    """Folder searched for raw datasets: ``$METAGAN_DATA`` (which must exist), else ``<cache_dir>/data`` (created on
    demand)."""
    configured = os.environ.get(DATA_ENV_VAR)
    if configured:
        path = Path(configured).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(
                f"${DATA_ENV_VAR} is {configured!r}, which is not a folder; point it at the folder "
                "that holds omniglot/ and mnist/, or unset it to use the default cache folder."
            )
        return path
    return cache_dir() / "data"


def absolute_path_settings() -> None:
    """Make a relative ``$METAGAN_DATA`` or ``$XDG_CACHE_HOME`` absolute (from the current folder), in this process's
    environment, so that processes started in another folder (notebook kernels, workers) read the same folders."""
    for name in (DATA_ENV_VAR, "XDG_CACHE_HOME"):
        value = os.environ.get(name)
        if value and not Path(value).expanduser().is_absolute():
            os.environ[name] = str(Path(value).expanduser().absolute())


def repo_root() -> Path:
    """The repository checkout this package was imported from (notebooks/, figures/ live here)."""
    return Path(__file__).resolve().parent.parent
