"""Faults are isolated at every stage: a page, a figure or a page's numbers that raise are reported like a failed job
(the page says so in one sentence, build.json lists it, the exit status is 1) and everything else is written."""
from __future__ import annotations

import json

from helpers import cli, tiny_spec, write_spec
from generator import build as buildlib
from generator import report
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
    assert not (out / "overview.png").exists()
    assert (out / "tiny" / "predictions.md").is_file() and (out / "tiny" / "figures").is_dir()
    assert build_json(project)["failures"] == [{"stage": "figure", "file": "overview.png",
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

    import numpy as np

    from generator import outputs

    path = write_spec(project, tiny_spec())
    assert cli("build", path) == 0
    before = snapshot(project / "out")

    def full(file, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(file))

    monkeypatch.setattr(outputs.np, "save", full)
    capsys.readouterr()
    assert cli("build", path, "--force") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("error: ") and "No space left on device" in err[-1]
    assert ".npy" in err[-1] and "left as they were" in err[-1]  # names the file it could not write
    assert snapshot(project / "out") == before
    assert not [p for p in project.iterdir() if p.name.startswith(".out.")]  # no staging folder left behind
    monkeypatch.setattr(outputs.np, "save", np.save)


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
