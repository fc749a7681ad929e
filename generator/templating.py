"""One Jinja environment: page models → Markdown. Every value printed is escaped for HTML and Markdown unless a
filter marks it safe (paths we generate, numbers we format)."""
from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~])")


def escape_md(value: Any) -> Markup:
    """Text from users (labels, file and layer names) as inert Markdown: no links, emphasis, tables or HTML."""
    if isinstance(value, Markup):
        return value
    text = html.escape(str(value), quote=True).replace("\n", " ")
    return Markup(_MD_SPECIAL.sub(r"\\\1", text))


def _finalize(value: Any) -> Any:
    if isinstance(value, str) and not isinstance(value, Markup):
        return escape_md(value)
    return value


def url(path: str | Path) -> Markup:
    """A relative link to a file we wrote (names are already slugs); percent-encoded for safety."""
    return Markup(quote(str(path).replace("\\", "/"), safe="/-_.~"))


def number(value: Any, digits: int = 3) -> Markup:
    if value is None:
        return Markup("—")
    if isinstance(value, bool):
        return Markup(str(value))
    if isinstance(value, int):
        return Markup(f"{value:,}")
    if isinstance(value, float):
        if value != value:
            return Markup("—")
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 10 ** -digits):
            return Markup(f"{value:.{digits}g}")
        return Markup(f"{value:.{digits}f}")
    return escape_md(value)


def percent(value: float, digits: int = 1) -> Markup:
    return Markup(f"{100 * value:.{digits}f}%")


def seconds(value: Any, digits: int = 1) -> Markup:
    """A duration measured while building, marked as such (`<span class="build-time">`): like the date, it differs
    between two builds of the same inputs, and the determinism test leaves it aside; kept out of the search index,
    which would differ otherwise."""
    return Markup('<span class="build-time" data-search-exclude>') + number(value, digits) + Markup("</span>")


def pre(value: Any) -> Markup:
    """Text from users as a code block (a command line with their file names): HTML-escaped in `<pre><code>`, where
    Markdown leaves it alone; a fence would show Markdown escapes and could be closed by the text."""
    return Markup("<pre><code>") + Markup.escape(str(value)) + Markup("</code></pre>")


def code(value: Any) -> Markup:
    """Inline code as HTML (a Markdown code span can't hold every backtick run); its text is still escaped."""
    return Markup(f"<code>{escape_md(value)}</code>")


def make_environment(templates: Path = TEMPLATES) -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(templates)),
        undefined=StrictUndefined,
        finalize=_finalize,
        # `finalize` escapes every printed string for HTML and Markdown. Autoescape is on so that what the macros
        # return (already escaped page pieces) comes back as Markup and is not escaped a second time.
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(md=escape_md, url=url, num=number, pct=percent, code=code, secs=seconds, pre=pre)
    return env


class Renderer:
    """Pages from templates. `data_published`: whether the site carries the data files (not with --no-data), so
    pages link them or say where they are."""

    def __init__(self, templates: Path = TEMPLATES, data_published: bool = True):
        self.env = make_environment(templates)
        self.env.globals["data_published"] = data_published

    def page(self, template: str, **context: Any) -> str:
        text = self.env.get_template(template).render(**context)
        return re.sub(r"\n{3,}", "\n\n", text)
