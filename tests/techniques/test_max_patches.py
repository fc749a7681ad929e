"""Top patches: the true top-k over the data set, each patch's activation recomputed from its source image, each box
the receptive field of the peak position."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from helpers import tiny_net, colour_dataset, data_context, job
from generator import images as imagelib
from generator.hooks import record_outputs
from generator.layers import receptive_fields
from generator.layers import spread
from generator.techniques.dataset.max_patches import MaxPatches, MaxPatchesParams, top_k


def recompute(ctx, index: int, layer: str) -> torch.Tensor:
    x = imagelib.preprocess(ctx.dataset.image(index), ctx.model.input)[None]
    with torch.no_grad(), record_outputs(ctx.model.module, [layer]) as outs:
        ctx.model.module(x)
    return outs[layer][0]


def test_top_patches_are_the_true_top_k_with_their_receptive_fields(tmp_path: Path):
    data = colour_dataset(per_class=6)
    ctx, draw = data_context(tiny_net(), data, tmp_path, ["relu1", "relu2"])
    params = MaxPatchesParams(per_layer=5, top_k=4)
    arts = MaxPatches().run(ctx, [job("max_patches", params, "relu1"), job("max_patches", params, "relu2")])
    sizes = {}
    for art, layer in zip(arts, ["relu1", "relu2"]):
        rf = receptive_fields(ctx.model.module, [layer], 3, 32)[layer]
        acts = [recompute(ctx, i, layer) for i in range(len(data))]
        brute = np.stack([a.flatten(1).max(1).values.numpy() for a in acts])  # (N, C)
        channels = art.meta["channels"]
        assert len(channels) == 5 == len(set(channels))
        for r, c in enumerate(channels):
            expected = np.argsort(-brute[:, c], kind="stable")[:4]
            np.testing.assert_allclose(art.arrays["values"][r], brute[expected, c], rtol=1e-5)
            assert set(art.arrays["images"][r].tolist()) == set(expected.tolist()) or np.allclose(
                np.sort(brute[art.arrays["images"][r], c]), np.sort(brute[expected, c]))
            for k, (i, (row, col), box) in enumerate(zip(art.arrays["images"][r], art.arrays["positions"][r],
                                                        art.arrays["boxes"][r])):
                value = acts[i][c, row, col].item()
                assert abs(value - art.arrays["values"][r, k]) < 1e-5  # the recorded activation, recomputed
                assert tuple(box) == rf.box(int(row), int(col), 32, 32)
        sizes[layer] = rf.size
    assert sizes == {"relu1": 3, "relu2": 8}  # deeper layers see larger patches


def test_patches_are_cropped_at_the_box_and_figures_drawn(tmp_path: Path):
    data = colour_dataset(per_class=4)
    ctx, draw = data_context(tiny_net(), data, tmp_path / "cache", ["relu2"])
    technique = MaxPatches()
    j = job("max_patches", MaxPatchesParams(channels=[1, 3], top_k=3), "relu2")
    art = technique.run(ctx, [j])[0]
    top, left, bottom, right = art.arrays["boxes"][0, 0]
    patch = technique.patch(draw, int(art.arrays["images"][0, 0]), art.arrays["boxes"][0, 0])
    assert patch.shape[:2] == (bottom - top, right - left)
    figures = technique.draw(art, j, draw, tmp_path / "fig" / "relu2.png")
    assert list(figures) == ["main", "unit-1", "hist-1", "unit-3", "hist-3"]
    assert all(p.stat().st_size > 1000 for p in figures.values())


def test_spread_skips_channels_that_never_fire():
    maxima = np.zeros((5, 10), dtype=np.float32)
    maxima[2, [1, 4, 6, 9]] = 1.0
    assert spread(maxima, 3) == [1, 6, 9] or spread(maxima, 3) == [1, 4, 9]
    assert spread(maxima, 8) == [1, 4, 6, 9]
    assert spread(np.zeros((2, 3)), 2) == [0, 2]


def test_top_k_breaks_ties_by_index():
    assert top_k(np.array([1.0, 3.0, 3.0, 2.0]), 3).tolist() == [1, 2, 3]
