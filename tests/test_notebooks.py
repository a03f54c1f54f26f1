"""Both notebooks run top to bottom (nbclient) on a tiny run, with the kernel's own matplotlib
backend and started in notebooks/ (as Jupyter and VS Code start it), and every cell that draws
shows its figure: a broken or blank notebook fails CI. They open EN_ANALYSIS_RUN from the root
or from notebooks/, and without a run their first cell says in one line what to run."""

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


def _project(folder: Path, run: Path | None) -> Path:
    """A repository-like folder: pyproject.toml, the notebooks in notebooks/ and, when given,
    a copy of ``run`` in runs/fashion-mnist (what ``make reproduce`` writes)."""
    (folder / "notebooks").mkdir(parents=True)
    (folder / "pyproject.toml").write_text('[project]\nname = "a-checkout"\n')
    for path in NOTEBOOKS:
        shutil.copy(path, folder / "notebooks" / path.name)
    if run is not None:
        shutil.copytree(run, folder / "runs" / "fashion-mnist")
    return folder


def _execute(nb, cwd: Path, allow_errors: bool = False):
    """Run ``nb`` in a kernel started in ``cwd`` (as Jupyter and VS Code start it in the
    notebook's folder), MPLBACKEND unset so that the kernel uses its default (inline) backend."""
    with pytest.MonkeyPatch.context() as env:
        env.delenv("MPLBACKEND", raising=False)
        NotebookClient(
            nb,
            timeout=300,
            kernel_name="python3",
            allow_errors=allow_errors,
            resources={"metadata": {"path": str(cwd)}},
        ).execute()
    return nb


def _first_cell(path: Path, *extra: str):
    """The notebook's first code cell (which finds the run), then the ``extra`` cells."""
    nb = nbformat.read(path, as_version=4)
    nb.cells = [next(c for c in nb.cells if c.cell_type == "code")]
    nb.cells += [nbformat.v4.new_code_cell(source) for source in extra]
    return nb


@pytest.fixture(scope="module")
def executed(tmp_path_factory, analysed_run):
    """Each notebook executed once where Jupyter starts it, in notebooks/ of a checkout whose
    runs/fashion-mnist is a copy of the tiny run, EN_ANALYSIS_RUN unset."""
    project = _project(tmp_path_factory.mktemp("nb") / "checkout", analysed_run)
    out = {}
    with pytest.MonkeyPatch.context() as env:
        env.delenv("EN_ANALYSIS_RUN", raising=False)
        for path in NOTEBOOKS:
            nb = nbformat.read(project / "notebooks" / path.name, as_version=4)
            out[path.stem] = _execute(nb, project / "notebooks")
    return out


@pytest.mark.parametrize("name", [p.stem for p in NOTEBOOKS])
@pytest.mark.parametrize(
    "cwd, variable",
    [(".", "absolute"), ("notebooks", "runs/other")],
)
def test_the_notebooks_open_en_analysis_run_from_the_root_or_notebooks(
    tmp_path, analysed_run, name, cwd, variable, monkeypatch
):
    """EN_ANALYSIS_RUN, absolute or relative (to the working directory, else the checkout's
    root), is the run the notebook opens, from the root as from notebooks/."""
    project = _project(tmp_path / "checkout", None)
    other = tmp_path / "elsewhere" if variable == "absolute" else project / variable
    shutil.copytree(analysed_run, other)
    monkeypatch.setenv("EN_ANALYSIS_RUN", str(other) if variable == "absolute" else variable)
    nb = _execute(
        _first_cell(project / "notebooks" / f"{name}.ipynb", "print(run.path.resolve())"),
        project / cwd,
    )
    assert nb.cells[-1].outputs[0]["text"].strip() == str(other.resolve())


@pytest.mark.parametrize("name", [p.stem for p in NOTEBOOKS])
def test_without_a_run_the_first_cell_says_what_to_run(tmp_path, name, monkeypatch):
    project = _project(tmp_path / "checkout", None)
    monkeypatch.delenv("EN_ANALYSIS_RUN", raising=False)
    nb = _execute(_first_cell(project / "notebooks" / f"{name}.ipynb"), project / "notebooks", True)
    (error,) = [o for o in nb.cells[0].outputs if o.output_type == "error"]
    assert error.ename == "UserError"
    assert error.evalue == (
        "no run at runs/fashion-mnist: run `make reproduce` (or set EN_ANALYSIS_RUN to a run "
        "folder)"
    )


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
