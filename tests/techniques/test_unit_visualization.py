"""Unit visualization: each channel's mean activation rises far above its data-set average; channels follow the
top-patches view; the model is left as it was."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from conftest import tiny_net
from datanets import colour_dataset, data_context, job
from gradnets import assert_same_state, model_state
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
