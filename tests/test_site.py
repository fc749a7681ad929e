"""End to end: a tiny spec built with --site into a copy of the repository's MkDocs setup (mkdocs build --strict)."""
from __future__ import annotations

import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest

from helpers import REPO, cli, make_project, read_json, record_arrays, tiny_spec, write_spec

LABELS = ["<script>x</script>", "*bold*_", "[link](http://example.com)", "plain | pipe"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("site"))
    shutil.copy(REPO / "mkdocs.yml", root / "mkdocs.yml")
    (root / "generator").mkdir()  # the MkDocs hooks mkdocs.yml names, beside it as in the repository
    shutil.copy(REPO / "generator" / "mkdocs_hooks.py", root / "generator" / "mkdocs_hooks.py")
    # the hand-written pages, without any generated report (or a leftover staging folder)
    shutil.copytree(REPO / "site_src", root / "site_src",
                    ignore=lambda folder, names: [n for n in names if n == "reports" or n.startswith(".")]
                    if Path(folder) == REPO / "site_src" else [])
    spec = tiny_spec(labels=LABELS)
    spec["models"][0]["techniques"]["predictions"]["top_k"] = 4  # every label is in every table
    spec["output"] = "site_src/reports"
    path = write_spec(root, spec)
    code = cli("build", path, "--site", root / "site")
    return root, code


def test_build_and_strict_mkdocs_pass(built):
    root, code = built
    assert code == 0
    site = root / "site"
    for page in ("index.html", "about.html", "reports/index.html", "reports/tiny/index.html",
                 "reports/tiny/predictions.html", "reports/tiny/filters.html", "reports/tiny/activations.html"):
        assert (site / page).is_file(), page
    assert not [p.name for p in root.iterdir() if p.name.startswith(".site")]  # no temporary site left
    (root / "plain").mkdir()
    assert (site.stat().st_mode & 0o777) == ((root / "plain").stat().st_mode & 0o777)  # servable, not private


def test_manifest_records_point_to_files(built):
    root, _ = built
    out = root / "site_src" / "reports"
    records = read_json(out / "manifest.json")["artifacts"]
    assert records
    keys = {"model", "technique", "layer", "image", "target", "params", "metrics", "figure", "data", "arrays"}
    for r in records:
        assert keys <= set(r), r
        assert r["model"] == "tiny"
        assert (out / r["data"]).is_file(), r["data"]
        assert r["figure"] is None or (out / r["figure"]).is_file(), r["figure"]
        assert (root / "site" / "reports" / r["data"]).is_file()  # the numbers are published with the site
    kinds = {r["technique"] for r in records}
    assert kinds == {"input", "architecture", "predictions", "filters", "activations"}
    inputs = {r["image"]: r for r in records if r["technique"] == "input"}
    assert set(inputs) == {"pics/a", "pics/b"}
    for r in inputs.values():
        x = record_arrays(out, r)["input"]
        assert x.shape == (3, 32, 32) and x.dtype == np.float32
        assert r["figure"] and r["metrics"]["shape"] == [3, 32, 32]
    preds = [r for r in records if r["technique"] == "predictions"]
    assert all(r["target"] in LABELS and r["params"] == {"top_k": 4} for r in preds)
    acts = [r for r in records if r["technique"] == "activations"]
    assert {(r["layer"], r["image"]) for r in acts} == {(l, i) for l in ("conv1", "relu2") for i in ("pics/a", "pics/b")}
    assert all("dead_channels" in r["metrics"] for r in acts)


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs).get("src", ""))


def test_every_image_in_the_site_exists(built):
    root, _ = built
    site = root / "site"
    counted = {}
    for page in site.rglob("*.html"):
        parser = _Images()
        parser.feed(page.read_text(encoding="utf-8"))
        for src in parser.srcs:
            url = urlparse(src)
            if url.scheme == "data":
                continue
            assert not url.scheme and not url.netloc, f"{page}: remote image {src}"
            assert (page.parent / unquote(url.path)).resolve().is_file(), f"{page.relative_to(site)}: {src}"
        counted[str(page.relative_to(site))] = len(parser.srcs)
    # the figures really are images in the pages (not escaped text): 2 inputs, 2 predictions, 2 filters, 4 maps
    assert counted["reports/tiny/index.html"] >= 2
    assert counted["reports/tiny/predictions.html"] == 2
    assert counted["reports/tiny/filters.html"] == 2
    assert counted["reports/tiny/activations.html"] == 4


def test_labels_are_escaped_in_markdown_and_html(built):
    root, _ = built
    md = (root / "site_src" / "reports" / "tiny" / "predictions.md").read_text(encoding="utf-8")
    assert "<script>" not in md
    assert "&lt;script&gt;x&lt;/script&gt;" in md
    assert r"\*bold\*\_" in md
    html = (root / "site" / "reports" / "tiny" / "predictions.html").read_text(encoding="utf-8")
    assert "<script>x</script>" not in html
    assert "&lt;script&gt;x&lt;/script&gt;" in html
    assert "*bold*_" in html and "<em>bold</em>" not in html and "<strong>bold" not in html
    assert "[link](http://example.com)" in html and 'href="http://example.com"' not in html
    assert "plain | pipe" in html  # a pipe in a label does not split the table cell


def test_page_structure_is_rendered(built):
    """Headings, figures and tables are Markdown structure, not escaped text."""
    root, _ = built
    md = (root / "site_src" / "reports" / "tiny" / "predictions.md").read_text(encoding="utf-8")
    assert md.startswith("# ")
    assert "&lt;figure" not in md and "\\#" not in md.splitlines()[0]
    html = (root / "site" / "reports" / "tiny" / "predictions.html").read_text(encoding="utf-8")
    assert "<h1" in html and "<table>" in html and "<figcaption>" in html
    assert "&lt;figure" not in html and "&lt;small&gt;" not in html
