"""Exact k-nearest-neighbour search on the device, and how often neighbours share a label.

Brute force by matrix products: the data sets we describe (thousands to tens of thousands of feature vectors) are
small enough that exact search on a GPU takes well under a second, and exact results need no recall caveat on the
page. Memory stays bounded: the distance block is chunked over queries and over the base, and a running top-k is
merged after each base chunk.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch

Metric = Literal["cosine", "l2"]
BLOCK_BYTES = 256 << 20  # the largest block of distances; what the selection keeps of it is small
EXTRA = 8  # candidates kept beyond k, re-ranked by exact distances (float32 rounding can swap near-ties)


def nearest(queries: torch.Tensor | np.ndarray, base: torch.Tensor | np.ndarray, k: int, metric: Metric = "cosine",
            device: torch.device | str = "cpu", chunk: int | None = None, exclude: np.ndarray | None = None,
            block_bytes: int = BLOCK_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest base rows of each query: indices (Q, k) int64 and distances (Q, k) float32, nearest first,
    equal distances in order of index.

    metric "l2" is the Euclidean distance; "cosine" is 1 - cosine similarity, with a zero vector at distance 1 from
    everything (as scikit-learn's cosine_distances). `exclude[q]` is a base index never returned for query q (its
    own row, for leave-one-out), or -1. k is clipped to the rows available (N, or N - 1 when anything is excluded).
    `chunk` sets the rows per query chunk and per base chunk; by default both follow from `block_bytes`.
    """
    if metric not in ("cosine", "l2"):
        raise ValueError(f"metric must be 'cosine' or 'l2', not {metric!r}")
    device = torch.device(device)
    q = _as_tensor(queries, device)
    if q.ndim != 2 or len(base.shape) != 2 or q.shape[1] != base.shape[1]:
        raise ValueError(f"queries {tuple(q.shape)} and base {tuple(base.shape)} must be 2-D with the same width")
    n_base, dims = base.shape
    if n_base == 0:
        raise ValueError("the base is empty")
    n_query = q.shape[0]
    if exclude is not None:
        exclude = np.asarray(exclude, dtype=np.int64).reshape(-1)
        if len(exclude) != n_query:
            raise ValueError(f"exclude has {len(exclude)} entries for {n_query} queries")
        exclude = exclude if (exclude >= 0).any() else None
    k = min(int(k), n_base - (exclude is not None))
    if k < 1:
        raise ValueError("k must be at least 1 and the base must have a row to return")
    if n_query == 0:
        return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
    keep = min(k + EXTRA, n_base - (exclude is not None))
    # l2 ignores a shift, but the expanded square does not: where ||b||² ≈ ||q||² ≫ ||q - b||² float32 keeps no digit
    # of the difference (features after a ReLU sit far from the origin). Measured from the base's mean it keeps them.
    shift = _mean(base, device, rows=max(1, block_bytes // 4 // dims)) if metric == "l2" else None
    q_raw = q
    q, _ = _prepared(q, shift, "queries")
    budget = max(1, block_bytes // 4)
    base_rows = chunk or min(n_base, max(4096, budget // min(n_query, 2048)))
    query_rows = chunk or max(1, min(n_query, budget // base_rows))
    excluded = torch.from_numpy(exclude).to(device) if exclude is not None else None

    # Ranking scores, not yet distances: for l2 ||b||² - 2 q·b (||q||² is the same along a row), for cosine -q·b.
    # Base chunks outside, query chunks inside: each base row crosses to the device once.
    best_score = torch.full((n_query, keep), float("inf"), device=device)
    best_index = torch.zeros((n_query, keep), dtype=torch.int64, device=device)
    zero = torch.zeros((), device=device)
    for b0 in range(0, n_base, base_rows):
        b, b_sq = _prepared(_as_tensor(base[b0:b0 + base_rows], device), shift, f"base rows {b0}..")
        for q0 in range(0, n_query, query_rows):
            qc = q[q0:q0 + query_rows]
            if metric == "cosine":
                score = torch.addmm(zero, qc, b.T, beta=0.0, alpha=-1.0)
            else:
                score = torch.addmm(b_sq.unsqueeze(0), qc, b.T, alpha=-2.0)
            if excluded is not None:
                ex = excluded[q0:q0 + len(qc)] - b0
                rows = torch.nonzero((ex >= 0) & (ex < len(b))).squeeze(1)
                score[rows, ex[rows]] = float("inf")
            s, i = _smallest(score, min(keep, score.shape[1]))
            # Earlier chunks' candidates first: their indices are lower, so position order is index order on ties.
            s, pos = _smallest(torch.cat([best_score[q0:q0 + len(qc)], s], 1), keep)
            i = torch.cat([best_index[q0:q0 + len(qc)], i + b0], 1).gather(1, pos)
            best_score[q0:q0 + len(qc)], best_index[q0:q0 + len(qc)] = s, i

    # Exact distances of the candidates, from differences rather than the expanded square, which loses all precision
    # on near-duplicates; re-ranked by them (index order on ties) and cut to k.
    out_index = np.empty((n_query, k), np.int64)
    out_dist = np.empty((n_query, k), np.float32)
    rerank_rows = max(1, budget // (keep * dims))
    for q0 in range(0, n_query, rerank_rows):
        idx = best_index[q0:q0 + rerank_rows]
        cand = _gather(base, idx, device)
        d = _exact(q_raw[q0:q0 + rerank_rows], cand, metric)
        by_index = torch.argsort(idx, dim=1, stable=True)
        d, idx = d.gather(1, by_index), idx.gather(1, by_index)
        order = torch.argsort(d, dim=1, stable=True)[:, :k]
        out_index[q0:q0 + len(idx)] = idx.gather(1, order).cpu().numpy()
        out_dist[q0:q0 + len(idx)] = d.gather(1, order).cpu().numpy()
    return out_index, out_dist


def _as_tensor(x: torch.Tensor | np.ndarray, device: torch.device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(device=device, dtype=torch.float32)
    x = np.ascontiguousarray(x, dtype=np.float32)
    return torch.from_numpy(x if x.flags.writeable else x.copy()).to(device)


def _mean(base: torch.Tensor | np.ndarray, device: torch.device, rows: int) -> torch.Tensor:
    """The mean row, chunk by chunk (a base too large for the device is never there whole). Any point near the
    data serves as the origin, so float32 is plenty (and MPS has no float64)."""
    total = torch.zeros(base.shape[1], device=device)
    for b0 in range(0, base.shape[0], rows):
        total += _as_tensor(base[b0:b0 + rows], device).sum(0)
    if not torch.isfinite(total).all():
        raise ValueError("the base contains inf or nan")
    return total / base.shape[0]


def _gather(base: torch.Tensor | np.ndarray, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
    """base[idx] for (rows, c) indices → (rows, c, D) float32 on the device, without moving the whole base there."""
    if isinstance(base, torch.Tensor):
        return _as_tensor(base.detach()[idx.to(base.device)], device)
    return _as_tensor(np.asarray(base)[idx.cpu().numpy()], device)


def _prepared(x: torch.Tensor, shift: torch.Tensor | None, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ready for the products and their squared norms: shifted rows (l2), or unit rows (cosine, shift None;
    zero rows stay zero: similarity 0, distance 1). Any inf or nan in a row reaches its norm, so checking the norms
    checks the rows at a fraction of the cost."""
    if shift is not None:
        x = x - shift
    norm = torch.linalg.vector_norm(x, dim=1)
    if not torch.isfinite(norm).all():
        raise ValueError(f"{what} contain inf or nan")
    if shift is None:
        return x * _inverse(norm).unsqueeze(1), norm
    return x, norm.square()


def _inverse(norm: torch.Tensor) -> torch.Tensor:
    return torch.where(norm > 0, norm.reciprocal(), 0.0)


def _exact(q: torch.Tensor, cand: torch.Tensor, metric: Metric) -> torch.Tensor:
    """Distances from each query (rows, D) to its candidates (rows, c, D), from differences. For unit vectors
    1 - cos = ||a - b||² / 2, which keeps its precision where a ≈ b; a zero vector on either side is at distance 1."""
    if metric == "l2":
        return torch.linalg.vector_norm(q.unsqueeze(1) - cand, dim=2)
    q_norm, c_norm = torch.linalg.vector_norm(q, dim=1, keepdim=True), torch.linalg.vector_norm(cand, dim=2)
    diff = torch.addcmul(-(q * _inverse(q_norm)).unsqueeze(1), cand, _inverse(c_norm).unsqueeze(2))
    d = torch.linalg.vector_norm(diff, dim=2).square_().mul_(0.5)
    return d.masked_fill_((q_norm == 0) | (c_norm == 0), 1.0)


def _smallest(score: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k smallest entries of each row and their columns, ascending; of equal entries the lower column wins.

    torch.topk promises nothing about ties. Asked for one entry more than needed, it settles every row whose k-th
    and (k+1)-th values differ (the k smallest are then unambiguous; they are sorted by column, then stably by
    value). Rows with a tie across the cut (duplicates, zero vectors) take the exact path, which passes over the
    whole row a few more times."""
    n = score.shape[1]
    vals, cols = torch.topk(score, min(k + 1, n), dim=1, largest=False, sorted=True)
    if n > k:
        tied = torch.nonzero(vals[:, k - 1] == vals[:, k]).squeeze(1)
        vals, cols = vals[:, :k].clone(), cols[:, :k].clone()
        if len(tied):
            vals[tied], cols[tied] = _smallest_with_ties(score[tied], k)
    by_col = torch.argsort(cols, dim=1)
    vals, cols = vals.gather(1, by_col), cols.gather(1, by_col)
    order = torch.argsort(vals, dim=1, stable=True)
    return vals.gather(1, order), cols.gather(1, order)


def _smallest_with_ties(score: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """As _smallest, for any rows: everything below the k-th value t, then the entries equal to t in column order,
    as many as are still needed (columns ascending, not yet sorted by value)."""
    t = torch.topk(score, k, dim=1, largest=False, sorted=True).values[:, -1:]
    below = score < t
    need = k - below.sum(1, keepdim=True)
    tie = score == t
    take = below | (tie & (torch.cumsum(tie, 1, dtype=torch.int32) <= need))
    cols = torch.nonzero(take)[:, 1].view(-1, k)  # row-major: columns ascending within each row
    return score.gather(1, cols), cols


def label_agreement(neighbor_indices: np.ndarray, base_labels: np.ndarray, query_labels: np.ndarray) -> float:
    """Mean over labelled queries of the fraction of their labelled neighbours that share the query's label
    (labels < 0 are unknown and left out on both sides); nan when no labelled query has a labelled neighbour."""
    neighbor_labels = np.asarray(base_labels)[np.asarray(neighbor_indices)]
    query_labels = np.asarray(query_labels).reshape(-1, 1)
    known = (neighbor_labels >= 0) & (query_labels >= 0)
    counted = known.sum(1)
    same = ((neighbor_labels == query_labels) & known).sum(1)
    rows = counted > 0
    return float(np.mean(same[rows] / counted[rows])) if rows.any() else float("nan")
