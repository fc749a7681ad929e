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
