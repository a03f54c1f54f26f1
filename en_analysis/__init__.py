"""en-analysis: train EN-ResNet50, collect its importance ratios per epoch, and analyse them.

The public names are imported when first used, so that ``import en_analysis`` (and the CLI's
``--help``) does not import torch, pandas, scikit-learn, matplotlib or openTSNE:

- ``Run``: a run folder seen through one analysis (``figures.explorer.Run``);
- ``find_run``: the run a notebook opens, wherever it is started (``EN_ANALYSIS_RUN`` or
  ``runs/fashion-mnist``, from the working directory or the repository's root); ``run_path``:
  the folder it opens;
- ``Ratios``: one epoch's ratio file (``run.folder.Ratios``);
- ``load_model``: the EN-ResNet50 of a checkpoint, weights loaded, in eval mode
  (``training.checkpoints.load_model``);
- ``ExemplarNorm2d``, ``en_resnet50``, ``en_layers``: the EN layer and the model (``nn``);
- ``RatioRecorder``: hooks that record the ratios of a forward pass (``nn.recording``);
- ``__version__``: this package's version.
"""

from __future__ import annotations

import os
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .figures.explorer import Run
    from .nn import ExemplarNorm2d, en_layers, en_resnet50
    from .nn.recording import RatioRecorder
    from .run.folder import Ratios
    from .training.checkpoints import load_model

PUBLIC = {
    "ExemplarNorm2d": "en_analysis.nn",
    "RatioRecorder": "en_analysis.nn.recording",
    "Ratios": "en_analysis.run.folder",
    "Run": "en_analysis.figures.explorer",
    "en_layers": "en_analysis.nn",
    "en_resnet50": "en_analysis.nn",
    "load_model": "en_analysis.training.checkpoints",
}
__all__ = [
    "ExemplarNorm2d",
    "RatioRecorder",
    "Ratios",
    "Run",
    "__version__",
    "en_layers",
    "en_resnet50",
    "find_run",
    "load_model",
    "run_path",
]

DEFAULT_RUN = "runs/fashion-mnist"  # what `make reproduce` writes
RUN_VARIABLE = "EN_ANALYSIS_RUN"  # the run the notebooks open, when set


def _version() -> str:
    """The version of the code being run: a source checkout's ``pyproject.toml`` (an editable
    install's metadata keeps the version it was installed with), else the installed package's."""
    import tomllib

    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    try:
        project = tomllib.loads(pyproject.read_text())["project"]
        if project.get("name") == "en-analysis":
            return str(project["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("en-analysis")
    except PackageNotFoundError:
        return "unknown"


def _project_root(start: Path) -> Path | None:
    """The nearest folder at or above ``start`` that holds a ``pyproject.toml``, if any."""
    return next((p for p in (start, *start.parents) if (p / "pyproject.toml").is_file()), None)


def run_path(default: str | Path = DEFAULT_RUN) -> Path:
    """The run folder ``find_run`` opens: ``$EN_ANALYSIS_RUN`` when set, else ``default``.

    An absolute path is taken as it is. A relative one is looked for in the working directory,
    then in the repository's root (the nearest folder above holding ``pyproject.toml``, else the
    working directory's parent), so that a notebook finds ``runs/fashion-mnist`` whether its
    kernel starts in the repository's root or in ``notebooks/``. When no run folder is there, a
    ``UserError`` says in one line what to run.
    """
    from .core.errors import UserError

    asked = os.environ.get(RUN_VARIABLE) or str(default)
    path = Path(asked).expanduser()
    here = Path.cwd()
    root = _project_root(here) or here.parent
    candidates = [path] if path.is_absolute() else list(dict.fromkeys([here / path, root / path]))
    runs = [c for c in candidates if (c / "config.toml").is_file()]
    folders = [c for c in candidates if c.is_dir()]  # no run: ``Run`` says so by name
    if runs or folders:
        return (runs or folders)[0]
    source = f" ({RUN_VARIABLE})" if os.environ.get(RUN_VARIABLE) else ""
    raise UserError(
        f"no run at {asked}{source}: run `make reproduce` (or set {RUN_VARIABLE} to a run folder)"
    )


def find_run(default: str | Path = DEFAULT_RUN, analysis: str = "default") -> Run:
    """The ``Run`` a notebook opens (``run_path``): ``$EN_ANALYSIS_RUN`` or ``default``, found
    from the working directory or the repository's root, seen through ``analysis``."""
    from .figures.explorer import Run

    return Run(run_path(default), analysis)


def __getattr__(name: str) -> Any:
    """The public names, imported when first used (``PUBLIC``), and ``__version__``."""
    if name == "__version__":
        return _version()
    if name in PUBLIC:
        return getattr(import_module(PUBLIC[name]), name)
    raise AttributeError(f"module 'en_analysis' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names, the lazily imported ones included."""
    return sorted([*globals(), *PUBLIC, "__version__"])
