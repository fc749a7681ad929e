"""Figures drawn in worker processes are the figures drawn here, byte for byte, and a figure that fails in a worker
is a failure on its page, as when drawn here."""
from __future__ import annotations

import hashlib

import numpy as np

from helpers import cli, read_json, tiny_spec, write_spec
from generator import drawing
from generator.techniques.activations import Activations


def figures_of(out) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*.png"))}


def test_workers_draw_the_same_figures(project, monkeypatch):
    path = write_spec(project, tiny_spec())
    monkeypatch.setattr(drawing, "MIN_FIGURES", 10_000)  # all drawn here
    assert cli("build", path) == 0
    here = figures_of(project / "out")
    monkeypatch.setattr(drawing, "MIN_FIGURES", 1)  # all drawn by two workers
    assert cli("build", path, "--force") == 0
    assert figures_of(project / "out") == here and len(here) >= 8
    assert {j["status"] for j in read_json(project / "out" / "build.json")["jobs"]} == {"ran"}


def test_a_figure_failing_in_a_worker_fails_alone(project, monkeypatch):
    monkeypatch.setattr(drawing, "MIN_FIGURES", 1)
    monkeypatch.setattr(drawing, "cores", lambda: 2)
    real_run = Activations.run

    def run(self, ctx, jobs):  # here, not in the workers: they get artifacts their unpatched draw() cannot draw
        arts = real_run(self, ctx, jobs)
        for art in arts:
            first = next(iter(art.arrays))
            art.arrays[first] = np.zeros(3, np.float32)
        return arts

    monkeypatch.setattr(Activations, "run", run)
    assert cli("build", write_spec(project, tiny_spec())) == 1
    build = read_json(project / "out" / "build.json")
    failed = [j for j in build["jobs"] if j["status"] == "failed"]
    assert {j["technique"] for j in failed} == {"activations"} and len(failed) == 4
    assert all(j["error"].startswith("drawing the figure: ") for j in failed)
    assert (project / "out" / "tiny" / "filters.md").is_file()
