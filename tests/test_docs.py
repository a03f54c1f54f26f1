"""The documentation site's sources, checked without building it (`make docs` builds it with
--strict and `make docs-check` opens it in a browser): every page of the nav exists and every page
is in the nav, every local link and image of the hand-written pages points at a file, and every
object the API pages document exists in the package, the public names among them.
(docs/settings.md and docs/cli.md are compared with the code by test_reference.py.)"""

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"
NAV_ENTRY = re.compile(r"^\s*- (?:[^:]+: |\"[^\"]+\": )?([\w/.-]+\.(?:md|ipynb))\s*$")
LINK = re.compile(r"\]\(([^)\s]+)\)")
OBJECT = re.compile(r"^::: ([\w.]+)\s*$", re.M)
GENERATED = {"settings.md", "cli.md"}  # by en_analysis.cli.reference


def nav_pages() -> list[str]:
    text = (ROOT / "mkdocs.yml").read_text()
    nav = text[text.index("\nnav:") :]
    return [m.group(1) for line in nav.splitlines() if (m := NAV_ENTRY.match(line))]


def written_pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "figures" not in p.parts)


def test_the_nav_lists_the_pages_the_lead_links_to():
    pages = nav_pages()
    for page in ["index.md", "science.md", "results.md", "settings.md", "cli.md", "api/index.md"]:
        assert page in pages
    assert any(p.startswith("guide/") for p in pages)
    assert len(pages) == len(set(pages)), "a page is in the nav twice"


def test_every_nav_page_exists_and_every_page_is_in_the_nav():
    pages = nav_pages()
    for page in pages:
        if page.startswith("notebooks/"):  # executed into docs/notebooks/ by make docs
            assert (ROOT / page).exists(), page
        else:
            assert (DOCS / page).exists(), page
    unlisted = [str(p.relative_to(DOCS)) for p in written_pages()]
    assert sorted(set(unlisted) - set(pages)) == []


@pytest.mark.parametrize("page", [str(p.relative_to(DOCS)) for p in written_pages()])
def test_local_links_and_images_point_at_files(page):
    path = DOCS / page
    if page in GENERATED:
        return
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # code blocks hold no links
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a web address, or an anchor of the same page
        file = target.split("#")[0]
        resolved = (path.parent / file).resolve()
        if file.startswith("../notebooks/") or file.startswith("notebooks/"):
            resolved = ROOT / "notebooks" / Path(file).name
        assert resolved.exists(), f"{page} links to {target}, which does not exist"


def _documented() -> list[str]:
    found = []
    for page in sorted((DOCS / "api").glob("*.md")):
        found += OBJECT.findall(page.read_text())
    return found


@pytest.mark.parametrize("name", _documented())
def test_every_documented_object_exists(name):
    parts = name.split(".")
    for split in range(len(parts), 0, -1):  # the longest importable module, then attributes
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attr in parts[split:]:
            obj = getattr(obj, attr)
        return
    raise AssertionError(f"{name} is not importable")


def test_the_public_names_are_in_the_api_reference():
    import en_analysis

    index = (DOCS / "api" / "index.md").read_text()
    documented = set(_documented())
    for name in en_analysis.__all__:
        if name == "__version__":  # a string: listed, with nothing to document
            assert f"`{name}`" in index
            continue
        defined_in = getattr(en_analysis, name).__module__
        assert f"[`{name}`]" in index, f"{name} is not listed in docs/api/index.md"
        assert {defined_in, f"{defined_in}.{name}"} & documented, f"{name} is not documented"


def test_every_module_of_the_package_has_an_api_page():
    documented = set(_documented())
    modules = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for p in (ROOT / "en_analysis").rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py")
    }
    skipped = {m for m in modules if m.startswith("en_analysis.cli")}  # docs/cli.md
    assert sorted(modules - skipped - documented) == []
