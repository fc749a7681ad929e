"""Texture synthesis (Gram matrices): on a tiny net and a torchvision VGG the Gram loss falls, the random filters'
texture is judged closer to the photograph than noise by the model, seeds repeat, the model is left as it was,
bad layers and sizes are errors naming the key, the page renders; without named image sets scikit-image's brick and
grass are synthesized (never the model's own photographs), and a named set's textures are those of the set, each as
it would be alone."""
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
    """One job over the model's textures: the set `t` of the context unless `images` says otherwise."""
    technique = registry.get("texture_synthesis")
    p = technique.Params(**{**SMALL, "images": ["t"], **kw})
    assert technique.check(ctx.model, p) == []
    return technique.run(ctx, [Job("tiny", "texture_synthesis", p)])


def test_layer_sets_and_random_filters_on_a_tiny_net():
    ctx = texture_ctx(act_net(), layers=["act1", "act2"])
    before = model_state(ctx.model.module)
    (art,) = run(ctx, steps=30)
    assert_same_state(before, model_state(ctx.model.module))
    (texture,) = art.meta["textures"]
    assert (texture["id"], texture["name"], art.meta["texture_sets"]) == ("t/brick", "brick", ["t"])
    runs = texture["runs"]
    # The layer sets with plain Gram matrices, all layers with activation smoothing (SWAG), the random filters.
    assert [(r["network"], r["layers"], r["smoothing"]) for r in runs[:3]] == [
        ("model", ["act1"], False), ("model", ["act1", "act2"], False), ("smoothed", ["act1", "act2"], True)]
    assert runs[3]["label"] == "random multi-scale filters" and art.arrays["results"].shape == (4, 3, 40, 40)
    for r in runs:
        assert r["fall"] >= (0.5 if r["smoothing"] else 0.95), r  # from the noise start
    m = texture["metrics"]
    assert art.metrics["textures"] == 1 and art.arrays["texture_of"].tolist() == [0, 0, 0, 0]
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
    assert [r["network"] for r in art.meta["textures"][0]["runs"]] == ["model", "model"]
    assert "smoothed_by_random" not in art.meta["textures"][0]["metrics"]


def test_a_torchvision_vgg_works():
    net = torchvision_net("vgg11")
    ctx = texture_ctx(net, size=32, layers=["features.1", "features.4"])
    (art,) = run(ctx, random_filters=False, size=32, steps=10)
    for r in art.meta["textures"][0]["runs"]:
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
    assert check(images=[], layers=["act1"])[0] == ("images: an empty list; name at least one image set, or leave it "
                                                    "out for scikit-image's brick and grass")
    vgg = make_model(torchvision_net("vgg11"), 16)  # five 2× poolings: nothing is left of 16 px at the fifth
    problem = technique.check(vgg, technique.Params(**{**SMALL, "layers": ["features.1", "features.20"],
                                                       "random_filters": False}))
    assert len(problem) == 1 and problem[0].startswith("size: 16 px is too small for tiny"), problem


def page(ctx, folder, **kw):
    """Run one job, draw its figures into `folder` and render the page."""
    from generator.context import DrawContext
    from generator.outputs import write_outputs
    from generator.pipeline import Result
    from generator.report import ModelPages, technique_page_context
    from generator.templating import Renderer

    technique = registry.get("texture_synthesis")
    job = Job("tiny", "texture_synthesis", technique.Params(**{**SMALL, **kw}))
    (art,) = technique.run(ctx, [job])
    pages = ModelPages(ctx.model, DrawContext(ctx.model, ctx.images), [Result(job, "ran", 0.1, art)])
    write_outputs(folder, pages, lambda n: None)
    return art, Renderer().page("pages/texture_synthesis.md.j2", **technique_page_context(pages, "texture_synthesis"))


def test_page(tmp_path):
    ctx = texture_ctx(act_net(), names=("brick", "gravel"), layers=["act1", "act2"])
    art, text = page(ctx, tmp_path, images=["t"], steps=3)
    assert "## brick" in text and "figures/texture_synthesis/t--brick.png" in text
    assert "## gravel" in text and "figures/texture_synthesis/t--gravel.png" in text
    assert "random multi-scale filters" in text and "pin down" in text
    assert "| plain Gram |" in text and "| activation smoothing \\(SWAG\\) |" in text
    assert "**Where the textures come from:** your image set <code>t</code>: brick, gravel." in text
    assert (tmp_path / "tiny/figures/texture_synthesis/t--brick.png").is_file()
    assert (tmp_path / "tiny/figures/texture_synthesis/t--gravel.png").is_file()


def test_without_image_sets_brick_and_grass_are_synthesized_and_the_page_says_so(tmp_path):
    """No `images`: scikit-image's brick and grass, never the model's own photographs (here: a photo of a cat and
    one of a rocket); their pixels join the cache key in place of a set's."""
    technique = registry.get("texture_synthesis")
    ctx = texture_ctx(act_net(), names=("chelsea", "rocket"), layers=["act1", "act2"])
    assert technique.reads(technique.Params()).references == ()
    assert "shipped_textures" in technique.Params().cache_fields()
    assert "shipped_textures" not in technique.Params(images=["t"]).cache_fields()
    art, text = page(ctx, tmp_path, steps=2, random_filters=False, smoothing=False)
    assert [t["id"] for t in art.meta["textures"]] == ["skimage-textures/brick", "skimage-textures/grass"]
    assert [t["source"] for t in art.meta["textures"]] == ["skimage:brick", "skimage:grass"]
    assert art.meta["texture_sets"] is None and art.arrays["source"].shape == (2, 3, 40, 40)
    # The sources shown are brick and grass themselves, at the scale their statistics were taken.
    from generator.techniques.synthesis.gram import centre, source_tensor

    for shown, name in zip(art.arrays["source"], ("brick", "grass")):
        im = imagelib.sample(f"skimage:{name}")
        record = imagelib.ImageRecord(name, "x", name, name, im, imagelib.digest(im))
        np.testing.assert_allclose(shown, centre(source_tensor(record, 3, 64), 40, 40).numpy(), atol=1e-6)
    assert "**Where the textures come from:** scikit-image's samples: brick, grass." in text
    assert "## brick" in text and "## grass" in text and "chelsea" not in text


def test_a_named_sets_textures_are_each_as_they_would_be_alone():
    """One job over a set's textures gives each texture the results a set of that texture alone would."""
    both = run(texture_ctx(act_net(), names=("brick", "gravel"), layers=["act1", "act2"]), steps=3)[0]
    alone = run(texture_ctx(act_net(), names=("gravel",), layers=["act1", "act2"]), steps=3)[0]
    np.testing.assert_array_equal(both.arrays["results"][both.arrays["texture_of"] == 1], alone.arrays["results"])
    assert both.meta["textures"][1]["metrics"] == alone.meta["textures"][0]["metrics"]


def test_default_sizes_follow_the_models_input():
    """Left out, `size` is the model's input size (at most 128, at least twice the widest random filter when there
    is a coarse scale) and `source_size` twice that: a 224-px model synthesizes 128 px from 256 px as before."""
    params = registry.get("texture_synthesis").Params
    at = lambda side, **kw: params(**kw).resolved(make_model(act_net(), side))  # noqa: E731
    assert (at(224).size, at(224).source_size) == (128, 256)
    assert (at(96).size, at(96).source_size) == (96, 192)
    assert at(32).size == 74 and at(32, random_filters=False).size == 32
