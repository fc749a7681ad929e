"""Unit visualization: each channel's mean activation rises far above its data-set average (on Fashion-MNIST's model,
drawn at 4× its 28-px input, above every test image's); channels follow the top-patches view; the model is left as
it was; models of 64 px and more keep their cache keys."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import tiny_net, colour_dataset, data_context, job, assert_same_state, model_state
from generator.context import RunContext
from generator.hooks import record_outputs
from generator.idx import DEBIAN_ROOT, load_fashion_mnist
from generator.models import ModelLoader
from generator.checks import ReportSpec
from generator.artifacts import Job
from generator.techniques.dataset.max_patches import MaxPatches, MaxPatchesParams
from generator.techniques.synthesis.unit_visualization import UnitVisualization, UnitVisualizationParams


def test_channels_rise_far_above_their_data_set_average(tmp_path: Path):
    ctx, draw = data_context(tiny_net(), colour_dataset(per_class=5), tmp_path, ["relu2"])
    before = model_state(ctx.model.module)
    params = UnitVisualizationParams(per_layer=4, size=32, steps=200, early_stop=False, coarse_to_fine=False)
    art = UnitVisualization().run(ctx, [job("unit_visualization", params, "relu2")])[0]
    assert_same_state(before, model_state(ctx.model.module))
    assert art.meta["optimized"] == "before the rectifier" and art.meta["steps"] == 200
    patches = MaxPatches().run(ctx, [job("max_patches", MaxPatchesParams(per_layer=4), "relu2")])[0]
    assert art.meta["channels"] == patches.meta["channels"]  # the unit pages show both for the same channels
    for u in art.meta["units"]:
        # The data-set average is of the layer's output: compare it with the output on the image.
        assert u["after_output"] > 3 * u["dataset_mean"] and u["after"] > u["before"], u
    figures = UnitVisualization().draw(art, job("unit_visualization", params, "relu2"), draw, tmp_path / "f" / "r.png")
    assert list(figures) == ["main"] + [f"unit-{c}" for c in art.meta["channels"]]


def test_out_of_range_channel_is_an_error(tmp_path: Path):
    ctx, _ = data_context(tiny_net(), colour_dataset(per_class=2), tmp_path, ["relu2"])
    try:
        UnitVisualization().run(ctx, [job("unit_visualization", UnitVisualizationParams(channels=[99], steps=1),
                                          "relu2")])
    except ValueError as exc:
        assert "channel 99 does not exist: 'relu2' has 16 channels" in str(exc)
    else:
        raise AssertionError("no error")


HAS_FASHION = any((DEBIAN_ROOT / f"t10k-images-idx3-ubyte{ext}").is_file() for ext in ("", ".gz"))


@pytest.mark.skipif(not HAS_FASHION, reason=f"no Fashion-MNIST in {DEBIAN_ROOT}")
def test_small_input_units_beat_every_test_image():
    spec = ReportSpec.parse({"models": [{"name": "fashion", "builtin": "fashion-mnist-net"}]})
    model = ModelLoader(spec, torch.device("cpu")).load(0)
    ctx = RunContext(model, {})
    channels, layer = [9, 43, 86], "features.9"
    art = UnitVisualization().run(ctx, [Job("fashion", "unit_visualization", UnitVisualizationParams(
        channels=channels), layer)])[0]  # the default budget
    assert art.arrays["images"].shape == (3, 1, 112, 112) and art.meta["model_size"] == 28
    pictures, _ = load_fashion_mnist(DEBIAN_ROOT, "test")
    x = (torch.from_numpy(pictures[:1000]).float()[:, None] / 255 - model.input.mean[0]) / model.input.std[0]
    with torch.no_grad(), record_outputs(model.module, [layer]) as outs:
        model.module(x)
    best = outs[layer].mean((2, 3))[:, channels].amax(0)  # each channel's strongest test image
    for u, top in zip(art.meta["units"], best.tolist()):
        assert u["after"] > max(top, u["before"]), (u, top)


def test_large_inputs_keep_their_cache_keys():
    assert UnitVisualizationParams().cache_fields() == {  # as before small inputs got their own setting
        "channels": None, "per_layer": 12, "size": None, "steps": 128, "lr": 0.02, "decay_power": 1.5,
        "transform_strength": 1.0, "early_stop": True, "coarse_to_fine": True}


def silent_net(bias: float) -> torch.nn.Sequential:
    """conv(3→2, 3×3, weights 0.1) → ReLU: channel 0 has bias −1 (closed on a near-grey start, open on a bright
    image), channel 1 the given bias (−10: closed on every image in the valid range)."""
    from collections import OrderedDict

    conv = torch.nn.Conv2d(3, 2, 3, padding=1)
    with torch.no_grad():
        conv.weight.fill_(0.1)
        conv.bias.copy_(torch.tensor([-1.0, bias]))
    net = torch.nn.Sequential(OrderedDict([("conv", conv), ("relu", torch.nn.ReLU()),
                                           ("gap", torch.nn.AdaptiveAvgPool2d(1)), ("flat", torch.nn.Flatten()),
                                           ("fc", torch.nn.Linear(2, 2))]))
    with torch.no_grad():
        net.fc.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
        net.fc.bias.zero_()
    return net.eval()


def test_a_unit_silent_at_the_start_still_moves(monkeypatch, tmp_path: Path):
    """Channel 0 is closed (0.000) on the start: plain ascent got no gradient and returned the start; with the
    redirected ReLU gradient its activation rises. Channel 1 (bias −10) can never fire: it is labelled on its tile
    and listed in meta['unmet']."""
    from helpers import make_ctx
    from generator.techniques.synthesis import unit_visualization

    ctx = make_ctx(silent_net(-10.0), images=0)
    params = UnitVisualizationParams(channels=[0, 1], size=32, steps=40)
    art = UnitVisualization().run(ctx, [job("unit_visualization", params, "relu")])[0]
    first, second = art.meta["units"]
    # Read before the ReLU: channel 0 starts closed (a negative value, output 0) and opens.
    assert first["before"] < 0 and first["after_output"] > 1e-3 and first["moved"] and not first["silent"]
    # Channel 1's value before the ReLU rises, but no image in range opens it: it is called silent.
    assert second["after"] > second["before"] and second["after_output"] == 0.0 and second["silent"]
    np.testing.assert_array_equal(art.arrays["before"], [u["before"] for u in art.meta["units"]])
    np.testing.assert_array_equal(art.arrays["after"], [u["after"] for u in art.meta["units"]])
    assert art.meta["unmet"] == [f"channel 1 stayed silent: its output is 0.000 after 40 steps (the value before the "
                                 f"rectifier went from {second['before']:.3f} to {second['after']:.3f})"]
    titles = []
    monkeypatch.setattr(unit_visualization.figures, "picture_grid", lambda grid, cells, *a, **k: titles.extend(cells))
    UnitVisualization().draw(art, job("unit_visualization", params, "relu"), None, tmp_path / "u.png")
    assert titles == [[f"channel 0: {first['after']:.2f} ({first['after_output']:.2f} out)",
                       f"channel 1: {second['after']:.2f} (0.00 out) — silent"]]


def test_a_near_uniform_result_is_called_so():
    """Contrast is measured per result against the layer's range: a flat image is 'near-uniform' on its tile and in
    the table, a patterned one is not (a flat grey tile read as a failure otherwise)."""
    from generator.techniques.synthesis.unit_visualization import UNIFORM_CONTRAST, image_contrast

    rng = np.random.default_rng(0)
    images = np.stack([np.full((3, 16, 16), 0.5), rng.uniform(0, 1, (3, 16, 16))]).astype(np.float32)
    images[0] += rng.normal(0, 0.01, images[0].shape).astype(np.float32)
    contrast = image_contrast(images)
    assert contrast[0] < UNIFORM_CONTRAST < contrast[1]
