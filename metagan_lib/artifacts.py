"""The artefact store: one way to write, read and reuse every cached file (trained networks, processed datasets).

Every file holds ``{"key": ..., "artefact": ...}``. :func:`load_or_build` returns the cached artefact only when
its key equals the one asked for (the caller puts in it everything that determines the artefact: config, seed,
steps, a fingerprint of the training data), plus the package version; otherwise it builds the artefact and
writes it. Files are read with ``torch.load(weights_only=True)`` (tensors and plain Python values only, so a
planted file cannot run code) and written atomically under a unique temporary name, so an interrupted write
leaves no file and two processes filling an empty cache do not collide. A file that cannot be read, or whose
contents do not fit what the caller rebuilds from them, is rebuilt with a warning that names it.

**Shipped artefacts.** The repository ships the full profile's trained networks in ``artifacts/`` (the same layout as
the cache's ``artifacts/v<version>/``: ``<profile>/<dataset>/seed<seed>/<name>.pt``). When the cache has no current
file, :func:`load_or_build` reads the shipped one, under the same key check; a shipped file that is stale (trained
under another key) or damaged is retrained with a warning that names it. ``METAGAN_RETRAIN=1`` (the notebooks'
``retrain`` parameter, ``make full RETRAIN=1``) ignores the shipped files: everything not already in this machine's
cache is trained here.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import tempfile
import warnings
import zipfile
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import torch
from torch import nn

from .runtime import choose_device

if TYPE_CHECKING:  # annotations only: data and tasks import this module
    from .data import ImageDataset
    from .tasks import TaskSampler

T = TypeVar("T")


RETRAIN_ENV_VAR = "METAGAN_RETRAIN"


class DamagedArtifactWarning(UserWarning):
    """A cached file could not be used and is being rebuilt; the message names it."""


class StaleArtifactWarning(UserWarning):
    """A shipped file was trained under another key (other settings, data or version) and is being retrained."""


def set_retrain(retrain: bool) -> None:
    """Whether to ignore the shipped artefacts in this process and its workers (sets ``METAGAN_RETRAIN``)."""
    if not isinstance(retrain, bool):
        raise TypeError(f"retrain must be True or False, not {retrain!r}.")
    os.environ[RETRAIN_ENV_VAR] = "1" if retrain else "0"


def retraining() -> bool:
    """Whether ``METAGAN_RETRAIN`` asks to ignore the shipped artefacts ("1"; unset or "0": use them)."""
    value = os.environ.get(RETRAIN_ENV_VAR, "0")
    if value not in ("0", "1"):
        raise ValueError(f"${RETRAIN_ENV_VAR} is {value!r}; set it to 1 (retrain) or 0 (use the shipped artefacts).")
    return value == "1"


def shipped_dir() -> Path:
    """The repository's folder of shipped artefacts (``artifacts/``)."""
    from .paths import repo_root

    folder = repo_root() / "artifacts"
    if not folder.is_dir():
        warn_no_shipped_folder(folder)
    return folder


@functools.cache  # once per folder, not once per network
def warn_no_shipped_folder(folder: Path) -> None:
    """Warn that ``folder`` (where the shipped networks would be) is missing, so every network trains here."""
    warnings.warn(
        f"No shipped networks at {folder} (metagan_lib is not imported from a checkout of the repository): every "
        "network is trained here. Install it from a clone with `pip install -e .` to load the shipped ones.",
        stacklevel=3,
    )


def shipped_path(path: Path | str) -> Path | None:
    """The shipped counterpart of a cache file ``<cache>/artifacts/v<version>/<rest>``: ``artifacts/<rest>`` in the
    repository; ``None`` for files outside that cache folder (processed datasets, files a caller names itself)."""
    from . import __version__
    from .paths import cache_dir

    try:
        rest = Path(path).resolve().relative_to((cache_dir() / "artifacts" / f"v{__version__}").resolve())
    except ValueError:
        return None
    return shipped_dir() / rest


def fingerprint(tensor: torch.Tensor) -> str:
    """A short hash of a tensor's dtype, shape and values (keys artefacts by their training data)."""
    data = tensor.detach().cpu().contiguous()
    digest = hashlib.sha256(f"{data.dtype}{tuple(data.shape)}".encode())
    digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")  # 0-dim too
    return digest.hexdigest()[:16]


def content_hash(value: Any) -> str:
    """A short hash of what ``value`` holds: tensors by their values, modules by their state, dataclasses by their
    fields (those marked ``KEY_WHEN_SET`` only when set, as in :func:`config_key`), containers by their items, plain
    values as they are (keys cached evaluations by the networks they score). Tensors on the ``meta`` device
    (architecture templates) count by dtype and shape."""
    return hashlib.sha256(repr(_contents(value)).encode()).hexdigest()[:16]


def _contents(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return f"meta{value.dtype}{tuple(value.shape)}" if value.is_meta else fingerprint(value)
    if isinstance(value, nn.Module):
        return (type(value).__name__, _contents(value.state_dict()))
    if is_dataclass(value) and not isinstance(value, type):
        kept = [f for f in fields(value) if not _unset_key_when_set(f, getattr(value, f.name))]
        return (type(value).__name__, {f.name: _contents(getattr(value, f.name)) for f in kept})
    if isinstance(value, dict):
        return {str(k): _contents(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_contents(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(
        f"content_hash cannot describe a {type(value).__name__}; give it tensors, modules, dataclasses or plain values."
    )


def full_key(key: dict) -> dict:
    """``key`` plus the package version: a new version never reuses an old file."""
    from . import __version__

    return {"version": __version__, **key}


KEY_WHEN_SET = "key_when_set"  # dataclass field metadata: a setting added after caches were shipped (see config_key)


def _unset_key_when_set(spec, value) -> bool:
    """Whether a dataclass field is marked ``KEY_WHEN_SET`` and holds its default (then no key counts it)."""
    return bool(spec.metadata.get(KEY_WHEN_SET)) and value == spec.default


def config_key(config: Any) -> dict:
    """A config dataclass as a cache key: ``asdict(config)`` without the fields marked ``KEY_WHEN_SET`` that hold their
    default, so that adding such a field leaves every earlier key (and shipped file) valid (:func:`content_hash`, which
    keys evaluations by the models they score, skips them the same way)."""
    values = asdict(config)
    for spec in fields(config):
        if _unset_key_when_set(spec, values[spec.name]):
            del values[spec.name]
    return values


def meta_training_key(kind: str, config: Any, sampler: TaskSampler, meta_steps: int, seed: int) -> dict:
    """Everything that determines a meta-trained model: its kind, config (a dataclass), meta-steps, seed, and its task
    sampler's images and seed."""
    return {
        "kind": kind,
        "config": config_key(config),
        "steps": meta_steps,
        "seed": seed,
        "data": fingerprint(sampler.images),
        "sampler_seed": sampler.seed,
    }


def seen_classes_key(dataset: ImageDataset) -> dict:
    """What determines a network trained on a dataset's seen classes: its name, the seen classes, images and labels."""
    return {
        "dataset": dataset.name,
        "seen_classes": dataset.seen_classes.tolist(),
        "data": fingerprint(dataset.images),
        "labels": fingerprint(dataset.labels),
    }


def load_or_build_module(
    path: Path | str,
    key: dict,
    build: Callable[[], nn.Module],
    empty: Callable[[], nn.Module],
    device: torch.device | str = "cpu",
) -> nn.Module:
    """:func:`load_or_build` for a network stored by its weights: ``empty()`` makes one of the right shape to load
    them into; returned in eval mode."""

    def from_payload(state: dict) -> nn.Module:
        module = empty().to(device)
        module.load_state_dict(state)
        return module.eval()

    return load_or_build(
        path, key, build, to_payload=lambda module: module.state_dict(), from_payload=from_payload, device=device
    )


def _refuse_folder(path: Path) -> None:
    """Raise ``IsADirectoryError`` naming the fix when a folder sits where the file ``path`` belongs (before any
    training, which could not be saved there)."""
    if path.is_dir():
        raise IsADirectoryError(
            f"{path} is a folder, where a cached file belongs; move or delete that folder (or point XDG_CACHE_HOME "
            "at another cache) and run again."
        )


def save_payload(payload: dict, path: Path | str) -> Path:
    """``torch.save`` ``payload`` to ``path`` atomically, through a unique temporary file in the same folder."""
    path = Path(path)
    _refuse_folder(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_payload(path: Path | str, device: torch.device | str = "cpu", then: str = "ignoring it") -> dict | None:
    """The payload at ``path``; ``None`` when there is no file, or (with a warning naming it and what happens
    ``then``) when it is damaged: unreadable, failing its archive's checksums (bytes changed on disk), or not a
    store file."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        corrupt = _failed_checksum(path)
        if corrupt is not None:  # torch.load does not verify the zip archive's CRCs: changed bytes would load
            raise ValueError(f"the archive member {corrupt} fails its checksum")
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as cause:  # truncated, garbage, changed bytes, or objects other than tensors and plain values
        return _damaged(path, cause, then)
    if not isinstance(payload, dict) or set(payload) != {"key", "artefact"}:
        return _damaged(path, ValueError("not an artefact-store file"), then)
    return payload


def error_text(error: Exception, limit: int = 240) -> str:
    """``"Type: message"`` on one line, at most ``limit`` characters of the message (for a warning or an error that
    quotes what went wrong inside)."""
    return f"{type(error).__name__}: {' '.join(line.strip() for line in str(error).strip().splitlines())[:limit]}"


LOADERS = (
    "train.load_run (GAN runs), meta.load_meta (meta-GANs), context.load_context_gan (context meta-GANs), the "
    "train_or_load_* function that wrote any other"
)


def load_stored(path: Path | str, device: torch.device | str, from_payload: Callable, what: str, how: str) -> Any:
    """``from_payload(artefact, device)`` of the store file at ``path``: no readable file is a ``FileNotFoundError``
    saying ``how`` to make one; a file holding another kind of artefact, or tensors of other shapes, is a
    ``ValueError`` naming the file and the loader for each kind (not a ``KeyError`` from deep inside)."""
    device = choose_device(device)  # a GPU this machine lacks is named here, not read as a damaged file
    payload = read_payload(path, device)
    if payload is None:
        raise FileNotFoundError(f"No readable {what} at {path}; {how}.")
    try:
        return from_payload(payload["artefact"], device)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as error:
        raise ValueError(
            f"{path} does not hold a {what} that loads here ({error_text(error)}); each kind of file has "
            f"its loader: {LOADERS}."
        ) from None


def _failed_checksum(path: Path) -> str | None:
    """The first member of the zip archive ``torch.save`` wrote whose CRC-32 does not match, else ``None`` (also for a
    file that is not a zip archive: ``torch.load`` then refuses it)."""
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as archive:
        return archive.testzip()


def _damaged(path: Path, cause: Exception, then: str) -> None:
    if isinstance(cause, pickle.UnpicklingError):
        reason = "not a torch file of tensors and plain values"
    elif path.is_file() and path.stat().st_size == 0:
        reason = "an empty file"
    else:
        reason = error_text(cause)
    warnings.warn(f"The stored file {path} cannot be used ({reason}); {then}.", DamagedArtifactWarning, stacklevel=3)
    return None


def _next_after_damage(path: Path) -> str:
    """What :func:`load_or_build` does when the cache file ``path`` cannot be used, as its warning says it."""
    shipped = None if retraining() else shipped_path(path)
    return "rebuilding it" if shipped is None or not shipped.exists() else "trying the shipped file, else rebuilding it"


def check_same_parameters(expected: dict, saved: dict, what: str) -> None:
    """Refuse stored parameters ``saved`` whose names or shapes differ from a fresh model's ``expected`` (a file under
    the right key whose contents were changed): ``ValueError`` naming ``what`` and the first difference."""
    if set(expected) != set(saved):
        differ = sorted(set(expected) ^ set(saved))
        raise ValueError(f"{what}: parameter names differ from the config's ({', '.join(differ[:3])})")
    for name in expected:
        if not isinstance(saved[name], torch.Tensor) or saved[name].shape != expected[name].shape:
            found = tuple(saved[name].shape) if isinstance(saved[name], torch.Tensor) else type(saved[name]).__name__
            raise ValueError(f"{what}: {name} is {found}, the config's is {tuple(expected[name].shape)}")


def is_current(path: Path | str, key: dict, *, rebuilds: bool = True) -> bool:
    """Whether ``path`` or its shipped counterpart holds a readable artefact under ``key`` (:func:`load_or_build`);
    ``rebuilds=False`` for a caller that will not rebuild it: a damaged file's warning then says it is not loaded, and
    a stale shipped one is not announced (:func:`stale_shipped_reason` says why instead)."""
    return any(True for _ in _current_payloads(Path(path), key, "cpu", rebuilds=rebuilds))


def stale_shipped_reason(path: Path | str, key: dict) -> str | None:
    """Why the shipped counterpart of ``path`` cannot be loaded under ``key`` (:func:`stale_shipped_message`, for a
    caller that does not rebuild it), or ``None`` when it is current, absent or unreadable."""
    shipped = None if retraining() else shipped_path(path)
    payload = None if shipped is None else read_payload(shipped)
    if payload is None or payload["key"] == full_key(key):
        return None
    return stale_shipped_message(shipped, payload["key"], full_key(key), then="not loaded")


def _current_payloads(path: Path, key: dict, device: torch.device | str, *, rebuilds: bool = True):
    """Yield ``(file, payload)`` for the cache file, then the shipped file (unless retraining), each holding ``key``;
    a shipped file under another key is skipped, and announced (:class:`StaleArtifactWarning`) if the caller
    ``rebuilds`` it. A damaged file's warning says what happens next, and for a shipped one how to restore it."""
    wanted = full_key(key)
    shipped = None if retraining() else shipped_path(path)
    payload = read_payload(path, device, _next_after_damage(path) if rebuilds else "not loaded")
    if payload is not None and payload["key"] == wanted:
        yield path, payload
    if shipped is None:
        return
    restore = f"restore it: git checkout -- {shipped}"
    payload = read_payload(shipped, device, f"rebuilding it ({restore})" if rebuilds else f"not loaded ({restore})")
    if payload is not None and payload["key"] != wanted:
        if rebuilds:
            warnings.warn(stale_shipped_message(shipped, payload["key"], wanted), StaleArtifactWarning, stacklevel=4)
    elif payload is not None:
        yield shipped, payload


def differing_fields(found: dict, wanted: dict) -> list[str]:
    """The top-level fields of two keys whose values differ (a field missing from one counts), sorted."""
    missing = object()
    return sorted(
        name for name in found.keys() | wanted.keys() if found.get(name, missing) != wanted.get(name, missing)
    )


def stale_shipped_message(shipped: Path, found: dict, wanted: dict, then: str = "retraining it") -> str:
    """What a :class:`StaleArtifactWarning` says: the file, the key fields that differ, and what to do (for a glyph
    network trained on other training images, a glyph rendering made on another CPU is named as the likely cause)."""
    changed = ", ".join(differing_fields(found, wanted))
    message = f"The shipped file {shipped} was trained under another key (differing in: {changed}); {then}. "
    if Path(shipped).parent.parent.name == "glyphs" and found.get("data") != wanted.get("data"):  # <dataset>/seed<n>/
        return message + (
            "The glyph images read here differ from those it was trained on: metagan_lib/glyph_data was rendered "
            "again (and GLYPHS_SHA256 updated), and a CPU whose vector kernels round differently renders a few pixels "
            "one grey level apart (README, 'The glyph images are shipped'). Restore both with git checkout "
            "metagan_lib/glyph_data metagan_lib/data.py to load the shipped networks; the retrained file stays in this "
            "machine's cache, nothing to commit."
        )
    return (
        message
        + "Run the notebook with retrain=True (make full RETRAIN=1) and commit the new artifacts/ to refresh it."
    )


def load_or_build(
    path: Path | str,
    key: dict,
    build: Callable[[], T],
    *,
    to_payload: Callable[[T], Any],
    from_payload: Callable[[Any], T],
    device: torch.device | str = "cpu",
) -> T:
    """The artefact cached at ``path`` under ``key``, else the shipped one (:func:`shipped_path`, unless retraining;
    copied to ``path``), else ``build()``, written to ``path``.

    ``to_payload`` turns the artefact into tensors and plain values; ``from_payload`` turns them back.
    """
    path = Path(path)
    _refuse_folder(path)
    for source, payload in _current_payloads(path, key, device):
        try:
            artefact = from_payload(payload["artefact"])
        except Exception as cause:  # readable, but not what the caller can rebuild from
            _damaged(source, cause, _next_after_damage(path) if source == path else "rebuilding it")
            continue
        if source != path:  # a shipped file seeds the cache, so what reads the cache file (load_run, ...) finds it
            save_payload(payload, path)
        return artefact
    artefact = build()
    save_payload({"key": full_key(key), "artefact": to_payload(artefact)}, path)
    return artefact


def shipped_table(folder: Path | None = None) -> str:
    """A markdown table of the shipped artefacts: each file under ``folder`` (default :func:`shipped_dir`) and its
    size, with the total (what the README lists)."""
    folder = shipped_dir() if folder is None else Path(folder)
    files = sorted(p for p in folder.rglob("*.pt") if p.is_file())
    rows = [f"| `{p.relative_to(folder.parent).as_posix()}` | {p.stat().st_size / 1e3:,.0f} |" for p in files]
    total = sum(p.stat().st_size for p in files) / 1e3
    return "\n".join(["| file | kB |", "|---|---:|", *rows, f"| **{len(files)} files** | **{total:,.0f}** |"])
