"""Neural style transfer: the style loss falls from the content photograph, both losses fall from noise, the row of
style weights and the content × style rows are there, seeds repeat, bad keys are errors naming the key, and the page
renders both figures."""
from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from helpers import act_net, assert_same_state, make_model, model_state
from generator import images as imagelib
from generator.context import RunContext
from generator.techniques import registry
from generator.artifacts import Job

SMALL = dict(styles=["styles"], size=40, style_size=48, steps=12, coarse_steps=0, style_weights=[1.0, 10.0],
             style_weight=10.0, random_kernel_sizes=[3, 5, 9], random_filter_count=16, content_layer="act2",
             style_layers=["act1", "act2"])

pytestmark = pytest.mark.usefixtures("one_thread")



def style_ctx(module=None) -> RunContext:
    model = make_model(module or act_net(), 32)
    model.layers = ["act1", "act2"]
    records = {}
    for set_name, names in (("photos", ["chelsea"]), ("styles", ["hubble_deep_field", "immunohistochemistry"])):
        for name in names:
            im = imagelib.sample(f"skimage:{name}")
            im = im.resize((96, round(96 * im.height / im.width)))
            records[f"{set_name}/{name}"] = imagelib.ImageRecord(f"{set_name}/{name}", set_name, name, name, im,
                                                                 imagelib.digest(im))
    return RunContext(model, records, seed=0, own=["photos/chelsea"])


def run(ctx, **kw):
    technique = registry.get("style_transfer")
    p = technique.Params(**{**SMALL, **kw})
    assert technique.check(ctx.model, p) == []
    assert technique.reads(p).references == ("styles",)
    return technique.run(ctx, [Job("tiny", "style_transfer", p, image="photos/chelsea")])[0]


def test_style_falls_from_the_content_photograph_and_the_rows_are_complete():
    ctx = style_ctx()
    before = model_state(ctx.model.module)
    art = run(ctx)
    assert_same_state(before, model_state(ctx.model.module))
    m = art.meta
    # Grid (random filters at weights 1 and 10), then per style the model's plain Gram and activation-smoothed
    # (SWAG) results and the random filters'; the random filters' result for the first style at weight 10 is the
    # grid's.
    assert [(r["network"], r["weight"]) for r in m["results"]] == [
        ("random", 1.0), ("random", 10.0), ("model", 10.0), ("smoothed", 10.0), ("model", 10.0), ("smoothed", 10.0),
        ("random", 10.0)]
    assert [r["gram"] for r in m["results"][2:4]] == ["plain Gram", "activation smoothing (SWAG)"]
    assert m["grid"] == [0, 1]
    assert m["pairs"][0] == {"style": "styles/hubble_deep_field", "model": 2, "smoothed": 3, "random": 1}
    assert art.arrays["results"].shape == (7, 3, 40, 40) and art.arrays["styles"].shape == (2, 3, 40, 40)
    assert art.arrays["smoothing"].tolist() == [False, False, False, True, False, True, False]
    # The smoothed result differs from the plain one, and each is measured by the network that did not make it.
    assert not np.array_equal(art.arrays["results"][2], art.arrays["results"][3])
    assert {r["judge"] for r in m["results"] if r["network"] != "random"} == {"random multi-scale filters"}
    assert np.isfinite(art.arrays["judged"]).all() and np.isfinite(art.arrays["histogram_distance"]).all()
    assert {"judged_plain", "judged_smoothed"} <= set(art.metrics)
    for r in m["results"]:
        assert r["content_start"] == 0  # the start is the content photograph itself
        # The smoothed loss falls less in 12 steps on the tiny net (46% and 13%: it starts lower from the photograph).
        assert r["style_end"] < (0.9 if r["smoothing"] else 0.5) * r["style_start"], r
    again = run(style_ctx())
    np.testing.assert_array_equal(again.arrays["results"], art.arrays["results"])


def test_smoothing_off_paints_only_the_plain_gram_result():
    art = run(style_ctx(), smoothing=False, style_weights=[], random_filters=False)
    assert [(r["network"], r["smoothing"]) for r in art.meta["results"]] == [("model", False), ("model", False)]
    assert "judged_plain" not in art.metrics


def test_from_noise_both_losses_fall():
    art = run(style_ctx(), start="noise", style_weights=[], style_weight=1.0, steps=20, content_layer="act1")
    for r in art.meta["results"]:
        assert r["style_end"] < 0.7 * r["style_start"], r
        assert r["content_end"] < 0.7 * r["content_start"], r


def test_bad_keys_are_errors_naming_them():
    technique = registry.get("style_transfer")
    model = make_model(act_net(), 32)
    model.layers = ["act1", "act2"]
    check = lambda **kw: technique.check(model, technique.Params(**{**SMALL, **kw}))  # noqa: E731
    assert check(styles=[]) == ["styles: an empty list; name at least one image set of style images, or leave it "
                                "out for the shipped styles (swirls and mosaic)"]
    assert check(content_layer="act9") == ["content_layer: no module 'act9' in tiny; did you mean 'act2'?"]
    assert check(content_layer="fc")[0].startswith("content_layer: 'fc' has no spatial extent")
    assert check(style_layers=[]) == ["style_layers: an empty list; name at least one layer"]
    assert check(style_layers=["act1", "act7"]) == ["style_layers[1]: no module 'act7' in tiny; did you mean "
                                                    "'act2'?"]
    assert check(size=24, random_kernel_sizes=[3, 37])[0].startswith("size: the random filters span up to 37 px")
    with pytest.raises(ValidationError, match="style_weights"):
        technique.Params(**{**SMALL, "style_weights": [0.0]})


def test_page(tmp_path):
    from generator.context import DrawContext
    from generator.pipeline import Result
    from generator.templating import Renderer
    from generator.report import ModelPages, technique_page_context
    from generator.outputs import write_outputs

    ctx = style_ctx()
    technique = registry.get("style_transfer")
    p = technique.Params(**{**SMALL, "steps": 3})
    job = Job("tiny", "style_transfer", p, image="photos/chelsea")
    (art,) = technique.run(ctx, [job])
    pages = ModelPages(ctx.model, DrawContext(ctx.model, ctx.images), [Result(job, "ran", 0.1, art)])
    write_outputs(tmp_path, pages, lambda n: None)
    text = Renderer().page("pages/style_transfer.md.j2", **technique_page_context(pages, "style_transfer"))
    assert "## chelsea" in text and "hubble\\_deep\\_field" in text
    assert "figures/style_transfer/photos--chelsea.png" in text
    assert "figures/style_transfer/photos--chelsea--weights.png" in text
    # Table rows and the figure name both variants of the model's style.
    assert "| plain Gram |" in text and "| activation smoothing \\(SWAG\\) |" in text
    assert "Wang, Li & Vasconcelos" in text
    # Named style sets: the page names the set and its images, and no shipped sample is used.
    assert art.meta["style_sets"] == ["styles"]
    assert ("**Where the styles come from:** your image set <code>styles</code>: hubble\\_deep\\_field, "
            "immunohistochemistry.") in text
    assert "shipped" not in text


def test_missing_style_sets_are_spec_errors_naming_the_key(tmp_path):
    from helpers import tiny_spec, write_spec

    from generator import checks
    from generator.errors import SpecErrors
    from generator.checks import ReportSpec

    data = tiny_spec(images=["pics"], techniques={"style_transfer": {"styles": ["paintings"]}})
    data["images"]["painting"] = ["pics/a.png"]
    spec = ReportSpec.load(write_spec(tmp_path, data))
    assert checks.named_set_problems(spec, spec.models[0]) == [
        "models[0].techniques.style_transfer.styles: no image set 'paintings'; did you mean 'painting'?"]
    data["models"][0]["techniques"]["style_transfer"] = {"styles": "painting"}
    with pytest.raises(SpecErrors, match=r"models\[0\]\.techniques\.style_transfer\.styles"):
        ReportSpec.load(write_spec(tmp_path, data))


def test_without_style_sets_the_shipped_styles_are_painted_and_the_page_names_them(tmp_path):
    """No `styles`: every content image is painted in the two styles that ship with convscope (never in another
    of the user's photographs); they join the cache key by their pixels; the page says where they came from."""
    from generator.context import DrawContext
    from generator.pipeline import Result
    from generator.report import ModelPages, technique_page_context
    from generator.outputs import write_outputs
    from generator.templating import Renderer

    ctx = style_ctx()
    ctx.own = ["photos/chelsea", "styles/immunohistochemistry"]
    technique = registry.get("style_transfer")
    p = technique.Params(**{**SMALL, "styles": None, "style_weights": [], "steps": 2, "random_filters": False})
    assert technique.check(ctx.model, p) == []
    assert technique.reads(p).references == ()
    assert technique.Params().cache_fields()["shipped_styles"] == p.cache_fields()["shipped_styles"]
    assert "shipped_styles" not in technique.Params(styles=["styles"]).cache_fields()
    jobs = [Job("tiny", "style_transfer", p, image=i) for i in ctx.own]
    arts = technique.run(ctx, jobs)
    for art in arts:
        assert art.meta["styles"] == ["shipped-styles/swirls", "shipped-styles/mosaic"]
        assert art.meta["style_names"] == ["swirls", "mosaic"] and art.meta["style_sets"] is None
        assert {r["style"] for r in art.meta["results"]} == set(art.meta["styles"])
    # The styles shown are the shipped pictures: swirls mostly blue, the mosaic of many saturated colours.
    swirls, mosaic = arts[0].arrays["styles"]
    assert swirls[2].mean() > swirls[0].mean() + 0.1
    pages = ModelPages(ctx.model, DrawContext(ctx.model, ctx.images),
                       [Result(j, "ran", 0.1, a) for j, a in zip(jobs, arts)])
    write_outputs(tmp_path, pages, lambda n: None)
    text = Renderer().page("pages/style_transfer.md.j2", **technique_page_context(pages, "style_transfer"))
    assert "**Where the styles come from:** shipped samples: swirls, mosaic." in text
    assert "This spec names no image sets of styles" in text


def test_the_comparison_and_the_weight_row_are_painted_for_the_first_content_image_only():
    """`compare: first` (the default): the first content image of the job set gets every network and the row of
    style weights, the others one painting per style by the model's plain Gram matrices; `compare: every` paints all
    alike.
    Which image is first joins the cache key: the model's own images as a set, named content sets in order."""
    ctx = style_ctx()
    ctx.own = ["photos/chelsea", "styles/immunohistochemistry"]
    technique = registry.get("style_transfer")
    p = technique.Params(**{**SMALL, "steps": 2, "style_weights": [1.0, 3.0]})
    first, other = technique.run(ctx, [Job("tiny", "style_transfer", p, image=i) for i in ctx.own])
    assert first.meta["compared"] and not other.meta["compared"]
    assert len(first.meta["grid"]) == 2 and [sorted(pair) for pair in first.meta["pairs"]] == [
        ["model", "random", "smoothed", "style"]] * 2
    assert other.meta["grid"] == [] and [sorted(pair) for pair in other.meta["pairs"]] == [["model", "style"]] * 2
    assert [(r["network"], r["smoothing"]) for r in other.meta["results"]] == [("model", False)] * 2
    assert np.isfinite(other.arrays["judged"]).all()  # still measured by the random filters
    every = technique.run(ctx, [Job("tiny", "style_transfer", p.model_copy(update={"compare": "every"}),
                                    image=ctx.own[1])])[0]
    assert every.meta["compared"] and len(every.meta["results"]) == len(first.meta["results"])
    assert technique.reads(p).whole_set and not technique.reads(p.model_copy(update={"compare": "every"})).whole_set
    named = p.model_copy(update={"images": ["photos"]})
    assert technique.reads(named).references == ("styles", "photos") and not technique.reads(named).whole_set


def test_default_sizes_follow_the_models_input():
    """Left out, `size` is the model's input size (at most 160, at least twice the widest random filter when there
    is a coarse scale) and `style_size` 1.6 × that: a 224-px model paints at 160 with 256-px styles as before."""
    params = registry.get("style_transfer").Params
    at = lambda side, **kw: params(**kw).resolved(make_model(act_net(), side))  # noqa: E731
    assert (at(224).size, at(224).style_size) == (160, 256)
    assert (at(96).size, at(96).style_size) == (96, 154)
    assert at(32).size == 74 and at(32, random_filters=False).size == 32 and at(32, coarse_steps=0).size == 37
    assert (at(96, size=200).size, at(96, size=200).style_size) == (200, 320)
    assert at(96, style_size=64).style_size == 64


def test_the_shipped_styles_are_package_data_and_the_samples_files():
    """They are read from beside the module (installed with the package, pyproject's package-data), and they are
    the files the default report names (samples/styles/, painted by scripts/make_style_images.py)."""
    import fnmatch
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")

    from generator.techniques.synthesis import style_transfer

    here = Path(style_transfer.__file__).parent
    repo = here.parents[2]
    data = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for source in style_transfer.SHIPPED_STYLES.sources:
        assert (here / source).read_bytes() == (repo / "samples" / source).read_bytes()
        assert any(fnmatch.fnmatch(source, pattern) for pattern in data["generator.techniques.synthesis"])


def test_default_style_layers_leave_out_layers_with_too_few_positions():
    """A last stage of many channels on a few positions has a Gram matrix no image can match: with it in the loss
    the result barely moves (EfficientNet-Lite0's head: 1280 channels on 5 × 5 positions at 160 px). By default
    only layers with P ≥ C / 4 are matched; named style layers are used as given."""
    from collections import OrderedDict

    from torch import nn

    from generator.techniques.synthesis.style_transfer import default_style_layers

    net = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, 8, 3, padding=1)), ("act1", nn.ReLU()),  # 8 channels on 32 × 32
        ("conv2", nn.Conv2d(8, 16, 3, stride=4, padding=1)), ("act2", nn.ReLU()),  # 16 on 8 × 8
        ("conv3", nn.Conv2d(16, 128, 3, stride=4, padding=1)), ("act3", nn.ReLU()),  # 128 on 2 × 2: too few
        ("gap", nn.AdaptiveAvgPool2d(1)), ("flat", nn.Flatten()), ("fc", nn.Linear(128, 4)),
    ])).eval()
    model = make_model(net, 32)
    model.layers = ["act1", "act2", "act3"]
    assert default_style_layers(model, 32) == ["act1", "act2"]
    assert default_style_layers(model, 128) == ["act1", "act2", "act3"]  # 8 × 8 positions for 128 channels
    ctx = style_ctx(net)
    ctx.model.layers = ["act1", "act2", "act3"]
    art = run(ctx, style_layers=None, content_layer="act2", size=32, random_filters=False, smoothing=False)
    assert art.meta["style_layers"] == ["act1", "act2"]
