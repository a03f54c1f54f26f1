"""Both notebooks run top to bottom (nbclient) on a tiny run, with the kernel's own matplotlib
backend, and every cell that draws shows its figure: a broken or blank notebook fails CI."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
# what a cell that draws calls: a plotting function, pyplot's subplots, a Run's explorer
DRAWS = re.compile(r"plotting\.(?!display_names|style|DROP)\w+\(|plt\.subplots\(")


def _is_figure_cell(cell) -> bool:
    return "figure" in cell.metadata.get("tags", [])


@pytest.fixture(scope="module")
def executed(tmp_path_factory, analysed_run):
    """Each notebook executed once on a copy of the tiny run, MPLBACKEND unset so that the
    kernel uses its default (inline) backend, as in Jupyter."""
    run = tmp_path_factory.mktemp("nb") / "run"
    shutil.copytree(analysed_run, run)
    out = {}
    with pytest.MonkeyPatch.context() as env:
        env.delenv("MPLBACKEND", raising=False)
        env.setenv("EN_ANALYSIS_RUN", str(run))
        for path in NOTEBOOKS:
            nb = nbformat.read(path, as_version=4)
            NotebookClient(
                nb,
                timeout=300,
                kernel_name="python3",
                resources={"metadata": {"path": str(path.parent.parent)}},
            ).execute()
            out[path.stem] = nb
    return out


@pytest.mark.parametrize("name", [p.stem for p in NOTEBOOKS])
def test_notebook_executes_without_errors(executed, name):
    nb = executed[name]
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors


@pytest.mark.parametrize("name", [p.stem for p in NOTEBOOKS])
def test_every_drawing_cell_shows_its_figure(executed, name):
    code = [c for c in executed[name].cells if c.cell_type == "code"]
    drawing = [c for c in code if _is_figure_cell(c)]
    assert drawing, "no cell is tagged 'figure'"
    untagged = [c.source for c in code if DRAWS.search(c.source) and not _is_figure_cell(c)]
    assert not untagged, f"cells that draw must be tagged 'figure': {untagged}"
    for cell in drawing:
        images = [
            o
            for o in cell.outputs
            if o.output_type in ("display_data", "execute_result") and "image/png" in o.data
        ]
        assert len(images) == 1, f"expected one image from:\n{cell.source}\ngot {cell.outputs}"


def test_the_explorer_cell_shows_the_page(executed):
    cells = [
        c for c in executed["explore_checkpoints"].cells if "explorer" in c.metadata.get("tags", [])
    ]
    assert len(cells) == 1
    pages = [o.data["text/html"] for o in cells[0].outputs if "text/html" in o.get("data", {})]
    assert len(pages) == 1 and pages[0].startswith("<iframe srcdoc=")


def test_there_are_two_notebooks():
    assert [p.name for p in NOTEBOOKS] == ["explore_checkpoints.ipynb", "reproduce_figure.ipynb"]


def test_importing_the_package_leaves_the_matplotlib_backend_alone():
    """Every en_analysis module (but ``__main__``, which runs the CLI) imported in a process
    whose backend is 'svg': still 'svg'."""
    script = (
        "import importlib, pkgutil, matplotlib, en_analysis\n"
        "before = matplotlib.get_backend()\n"
        "for m in pkgutil.walk_packages(en_analysis.__path__, 'en_analysis.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "print(before, matplotlib.get_backend())\n"
    )
    env = {"MPLBACKEND": "svg", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["svg", "svg"]
