"""environment.yml, pyproject.toml and the Makefile describe one environment."""

import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

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
    assert pip_section[0] == "-c constraints.txt" and len(pip_section) == 2 and pip_section[1].startswith("-e .[")
    extras = set(pip_section[1].split("[", 1)[1].rstrip("]").split(","))
    assert extras == set(pyproject["optional-dependencies"])
    makefile = (ROOT / "Makefile").read_text()
    assert f'-c constraints.txt -e ".[{",".join(sorted(extras))}]"' in makefile
    assert "$(STAMP): pyproject.toml constraints.txt" in makefile  # a changed pin refreshes .venv


def test_constraints_pin_every_dependency_to_a_version_pyproject_allows():
    """constraints.txt: one exact pin a package, each of pyproject's requirements pinned inside its range."""
    pyproject, _ = load()
    lines = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if line and not line.startswith("#")]
    pins = dict(line.split("==") for line in lines)
    assert len(pins) == len(lines), "one '==' pin a line, no package twice"
    canonical = {canonicalize_name(name): version for name, version in pins.items()}
    everything = pyproject["dependencies"] + [d for extra in pyproject["optional-dependencies"].values() for d in extra]
    for requirement in map(Requirement, everything):
        pinned = canonical.get(canonicalize_name(requirement.name))
        assert pinned is not None, f"{requirement.name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pinned, prereleases=True), (
            f"{requirement} but constraints.txt pins {pinned}"
        )


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
        "pillow",  # read by the Omniglot loader itself, not only through matplotlib and torchvision
        "packaging",  # read by the tests
    } <= names


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text() and "make reproduce" in (ROOT / "README.md").read_text()


def test_citation_and_licence_agree_with_the_package():
    """CITATION.cff, LICENSE, pyproject.toml and metagan_lib.__version__ name one version and one licence."""
    import yaml

    import metagan_lib

    pyproject, _ = load()
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["title"] and citation["authors"]
    assert citation["version"] == pyproject["version"] == metagan_lib.__version__
    assert citation["license"] == pyproject["license"]["text"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")
