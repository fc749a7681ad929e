"""Unit visualization: each channel's mean activation rises far above its data-set average (on Fashion-MNIST's model,
drawn at 4× its 28-px input, above every test image's); channels follow the top-patches view; the model is left as
it was; models of 64 px and more keep their cache keys."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_net
from datanets import colour_dataset, data_context, job
from gradnets import assert_same_state, model_state
from generator.context import RunContext
from generator.hooks import record_outputs
from generator.idx import DEBIAN_ROOT, load_fashion_mnist
from generator.models import ModelLoader
from generator.spec import Spec
from generator.techniques.base import Job
from generator.techniques.max_patches import MaxPatches, MaxPatchesParams
from generator.techniques.unit_visualization import UnitVisualization, UnitVisualizationParams


def test_channels_rise_far_above_their_data_set_average(tmp_path: Path):
    ctx, draw = data_context(tiny_net(), colour_dataset(per_class=5), tmp_path, ["relu2"])
    before = model_state(ctx.model.module)
    params = UnitVisualizationParams(per_layer=4, size=32, steps=200)
    art = UnitVisualization().run(ctx, [job("unit_visualization", params, "relu2")])[0]
    assert_same_state(before, model_state(ctx.model.module))
    patches = MaxPatches().run(ctx, [job("max_patches", MaxPatchesParams(per_layer=4), "relu2")])[0]
    assert art.meta["channels"] == patches.meta["channels"]  # the unit pages show both for the same channels
    for u in art.meta["units"]:
        assert u["after"] > 3 * u["dataset_mean"] and u["after"] > u["before"], u
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
    spec = Spec.parse({"models": [{"name": "fashion", "builtin": "fashion-mnist-net"}]})
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
        "transform_strength": 1.0}
