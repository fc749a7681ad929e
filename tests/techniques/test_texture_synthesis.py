"""Texture synthesis (Gram matrices): on a tiny net and a torchvision VGG the Gram loss falls, the random filters'
texture is judged closer to the photograph than noise by the model, seeds repeat, the model is left as it was,
bad layers and sizes are errors naming the key, and the page renders."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import act_net, assert_same_state, make_model, model_state, torchvision_net
from generator import images as imagelib
from generator.context import RunContext
from generator.techniques import registry
from generator.artifacts import Job

SMALL = dict(size=40, source_size=64, steps=12, coarse_steps=0, random_kernel_sizes=[3, 5, 9],
             random_filter_count=16)

pytestmark = pytest.mark.usefixtures("one_thread")



def texture_ctx(module, names=("brick",), size: int = 32, layers=None) -> RunContext:
    model = make_model(module, size)
    model.layers = list(layers or [])
    records = {}
    for name in names:
        im = imagelib.sample(f"skimage:{name}").resize((128, 128))
        records[f"t/{name}"] = imagelib.ImageRecord(f"t/{name}", "t", name, name, im, imagelib.digest(im))
    return RunContext(model, records, seed=0)


def run(ctx, **kw):
    technique = registry.get("texture_synthesis")
    p = technique.Params(**{**SMALL, **kw})
    assert technique.check(ctx.model, p) == []
    return technique.run(ctx, [Job("tiny", "texture_synthesis", p, image=i) for i in ctx.images])


def test_layer_sets_and_random_filters_on_a_tiny_net():
    ctx = texture_ctx(act_net(), layers=["act1", "act2"])
    before = model_state(ctx.model.module)
    (art,) = run(ctx, steps=30)
    assert_same_state(before, model_state(ctx.model.module))
    runs = art.meta["runs"]
    # The layer sets with plain Gram matrices, all layers with activation smoothing (SWAG), the random filters.
    assert [(r["network"], r["layers"], r["smoothing"]) for r in runs[:3]] == [
        ("model", ["act1"], False), ("model", ["act1", "act2"], False), ("smoothed", ["act1", "act2"], True)]
    assert runs[3]["label"] == "random multi-scale filters" and art.arrays["results"].shape == (4, 3, 40, 40)
    for r in runs:
        assert r["fall"] >= (0.5 if r["smoothing"] else 0.95), r  # from the noise start
    m = art.metrics
    assert not np.array_equal(art.arrays["results"][1], art.arrays["results"][2])
    assert m["smoothed_by_random"] == pytest.approx(runs[2]["other_result"] / runs[2]["other_noise"])
    # The random filters' texture is closer to the photograph than noise of the photograph's mean and contrast, by
    # the model's statistics and by colour.
    assert runs[3]["other_result"] < 0.3 * runs[3]["other_noise"]
    assert m["hist_random"] < 0.75 * m["hist_noise"]
    assert isinstance(m["pinned"], bool) and 1 <= m["best_set"] <= 2
    again = run(texture_ctx(act_net(), layers=["act1", "act2"]), steps=30)[0]
    np.testing.assert_array_equal(again.arrays["results"], art.arrays["results"])


def test_smoothing_off_leaves_the_plain_runs():
    (art,) = run(texture_ctx(act_net(), layers=["act1", "act2"]), smoothing=False, random_filters=False, steps=4)
    assert [r["network"] for r in art.meta["runs"]] == ["model", "model"]
    assert "smoothed_by_random" not in art.metrics


def test_a_torchvision_vgg_works():
    net = torchvision_net("vgg11")
    ctx = texture_ctx(net, size=32, layers=["features.1", "features.4"])
    (art,) = run(ctx, random_filters=False, size=32, steps=10)
    for r in art.meta["runs"]:
        assert r["gram_end"] < 0.5 * r["gram_start"]


def test_bad_layers_and_sizes_are_errors_naming_the_key():
    technique = registry.get("texture_synthesis")
    model = make_model(act_net(), 32)
    check = lambda **kw: technique.check(model, technique.Params(**{**SMALL, **kw}))  # noqa: E731
    assert check(layers=[]) == ["layers: an empty list; name at least one layer"]
    assert check(layers=["act1", "act3"]) == ["layers[1]: no module 'act3' in tiny; did you mean 'act2'?"]
    assert check() == ["layers: tiny has no chosen layers; list the layers to match"]
    assert check(layers=["act1", "fc"]) == ["layers[1]: 'fc' has no spatial extent (output (4,)); texture "
                                            "synthesis needs layers with spatial maps, such as conv layers'"]
    assert check(layers=["act1"], size=20, random_kernel_sizes=[3, 37])[0].startswith(
        "size: the random filters span up to 37 px")
    assert check(images=[], layers=["act1"])[0].startswith("images: an empty list")
    vgg = make_model(torchvision_net("vgg11"), 16)  # five 2× poolings: nothing is left of 16 px at the fifth
    problem = technique.check(vgg, technique.Params(**{**SMALL, "layers": ["features.1", "features.20"],
                                                       "random_filters": False}))
    assert len(problem) == 1 and problem[0].startswith("size: 16 px is too small for tiny"), problem


def test_page(tmp_path):
    from helpers import render_page

    ctx = texture_ctx(act_net(), layers=["act1", "act2"])
    text = render_page("texture_synthesis", ctx, tmp_path, **{**SMALL, "steps": 3})
    assert "## brick" in text and "figures/texture_synthesis/t--brick.png" in text
    assert "random multi-scale filters" in text and "pin down" in text
    assert "| plain Gram |" in text and "| activation smoothing \\(SWAG\\) |" in text
    assert (tmp_path / "tiny/figures/texture_synthesis/t--brick.png").is_file()
