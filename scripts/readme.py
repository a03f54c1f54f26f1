"""The README's numbers, written from the default run's tables so they cannot go stale.

The blocks between ``<!-- generated: NAME -->`` and ``<!-- end: NAME -->`` in README.md and
docs/results.md are this script's output, from the CSVs committed in ``figures/`` (copies of
the default run's ``metrics.csv``, ``analysis/verdict.csv``, ``decoding.csv`` and
``stability.csv``, and of ``analysis/replicate_verdict.csv`` of its three seeds) and the
``fashion-mnist`` preset's settings:

    python scripts/readme.py                        # rewrite the pages' blocks from figures/
    python scripts/readme.py --from runs/fashion-mnist --replicates runs/replicates
    python scripts/readme.py --check                # exit 1 when a page is stale

``tests/test_readme.py`` runs the check, so a page that disagrees with figures/ fails CI.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

import pandas as pd

from en_analysis.analysis.verdict import markdown
from en_analysis.settings.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "figures"
PAGES = (ROOT / "README.md", ROOT / "docs" / "results.md")
TABLES = {
    "metrics.csv": "metrics.csv",
    "verdict.csv": "analysis/verdict.csv",
    "decoding.csv": "analysis/decoding.csv",
    "stability.csv": "analysis/stability.csv",
}
BLOCK = re.compile(r"(<!-- generated: ([\w-]+) -->\n)(.*?)(<!-- end: \2 -->)", re.S)


def preset_line(config: Config, metrics: pd.DataFrame, verdict: pd.DataFrame) -> str:
    """What the default run is: the preset's model, data and schedule, its accuracy (the last
    row of ``metrics``) and the categories its verdict compared."""
    c, last = config, metrics.iloc[-1]
    categories = int(verdict[verdict.unit.str.startswith("categories")].n_units.iloc[0])
    drops = " and ".join(str(d) for d in c.train.lr_drops)
    return (
        f"EN-ResNet50 (width {c.model.width}, {c.model.stem} stem) trained on "
        f"{c.data.train_samples:,} Fashion-MNIST images for {c.train.epochs} epochs (learning "
        f"rate {c.train.lr:g}, divided by 10 after epochs {drops}), test accuracy "
        f"{last.val_acc:.3f} after epoch {int(last.epoch)}; the ratios of {categories} "
        f"categories x {c.analysis.per_category} test images are analysed at every epoch.\n"
    )


def settings_line(config: Config) -> str:
    """The verdict's settings, from the preset's (declared) values."""
    a = config.analysis
    return (
        f"Intervals: {a.verdict_bootstrap:,} resamples (images within categories, or "
        f"categories for claim 2); random-head control: {a.random_heads} heads; Holm's "
        f"correction within each claim; equivalence margins +-{a.margin_knn:g} accuracy and "
        f"+-{a.margin_r:g} in r; claim 3's 'formed early' asks for {a.formed_share:.0%} of the "
        "last epoch's clustering before the first drop.\n"
    )


def beyond_line(config: Config, decoding: pd.DataFrame, stability: pd.DataFrame) -> str:
    """What the decoding map and the stability step show at the last epoch."""
    last = int(decoding.epoch.max())
    at = decoding[decoding.epoch == last]
    layers = at[(at.space == "ratios") & (at.level == "layer")]
    best = layers.loc[layers.accuracy.idxmax()]
    chance = float(layers.chance.iloc[0])

    def whole(space: str) -> str:
        (row,) = at[(at.space == space) & (at.level == "all")].itertuples()
        return f"{row.accuracy:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}]"

    cka = stability.query("space == 'ratios' and measure == 'cka' and epoch_b == @last")
    cka = cka.set_index("epoch_a")
    after = config.train.lr_drops[0] + 1

    def with_last(epoch: int) -> str:
        row = cka.loc[epoch]
        return f"{row.value:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}] at epoch {epoch}"

    return (
        f"The decoding map: at epoch {last}, {(layers.ci_low > chance).sum()} of {len(layers)} "
        f"layers' 3 ratios decode the category above chance ({chance:g}; the best, "
        f"`{best['name']}`, {best.accuracy:.3f}, the mean {layers.accuracy.mean():.3f}), all "
        f"{len(layers) * 3} together {whole('ratios')}; a random head on the same statistics "
        f"reaches {whole('random-head')} and the statistics themselves {whole('statistics')} "
        f"(leave-one-out ridge, 95% Wilson intervals). The ratios' linear CKA with epoch {last} "
        f"is {with_last(int(cka.index.min()))} and "
        f"{with_last(after)}, after the first drop.\n"
    )


def seeds_line(verdict: pd.DataFrame, seeds: pd.DataFrame) -> str:
    """Whether the seeds' verdict (``replicate_verdict.csv``) agrees with the default run's,
    row by row (the ratios' rows both tables have)."""
    keys = ["claim", "comparison"]
    one, many = (
        table.query("space == 'ratios'").set_index(keys).verdict for table in (verdict, seeds)
    )
    both = one.index.intersection(many.index)
    differ = [f"{c} / {k}: {one[c, k]} vs {many[c, k]}" for c, k in both if one[c, k] != many[c, k]]
    agreement = (
        f"the same verdict in all {len(both)} rows"
        if not differ
        else f"another verdict in {len(differ)} of {len(both)} rows ({'; '.join(differ)})"
    )
    replicate = "`en-analysis replicate`"
    runs = int(seeds.n_runs.max())
    return f"Over {runs} training seeds ({replicate}): {agreement} of the claims as this run.\n"


def blocks() -> dict[str, str]:
    """Every generated block's text, by name, from figures/'s tables (each read once)."""
    config = load_config("fashion-mnist")
    metrics, verdict, seeds, decoding, stability = (
        pd.read_csv(FIGURES / name)
        for name in (
            "metrics.csv",
            "verdict.csv",
            "replicate_verdict.csv",
            "decoding.csv",
            "stability.csv",
        )
    )
    return {
        "beyond": beyond_line(config, decoding, stability),
        "preset": preset_line(config, metrics, verdict),
        "verdict": markdown(verdict) + "\n",
        "seeds-verdict": markdown(seeds) + "\n",
        "settings": settings_line(config),
        "seeds": seeds_line(verdict, seeds),
    }


def render(text: str, generated: dict[str, str]) -> str:
    """``text`` with each generated block replaced; an unknown block name is an error."""

    def replace(m: re.Match) -> str:
        if m.group(2) not in generated:
            raise SystemExit(f"no generator for the block {m.group(2)!r}")
        return m.group(1) + generated[m.group(2)] + m.group(4)

    return BLOCK.sub(replace, text)


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or ``--check``) the pages' generated blocks; 1 when ``--check`` finds one
    stale."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--from", dest="run", type=Path, help="copy this run's tables to figures/")
    p.add_argument(
        "--replicates", type=Path, help="copy this replicate folder's verdict to figures/"
    )
    p.add_argument("--check", action="store_true", help="exit 1 if a page is stale")
    args = p.parse_args(argv)
    if args.run:
        for name, source in TABLES.items():
            shutil.copyfile(args.run / source, FIGURES / name)
    if args.replicates:
        name = "replicate_verdict.csv"
        shutil.copyfile(args.replicates / "analysis" / name, FIGURES / name)
    generated, stale = blocks(), []
    for page in PAGES:
        text = page.read_text()
        new = render(text, generated)
        if new != text:
            stale.append(page)
            if not args.check:
                page.write_text(new)
    if args.check and stale:
        names = ", ".join(str(p.relative_to(ROOT)) for p in stale)
        print(f"{names} stale: run `python scripts/readme.py`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
