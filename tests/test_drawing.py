"""Figures drawn in worker processes are the figures drawn here, byte for byte, and a figure that fails in a worker
is a failure on its page, as when drawn here."""
from __future__ import annotations

import hashlib
import shutil

import numpy as np

from helpers import cli, read_json, tiny_spec, write_spec
from generator import drawing, outputs
from generator.techniques.activations import Activations


def figures_of(out) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*"))
            if p.suffix in (".png", ".webp")}


def test_workers_draw_the_same_figures(project, monkeypatch):
    spec = tiny_spec()
    spec["models"][0]["techniques"].update(saliency={"sanity": False}, gradcam={"sanity": False})  # and comparisons
    path = write_spec(project, spec)
    monkeypatch.setattr(drawing, "MIN_FIGURES", 10_000)  # all drawn here
    assert cli("build", path) == 0
    here = figures_of(project / "out")
    monkeypatch.setattr(drawing, "MIN_FIGURES", 1)  # all drawn by two workers
    assert cli("build", path, "--force") == 0
    assert figures_of(project / "out") == here and len(here) >= 8
    assert sum("/figures/comparison/" in f for f in here) == 2
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


ATTRIBUTIONS = {"saliency": {"sanity": False}, "gradcam": {"sanity": False}, "integrated_gradients": {"sanity": False}}


def comparison_figures(out) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "tiny" / "figures" / "comparison").glob("*.*"))}


def test_comparison_figures_drawn_with_the_results_are_redrawn_when_a_result_fails(project, monkeypatch):
    """The comparison figures are handed to the drawer with the results' figures; one whose result then fails to
    draw is drawn again without it: the figure a build without that technique draws."""
    from generator.techniques.attribution.gradcam import GradCAM

    def broken(self, art, job, env, path):
        raise ValueError("no figure today")

    assert cli("build", write_spec(project, tiny_spec(techniques=dict(ATTRIBUTIONS))), "--quick") == 0
    assert len(comparison_figures(project / "out")) == 2
    monkeypatch.setattr(GradCAM, "draw", broken)
    drawn_images = []
    real = outputs._draw_and_publish_comparison
    monkeypatch.setattr(outputs, "_draw_and_publish_comparison",
                        lambda folder, figure, *args: drawn_images.append(figure) or real(folder, figure, *args))
    shutil.rmtree(project / "out")  # drawn again, not copied from the last build
    assert cli("build", write_spec(project, tiny_spec(techniques=dict(ATTRIBUTIONS))), "--quick") == 1
    assert len(drawn_images) == 4 and len(set(drawn_images)) == 2  # each drawn early, then again without gradcam
    failed = comparison_figures(project / "out")
    drawn = read_json(project / "out" / "build.json")
    assert {j["technique"] for j in drawn["jobs"] if j["status"] == "failed"} == {"gradcam"}
    without = {k: v for k, v in ATTRIBUTIONS.items() if k != "gradcam"}
    shutil.rmtree(project / "out")
    assert cli("build", write_spec(project, tiny_spec(techniques=without)), "--quick") == 0
    assert comparison_figures(project / "out") == failed and len(failed) == 2
