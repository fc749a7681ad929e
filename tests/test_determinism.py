"""Two builds of the same inputs, each computing everything afresh (no shared cache), give byte-identical pages,
figures, data files and site, dates and measured durations aside: so a regenerated site's diff shows only what
changed. On the CPU, with the tiny model and every technique."""
from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path

import pytest

from helpers import cli, colour_folder, copy_site_setup, make_project, tiny_spec, write_spec
from test_published_arrays import TECHNIQUES

pytestmark = pytest.mark.usefixtures("one_thread")

# What differs between two builds of the same inputs, by design: the date (footer, sitemap), the durations marked
# as measured (`<span class="build-time">` on pages, "seconds" in manifest.json's metrics), and build.json, the
# record of the run (what ran, how long, where).
_VOLATILE = [
    re.compile(rb'<span class="build-time" data-search-exclude(?:="")?>[^<]*</span>'),
    re.compile(rb'"seconds": [-+.e0-9]+'),  # the same durations in manifest.json's metrics
    re.compile(rb"built \d{4}-\d{2}-\d{2}"),
    re.compile(rb"<lastmod>[^<]*</lastmod>"),
]
_RUN_RECORDS = {"build.json"}


def _contents(folder: Path) -> dict[str, bytes]:
    found = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if path.name in _RUN_RECORDS:
            continue
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)  # the gzip header holds a time
        for pattern in _VOLATILE:
            data = pattern.sub(b"", data)
        found[rel] = data
    return found


def test_two_fresh_builds_are_byte_identical(tmp_path, monkeypatch):
    (tmp_path / "project").mkdir()
    root = copy_site_setup(make_project(tmp_path / "project"))
    colour_folder(root / "colours", per_class=4)
    spec = tiny_spec(dataset="colours", techniques=TECHNIQUES)
    spec["datasets"] = {"colours": {"folder": "colours"}}
    spec["output"] = "site_src/reports"
    write_spec(root, spec)
    monkeypatch.chdir(root)  # the same command line both times (it is on the Reproduce page)
    builds = []
    for i in range(2):
        assert cli("build", "spec.yml", "--site", "site") == 0
        shutil.rmtree(root / "cache")  # the second build computes everything again
        (root / "site_src" / "reports").rename(root / f"reports-{i}")
        (root / "site").rename(root / f"site-{i}")
        builds.append((_contents(root / f"reports-{i}"), _contents(root / f"site-{i}")))
    (out_a, site_a), (out_b, site_b) = builds
    assert sorted(out_a) == sorted(out_b) and sorted(site_a) == sorted(site_b)
    assert any(p.endswith(".webp") for p in out_a) and any(p.endswith(".npz") for p in out_a)
    assert any(p.endswith(".png") for p in out_a)
    differ = [p for p in out_a if out_a[p] != out_b[p]] + [f"site/{p}" for p in site_a if site_a[p] != site_b[p]]
    assert not differ, f"{len(differ)} file(s) differ between two builds of the same inputs: {differ[:10]}"
