"""What the analysis of more evaluation images costs: each analysis step of a trained run, as a
named analysis with 50, 200 and 1,000 images per category (500, 2,000 and 10,000 images on
Fashion-MNIST), its wall time and peak memory (GNU time's maximum resident set size).

    python benchmarks/scale.py RUN [--per-category 50,200,1000] [--epochs 0,...]

Each size is a named analysis (``scale-N``) of RUN, written beside its others; the steps run one
after the other through the CLI, the way ``reproduce`` runs them.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

STEPS = ("extract", "embed", "metrics", "wordnet", "verdict")


def run_step(step: str, run: Path, analysis: str, settings: list[str]) -> tuple[float, float]:
    """(seconds, peak resident memory in GB) of one step."""
    cmd = ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "en_analysis", step, str(run)]
    cmd += ["--analysis", analysis, *settings]
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode:
        raise SystemExit(f"{step} failed:\n{out.stderr[-2000:]}")
    peak_kb = int(re.findall(r"^(\d+)$", out.stderr, re.M)[-1])
    return seconds, peak_kb / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--per-category", default="50,200,1000")
    parser.add_argument("--epochs", default="", help="analysed epochs (default: every one)")
    args = parser.parse_args()
    for n in map(int, args.per_category.split(",")):
        settings = ["--set", f"analysis.per_category={n}"]
        if args.epochs:
            settings += ["--set", f"analysis.epochs=[{args.epochs}]"]
        total, peak, parts = 0.0, 0.0, []
        for i, step in enumerate(STEPS):
            seconds, gb = run_step(step, args.run, f"scale-{n}", settings if i == 0 else [])
            total, peak = total + seconds, max(peak, gb)
            parts.append(f"{step} {seconds:.0f} s ({gb:.1f} GB)")
        print(f"{n} per category: {total:.0f} s in all, peak {peak:.1f} GB: " + ", ".join(parts))


if __name__ == "__main__":
    main()
