"""The published site in a real browser (Debian's Chromium, driven by Playwright; the checks are in tests/browser.py).

A small site is built once from a spec with every technique of the registry (the tiny factory model, 32-px inputs,
a folder data set, --quick), or, with CONVSCOPE_SITE=DIR, an already built site is checked instead (`make
browser-check` checks the default report's `site/`). The site is opened two ways: served from a sub-path
(http://127.0.0.1:PORT/some/sub/path/, a host that does not serve it from its root) and from disk (file://). Both
must show every page with no console error, no uncaught error, no failed request and no request anywhere but the
site itself; every image must show once scrolled into view; search, the lightbox, the dark-mode toggle and the
navigation must work. Three tests break a copy of the site on purpose and expect the checks to say so.

404.html is checked only for root-absolute links, not loaded: a host serves it in place of any missing URL, at any
depth below the site's root, so no link in it (relative or not) works from every such URL, and opened from disk it
is never shown at all. Relative links at least work at the site's top level, served from any sub-path; root-absolute
ones work nowhere but at a host's root.

Screenshots of the home page and the Grad-CAM page (1280 × 900, and the whole page) go to $CONVSCOPE_SCREENSHOTS, or
to pytest's temporary folder. Skipped, saying why, without playwright or without Chromium ($CONVSCOPE_CHROMIUM,
/usr/bin/chromium, /usr/bin/chromium-browser)."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

import browser
from helpers import cli, colour_folder, copy_site_setup, make_project, noise_image, write_spec
from test_all_techniques import TECHNIQUES
from generator.techniques import registry

_REASON = browser.skip_reason()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

from playwright.sync_api import sync_playwright  # noqa: E402

MODEL = "tinynet"
# One label a reader can search for, and three that need escaping in Markdown and HTML.
LABELS = ["zebra", '<b>ant</b> & "bee"', "*star*_", "plain | pipe"]
# The tiny settings of every technique (test_all_techniques), with every label in the predictions table.
SMALL = {**TECHNIQUES, "predictions": {"top_k": 4}}
HOSTINGS = ["subpath", "file"]


def small_spec() -> dict:
    """Every selectable technique (a new one comes in with its defaults) on the tiny model and a folder data set."""
    return {
        "title": "browser check", "output": "site_src/reports", "cache": "cache", "device": "cpu", "seed": 0,
        "datasets": {"colours": {"folder": "colours"}},
        "images": {"pics": ["pics/a.png", "pics/b.png"], "textures": ["pics/texture.png"],
                   "styles": ["pics/style.png"]},
        "models": [{"name": MODEL, "factory": "tinymod:build", "input": {"size": 32}, "labels": LABELS,
                    "layers": ["conv1", "relu2"], "images": ["pics"], "dataset": "colours",
                    "techniques": {k: SMALL.get(k, {}) for k in registry.selectable()}}],
    }


@pytest.fixture(scope="module")
def site(tmp_path_factory, one_thread) -> Path:
    """$CONVSCOPE_SITE, or a small site built into a copy of the repository's MkDocs setup."""
    given = os.environ.get("CONVSCOPE_SITE")
    if given:
        path = Path(given).resolve()
        assert (path / "index.html").is_file(), f"CONVSCOPE_SITE={given}: no built site there (make report first)"
        return path
    root = make_project(tmp_path_factory.mktemp("browser"))
    noise_image(root / "pics" / "texture.png", size=(40, 40), seed=3, high=255)
    noise_image(root / "pics" / "style.png", size=(36, 44), seed=4, high=255)
    colour_folder(root / "colours", per_class=4)
    copy_site_setup(root)
    code = cli("build", write_spec(root, small_spec()), "--site", root / "site", "--quick")
    assert code == 0, "the small site did not build (see the output above)"
    return root / "site"


def _manifest(site: Path) -> list[dict]:
    return json.loads((site / "reports" / "manifest.json").read_text(encoding="utf-8"))["artifacts"]


@pytest.fixture(scope="module")
def terms(site) -> dict[str, str]:
    """What the search must find: a class label, a model name, a technique's title."""
    if not os.environ.get("CONVSCOPE_SITE"):
        return {"class label": LABELS[0], "model name": MODEL, "technique": registry.get("gradcam").title}
    records = _manifest(site)
    labels = sorted({r["target"] for r in records if r["technique"] == "predictions" and r["target"]})
    plain = [t for t in labels if re.fullmatch(r"[A-Za-z]{5,}", t)] or labels
    kinds = {r["technique"] for r in records}
    kind = "gradcam" if "gradcam" in kinds else sorted(kinds - set(registry.core()))[0]
    return {"class label": plain[0], "model name": sorted({r["model"] for r in records if r["model"]})[0],
            "technique": registry.get(kind).title}


@pytest.fixture(scope="module")
def technique_page(site) -> str:
    """The Grad-CAM page of the first model that has one."""
    pages = sorted(p for p in browser.html_pages(site) if p.startswith("reports/") and p.endswith("/gradcam.html"))
    assert pages, "no Grad-CAM page in the site"
    return pages[0]


@pytest.fixture(scope="module")
def chromium():
    with sync_playwright() as p:
        b = browser.launch(p)
        yield b
        b.close()


@pytest.fixture(scope="module", params=HOSTINGS)
def hosting(request, site):
    if request.param == "subpath":
        with browser.serve(site) as h:
            yield h
    else:
        yield browser.from_disk(site)


@pytest.fixture(scope="module")
def tab(chromium, hosting):
    """One context and one page per hosting, reused by every check: (page, traffic)."""
    context, traffic = browser.new_context(chromium, hosting)
    page = context.new_page()
    yield page, traffic
    context.close()


@pytest.fixture(scope="module")
def crawl(tab, hosting, site) -> dict[str, tuple[list[str], set[str]]]:
    """Every page but 404.html loaded once: page → (its problems, the pages its navigation links to)."""
    page, traffic = tab
    seen = {}
    for rel in browser.html_pages(site):
        if rel == "404.html":
            continue
        problems = browser.page_problems(page, hosting.url(rel), traffic)
        seen[rel] = (problems, browser.nav_links(page, hosting))
    return seen


def _listing(problems: dict[str, list[str]]) -> str:
    return "\n".join(f"{page}:\n  " + "\n  ".join(p) for page, p in problems.items())


# --- the site as built ---


def test_small_site_has_a_page_per_technique(site):
    if os.environ.get("CONVSCOPE_SITE"):
        pytest.skip("checks the small site's spec, not a given site")
    pages = set(browser.html_pages(site))
    missing = [k for k in registry.TECHNIQUES if k not in ("input", "architecture")
               and f"reports/{MODEL}/{k}.html" not in pages]
    assert not missing, f"no page for {missing}"
    failed = [j for j in json.loads((site / "reports" / "build.json").read_text())["jobs"] if j["status"] == "failed"]
    assert not failed, failed


def test_no_page_has_root_absolute_links(site):
    """Root-absolute links break a site served from a sub-path or opened from disk; 404.html included."""
    found = {rel: browser.root_absolute_links((site / rel).read_text(encoding="utf-8"))
             for rel in browser.html_pages(site)}
    found = {rel: links for rel, links in found.items() if links}
    assert not found, "root-absolute links:\n" + _listing({k: v[:5] + ([f"… {len(v)} in all"] if len(v) > 5 else [])
                                                           for k, v in found.items()})


def test_every_page_loads_cleanly(crawl, hosting):
    """No console error, uncaught error, failed request, response >= 400, request off the site, image that does
    not show, or link that leaves the site, on any page."""
    bad = {rel: problems for rel, (problems, _) in crawl.items() if problems}
    assert not bad, f"{len(bad)} of {len(crawl)} pages ({hosting.name}):\n{_listing(bad)}"


def test_navigation_reaches_every_model_and_technique_page(crawl, hosting, site):
    reached, todo = set(), ["index.html"]
    while todo:
        rel = todo.pop()
        if rel in reached or rel not in crawl:
            continue
        reached.add(rel)
        todo += sorted(crawl[rel][1] - reached)
    reports = {rel for rel in browser.html_pages(site) if rel.startswith("reports/")}
    assert reports, "no report pages"
    assert not reports - reached, f"not reached from the home page's navigation ({hosting.name}): " \
                                  f"{sorted(reports - reached)}"


def test_search_finds_a_label_a_model_and_a_technique(tab, hosting, terms):
    page, traffic = tab
    traffic.clear()
    problems = [f"{what}: {p}" for what, query in terms.items()
                for p in browser.search_problems(page, hosting.url("index.html"), query)]
    problems += traffic.problems()
    assert not problems, "\n".join(problems)


def test_figure_opens_in_the_lightbox(tab, hosting, technique_page):
    page, traffic = tab
    traffic.clear()
    problems = browser.lightbox_problems(page, hosting.url(technique_page)) + traffic.problems()
    assert not problems, "\n".join(problems)


def test_dark_mode_toggle(tab, hosting):
    page, traffic = tab
    traffic.clear()
    problems = browser.palette_problems(page, hosting.url("index.html")) + traffic.problems()
    assert not problems, "\n".join(problems)


def test_screenshots(chromium, site, technique_page, tmp_path_factory):
    """The home page and a technique page at the site's layout width (1280 × 900), and each whole page."""
    folder = Path(os.environ.get("CONVSCOPE_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    with browser.serve(site) as hosting:
        context, traffic = browser.new_context(chromium, hosting)
        page = context.new_page()
        written = []
        for name, rel in (("home", "index.html"), (Path(technique_page).stem, technique_page)):
            browser.page_problems(page, hosting.url(rel), traffic)  # loads every lazy image; problems: tests above
            page.screenshot(path=folder / f"{name}.png")
            page.screenshot(path=folder / f"{name}-full.png", full_page=True)
            written += [folder / f"{name}.png", folder / f"{name}-full.png"]
        context.close()
    print("screenshots:", *written, sep="\n  ")
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path


# --- a copy of the site broken on purpose: the checks must say so ---


@pytest.fixture(params=HOSTINGS)
def broken(request, chromium, site, technique_page, tmp_path):
    """(copy of the site, the page to break, open(rel) → problems of that page in the copy, opened one way)."""
    copy = browser.copy_site(site, tmp_path / "site")

    def problems(rel: str) -> list[str]:
        def check(hosting):
            context, traffic = browser.new_context(chromium, hosting)
            try:
                return browser.page_problems(context.new_page(), hosting.url(rel), traffic)
            finally:
                context.close()
        if request.param == "subpath":
            with browser.serve(copy) as hosting:
                return check(hosting)
        return check(browser.from_disk(copy))

    return copy, technique_page, problems


def test_a_deleted_image_is_found(broken):
    copy, rel, problems = broken
    src = re.search(r'<img [^>]*src="([^":]+)"', (copy / rel).read_text(encoding="utf-8")).group(1)
    before = problems(rel)
    assert not [p for p in before if Path(src).name in p], before  # the control: the image shows before
    ((copy / rel).parent / src).unlink()
    found = problems(rel)
    assert any(Path(src).name in p and ("image not shown" in p or "failed" in p) for p in found), found


def test_a_root_absolute_link_is_found(broken):
    copy, rel, problems = broken
    html = (copy / rel).read_text(encoding="utf-8")
    link = re.search(r'<a [^>]*href="([^":#]+\.html)"', html).group(1)
    rooted = "/" + ((copy / rel).parent / link).resolve().relative_to(copy.resolve()).as_posix()
    browser.replace_text(copy / rel, html.replace(f'href="{link}"', f'href="{rooted}"', 1))
    assert browser.root_absolute_links((copy / rel).read_text(encoding="utf-8"))
    found = problems(rel)
    assert any("root-absolute link" in p and rooted in p for p in found), found


def test_a_script_error_is_found(broken):
    copy, rel, problems = broken
    html = (copy / rel).read_text(encoding="utf-8")
    browser.replace_text(copy / rel, html.replace("</body>", '<script>throw new Error("boom")</script></body>', 1))
    found = problems(rel)
    assert any("uncaught error" in p and "boom" in p for p in found), found


def test_a_request_to_another_host_is_found(broken):
    """What every page did before the offline plugin's search shim was vendored: load it from unpkg.com."""
    copy, rel, problems = broken
    html = (copy / rel).read_text(encoding="utf-8")
    browser.replace_text(copy / rel, html.replace("</head>", '<script src="https://unpkg.com/iframe-worker/shim">'
                                                            "</script></head>", 1))
    found = problems(rel)
    assert any("request outside the site" in p and "unpkg.com" in p for p in found), found
