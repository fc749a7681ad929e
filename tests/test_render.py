"""The Jinja environment: user text is escaped for HTML and Markdown, our own page pieces are not escaped twice."""
from __future__ import annotations

import pytest
from jinja2 import UndefinedError
from markupsafe import Markup

from generator.templating import code, escape_md, make_environment, number, percent, url


def test_escape_md_neutralizes_html_and_markdown():
    assert escape_md("<script>x</script>") == "&lt;script&gt;x&lt;/script&gt;"
    assert escape_md("*bold*_") == r"\*bold\*\_"
    assert escape_md("[a](b)") == r"\[a\]\(b\)"
    assert escape_md("a | b") == r"a \| b"
    assert escape_md("line\nbreak") == "line break"
    assert escape_md(Markup("<b>ours</b>")) == "<b>ours</b>"


def test_filters():
    assert url("a b/c#d.png") == "a%20b/c%23d.png"
    assert number(1234567) == "1,234,567" and number(0.5) == "0.500" and number(None) == "—"
    assert number(float("nan")) == "—" and number(1e-7) == "1e-07"
    assert percent(0.25) == "25.0%"
    assert code("a_b") == r"<code>a\_b</code>"


def test_environment_escapes_values_once(tmp_path):
    (tmp_path / "m.j2").write_text(
        '{% macro fig(path, caption) %}![{{ caption }}]({{ path|url }}) <i>{{ caption }}</i>{% endmacro %}')
    (tmp_path / "page.j2").write_text(
        '{% import "m.j2" as m %}# {{ title }}\n{{ m.fig(path, caption) }}\n{{ n|num }} {{ n }} {{ label|code }}\n')
    env = make_environment(tmp_path)
    text = env.get_template("page.j2").render(title="<T>", path="figs/a b.png", caption="*c*", n=1500, label="<x>")
    assert text.splitlines() == [
        "# &lt;T&gt;",
        r"![\*c\*](figs/a%20b.png) <i>\*c\*</i>",  # the macro's own HTML is kept, its arguments escaped once
        "1,500 1500 <code>&lt;x&gt;</code>",
    ]


def test_environment_is_strict(tmp_path):
    (tmp_path / "p.j2").write_text("{{ missing }}")
    with pytest.raises(UndefinedError):
        make_environment(tmp_path).get_template("p.j2").render()


def test_figure_captions_are_markdown_so_escapes_do_not_show():
    """A caption inside <figcaption> is escaped for Markdown, so it must be parsed as Markdown (not shown raw)."""
    import markdown

    from generator.templating import TEMPLATES

    env = make_environment(TEMPLATES)
    text = env.from_string('{% import "partials/macros.md.j2" as m %}{{ m.figure("f.png", "_blocks.5._act1 *x*") }}').render()
    html = markdown.markdown(text, extensions=["md_in_html", "attr_list"])
    caption = html.split("<figcaption>")[1].split("</figcaption>")[0]
    assert caption == "_blocks.5._act1 *x*"
