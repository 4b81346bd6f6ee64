"""The course book as a reader meets it: built from the CI-mode executed notebooks, opened in headless
Chromium with every host but this machine unreachable.

Checks that every chapter page loads, every figure is displayed, formulas are typeset (MathJax's elements
present, no raw TeX left in the prose), the sidebar reaches every chapter, search finds a word that only
notebook 06 uses, and no request leaves the machine. Screenshots of the landing page and of chapter 06 go
to ``build/browser/``. Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them).
"""
from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import threading
import time

import nbformat
import pytest

from conftest import headless_chromium, wait_for
from galmeta import course
from galmeta.book import build_book

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
SHOTS = course.repository_root() / "build" / "browser"


@pytest.fixture(scope="module")
def executed(tmp_path_factory, request):
    """The seven notebooks executed in CI mode, as ``galmeta course run`` leaves them (with summary.json).

    ``GALMETA_BOOK_EXECUTED=FOLDER`` reuses notebooks executed earlier (``GALMETA_MODE=ci galmeta course run``).
    """
    import os
    from pathlib import Path

    if os.environ.get("GALMETA_BOOK_EXECUTED"):
        return Path(os.environ["GALMETA_BOOK_EXECUTED"])
    monkeypatch = pytest.MonkeyPatch()
    request.addfinalizer(monkeypatch.undo)
    monkeypatch.setenv("GALMETA_MODE", "ci")
    # two kernels at a time, one thread each (PyTorch by galmeta's policy, OpenMP here): CI's two cores
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    folder = tmp_path_factory.mktemp("executed")
    from concurrent.futures import ThreadPoolExecutor

    paths = list(course.generate_notebooks(folder))
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(lambda path: course.execute_notebook(path, timeout=900), paths))
    summary = []
    for path, (status, seconds) in zip(paths, outcomes):
        assert status == "ok", f"{path.name}: {status}"
        notebook = nbformat.read(path, as_version=4)
        summary.append({"notebook": path.stem, "seconds": round(seconds, 1), "status": status,
                        "figures": course.figure_count(notebook), "results": course._results_of(notebook)})
    (folder / "summary.json").write_text(json.dumps({"mode": "ci", "notebooks": summary}))
    return folder


@pytest.fixture(scope="module")
def book(executed, tmp_path_factory):
    site = tmp_path_factory.mktemp("book") / "site"
    start = time.perf_counter()
    index = build_book(executed, site)
    print(f"book built in {time.perf_counter() - start:.1f} s")
    return index.parent


def test_binder_links_point_at_the_repository_and_commit(executed, tmp_path, monkeypatch):
    monkeypatch.setenv("GALMETA_REPOSITORY", "https://example.org/course/galmeta.git")
    build_book(executed, tmp_path / "site")
    chapter = (tmp_path / "site" / "04_maml_torch.html").read_text()
    link = re.search(r'href="(https://mybinder.org/v2/git/[^"]+)"', chapter)
    assert link and "https%3A%2F%2Fexample.org%2Fcourse%2Fgalmeta.git" in link.group(1)
    assert link.group(1).endswith("urlpath=lab/tree/notebooks/04_maml_torch.py")


def test_the_book_has_a_page_for_every_chapter_and_the_guides(book, executed):
    names = {p.stem for p in executed.glob("[0-9][0-9]_*.ipynb")}
    assert len(names) == 7 and all((book / f"{name}.html").is_file() for name in names)
    for page in ("index", "readme", "instructor_guide", "sdss_provenance", "sami_provenance", "search"):
        assert (book / f"{page}.html").is_file(), page
    landing = (book / "index.html").read_text()
    assert "An open course, in ordered notebooks" in landing, "the README's introduction is the landing page"
    chapter = (book / "06_redness_evaluation.html").read_text()
    assert "This chapter</strong> ran in" in chapter and "local JupyterLab" in chapter
    assert re.search(r'download="" href="_downloads/[0-9a-f]+/06_redness_evaluation.ipynb"', chapter)
    assert (book / "_static" / "mathjax" / "tex-chtml.js").is_file()
    assert "cdn.jsdelivr" not in chapter and "mathjax@3" not in chapter


@pytest.fixture(scope="module")
def served(book):
    """The site on a local web server (fonts and scripts load as from any web server)."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(book))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (BROWSER and DRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; "
                    ".ci/run installs them)")
    # nothing but this machine resolves: a request to any other host fails here
    driver = headless_chromium(tmp_path_factory.mktemp("chromium"), window="1300,900", log_network=True,
                               extra_arguments=("--disable-background-networking", "--no-first-run",
                                                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"))
    yield driver
    driver.quit()


_wait = wait_for


def _requested_urls(browser):
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


#: Requests that stay inside the machine: the browser's own pages and inline data.
LOCAL = ("data:", "blob:", "about:", "chrome:", "chrome-untrusted:", "devtools:")

RAW_TEX = re.compile(r"\$[^$\s][^$\n]{0,200}\$|\\\(|\\\[|\\frac|\\mathrm")

PROSE_TEXT = """
const article = document.querySelector('article') || document.body;
const copy = article.cloneNode(true);
copy.querySelectorAll('pre, code, .highlight, .cell_output, .output, mjx-container, script, .MathJax')
    .forEach(e => e.remove());
return copy.innerText;
"""


def test_every_chapter_loads_with_its_figures_and_typeset_maths(book, executed, served, browser):
    outside = []
    for path in sorted(executed.glob("[0-9][0-9]_*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        figures = course.figure_count(notebook)
        has_maths = any(c.cell_type == "markdown" and "$" in c.source for c in notebook.cells)
        browser.get(f"{served}/{path.stem}.html")
        _wait(lambda: browser.execute_script("return document.readyState") == "complete", 30, f"{path.stem} to load")
        if has_maths:
            _wait(lambda: browser.execute_script("return document.querySelectorAll('mjx-container').length"), 60,
                  f"MathJax to typeset {path.stem}")
        sizes = _wait(lambda: browser.execute_script(
            "const imgs = [...document.querySelectorAll('article img')];"
            "return imgs.every(i => i.complete) ? imgs.map(i => i.naturalWidth) : null;"), 30, "images")
        assert sum(width > 0 for width in sizes) >= figures, f"{path.stem}: {sizes} for {figures} figures"
        prose = browser.execute_script(PROSE_TEXT)
        leftover = RAW_TEX.findall(prose)
        assert not leftover, f"{path.stem}: raw TeX in the text: {leftover[:5]}"
        if path.stem == "06_redness_evaluation":
            SHOTS.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(SHOTS / "book_06_redness_evaluation.png"))
        outside += [u for u in _requested_urls(browser) if not u.startswith(LOCAL + (served,))]
    assert not outside, f"requests left the machine: {outside[:10]}"


def test_the_sidebar_reaches_every_chapter(book, executed, served, browser):
    browser.get(f"{served}/index.html")
    _wait(lambda: browser.execute_script("return document.readyState") == "complete", 30, "the landing page")
    links = browser.execute_script(
        "return [...document.querySelectorAll('.bd-sidebar-primary a, nav.bd-links a')].map(a => a.href);")
    for path in executed.glob("[0-9][0-9]_*.ipynb"):
        assert any(link.split("#")[0].endswith(f"/{path.stem}.html") for link in links), f"no sidebar link to {path.stem}"
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SHOTS / "book_landing.png"))
    assert not [u for u in _requested_urls(browser) if not u.startswith(LOCAL + (served,))]


def _words(text):
    return set(re.findall(r"[a-z]{8,}", text.lower()))


def test_search_finds_a_word_only_notebook_06_uses(book, executed, served, browser):
    pages = {p.stem: (book / f"{p.stem}.html").read_text() for p in executed.glob("[0-9][0-9]_*.ipynb")}
    pages.update({name: (book / f"{name}.html").read_text()
                  for name in ("index", "readme", "instructor_guide", "sdss_provenance", "sami_provenance")})
    strip = lambda page: re.sub(r"<[^>]+>", " ", page)  # noqa: E731
    others = set().union(*(_words(strip(text)) for name, text in pages.items() if name != "06_redness_evaluation"))
    only_06 = sorted(_words(strip(pages["06_redness_evaluation"])) - others)
    assert only_06, "notebook 06 has no word of its own"
    word = only_06[0]
    browser.get(f"{served}/search.html?q={word}")
    found = _wait(lambda: browser.execute_script(
        "return [...document.querySelectorAll('#search-results a')].map(a => a.href);"), 30, f"results for {word!r}")
    assert any("06_redness_evaluation.html" in link for link in found), (word, found)
