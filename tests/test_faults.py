"""Faults are isolated at every stage: a page, a figure or a page's numbers that raise are reported like a failed job
(the page says so in one sentence, build.json lists it, the exit status is 1) and everything else is written."""
from __future__ import annotations

import json

from helpers import cli, tiny_spec, write_spec
from generator import build as buildlib
from generator import report
from generator.outputs import OVERVIEW
from generator.templating import Renderer


def build_json(project) -> dict:
    return json.loads((project / "out" / "build.json").read_text())


def failing_template(monkeypatch, template: str, message: str) -> None:
    real = Renderer.page

    def page(self, name, **context):
        if name == template:
            raise RuntimeError(message)
        return real(self, name, **context)

    monkeypatch.setattr(Renderer, "page", page)


def test_a_page_whose_template_raises_says_so_and_the_rest_is_written(project, monkeypatch):
    failing_template(monkeypatch, "pages/activations.md.j2", "No first item, sequence was empty [*x*]")
    assert cli("build", write_spec(project, tiny_spec())) == 1
    out = project / "out"
    page = (out / "tiny" / "activations.md").read_text()
    assert page.startswith("# Activation maps") and "This page could not be written" in page
    assert r"RuntimeError: No first item, sequence was empty \[\*x\*\]" in page  # escaped, one line
    for other in ("index.md", "tiny/index.md", "tiny/predictions.md", "tiny/filters.md", "manifest.json"):
        assert (out / other).is_file() and "could not be written" not in (out / other).read_text()
    record = build_json(project)
    assert record["failures"] == [{"stage": "page", "file": "tiny/activations.md",
                                   "error": "RuntimeError: No first item, sequence was empty [*x*]"}]
    assert all(j["status"] == "ran" for j in record["jobs"])  # the results themselves are fine
    assert "tiny/activations.md" in (out / "index.md").read_text()  # the home page lists the failure


def test_the_index_page_failing_leaves_the_model_pages(project, monkeypatch):
    failing_template(monkeypatch, "pages/index.md.j2", "broken index")
    assert cli("build", write_spec(project, tiny_spec())) == 1
    out = project / "out"
    assert "This page could not be written" in (out / "index.md").read_text()
    assert "Predictions" in (out / "tiny" / "predictions.md").read_text()
    assert [f["file"] for f in build_json(project)["failures"]] == ["index.md"]


def test_a_figure_stage_step_that_raises_is_listed_and_the_pages_are_written(project, monkeypatch):
    def overview(folder, all_pages):
        raise OSError("no space left for the overview")

    monkeypatch.setattr(buildlib, "write_overview", overview)  # the build calls it by the name it imported
    assert cli("build", write_spec(project, tiny_spec())) == 1
    out = project / "out"
    assert not (out / OVERVIEW).exists()
    assert (out / "tiny" / "predictions.md").is_file() and (out / "tiny" / "figures").is_dir()
    assert build_json(project)["failures"] == [{"stage": "figure", "file": OVERVIEW,
                                                "error": "OSError: no space left for the overview"}]
    assert "no space left for the overview" in (out / "index.md").read_text()


def test_numbers_of_a_page_that_raise_fail_that_page_only(project, monkeypatch):
    """The attribution comparison ranks the methods' scores; when that raises, only the comparison page fails."""
    def broken(pages, kinds):
        raise ZeroDivisionError("mean of no scores")

    monkeypatch.setattr(report, "comparison", broken)
    spec = tiny_spec(techniques={"predictions": {}, "saliency": {}, "gradcam": {}})
    assert cli("build", write_spec(project, spec)) == 1
    out = project / "out" / "tiny"
    assert "ZeroDivisionError: mean of no scores" in (out / "comparison.md").read_text()
    assert "Saliency" in (out / "saliency.md").read_text() and "Grad-CAM" in (out / "gradcam.md").read_text()
    assert [f["file"] for f in build_json(project)["failures"]] == ["tiny/comparison.md"]


def test_the_model_page_s_numbers_raising_leave_its_technique_pages(project, monkeypatch):
    def broken(*args, **kwargs):
        raise KeyError("architecture")

    monkeypatch.setattr(report, "model_page_context", broken)
    assert cli("build", write_spec(project, tiny_spec())) == 1
    out = project / "out"
    assert "This page could not be written" in (out / "tiny" / "index.md").read_text()
    assert "Predictions" in (out / "tiny" / "predictions.md").read_text()
    nav = json.loads((out / ".nav.json").read_text())["models"][0]["nav"]
    assert any("predictions.md" in pages for family in nav for pages in family.values())  # still reachable


# ------------------------------------------------------------------------------------------------ the cache


def cache_files(project, suffix: str) -> list:
    return sorted((project / "cache").rglob(f"*{suffix}"))


def job_key(project, technique: str, image: str) -> str:
    return next(j["key"] for j in build_json(project)["jobs"] if j["technique"] == technique and j["image"] == image)


def test_a_torn_cache_entry_is_recomputed_with_a_warning(project, capsys):
    path = write_spec(project, tiny_spec())
    assert cli("build", path) == 0
    key = job_key(project, "predictions", "pics/a")
    npz = next(f for f in cache_files(project, ".npz") if f.stem == key)
    npz.write_bytes(npz.read_bytes()[: len(npz.read_bytes()) // 2])  # a write cut off half-way
    bad_json = next(f for f in cache_files(project, ".json") if f.stem == job_key(project, "predictions", "pics/b"))
    bad_json.write_text("{}")  # valid JSON, not an entry
    capsys.readouterr()
    assert cli("build", path) == 0
    err = capsys.readouterr().err
    assert err.count("warning: cache entry") == 2 and "recomputed" in err
    ran = sorted((j["technique"], j["image"]) for j in build_json(project)["jobs"] if j["status"] == "ran")
    assert ran == [("predictions", "pics/a"), ("predictions", "pics/b")]  # only those two; the rest from the cache


# ------------------------------------------------------------------------------------------------ the disk


def snapshot(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_full_disk_stops_the_build_in_one_line_and_keeps_the_previous_report(project, monkeypatch, capsys):
    import errno

    from generator import outputs

    path = write_spec(project, tiny_spec())
    assert cli("build", path) == 0
    before = snapshot(project / "out")

    def full(file, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(file))

    monkeypatch.setattr(outputs, "write_arrays", full)
    capsys.readouterr()
    assert cli("build", path, "--force") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("error: ") and "No space left on device" in err[-1]
    assert ".npz" in err[-1] and "left as they were" in err[-1]  # names the file it could not write
    assert snapshot(project / "out") == before
    assert not [p for p in project.iterdir() if p.name.startswith(".out.")]  # no staging folder left behind
    monkeypatch.undo()


def test_a_read_only_output_folder_is_one_line_naming_it(project, monkeypatch, capsys):
    import errno

    def read_only(prefix, parent):
        raise OSError(errno.EROFS, "Read-only file system", str(parent))

    path = write_spec(project, tiny_spec())
    assert cli("build", path) == 0
    before = snapshot(project / "out")
    monkeypatch.setattr(buildlib, "staging_folder", read_only)
    capsys.readouterr()
    assert cli("build", path) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: {project}: cannot write (Read-only file system); the previous report and site were " \
                      "left as they were"
    assert snapshot(project / "out") == before


# ------------------------------------------------------------------------------------------------ two builds at once


def test_a_second_build_on_the_same_cache_waits_for_the_first(project):
    import subprocess
    import sys
    import time

    from filelock import FileLock

    path = write_spec(project, tiny_spec())
    held = FileLock(project / ".convscope-cache.lock")  # what a first build on this cache holds
    held.acquire()
    proc = subprocess.Popen([sys.executable, "-m", "generator", "build", str(path)], cwd=project,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        first = proc.stderr.readline()
        assert first.startswith("waiting: another build is writing"), first
        time.sleep(1.0)
        assert proc.poll() is None and not (project / "out").exists()  # it waits: nothing written meanwhile
    finally:
        held.release()
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    assert (project / "out" / "tiny" / "predictions.md").is_file()


# ------------------------------------------------------------------------------------------------ hostile inputs


def test_a_decompression_bomb_is_refused_in_one_line(project, monkeypatch, capsys):
    from PIL import Image

    Image.new("L", (100, 100)).save(project / "pics" / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)  # 100 × 100 declares twice the limit; the others are 48 × 40
    spec = tiny_spec()
    spec["images"]["pics"].append("pics/big.png")
    assert cli("validate", write_spec(project, spec)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "images.pics[2]" in err[0] and "big.png" in err[0] and "decompression bomb" in err[0]


def test_a_one_pixel_and_a_20000_pixel_wide_image_are_reports_like_any(project):
    import numpy as np
    from PIL import Image

    Image.new("RGB", (1, 1), (200, 30, 30)).save(project / "pics" / "dot.png")
    wide = np.random.default_rng(0).integers(0, 256, (30, 20000, 3), dtype=np.uint8)
    Image.fromarray(wide).save(project / "pics" / "wide.png")
    spec = tiny_spec(techniques={"predictions": {}, "saliency": {}, "occlusion": {}})
    spec["images"]["pics"] = ["pics/dot.png", "pics/wide.png"]
    assert cli("build", write_spec(project, spec)) == 0
    assert all(j["status"] == "ran" for j in build_json(project)["jobs"])


NANMOD = '''
import torch
from torch import nn


class Broken(nn.Module):
    """A convolution whose logits are NaN: what a diverged training run leaves behind."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.relu = nn.ReLU()
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = self.relu(self.conv(x)).mean((2, 3))
        return self.head(h) * float("nan")


def build():
    return Broken()
'''


def test_a_model_with_nan_logits_fails_its_jobs_saying_so(project):
    (project / "nanmod.py").write_text(NANMOD)
    spec = tiny_spec(factory="nanmod:build", layers=["relu"],
                     techniques={"predictions": {}, "saliency": {}, "gradcam": {"layer": "relu"}})
    assert cli("build", write_spec(project, spec)) == 1
    jobs = build_json(project)["jobs"]
    failed = [j for j in jobs if j["technique"] in ("predictions", "saliency", "gradcam")]
    assert failed and all(j["status"] == "failed" and "NaN or infinite logits" in j["error"] for j in failed)
    page = (project / "out" / "tiny" / "predictions.md").read_text()
    assert "NaN or infinite logits" in page and ".png" not in page  # no figure drawn from NaN


def test_an_alias_bomb_is_refused_before_it_is_walked(project, capsys):
    levels = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    text = "\n".join(levels) + "\nmodels:\n  - name: m\n    factory: x:y\n    kwargs: {bomb: *i}\n"
    (project / "bomb.yml").write_text(text)
    assert cli("validate", project / "bomb.yml") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "926,177,110 values" in err[0] and "alias" in err[0]


def test_files_outside_the_spec_s_folder_are_allowed_and_resolved_from_it(project, tmp_path_factory):
    """A spec may name files anywhere (`..`, absolute paths, symlinks), like any command-line tool run by its user;
    relative paths are read from the spec's folder, and the page names the file as written in the spec."""
    from PIL import Image

    elsewhere = tmp_path_factory.mktemp("elsewhere")
    Image.new("RGB", (20, 20), (0, 90, 200)).save(elsewhere / "blue.png")
    (project / "pics" / "link.png").symlink_to(elsewhere / "blue.png")
    spec = tiny_spec()
    spec["images"]["pics"] = [f"../{elsewhere.name}/blue.png", "pics/link.png"]
    assert cli("build", write_spec(project, spec)) == 0
    assert {j["image"] for j in build_json(project)["jobs"] if j["image"]} == {"pics/blue", "pics/link"}


# ------------------------------------------------------------------------------------------------ supply chain


def test_the_torch_floor_has_no_known_weights_only_bypass_and_the_makefile_pins_satisfy_it():
    import re
    import tomllib
    from pathlib import Path

    from packaging.requirements import Requirement

    root = Path(__file__).resolve().parent.parent
    deps = {Requirement(d).name: Requirement(d) for d in
            tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]}
    floor = next(s.version for s in deps["torch"].specifier if s.operator == ">=")
    assert tuple(int(p) for p in floor.split(".")[:2]) >= (2, 6)  # CVE-2025-32434: torch.load(weights_only=True) RCE
    pins = dict(re.findall(r"(torch|torchvision)==([\d.]+)", (root / "Makefile").read_text()))
    assert set(pins) == {"torch", "torchvision"}
    for name, version in pins.items():
        assert deps[name].specifier.contains(version), (name, version, str(deps[name].specifier))


# ------------------------------------------------------------------------------------------------ killed builds


def kill_when(project, spec_path, ready, *extra) -> None:
    """Start a build in a subprocess and SIGKILL it as soon as `ready()` is true (or when it ends by itself)."""
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "generator", "build", str(spec_path), *map(str, extra)],
                            cwd=project, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)


def test_a_build_killed_at_any_stage_leaves_the_previous_report_and_a_readable_cache(project, capsys):
    """SIGKILL during the jobs, during figures and pages (the staging folder exists), and during the MkDocs step;
    after each, the previous output and site are intact, and the next build reads every cache entry (no torn one),
    reruns only what no killed build finished, and completes."""
    (project / "mkdocs.yml").write_text("site_name: t\ndocs_dir: docs\n")
    (project / "docs").mkdir()
    (project / "docs" / "index.md").write_text("# t\n")
    spec = tiny_spec(techniques={"predictions": {}, "filters": {}, "activations": {}, "saliency": {},
                                 "integrated_gradients": {"steps": 16}, "occlusion": {}, "gradcam": {}})
    spec["output"] = "docs/out"
    path = write_spec(project, spec)
    assert cli("build", path, "--site", project / "site") == 0
    out, site = project / "docs" / "out", project / "site"
    before_out, before_site = snapshot(out), snapshot(site)
    entries = lambda: len(list((project / "cache").rglob("*.json")))  # noqa: E731
    first = entries()

    spec["models"][0]["techniques"]["occlusion"] = {"window": 8}  # new jobs for the killed builds to start
    spec["models"][0]["techniques"]["integrated_gradients"] = {"steps": 24}
    path = write_spec(project, spec)
    staging = lambda name: any(p.is_dir() for p in (project / name).parent.glob(f".{name.split('/')[-1]}.*"))  # noqa: E731
    kill_when(project, path, lambda: entries() > first)  # during the jobs: some new results cached
    assert snapshot(out) == before_out and snapshot(site) == before_site
    kill_when(project, path, lambda: staging("docs/out"))  # during figures and pages
    assert snapshot(out) == before_out and snapshot(site) == before_site
    kill_when(project, path, lambda: staging("site"), "--site", project / "site")  # during mkdocs
    assert snapshot(site) == before_site
    assert (out / "build.json").is_file()  # the output was replaced whole, or not at all

    capsys.readouterr()
    assert cli("build", path, "--site", project / "site") == 0
    assert "warning: cache entry" not in capsys.readouterr().err  # nothing torn was ever read
    jobs = json.loads((out / "build.json").read_text())["jobs"]
    ran = [j for j in jobs if j["status"] == "ran"]
    assert all(j["technique"] in ("occlusion", "integrated_gradients") for j in ran)  # only the changed ones
    assert len(ran) < 4  # the killed builds had already cached some of those four jobs
    assert not [p for p in (project / "docs").iterdir() if p.name.startswith(".out.")]
    assert not [p for p in project.iterdir() if p.name.startswith(".site.")]
    assert (site / "out" / "tiny" / "occlusion" / "index.html").is_file()  # the new site is in place


# ------------------------------------------------------------------------------------------------ large data sets


def test_the_feature_pass_memory_does_not_grow_with_the_data_set(tmp_path):
    """The pass keeps each layer's per-image vectors in memory-mapped files, written batch by batch: the memory it
    allocates is one batch's, whether the data set has 200 images or 2,000 (Python and NumPy allocations, traced)."""
    import tracemalloc

    import numpy as np
    import torch
    from PIL import Image

    from generator.datasets import Dataset
    from generator.techniques.dataset.feature_pass import FeatureStore
    from helpers import make_context, tiny_net

    ctx = make_context(tiny_net(), {})
    rng = np.random.default_rng(0)
    pictures = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(16)]

    def peak(n: int) -> int:
        data = Dataset(f"d{n}", "synthetic", ["a", "b"], np.arange(n) % 2, [str(i) for i in range(n)], f"digest{n}",
                       lambda i: pictures[i % 16])
        store = FeatureStore(ctx.model, data, tmp_path / f"cache{n}", ["conv1", "relu2"], batch_size=50)
        tracemalloc.start()
        with torch.no_grad():
            store.extract([])
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert store.layer("relu2").vectors.shape[0] == n
        return peak

    small, large = peak(200), peak(2000)
    assert large < 1.5 * small + 200_000, (small, large)  # ten times the images, about the same memory


def test_labels_with_jinja_syntax_are_shown_not_run(project):
    """Labels with Markdown and HTML are escaped (tests/test_site.py checks the pages and the site); labels that look
    like Jinja are text too: the page shows them, it does not evaluate them."""
    labels = ["{{ 7 * 7 }}", "{% if true %}yes{% endif %}", "{# hidden #}", "plain"]
    spec = tiny_spec(labels=labels, techniques={"predictions": {"top_k": 4}})
    assert cli("build", write_spec(project, spec)) == 0
    page = (project / "out" / "tiny" / "predictions.md").read_text()
    assert r"\{\{ 7 \* 7 \}\}" in page and "| 49 |" not in page
    assert r"\{% if true %\}yes\{% endif %\}" in page and r"\{\# hidden \#\}" in page
