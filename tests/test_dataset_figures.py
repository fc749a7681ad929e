"""Data-set figures: each writes a PNG of a sensible size from grayscale and colour pictures, patches of different
sizes, and labels including unknown (-1)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from generator.techniques.dataset import figures as figs


def png(path, min_w=100, min_h=60):
    assert path.is_file() and path.stat().st_size > 1000
    with Image.open(path) as im:
        assert im.format == "PNG"
        w, h = im.size
        assert w >= min_w and h >= min_h and w < 6000 and h < 8000
        return np.asarray(im.convert("RGB"))


@pytest.fixture
def pictures():
    rng = np.random.default_rng(0)
    gray = [rng.integers(0, 256, (28, 28), dtype=np.uint8) for _ in range(6)]
    rgb = [rng.integers(0, 256, (40, 30, 3), dtype=np.uint8) for _ in range(6)]
    return gray, rgb


def test_embedding_scatter(tmp_path):
    rng = np.random.default_rng(1)
    points = rng.normal(size=(300, 2))
    labels = rng.integers(-1, 3, size=300)
    figs.embedding_scatter(points, labels, ["a", "b", "c"], tmp_path / "s.png", "t-SNE of fc7")
    png(tmp_path / "s.png", 300, 300)
    many = rng.integers(0, 25, size=300)  # beyond tab20: colours cycled, markers change
    figs.embedding_scatter(points, many, [f"class {i}" for i in range(25)], tmp_path / "m.png", "PCA",
                           axis_labels=("PC1 (20%)", "PC2 (10%)"))
    png(tmp_path / "m.png", 300, 300)


@pytest.mark.parametrize("kind", ["gray", "rgb"])
def test_thumbnail_grid(tmp_path, pictures, kind):
    pics = pictures[0] if kind == "gray" else pictures[1]
    assignment = np.array([[0, 1, 2], [3, -1, 5]])
    figs.thumbnail_grid(pics, assignment, tmp_path / "g.png", cell=32)
    d = figs.DENSITY  # drawn at 2×, shown at 96 × 64 CSS pixels
    out = png(tmp_path / "g.png", 96 * d, 64 * d)
    assert out.shape[:2] == (64 * d, 96 * d)
    assert (out[32 * d:64 * d, 32 * d:64 * d] == 255).all()  # the empty cell is white
    if kind == "gray":  # grey stays grey
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_neighbor_rows(tmp_path, pictures):
    gray, rgb = pictures
    queries = [gray[0], rgb[0]]
    feature = [gray[1:5], rgb[1:5]]
    pixel = [gray[2:6], rgb[2:6]]
    titles = [[f"class {j}\nd={0.1 * j:.2f}" for j in range(4)]] * 2
    match = [[True, False, True, True], [False, False, True, False]]
    figs.neighbor_rows(queries, feature, pixel, tmp_path / "n.png", ["query: shirt", "query: bag"], titles, titles,
                       feature_match=match, pixel_match=match, space_title="fc7 (cosine)")
    out = png(tmp_path / "n.png", 300, 300)
    green, red = figs.MATCH, figs.MISMATCH
    assert (out == green).all(-1).sum() > 100 and (out == red).all(-1).sum() > 100  # both kinds of frame drawn
    figs.neighbor_rows(queries, feature, [[], []], tmp_path / "f.png", ["q1", "q2"], titles, [[], []])
    assert png(tmp_path / "f.png", 300, 100).shape[0] < out.shape[0]  # no pixel rows: shorter


def test_patch_grid(tmp_path, pictures):
    gray, rgb = pictures
    rng = np.random.default_rng(2)
    patches = [[rng.integers(0, 256, (3, 3, 3), dtype=np.uint8), rgb[0], rgb[1][:, :11]],  # tiny, large, clipped
               [gray[0], gray[1][:7, :7]]]
    figs.patch_grid(patches, ["channel 3", "channel 17"], [["1.2", "0.9", "0.8"], ["4.0", "3.1"]],
                    tmp_path / "p.png", cell=48)
    png(tmp_path / "p.png", 150, 100)


def test_activation_histograms(tmp_path):
    rng = np.random.default_rng(3)
    skewed = np.concatenate([np.zeros(900), rng.exponential(size=100)])  # mostly silent: log counts
    values = [rng.normal(size=1000), skewed, rng.uniform(size=1000)]
    marks = [np.sort(v)[-5:] for v in values]
    figs.activation_histograms(values, ["ch 0", "ch 1", "ch 2"], tmp_path / "h.png", marks=marks)
    png(tmp_path / "h.png", 300, 100)
    figs.activation_histograms(values * 3, [f"ch {i}" for i in range(9)], tmp_path / "h9.png")
    png(tmp_path / "h9.png", 300, 200)
