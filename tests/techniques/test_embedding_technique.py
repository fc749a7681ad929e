"""The embedding technique: t-SNE and PCA of a layer's features, measured on the page."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from helpers import tiny_net, colour_dataset, data_context, job
from generator.techniques.dataset.embedding import Embedding, EmbeddingParams


def test_embedding_of_separable_classes_is_trustworthy_and_drawn(tmp_path: Path):
    data = colour_dataset(per_class=15)
    ctx, draw = data_context(tiny_net(), data, tmp_path / "cache", ["gap"])
    technique = Embedding()
    j = job("embedding", EmbeddingParams(grid=6), "gap")
    art = technique.run(ctx, [j])[0]
    m = art.meta["metrics"]
    assert art.arrays["tsne"].shape == art.arrays["pca"].shape == (45, 2)
    assert m["tsne_trustworthiness"] > 0.8 and m["pca_trustworthiness"] > 0.8
    assert m["tsne_knn_agreement"] > 0.8  # colours separate even in a random net's pooled features
    grid = art.arrays["grid"]
    assert grid.shape == (6, 6) and len(set(grid.ravel().tolist()) - {-1}) == 36
    again = technique.run(ctx, [j])[0]
    np.testing.assert_array_equal(again.arrays["tsne"], art.arrays["tsne"])  # seeded
    figures = technique.draw(art, j, draw, tmp_path / "fig" / "gap.png")
    assert list(figures) == ["main", "pca", "grid"] and all(p.stat().st_size > 1000 for p in figures.values())
