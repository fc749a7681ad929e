"""MkDocs hooks (mkdocs.yml `hooks:`), loaded by MkDocs from this file alone: they import nothing of convscope (so
no torch in the site build) and do nothing when the build has not written their inputs.

- The sidebar: a build writes `.nav.json` into its output folder (a dot file, so MkDocs does not publish it)
  listing each model's pages grouped by technique family in the model page's order. `on_files` turns that into the
  `nav`: every other page keeps MkDocs' default place, and a model's pages the file does not name follow its
  families, so no page is ever left out of the nav.
- Figure scale: figures are drawn at 2× density and their PNG records the DPI they were drawn at (pHYs);
  `on_page_content` gives each such image its CSS width (pixels × DISPLAY_PPI / DPI), so that a figure narrower
  than the column is shown at the scale it was drawn for, not at twice it. WebP figures carry the same density in
  their EXIF. Every local figure also gets its height and `loading="lazy"`, so a page does not jump as figures
  arrive and the figures below the fold load only when scrolled to.
- Data files: a build with `--no-data` says so in its `build.json` (`site.data: false`); `on_files` then leaves
  that output's `data/` folders out of the site (they stay in the output folder).
- The 404 page: its links are made relative when no `site_url` is set (`on_post_template`).
- Provenance: `on_page_context` puts the build's provenance (`build.json`: convscope version, spec digest, each
  model's weights digest, torch and torchvision, device, date) in every page's footer, with a link to the
  "Reproduce this report" page.
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path
from urllib.parse import unquote, urljoin

from PIL import Image

DISPLAY_PPI = 100  # CSS pixels per figure inch (generator.figures.DISPLAY_PPI)
NAV_FILE = ".nav.json"
BUILD_FILE = "build.json"
REPRODUCE_PAGE = "reproduce.md"  # beside build.json (generator.report)

X_RESOLUTION, RESOLUTION_UNIT, INCH = 0x011A, 0x0128, 2  # EXIF tags (generator.web_images)

_IMG = re.compile(r"<img\b[^>]*>")
_SRC = re.compile(r'\bsrc="([^"]+)"')


# -- the sidebar ---------------------------------------------------------------------------------------------------

def _outputs(config, name: str) -> list[Path]:
    """The build outputs' `name` files in the docs folder: at its top or one folder down (e.g. reports/)."""
    docs = Path(config["docs_dir"])
    return sorted(p for p in [docs / name, *docs.glob(f"*/{name}")] if p.is_file())


def _read_json(path: Path) -> dict:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
        return found if isinstance(found, dict) else {}
    except (OSError, ValueError):
        return {}


_build: dict = {}  # this site build's build.json (the first output's) and its folder in the docs: read in on_files


def on_files(files, config, **kwargs):
    found = _outputs(config, BUILD_FILE)
    _build.clear()
    if found:
        _build.update(facts=_read_json(found[0]).get("provenance"),
                      base=found[0].parent.relative_to(Path(config["docs_dir"])).as_posix())
    files = _without_data(files, config)
    docs = Path(config["docs_dir"])
    found = _outputs(config, NAV_FILE)
    if not found or config.get("nav"):
        return files  # no build output, or a nav written by hand: MkDocs' own
    from mkdocs.structure.nav import nest_paths
    from mkdocs.structure.files import file_sort_key

    pages = sorted((f for f in files.documentation_pages() if f.inclusion.is_in_nav()), key=file_sort_key)
    uris = [f.src_uri for f in pages]
    nav = nest_paths(uris)
    for path in found:
        spec = _read_json(path)
        base = path.parent.relative_to(docs).as_posix()
        base = "" if base == "." else base + "/"
        for model in spec.get("models", []):
            folder = f"{base}{model['folder']}/"
            nav = _replace_section(nav, folder, _model_section(model, folder, set(uris)))
    config["nav"] = nav
    return files


def _model_section(model: dict, folder: str, uris: set[str]) -> dict:
    """{model name: [its index page, {family: [pages]}..., pages the file does not name]}."""
    named: set[str] = set()

    def entries(items):
        out = []
        for item in items:
            if isinstance(item, str):
                uri = folder + item
                if uri in uris and uri not in named:
                    named.add(uri)
                    out.append(uri)
            elif isinstance(item, dict):
                for title, children in item.items():
                    sub = entries(children)
                    if sub:
                        out.append({title: sub})
        return out

    body = entries(["index.md"]) + entries(model.get("nav", []))
    rest = sorted(u for u in uris if u.startswith(folder) and "/" not in u[len(folder):] and u not in named)
    return {model.get("title") or model["folder"]: body + rest}


def _replace_section(nav, folder: str, section: dict):
    """nav with the section holding `folder`'s pages replaced by `section` (added at the end when none does)."""
    def holds(children) -> bool:
        return any((isinstance(c, str) and c.startswith(folder)) for c in children)

    def walk(items, top: bool):
        out, done = [], False
        for item in items:
            if isinstance(item, dict) and not done:
                (title, children), = item.items()
                if isinstance(children, list) and holds(children):
                    out.append(section)
                    done = True
                    continue
                new, inner = walk(children, False) if isinstance(children, list) else (children, False)
                done = done or inner
                out.append({title: new})
            else:
                out.append(item)
        return out, done

    new, done = walk(nav, True)
    return new if done else new + [section]


def _without_data(files, config):
    """`files` without the data folders of outputs built with --no-data."""
    docs = Path(config["docs_dir"])
    for path in _outputs(config, BUILD_FILE):
        if _read_json(path).get("site", {}).get("data", True) is False:
            base = path.parent.relative_to(docs).as_posix()
            base = "" if base == "." else base + "/"
            for f in [f for f in files if f.src_uri.startswith(base) and "/data/" in f.src_uri[len(base):]]:
                files.remove(f)
    return files


# -- the 404 page --------------------------------------------------------------------------------------------------

def on_post_template(output_content, template_name, config, **kwargs):
    """404.html without a `site_url` links to the site's root as "/" (root-absolute), which is another site when
    the report is served from a sub-path or opened from disk: made relative to the site's folder instead. (A host
    shows 404.html for a missing page at any depth, where relative links go astray too; set `site_url` in mkdocs.yml
    for absolute links to the right place.)"""
    if template_name != "404.html" or config.get("site_url"):
        return output_content
    output_content = re.sub(r'(\s(?:href|src|action)=")/"', r'\1index.html"', output_content)
    return re.sub(r'(\s(?:href|src|action)=")/(?!/)', r"\1", output_content)


# -- provenance in the footer --------------------------------------------------------------------------------------

def on_page_context(context, page, config, nav, **kwargs):
    facts, base = _build.get("facts"), _build.get("base")
    if not isinstance(facts, dict):
        return context
    reproduce = (REPRODUCE_PAGE if base == "." else f"{base}/{REPRODUCE_PAGE}").replace(".md", ".html")
    depth = page.file.dest_uri.count("/")
    config["copyright"] = footer(facts, "../" * depth + reproduce)
    return context


def footer(facts: dict, reproduce: str) -> str:
    """One line of provenance, escaped (model names are the user's words)."""
    e = html.escape
    models = facts.get("models") or {}
    weights = ", ".join(f"{e(name)} <code>{e(str(m.get('weights', ''))[:12])}</code>" for name, m in models.items())
    parts = [f"convscope {e(str(facts.get('convscope', '?')))}",
             f"spec <code>{e(str(facts.get('spec', {}).get('sha256', ''))[:12])}</code>",
             f"weights {weights}" if weights else "",
             f"torch {e(str(facts.get('torch', '?')))}, torchvision {e(str(facts.get('torchvision', '?')))}",
             f"device {e(str(facts.get('device', '?')))}",
             f"built {e(str(facts.get('date', '?')))}",
             f'<a href="{e(reproduce)}">Reproduce this report</a>']
    return '<span class="convscope-provenance">' + " · ".join(p for p in parts if p) + "</span>"


# -- figure scale --------------------------------------------------------------------------------------------------

def on_page_content(content, page, config, files, **kwargs):
    base = page.file.src_uri

    def sized(match: re.Match) -> str:
        tag = match.group(0)
        src = _SRC.search(tag)
        if not src or re.search(r"\s(width|height)=", tag):
            return tag
        url = html.unescape(src.group(1))
        if "://" in url or url.startswith(("/", "data:")):
            return tag
        f = files.get_file_from_path(unquote(urljoin(base, url)))
        size = css_size(Path(f.abs_src_path)) if f is not None and f.abs_src_path else None
        if size is None:
            return tag
        lazy = "" if re.search(r"\sloading=", tag) else ' loading="lazy"'
        return tag[:4] + f' width="{size[0]}" height="{size[1]}"{lazy}' + tag[4:]

    return _IMG.sub(sized, content)


def css_size(path: Path) -> tuple[int, int] | None:
    """The CSS size a figure is shown at: its pixel size × DISPLAY_PPI / its DPI when it was drawn at more than 1.5×
    density (a PNG's pHYs, a WebP's EXIF resolution), else its pixel size (pixel pictures shown one pixel per
    pixel); None for a file that is not an image."""
    try:
        with Image.open(path) as im:
            width, height = im.size
            dpi = im.info.get("dpi", (0, 0))[0]
            if not dpi and im.format == "WEBP":
                exif = im.getexif()
                dpi = float(exif.get(X_RESOLUTION, 0)) if exif.get(RESOLUTION_UNIT, INCH) == INCH else 0
    except (OSError, ValueError, SyntaxError):
        return None
    if dpi and float(dpi) > 1.5 * DISPLAY_PPI:
        scale = DISPLAY_PPI / float(dpi)
        return round(width * scale), round(height * scale)
    return width, height
