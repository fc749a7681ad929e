"""Feature inversion: the shallowest layer's features are matched almost exactly and give back the picture; the
feature error grows with depth; the reported numbers are what an independent forward measures; seeds repeat;
the model is left as it was (also when the forward fails); bad layers are spec errors naming the key."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torch import nn

from helpers import Raises, _init, act_net, assert_same_state, make_model, model_state, render_page
from generator import images as imagelib
from generator.context import RunContext
from generator.models import ModelLoader
from generator.checks import ReportSpec
from generator.spec import InputSpec
from generator.techniques import registry
from generator.artifacts import Job
from generator.hooks import hook_count
from generator.optvis.objectives import image_tv as tv_beta
from generator.optvis.forward import LayerForward
from generator.techniques.synthesis.feature_inversion import invert, pixel_correlation

KIND = "feature_inversion"


pytestmark = pytest.mark.usefixtures("one_thread")


def deep_net() -> nn.Sequential:
    """Three conv stages, each halving the side: features get coarser and fewer with depth."""
    return _init(nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, 8, 3, padding=1)), ("act1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(8, 12, 3, padding=1)), ("act2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
        ("conv3", nn.Conv2d(12, 16, 3, padding=1)), ("act3", nn.ReLU()), ("pool3", nn.MaxPool2d(2)),
        ("flat", nn.Flatten()), ("fc", nn.Linear(16 * 4 * 4, 4)),
    ])), seed=1, scale=0.3)


def picture(seed: int, size: int = 32) -> Image.Image:
    """A smooth picture (a colour ramp with a disc and a bar), so a reconstruction can be compared pixel by pixel."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, size)
    a = np.stack([np.outer(ramp, np.ones(size)), np.outer(np.ones(size), ramp), np.full((size, size), 0.5)], -1)
    im = Image.fromarray((a[..., rng.permutation(3)] * 200 + 20).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(im)
    x, y = rng.integers(4, size - 16, 2)
    draw.ellipse([x, y, x + 12, y + 12], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw.rectangle([2, size - 8, size - 3, size - 5], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return im


def smooth_ctx(module: nn.Module, images: int = 2, seed: int = 0) -> RunContext:
    model = make_model(module, 32)
    records = {}
    for i in range(images):
        im = picture(i)
        records[f"s/p{i}"] = imagelib.ImageRecord(f"s/p{i}", "s", f"p{i}", f"p{i}", im, imagelib.digest(im))
    return RunContext(model, records, seed=seed)


def invert_all(ctx, **kw):
    technique = registry.get(KIND)
    p = technique.Params(**kw)
    return technique.run(ctx, [Job(ctx.model.name, KIND, p, image=i) for i in ctx.images])


def features(module: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """The layer's output from a full, ordinary forward (an independent measurement)."""
    from generator.hooks import record_outputs

    with torch.no_grad(), record_outputs(module, [layer]) as outs:
        module(x)
    return outs[layer]


def test_an_injective_first_layer_gives_back_the_picture_and_the_numbers_are_measured():
    """Without a regularizer, matching the features of conv(3→8) + ReLU at full resolution pins the image down (the
    minimum, zero, is at the original): the error goes to near 0 and the pixels correlate almost perfectly. Deeper,
    max-pooling throws away three positions in four per stage, so the correlation falls."""
    ctx = smooth_ctx(deep_net())
    arts = invert_all(ctx, layers=["act1", "act2", "act3"], steps=200, lr=0.01, tv=0.0, parameterization="pixel")
    mean = torch.tensor(ctx.model.input.mean).view(1, -1, 1, 1)
    std = torch.tensor(ctx.model.input.std).view(1, -1, 1, 1)
    noise = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    for art, image_id in zip(arts, ctx.images):
        original = (ctx.input(image_id)[None] * std + mean).clamp(0, 1)
        np.testing.assert_allclose(art.arrays["original"], original[0].numpy(), atol=1e-6)
        for k, row in enumerate(art.metrics["layers"]):
            x = torch.from_numpy(art.arrays["reconstructions"][k])[None]
            assert 0 <= float(x.min()) and float(x.max()) <= 1
            # Both reported numbers, recomputed with an ordinary forward and numpy.
            f = features(ctx.model.module, row["layer"], (x - mean) / std)
            f0 = features(ctx.model.module, row["layer"], (original - mean) / std)
            assert row["relative_error"] == pytest.approx(float((f - f0).norm() / f0.norm()), rel=1e-4, abs=1e-6)
            assert row["correlation"] == pytest.approx(np.corrcoef(x.flatten(), original.flatten())[0, 1], abs=1e-5)
        first = art.metrics["layers"][0]
        noise_r = float(pixel_correlation(noise, original)[0])
        assert first["relative_error"] < 0.05 and first["correlation"] > 0.95 and abs(noise_r) < 0.2, (first, noise_r)
        correlations = art.metrics["correlation"]
        assert correlations == sorted(correlations, reverse=True) and correlations[-1] < 0.6, correlations


def test_default_settings_on_the_tiny_net_recover_the_shallow_picture():
    arts = invert_all(smooth_ctx(deep_net()), layers=["act1"], steps=200, tv=0.02)
    for art in arts:
        assert art.metrics["layers"][0]["relative_error"] < 0.15 and art.metrics["correlation"][0] > 0.9


def test_the_embedded_model_loses_more_of_the_features_with_depth():
    spec = ReportSpec.parse({"models": [{"name": "lite", "builtin": "efficientnet-lite0"}]})
    model = ModelLoader(spec, torch.device("cpu")).load(0)
    im = imagelib.sample("skimage:chelsea")
    ctx = RunContext(model, {"p/chelsea": imagelib.ImageRecord("p/chelsea", "p", "chelsea", "skimage:chelsea", im,
                                                               imagelib.digest(im))})
    before = model_state(model.module)
    (art,) = invert_all(ctx, layers=["_act_stem", "_blocks.5._act1", "_act_head"], size=64, steps=60)
    assert_same_state(before, model_state(model.module))
    errors = art.metrics["relative_error"]
    assert errors[0] < 0.15 and art.metrics["correlation"][0] > 0.9, art.metrics
    assert errors[1] > 1.5 * errors[0] and errors[2] > 1.5 * errors[1], errors


def test_an_image_gets_the_same_result_alone_as_in_a_batch():
    ctx = smooth_ctx(deep_net(), images=2)
    technique = registry.get(KIND)
    p = technique.Params(layers=["act2"], steps=20, jitter=2)
    both = technique.run(ctx, [Job("tiny", KIND, p, image=i) for i in ("s/p0", "s/p1")])
    alone = technique.run(ctx, [Job("tiny", KIND, p, image="s/p1")])
    np.testing.assert_allclose(both[1].arrays["reconstructions"], alone[0].arrays["reconstructions"], atol=1e-4)


def test_same_seed_same_result_and_model_left_as_it_was():
    module = deep_net()
    before = model_state(module)
    a = invert_all(smooth_ctx(module), layers=["act1", "act3"], steps=10)
    assert_same_state(before, model_state(module))
    b = invert_all(smooth_ctx(module), layers=["act1", "act3"], steps=10)
    c = invert_all(smooth_ctx(module, seed=1), layers=["act1", "act3"], steps=10)
    for x, y, z in zip(a, b, c):
        np.testing.assert_array_equal(x.arrays["reconstructions"], y.arrays["reconstructions"])
        assert not np.array_equal(x.arrays["reconstructions"], z.arrays["reconstructions"])


def test_a_failing_forward_leaves_no_hooks_and_restores_the_flags():
    module = Raises().train()
    before = model_state(module)
    originals = torch.rand(1, 3, 32, 32)
    one = torch.zeros(1, 3, 1, 1)
    with pytest.raises(ValueError, match="boom"):
        invert(module, "body.act2", originals, mean=one, std=one + 1, steps=3, lr=0.1, tv=0.1)
    assert_same_state(before, model_state(module))


def test_the_forward_stops_at_the_layer_and_passes_the_gradient_straight_through_a_relu():
    net = deep_net()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    w = torch.randn(2, 12, 16, 16, generator=torch.Generator().manual_seed(1))
    calls = []
    handle = net.fc.register_forward_hook(lambda *a: calls.append(1))
    try:
        with LayerForward(net, ["act2"], read="straight") as probe:
            probe(x)  # the first forward runs whole and learns where the record is complete
            out = probe(x)[0]["act2"]
            assert hook_count(net) == 3  # ours (before and after act2) and the test's
        assert calls == [1]  # nothing after the layer ran the second time
    finally:
        handle.remove()
    assert hook_count(net) == 0
    z = net.conv2(net.pool1(net.act1(net.conv1(x))))  # act2's input
    assert torch.equal(out, torch.relu(z))  # the layer's value ...
    (g,) = torch.autograd.grad((out * w).sum(), x)
    # ... with the gradient of the identity in its place
    (identity,) = torch.autograd.grad((z * w).sum(), x, retain_graph=True)
    torch.testing.assert_close(g, identity)
    with LayerForward(net, ["act2"]) as plain:
        (g_plain,) = torch.autograd.grad((plain(x)[0]["act2"] * w).sum(), x)
    (true,) = torch.autograd.grad((torch.relu(z) * w).sum(), x)
    torch.testing.assert_close(g_plain, true)
    assert not torch.allclose(g_plain, g)


def test_the_straight_through_gradient_survives_an_in_place_relu():
    net = act_net(nn.ReLU, inplace=True)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    w = torch.randn(1, 6, 32, 32, generator=torch.Generator().manual_seed(1))
    with LayerForward(net, ["act1"], read="straight") as probe:
        out = probe(x)[0]["act1"]
    z = net.conv1(x)
    assert torch.equal(out, torch.relu(z))
    torch.testing.assert_close(torch.autograd.grad((out * w).sum(), x)[0], torch.autograd.grad((z * w).sum(), x)[0])


def test_tv_beta_matches_a_hand_computed_value():
    x = torch.tensor([[[[0.0, 1.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]]]])
    # Forward differences (dy, dx) at the four pixels that have both: (0, 1), (-1, 0), (1, 0), (1, 1).
    assert float(tv_beta(x, 2.0)[0]) == pytest.approx((1 + 1 + 1 + 2) / 4)
    assert float(tv_beta(x, 1.0)[0]) == pytest.approx((1 + 1 + 1 + 2 ** 0.5) / 4, abs=1e-4)


class TupleOut(nn.Module):
    def forward(self, x):
        return x, x.mean()


class TupleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.pair, self.fc = nn.Conv2d(3, 4, 3, padding=1), TupleOut(), nn.Linear(4, 4)

    def forward(self, x):
        y, _ = self.pair(torch.relu(self.conv(x)))
        return self.fc(y.mean((2, 3)))


def test_check_names_the_key_of_each_problem():
    technique = registry.get(KIND)
    model = make_model(act_net())
    assert technique.check(model, technique.Params(layers=["act1", "conv2"])) == []
    assert technique.check(model, technique.Params(layers=[]))[0].startswith("layers: the list is empty")
    assert technique.check(model, technique.Params())[0].startswith("layers: the model has no chosen layers")
    problems = technique.check(model, technique.Params(layers=["act1", "act3"]))
    assert problems == ["layers[1]: no module 'act3' in tiny; did you mean 'act2'?"]
    problems = technique.check(make_model(TupleNet()), technique.Params(layers=["conv", "pair"]))
    assert problems == ["layers[1]: 'pair' returns tuple, not a tensor; feature inversion needs a layer whose "
                        "output is one tensor of features"]


def test_grayscale_model_and_default_layers():
    net = _init(nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 6, 3, padding=1)), ("act1", nn.ReLU()), ("pool", nn.MaxPool2d(2)),
        ("flat", nn.Flatten()), ("fc", nn.Linear(6 * 14 * 14, 4))])))
    model = make_model(net, 28)
    model.input = InputSpec(size=28, resize=28, mode="L", mean=[0.3], std=[0.35])
    model.layers = ["act1", "fc"]
    records = {}
    for i in range(2):
        im = picture(i, 28).convert("L")
        records[f"s/p{i}"] = imagelib.ImageRecord(f"s/p{i}", "s", f"p{i}", f"p{i}", im, imagelib.digest(im))
    ctx = RunContext(model, records)
    arts = invert_all(ctx, steps=150, lr=0.05, tv=0.02)
    assert arts[0].arrays["reconstructions"].shape == (2, 1, 28, 28)
    assert [r["layer"] for r in arts[0].metrics["layers"]] == ["act1", "fc"]
    assert all(a.metrics["layers"][0]["correlation"] > 0.9 for a in arts)


def test_page(tmp_path):
    ctx = smooth_ctx(deep_net(), images=2)
    text = render_page(KIND, ctx, tmp_path, layers=["act1", "act3"], steps=3)
    assert "figures/feature_inversion/s--p0.png" in text
    assert (tmp_path / "tiny/figures/feature_inversion/s--p1.png").is_file()
    assert "| <code>act1</code> | 8 × 32 × 32 | 3 |" in text
    assert "| p1 |" in text and "## Parameters" in text
