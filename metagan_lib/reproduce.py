"""Execute the numbered notebooks in order with papermill.

    python -m metagan_lib.reproduce --profile smoke|full [--dataset glyphs|digits|omniglot|mnist]
                                    [--device auto|cpu|cuda] [--only 01 [02 ...]] [--output-dir DIR]
                                    [--solutions] [--retrain]

Each ``notebooks/NN_*.ipynb`` runs with ``profile``, ``dataset``, ``device`` and ``retrain`` injected into
its cell tagged ``parameters``; the executed copy is written to ``runs/<profile>/`` (``runs/<profile>/<dataset>/`` for a
dataset other than the default ``glyphs``). ``--solutions`` runs the exercises' worked solutions,
``notebooks/solutions/NN_solutions.ipynb``, instead, into ``runs/<profile>/solutions/``. The run stops at the first
failing notebook, naming it and the failing cell, and exits non-zero.

``$METAGAN_PROFILE``, when set, overrides ``--profile`` (with a printed notice). An executed copy is
written under a temporary name and moved into place when its notebook finishes, so an interrupted or
failed run never replaces a good executed notebook. Its progress bars are left out of the copy
(:func:`strip_progress_bars`): outside a live kernel a bar renders as its first frame, "0%"; the paths papermill records
are made relative to the repository (:func:`portable_paths`). SIGTERM is handled
like Ctrl-C: the run stops, the notebook's kernel and its worker processes end with it, and one line says so.
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

from .data import DATASET_NAMES, EMBEDDED_DATASETS, dataset_name
from .paths import absolute_path_settings, data_dir, repo_root
from .profiles import PROFILE_NAMES, check_profile, resolve_profile
from .runtime import DEVICE_CHOICES, choose_device, worker_count

NOTEBOOK_PATTERN = re.compile(r"^(\d\d)_.+\.ipynb$")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "widgets"  # the notebook metadata entry where the kernel's widget models are saved


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names the notebook and the cell."""


@dataclass
class NotebookResult:
    """One notebook's run as the summary table prints it: its name, wall-clock seconds (NaN when it failed) and
    ``"ok"`` or ``"FAILED"``."""

    notebook: str
    seconds: float
    status: str


def find_notebooks(folder: Path | None = None, only: list[str] | None = None) -> list[Path]:
    """``NN_*.ipynb`` in ``folder`` (default ``notebooks/``), sorted; ``only`` keeps the listed numbers."""
    folder = folder or repo_root() / "notebooks"
    notebooks = sorted(p for p in folder.glob("*.ipynb") if NOTEBOOK_PATTERN.match(p.name))
    if not notebooks:
        raise ValueError(
            f"No notebook NN_*.ipynb in {folder}: metagan_lib runs the notebooks of the checkout it is imported from; "
            "install it from a clone of the repository with `pip install -e .` (or `make venv`) and run it there."
        )
    if only:
        wanted = {o.zfill(2) for o in only}
        unknown = wanted - {p.name[:2] for p in notebooks}
        if unknown:
            raise ValueError(
                f"No notebook numbered {', '.join(sorted(unknown))} in {folder}; "
                f"have {', '.join(p.name for p in notebooks)}."
            )
        notebooks = [p for p in notebooks if p.name[:2] in wanted]
    return notebooks


def strip_progress_bars(notebook: nbformat.NotebookNode) -> int:
    """Remove the widget outputs (tqdm's progress bars in a kernel) and the saved widget state from an executed
    notebook, in place; return how many outputs went. A saved bar's text is its first frame ("0%|  | 0/400"), all a
    reader sees outside a live kernel (on GitHub, say), and its state is layout models. Other outputs are kept."""
    removed = 0
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        kept = [o for o in cell.outputs if WIDGET_VIEW not in o.get("data", {})]
        removed += len(cell.outputs) - len(kept)
        cell.outputs = kept
    notebook.metadata.pop(WIDGET_STATE, None)
    return removed


def portable_paths(notebook: nbformat.NotebookNode, source: Path, output: Path) -> None:
    """Record papermill's ``input_path`` and ``output_path`` relative to the repository (the file name alone outside
    it), in place, so that an executed copy carries no path of the machine that ran it; ``output`` is the final copy,
    not the temporary one papermill wrote."""
    recorded = notebook.metadata.get("papermill")
    if recorded is None:
        return
    root = repo_root().resolve()
    for key, path in (("input_path", source), ("output_path", output)):
        path = Path(path).resolve()
        recorded[key] = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name


def run_notebook(notebook: Path, output: Path, parameters: dict, kernel: str = "python3") -> float:
    """Execute one notebook with papermill; return seconds taken. Raises :class:`NotebookFailed`."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    output.parent.mkdir(parents=True, exist_ok=True)
    partial_output = output.with_name(output.stem + ".partial.ipynb")  # moved over ``output`` only on success
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(notebook),
            str(partial_output),
            parameters=parameters,
            kernel_name=kernel,
            cwd=str(notebook.parent),
            progress_bar=False,
            log_output=False,
            # the kernel's own start-up log (e.g. its notice that the local TCP transport is unencrypted) is noise here;
            # errors in the notebook still surface through papermill
            extra_arguments=["--IPKernelApp.log_level=ERROR"],
        )
    except PapermillExecutionError as error:
        raise NotebookFailed(
            f"{notebook.name} failed in cell {error.cell_index} (execution count {error.exec_count}): "
            f"{error.ename}: {error.evalue}. Executed copy with the traceback: {partial_output}"
        ) from None
    except KeyboardInterrupt:
        raise
    except Exception as error:  # the kernel died (out of memory, killed), or it could not start
        raise NotebookFailed(
            f"{notebook.name} stopped: {type(error).__name__}: {error}. The cells run so far: {partial_output}"
        ) from None
    executed = nbformat.read(partial_output, as_version=4)
    strip_progress_bars(executed)
    portable_paths(executed, notebook, output)
    nbformat.write(executed, partial_output)
    partial_output.replace(output)
    return time.perf_counter() - start


def check_environment(dataset: str) -> None:
    """The environment settings a run reads, checked before its first notebook rather than inside one:
    ``$METAGAN_WORKERS``, and ``$METAGAN_DATA`` for a dataset read from it (not the embedded ones)."""
    worker_count(2)  # a value that is not a positive integer is an error naming the variable
    if dataset not in EMBEDDED_DATASETS:
        try:
            data_dir()
        except FileNotFoundError as error:  # a setting that points nowhere: a bad argument, reported as one
            raise ValueError(str(error)) from None


def reproduce(
    profile: str,
    dataset: str = "glyphs",
    device: str = "auto",
    only: list[str] | None = None,
    output_root: Path | None = None,
    solutions: bool = False,
    retrain: bool = False,
) -> list[NotebookResult]:
    """Run the notebooks; return one result per notebook that ran (stopping at the first failure).

    Everything is checked before the first notebook starts: the profile (``$METAGAN_PROFILE`` overrides it,
    with a notice), the dataset name (any case), the device (``cuda`` needs CUDA), the settings the notebooks read
    (:func:`check_environment`) and the notebook numbers.
    ``retrain``: every notebook trains its networks instead of loading those shipped in ``artifacts/``."""
    profile = resolve_profile(
        check_profile(profile), retrain=retrain
    )  # a bad --profile is an error even when the variable overrides it
    absolute_path_settings()  # the kernels start in notebooks/: a relative folder would be read from there
    dataset = dataset_name(dataset)
    device = device.strip().lower() if isinstance(device, str) else device  # names in any case, as for the dataset
    choose_device(device)  # refuses unknown names, and cuda without CUDA, here, not inside the first notebook
    check_environment(dataset)
    folder = repo_root() / "notebooks" / "solutions" if solutions else None
    notebooks = find_notebooks(folder, only=only)
    out_dir = output_root or repo_root() / "runs" / profile / ("solutions" if solutions else "")
    out_dir = out_dir if dataset == "glyphs" else out_dir / dataset
    blocking = next((p for p in (out_dir, *out_dir.parents) if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise ValueError(
            f"The output folder {out_dir} cannot be made: {blocking} is a file; choose another --output-dir."
        )
    results: list[NotebookResult] = []
    parameters = {"profile": profile, "dataset": dataset, "device": device, "retrain": retrain}
    for index, notebook in enumerate(notebooks, 1):
        print(
            f"[{index}/{len(notebooks)}] {notebook.name} (profile={profile}, dataset={dataset}, device={device}"
            + (", retrain" if retrain else "")
            + ") ...",
            flush=True,
        )
        try:
            seconds = run_notebook(notebook, out_dir / notebook.name, parameters)
        except NotebookFailed:
            results.append(NotebookResult(notebook.name, float("nan"), "FAILED"))
            print(format_summary(results))
            raise
        results.append(NotebookResult(notebook.name, seconds, "ok"))
        print(f"    done in {seconds:.1f} s", flush=True)
    return results


def format_summary(results: list[NotebookResult]) -> str:
    lines = ["| notebook | seconds | status |", "|---|---:|---|"]
    lines += [f"| {r.notebook} | {r.seconds:.1f} | {r.status} |" for r in results]
    return "\n".join(lines)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m metagan_lib.reproduce", description=__doc__.split("\n\n")[0], allow_abbrev=False
    )
    parser.add_argument("--profile", required=True, help=f"one of {', '.join(PROFILE_NAMES)}")
    parser.add_argument("--dataset", default="glyphs", help=f"one of {', '.join(DATASET_NAMES)} (default glyphs)")
    parser.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICE_CHOICES)} (default auto)")
    parser.add_argument("--only", nargs="+", metavar="NN", help="run only these notebook numbers")
    parser.add_argument(
        "--output-dir",
        type=Path,
        help="folder for the executed notebooks (default runs/<profile>, runs/<profile>/solutions with --solutions); "
        "a dataset other than glyphs writes to its /<dataset> subfolder, of this folder too",
    )
    parser.add_argument("--solutions", action="store_true", help="run notebooks/solutions/NN_solutions.ipynb instead")
    parser.add_argument(
        "--retrain", action="store_true", help="train every network instead of loading those shipped in artifacts/"
    )
    args = parser.parse_args(argv)
    results: list[NotebookResult] = []
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        results = reproduce(
            args.profile, args.dataset, args.device, args.only, args.output_dir, args.solutions, args.retrain
        )
    except (ValueError, RuntimeError) as error:  # bad arguments, a failed notebook, CUDA missing
        print(f"error: {error}", file=sys.stderr)
        return 1 if isinstance(error, NotebookFailed) else 2
    except KeyboardInterrupt:
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # the interrupted cell's task, reported once below
        print("interrupted: the run stopped; executed notebooks already in place are untouched.", file=sys.stderr)
        return 130
    print(format_summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
