"""Execute the notebooks for the documentation site (`make docs` runs this before mkdocs).

The run they are executed against: ``$EN_ANALYSIS_RUN`` if set, else ``runs/fashion-mnist`` if
it exists, else a tiny run trained here into ``build/docs-run`` (about a minute on 2 cores; done
once, then reused: ``reproduce`` skips what is up to date). Each notebook runs top to bottom with
nbclient from the repository root, as `tests/test_notebooks.py` runs them, and the executed copy,
outputs included, is written to ``docs/notebooks/`` (ignored by git), which mkdocs-jupyter renders
without executing again. A cell that fails stops the build.

    .venv/bin/python scripts/build_notebooks.py [--run RUN] [--timeout SECONDS]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
OUT = ROOT / "docs" / "notebooks"
DEFAULT_RUN = ROOT / "runs" / "fashion-mnist"
TINY_RUN = ROOT / "build" / "docs-run"
# a run small enough to train and analyse in about a minute, with every step's outputs
TINY = [
    "--preset",
    "fashion-mnist-quick",
    "--set",
    "data.train_samples=512",
    "--set",
    "data.val_samples=200",
    "--set",
    "model.width=4",
    "--set",
    "train.epochs=2",
    "--set",
    "train.lr_drops=[1]",
    "--set",
    "analysis.per_category=10",
]


def choose_run(asked: str | None) -> tuple[Path, str]:
    """The run to execute against and a sentence saying which it is."""
    if asked or os.environ.get("EN_ANALYSIS_RUN"):
        run = Path(asked or os.environ["EN_ANALYSIS_RUN"]).resolve()
        if not run.is_dir():
            sys.exit(f"build_notebooks: {run} is not a run folder")
        return run, f"the run `{_shown(run)}` (`EN_ANALYSIS_RUN`)"
    if DEFAULT_RUN.is_dir():
        return DEFAULT_RUN, "the default run, `runs/fashion-mnist` (`make reproduce`)"
    return make_tiny_run(), (
        "a tiny run that `make docs` trains for them (`build/docs-run`: the quick preset at "
        "width 4, 512 training images, 2 epochs, 10 images per category), not the default run: "
        "its numbers say nothing about EN"
    )


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return path.name


def make_tiny_run() -> Path:
    """Train and analyse the tiny run (or finish it: every step skips what is up to date)."""
    cli = Path(sys.executable).parent / "en-analysis"
    command = [str(cli)] if cli.exists() else [sys.executable, "-m", "en_analysis"]
    command += ["reproduce", *TINY, "--out", str(TINY_RUN), "--quiet"]
    print("build_notebooks: no run given and no runs/fashion-mnist: making", _shown(TINY_RUN))
    started = time.monotonic()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    print(f"build_notebooks: {_shown(TINY_RUN)} ready in {time.monotonic() - started:.0f} s")
    return TINY_RUN


def execute(path: Path, run: Path, which: str, timeout: int) -> Path:
    """Execute one notebook against ``run`` and write the executed copy to ``docs/notebooks``."""
    nb = nbformat.read(path, as_version=4)
    note = nbformat.v4.new_markdown_cell(
        f"*Executed by `make docs` against {which}. The source is `notebooks/{path.name}`; run "
        f"it on your own run with `EN_ANALYSIS_RUN=RUN jupyter lab notebooks/{path.name}`.*"
    )
    NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT)}},
    ).execute()
    nb.cells.insert(1, note)  # after the title, which mkdocs-jupyter shows as the page's
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / path.name
    nbformat.write(nb, out)
    return out


def main() -> None:
    """Execute every notebook of ``notebooks/`` for the site."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help="the run folder (default: see above)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds a cell may take")
    args = parser.parse_args()
    run, which = choose_run(args.run)
    os.environ["EN_ANALYSIS_RUN"] = str(run)
    os.environ.pop("MPLBACKEND", None)  # the kernel's own (inline) backend, as in Jupyter
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        started = time.monotonic()
        out = execute(path, run, which, args.timeout)
        print(f"build_notebooks: {_shown(out)} in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
