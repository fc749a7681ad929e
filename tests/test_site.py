"""End to end: a tiny spec built with --site into a copy of the repository's MkDocs setup (mkdocs build --strict)."""
from __future__ import annotations

import hashlib
import html
import re
from html.parser import HTMLParser
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
import torch
from PIL import Image

from generator import __version__
from generator.provenance import build_date, pip_pin
from helpers import cli, copy_site_setup, make_project, read_json, record_arrays, tiny_spec, write_spec

LABELS = ["<script>x</script>", "*bold*_", "[link](http://example.com)", "plain | pipe"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = copy_site_setup(make_project(tmp_path_factory.mktemp("site")))
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


def test_every_page_shows_the_builds_provenance_and_links_the_reproduce_page(built):
    root, _ = built
    site = root / "site"
    facts = read_json(root / "site_src" / "reports" / "build.json")["provenance"]
    assert facts["spec"]["sha256"] == hashlib.sha256((root / "spec.yml").read_bytes()).hexdigest()
    assert facts["convscope"] == __version__ and facts["torch"] == torch.__version__ and facts["device"] == "cpu"
    assert len(facts["models"]["tiny"]["weights"]) == 64 and facts["date"] == build_date()
    pages = list(site.rglob("*.html"))
    assert len(pages) > 10
    for page in pages:
        text = page.read_text(encoding="utf-8")
        if page.name == "404.html":
            continue
        footer = text[text.index('class="convscope-provenance"'):]
        footer = footer[:footer.index("</span>")]
        for fact in (f"convscope {__version__}", facts["spec"]["sha256"][:12], facts["models"]["tiny"]["weights"][:12],
                     f"torch {torch.__version__}", "device cpu", f"built {facts['date']}"):
            assert fact in footer, (page, fact)
        link = re.search(r'href="([^"]+)">Reproduce this report', footer).group(1)
        assert (page.parent / link).resolve() == (site / "reports" / "reproduce.html").resolve(), (page, link)
    reproduce = (site / "reports" / "reproduce.html").read_text(encoding="utf-8")
    assert facts["spec"]["sha256"] in reproduce and facts["models"]["tiny"]["weights"] in reproduce
    assert f"pip install torch=={pip_pin(torch.__version__)}" in reproduce
    assert html.escape(facts["command"], quote=False) in reproduce and "build" in facts["command"]


def test_no_page_requests_another_host_or_links_the_root(built):
    root, _ = built
    site = root / "site"
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert "unpkg.com" not in text, page  # the offline search shim is vendored
        for tag, attr in re.findall(r'<(script|link|img|iframe)\b[^>]*\b(?:src|href)="([^"]*)"', text):
            assert not urlparse(attr).netloc, (page.name, tag, attr)
        assert not re.search(r'\s(?:href|src)="/(?!/)', text), page.name  # root-absolute: wrong under a sub-path


def test_figures_have_their_shown_size_and_load_lazily(built):
    root, _ = built
    text = (root / "site" / "reports" / "tiny" / "activations.html").read_text(encoding="utf-8")
    imgs = re.findall(r"<img\b[^>]*>", text)
    assert len(imgs) == 4
    for img in imgs:
        width, height = (int(re.search(rf'\s{k}="(\d+)"', img).group(1)) for k in ("width", "height"))
        src = re.search(r'src="([^"]+)"', img).group(1)
        with Image.open(root / "site" / "reports" / "tiny" / unquote(src)) as im:
            assert width == round(im.width / 2) and abs(height - im.height / 2) <= 1, img  # drawn at 2×
        assert 'loading="lazy"' in img


def test_no_data_leaves_the_data_files_out_of_the_site_only(built, tmp_path):
    root, _ = built
    assert cli("build", root / "spec.yml", "--site", root / "site-nodata", "--no-data") == 0
    out, site = root / "site_src" / "reports", root / "site-nodata"
    records = read_json(out / "manifest.json")["artifacts"]
    assert records and all((out / r["data"]).is_file() for r in records)  # still in the output folder
    assert not list(site.rglob("*.npz")) and not list(site.rglob("*.npy"))
    assert list(site.rglob("*.png")) or list(site.rglob("*.webp"))
    assert "--no-data" in (site / "reports" / "index.html").read_text(encoding="utf-8")
    assert read_json(out / "build.json")["site"] == {"data": False}
