"""The course site: ``make book`` builds the committed notebooks (not executed) into static HTML, offline."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SOLUTIONS = sorted((ROOT / "notebooks" / "solutions").glob("[0-9][0-9]_solutions.ipynb"))
DOCS = sorted((ROOT / "docs").glob("*.md"))  # the experiment log and the speed page


def test_table_of_contents_lists_every_notebook_in_order():
    toc = yaml.safe_load((ROOT / "book" / "_toc.yml").read_text())
    assert toc["root"] == "README"
    expected = [f"notebooks/{nb.stem}" for nb in NOTEBOOKS] + [f"notebooks/solutions/{nb.stem}" for nb in SOLUTIONS]
    expected += [f"docs/{page.stem}" for page in DOCS]
    assert SOLUTIONS and [chapter["file"] for chapter in toc["chapters"]] == expected


def _local_targets(page: Path) -> list[str]:
    links = re.findall(r'(?:href|src)="([^"#?]+)', page.read_text())
    return [link for link in links if not re.match(r"[a-z]+:", link)]


@pytest.mark.slow  # runs Sphinx on every notebook (about 10 s)
def test_book_builds_offline_and_every_page_link_and_figure_resolves(tmp_path):
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    command = [str(jupyter_book), "build", str(ROOT), "--config", "book/_config.yml", "--toc", "book/_toc.yml"]
    build = subprocess.run([*command, "--path-output", str(tmp_path), "-W"], cwd=ROOT, capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    html = tmp_path / "_build" / "html"
    pages = [html / "README.html"] + [html / "notebooks" / f"{nb.stem}.html" for nb in NOTEBOOKS]
    pages += [html / "notebooks" / "solutions" / f"{nb.stem}.html" for nb in SOLUTIONS]
    pages += [html / "docs" / f"{page.stem}.html" for page in DOCS]
    for page in pages:
        assert page.exists(), f"{page.name} missing from the book"
        missing = [t for t in _local_targets(page) if not (page.parent / t).exists()]
        assert not missing, f"{page.name} links to missing files: {missing[:5]}"
    readme_figures = set(re.findall(r"\(figures/([\w.-]+\.png)\)", (ROOT / "README.md").read_text()))
    assert readme_figures and readme_figures <= {p.name for p in (html / "_images").iterdir()}
    for doc in DOCS:  # the experiment log's figures exist and are on its page (their links resolved above)
        figures = re.findall(r"\(\.\./figures/([\w./-]+\.png)\)", doc.read_text())
        assert all((ROOT / "figures" / name).exists() for name in figures), doc.name
        assert (html / "docs" / f"{doc.stem}.html").read_text().count("<img") >= len(figures), doc.name
    for nb in NOTEBOOKS:  # each notebook's inline figures are on its page
        outputs = [out for c in json.loads(nb.read_text())["cells"] for out in c.get("outputs", [])]
        shown = sum("image/png" in out.get("data", {}) for out in outputs)
        page = (html / "notebooks" / f"{nb.stem}.html").read_text()
        assert shown > 0 and page.count("<img") >= shown, nb.name
    saved = {p.stem for p in (ROOT / "figures").glob("*.png")}  # every figure file comes from a notebook in the book
    sources = "".join(nb.read_text() for nb in NOTEBOOKS + SOLUTIONS)
    prefixes = {name[:2] for name in saved}
    assert prefixes <= {nb.name[:2] for nb in NOTEBOOKS}
    named_by_pattern = ("05_adaptation_", "06_metrics_vs_")  # saved under f-string names
    assert all(name in sources or name.startswith(named_by_pattern) for name in saved)
