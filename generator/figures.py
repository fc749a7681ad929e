"""Arrays → PNG files. Figures draw and never compute: every number shown arrives in the arguments."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

DPI = 110
SEQUENTIAL = "magma"  # perceptually uniform; dark = low
DIVERGING = "RdBu_r"  # red positive, blue negative, white zero


def save_picture(picture: np.ndarray, path: Path, min_side: int = 0) -> None:
    """A uint8 picture as PNG, enlarged with nearest-neighbour so small grids stay crisp."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(picture)
    if min_side and min(im.size) < min_side:
        k = math.ceil(min_side / min(im.size))
        im = im.resize((im.width * k, im.height * k), Image.NEAREST)
    im.save(path, optimize=True)


def _save(fig: plt.Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white")
    plt.close(fig)


def prediction_bars(picture: np.ndarray, labels: list[str], probs: list[float], path: Path) -> None:
    fig, (ax_img, ax_bar) = plt.subplots(1, 2, figsize=(7.5, 2.6), gridspec_kw={"width_ratios": [1, 1.6]})
    ax_img.imshow(picture)
    ax_img.set_axis_off()
    y = np.arange(len(labels))[::-1]
    ax_bar.barh(y, probs, color="#4c72b0")
    ax_bar.set_yticks(y, [_short(s) for s in labels])
    ax_bar.set_xlim(0, 1)
    ax_bar.set_xlabel("probability (softmax)")
    for yi, p in zip(y, probs):
        ax_bar.text(min(p + 0.02, 0.8), yi, f"{p:.3f}", va="center", fontsize=8)
    ax_bar.spines[["top", "right"]].set_visible(False)
    _save(fig, path)


def _short(text: str, n: int = 28) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def normalize_filters(weight: np.ndarray) -> np.ndarray:
    """Each output filter min-max scaled to 0..255 on its own (as in the lecture's first-layer figure)."""
    w = weight.astype(np.float64)
    flat = w.reshape(w.shape[0], -1)
    lo, hi = flat.min(1), flat.max(1)
    span = np.where(hi > lo, hi - lo, 1.0)
    scaled = (w - lo.reshape(-1, *[1] * (w.ndim - 1))) / span.reshape(-1, *[1] * (w.ndim - 1)) * 255.0
    return np.round(scaled).astype(np.uint8)


def tile_grid(tiles: np.ndarray, cols: int, pad: int = 1, scale: int = 1, background: int = 255) -> np.ndarray:
    """(N, h, w[, 3]) uint8 tiles → one uint8 mosaic, `pad` pixels of background between tiles."""
    n, h, w = tiles.shape[:3]
    if scale > 1:
        tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
        h, w = h * scale, w * scale
    rows = math.ceil(n / cols)
    shape = (rows * (h + pad) + pad, cols * (w + pad) + pad) + tiles.shape[3:]
    grid = np.full(shape, background, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = tiles[i]
    return grid


def filter_scale(kernel: int, target: int = 36) -> int:
    return max(1, round(target / kernel))


def rgb_filters(weight: np.ndarray, path: Path) -> None:
    """First-layer filters (N, 3, k, k) as RGB tiles."""
    tiles = normalize_filters(weight).transpose(0, 2, 3, 1)
    cols = min(16, math.ceil(math.sqrt(len(tiles) * 2)))
    save_picture(tile_grid(tiles, cols, pad=2, scale=filter_scale(weight.shape[-1])), path)


def gray_filters(weight: np.ndarray, path: Path) -> None:
    """(N, C, k, k): a row per output filter, a grayscale tile per input channel (scaled per filter)."""
    n, c, kh, kw = weight.shape
    tiles = normalize_filters(weight).reshape(n * c, kh, kw)
    save_picture(tile_grid(tiles, c, pad=1, scale=filter_scale(kw, 24)), path)


def depthwise_filters(weight: np.ndarray, path: Path) -> None:
    """(N, 1, k, k): one grayscale tile per channel."""
    tiles = normalize_filters(weight)[:, 0]
    cols = min(24, math.ceil(math.sqrt(len(tiles) * 2)))
    save_picture(tile_grid(tiles, cols, pad=2, scale=filter_scale(weight.shape[-1])), path)


def matrix(values: np.ndarray, path: Path, xlabel: str, ylabel: str, title: str) -> None:
    """A weight matrix (e.g. a 1×1 convolution) as a diverging heatmap with a colour bar."""
    v = float(np.abs(values).max()) or 1.0
    h, w = values.shape
    fig, ax = plt.subplots(figsize=(min(9, 2 + w / 12), min(7, 1.5 + h / 12)))
    im = ax.imshow(values, cmap=DIVERGING, vmin=-v, vmax=v, interpolation="nearest", aspect="auto")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="weight (red +, blue −)")
    _save(fig, path)


def channel_grid(maps: np.ndarray, channels: list[int], dead: np.ndarray, path: Path, title: str) -> None:
    """Activation maps (K, H, W) on one shared colour scale; dead channels crossed out."""
    k = len(maps)
    cols = min(8, k) if k <= 16 else min(12, math.ceil(math.sqrt(k * 1.5)))
    rows = math.ceil(k / cols)
    lo, hi = float(maps.min()), float(maps.max())
    if lo < 0 < hi:
        v = max(-lo, hi)
        cmap, vmin, vmax, bar = DIVERGING, -v, v, "activation (red +, blue −, shared scale)"
    else:
        cmap, vmin, vmax, bar = SEQUENTIAL, lo, hi if hi > lo else lo + 1, "activation (shared scale)"
    side = 1.25 if cols <= 8 else 0.95
    fig, axes = plt.subplots(rows, cols, figsize=(cols * side + 1.2, rows * side + 0.6), squeeze=False)
    im = None
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= k:
            ax.set_axis_off()
            continue
        im = ax.imshow(maps[i], cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(f"{channels[i]}", fontsize=7, pad=2, color="#c00" if dead[i] else "black")
        if dead[i]:
            ax.plot([0, 1], [0, 1], transform=ax.transAxes, color="#c00", lw=1)
            ax.plot([0, 1], [1, 0], transform=ax.transAxes, color="#c00", lw=1)
            for s in ax.spines.values():
                s.set_color("#c00")
    fig.suptitle(title, fontsize=9)
    fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.025, pad=0.02, label=bar)
    _save(fig, path)
