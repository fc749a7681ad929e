"""2-D maps of feature vectors (PCA, t-SNE), how faithful a map is, and the t-SNE thumbnail grid's layout."""
from __future__ import annotations

import os

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.decomposition import PCA
from sklearn.manifold import trustworthiness as _sk_trustworthiness

from generator.techniques.dataset.knn import label_agreement, nearest

PRE_PCA = 50  # t-SNE runs on this many principal components (van der Maaten's recommendation)
# Below this many points openTSNE runs on one thread: each of its iterations is too little work to share, and the
# threads' hand-offs dominate. Measured on the shared 2-core machine under load, with openTSNE's 750 iterations: 15
# points 0.2–0.3 s on one thread against 6.7–18.9 s on two; 200 points 1.0 s against 8.5–24.5 s; 1 000 points
# 8.7–9.1 s against 25–27 s.
SMALL_TSNE = 2000
TRUST_POINTS = 5000  # scikit-learn's trustworthiness holds an N × N distance matrix and its argsort
# The optimization's schedule (openTSNE's default: 250 iterations with early exaggeration 12, then 500 plain, an FFT
# grid of at least 50 intervals per side). Measured on Fashion-MNIST (site_src/tuning.md#t-sne-and-pca-embedding):
# 125 exaggerated iterations did as well as 250 from 2 000 to 60 000 points; 250 plain iterations gave the same
# trustworthiness as 500 and a 5-NN class agreement within 0.002 (less than between seeds) up to 10 000 points, but
# 0.005 below it at 60 000, whose larger map takes longer to spread. Hence 250 plain iterations up to 10 000 points,
# then growing with the map's extent (√N) back to openTSNE's 500 from 40 000.
EARLY_ITER = 125  # iterations with early exaggeration 12 (learning rate N / 12)
PLAIN_ITER = 250  # plain iterations (learning rate N) up to PLAIN_POINTS points
PLAIN_POINTS = 10_000
MAX_PLAIN_ITER = 500  # openTSNE's
# The FFT gradients' grid (from 10 000 points) has an interval per unit of the map's extent, but at least this many
# per side: only the exaggerated map (about 8 units across) is that small. There openTSNE's 50 took 23 ms a gradient
# and 25 took 12 ms, with a relative error of 5e-5 and 4e-4 against the exact gradient (the spread map's one
# interval per unit has 3e-2), and the same maps.
MIN_INTERVALS = 25


def plain_iterations(n: int) -> int:
    """Plain (unexaggerated) iterations for n points: PLAIN_ITER up to PLAIN_POINTS, then ∝ √n, at most 500."""
    return int(min(MAX_PLAIN_ITER, max(PLAIN_ITER, round(PLAIN_ITER * (n / PLAIN_POINTS) ** 0.5))))


def _jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pca(vectors: np.ndarray, dims: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(points (N, dims) float32, explained variance ratio per component (dims,)). Components the data cannot have
    (dims > min(N, D), or fewer than two points) come back as zero columns with ratio 0, so the shape is fixed."""
    x = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), -1)
    n, d = x.shape
    points = np.zeros((n, dims), np.float32)
    ratio = np.zeros(dims, np.float64)
    usable = min(dims, n, d) if n >= 2 else 0
    if usable:
        model = PCA(n_components=usable, random_state=seed)
        points[:, :usable] = model.fit_transform(x)
        ratio[:usable] = np.nan_to_num(model.explained_variance_ratio_)  # nan when every vector is the same
    return points, ratio


def tsne(vectors: np.ndarray, seed: int = 0, perplexity: float = 30.0, n_jobs: int | None = None,
         device: torch.device | str = "cpu", early_iter: int = EARLY_ITER, n_iter: int | None = None) -> np.ndarray:
    """(N, 2) float32 t-SNE map (openTSNE, PCA initialization), of the first 50 principal components when D > 50.

    Perplexity is clipped to (N - 1) / 3, the most that N points support (each point needs 3 × perplexity
    neighbours); fewer than 4 points get their PCA map. The 3 × perplexity neighbours are exact, found with
    generator.techniques.dataset.knn on `device`: openTSNE's own Annoy index (used from 1 000 points) builds different
    trees with different thread counts, so the same seed gave different maps on machines with different cores.
    n_jobs: openTSNE's threads, by default every core this process may use (one below SMALL_TSNE points). The map does
    not depend on it (openTSNE adds up its gradients in the same order on any number of threads), and nothing else
    here depends on the thread count either: the gradient method and the schedule follow from N alone.

    Schedule: `early_iter` iterations with early exaggeration 12, then `n_iter` plain ones (by default
    plain_iterations(N): 250 up to 10 000 points, rising to 500 from 40 000), with openTSNE's learning rate (N / 12,
    then N) and momentum (0.8). openTSNE's default is 250 + 500. On 10 000 Fashion-MNIST vectors the shorter schedule
    gave the same trustworthiness (0.9955) and a 5-NN class agreement within 0.002 of the default's, in 40% of the
    time: trustworthiness has settled after 150 plain iterations, and what follows mostly spreads the map, on an FFT
    grid that grows with it (openTSNE's last 250 iterations were 57% of its time). Gradients: openTSNE's Barnes-Hut
    below 10 000 points, FFT interpolation from there, on a grid of at least MIN_INTERVALS per side. Measured:
    site_src/tuning.md#t-sne-and-pca-embedding.

    openTSNE rather than scikit-learn's TSNE: the same quality in less time, and its FFT gradients scale linearly in
    N (measured: site_src/tuning.md#t-sne-and-pca-embedding).
    """
    from openTSNE import TSNE
    from openTSNE.affinity import PerplexityBasedNN
    from openTSNE.nearest_neighbors import PrecomputedNeighbors

    x = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), -1)
    n = len(x)
    if n < 4:
        return pca(x, 2, seed)[0]
    if x.shape[1] > PRE_PCA:
        x = pca(x, PRE_PCA, seed)[0]
    perplexity = float(min(perplexity, (n - 1) / 3))
    jobs = n_jobs or (1 if n < SMALL_TSNE else _jobs())
    index, dist = nearest(x, x, min(n - 1, int(3 * perplexity)), metric="l2", device=device,
                          exclude=np.arange(n))
    affinities = PerplexityBasedNN(perplexity=perplexity, n_jobs=jobs, knn_index=PrecomputedNeighbors(index, dist))
    # openTSNE's "auto" gradient: Barnes-Hut below 10 000 points, FFT interpolation from there. FFT's grid is a
    # fixed cost: 150 points took 25 s with FFT, 1.8 s with Barnes-Hut. At 10 000 points on the shared 2-core machine
    # FFT's 125 + 250 iterations took 22–28 s, Barnes-Hut's 40–47 s (openTSNE computes the FFT repulsion on one
    # thread, but load from other work left Barnes-Hut's second thread little to gain).
    model = TSNE(n_components=2, initialization="pca", random_state=seed, n_jobs=jobs,
                 early_exaggeration_iter=early_iter, n_iter=plain_iterations(n) if n_iter is None else n_iter,
                 min_num_intervals=MIN_INTERVALS, negative_gradient_method="auto", verbose=False)
    return np.asarray(model.fit(x, affinities=affinities), dtype=np.float32)


def trustworthiness(vectors: np.ndarray, points: np.ndarray, k: int = 5, max_points: int | None = TRUST_POINTS,
                    seed: int = 0) -> float:
    """scikit-learn's trustworthiness of the map (1: every map neighbour is a neighbour in the original space too;
    about 0.5: unrelated). k is clipped below N / 2 as it requires; nan for fewer than 3 points. Above `max_points`
    points it is measured on a seeded random subset of that many (neighbourhoods within the subset), since it
    holds an N × N matrix."""
    x = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), -1)
    y = np.asarray(points, dtype=np.float32)
    n = len(x)
    if max_points and n > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
        x, y, n = x[keep], y[keep], max_points
    k = min(int(k), (n - 1) // 2)
    if k < 1:
        return float("nan")
    return float(_sk_trustworthiness(x, y, n_neighbors=k))


def knn_label_agreement(points: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Mean fraction of each point's k nearest neighbours in the map (itself left out) sharing its label; labels
    < 0 are unknown and ignored. nan when nothing can be counted."""
    points = np.asarray(points, dtype=np.float32)
    if len(points) < 2:
        return float("nan")
    index, _ = nearest(points, points, k, metric="l2", exclude=np.arange(len(points)))
    labels = np.asarray(labels)
    return label_agreement(index, labels, labels)


def grid_assignment(points: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """(rows, cols) point indices laying a 2-D map out on a grid (Karpathy's cnnembed), -1 for empty cells.

    The map is stretched to the unit square (each axis on its own, as cnnembed does) with row 0 at the top (largest
    y, as the scatter plot shows it), and points and cell centres are matched one to one minimizing the total
    squared distance (scipy's linear_sum_assignment). Squared costs make the matching cyclically monotone: no two
    points swap sides on their way to their cells, so neighbours in the map stay neighbours on the grid. This holds
    for N < cells too (each point gets a cell, the rest stay empty), so no greedy fallback is needed. When points ×
    cells would exceed `_COST_LIMIT`, only the points nearest each cell centre compete.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    cells = rows * cols
    grid = np.full((rows, cols), -1, dtype=np.int64)
    if not len(pts) or not cells:
        return grid
    lo, span = pts.min(0), np.ptp(pts, 0)
    unit = np.where(span > 0, (pts - lo) / np.where(span > 0, span, 1), 0.5)
    r, c = np.divmod(np.arange(cells), cols)
    centres = np.stack([(c + 0.5) / cols, 1 - (r + 0.5) / rows], 1)  # (x, y) with y up, row 0 on top
    candidates = np.arange(len(pts))
    room = max(cells, _COST_LIMIT // cells)  # points the cost matrix has room for
    if len(pts) > room:
        near, _ = nearest(centres, unit, max(1, room // cells), metric="l2")
        candidates = np.unique(near)
        if len(candidates) < cells:  # clumped maps: top up with the other points closest to some cell
            rest = np.setdiff1d(np.arange(len(pts)), candidates)
            _, gap = nearest(unit[rest], centres, 1, metric="l2")
            extra = rest[np.argsort(gap[:, 0], kind="stable")[: cells - len(candidates)]]
            candidates = np.sort(np.concatenate([candidates, extra]))
    cost = ((centres[:, None, :] - unit[candidates][None, :, :]) ** 2).sum(-1)
    cell_of, point_of = linear_sum_assignment(cost)
    grid.reshape(-1)[cell_of] = candidates[point_of]
    return grid


# cells × points in the assignment's cost matrix: 256 MB of float64. A memory bound, not a time one: here a 50 × 50
# grid over 10 000 t-SNE points took 3.8 s in full and no less restricted to the points near each cell.
_COST_LIMIT = 32_000_000
