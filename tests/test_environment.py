"""environment.yml, pyproject.toml and the Makefile describe one environment."""

import tomllib
from pathlib import Path

import yaml
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]


def load():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    return pyproject, environment


def test_python_versions_agree():
    pyproject, environment = load()
    conda_python = next(d for d in environment["dependencies"] if isinstance(d, str) and d.startswith("python="))
    version = conda_python.split("=", 1)[1]
    assert SpecifierSet(pyproject["requires-python"]).contains(f"{version}.0")


def test_conda_pip_section_installs_the_package_with_every_extra():
    pyproject, environment = load()
    pip_section = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    assert len(pip_section) == 1 and pip_section[0].startswith("-e .[")
    extras = set(pip_section[0].split("[", 1)[1].rstrip("]").split(","))
    assert extras == set(pyproject["optional-dependencies"])
    makefile = (ROOT / "Makefile").read_text()
    assert f'-e ".[{",".join(sorted(extras))}]"' in makefile


def test_pinned_torch_and_the_tools_the_project_needs():
    pyproject, _ = load()
    everything = pyproject["dependencies"] + [d for extra in pyproject["optional-dependencies"].values() for d in extra]
    assert "torch==2.14.1" in everything and "torchvision==0.29.1" in everything
    names = {d.split("=")[0].split(">")[0].split("<")[0] for d in everything}
    assert {
        "papermill",
        "nbval",
        "matplotlib",
        "scipy",
        "numpy",
        "tqdm",
        "pytest",
        "jupyterlab",
        "tensorboard",
    } <= names


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text() and "make reproduce" in (ROOT / "README.md").read_text()
