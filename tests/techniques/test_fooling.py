"""Fooling images: the target becomes top-1 within the L∞ bound, on the embedded model and every sample photo."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gradnets import act_net, make_ctx, model_state, assert_same_state, render_page, run
from generator import images as imagelib
from generator.context import RunContext
from generator.models import ModelLoader
from generator.spec import Spec
from generator.techniques import registry

PHOTOS = ["skimage:chelsea", "skimage:coffee", "skimage:rocket", "skimage:astronaut", "sklearn:china", "sklearn:flower"]


def test_changes_stay_within_the_bound_and_the_valid_range():
    ctx = make_ctx(act_net(), images=3)
    before = model_state(ctx.model.module)
    arts = run("fooling", ctx, target="tree", epsilon=4, step=1, steps=30)
    assert_same_state(before, model_state(ctx.model.module))
    for art in arts:
        x, d = art.arrays["fooled"], art.arrays["difference"]
        assert x.min() >= 0 and x.max() <= 1
        assert np.abs(d).max() * 255 <= 4 + 1e-3 and art.metrics["linf"] <= 4
        np.testing.assert_allclose(x * 255, np.round(x * 255), atol=1e-3)  # whole grey levels, as shown
        assert art.meta["target"] == "tree"
        assert art.metrics["target_after"] > art.metrics["target_before"]
    again = run("fooling", ctx, target="tree", epsilon=4, step=1, steps=30)
    np.testing.assert_array_equal(again[0].arrays["fooled"], arts[0].arrays["fooled"])


def test_default_target_is_the_least_likely_class():
    ctx = make_ctx(act_net(), images=2)
    with torch.no_grad():
        least = ctx.model.logits(ctx.batch(list(ctx.images))).argmin(1).tolist()
    arts = run("fooling", ctx, steps=2)
    assert [a.meta["target"] for a in arts] == [ctx.model.label(i) for i in least]


def test_unknown_target_is_a_spec_error_with_a_suggestion():
    ctx = make_ctx(act_net())
    technique = registry.get("fooling")
    assert technique.check(ctx.model, technique.Params(target="tre")) == [
        "target: no class 'tre' in tiny; did you mean 'tree'?"]


def test_every_sample_photo_becomes_a_koala_within_8_of_255():
    """The embedded model: each photo's top-1 becomes the target while no pixel moves more than 8 grey levels."""
    spec = Spec.parse({"models": [{"name": "lite", "builtin": "efficientnet-lite0"}]})
    model = ModelLoader(spec, torch.device("cpu")).load(0)
    records = {}
    for entry in PHOTOS:
        im = imagelib.sample(entry)
        records[entry] = imagelib.ImageRecord(entry, "s", entry, entry, im, imagelib.digest(im))
    ctx = RunContext(model, records)
    arts = run("fooling", ctx, target="koala", epsilon=8, steps=40)
    for entry, art in zip(PHOTOS, arts):
        m = art.metrics
        assert m["fooled"] and m["top1_after"] == "koala", entry
        assert m["linf"] <= 8 and m["top1_step"] is not None
        assert m["original_after"] < m["original_before"]


def test_page_shows_the_table_and_figures(tmp_path):
    text = render_page("fooling", make_ctx(act_net(), images=2), tmp_path, target="car", steps=5)
    assert "| p0 |" in text and "car" in text and "figures/fooling/" in text
    assert list((tmp_path / "tiny" / "figures" / "fooling").glob("*.png"))
