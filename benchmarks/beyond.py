"""What the beyond-the-paper analyses add to a run's analysis: the decode, stability and ablate
steps (tables and figures) and the noise ceiling inside the wordnet step, timed in one process,
the way ``reproduce`` runs them, beside the paper's analysis steps in the same run.

    python benchmarks/beyond.py RUN

RUN is copied to a temporary folder and every step is redone there (``--force``); RUN itself is
not written to. Prints each step's seconds, the added seconds, and the added time as a fraction
of the paper's analysis (extract, embed, metrics, wordnet without its ceiling, verdict).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from en_analysis.analysis import wordnet
from en_analysis.figures.explorer import Run
from en_analysis.pipeline.runner import run_step
from en_analysis.steps import registry

PAPER = ("extract", "embed", "metrics", "wordnet")
BEYOND = ("decode", "stability", "ablate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    args = parser.parse_args()
    ceiling = 0.0
    reliability = wordnet.split_half_reliability

    def timed_reliability(*a, **k):  # the noise ceiling's share of the wordnet step
        nonlocal ceiling
        start = time.perf_counter()
        try:
            return reliability(*a, **k)
        finally:
            ceiling += time.perf_counter() - start

    wordnet.split_half_reliability = timed_reliability
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run"
        shutil.copytree(args.run, copy)
        run = Run(copy)
        seconds = {}
        for name in (*PAPER, *BEYOND, "verdict"):  # reproduce's order
            seconds[name] = run_step(registry.step(name), run, force=True, progress=False).seconds
    added = sum(seconds[s] for s in BEYOND) + ceiling
    paper = sum(seconds[s] for s in (*PAPER, "verdict")) - ceiling
    print(", ".join(f"{s} {t:.1f} s" for s, t in seconds.items()))
    print(f"noise ceiling (inside wordnet): {ceiling:.1f} s")
    print(
        f"beyond the paper: {added:.1f} s added to the paper's analysis of {paper:.1f} s "
        f"(x {added / paper:.2f})"
    )


if __name__ == "__main__":
    main()
