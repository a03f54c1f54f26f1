"""The README: short, its two commands first, its numbers (and the results page's tables)
generated from figures/'s tables (``scripts/readme.py``) and its links alive."""

import importlib.util
import re
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def readme_script():
    spec = importlib.util.spec_from_file_location("readme", ROOT / "scripts" / "readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_is_short_and_starts_with_the_two_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1).splitlines()
    assert [line.split()[:2] for line in first_block] == [["make", "reproduce"], ["make", "test"]]


def test_the_readme_numbers_are_the_tables_in_figures():
    script = readme_script()
    assert script.main(["--check"]) == 0, "README.md is stale: run python scripts/readme.py"
    text = README.read_text()
    blocks = script.blocks()
    names = {
        n
        for page in script.PAGES
        for n in re.findall(r"<!-- generated: ([\w-]+) -->", page.read_text())
    }
    assert names == set(blocks)  # every block is on a page, every page's block generated
    # a changed table changes the README: the check can fail
    verdict = pd.read_csv(script.FIGURES / "verdict.csv")
    verdict.loc[verdict.space == "ratios", "verdict"] = "holds"
    changed = {**blocks, "verdict": script.markdown(verdict) + "\n"}
    assert script.render(text, changed) != text


def test_the_seeds_sentence_counts_disagreements():
    script = readme_script()
    verdict, seeds = (
        pd.read_csv(script.FIGURES / name) for name in ("verdict.csv", "replicate_verdict.csv")
    )
    assert "the same verdict in all" in script.seeds_line(verdict, seeds)
    first = seeds.index[seeds.space == "ratios"][0]
    seeds.loc[first, "verdict"] = "does not hold"
    assert "another verdict in 1 of" in script.seeds_line(verdict, seeds)


def test_the_readme_links_exist():
    text = README.read_text()
    targets = re.findall(r"\]\(([^)#]+)\)", text)
    missing = [t for t in targets if "://" not in t and not (ROOT / t).exists()]
    assert not missing


def test_the_beyond_sentence_reads_its_tables():
    script = readme_script()
    config = script.load_config("fashion-mnist")
    decoding, stability = (
        pd.read_csv(script.FIGURES / n) for n in ("decoding.csv", "stability.csv")
    )
    line = script.beyond_line(config, decoding, stability)
    last = decoding.epoch.max()
    whole = (decoding.epoch == last) & (decoding.space == "ratios") & (decoding.level == "all")
    decoding.loc[whole, ["accuracy", "ci_low", "ci_high"]] = [0.5, 0.4, 0.6]
    assert "0.500 [0.400, 0.600]" in script.beyond_line(config, decoding, stability) != line
