"""The EN layer's C++ kernel for CPU (``exemplar_norm.cpp``): ``torch.ops.en_layer``.

Built on first use by ``torch.utils.cpp_extension`` with the system's C++ compiler and ninja
(about 40 s on 2 cores), cached under ``~/.cache/torch_extensions`` (``TORCH_EXTENSIONS_DIR``)
and rebuilt only when the source, torch or the instruction set changes. Its loops run in
parallel on ATen's OpenMP threads and, where ATen itself uses AVX2, are compiled for AVX2.
Where it cannot be built the layer runs its Python implementation, with one warning saying why.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("exemplar_norm.cpp")
# the row codes of exemplar_norm.cpp
ROW_CODES = {"in": 0, "ln": 1, "bn": 2, "gn": 3}
OPERATOR = "exemplar_norm"  # en_layer::exemplar_norm: what the built library must define

_STATE: dict[str, bool | None] = {"enabled": True, "built": None}  # built: None = not tried


def use(enabled: bool = True) -> None:
    """Run EN layers on CPU through the C++ kernel (default) or, ``False``, through their
    Python implementation (for comparisons and benchmarks)."""
    _STATE["enabled"] = enabled


def available() -> bool:
    """Whether CPU EN layers run the C++ kernel: it is switched on and built (building it on
    the first call)."""
    if not _STATE["enabled"]:
        return False
    if _STATE["built"] is None:
        _STATE["built"] = _build()
    return bool(_STATE["built"])


def build_options() -> dict:
    """``cpp_extension.load``'s name and flags for this machine.

    cpp_extension rebuilds when the source or flags change, not when torch or the machine does:
    the torch version and the instruction set are in the name, so a build against another
    libtorch, or for AVX2 in a cache shared with an older CPU, never loads. The loops are built
    for AVX2 and FMA where ATen runs its own AVX2 kernels (``ATEN_CPU_CAPABILITY=default``
    turns both off). ``-fopenmp``: ``at::parallel_for`` is an OpenMP pragma in ATen's headers,
    serial without it (the runtime is torch's own libgomp, already loaded under that name).
    ``-fno-math-errno`` lets sqrt vectorize.
    """
    avx2 = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
    return {
        "name": "en_layer_torch_" + re.sub(r"\W", "_", torch.__version__) + "_avx2" * avx2,
        "extra_cflags": ["-O3", "-fopenmp", "-fno-math-errno"] + ["-mavx2", "-mfma"] * avx2,
        "extra_ldflags": ["-fopenmp"],
    }


def _build() -> bool:
    """Load the kernel, built or from the cache; a failure (or a cached library without the
    operator) is retried once in a fresh folder where the build tools are there, which then
    becomes the cache. Else one warning names the reason and the Python layer runs."""
    # cpp_extension logs on import that no CUDA toolkit is found: irrelevant to a CPU kernel
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        reason = _load(None)
        missing = _missing_tools()
        if reason and not missing:
            again = _rebuild()
            reason = again if again in (None, reason) else f"{reason}; built again: {again}"
    finally:
        logger.setLevel(level)
    if reason:
        install = f" Install {' and '.join(missing)} (Debian: apt-get install {' '.join(missing)})"
        warnings.warn(
            f"the EN layer's C++ kernel could not be built or loaded ({reason}); EN layers on CPU "
            "run their Python implementation (about 1.5x slower at the default's shapes)."
            + (f"{install} to build it." if missing else ""),
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    return True


def _load(folder: Path | None) -> str | None:
    """Build (unless cached) and load the kernel into ``folder`` (None: cpp_extension's cache
    folder); why it failed, or None."""
    from torch.utils import cpp_extension

    try:
        library = cpp_extension.load(
            sources=[str(SOURCE)],
            is_python_module=False,
            build_directory=None if folder is None else str(folder),
            **build_options(),
        )
    except Exception as e:  # no compiler, no ninja, a failed build, a broken cached library
        text = str(e).strip()
        return text.splitlines()[-1] if text else type(e).__name__
    if not hasattr(torch.ops.en_layer, OPERATOR):
        return f"{library} does not define en_layer::{OPERATOR}"
    return None


def _rebuild() -> str | None:
    """Build and load the kernel in a fresh folder (a library already loaded from the cache
    folder cannot be replaced under the same path) and make it the cache folder for later
    processes; why it failed, or None."""
    from torch.utils import cpp_extension

    try:  # the cache folder as cpp_extension chooses it (TORCH_EXTENSIONS_DIR or its default)
        cache = Path(cpp_extension._get_build_directory(build_options()["name"], False))
        fresh = Path(tempfile.mkdtemp(prefix=f"{cache.name}-", dir=cache.parent))
    except OSError as e:
        return f"cannot rebuild it: {e.strerror or e}"
    reason = _load(fresh)
    if reason is not None:
        shutil.rmtree(fresh, ignore_errors=True)
        return reason
    with contextlib.suppress(OSError):  # else later processes rebuild it too
        shutil.rmtree(cache, ignore_errors=True)
        fresh.rename(cache)
    return None


def _missing_tools() -> list[str]:
    """The build tools that are not installed: the C++ compiler (``CXX``, else c++; Debian's
    g++) and ninja (Debian's ninja-build)."""
    tools = {os.environ.get("CXX", "c++"): "g++", "ninja": "ninja-build"}
    return [package for tool, package in tools.items() if shutil.which(tool) is None]
