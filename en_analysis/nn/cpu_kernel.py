"""The EN layer's C++ kernel for CPU (``exemplar_norm.cpp``): ``torch.ops.en_layer``.

Built on first use by ``torch.utils.cpp_extension`` with the system's C++ compiler and ninja
(about 40 s on 2 cores), cached under ``~/.cache/torch_extensions`` (``TORCH_EXTENSIONS_DIR``)
and rebuilt only when the source or torch changes. Where it cannot be built the layer runs its
Python implementation, with one warning saying why.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("exemplar_norm.cpp")
# the row codes of exemplar_norm.cpp
ROW_CODES = {"in": 0, "ln": 1, "bn": 2, "gn": 3}

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


def _build() -> bool:
    # cpp_extension logs on import that no CUDA toolkit is found: irrelevant to a CPU kernel
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension

        cpp_extension.load(
            # cpp_extension rebuilds when the source or flags change, not when torch does: the
            # torch version in the name keeps a build against another libtorch from loading
            name="en_layer_torch_" + re.sub(r"\W", "_", torch.__version__),
            sources=[str(SOURCE)],
            extra_cflags=["-O3", "-fopenmp-simd"],
            is_python_module=False,
        )
    except Exception as e:  # no compiler, no ninja, a failed build: the Python layer runs
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        warnings.warn(
            f"the EN layer's C++ kernel could not be built ({reason}); EN layers on CPU run "
            "their Python implementation (about 1.5x slower at the default's shapes). "
            "Install g++ and ninja (Debian: g++ ninja-build) to build it.",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    finally:
        logger.setLevel(level)
    return True
