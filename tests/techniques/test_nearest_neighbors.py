"""Nearest neighbours: equal to a brute-force search over the stored features; on Fashion-MNIST with the trained model,
feature-space neighbours share the query's label more often than pixel-space ones."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers import tiny_net, colour_dataset, data_context, job
from generator import idx
from generator.datasets import Dataset, stratified
from generator.techniques.dataset.nearest_neighbors import NearestNeighbors, NearestNeighborsParams


def brute(queries: np.ndarray, base: np.ndarray, k: int, metric: str, exclude: np.ndarray) -> np.ndarray:
    if metric == "cosine":
        qn = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
        bn = base / np.maximum(np.linalg.norm(base, axis=1, keepdims=True), 1e-12)
        d = 1 - qn @ bn.T
    else:
        d = np.sqrt(((queries[:, None, :].astype(np.float64) - base[None]) ** 2).sum(-1))
    d[np.arange(len(queries)), exclude] = np.inf
    return np.argsort(d, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_neighbours_equal_a_brute_force_search(tmp_path: Path, metric: str):
    data = colour_dataset(per_class=7)
    ctx, _ = data_context(tiny_net(), data, tmp_path, ["gap"])
    art = NearestNeighbors().run(ctx, [job("nearest_neighbors", NearestNeighborsParams(k=4, queries=6, metric=metric),
                                           "gap")])[0]
    queries = art.arrays["queries"]
    vectors = np.asarray(ctx.features.layer("gap").vectors, dtype=np.float64)
    pixels = np.asarray(ctx.features.pixels(), dtype=np.float64)
    np.testing.assert_array_equal(art.arrays["feature_neighbors"], brute(vectors[queries], vectors, 4, metric, queries))
    np.testing.assert_array_equal(art.arrays["pixel_neighbors"], brute(pixels[queries], pixels, 4, "l2", queries))
    assert (art.arrays["feature_neighbors"] != queries[:, None]).all()  # a query is never its own neighbour
    assert sorted(data.labels[queries].tolist()) == [0, 0, 1, 1, 2, 2]  # spread over the classes
    m = art.meta["metrics"]
    assert 0 <= m["feature_agreement"] <= 1 and 0 <= m["pixel_agreement"] <= 1
    assert m["chance"] == pytest.approx(1 / 3)


@pytest.mark.skipif(not idx.DEBIAN_ROOT.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_feature_neighbours_beat_pixel_neighbours(tmp_path: Path):
    from PIL import Image

    from generator.builtin import fashion_mnist as fm
    from generator.spec import InputSpec

    pictures, labels = idx.load_fashion_mnist(idx.DEBIAN_ROOT, "test")
    keep = stratified(labels, 1500, seed=0)
    data = Dataset("fashion", "test", list(idx.FASHION_MNIST_CLASSES), labels[keep], [str(i) for i in keep], "fm",
                   lambda i: Image.fromarray(pictures[keep[i]], "L"))
    ctx, _ = data_context(fm.fashion_mnist_net(), data, tmp_path, [], size=28)
    ctx.model.input = InputSpec(size=28, resize=28, mean=[fm.MEAN], std=[fm.STD], mode="L")
    technique = NearestNeighbors()
    layer = technique.layers(ctx.model, NearestNeighborsParams())[0]
    art = technique.run(ctx, [job("nearest_neighbors", NearestNeighborsParams(k=5), layer)])[0]
    m = art.meta["metrics"]
    assert m["feature_agreement"] > 0.85  # the trained model's last layer groups the classes ...
    assert m["feature_agreement"] > m["pixel_agreement"] + 0.05  # ... better than raw pixels do
    assert m["pixel_agreement"] > 3 * m["chance"]  # pixels are not useless either: the comparison is fair
