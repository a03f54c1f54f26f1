"""``make bench`` runs the benchmarks the measurements page (docs/guide/performance.md) cites,
each in the Makefile's ``BENCHMARKS``; ``make bench-NAME`` runs one."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def _benchmarks() -> list[str]:
    (line,) = re.findall(r"^BENCHMARKS \?= (.*)$", (ROOT / "Makefile").read_text(), re.M)
    return line.split()


def test_every_listed_benchmark_exists():
    assert _benchmarks()
    assert [b for b in _benchmarks() if not (ROOT / "benchmarks" / f"{b}.py").is_file()] == []


def test_make_bench_runs_every_benchmark_the_measurements_cite():
    measurements = (ROOT / "docs" / "guide" / "performance.md").read_text()
    # the benchmarks the page cites for a measured number, not those it says are run by hand
    by_hand = {"calibration", "scale", "gpu", "beyond"}
    cited = set(re.findall(r"benchmarks/(\w+)\.py", measurements)) - by_hand
    assert cited, "the measurements page cites no benchmark"
    assert cited - set(_benchmarks()) == set()


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_bench_commands():
    def dry(*target: str) -> str:
        # -o: the set-up counts as done (nothing is installed by a dry run either way); run
        # under `make test`, a sub-make would inherit its flags and level and print "Entering
        # directory" lines: neither is passed on
        env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
        out = subprocess.run(
            ["make", "--no-print-directory", "-n", "-o", ".venv/.installed", *target],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        return out.stdout

    assert dry("bench-tsne").strip().endswith("python benchmarks/tsne.py")
    everything = dry("bench")
    assert all(b in everything for b in _benchmarks())
    assert "for b in tsne extract;" in dry("bench", "BENCHMARKS=tsne extract")
