"""Representation similarity for comparing two models: linear CKA (full batch and minibatch), per-channel correlation,
channel matching and rank correlation.

- Linear CKA, Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited" (ICML): the centred
  kernel alignment of two representations of the same N examples, invariant to orthogonal transforms and isotropic
  scaling of either side but not to general invertible linear maps. `linear_cka` computes it on all N examples at once.
- Minibatch CKA, Nguyen, Raghu & Kornblith 2021, "Do Wide and Deep Networks Learn the Same Things?" (ICLR): the
  unbiased HSIC estimator of Song et al. 2012 ("Feature Selection via Dependence Maximization", JMLR) averaged over
  minibatches, so that every pair of layers of two models is compared in one pass in O(B² + B·D) memory per layer,
  whatever N. `unbiased_hsic` and `MinibatchCKA`.
- `channel_correlation`, `matching` and `spearman`: Pearson correlation of corresponding channels, the permutation of
  channels that best matches one layer to another (the two differ for a network whose channels were permuted, which
  CKA ignores), and Spearman's rank correlation (e.g. of two attribution maps).

Only numpy and torch are needed at import; scipy (a dependency of scikit-learn) is imported by `matching` and
`spearman` when called. Nothing here imports the rest of the generator.
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["linear_cka", "unbiased_hsic", "MinibatchCKA", "channel_correlation", "matching", "spearman"]


def _as_float64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _rows(x) -> np.ndarray:
    """(N, ...) → float64 (N, features)."""
    x = _as_float64(x)
    if x.ndim == 1:
        x = x[:, None]
    return x.reshape(len(x), -1)


def _constant(x: np.ndarray) -> bool:
    """Every row the same: the representation has zero variance (tested exactly, not on the centred values, where
    rounding can leave tiny nonzeros)."""
    return bool(np.all(x == x[:1]))


def linear_cka(x, y) -> float:
    """Full-batch linear CKA of Kornblith et al. 2019 between x (N, D) and y (N, E), rows = the same N examples
    (numpy or torch; more than 2-D is flattened to (N, -1)). In float64:

        CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)),  K = X Xᵀ, L = Y Yᵀ,  HSIC(K, L) = tr(K H L H) / (N − 1)²

    (the biased HSIC, H the centring matrix). With centred X, Y that is ⟨Kc, Lc⟩_F / (‖Kc‖_F ‖Lc‖_F), which equals
    the feature-space form ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F); the cheaper of the two (N × N Gram matrices, or D × E
    feature products when N is large) is used. nan for N < 2 or when either side has zero variance."""
    x, y = _rows(x), _rows(y)
    if len(x) != len(y):
        raise ValueError(f"linear_cka: x and y must have the same number of rows (examples), got {len(x)} and {len(y)}")
    n, d, e = len(x), x.shape[1], y.shape[1]
    if n < 2 or _constant(x) or _constant(y):
        return float("nan")
    x = x - x.mean(0)
    y = y - y.mean(0)
    if n * n <= d * d + e * e + d * e:  # the Gram form holds less (and costs less) than the feature form
        k, l = x @ x.T, y @ y.T
        cross, self_x, self_y = np.vdot(k, l), np.vdot(k, k), np.vdot(l, l)
    else:
        cross = np.square(y.T @ x).sum()
        self_x, self_y = np.square(x.T @ x).sum(), np.square(y.T @ y).sum()
    return float(cross / math.sqrt(self_x * self_y))


def _hsic_pairs(ks: torch.Tensor, ls: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC (Song et al. 2012, as in Nguyen et al. 2021, eq. 3) of every K in ks (P, n, n) with every L in
    ls (Q, n, n): (P, Q), float64. The diagonals are zeroed here (on copies); symmetry is not assumed:

        HSIC₁(K, L) = [tr(K̃L̃) + 1ᵀK̃1 · 1ᵀL̃1 / ((n − 1)(n − 2)) − 2/(n − 2) · 1ᵀK̃L̃1] / (n (n − 3))"""
    n = ks.shape[-1]
    if n < 4:
        raise ValueError(f"unbiased HSIC needs n >= 4 examples, got {n}")
    eye = torch.eye(n, dtype=torch.bool, device=ks.device)
    ks = ks.to(torch.float64).masked_fill(eye, 0.0)
    ls = ls.to(device=ks.device, dtype=torch.float64).masked_fill(eye, 0.0)
    trace = torch.einsum("pab,qba->pq", ks, ls)  # tr(K̃L̃)
    ck, rl = ks.sum(-2), ls.sum(-1)  # K̃ᵀ1 and L̃1, so that 1ᵀK̃L̃1 = (K̃ᵀ1)·(L̃1): (P, n), (Q, n)
    sk, sl = ck.sum(-1), rl.sum(-1)  # 1ᵀK̃1, 1ᵀL̃1
    return (trace + sk[:, None] * sl[None, :] / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (ck @ rl.T)) / (n * (n - 3))


def unbiased_hsic(k, l) -> float:
    """The unbiased HSIC estimator of Song et al. 2012 between two n × n Gram matrices (torch tensors; numpy is
    accepted), the one Nguyen, Raghu & Kornblith 2021 average over minibatches for CKA. Diagonals are zeroed (on
    copies), float64 inside; needs n >= 4 (ValueError otherwise). Unlike the biased estimator it has no O(1/n) bias,
    which is what makes averaging over small minibatches converge to the full-data value."""
    k, l = torch.as_tensor(k), torch.as_tensor(l)
    if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape != l.shape:
        raise ValueError(f"unbiased_hsic: two n × n Gram matrices of one size expected, got {tuple(k.shape)} and "
                         f"{tuple(l.shape)}")
    return float(_hsic_pairs(k[None], l[None])[0, 0])


def _grams(feats: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """(layers, B, B) linear Gram matrices of the batch-centred, flattened features, returned in float64. Centring
    does not change the unbiased HSIC (its U-statistic kernel is invariant to K_ij → K_ij + a_i + a_j + c, which is
    what subtracting the batch mean does to X Xᵀ) but removes the cancellation between its terms, which grow with the
    features' mean (large for deep ReLU features): without it float32 Gram matrices lose CKA's second decimal. Once
    centred, float32 is enough (relative error ~1e-7 on the Gram matrix; 2.5× faster than float64 on a CPU, far
    more on most GPUs), so features are centred and multiplied in float32, or in float64 when they are float64."""
    out = []
    for f in feats:
        dtype = torch.float64 if f.dtype == torch.float64 else torch.float32
        x = f.detach().flatten(1).to(device=device, dtype=dtype, copy=True)  # a copy: centred in place
        x -= x.mean(0, keepdim=True)
        out.append((x @ x.T).to(torch.float64))
    return torch.stack(out)


class MinibatchCKA:
    """Minibatch linear CKA between every layer of model A and every layer of model B (Nguyen, Raghu & Kornblith
    2021): for each minibatch, the unbiased HSIC of every pair of Gram matrices (K_i of A's layer i, L_j of B's layer
    j) and of each with itself; at the end

        CKA_ij = mean HSIC(K_i, L_j) / sqrt(mean HSIC(K_i, K_i) · mean HSIC(L_j, L_j))

    over the minibatches. The average of unbiased estimates converges to the full-data CKA as the number of
    minibatches grows (the biased estimator averaged over minibatches would not), while memory stays
    O(B² + B·D) per layer whatever N, so all pairs of layers of two networks are compared in one pass over the data.

    Gram matrices are computed on the device of the features (CUDA works), from the batch-centred features (exact
    for this estimator, see `_grams`) in float32 (float64 for float64 features); the HSIC terms and their sums are
    float64, on that device too. A batch of fewer than 4 examples (the estimator needs n >= 4; e.g. a short last
    batch) is skipped and not counted in `batches`; so is an empty one. With no batch used, `result` is all nan.
    Each layer may have any shape (B, ...), flattened."""

    def __init__(self, n_a: int, n_b: int):
        self.n_a, self.n_b = int(n_a), int(n_b)
        self.batches = 0
        self._cross: torch.Tensor | None = None  # Σ HSIC(K_i, L_j): (n_a, n_b)
        self._self_a: torch.Tensor | None = None  # Σ HSIC(K_i, K_i): (n_a,)
        self._self_b: torch.Tensor | None = None  # Σ HSIC(L_j, L_j): (n_b,)

    def update(self, feats_a: list[torch.Tensor], feats_b: list[torch.Tensor]) -> None:
        """Adds one minibatch: feats_a[i] (B, ...) is model A's layer i on it, feats_b[j] model B's layer j, all for
        the same B examples in the same order."""
        if len(feats_a) != self.n_a or len(feats_b) != self.n_b:
            raise ValueError(f"MinibatchCKA.update: expected {self.n_a} + {self.n_b} layers, got {len(feats_a)} + "
                             f"{len(feats_b)}")
        sizes = {len(f) for f in (*feats_a, *feats_b)}
        if len(sizes) != 1:
            raise ValueError(f"MinibatchCKA.update: every layer must hold the same batch, got sizes {sorted(sizes)}")
        if sizes.pop() < 4:
            return
        device = feats_a[0].device
        with torch.no_grad():
            ks, ls = _grams(feats_a, device), _grams(feats_b, device)
            cross = _hsic_pairs(ks, ls)
            self_a, self_b = torch.diagonal(_hsic_pairs(ks, ks)), torch.diagonal(_hsic_pairs(ls, ls))
        if self._cross is None:
            self._cross, self._self_a, self._self_b = cross, self_a, self_b
        else:
            self._cross = self._cross.to(device) + cross
            self._self_a = self._self_a.to(device) + self_a
            self._self_b = self._self_b.to(device) + self_b
        self.batches += 1

    def result(self) -> np.ndarray:
        """(n_a, n_b) float64 CKA. nan where a layer's mean self-HSIC is not positive (a constant layer) or before any
        batch. Being a ratio of unbiased estimates, a value may stray slightly outside [0, 1]."""
        if self.batches == 0:
            return np.full((self.n_a, self.n_b), np.nan)
        m = self.batches
        cross = self._cross.cpu().numpy() / m
        a, b = self._self_a.cpu().numpy() / m, self._self_b.cpu().numpy() / m
        denom = np.outer(a, b)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, cross / np.sqrt(np.where(denom > 0, denom, 1.0)), np.nan)


def _pearson_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of a[:, i] with b[:, j] for all i, j: (Ca, Cb); nan for a constant column."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    na, nb = np.sqrt(np.square(a).sum(0)), np.sqrt(np.square(b).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip((a.T @ b) / np.outer(na, nb), -1.0, 1.0)


def _channels(a, b, what: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_float64(a), _as_float64(b)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"{what}: two (N, C) arrays of one shape expected, got {a.shape} and {b.shape}")
    return a, b


def _constant_columns(x: np.ndarray) -> np.ndarray:
    return np.all(x == x[:1], axis=0)


def channel_correlation(a, b) -> np.ndarray:
    """Pearson correlation of each channel of a with the same channel of b: a, b (N, C) (e.g. per-example spatial
    means of one layer in two models) → (C,), nan for a channel constant on either side. Unlike CKA this is not
    invariant to a permutation of channels: two networks that differ only by one compute the same function yet
    correlate poorly channel by channel (see `matching`)."""
    a, b = _channels(a, b, "channel_correlation")
    ac, bc = a - a.mean(0), b - b.mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (ac * bc).sum(0) / np.sqrt(np.square(ac).sum(0) * np.square(bc).sum(0))
    r = np.clip(r, -1.0, 1.0)
    r[_constant_columns(a) | _constant_columns(b)] = np.nan
    return r


def matching(a, b) -> np.ndarray:
    """The one-to-one matching of channels that maximizes the summed Pearson correlation between a (N, C) and b
    (N, C) (the Hungarian algorithm, scipy.optimize.linear_sum_assignment, on the C × C correlation matrix): p (C,)
    with channel i of a matched to channel p[i] of b. Recovers the permutation relating two networks that differ
    only in the order of a layer's channels (cf. the one-to-one matching of Li et al. 2016, "Convergent Learning",
    ICLR). A constant channel correlates 0 with everything here."""
    from scipy.optimize import linear_sum_assignment

    a, b = _channels(a, b, "matching")
    corr = _pearson_columns(a, b)
    corr[_constant_columns(a)] = 0.0
    corr[:, _constant_columns(b)] = 0.0
    rows, cols = linear_sum_assignment(np.nan_to_num(corr, nan=0.0), maximize=True)
    p = np.empty(len(rows), dtype=np.int64)
    p[rows] = cols
    return p


def spearman(a, b) -> float:
    """Spearman's rank correlation of two arrays of one shape (flattened; numpy or torch): Pearson correlation of the
    ranks, ties given their average rank (scipy.stats.rankdata). nan when either is constant. Used to compare
    rankings, e.g. of two attribution maps, where the scales differ."""
    from scipy.stats import rankdata

    a, b = _as_float64(a), _as_float64(b)
    if a.shape != b.shape:
        raise ValueError(f"spearman: arrays of one shape expected, got {a.shape} and {b.shape}")
    a, b = a.ravel(), b.ravel()
    if a.size < 2 or _constant(a) or _constant(b):
        return float("nan")
    ra, rb = rankdata(a) - (a.size + 1) / 2, rankdata(b) - (b.size + 1) / 2
    return float(np.clip(ra @ rb / math.sqrt((ra @ ra) * (rb @ rb)), -1.0, 1.0))
