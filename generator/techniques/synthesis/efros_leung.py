"""Non-parametric texture synthesis (Efros & Leung, "Texture Synthesis by Non-parametric Sampling", ICCV 1999).

The texture grows one pixel at a time. For each new pixel, its neighbourhood (a w × w window, of which only the pixels
already made are known) is compared with every w × w window of the source by a Gaussian-weighted sum of squared
differences over the known pixels (σ = w / 6.4, as in the paper); one of the source windows whose distance is at most
(1 + ε) times the smallest is picked uniformly at random, and its centre pixel is copied.

Order: scan-line (row by row, left to right), as the issue asks and as Wei & Levoy (2000) do, rather than the
paper's onion-skin growth from a 3 × 3 seed. Scan-line needs no seed (the first pixel, with nothing known around it,
is any source pixel), and its known pixels always form the same causal half-window, which makes the work regular
and lets independent pixels be computed together (below) with a result identical to the one-by-one scan. What it
costs: the first rows, with little known above them, continue one stretch of the source verbatim until it runs out
(Efros & Leung's "verbatim copying"; the onion-skin order does the same around its seed). The technique's
provenance map shows it.

Speed: all source windows are compared at once with matrix products. Over the known pixels m and weights g,
    SSD(a, b) = Σ m·g·a² − 2 Σ (g·a)·b + Σ (m·g)·b²        (a: the output neighbourhood, zero where unknown)
so the middle term is the source-window matrix times a vector, and the last one depends only on which pixels are
known, i.e. on how close the pixel is to the top, left or right border: a handful of vectors computed once. Pixel
(i, j) needs (i, j − 1) and row i − 1 up to column j + h (h = w // 2), so all pixels on the wavefront
j + (h + 1)·i = t are independent: each step is one matrix product over ~W / (h + 1) pixels instead of that many
matrix-vector products, and the result is exactly that of the pixel-by-pixel scan (same dependencies, the same
random draw per pixel, drawn up front).

Exactness: weights are integers and pixels 0..255, so every distance is an integer, and in float64 every partial
sum of such products is exact: distances, ties and candidate sets are exact in any summation order, on CPU and
CUDA alike — needed because exact matches (distance 0) occur. The product is done in float32 first, and only the
windows that a proven rounding bound cannot rule out are measured again exactly, so the result is the float64 one,
faster, and spares GPUs whose float64 is slow. A grey source stored as RGB is compared on one channel (distances
× 3, exactly).
How the speed-ups were measured: site_src/tuning.md#texture-synthesis-non-parametric.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

WEIGHT_SCALE = 2 ** 20  # Gaussian weights as integers: the corner weights of an 11 × 11 window are still ~200


def gaussian_weights(window: int) -> np.ndarray:
    """(w, w) Gaussian window, σ = w / 6.4 (Efros & Leung 1999), scaled so the centre is 2^20 and rounded to
    integers (at least 1), as float64."""
    h = window // 2
    d = np.arange(-h, h + 1, dtype=np.float64)
    sigma = window / 6.4
    g = np.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / (2 * sigma ** 2))
    return np.maximum(np.round(g * WEIGHT_SCALE), 1.0)


def causal_offsets(window: int) -> np.ndarray:
    """(K, 2) offsets (dy, dx) of the pixels a scan-line order knows before (0, 0): the h rows above, all 2h + 1
    columns wide, and the h pixels to the left."""
    h = window // 2
    above = [(dy, dx) for dy in range(-h, 0) for dx in range(-h, h + 1)]
    left = [(0, dx) for dx in range(-h, 0)]
    return np.array(above + left, dtype=np.int64).reshape(-1, 2)


def source_windows(source: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """All w × w windows lying wholly inside the source: ((N, w, w, C) windows, (N,) flat index of each centre
    pixel in the source), in raster order of their centres."""
    h = window // 2
    hs, ws = source.shape[:2]
    view = np.lib.stride_tricks.sliding_window_view(source, (window, window), axis=(0, 1))  # (ny, nx, C, w, w)
    wins = view.transpose(0, 1, 3, 4, 2).reshape(-1, window, window, source.shape[2])
    ys, xs = np.meshgrid(np.arange(h, hs - h), np.arange(h, ws - h), indexing="ij")
    return wins, (ys * ws + xs).ravel()


def pixel_draws(height: int, width: int, seed: int) -> np.ndarray:
    """The uniform random number in [0, 1) of each output pixel, in raster order: which of the candidates it
    takes (the ⌊u·k⌋-th of its k candidates, in source raster order). Drawn up front, so the order in which pixels
    are computed cannot change the result."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(height * width, generator=g, dtype=torch.float64).numpy().reshape(height, width)


def as_channels(picture: np.ndarray) -> np.ndarray:
    picture = np.asarray(picture)
    if picture.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {picture.dtype}")
    return picture[..., None] if picture.ndim == 2 else picture


@dataclass
class Synthesis:
    texture: np.ndarray  # (H, W, C) uint8
    provenance: np.ndarray  # (H, W) int64: flat index (y · source width + x) of the source pixel each pixel copies
    error: np.ndarray  # (H, W) float64: weighted RMS difference (grey levels) of each pixel's known neighbourhood
    #                    to its best source window; 0 for the first pixel, which has no known neighbourhood
    seconds: float


def synthesize(source: np.ndarray, size: int | tuple[int, int], window: int = 11, epsilon: float = 0.1,
               seed: int = 0, device: str | torch.device = "cpu", screen: bool | None = None) -> Synthesis:
    """Grow a (size × size) texture from `source` ((H, W, C) or (H, W) uint8). See the module docstring.
    `screen`: compare in float32 first and measure again, exactly, only the windows that can be candidates;
    False: every distance in float64; None: the screen on CUDA and for large sources, where it pays. The result
    is the same."""
    device = torch.device(device)
    previous, threads = torch.get_float32_matmul_precision(), torch.get_num_threads()
    torch.set_float32_matmul_precision("highest")  # the screen's error bound is that of IEEE float32, not TF32/bf16
    if device.type == "cpu":
        # Each step is ~1 ms of small operations: splitting them over threads costs more than it saves, and on
        # busy cores it is ruinous (measured: 2.8 s on one thread, 106 s on two threads of two loaded cores).
        torch.set_num_threads(1)
    try:
        return _grow(source, size, window, epsilon, seed, device, screen)
    finally:
        torch.set_float32_matmul_precision(previous)
        torch.set_num_threads(threads)


def _grow(source: np.ndarray, size: int | tuple[int, int], window: int, epsilon: float, seed: int,
          device: torch.device, screen: bool | None) -> Synthesis:
    start = time.perf_counter()
    src = as_channels(source)
    height, width = (size, size) if isinstance(size, int) else size
    if window % 2 == 0 or window < 3:
        raise ValueError(f"window must be odd and at least 3, got {window}")
    if window > min(src.shape[:2]):
        raise ValueError(f"window {window} does not fit the source {src.shape[1]}×{src.shape[0]}")
    h = window // 2
    f64 = dict(dtype=torch.float64, device=device)
    # A grey picture stored as RGB: every distance is `repeat` times that of one channel, so one channel is
    # compared and the distances multiplied back (exactly: they are integers), a third of the work.
    repeat = src.shape[2] if src.shape[2] > 1 and (src == src[..., :1]).all() else 1
    work = src[..., :1] if repeat > 1 else src
    c = work.shape[2]

    wins, centres = source_windows(work, window)
    offsets = causal_offsets(window)
    k = len(offsets)
    g = gaussian_weights(window)[offsets[:, 0] + h, offsets[:, 1] + h]  # (K,)
    # Source windows restricted to the causal half-window, transposed: (K·C, N), entries pixel-major (k, then
    # channel). Pixels × windows products in this layout run ~2× faster than windows × pixels on MKL.
    bt = torch.from_numpy(np.ascontiguousarray(wins[:, offsets[:, 0] + h, offsets[:, 1] + h, :])).reshape(len(wins), -1)
    bt = bt.to(**f64).T.contiguous()
    gc = torch.from_numpy(np.repeat(g, c)).to(**f64)  # weights per (pixel, channel) entry
    centre_values = torch.from_numpy(work.reshape(-1, c)[centres]).to(**f64)  # (N, C)
    centres_t = torch.from_numpy(centres).to(device)

    # Which causal pixels are inside the output depends only on (rows above, columns left, columns right), each
    # clipped at h: the last SSD term per such case, once.
    ii, jj = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    cases = np.stack([np.minimum(ii, h), np.minimum(jj, h), np.minimum(width - 1 - jj, h)], -1).reshape(-1, 3)
    unique, case_of = np.unique(cases, axis=0, return_inverse=True)
    dy, dx = offsets[:, 0], offsets[:, 1]
    known = ((dy[None] >= -unique[:, :1]) & (dx[None] >= -unique[:, 1:2]) & (dx[None] <= unique[:, 2:3]))  # (U, K)
    mg = torch.from_numpy(np.repeat(known * g[None], c, axis=1)).to(**f64)  # (U, K·C)
    last = mg @ (bt * bt)  # (U, N)
    weight_sum = (mg.sum(1) * repeat).clamp_min(1.0)  # (U,): all channels
    case_of = torch.from_numpy(case_of.reshape(-1)).to(device)

    # The output on a canvas with h columns of zeros left and right and h rows above: unknown pixels read as 0.
    cw = width + 2 * h
    canvas = torch.zeros((height + h) * cw, c, **f64)
    flat_offsets = torch.from_numpy(dy * cw + dx).to(device)  # (K,)
    provenance = torch.zeros(height * width, dtype=torch.int64, device=device)
    error = torch.zeros(height * width, **f64)
    draws = torch.from_numpy(pixel_draws(height, width, seed).reshape(-1)).to(device)

    # Wavefronts t = j + (h + 1)·i, in order; within one, pixels in raster order. What each pixel needs that does
    # not change while growing is laid out in this order once, so that a step takes slices.
    t = (jj + (h + 1) * ii).reshape(-1)
    order = np.argsort(t, kind="stable")
    bounds = np.searchsorted(t[order], np.arange(t.max() + 2)).tolist()
    order_t = torch.from_numpy(order).to(device)
    o_base = (order_t // width + h) * cw + order_t % width + h  # canvas index of each pixel
    o_case = case_of[order_t]
    o_draw = draws[order_t]
    o_weight = weight_sum[o_case]
    one_plus = 1.0 + float(epsilon)
    if screen is None:  # on one CPU thread the screen's extra steps cost more than it saves on small sources
        screen = device.type == "cuda" or len(centres) * k * c >= 400_000
    if screen:
        b_rows = bt.T.contiguous()  # (N, K·C): the windows the screen lets through are measured again, exactly
        bt32, last32 = bt.float(), last.float()
        # Rounding bound of the float32 distances (Higham, Accuracy and Stability of Numerical Algorithms, §3.1):
        # d = L − 2X + T is a sum of K·C + 2 terms, whose absolute values add up to L + 2X + T ≤ 2(L + T)
        # (Cauchy–Schwarz: X ≤ √(L·T)), so |d32 − d| ≤ E = γ·2(L + T), γ = n·u / (1 − n·u). An exact candidate n
        # (d_n ≤ (1 + ε)·d*) passes the screen d32_n ≤ (1 + ε)·min d32 + (2 + ε)·E, as d32_n ≤ d_n + E and
        # d* ≤ min d32 + E; E is doubled for safety (the rounding of the screen itself).
        n_terms, u = k * c + 2, 2.0 ** -24
        gamma = n_terms * u / (1 - n_terms * u)
        o_slack_base = (2 + epsilon) * 2 * gamma * 2 * last.amax(1)[o_case]
        slack_per_t1 = (2 + epsilon) * 2 * gamma * 2
        limit = 4 * last.shape[1]  # more windows than this through the screen: one exact float64 product instead
    for s in range(len(bounds) - 1):
        lo, hi = bounds[s], bounds[s + 1]
        base, cs, n_pix = o_base[lo:hi], o_case[lo:hi], hi - lo
        # (P, K·C), zeros where unknown; index_select: ~4× faster than advanced indexing on CPU
        a = canvas.index_select(0, (base[:, None] + flat_offsets[None]).view(-1)).view(n_pix, k * c)
        ga = a * gc
        t1 = (ga * a).sum(1)  # (P,)
        pp = None
        if screen:
            d32 = torch.addmm(last32.index_select(0, cs), ga.float(), bt32, alpha=-2.0)
            d32 += t1.float()[:, None]
            threshold = d32.amin(1) * one_plus + (o_slack_base[lo:hi] + slack_per_t1 * t1).float()
            pp, nn = (d32 <= threshold[:, None]).nonzero(as_tuple=True)  # row-major: windows in source order
        if pp is not None and len(pp) <= limit:
            diff = a.index_select(0, pp) - b_rows.index_select(0, nn)
            weights = mg.index_select(0, cs.index_select(0, pp))
            dist = (diff * diff * weights).sum(1) * repeat  # exact integers, the same as the expansion's
            best = torch.full((n_pix,), float("inf"), **f64).scatter_reduce(0, pp, dist, "amin")
            cand = dist <= best[pp] * one_plus
            count = torch.zeros(n_pix, dtype=torch.int64, device=device).index_add_(0, pp, cand.long())
            rank = torch.minimum((o_draw[lo:hi] * count).long(), count - 1)
            first = count.cumsum(0) - count  # candidates of the pixels before, in this list
            nth = cand.long().cumsum(0) - 1 - first[pp]  # each candidate's rank among its pixel's
            pick = (cand & (nth == rank[pp])).long()  # one per pixel
            chosen = torch.zeros(n_pix, dtype=torch.int64, device=device).index_add_(0, pp, nn * pick)
        else:
            d = torch.addmm(last.index_select(0, cs), ga, bt, alpha=-2.0)
            d += t1[:, None]  # (P, N) distances: exact integers
            if repeat > 1:
                d *= repeat
            best = d.amin(1)
            cand = d <= best[:, None] * one_plus
            count = cand.sum(1)
            rank = torch.minimum((o_draw[lo:hi] * count).long(), count - 1)
            chosen = (cand.cumsum(1) <= rank[:, None]).sum(1)  # index of the (rank + 1)-th candidate
        canvas[base] = centre_values[chosen]
        provenance[lo:hi] = chosen
        error[lo:hi] = best / o_weight[lo:hi]
    # back from wavefront order to raster order, window indices to source pixels
    provenance = centres_t[provenance[torch.argsort(order_t)]]
    error = error[torch.argsort(order_t)]
    provenance = provenance.view(height, width).cpu().numpy()
    return Synthesis(src.reshape(-1, src.shape[2])[provenance], provenance,
                     error.clamp_min(0).sqrt().view(height, width).cpu().numpy(), time.perf_counter() - start)


# Measures of a result -----------------------------------------------------------------------------------------


def nearest_windows(picture: np.ndarray, source: np.ndarray, window: int, stride: int = 1,
                    device: str | torch.device = "cpu", chunk: int = 256) -> np.ndarray:
    """For the w × w windows of `picture` on a grid with `stride`, the smallest plain sum of squared differences to
    any w × w window of the source (exact integers): 0 where the window occurs verbatim in the source."""
    pic, src = as_channels(picture), as_channels(source)
    device = torch.device(device)
    b = torch.from_numpy(source_windows(src, window)[0].reshape(-1, window * window * src.shape[2])).to(
        torch.float64).to(device)
    bb = (b * b).sum(1)
    view = np.lib.stride_tricks.sliding_window_view(pic, (window, window), axis=(0, 1))[::stride, ::stride]
    a = torch.from_numpy(np.ascontiguousarray(view.transpose(0, 1, 3, 4, 2)).reshape(-1, b.shape[1])).to(
        torch.float64).to(device)
    out = []
    for s in range(0, len(a), chunk):
        x = a[s:s + chunk]
        out.append(((x * x).sum(1)[:, None] - 2.0 * x @ b.T + bb[None]).min(1).values.clamp_min(0))
    return torch.cat(out).cpu().numpy()


def colour_histogram(picture: np.ndarray, bins: int = 8) -> np.ndarray:
    """Normalized joint histogram of the channels, `bins` levels each."""
    pic = as_channels(picture)
    q = (pic.astype(np.int64) * bins) // 256
    idx = np.zeros(q.shape[:2], dtype=np.int64)
    for ch in range(pic.shape[2]):
        idx = idx * bins + q[..., ch]
    counts = np.bincount(idx.ravel(), minlength=bins ** pic.shape[2]).astype(np.float64)
    return counts / counts.sum()


def histogram_distance(a: np.ndarray, b: np.ndarray, bins: int = 8) -> float:
    """Total-variation distance between the colour histograms (8 levels per channel): 0 = the same colours in the
    same proportions, 1 = no colour in common."""
    return float(0.5 * np.abs(colour_histogram(a, bins) - colour_histogram(b, bins)).sum())


def coherence(provenance: np.ndarray) -> float:
    """Fraction of horizontally adjacent output pixels whose sources are horizontally adjacent too: how much of the
    texture is copied in runs rather than pixel by pixel."""
    p = provenance
    return float(np.mean(p[:, 1:] == p[:, :-1] + 1)) if p.shape[1] > 1 else 0.0
