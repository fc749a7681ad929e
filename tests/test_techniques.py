"""Each technique's numbers against an independent computation: filters, activations, predictions, inputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from helpers import make_context, tiny_net
from generator import figures
from generator.hooks import hook_count
from generator.techniques import registry
from generator.techniques.activations import ActivationsParams
from generator.artifacts import Job
from generator.techniques.filters import FiltersParams
from generator.techniques.predictions import PredictionsParams


def pictures(n: int = 2, size: int = 40) -> dict[str, Image.Image]:
    rng = np.random.default_rng(5)
    return {f"p{i}": Image.fromarray(rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)) for i in range(n)}


# ------------------------------------------------------------------------------------------------ filters


def test_normalize_filters_is_per_filter_min_max():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 3, 4, 4)).astype(np.float32)
    w[1] *= 100.0  # scales differ per filter: each is stretched on its own
    w[2] -= 7.0
    w[3] = 0.25  # a constant filter has no range
    out = figures.normalize_filters(w)
    assert out.shape == w.shape and out.dtype == np.uint8
    for i in range(len(w)):
        f = w[i].astype(np.float64)
        lo, hi = f.min(), f.max()
        if hi > lo:
            expected = np.round((f - lo) / (hi - lo) * 255.0)
            assert np.abs(out[i].astype(np.float64) - expected).max() <= 1, i
            assert out[i].min() == 0 and out[i].max() == 255
        else:
            assert len(np.unique(out[i])) == 1  # no division by zero, one flat tile


def test_filters_artifact_is_the_conv_weight():
    net = tiny_net()
    ctx = make_context(net, {})
    technique = registry.get("filters")
    jobs = [Job("m", "filters", FiltersParams(), layer=name) for name in ("conv1", "conv2")]
    arts = technique.run(ctx, jobs)
    assert len(arts) == 2
    assert np.array_equal(arts[0].main, net.conv1.weight.detach().numpy())
    assert np.array_equal(arts[1].main, net.conv2.weight.detach().numpy())
    assert arts[0].metrics["filters"] == 8 and arts[0].metrics["inputs_per_filter"] == 3
    assert arts[1].metrics["kernel"] == [3, 3]
    assert arts[0].meta["layout"] == "rgb" and arts[1].meta["layout"] != "rgb"


def test_filters_artifact_of_a_depthwise_conv():
    net = nn.Sequential(nn.Conv2d(3, 6, 3), nn.Conv2d(6, 6, 5, groups=6), nn.Conv2d(6, 4, 1))
    ctx = make_context(net, {})
    arts = registry.get("filters").run(ctx, [Job("m", "filters", FiltersParams(), layer=n) for n in ("1", "2")])
    assert np.array_equal(arts[0].main, net[1].weight.detach().numpy()) and arts[0].main.shape == (6, 1, 5, 5)
    assert arts[0].meta["layout"] == "depthwise" and arts[0].metrics["groups"] == 6
    assert np.array_equal(arts[1].main, net[2].weight.detach().numpy())
    assert arts[1].meta["layout"] == "pointwise"


def test_a_grayscale_first_layer_is_one_tile_per_filter(tmp_path):
    from generator.builtin.fashion_mnist import fashion_mnist_net

    net = fashion_mnist_net(pretrained=False)
    ctx = make_context(net, {}, size=28)
    technique = registry.get("filters")
    job = Job("m", "filters", FiltersParams(), layer="features.0")
    art = technique.run(ctx, [job])[0]
    assert art.meta["layout"] == "gray" and art.main.shape[1] == 1
    technique.draw(art, job, None, tmp_path / "f.png")
    from PIL import Image

    width, height = Image.open(tmp_path / "f.png").size
    assert 0.5 < width / height < 3  # a grid, not a one-column strip


# ------------------------------------------------------------------------------------------------ activations


def test_activations_equal_a_manual_sub_forward():
    net = tiny_net()
    ctx = make_context(net, pictures())
    ids = list(ctx.images)
    technique = registry.get("activations")
    for layer, upto in (("conv1", 1), ("relu2", 5)):
        arts = technique.run(ctx, [Job("m", "activations", ActivationsParams(), layer=layer, image=i) for i in ids])
        assert len(arts) == len(ids)
        with torch.no_grad():
            expected = net[:upto](torch.stack([ctx.input(i) for i in ids])).numpy()
        for art, want in zip(arts, expected):
            assert art.main.shape == want.shape
            assert np.allclose(art.main, want, atol=1e-6)
            m = art.metrics
            assert (m["channels"], m["height"], m["width"]) == want.shape
            assert m["mean"] == pytest.approx(float(want.mean()), abs=1e-6)
            assert m["max"] == pytest.approx(float(want.max()), abs=1e-6)
            assert m["zero_fraction"] == pytest.approx(float((want == 0).mean()))
    assert hook_count(net) == 0


def test_dead_channels_are_counted():
    conv = nn.Conv2d(3, 5, 3, padding=1)
    with torch.no_grad():
        conv.weight.uniform_(-0.01, 0.01)
        conv.bias.copy_(torch.tensor([-100.0, 100.0, -100.0, 100.0, 100.0]))  # channels 0 and 2 never pass the ReLU
    net = nn.Sequential(conv, nn.ReLU())
    ctx = make_context(net, pictures(1))
    (image,) = ctx.images
    (art,) = registry.get("activations").run(ctx, [Job("m", "activations", ActivationsParams(), layer="1", image=image)])
    assert art.metrics["dead_channels"] == 2
    assert art.metrics["zero_fraction"] == pytest.approx(2 / 5)
    assert (art.main[[0, 2]] == 0).all() and (art.main[[1, 3, 4]] > 0).all()
    # before the ReLU the same two channels count as dead: they never rise above zero (no value is exactly zero)
    (pre,) = registry.get("activations").run(ctx, [Job("m", "activations", ActivationsParams(), layer="0", image=image)])
    assert pre.metrics["dead_channels"] == 2 and pre.metrics["zero_fraction"] == 0


def test_activations_of_a_non_volume_layer_fail_clearly():
    ctx = make_context(tiny_net(), pictures(1))
    (image,) = ctx.images
    with pytest.raises(ValueError, match="'fc'"):
        registry.get("activations").run(ctx, [Job("m", "activations", ActivationsParams(), layer="fc", image=image)])
    assert hook_count(ctx.model.module) == 0


def test_shown_channels():
    a = np.zeros((6, 2, 2), dtype=np.float32)
    a[4] = 5
    a[1] = 3
    shown = registry.get("activations").shown_channels
    assert shown(a, ActivationsParams(max_channels=2, order="strongest")) == [1, 4]
    assert shown(a, ActivationsParams(max_channels=2, order="index")) == [0, 1]
    assert shown(a, ActivationsParams(max_channels=50)) == list(range(6))


# ------------------------------------------------------------------------------------------------ predictions


def test_predictions_on_the_tiny_net():
    net = tiny_net()
    ctx = make_context(net, pictures(), labels=["cat", "dog", "eel", "fox"])
    ids = list(ctx.images)
    arts = registry.get("predictions").run(ctx, [Job("m", "predictions", PredictionsParams(top_k=3), image=i) for i in ids])
    with torch.no_grad():
        probs = net(torch.stack([ctx.input(i) for i in ids])).softmax(1).numpy()
    for art, p in zip(arts, probs):
        assert np.allclose(art.main, p, atol=1e-6) and art.main.sum() == pytest.approx(1.0, abs=1e-5)
        order = np.argsort(-p)[:3]
        assert [t["index"] for t in art.meta["top"]] == order.tolist()
        assert [t["label"] for t in art.meta["top"]] == [["cat", "dog", "eel", "fox"][i] for i in order]
        assert art.meta["target"] == art.meta["top"][0]["label"]
        assert art.metrics["top1_probability"] == pytest.approx(float(p.max()), abs=1e-6)


def test_top_k_larger_than_the_classes():
    ctx = make_context(tiny_net(), pictures(1))
    (image,) = ctx.images
    (art,) = registry.get("predictions").run(ctx, [Job("m", "predictions", PredictionsParams(top_k=50), image=image)])
    assert len(art.meta["top"]) == 4
    assert art.meta["top"][0]["label"].startswith("class ")  # no labels: "class N"


def test_input_artifact_is_the_preprocessed_tensor():
    ctx = make_context(tiny_net(), pictures(1))
    (image,) = ctx.images
    (art,) = registry.get("input").run(ctx, [Job("m", "input", registry.get("input").Params(), image=image)])
    assert art.main.shape == (3, 32, 32)
    assert np.array_equal(art.main, ctx.input(image).numpy())


@pytest.fixture(scope="module")
def lite(tmp_path_factory):
    """EfficientNet-Lite0 with its ImageNet weights (from an installed package, no network) on two samples."""
    from generator.checks import prepare
    from generator.context import RunContext
    from generator.checks import ReportSpec

    spec = ReportSpec.parse({
        "device": "cpu", "images": {"photos": ["skimage:chelsea", "skimage:coffee"]},
        "models": [{"name": "lite", "builtin": "efficientnet-lite0", "layers": ["_act_head"]}],
    })
    spec._path = tmp_path_factory.mktemp("lite") / "spec.yml"
    prepared = prepare(spec)
    (model,) = prepared.models
    return RunContext(model, {r.id: r for r in prepared.images["photos"]})


def test_efficientnet_lite0_predicts_the_samples(lite):
    arts = registry.get("predictions").run(
        lite, [Job("lite", "predictions", PredictionsParams(), image=i) for i in ("photos/chelsea", "photos/coffee")])
    chelsea, coffee = (a.meta["top"][0]["label"] for a in arts)
    assert chelsea in {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat", "lynx"}, arts[0].meta["top"]
    assert coffee in {"espresso", "cup"}, arts[1].meta["top"]
    assert len(lite.model.labels) == 1000


def test_efficientnet_lite0_head_activations(lite):
    (art,) = registry.get("activations").run(
        lite, [Job("lite", "activations", ActivationsParams(), layer="_act_head", image="photos/chelsea")])
    assert art.main.shape == (1280, 7, 7)
    assert 0 <= art.main.min() and art.main.max() <= 6  # ReLU6
    assert hook_count(lite.model.module) == 0
