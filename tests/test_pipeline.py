"""plan() expands techniques over layers and images with content keys; execute() caches, batches and isolates."""
from __future__ import annotations

import typing

import numpy as np
import pytest
from PIL import Image

from helpers import make_context, tiny_net
from generator.cache import Cache
from generator.errors import one_line
from generator.pipeline import execute, plan
from generator.techniques import registry
from generator.techniques.activations import ActivationsParams
from generator.artifacts import Artifact, Expansion, Reads
from generator.techniques.predictions import Predictions, PredictionsParams


@pytest.fixture
def ctx():
    rng = np.random.default_rng(0)
    pics = {n: Image.fromarray(rng.integers(0, 200, (36, 36, 3), dtype=np.uint8)) for n in ("a", "b", "c")}
    context = make_context(tiny_net(), pics)
    context.model.layers = ["conv1", "relu2"]
    return context


def planned(ctx, params, digests=None):
    ids = list(ctx.images)
    return plan(ctx.model, params, ids, digests or {i: r.digest for i, r in ctx.images.items()})


def test_plan_expands_by_scope(ctx):
    jobs = planned(ctx, {"predictions": PredictionsParams(), "activations": ActivationsParams()})
    shape = [(j.kind, j.layer, j.image) for j in jobs]
    ids = ["s/a", "s/b", "s/c"]
    assert shape == (
        [("input", None, i) for i in ids] + [("architecture", None, None)]
        + [("predictions", None, i) for i in ids]
        + [("activations", layer, i) for layer in ("conv1", "relu2") for i in ids]
    )
    assert len({j.key for j in jobs}) == len(jobs)


def test_keys_depend_on_what_the_result_depends_on(ctx):
    base = {j.label: j.key for j in planned(ctx, {"predictions": PredictionsParams()})}
    again = {j.label: j.key for j in planned(ctx, {"predictions": PredictionsParams()})}
    assert base == again
    other_k = {j.label: j.key for j in planned(ctx, {"predictions": PredictionsParams(top_k=2)})}
    assert {l for l in base if base[l] != other_k[l]} == {l for l in base if l.split(" · ")[1] == "predictions"}
    digests = {i: r.digest for i, r in ctx.images.items()} | {"s/b": "another picture"}
    other_b = {j.label: j.key for j in planned(ctx, {"predictions": PredictionsParams()}, digests)}
    assert {l for l in base if base[l] != other_b[l]} == {"m · input · s/b", "m · predictions · s/b"}
    ctx.model.digest = "other weights"
    assert all(base[j.label] != j.key for j in planned(ctx, {"predictions": PredictionsParams()}))


def test_keys_cover_the_chosen_layers_where_a_result_reads_them(ctx):
    from generator.techniques.synthesis.feature_inversion import FeatureInversionParams

    def keys(**params):
        return {j.label: j.key for j in planned(ctx, {"feature_inversion": FeatureInversionParams(**params)})
                if j.kind == "feature_inversion"}

    default, named = keys(), keys(layers=["conv1"])
    ctx.model.layers = ["relu2"]
    assert all(default[l] != k for l, k in keys().items())  # inverted at the model's layers: they changed
    assert keys(layers=["conv1"]) == named  # the layers it names did not


def test_execute_batches_caches_and_isolates(ctx, tmp_path, monkeypatch):
    calls = []
    real = Predictions.run

    def run(self, c, jobs):
        calls.append([j.image for j in jobs])
        if any(j.image == "s/b" for j in jobs):
            raise RuntimeError("bad b")
        return real(self, c, jobs)

    monkeypatch.setattr(Predictions, "run", run)
    jobs = [j for j in planned(ctx, {"predictions": PredictionsParams()}) if j.kind == "predictions"]
    cache = Cache(tmp_path)
    results = execute(jobs, {"m": ctx}, cache)
    assert [(r.job.image, r.status) for r in results] == [("s/a", "ran"), ("s/b", "failed"), ("s/c", "ran")]
    assert results[1].error == "RuntimeError: bad b" and results[1].artifact is None
    # one batched call, then each job alone to find the one at fault
    assert calls == [["s/a", "s/b", "s/c"], ["s/a"], ["s/b"], ["s/c"]]
    assert cache.get(jobs[0].key) is not None and cache.get(jobs[1].key) is None
    calls.clear()
    again = execute(jobs, {"m": ctx}, cache)
    assert [r.status for r in again] == ["cached", "failed", "cached"]
    assert calls == [["s/b"]]
    assert np.array_equal(again[0].artifact.main, results[0].artifact.main)


def test_execute_leaves_out_jobs_that_may_not_run(ctx, tmp_path):
    jobs = [j for j in planned(ctx, {"predictions": PredictionsParams()}) if j.kind in ("input", "predictions")]
    results = execute(jobs, {"m": ctx}, Cache(tmp_path), runnable=lambda j: j.kind == "input")
    assert [(r.job.kind, r.status) for r in results] == [("input", "ran")] * 3


def test_wrong_result_count_is_a_failure(ctx, tmp_path, monkeypatch):
    monkeypatch.setattr(Predictions, "run", lambda self, c, jobs: [Artifact({"x": np.zeros(1)})])
    jobs = [j for j in planned(ctx, {"predictions": PredictionsParams()}) if j.kind == "predictions"]
    results = execute(jobs, {"m": ctx}, Cache(tmp_path))
    # alone, each job gets its one artifact: the batch error is not blamed on every job
    assert [r.status for r in results] == ["ran", "ran", "ran"]


def test_one_line():
    assert one_line(ValueError("a\nb")) == "ValueError: a"
    assert one_line(KeyError()) == "KeyError"


def test_registry_lists_every_technique_once():
    kinds = list(registry.TECHNIQUES)
    assert len(kinds) == len(set(kinds))
    assert {"input", "architecture"} == set(registry.core())
    assert set(registry.selectable()) == set(kinds) - {"input", "architecture"}
    for kind, t in registry.TECHNIQUES.items():
        assert t.kind == kind and t.title and t.summary
        assert t.scope.over in typing.get_args(Expansion) and t.scope.dataset in ("none", "needs", "follows")


def test_occlusion_with_mean_fill_is_keyed_on_the_whole_image_set(ctx):
    from generator.techniques.attribution.occlusion import OcclusionParams
    from generator.techniques.attribution.saliency import SaliencyParams

    params = {"occlusion": OcclusionParams(window=8, fill="mean"), "saliency": SaliencyParams()}
    before = {(j.kind, j.image): j.key for j in planned(ctx, params)}
    ids = list(ctx.images)[:2]  # one image fewer in the set: the mean colour changes
    digests = {i: r.digest for i, r in ctx.images.items()}
    after = {(j.kind, j.image): j.key for j in plan(ctx.model, params, ids, digests)}
    assert after[("occlusion", ids[0])] != before[("occlusion", ids[0])]
    assert after[("saliency", ids[0])] == before[("saliency", ids[0])]
    zero = {"occlusion": OcclusionParams(window=8, fill="zero")}
    k1 = {j.image: j.key for j in planned(ctx, zero) if j.kind == "occlusion"}
    k2 = {j.image: j.key for j in plan(ctx.model, zero, ids, digests) if j.kind == "occlusion"}
    assert k1[ids[0]] == k2[ids[0]]


class _SourcesParams(PredictionsParams):
    sources: list[str] = ["tex"]
    styles: list[str] = []


class _FromSets(Predictions):
    """A technique whose jobs run over an image set it names, reading another set besides."""

    kind = "from_sets"
    Params = _SourcesParams

    def reads(self, params):
        return Reads(image_sets=tuple(params.sources), references=tuple(params.styles))


def test_techniques_can_name_their_own_image_sets(ctx, monkeypatch):
    monkeypatch.setitem(registry.TECHNIQUES, "from_sets", _FromSets())
    own = ["s/a"]
    sets = {"tex": ["s/b", "s/c"], "style": ["s/c"]}
    digests = {i: r.digest for i, r in ctx.images.items()}
    jobs = plan(ctx.model, {"from_sets": _SourcesParams(), "predictions": PredictionsParams()}, own, digests, sets=sets)
    assert [j.image for j in jobs if j.kind == "from_sets"] == ["s/b", "s/c"]
    assert [j.image for j in jobs if j.kind == "predictions"] == own
    # The images a job reads beside its own join its key, and only that technique's keys.
    styled = _SourcesParams(styles=["style"])
    key = {j.image: j.key for j in plan(ctx.model, {"from_sets": styled}, own, digests, sets=sets)
           if j.kind == "from_sets"}
    changed = {j.image: j.key for j in plan(ctx.model, {"from_sets": styled}, own, digests | {"s/c": "new"},
                                            sets=sets) if j.kind == "from_sets"}
    assert key["s/b"] != changed["s/b"]
