"""Exact nearest neighbours: against a float64 numpy reference and scikit-learn's brute force, with chunks smaller
than the data so every merge path runs; leave-one-out, stable ties, zero vectors, label agreement."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestNeighbors

from generator.techniques.dataset.knn import label_agreement, nearest


def reference(queries, base, k, metric, exclude=None):
    """Brute force in float64; ties to the lower index (lexsort on index, then distance)."""
    q, b = queries.astype(np.float64), base.astype(np.float64)
    if metric == "l2":
        d = np.sqrt(((q[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    else:
        qn = np.linalg.norm(q, axis=1, keepdims=True)
        bn = np.linalg.norm(b, axis=1, keepdims=True)
        d = 1 - (q / np.where(qn > 0, qn, 1)) @ (b / np.where(bn > 0, bn, 1)).T
    if exclude is not None:
        d[np.arange(len(q)), exclude] = np.inf
    order = np.stack([np.lexsort((np.arange(len(b)), row)) for row in d])[:, :k]
    return order, np.take_along_axis(d, order, 1)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(70, 12)).astype(np.float32), rng.normal(size=(530, 12)).astype(np.float32)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("chunk", [64, None])
def test_matches_numpy_and_sklearn(data, metric, chunk):
    queries, base = data
    index, dist = nearest(queries, base, 7, metric=metric, chunk=chunk)  # 64: 2 query chunks × 9 base chunks
    assert index.shape == dist.shape == (70, 7) and index.dtype == np.int64 and dist.dtype == np.float32
    ref_index, ref_dist = reference(queries, base, 7, metric)
    np.testing.assert_array_equal(index, ref_index)
    np.testing.assert_allclose(dist, ref_dist, atol=1e-5)
    sk = NearestNeighbors(n_neighbors=7, algorithm="brute", metric="euclidean" if metric == "l2" else "cosine")
    sk_dist, sk_index = sk.fit(base).kneighbors(queries)
    np.testing.assert_array_equal(index, sk_index)
    np.testing.assert_allclose(dist, sk_dist, atol=1e-5)


def test_torch_inputs_and_small_base_chunks(data):
    queries, base = data
    index, dist = nearest(torch.from_numpy(queries), torch.from_numpy(base), 5, metric="l2", chunk=5)
    ref_index, ref_dist = reference(queries, base, 5, "l2")
    np.testing.assert_array_equal(index, ref_index)  # base chunks as small as k: every merge decides
    np.testing.assert_allclose(dist, ref_dist, atol=1e-5)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_leave_one_out(data, metric):
    _, base = data
    own = np.arange(len(base))
    index, dist = nearest(base, base, 4, metric=metric, chunk=100, exclude=own)
    assert not (index == own[:, None]).any()
    ref_index, ref_dist = reference(base, base, 4, metric, exclude=own)
    np.testing.assert_array_equal(index, ref_index)
    np.testing.assert_allclose(dist, ref_dist, atol=1e-5)
    # Without exclusion a point's nearest neighbour is itself, at distance 0.
    index, dist = nearest(base, base, 1, metric=metric, chunk=100)
    np.testing.assert_array_equal(index[:, 0], own)
    np.testing.assert_allclose(dist[:, 0], 0, atol=1e-6)


def test_exclude_minus_one_and_k_clipped(data):
    _, base = data
    exclude = np.where(np.arange(10) % 2 == 0, np.arange(10), -1)
    index, _ = nearest(base[:10], base[:10], 20, metric="l2", exclude=exclude)
    assert index.shape == (10, 9)  # clipped to N - 1
    np.testing.assert_array_equal(index[1::2, 0], np.arange(1, 10, 2))  # not excluded: itself first
    assert not (index[::2] == np.arange(0, 10, 2)[:, None]).any()


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_ties_go_to_the_lower_index(metric):
    rng = np.random.default_rng(1)
    distinct = rng.normal(size=(20, 6)).astype(np.float32)
    base = distinct[rng.integers(0, 20, size=300)]  # each vector about 15 times, scattered over the base
    index, _ = nearest(distinct, base, 12, metric=metric, chunk=37)
    ref_index, _ = reference(distinct, base, 12, metric)
    np.testing.assert_array_equal(index, ref_index)
    for q, row in enumerate(index):
        copies = np.flatnonzero((base == distinct[q]).all(1))
        np.testing.assert_array_equal(row[: min(12, len(copies))], copies[:12])


def test_near_duplicates_l2():
    """Far from the origin the expanded square cancels catastrophically; the exact re-ranking does not."""
    rng = np.random.default_rng(2)
    centre = np.full(32, 1000.0, np.float32)
    base = centre + rng.normal(scale=1e-3, size=(200, 32)).astype(np.float32)
    queries = base[:20] + np.float32(1e-4)
    index, dist = nearest(queries, base, 3, metric="l2", chunk=50)
    ref_index, ref_dist = reference(queries, base, 3, "l2")
    np.testing.assert_array_equal(index[:, 0], ref_index[:, 0])
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-2, atol=1e-6)


def test_zero_vectors_cosine():
    rng = np.random.default_rng(3)
    base = rng.normal(size=(50, 8)).astype(np.float32)
    base[[3, 17]] = 0
    queries = np.vstack([np.zeros((1, 8), np.float32), base[:4]])
    index, dist = nearest(queries, base, 50, metric="cosine", chunk=16)
    assert np.isfinite(dist).all()
    np.testing.assert_allclose(dist[0], 1.0)  # a zero query is at distance 1 from everything: lowest indices first
    np.testing.assert_array_equal(index[0], np.arange(50))
    for row, d in zip(index[1:], dist[1:]):
        np.testing.assert_allclose(d[np.isin(row, [3, 17])], 1.0)
    ref_index, ref_dist = reference(queries, base, 50, "cosine")
    np.testing.assert_allclose(dist, ref_dist, atol=1e-5)


def test_rejects_bad_input(data):
    queries, base = data
    with pytest.raises(ValueError):
        nearest(queries, base[:, :5], 3)
    with pytest.raises(ValueError):
        nearest(queries, base, 3, metric="manhattan")
    bad = queries.copy()
    bad[0, 0] = np.nan
    for metric in ("l2", "cosine"):
        with pytest.raises(ValueError, match="queries"):
            nearest(bad, base, 3, metric=metric)
        with pytest.raises(ValueError, match="base"):
            nearest(queries, np.vstack([base, bad]), 3, metric=metric)


def test_label_agreement():
    base_labels = np.array([0, 0, 1, 1, -1])
    neighbors = np.array([[0, 1], [2, 3], [0, 2], [4, 4], [0, 1]])
    query_labels = np.array([0, 0, 1, 1, -1])
    # query 0: 2/2; query 1: 0/2; query 2: 1/2; query 3: no labelled neighbour; query 4: unlabelled.
    assert label_agreement(neighbors, base_labels, query_labels) == pytest.approx((1 + 0 + 0.5) / 3)
    assert np.isnan(label_agreement(neighbors[3:4], base_labels, query_labels[3:4]))
