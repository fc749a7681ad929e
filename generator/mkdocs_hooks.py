"""MkDocs hooks (mkdocs.yml `hooks:`), loaded by MkDocs from this file alone: they import nothing of convscope (so
no torch in the site build) and do nothing when the build has not written their inputs.

- The sidebar: a build writes `.nav.json` into its output folder (a dot file, so MkDocs does not publish it)
  listing each model's pages grouped by technique family in the model page's order. `on_files` turns that into the
  `nav`: every other page keeps MkDocs' default place, and a model's pages the file does not name follow its
  families, so no page is ever left out of the nav.
- Figure scale: figures are drawn at 2× density and their PNG records the DPI they were drawn at (pHYs);
  `on_page_content` gives each such image its CSS width (pixels × DISPLAY_PPI / DPI), so that a figure narrower
  than the column is shown at the scale it was drawn for, not at twice it.
"""
from __future__ import annotations

import html
import json
import re
import struct
from pathlib import Path
from urllib.parse import unquote, urljoin

DISPLAY_PPI = 100  # CSS pixels per figure inch (generator.figures.DISPLAY_PPI)
NAV_FILE = ".nav.json"

_IMG = re.compile(r"<img\b[^>]*>")
_SRC = re.compile(r'\bsrc="([^"]+)"')


# -- the sidebar ---------------------------------------------------------------------------------------------------

def on_files(files, config, **kwargs):
    docs = Path(config["docs_dir"])
    found = sorted(p for p in [docs / NAV_FILE, *docs.glob(f"*/{NAV_FILE}")] if p.is_file())
    if not found or config.get("nav"):
        return files  # no build output, or a nav written by hand: MkDocs' own
    from mkdocs.structure.nav import nest_paths
    from mkdocs.structure.files import file_sort_key

    pages = sorted((f for f in files.documentation_pages() if f.inclusion.is_in_nav()), key=file_sort_key)
    uris = [f.src_uri for f in pages]
    nav = nest_paths(uris)
    for path in found:
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
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


# -- figure scale --------------------------------------------------------------------------------------------------

def on_page_content(content, page, config, files, **kwargs):
    base = page.file.src_uri

    def sized(match: re.Match) -> str:
        tag = match.group(0)
        src = _SRC.search(tag)
        if not src or re.search(r"\swidth=", tag):
            return tag
        url = html.unescape(src.group(1))
        if "://" in url or url.startswith(("/", "data:")) or not url.lower().endswith(".png"):
            return tag
        uri = unquote(urljoin(base, url))
        f = files.get_file_from_path(uri)
        if f is None:
            return tag
        width = css_width(Path(f.abs_src_path))
        return tag if width is None else tag[:4] + f' width="{width}"' + tag[4:]

    return _IMG.sub(sized, content)


def css_width(path: Path) -> int | None:
    """The CSS width of a PNG drawn at more than 1.5× density (its pHYs DPI above 1.5 × DISPLAY_PPI); None for others
    (pixel pictures shown one pixel per pixel)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if head != b"\x89PNG\r\n\x1a\n":
                return None
            width = None
            while True:
                raw = f.read(8)
                if len(raw) < 8:
                    return None
                length, kind = struct.unpack(">I4s", raw)
                if kind == b"IHDR":
                    width = struct.unpack(">I", f.read(4))[0]
                    f.seek(length - 4 + 4, 1)
                elif kind == b"pHYs":
                    ppu_x, _, unit = struct.unpack(">IIB", f.read(9))
                    f.seek(4, 1)
                    if unit != 1 or not width:
                        return None
                    dpi = ppu_x * 0.0254
                    return round(width * DISPLAY_PPI / dpi) if dpi > 1.5 * DISPLAY_PPI else None
                elif kind in (b"IDAT", b"IEND"):
                    return None
                else:
                    f.seek(length + 4, 1)
    except OSError:
        return None
