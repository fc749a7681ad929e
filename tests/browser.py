"""Browser checks of a built site (tests/test_browser.py): Debian's Chromium driven by Playwright, the site served
from a sub-path by a local server or opened from disk. Each check is a plain function that returns a list of
problems (empty when the page is fine), so a test can assert either that a good site has none or that a broken one
has the expected one.

- `chromium_path`, `skip_reason`, `launch`: which Chromium, whether the suite can run at all, and a headless browser
  that makes no request of its own (no background networking, no component updates, no sync).
- `Hosting`, `serve`, `from_disk`: the two ways the site is opened, each knowing which URLs belong to the site.
- `Traffic`: every request a browser context makes, requests to anything but the site aborted and recorded, failed
  requests, responses >= 400, console errors and uncaught exceptions.
- Checks: `page_problems` (load, images, links, traffic), `root_absolute_links` (static, on the HTML text),
  `search_problems`, `lightbox_problems`, `palette_problems`, and `nav_links` for the navigation's reach."""
from __future__ import annotations

import contextlib
import functools
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
# Headless, and nothing the browser would request by itself: without the networking flags Chromium reaches for
# Google's hosts (component updates, safe browsing lists, sync) even on a local page.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SUBPATH = "/some/sub/path/"  # where the server mounts the site: a host that does not serve it from its root
VIEWPORT = {"width": 1280, "height": 900}  # Material's layout with both sidebars and the content column
LOAD_TIMEOUT_MS = 20_000
IMAGE_TIMEOUT_MS = 8_000
SEARCH_TIMEOUT_MS = 15_000


def chromium_path() -> str | None:
    """$CONVSCOPE_CHROMIUM, else Debian's chromium (or chromium-browser); None when none is an executable file."""
    candidates = [os.environ.get("CONVSCOPE_CHROMIUM", "")] + list(CHROMIUM_CANDIDATES)
    return next((c for c in candidates if c and os.path.isfile(c) and os.access(c, os.X_OK)), None)


def skip_reason() -> str | None:
    """Why the browser suite cannot run here, or None when it can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    if chromium_path() is None:
        return ("no Chromium: none of $CONVSCOPE_CHROMIUM, " + ", ".join(CHROMIUM_CANDIDATES)
                + " (make test installs Debian's chromium when it may)")
    return None


def launch(playwright):
    return playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)


# --- hostings ---


@dataclass
class Hosting:
    """One way of opening the site: `base` is the URL of its root folder (ending with '/'); every URL the site
    needs starts with it."""
    name: str
    base: str
    site: Path

    def url(self, rel: str) -> str:
        return self.base + rel

    def is_local(self, url: str) -> bool:
        scheme = urlsplit(url).scheme
        return scheme in ("data", "blob", "about") or url.startswith(self.base)

    def file_of(self, url: str) -> Path | None:
        """The file of the site a local URL names (query and fragment dropped), or None for a URL outside it."""
        url = urldefrag(url)[0].split("?", 1)[0]
        if not url.startswith(self.base):
            return None
        return self.site / unquote(url[len(self.base):])

    def rel(self, url: str) -> str | None:
        """The site-relative path of a URL of the site ('index.html' for the root folder), or None."""
        path = self.file_of(url)
        if path is None:
            return None
        rel = path.relative_to(self.site).as_posix() if path != self.site else ""
        return rel + "index.html" if rel == "" or rel.endswith("/") else rel


class _SubPathHandler(SimpleHTTPRequestHandler):
    """Serves the site folder at SUBPATH and answers 404 for every other path."""
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".webp": "image/webp", ".js": "text/javascript",
                      ".json": "application/json", ".svg": "image/svg+xml"}

    def send_head(self):
        if not self.path.split("?", 1)[0].startswith(SUBPATH):
            self.send_error(404, "not under " + SUBPATH)
            return None
        return super().send_head()

    def translate_path(self, path):
        return super().translate_path("/" + path[len(SUBPATH):] if path.startswith(SUBPATH) else path)

    def log_message(self, format, *args):  # quiet: the tests report what failed
        pass


@contextlib.contextmanager
def serve(site: Path) -> Iterator[Hosting]:
    """The site at http://127.0.0.1:PORT/some/sub/path/ from a thread, for as long as the block runs."""
    handler = functools.partial(_SubPathHandler, directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Hosting("subpath", f"http://127.0.0.1:{server.server_address[1]}{SUBPATH}", site)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def from_disk(site: Path) -> Hosting:
    return Hosting("file", site.resolve().as_uri() + "/", site.resolve())


def html_pages(site: Path) -> list[str]:
    """Every HTML page of the site, as paths relative to it, sorted."""
    return sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html"))


def copy_site(src: Path, dst: Path) -> Path:
    """A copy to break on purpose, made in a moment even of a large site: each file a hard link to the original, or
    a symbolic link across file systems. Break a file by unlinking it (and writing a new one), never by writing
    into it."""
    def link(s, d):
        try:
            os.link(s, d)
        except OSError:
            os.symlink(os.path.abspath(s), d)
    shutil.copytree(src, dst, copy_function=link)
    return dst


def replace_text(path: Path, text: str) -> None:
    """Write a file of a copy made by `copy_site` without touching the file it was linked from."""
    path.unlink()
    path.write_text(text, encoding="utf-8")


# --- traffic ---


@dataclass
class Traffic:
    """What a browser context did while a check ran (`clear` between checks): every request URL, requests to
    anything but the site (aborted), failed requests, responses >= 400, console errors and uncaught errors."""
    hosting: Hosting
    requests: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    bad_status: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def clear(self) -> None:
        for name in ("requests", "outside", "failed", "bad_status", "console", "errors"):
            getattr(self, name).clear()

    def problems(self) -> list[str]:
        return ([f"request outside the site (aborted): {u}" for u in self.outside]
                + [f"request failed: {u}" for u in self.failed]
                + [f"HTTP error: {u}" for u in self.bad_status]
                + [f"console error: {m}" for m in self.console]
                + [f"uncaught error: {m}" for m in self.errors])

    def _route(self, route) -> None:
        url = route.request.url
        if self.hosting.is_local(url):
            route.continue_()
        else:
            self.outside.append(url)
            route.abort("blockedbyclient")

    def _page(self, page) -> None:
        page.on("console", lambda m: self.console.append(f"{m.text} ({_where(m)})") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"{e.name}: {e.message}"))

    def _failed(self, request) -> None:
        if request.url not in self.outside:  # an aborted outside request is reported once, as outside
            self.failed.append(f"{request.url} ({request.failure})")

    def watch(self, context) -> "Traffic":
        context.route("**/*", self._route)
        context.on("request", lambda r: self.requests.append(r.url))
        context.on("requestfailed", self._failed)
        context.on("response", lambda r: self.bad_status.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        context.on("page", self._page)
        for page in context.pages:
            self._page(page)
        return self

    def non_local(self) -> list[str]:
        """Requests (routed or not: file:// ones are not routed) whose URL is not the site's."""
        return [u for u in self.requests if not self.hosting.is_local(u)]


def _where(message) -> str:
    loc = message.location or {}
    return f"{loc.get('url', '?')}:{loc.get('lineNumber', '?')}"


def new_context(browser, hosting: Hosting):
    """A context that sees the light scheme by default, with its traffic recorded; (context, traffic)."""
    context = browser.new_context(viewport=VIEWPORT, color_scheme="light", service_workers="block")
    context.set_default_timeout(LOAD_TIMEOUT_MS)
    return context, Traffic(hosting).watch(context)


# --- checks ---

# Every <img>: opened <details> first, then each scrolled into view (figures are loading="lazy") and waited for;
# the ones that did not load, with why (broken, or never shown so never loaded).
_IMAGES_JS = """async (timeout) => {
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  const bad = [];
  for (const img of document.querySelectorAll('img')) {
    img.scrollIntoView({block: 'center'});
    if (!img.complete) {
      await new Promise(done => {
        img.addEventListener('load', done, {once: true});
        img.addEventListener('error', done, {once: true});
        setTimeout(done, timeout);
      });
    }
    if (!(img.naturalWidth > 0)) {
      const shown = img.getClientRects().length > 0;
      bad.push(`${img.getAttribute('src')} (naturalWidth 0${shown ? '' : ', not displayed'})`);
    }
  }
  window.scrollTo(0, 0);
  return bad;
}"""

# Every link and resource of the page: [tag, attribute, the attribute's text, the URL it resolves to].
_LINKS_JS = """() => {
  const out = [];
  for (const el of document.querySelectorAll('[href], [src]')) {
    for (const attr of ['href', 'src']) {
      const raw = el.getAttribute(attr);
      if (raw === null) continue;
      let url = '';
      try { url = new URL(raw, document.baseURI).href; } catch (e) { url = 'invalid'; }
      out.push([el.tagName.toLowerCase(), attr, raw, url]);
    }
  }
  return out;
}"""


def link_problems(links: list[list[str]], hosting: Hosting) -> list[str]:
    """Links that leave the site where they should not, or name a file it does not have: a root-absolute or
    protocol-relative attribute (it breaks a site served from a sub-path), a local URL outside the site's folder,
    a link to a missing file. Links to other hosts are allowed only on <a> (the reader's choice, never a request)."""
    problems = []
    for tag, attr, raw, url in links:
        raw = raw.strip()
        scheme = urlsplit(url).scheme
        if raw.startswith("/"):
            problems.append(f"root-absolute link <{tag} {attr}={raw!r}>")
        elif scheme in ("mailto", "data", "blob", "javascript", "about"):
            continue
        elif hosting.is_local(url):
            target = hosting.file_of(url)
            if target is not None and not (target.is_file() or (target / "index.html").is_file()):
                problems.append(f"broken link <{tag} {attr}={raw!r}>: no {target.relative_to(hosting.site)}")
        elif tag == "a" and scheme in ("http", "https") and not url.startswith(("http://127.0.0.1", "file:")):
            continue  # a link to another site, e.g. the theme's credit in the footer
        else:
            problems.append(f"link outside the site <{tag} {attr}={raw!r}> → {url}")
    return problems


def page_problems(page, url: str, traffic: Traffic) -> list[str]:
    """Load one page and say what is wrong with it: its load, console errors, uncaught errors, failed or outside
    requests, responses >= 400, images that do not show (after scrolling each into view), links that leave the site
    or the sub-path it is served from."""
    traffic.clear()
    problems = []
    try:
        response = page.goto(url, wait_until="load")
        if response is not None and response.status >= 400:
            problems.append(f"page answered {response.status}")
        problems += [f"image not shown: {b}" for b in page.evaluate(_IMAGES_JS, IMAGE_TIMEOUT_MS)]
        problems += link_problems(page.evaluate(_LINKS_JS), traffic.hosting)
        # what the page starts after load (the search worker fetching its index, lazy images) lands in this page's
        # traffic, not the next page's
        page.wait_for_load_state("networkidle")
    except Exception as e:  # a page that does not load is a problem of the page, reported with the others
        problems.append(f"{type(e).__name__}: {str(e).splitlines()[0]}")
    problems += traffic.problems()
    problems += [f"request outside the site: {u}" for u in traffic.non_local() if u not in traffic.outside]
    return problems


class _Links(HTMLParser):
    ATTRS = ("href", "src", "srcset", "action", "poster", "data-src")

    def __init__(self):
        super().__init__()
        self.absolute: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in self.ATTRS and value:
                parts = [p.strip().split(" ")[0] for p in value.split(",")] if name == "srcset" else [value.strip()]
                self.absolute += [f"<{tag} {name}={value!r}>" for p in parts if p.startswith("/")]


def root_absolute_links(html: str) -> list[str]:
    """The attributes of an HTML text that name a root-absolute or protocol-relative URL ('/x', '//host/x'): each
    breaks a site served from a sub-path or opened from disk."""
    parser = _Links()
    parser.feed(html)
    return parser.absolute


def search_problems(page, url: str, query: str) -> list[str]:
    """Open the page, type `query` into Material's search box and wait for a result that contains it."""
    page.goto(url, wait_until="load")
    opener = page.locator("label.md-header__button[for='__search']")
    if opener.is_visible():  # a narrow window hides the box behind a button
        opener.click()
    box = page.locator("input.md-search__input")
    box.click()
    box.fill("")
    box.press_sequentially(query, delay=20)
    items = page.locator(".md-search-result__item")
    try:
        items.first.wait_for(state="attached", timeout=SEARCH_TIMEOUT_MS)
    except Exception:
        meta = page.locator(".md-search-result__meta").text_content(timeout=1000) or ""
        return [f"search for {query!r} found nothing ({meta.strip() or 'no result list'})"]
    texts = items.all_text_contents()
    if not any(query.lower() in t.lower() for t in texts):
        return [f"search for {query!r}: {len(texts)} result(s), none containing it: {texts[:3]}"]
    return []


def lightbox_problems(page, url: str) -> list[str]:
    """Open the page, click its first figure (an a.glightbox around an img) and expect the lightbox to show it."""
    page.goto(url, wait_until="load")
    figure = page.locator("a.glightbox:has(img)").first
    if figure.count() == 0:
        return ["no figure (a.glightbox around an img) on the page"]
    figure.scroll_into_view_if_needed()
    figure.click()
    problems = []
    try:
        page.locator(".glightbox-container").wait_for(state="visible", timeout=5000)
        slide = page.locator(".gslide.current img, .gslide.loaded img").first
        slide.wait_for(state="visible", timeout=5000)
        if not slide.evaluate("img => img.complete && img.naturalWidth > 0"):
            problems.append("the lightbox shows no image")
    except Exception as e:
        problems.append(f"the lightbox did not open: {str(e).splitlines()[0]}")
    page.keyboard.press("Escape")
    return problems


def palette_problems(page, url: str) -> list[str]:
    """Open the page in the light scheme, click the palette toggle: the body's scheme must become slate, and go
    back to default on the second click (leaving the palette as it was for the next check)."""
    page.goto(url, wait_until="load")
    scheme = lambda: page.locator("body").get_attribute("data-md-color-scheme")  # noqa: E731
    toggle = page.locator("form[data-md-component='palette'] label.md-header__button:visible")
    if scheme() != "default":
        return [f"the page opens in scheme {scheme()!r}, not default"]
    problems = []
    for want in ("slate", "default"):
        if toggle.count() != 1:
            return problems + [f"{toggle.count()} visible palette toggles"]
        toggle.click()
        try:
            page.wait_for_function(f"document.body.getAttribute('data-md-color-scheme') === '{want}'", timeout=3000)
        except Exception:
            problems.append(f"after clicking the palette toggle the scheme is {scheme()!r}, not {want!r}")
            break
    return problems


def nav_links(page, hosting: Hosting) -> set[str]:
    """The site pages the loaded page's navigation (`.md-nav__link[href]`) links to, site-relative."""
    urls = page.evaluate("() => [...document.querySelectorAll('.md-nav__link[href]')].map(a => a.href)")
    return {rel for rel in (hosting.rel(u) for u in urls) if rel is not None and rel.endswith(".html")}
