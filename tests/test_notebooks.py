"""The notebooks' structure, the profiles and the papermill runner."""

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import pytest

from metagan_lib import profiles
from metagan_lib.reproduce import (
    NotebookFailed,
    find_notebooks,
    main,
    portable_paths,
    run_notebook,
    strip_progress_bars,
)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = find_notebooks()
SOLUTIONS = find_notebooks(ROOT / "notebooks" / "solutions")


def test_notebooks_are_numbered_and_found():
    numbers = [p.name[:2] for p in NOTEBOOKS]
    assert numbers == sorted(numbers) and numbers[:2] == ["01", "02"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_one_parameters_cell_with_the_runner_parameters(path):
    notebook = nbformat.read(path, as_version=4)
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    names = set(papermill.inspect_notebook(str(path)))
    assert {"profile", "dataset", "device", "seed"} <= names  # papermill only warns on unknown names


@pytest.mark.parametrize("path", NOTEBOOKS + SOLUTIONS, ids=lambda p: p.name)
def test_committed_notebook_is_a_full_run_executed_in_order_without_errors(path):
    notebook = nbformat.read(path, as_version=4)
    assert len([c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]) == 1
    code = [c for c in notebook.cells if c.cell_type == "code"]
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), "re-run the notebook top to bottom (make full)"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    injected = [c for c in code if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and 'profile = "full"' in injected[0].source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_opens_with_goals_and_ends_with_exercises(path):
    notebook = nbformat.read(path, as_version=4)
    markdown = [c.source for c in notebook.cells if c.cell_type == "markdown"]
    assert "What you will learn" in markdown[0]
    assert "## What to try next" in markdown[-1]
    assert 2 <= len(re.findall(r"^\d\. ", markdown[-1].split("What to try next")[1], flags=re.M)) <= 4


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_each_solved_exercise_states_its_expected_outcome(path):
    """A solutions notebook answers the exercises of the notebook with its number; each exercise states its outcome."""
    (answered,) = [nb for nb in NOTEBOOKS if nb.name[:2] == path.name[:2]]
    exercises = nbformat.read(answered, as_version=4).cells[-1].source.split("## What to try next")[1]
    items = re.split(r"^\d\. ", exercises, flags=re.M)[1:]
    assert items and all("*Expected outcome" in item for item in items)
    assert f"solutions/{path.name}" in exercises  # the exercise list links to its solutions
    solved = [c.source for c in nbformat.read(path, as_version=4).cells if c.source.startswith("## Exercise ")]
    assert len(solved) == len(items)


@pytest.mark.parametrize("notebook", sorted(profiles._SETTINGS))
def test_profiles_differ_only_in_values(notebook):
    smoke, full = profiles.settings(notebook, "smoke"), profiles.settings(notebook, "full")
    assert vars(smoke).keys() == vars(full).keys()
    for key in ("batch_size", "tasks", "shots"):  # shapes and N-way/K-shot never change with the profile
        assert getattr(smoke, key, None) == getattr(full, key, None), key


def test_unknown_profile_is_a_clear_error(capsys, monkeypatch):
    with pytest.raises(ValueError, match="Unknown profile 'fast'; choose one of smoke, full"):
        profiles.settings("01", "fast")
    assert main(["--profile", "fast"]) == 2
    assert "Unknown profile 'fast'" in capsys.readouterr().err
    monkeypatch.setenv("METAGAN_PROFILE", "full")
    assert profiles.resolve_profile("smoke") == "full"


def _bar(text: str) -> nbformat.NotebookNode:
    view = {"model_id": "0859b4ff", "version_major": 2, "version_minor": 0}
    data = {"application/vnd.jupyter.widget-view+json": view, "text/plain": text}
    return nbformat.v4.new_output("display_data", data=data)


def test_progress_bars_are_stripped_and_every_other_output_kept():
    cell = nbformat.v4.new_code_cell("train()")
    printed = nbformat.v4.new_output("stream", name="stdout", text="fidelity 0.865\n")
    figure = nbformat.v4.new_output("display_data", data={"image/png": "iVBOR", "text/plain": "<Figure>"})
    cell.outputs = [_bar("MAML:   0%|          | 0/8000"), printed, _bar("FOMAML:   0%|  | 0/8000"), figure]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 06"), cell])
    notebook.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    assert strip_progress_bars(notebook) == 2
    assert cell.outputs == [printed, figure] and "widgets" not in notebook.metadata
    nbformat.validate(notebook)


@pytest.mark.parametrize(
    "path", NOTEBOOKS + SOLUTIONS + sorted(ROOT.glob("results/full/*/*.ipynb")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_committed_notebook_has_no_progress_bar_frames(path):
    notebook = nbformat.read(path, as_version=4)
    assert "widgets" not in notebook.metadata and strip_progress_bars(notebook) == 0


def test_papermill_paths_are_made_relative_to_the_repository(tmp_path):
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["papermill"] = {"input_path": "/somewhere/x.ipynb", "output_path": "/elsewhere/x.partial.ipynb"}
    portable_paths(notebook, ROOT / "notebooks" / "06_x.ipynb", ROOT / "runs" / "full" / "06_x.ipynb")
    assert notebook.metadata["papermill"] == {
        "input_path": "notebooks/06_x.ipynb",
        "output_path": "runs/full/06_x.ipynb",
    }
    portable_paths(notebook, ROOT / "notebooks" / "06_x.ipynb", tmp_path / "out" / "06_x.ipynb")  # outside: the name
    assert notebook.metadata["papermill"]["output_path"] == "06_x.ipynb"
    unexecuted = nbformat.v4.new_notebook()
    portable_paths(unexecuted, ROOT / "a.ipynb", ROOT / "b.ipynb")
    assert "papermill" not in unexecuted.metadata


@pytest.mark.parametrize(
    "path", NOTEBOOKS + SOLUTIONS + sorted(ROOT.glob("results/full/*/*.ipynb")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_committed_notebook_records_no_machine_path(path):
    recorded = nbformat.read(path, as_version=4).metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        assert not Path(recorded.get(key, "")).is_absolute(), f"{key} is {recorded[key]}: run it through the runner"


@pytest.mark.slow  # spawns processes
def test_runner_names_the_failing_notebook_and_cell(tmp_path):
    notebook = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "smoke"')
    params.metadata["tags"] = ["parameters"]
    notebook.cells = [params, nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("raise ValueError('boom')")]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "07_broken.ipynb"
    nbformat.write(notebook, path)
    with pytest.raises(NotebookFailed, match=r"07_broken.ipynb failed in cell \d+ .*ValueError: boom"):
        run_notebook(path, tmp_path / "out" / path.name, {"profile": "smoke"})


@pytest.mark.slow  # spawns processes
def test_runner_leaves_the_progress_bars_out_of_the_executed_copy(tmp_path):
    params = nbformat.v4.new_code_cell('profile = "smoke"')
    params.metadata["tags"] = ["parameters"]
    loop = nbformat.v4.new_code_cell("from tqdm.auto import tqdm\nprint(sum(tqdm(range(3), desc='steps')))")
    notebook = nbformat.v4.new_notebook(cells=[params, loop])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "07_bars.ipynb"
    nbformat.write(notebook, path)
    run_notebook(path, tmp_path / "out" / path.name, {"profile": "smoke"})
    executed = nbformat.read(tmp_path / "out" / path.name, as_version=4)
    outputs = executed.cells[-1].outputs
    assert [o.output_type for o in outputs] == ["stream"] and outputs[0].text == "3\n"
    assert "widgets" not in executed.metadata
    assert executed.metadata["papermill"]["output_path"] == path.name  # outside the repository: the name alone


@pytest.mark.slow  # spawns processes
def test_nbval_fails_when_a_checked_output_changes(tmp_path):
    notebook = nbformat.read(ROOT / "notebooks" / "01_gan_from_formulas.ipynb", as_version=4)
    checked = [c for c in notebook.cells if c.cell_type == "code" and c.source.startswith("# NBVAL_CHECK_OUTPUT")]
    assert len(checked) >= 3
    # keep only the set-up cells and the first checked cell, so the run is quick
    first = notebook.cells.index(checked[0])
    notebook.cells = [c for c in notebook.cells[: first + 1] if c.cell_type == "code"]
    stream = next(o for o in notebook.cells[-1].outputs if o.output_type == "stream")
    good = tmp_path / "good.ipynb"
    nbformat.write(notebook, good)
    stream["text"] = stream["text"].replace("V(D*, G)", "V(D*, G) changed", 1)
    bad = tmp_path / "bad.ipynb"
    nbformat.write(notebook, bad)
    command = [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider", "-q"]
    assert subprocess.run(command + [str(good)], cwd=tmp_path, capture_output=True).returncode == 0
    result = subprocess.run(command + [str(bad)], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1 and "changed" in result.stdout
