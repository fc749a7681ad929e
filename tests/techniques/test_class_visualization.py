"""Class visualization: the target's probability rises above 0.9 from a random start on the embedded model; the three
methods run batched over classes; seeds make runs repeat; unknown classes are spec errors."""
from __future__ import annotations

import numpy as np
import torch

from gradnets import act_net, assert_same_state, make_ctx, model_state, render_page
from generator.context import RunContext
from generator.models import ModelLoader
from generator.spec import Spec
from generator.techniques import registry
from generator.techniques.base import Job


def visualize(ctx, **kw):
    technique = registry.get("class_visualization")
    return technique.run(ctx, [Job(ctx.model.name, "class_visualization", technique.Params(**kw))])[0]


def test_the_embedded_model_sees_its_class_in_the_fourier_image():
    spec = Spec.parse({"models": [{"name": "lite", "builtin": "efficientnet-lite0"}]})
    ctx = RunContext(ModelLoader(spec, torch.device("cpu")).load(0), {})
    art = visualize(ctx, classes=["goldfish"], size=128, pixel_steps=8)  # the default Fourier budget
    fourier = art.meta["methods"]["fourier"]
    assert fourier["before"][0] < 0.01 and fourier["after"][0] > 0.9
    assert fourier["steps"] == registry.get("class_visualization").Params().steps


def test_all_methods_batched_over_classes_and_repeatable():
    ctx = make_ctx(act_net(), images=2)
    before = model_state(ctx.model.module)
    art = visualize(ctx, classes=["cat", "car", 3], size=32, steps=30, pixel_steps=20, snapshots=[0, 10, 30])
    assert_same_state(before, model_state(ctx.model.module))
    assert [c["label"] for c in art.meta["classes"]] == ["cat", "car", "tree"]
    for name in ("plain", "regularized", "fourier"):
        assert art.arrays[name].shape == (3, 3, 32, 32)
        m = art.meta["methods"][name]
        assert all(a > b for a, b in zip(m["after"], m["before"])), name  # every class's probability rose
    assert art.arrays["progress"].shape == (3, 3, 3, 32, 32) and art.meta["progress_steps"] == [0, 10, 30]
    again = visualize(ctx, classes=["cat", "car", 3], size=32, steps=30, pixel_steps=20, snapshots=[0, 10, 30])
    np.testing.assert_array_equal(again.arrays["fourier"], art.arrays["fourier"])


def test_default_classes_are_the_images_top_classes():
    ctx = make_ctx(act_net(), images=2)
    with torch.no_grad():
        top = ctx.model.logits(ctx.batch(list(ctx.images))).argmax(1).tolist()
    art = visualize(ctx, size=32, steps=2, pixel_steps=2, snapshots=[0])
    assert [c["index"] for c in art.meta["classes"]] == list(dict.fromkeys(top))


def test_unknown_class_is_an_error_with_a_suggestion():
    ctx = make_ctx(act_net())
    technique = registry.get("class_visualization")
    assert technique.check(ctx.model, technique.Params(classes=["cat", "dgo"])) == [
        "classes[1]: no class 'dgo' in tiny; did you mean 'dog'?"]
