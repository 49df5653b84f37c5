"""Run profiles, defined once here and read by every notebook.

``smoke`` cuts iteration counts (and, in notebook 06, the classes per task and the images generated per class) so
that every notebook runs on a 2-core CPU in CI within its budget; ``full`` gives the real figures. The two never
differ in image size, network shapes or K-shot, so a notebook's hardware-independent checked outputs keep their form
in both.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

from . import artifacts
from .paths import cache_dir, repo_root

PROFILE_NAMES = ("smoke", "full")
PROFILE_ENV_VAR = "METAGAN_PROFILE"

_SETTINGS: dict[str, dict[str, dict]] = {
    "01": {
        "smoke": {"gan_steps": 40, "batch_size": 64, "sample_every": 20},
        "full": {"gan_steps": 4000, "batch_size": 64, "sample_every": 1000},
    },
    "02": {
        "smoke": {"steps": 20, "batch_size": 64, "sample_every": 10, "score_samples": 200, "long_steps": 60},
        "full": {"steps": 3000, "batch_size": 64, "sample_every": 500, "score_samples": 1000, "long_steps": 12000},
    },
    "03": {
        "smoke": {"meta_steps": 100, "tasks": 25, "shots": 10, "test_tasks": 100},
        "full": {"meta_steps": 8000, "tasks": 25, "shots": 10, "test_tasks": 500},
    },
    "04": {
        "smoke": {"meta_steps": 6, "tasks": 8, "shots": 5, "show_tasks": 4},
        "full": {"meta_steps": 500, "tasks": 8, "shots": 5, "show_tasks": 4},
    },
    "05": {
        "smoke": {
            "reptile_steps": 6,
            "meta_sgd_steps": 4,
            "tasks": 8,
            "shots": 5,
            "show_tasks": 3,
            "context_steps": 4,
            "chosen_context_steps": 6,
            "guide_steps": 100,
        },
        "full": {
            "reptile_steps": 300,
            "meta_sgd_steps": 200,
            "tasks": 8,
            "shots": 5,
            "show_tasks": 3,
            "context_steps": 400,
            "chosen_context_steps": 2000,
            "guide_steps": 2000,
        },
    },
    "06": {
        "smoke": {
            "seeds": [0, 1, 2],
            "classes": 5,
            "generated_per_class": 10,
            "shot_counts": [1, 5, 10],
            "step_counts": [0, 1, 3],
            "default_shots": 5,
            "adapt_steps": 3,
            "inversion_steps": 10,
            "vae_steps": 20,
            "protonet_episodes": 20,
            "downstream_episodes": 2,
            "feature_steps": 100,
            "tasks": 8,
            "shots": 5,
        },
        "full": {
            "seeds": [0, 1, 2, 3, 4],
            "classes": 20,
            "generated_per_class": 20,
            "shot_counts": [1, 5, 10],
            "step_counts": [0, 1, 3, 20],
            "default_shots": 5,
            "adapt_steps": 20,
            "inversion_steps": 200,
            "vae_steps": 3000,
            "protonet_episodes": 2000,
            "downstream_episodes": 6,
            "feature_steps": 2000,
            "tasks": 8,
            "shots": 5,
        },
    },
}


def check_profile(profile: str) -> str:
    """``profile`` as its known name (any case, spaces around ignored), else a ``ValueError`` naming the choices."""
    name = profile.strip().lower() if isinstance(profile, str) else profile
    if name not in PROFILE_NAMES:
        raise ValueError(f"Unknown profile {profile!r}; choose one of {', '.join(PROFILE_NAMES)}.")
    return name


def resolve_profile(profile: str, retrain: bool = False) -> str:
    """The profile to use: ``$METAGAN_PROFILE`` when set (CI and nbval force ``smoke`` this way
    on notebooks committed with a ``full`` run's outputs), else ``profile``. An override is printed,
    naming the variable; a bad value of the variable is refused, naming it.

    ``retrain``: ignore the shipped artefacts (:func:`metagan_lib.artifacts.set_retrain`); ``$METAGAN_RETRAIN=1``
    set outside overrides ``retrain=False``, with a note."""
    if retrain or not artifacts.retraining():
        artifacts.set_retrain(retrain)
    else:
        print(f"note: ${artifacts.RETRAIN_ENV_VAR}=1 overrides retrain=False (the shipped artefacts are ignored)")
    override = os.environ.get(PROFILE_ENV_VAR)
    if not override:
        return check_profile(profile)
    if override.strip().lower() not in PROFILE_NAMES:
        raise ValueError(
            f"${PROFILE_ENV_VAR} is {override!r}; set it to one of {', '.join(PROFILE_NAMES)}, or unset it."
        )
    override = override.strip().lower()
    if override != profile:
        print(f"note: ${PROFILE_ENV_VAR}={override} overrides profile={profile!r}")
    return override


def settings(notebook: str, profile: str) -> SimpleNamespace:
    """The settings of notebook ``notebook`` (e.g. ``"01"``) under ``profile``."""
    profile = check_profile(profile)
    if notebook not in _SETTINGS:
        raise ValueError(f"No settings for notebook {notebook!r}; known: {', '.join(sorted(_SETTINGS))}.")
    return SimpleNamespace(profile=profile, **_SETTINGS[notebook][profile])


def figure_dir(profile: str, dataset: str = "glyphs") -> Path:
    """``figures/`` for the full profile on the default dataset (what the README shows),
    ``figures/<dataset>/`` for other datasets; ``runs/<profile>/figures[/<dataset>]`` for other profiles."""
    profile = check_profile(profile)
    root = repo_root()
    path = root / "figures" if profile == "full" else root / "runs" / profile / "figures"
    path = path if dataset == "glyphs" else path / dataset
    path.mkdir(parents=True, exist_ok=True)
    return path


def results_dir(profile: str) -> Path:
    """``results/<profile>/`` in the repository."""
    path = repo_root() / "results" / check_profile(profile)
    path.mkdir(parents=True, exist_ok=True)
    return path


def artifact_path(profile: str, dataset: str, seed: int, name: str) -> Path:
    """Cache file for a trained artefact, keyed by profile, dataset and seed (``name``: a file name, no folders)."""
    from . import __version__

    if not name or Path(name).name != name or name in (".", ".."):
        raise ValueError(f"Artefact name {name!r} must be a plain file name (no folders), e.g. '04_maml'.")

    path = (
        cache_dir() / "artifacts" / f"v{__version__}" / check_profile(profile) / dataset / f"seed{seed}" / f"{name}.pt"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
