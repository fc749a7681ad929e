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
    fig, (ax_img, ax_bar) = plt.subplots(1, 2, figsize=(7.5, 2.6), gridspec_kw={"width_ratios": [1, 1.6]},
                                         layout="constrained")
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
    """Each line of `text` cut to `n` characters (a label's second line, a warning, survives)."""
    return "\n".join(line if len(line) <= n else line[: n - 1] + "…" for line in text.split("\n"))


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


def filter_scale(kernel: int, target: int = 48) -> int:
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
    """(N, 1, k, k): one grayscale tile per channel (depthwise kernels, or a grayscale model's first layer)."""
    tiles = normalize_filters(weight)[:, 0]
    cols = min(24, math.ceil(math.sqrt(len(tiles) * 2)))
    save_picture(tile_grid(tiles, cols, pad=2, scale=filter_scale(weight.shape[-1])), path)


def pointwise_usage(weights: np.ndarray, path: Path, layer: str) -> None:
    """A 1×1 convolution (out, in) has no spatial pattern; show what it does use: the weight norm of each input
    channel (channels near zero are ignored by this layer) and of each output filter, both sorted."""
    w = weights.astype(np.float64)
    by_input = np.sort(np.linalg.norm(w, axis=0))[::-1]
    by_output = np.sort(np.linalg.norm(w, axis=1))[::-1]
    fig, axes = plt.subplots(1, 2, figsize=(8, 2.6))
    for ax, values, what in ((axes[0], by_input, "input channels"), (axes[1], by_output, "output filters")):
        ax.fill_between(np.arange(len(values)), values, color="#4c72b0", step="mid")
        ax.set_xlim(0, len(values) - 1)
        ax.set_ylim(0, None)
        ax.set_xlabel(f"{what}, sorted ({len(values)})")
        ax.set_ylabel("weight L2 norm")
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle(f"{layer}: 1×1 convolution, {w.shape[0]} outputs × {w.shape[1]} inputs", fontsize=9)
    _save(fig, path)


def _colour_scale(values: np.ndarray) -> tuple[str, float, float, str]:
    lo, hi = float(values.min()), float(values.max())
    if lo < 0 < hi:
        v = max(-lo, hi)
        return DIVERGING, -v, v, "activation (red +, blue −, shared scale)"
    return SEQUENTIAL, lo, hi if hi > lo else lo + 1, "activation (shared scale)"


def channel_grid(maps: np.ndarray, channels: list[int], dead: np.ndarray, path: Path, title: str) -> None:
    """Activation maps (K, H, W) on one shared colour scale, as one mosaic; dead channels framed and crossed in red.
    Drawn as a single image (not a subplot per channel) so a 48-channel grid takes a fraction of a second."""
    k, h, w = maps.shape
    cmap_name, vmin, vmax, bar = _colour_scale(maps)
    cmap = plt.get_cmap(cmap_name)
    scale = max(1, round(84 / max(h, w)))  # small maps (7×7) are enlarged with crisp pixels
    tiles = (cmap(np.clip((maps - vmin) / (vmax - vmin), 0, 1))[..., :3] * 255).astype(np.uint8)
    tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
    th, tw = h * scale, w * scale
    red = np.array([200, 0, 0], dtype=np.uint8)
    for i in np.flatnonzero(dead):
        t = tiles[i]
        t[[0, 1, -2, -1], :] = red
        t[:, [0, 1, -2, -1]] = red
        d = np.arange(min(th, tw))
        t[d * th // min(th, tw), d * tw // min(th, tw)] = red
        t[d * th // min(th, tw), (tw - 1) - d * tw // min(th, tw)] = red
    cols = min(8, k) if k <= 16 else min(12, math.ceil(math.sqrt(k * 1.5)))
    pad = max(2, th // 8)
    label = max(10, th // 5)  # room above each tile for its channel number
    rows = math.ceil(k / cols)
    grid = np.full((rows * (th + pad + label) + pad, cols * (tw + pad) + pad, 3), 255, dtype=np.uint8)
    spots = []
    for i in range(k):
        r, c = divmod(i, cols)
        y, x = pad + label + r * (th + pad + label), pad + c * (tw + pad)
        grid[y:y + th, x:x + tw] = tiles[i]
        spots.append((x + tw / 2, y - 1))
    inches = min(max(grid.shape[1] / DPI, 4), 14)  # about one screen pixel per mosaic pixel
    fig, ax = plt.subplots(figsize=(inches + 1.2, inches * grid.shape[0] / grid.shape[1] + 0.5))
    ax.imshow(grid, interpolation="nearest")
    ax.set_axis_off()
    font = 6 if cols >= 10 else 7
    for i, (x, y) in enumerate(spots):
        ax.text(x, y, str(channels[i]), ha="center", va="bottom", fontsize=font, color="#c00" if dead[i] else "black")
    ax.set_title(title, fontsize=9)
    mappable = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(vmin, vmax), cmap=cmap)
    fig.colorbar(mappable, ax=ax, fraction=0.03, pad=0.02, label=bar)
    _save(fig, path)


def attribution_rows(picture: np.ndarray, maps: np.ndarray, labels: list[str], path: Path, method: str,
                     meaning: str, signed: bool = False) -> None:
    """One row per target: the image, the map (own colour scale with a bar), the map over the image."""
    t = len(maps)
    fig, axes = plt.subplots(t, 3, figsize=(9, 3 * t), squeeze=False, layout="constrained")
    for row, (m, label) in enumerate(zip(maps, labels)):
        if signed:
            v = float(np.abs(m).max()) or 1.0
            cmap, vmin, vmax = DIVERGING, -v, v
        else:
            cmap, vmin, vmax = SEQUENTIAL, 0.0, float(m.max()) or 1.0
        ax_img, ax_map, ax_over = axes[row]
        ax_img.imshow(picture)
        ax_img.set_title(label, fontsize=9)
        im = ax_map.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax)
        ax_map.set_title(method, fontsize=9)
        ax_over.imshow(picture)
        ax_over.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax, alpha=0.6)
        ax_over.set_title("overlay", fontsize=9)
        for ax in axes[row]:
            ax.set_axis_off()
        fig.colorbar(im, ax=axes[row].tolist(), shrink=0.8, label=meaning)
    _save(fig, path)


def _heat_overlay(picture: np.ndarray, m: np.ndarray, signed: bool, percentile: float) -> np.ndarray:
    """A map over a dimmed grey copy of the picture, opaque where the map is strong and clear where it is weak:
    scaled on its own, 0 → its `percentile`-th |value| (sequential magma, or red/blue for signed maps)."""
    grey = picture.astype(np.float64).mean(-1, keepdims=True).repeat(3, -1) / 255.0
    grey = 0.25 + 0.5 * grey
    top = float(np.percentile(np.abs(m), percentile)) if m.size else 0.0
    top = top or float(np.abs(m).max()) or 1.0
    if signed:
        v = np.clip(m / top, -1, 1)
        colour, alpha = plt.get_cmap(DIVERGING)(0.5 + v / 2)[..., :3], np.abs(v)
    else:
        v = np.clip(m / top, 0, 1)
        colour, alpha = plt.get_cmap(SEQUENTIAL)(v)[..., :3], v
    alpha = 0.9 * alpha[..., None]
    return np.clip(grey * (1 - alpha) + colour * alpha, 0, 1)


def attribution_comparison(picture: np.ndarray, maps: list[np.ndarray], titles: list[str], path: Path,
                           signed: list[bool] | None = None, deletion: list[np.ndarray | None] | None = None,
                           insertion: list[np.ndarray | None] | None = None,
                           deletion_auc: list[float | None] | None = None,
                           insertion_auc: list[float | None] | None = None, target: str = "",
                           percentile: float = 99.0, max_cols: int = 5) -> None:
    """Several methods' maps of one image side by side: the image, then one overlay per method (wrapped after
    `max_cols` panels), each map on its own scale (clipped at its `percentile`-th |value|); below, when curves are
    given, the deletion and insertion curves of all methods, one colour per method matching its panel title."""
    m = len(maps)
    signed = signed or [False] * m
    colours = [plt.get_cmap("tab10")(i % 10) for i in range(m)]
    cols = min(m + 1, max_cols)
    rows = math.ceil((m + 1) / cols)
    curves = deletion is not None and insertion is not None and any(c is not None for c in deletion)
    tile = 2.1
    low = 2.5 + 0.16 * math.ceil(m / 2)  # the curves and, under each, its legend in two columns
    fig = plt.figure(figsize=(tile * cols, tile * rows + (low if curves else 0) + 0.2), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[tile * rows, low]) if curves else (fig, None)
    panels = top.subplots(rows, cols, squeeze=False).ravel()
    panels[0].imshow(picture)
    panels[0].set_title(_short(target or "image", 26), fontsize=8)
    for ax, mp, title, sgn, colour in zip(panels[1:], maps, titles, signed, colours):
        ax.imshow(_heat_overlay(picture, mp, sgn, percentile))
        ax.set_title(_short(title, 26), fontsize=8, color=colour, fontweight="bold")
    for ax in panels:
        ax.set_axis_off()
    if bottom is not None:
        ax_del, ax_ins = bottom.subplots(1, 2)
        for ax, what, data, areas in ((ax_del, "deleted", deletion, deletion_auc),
                                      (ax_ins, "inserted", insertion, insertion_auc)):
            for i, (curve, title, colour) in enumerate(zip(data, titles, colours)):
                if curve is None:
                    continue
                area = areas[i] if areas else None
                label = _short(title, 26) + (f" ({area:.3f})" if area is not None else "")
                ax.plot(np.linspace(0, 1, len(curve)), curve, color=colour, lw=1.3, label=label)
            ax.set_xlim(0, 1)
            ax.set_xlabel(f"fraction of pixels {what}, most attributed first", fontsize=8)
            ax.set_ylabel("log-odds of the class (nats)", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.spines[["top", "right"]].set_visible(False)
            ax.legend(fontsize=6.5, frameon=False, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.2))
        ax_del.set_title("deletion: area (in brackets) lower = more faithful", fontsize=8)
        ax_ins.set_title("insertion: area (in brackets) higher = more faithful", fontsize=8)
    _save(fig, path)


def occlusion_rows(picture: np.ndarray, maps: np.ndarray, labels: list[str], path: Path, method: str,
                   meaning: str, window: int) -> None:
    """Occlusion maps, one row per target: the image, the signed map on a symmetric diverging scale (a square of the
    window's size in its corner for scale), and the map over the image."""
    from matplotlib.patches import Rectangle

    t = len(maps)
    fig, axes = plt.subplots(t, 3, figsize=(9, 3 * t), squeeze=False, layout="constrained")
    for row, (m, label) in enumerate(zip(maps, labels)):
        v = float(np.abs(m).max()) or 1.0
        ax_img, ax_map, ax_over = axes[row]
        ax_img.imshow(picture)
        ax_img.set_title(_short(label, 40), fontsize=9)
        im = ax_map.imshow(m, cmap=DIVERGING, vmin=-v, vmax=v)
        h = m.shape[0]
        ax_map.add_patch(Rectangle((1, h - 1 - window), window, window, fill=False, edgecolor="black", lw=1.2))
        ax_map.text(1 + window / 2, h - 3 - window, "window", ha="center", va="bottom", fontsize=7)
        ax_map.set_title(_short(method, 48), fontsize=9)
        ax_over.imshow(picture)
        ax_over.imshow(m, cmap=DIVERGING, vmin=-v, vmax=v, alpha=0.6)
        ax_over.set_title("overlay", fontsize=9)
        for ax in axes[row]:
            ax.set_axis_off()
        fig.colorbar(im, ax=axes[row].tolist(), shrink=0.8, label=meaning)
    _save(fig, path)


def grabcut_rows(picture: np.ndarray, saliency: np.ndarray, masks: np.ndarray, labels: list[str], path: Path,
                 saliency_meaning: str) -> None:
    """One row per target: the image, the saliency map that seeded GrabCut (own scale, with a bar), and the
    foreground mask over the image (foreground tinted green and outlined, background greyed out, area in the
    title)."""
    t = len(masks)
    fig, axes = plt.subplots(t, 3, figsize=(9, 3 * t), squeeze=False, layout="constrained")
    for row, (s, mask, label) in enumerate(zip(saliency, masks, labels)):
        ax_img, ax_sal, ax_mask = axes[row]
        ax_img.imshow(picture)
        ax_img.set_title(_short(label, 40), fontsize=9)
        im = ax_sal.imshow(s, cmap=SEQUENTIAL, vmin=0.0, vmax=float(s.max()) or 1.0)
        ax_sal.set_title("saliency (GrabCut seeds)", fontsize=9)
        fg = mask > 0.5
        grey = picture.astype(np.float32).mean(-1, keepdims=True)
        tint = np.array([60.0, 255.0, 60.0], dtype=np.float32)
        shown = np.where(fg[..., None], 0.75 * picture + 0.25 * tint, 0.25 * grey + 0.15 * 255)  # object: tinted green
        ax_mask.imshow(np.clip(shown, 0, 255).astype(np.uint8))
        if fg.any() and not fg.all():
            ax_mask.contour(fg.astype(float), levels=[0.5], colors=["#3f3"], linewidths=1.2)
        ax_mask.set_title(f"GrabCut foreground: {fg.mean():.0%} of the image", fontsize=9)
        for ax in axes[row]:
            ax.set_axis_off()
        fig.colorbar(im, ax=[ax_sal], shrink=0.8, label=saliency_meaning)
    _save(fig, path)


def guided_rows(picture: np.ndarray, grads: np.ndarray, shown: np.ndarray, labels: list[str], path: Path,
                title: str, map_title: str, percentile: float, bar_label: str = "|gradient|") -> None:
    """One row per target: image | guided gradient as colour | its max-|gradient| map (already clipped for
    display at `percentile`) | overlay. The colour image is 0.5 grey where the gradient is zero, ±(the percentile
    of |g|) mapped to the ends of each channel's range."""
    t = len(shown)
    fig, axes = plt.subplots(t, 4, figsize=(12, 3 * t), squeeze=False, layout="constrained")
    for row in range(t):
        g = grads[row].transpose(1, 2, 0)
        if g.shape[-1] == 1:
            g = np.repeat(g, 3, axis=-1)
        top = float(np.percentile(np.abs(g), percentile)) or float(np.abs(g).max()) or 1.0
        colour = np.clip(g / (2 * top) + 0.5, 0, 1)
        m = shown[row]
        vmax = float(m.max()) or 1.0
        ax_img, ax_rgb, ax_map, ax_over = axes[row]
        ax_img.imshow(picture)
        ax_img.set_title(labels[row], fontsize=9)
        ax_rgb.imshow(colour)
        ax_rgb.set_title(f"{title} (colour)", fontsize=9)
        im = ax_map.imshow(m, cmap=SEQUENTIAL, vmin=0, vmax=vmax)
        ax_map.set_title(f"{map_title}\n(clipped at the {percentile:g}th percentile)", fontsize=9)
        ax_over.imshow(picture)
        ax_over.imshow(m, cmap=SEQUENTIAL, vmin=0, vmax=vmax, alpha=0.6)
        ax_over.set_title("overlay", fontsize=9)
        for ax in axes[row]:
            ax.set_axis_off()
        fig.colorbar(im, ax=axes[row].tolist(), shrink=0.8, label=bar_label)
    _save(fig, path)


def picture_row(pictures: list[np.ndarray], titles: list[str], path: Path, suptitle: str | None = None,
                columns: int | None = None) -> None:
    """Pictures side by side at the same size, each titled (original, changed, difference ...); more than `columns`
    wrap onto further rows, so that a long row stays legible at the page's width."""
    cols = min(len(pictures), columns or len(pictures))
    rows = -(-len(pictures) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.1 * cols, 3.4 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, picture, title in zip(axes.flat, pictures, titles):
        ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=255, interpolation="lanczos")
        ax.set_title(title, fontsize=9)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    _save(fig, path)


def picture_grid(grid: list[list[np.ndarray]], cell_titles: list[list[str]], row_titles: list[str],
                 column_titles: list[str], path: Path, cell: float = 2.4) -> None:
    """grid[r][c] pictures (uint8, RGB or grayscale) with a title per row (left), per column (top) and per cell
    (below it)."""
    rows, cols = len(grid), max(len(r) for r in grid)
    fig, axes = plt.subplots(rows, cols, figsize=(cell * cols + 1.2, (cell + 0.35) * rows + 0.3), squeeze=False,
                             layout="constrained")
    for r in range(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c >= len(grid[r]):
                continue
            picture = grid[r][c]
            ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=255,
                      interpolation="nearest" if max(picture.shape[:2]) < 64 else "lanczos")
            if cell_titles[r][c]:
                ax.set_xlabel(cell_titles[r][c], fontsize=8)
            if r == 0:
                ax.set_title(column_titles[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(row_titles[r], fontsize=9)
    _save(fig, path)
