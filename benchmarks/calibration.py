"""The verdict tests' calibration on simulated data, the full version of
``tests/test_calibration.py``: every draw resampled ``--resamples`` times and tested on its own
(the tests pool one resample per draw). Prints the rate of p < 0.05, interval coverage and
equivalence, each with its exact 95% binomial interval.

    python benchmarks/calibration.py [--draws 1000] [--resamples 199]
"""

from __future__ import annotations

import argparse
import time

from en_analysis.analysis import simulate

EXPERIMENTS = [  # (what, function, arguments)
    ("k-NN vs chance, no clusters (null)", simulate.knn_vs_chance, dict(spread=0.0)),
    ("k-NN vs chance, k-NN ~0.16 (power)", simulate.knn_vs_chance, dict(spread=0.06)),
    ("k-NN vs chance, k-NN ~0.70 (coverage)", simulate.knn_vs_chance, dict(spread=0.3)),
    (
        "k-NN difference, equal spaces at k-NN ~0.3 (null)",
        simulate.knn_difference,
        dict(spread_a=0.2, spread_b=0.2),
    ),
    (
        "k-NN difference, equal spaces at k-NN ~0.8 (null)",
        simulate.knn_difference,
        dict(spread_a=0.35, spread_b=0.35),
    ),
    ("k-NN difference of ~0.1 (power)", simulate.knn_difference, dict(spread_a=0.3, spread_b=0.22)),
    ("category interval of r", simulate.category_interval, dict(relation=0.6)),
    (
        "r difference, equal spaces (null)",
        simulate.correlation_difference,
        dict(relation_a=0.6, relation_b=0.6),
    ),
    (
        "settling contrast, equal steps (null)",
        simulate.settling,
        dict(step_before=0.1, step_after=0.1),
    ),
    (
        "settling contrast, 0.2 then 0.05 (power)",
        simulate.settling,
        dict(step_before=0.2, step_after=0.05),
    ),
    ("3 seeds, two-level interval", simulate.seeds_interval, dict(seeds=3)),
    ("3 seeds with a large seed effect", simulate.seeds_interval, dict(seeds=3, seed_spread=0.15)),
    (
        "10 seeds with a large seed effect",
        simulate.seeds_interval,
        dict(seeds=10, seed_spread=0.15),
    ),
]
PERMUTATION_TESTS = [
    ("Mantel, no relation (null)", simulate.mantel_null, dict(relation=0.0)),
    ("Mantel, relation 0.6 (power)", simulate.mantel_null, dict(relation=0.6)),
    (
        "partial Mantel, pixels follow WordNet (null)",
        simulate.partial_mantel_null,
        dict(relation=0.6),
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--resamples", type=int, default=199)
    args = parser.parse_args()
    for what, f, kwargs in EXPERIMENTS + PERMUTATION_TESTS:
        start = time.perf_counter()
        extra = {} if (what, f, kwargs) in PERMUTATION_TESTS else {"resamples": args.resamples}
        result = f(args.draws, **kwargs, **extra)
        print(f"{what}: {result} ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
