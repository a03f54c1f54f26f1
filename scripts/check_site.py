"""Check the built documentation site in a real browser (`make docs-check`, after `make docs`).

Serves ``site/`` over HTTP from a thread (the search of mkdocs-material needs a server: it loads
its index with fetch), opens it in Debian's headless chromium through playwright (never a
downloaded browser), and checks that:

- the home page and an API page render: a screenshot of each (``build/docs-screenshots/``) is
  not blank (enough non-white pixels, enough spread in brightness) and the page holds the text it
  should (the project's name, the EN layer's class);
- a notebook page shows its executed outputs (an image);
- the search works: typing ``ExemplarNorm2d`` into the search box lists results, one of them on
  an API page.

Exits non-zero, saying which check failed, otherwise prints what it saw.

    .venv/bin/python scripts/check_site.py [--site site] [--out build/docs-screenshots]
"""

from __future__ import annotations

import argparse
import functools
import http.server
import sys
import threading
from pathlib import Path

import numpy as np
from PIL import Image
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"  # Debian's chromium (make setup-test installs it)
MIN_INK = 0.03  # share of pixels that are not near-white
MIN_STD = 20.0  # standard deviation of the grey levels, 0-255
QUERY = "ExemplarNorm2d"


class Quiet(http.server.SimpleHTTPRequestHandler):
    """Serves files without logging every request."""

    def log_message(self, format, *args):  # the base class's signature
        pass


def serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve ``folder`` on a free local port from a daemon thread; returns the server, its URL."""
    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def ink(png: Path) -> tuple[float, float]:
    """The share of non-white pixels and the grey levels' standard deviation of a screenshot."""
    grey = np.asarray(Image.open(png).convert("L"), dtype=np.float64)
    return float((grey < 235).mean()), float(grey.std())


def check_page(page, url: str, png: Path, texts: list[str], failures: list[str]) -> None:
    """Open ``url``, screenshot it to ``png``, check it is not blank and holds ``texts``."""
    response = page.goto(url, wait_until="networkidle")
    if response is None or not response.ok:
        failures.append(f"{url}: HTTP {response.status if response else 'no response'}")
        return
    page.screenshot(path=str(png), full_page=False)
    share, std = ink(png)
    body = page.inner_text("body")
    missing = [t for t in texts if t not in body]
    print(f"check_site: {png.name}: {share:.1%} non-white, grey std {std:.0f}, {url}")
    if share < MIN_INK or std < MIN_STD:
        failures.append(f"{url} looks blank ({share:.1%} non-white, grey std {std:.1f}): {png}")
    if missing:
        failures.append(f"{url} lacks the text {missing}")


def check_search(page, url: str, png: Path, failures: list[str]) -> None:
    """Type ``QUERY`` into the search box and check that results appear, one on an API page."""
    page.goto(url, wait_until="networkidle")
    page.keyboard.press("/")  # material's shortcut; clicking the search label works too
    box = page.locator("input.md-search__input")
    if not box.is_visible():
        page.locator("label.md-header__button[for='__search']").click()
    box.press_sequentially(QUERY, delay=30)  # real key presses: the search reads them as typed
    results = page.locator(".md-search-result__item")
    try:
        results.first.wait_for(state="visible", timeout=15_000)
    except Exception:  # playwright's TimeoutError
        failures.append(f"searching {QUERY!r} on {url} listed no result")
        page.screenshot(path=str(png))
        return
    page.screenshot(path=str(png))
    links = [a.get_attribute("href") or "" for a in page.locator(".md-search-result__link").all()]
    print(f"check_site: search {QUERY!r}: {results.count()} results, first {links[:3]}")
    if not any("api/" in link for link in links):
        failures.append(f"searching {QUERY!r} found no API page: {links}")


def main() -> None:
    """Run every check on the built site; exit 1 naming the failures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", type=Path, default=ROOT / "site")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "docs-screenshots")
    args = parser.parse_args()
    if not (args.site / "index.html").exists():
        sys.exit(f"check_site: {args.site} has no index.html: run `make docs` first")
    if not Path(CHROMIUM).exists():
        sys.exit(f"check_site: {CHROMIUM} is missing: apt-get install chromium (make setup-test)")
    args.out.mkdir(parents=True, exist_ok=True)
    server, url = serve(args.site)
    failures: list[str] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            check_page(page, url, args.out / "home.png", ["en-analysis", "Exemplar"], failures)
            check_page(
                page,
                url + "api/nn/",
                args.out / "api-nn.png",
                ["ExemplarNorm2d", "en_resnet50"],
                failures,
            )
            page.goto(url + "notebooks/reproduce_figure/", wait_until="networkidle")
            images = page.locator(".jp-OutputArea-output img, .output_png img").count()
            print(f"check_site: the reproduce_figure notebook shows {images} output images")
            if images < 1:
                failures.append("the reproduce_figure notebook page shows no output image")
            check_search(page, url, args.out / "search.png", failures)
            if errors:
                failures.append(f"JavaScript errors: {errors}")
            browser.close()
    finally:
        server.shutdown()
    if failures:
        sys.exit("check_site: FAILED\n  " + "\n  ".join(failures))
    print(f"check_site: ok; screenshots in {args.out}")


if __name__ == "__main__":
    main()
