"""Whole builds: a failing job is isolated and shown, and a crash never leaves the output folder half written."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from helpers import cli, read_json, tiny_spec, write_spec
from generator import build as buildlib
from generator import report
from generator.techniques.predictions import Predictions


def snapshot(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def jobs_of(project) -> list[dict]:
    return read_json(project / "out" / "build.json")["jobs"]


def test_build_writes_pages_figures_and_records(project, capsys):
    assert cli("build", write_spec(project, tiny_spec())) == 0
    # not a terminal: the log has a line per technique as it finishes, and one per stage
    log = capsys.readouterr().err.splitlines()
    assert [line.split(" ", 2)[:2] for line in log if line.startswith("[")] == [
        ["[1/5]", "tiny"], ["[2/5]", "tiny"], ["[3/5]", "tiny"], ["[4/5]", "tiny"], ["[5/5]", "tiny"], ["[1/1]", "tiny"]]
    assert "[5/5] tiny activations 4/4, " in log[5]
    assert [line.split(":")[0] for line in log if ": done in " in line] == ["jobs", "figures"]
    out = project / "out"
    assert (out / "index.md").is_file()
    for page in ("index", "predictions", "filters", "activations"):
        assert (out / "tiny" / f"{page}.md").is_file(), page
    build = read_json(out / "build.json")
    assert build["device"] == "cpu" and build["quick"] is False
    assert list(build["stages"]) == ["prepare", "jobs", "figures", "pages"]
    assert all(0 <= v <= build["seconds"] for v in build["stages"].values())
    assert {(j["technique"], j["layer"], j["image"]) for j in build["jobs"]} == {
        ("input", None, "pics/a"), ("input", None, "pics/b"), ("architecture", None, None),
        ("predictions", None, "pics/a"), ("predictions", None, "pics/b"),
        ("filters", "conv1", None), ("filters", "conv2", None),
        ("activations", "conv1", "pics/a"), ("activations", "conv1", "pics/b"),
        ("activations", "relu2", "pics/a"), ("activations", "relu2", "pics/b"),
    }
    assert all(j["status"] == "ran" and j["error"] is None and j["key"] for j in build["jobs"])
    # no staging folders left beside the output
    assert not [p.name for p in project.iterdir() if p.name.startswith(".out")]
    # the output is as readable as any folder the user makes (not private like a temporary folder)
    (project / "plain").mkdir()
    assert (out.stat().st_mode & 0o777) == ((project / "plain").stat().st_mode & 0o777)


def test_unknown_model_or_technique_in_options(project, capsys):
    path = write_spec(project, tiny_spec())
    assert cli("build", path, "--models", "tiyn") == 2
    assert "did you mean 'tiny'?" in capsys.readouterr().err
    assert cli("build", path, "--only", "filter") == 2
    assert "did you mean 'filters'?" in capsys.readouterr().err
    assert not (project / "out").exists()


def bright_image(path):
    Image.fromarray(np.full((40, 48, 3), 255, dtype=np.uint8)).save(path)


def test_a_model_failing_on_one_image_fails_only_those_jobs(project, capsys):
    bright_image(project / "pics" / "b.png")  # TripNet raises on this one only
    spec = tiny_spec(factory="tinymod:build_tripwire", layers=["net.conv1", "net.relu2"])
    assert cli("build", write_spec(project, spec)) == 1
    jobs = jobs_of(project)
    failed = [j for j in jobs if j["status"] == "failed"]
    assert {(j["technique"], j["layer"], j["image"]) for j in failed} == {
        ("predictions", None, "pics/b"), ("activations", "net.conv1", "pics/b"), ("activations", "net.relu2", "pics/b"),
    }
    for j in failed:
        assert j["error"] == "ValueError: tripwire: this input is too bright"
    assert all(j["status"] == "ran" for j in jobs if j not in failed)
    assert {j["technique"] for j in jobs if j["status"] == "ran"} == {
        "input", "architecture", "predictions", "filters", "activations"}
    # the other image's results are all there
    manifest = read_json(project / "out" / "manifest.json")["artifacts"]
    assert {(r["technique"], r["image"]) for r in manifest if r["image"] == "pics/a"} == {
        ("input", "pics/a"), ("predictions", "pics/a"), ("activations", "pics/a")}
    assert not [r for r in manifest if r["image"] == "pics/b" and r["technique"] != "input"]
    # each page shows its failures where the figures would be; the index lists them all
    predictions = (project / "out" / "tiny" / "predictions.md").read_text()
    assert predictions.count("tripwire: this input is too bright") == 1
    activations = (project / "out" / "tiny" / "activations.md").read_text()
    assert activations.count("tripwire: this input is too bright") == 2
    index = (project / "out" / "index.md").read_text()
    assert index.count("tripwire: this input is too bright") == 3
    # and the console says so
    err = capsys.readouterr().err
    assert "tripwire" in err


def test_a_technique_raising_for_one_image_is_isolated(project, monkeypatch):
    real_run = Predictions.run

    def run(self, ctx, jobs):
        if any(j.image == "pics/b" for j in jobs):
            raise RuntimeError("simulated failure on b\nwith a second line")
        return real_run(self, ctx, jobs)

    monkeypatch.setattr(Predictions, "run", run)
    assert cli("build", write_spec(project, tiny_spec())) == 1
    by_key = {(j["technique"], j["image"]): j for j in jobs_of(project)}
    bad = by_key[("predictions", "pics/b")]
    assert bad["status"] == "failed" and bad["error"] == "RuntimeError: simulated failure on b"
    assert by_key[("predictions", "pics/a")]["status"] == "ran"
    assert sum(j["status"] == "failed" for j in jobs_of(project)) == 1
    page = (project / "out" / "tiny" / "predictions.md").read_text()
    assert "RuntimeError: simulated failure on b" in page
    # a failed job is not cached: the next build (without the fault) runs it, and only it
    monkeypatch.setattr(Predictions, "run", real_run)
    assert cli("build", write_spec(project, tiny_spec())) == 0
    ran = [(j["technique"], j["image"]) for j in jobs_of(project) if j["status"] == "ran"]
    assert ran == [("predictions", "pics/b")]


def test_a_figure_that_fails_to_draw_is_a_failed_job(project, monkeypatch):
    def draw(self, art, job, env, path):
        raise ValueError("cannot draw this")

    monkeypatch.setattr(Predictions, "draw", draw)
    assert cli("build", write_spec(project, tiny_spec())) == 1
    failed = [j for j in jobs_of(project) if j["status"] == "failed"]
    assert {j["technique"] for j in failed} == {"predictions"} and len(failed) == 2
    assert all("cannot draw this" in j["error"] for j in failed)
    assert "cannot draw this" in (project / "out" / "tiny" / "predictions.md").read_text()


def test_a_crash_while_writing_leaves_the_old_output_intact(project, monkeypatch):
    path = write_spec(project, tiny_spec())
    assert cli("build", path) == 0
    out = project / "out"
    before = snapshot(out)
    assert "tiny/predictions.md" in before and "manifest.json" in before

    def crash(folder, *args, **kwargs):
        (folder / "index.md").write_text("half written")
        (folder / "tiny").mkdir(exist_ok=True)
        (folder / "tiny" / "predictions.md").write_text("half written")
        raise RuntimeError("simulated crash mid-write")

    # the build calls write_pages by the name it imported; patch both places
    monkeypatch.setattr(buildlib, "write_pages", crash)
    monkeypatch.setattr(report, "write_pages", crash)
    spec = tiny_spec()
    spec["models"][0]["techniques"]["predictions"]["top_k"] = 2  # something would change
    with pytest.raises(RuntimeError, match="simulated crash"):
        cli("build", write_spec(project, spec), "--force")
    assert snapshot(out) == before
    leftovers = [p.name for p in project.iterdir() if p.name.startswith(".out")]
    assert leftovers == []


def test_a_failed_site_build_keeps_the_old_site(project):
    site = project / "site"
    site.mkdir()
    (site / "index.html").write_text("old site")
    (project / "mkdocs.yml").write_text("site_name: x\ndocs_dir: nowhere\n")  # no such docs folder
    assert cli("build", write_spec(project, tiny_spec()), "--site", site) == 1
    assert (site / "index.html").read_text() == "old site"
    assert [p.name for p in site.iterdir()] == ["index.html"]
    assert not [p.name for p in project.iterdir() if p.name.startswith(".site")]
    assert (project / "out" / "index.md").is_file()  # the pages themselves were written


def test_a_technique_runs_over_the_image_set_it_names(project, capsys):
    spec = tiny_spec(images=["pics"], techniques={"texture_synthesis_nonparametric": {
        "images": ["tex"], "scale": 24, "source_size": 16, "size": 16, "window": 5}})
    spec["images"]["tex"] = ["pics/b.png"]
    assert cli("build", write_spec(project, spec)) == 0
    jobs = read_json(project / "out" / "build.json")["jobs"]
    assert [j["image"] for j in jobs if j["technique"] == "texture_synthesis_nonparametric"] == ["tex/b"]
    assert [j["image"] for j in jobs if j["technique"] == "input"] == ["pics/a", "pics/b"]
    spec["models"][0]["techniques"]["texture_synthesis_nonparametric"]["images"] = ["texture"]
    assert cli("build", write_spec(project, spec)) == 2
    assert ("models[0].techniques.texture_synthesis_nonparametric.images: no image set 'texture'; "
            "did you mean 'tex'?") in capsys.readouterr().err


TANHMOD = '''
import torch
from torch import nn


def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.Tanh(), nn.Conv2d(6, 8, 3, padding=1), nn.Tanh(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
'''


def test_a_technique_that_does_not_apply_says_why_on_its_page(project):
    """No rectifier: guided backprop would be the plain gradient under another name. It runs no job and fails none;
    its page gives the reason, and the model page lists it. (A data-set view named in a spec without a data set is
    the spec's error instead: asked for by name, it is a mistake, not a fact about the model.)"""
    (project / "tanhmod.py").write_text(TANHMOD, encoding="utf-8")
    spec = tiny_spec(factory="tanhmod:build", layers=["1", "3"],
                     techniques={"saliency": {"faithfulness": False, "sanity": False},
                                 "guided_backprop": {}, "guided_gradcam": {}})
    assert cli("build", write_spec(project, spec)) == 0
    jobs = jobs_of(project)
    assert {j["technique"] for j in jobs} == {"input", "architecture", "saliency"}
    assert all(j["status"] == "ran" for j in jobs)
    out = project / "out" / "tiny"
    for kind in ("guided_backprop", "guided_gradcam"):
        text = (out / f"{kind}.md").read_text()
        assert "Does not apply to tiny" in text and "calls no rectifier" in text, kind
    overview = (out / "index.md").read_text()
    assert overview.count("does not apply:") == 2 and "(saliency.md)" in overview


def test_a_result_that_did_not_reach_its_goal_is_counted_and_listed(project, monkeypatch):
    """A technique marks what it did not achieve in meta['unmet']: the page lists it under a warning, the model
    page and the index count it."""
    original = Predictions.run

    def unmet_on_b(self, ctx, jobs):
        arts = original(self, ctx, jobs)
        for job, art in zip(jobs, arts):
            if job.image == "pics/b":
                art.meta["unmet"] = ["the top class stayed below 0.5"]
        return arts

    monkeypatch.setattr(Predictions, "run", unmet_on_b)
    assert cli("build", write_spec(project, tiny_spec())) == 0
    out = project / "out"
    page = (out / "tiny" / "predictions.md").read_text()
    assert '!!! warning "1 result(s) on this page did not reach their goal"' in page
    assert "b · the top class stayed below 0.5" in page
    assert "(**1 did not reach the goal**)" in (out / "tiny" / "index.md").read_text()
    index = (out / "index.md").read_text()
    assert "(**1 unmet**)" in index and "| 0 | 1 |" in index
    assert "did not reach" not in (out / "tiny" / "filters.md").read_text()
