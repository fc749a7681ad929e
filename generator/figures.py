"""Arrays → PNG files. Figures draw and never compute: every number shown arrives in the arguments.

Every figure is drawn for the column it is shown in: MkDocs Material's content column is about 690 CSS pixels wide
at its default layout, and a figure inch is laid out as DISPLAY_PPI CSS pixels, so a figure COLUMN inches wide fills
it. Saved at DPI (2 × DISPLAY_PPI) the PNG is twice the column's width: sharp on a 2× screen; the PNG records its
DPI, and the site shows each figure at its pixel width × DISPLAY_PPI / DPI (generator/mkdocs_hooks.py), so a narrow
figure keeps the same scale as a wide one. Text is never below MIN_FONT points: 7 pt is about 10 CSS pixels.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.image  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from generator import web_images  # noqa: E402

DISPLAY_PPI = 100  # CSS pixels per figure inch on the page
DPI = 2 * DISPLAY_PPI  # PNG pixels per figure inch: 2× density
COLUMN = 6.9  # inches: the content column's width (690 CSS pixels)
MIN_FONT = 7.0  # points: about 10 CSS pixels at the displayed width
FONT = 8.0  # titles and labels
SEQUENTIAL = "magma"  # perceptually uniform; dark = low
DIVERGING = "RdBu_r"  # red positive, blue negative, white zero
ROW = 2.15  # inches: one row of three panels across the column


def save_picture(picture: np.ndarray, path: Path, min_side: int = 0, density: int = 1) -> None:
    """A uint8 picture as PNG, enlarged with nearest-neighbour so small grids stay crisp. density 2: the picture is
    drawn at twice the size it is shown at (its PNG says so, and the site halves its width)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(picture)
    if min_side and min(im.size) < min_side:
        k = math.ceil(min_side / min(im.size))
        im = im.resize((im.width * k, im.height * k), Image.NEAREST)
    im.save(path, optimize=True, **({"dpi": (DISPLAY_PPI * density,) * 2} if density > 1 else {}))


class _PixelImage(matplotlib.image.AxesImage):
    """An image drawn one array pixel per output pixel, as imshow(interpolation="nearest") draws it when its axes are
    exactly as many pixels as it is, but without resampling it (imshow converts and resamples the whole array in
    every draw: most of the time of a large mosaic). Any other scale is drawn by AxesImage as before."""

    def draw(self, renderer):
        a = self.get_array()
        box = self.axes.bbox
        h, w = a.shape[:2]
        if (not self.get_visible() or a.dtype != np.uint8 or a.ndim != 3 or abs(box.width - w) > 1e-6
                or abs(box.height - h) > 1e-6 or self.get_extent() != [-0.5, w - 0.5, h - 0.5, -0.5]
                or tuple(self.axes.get_xlim()) != (-0.5, w - 0.5) or tuple(self.axes.get_ylim()) != (h - 0.5, -0.5)):
            return super().draw(renderer)
        rgba = np.dstack([a[..., :3], np.full((h, w), 255, np.uint8)]) if a.shape[2] == 3 else np.asarray(a)
        gc = renderer.new_gc()
        self._set_gc_clip(gc)
        gc.set_alpha(self._get_scalar_alpha())
        # Where AxesImage puts the resampled image: its corner rounded to the nearest pixel (image._make_image).
        renderer.draw_image(gc, np.floor(box.x0 + 0.5), np.ceil(box.y0 - 0.5 - 1e-8), rgba[::-1])
        gc.restore()
        self.stale = False


def show_pixels(ax: plt.Axes, picture: np.ndarray) -> matplotlib.image.AxesImage:
    """ax.imshow(picture, interpolation="nearest") for a uint8 picture composed at the resolution it is saved at (its
    axes span exactly its pixels): drawn without resampling."""
    im = ax.imshow(picture, interpolation="nearest")
    im.__class__ = _PixelImage
    return im


def grid_columns(n: int, most: int = 4) -> int:
    """Columns of a grid of n tiles: all in one row up to `most`, else `most` (8 tiles: two rows of 4, never 6 + 2)."""
    return max(1, min(n, most))


def to_picture(image: np.ndarray, rgb: bool = False) -> np.ndarray:
    """(C, H, W) pixels in [0, 1] → (H, W, 3) uint8, or (H, W) for one channel unless `rgb`."""
    a = (np.clip(np.asarray(image, dtype=np.float32), 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0)
    if a.shape[2] == 1:
        return np.repeat(a, 3, axis=2) if rgb else a[..., 0]
    return a[..., :3]


def _wrapped(text: str, inches: float, points: float = MIN_FONT) -> str:
    """Text broken into lines that fit `inches` at `points` (about 0.5 em a character)."""
    import textwrap

    width = max(12, int(inches * 72 / (0.5 * points)))
    return "\n".join(part for line in text.splitlines() for part in (textwrap.wrap(line, width) or [""])) if text else text


def _colour_bar(fig: plt.Figure, mappable, axes, label: str = "") -> None:
    """A compact colour bar: thin, beside `axes`, ticks at MIN_FONT, a short label (or none: the meaning goes in the
    figure's footnote)."""
    bar = fig.colorbar(mappable, ax=axes, fraction=0.05, shrink=0.85, aspect=15, pad=0.02)
    bar.ax.tick_params(labelsize=MIN_FONT, length=2, pad=1)
    if label:
        bar.set_label(label, fontsize=MIN_FONT)


def _footnote(fig: plt.Figure, text: str) -> None:
    """One line (wrapped to the figure's width) under a constrained-layout figure, e.g. what its colours mean."""
    if text:
        fig.supxlabel(_wrapped(text, fig.get_figwidth() - 0.2), fontsize=MIN_FONT, color="#333")


PAD = 0.04  # inches of white around a figure's content


def _save(fig: plt.Figure, path: Path) -> None:
    """The figure as PNG at DPI, cropped to its content plus PAD (savefig's bbox_inches="tight"), then closed.

    savefig's "tight" lays the figure out in a draw that renders nothing, then draws it again; images are resampled
    in both draws. Here the layout draw runs with the images hidden (they lie inside their axes, clipped to them, so
    the layout and the tight box do not change) and savefig gets the box, so each image is resampled once: the same
    pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [im for ax in fig.axes for im in ax.images if im.get_visible()]
    fig.set_dpi(DPI)
    for im in images:
        im.set_visible(False)
    fig.draw_without_rendering()  # the layout engine (constrained) runs here, at the saved DPI
    box = fig.get_tightbbox(fig.canvas.get_renderer()).padded(PAD)
    for im in images:
        im.set_visible(True)
    fig.set_layout_engine(None)  # laid out: savefig draws once, with the positions found above
    # zlib level 1, not 6: the PNG is read back and re-encoded when published, where its size at level 6 is
    # recomputed only as far as the choice of format needs it (web_images.DRAWN_FAST). Level 6 was a third of the
    # time of drawing a figure of photographs and heat maps.
    fig.savefig(path, dpi=DPI, bbox_inches=box, facecolor="white", metadata={web_images.DRAWN_FAST: "zlib level 1"},
                pil_kwargs={"compress_level": 1})
    plt.close(fig)


def prediction_bars(picture: np.ndarray, labels: list[str], probs: list[float], path: Path) -> None:
    fig, (ax_img, ax_bar) = plt.subplots(1, 2, figsize=(COLUMN, 2.3), gridspec_kw={"width_ratios": [1, 1.8]},
                                         layout="constrained")
    ax_img.imshow(picture, interpolation=_interpolation(picture))
    ax_img.set_axis_off()
    y = np.arange(len(labels))[::-1]
    ax_bar.barh(y, probs, color="#4c72b0")
    ax_bar.set_yticks(y, [_short(s) for s in labels], fontsize=FONT)
    ax_bar.set_xlim(0, 1)
    ax_bar.set_xlabel("probability (softmax)", fontsize=FONT)
    ax_bar.tick_params(axis="x", labelsize=MIN_FONT)
    for yi, p in zip(y, probs):
        ax_bar.text(min(p + 0.02, 0.8), yi, f"{p:.3f}", va="center", fontsize=MIN_FONT)
    ax_bar.spines[["top", "right"]].set_visible(False)
    _save(fig, path)


def _short(text: str, n: int = 28) -> str:
    """Each line of `text` cut to `n` characters (a label's second line, a warning, survives)."""
    return "\n".join(line if len(line) <= n else line[: n - 1] + "…" for line in text.split("\n"))


def _interpolation(picture: np.ndarray) -> str:
    """Small inputs (a 28-pixel digit) are enlarged with crisp pixels; photos are resampled smoothly."""
    return "nearest" if max(picture.shape[:2]) < 100 else "antialiased"


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
    fig, axes = plt.subplots(1, 2, figsize=(COLUMN, 2.4), layout="constrained")
    for ax, values, what in ((axes[0], by_input, "input channels"), (axes[1], by_output, "output filters")):
        ax.fill_between(np.arange(len(values)), values, color="#4c72b0", step="mid")
        ax.set_xlim(0, len(values) - 1)
        ax.set_ylim(0, None)
        ax.set_xlabel(f"{what}, sorted ({len(values)})", fontsize=FONT)
        ax.set_ylabel("weight L2 norm", fontsize=FONT)
        ax.tick_params(labelsize=MIN_FONT)
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle(f"{layer}: 1×1 convolution, {w.shape[0]} outputs × {w.shape[1]} inputs", fontsize=FONT + 1)
    _save(fig, path)


def _colour_scale(values: np.ndarray) -> tuple[str, float, float, str]:
    lo, hi = float(values.min()), float(values.max())
    if lo < 0 < hi:
        v = max(-lo, hi)
        return DIVERGING, -v, v, "activation (red +, blue −)"
    return SEQUENTIAL, lo, hi if hi > lo else lo + 1, "activation"


def channel_grid(maps: np.ndarray, channels: list[int], dead: np.ndarray, path: Path, title: str) -> None:
    """Activation maps (K, H, W) on one shared colour scale, as one mosaic; dead channels framed and crossed in red.
    Drawn as a single image (not a subplot per channel) so a 48-channel grid takes a fraction of a second. Columns of
    4 (8 beyond 16 maps), the mosaic as wide as the column less a thin colour bar, each channel's number above its
    tile at MIN_FONT."""
    k, h, w = maps.shape
    cmap_name, vmin, vmax, bar = _colour_scale(maps)
    cmap = plt.get_cmap(cmap_name)
    cols = grid_columns(k) if k <= 16 else 8
    width = COLUMN - 0.75  # inches of mosaic: the rest holds the colour bar and its ticks
    cell = width * DPI / cols  # PNG pixels per tile with its gap
    scale = max(1, math.ceil(0.9 * cell / max(h, w)))  # small maps (7×7) are enlarged with crisp pixels
    tiles = (cmap(np.clip((maps - vmin) / (vmax - vmin), 0, 1))[..., :3] * 255).astype(np.uint8)
    tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
    th, tw = h * scale, w * scale
    red = np.array([200, 0, 0], dtype=np.uint8)
    edge = max(2, tw // 40)
    for i in np.flatnonzero(dead):
        t = tiles[i]
        t[:edge, :] = red
        t[-edge:, :] = red
        t[:, :edge] = red
        t[:, -edge:] = red
        d = np.arange(min(th, tw))
        t[d * th // min(th, tw), d * tw // min(th, tw)] = red
        t[d * th // min(th, tw), (tw - 1) - d * tw // min(th, tw)] = red
    pad = max(2, tw // 12)
    mosaic_w = cols * (tw + pad) + pad
    per_px = width * DPI / mosaic_w  # PNG pixels per mosaic pixel
    label = math.ceil(1.45 * MIN_FONT / 72 * DPI / per_px)  # room above each tile for its channel number
    rows = math.ceil(k / cols)
    grid = np.full((rows * (th + pad + label) + pad, mosaic_w, 3), 255, dtype=np.uint8)
    spots = []
    for i in range(k):
        r, c = divmod(i, cols)
        y, x = pad + label + r * (th + pad + label), pad + c * (tw + pad)
        grid[y:y + th, x:x + tw] = tiles[i]
        spots.append((x + tw / 2, y - pad / 2))
    height = width * grid.shape[0] / grid.shape[1]
    top = 0.32
    fig = plt.figure(figsize=(COLUMN, height + top))
    ax = fig.add_axes((0, 0, width / COLUMN, height / (height + top)))
    ax.imshow(grid, interpolation="antialiased")
    ax.set_axis_off()
    for i, (x, y) in enumerate(spots):
        ax.text(x, y, str(channels[i]), ha="center", va="bottom", fontsize=MIN_FONT,
                color="#c00" if dead[i] else "black")
    fig.suptitle(_short(title, 90), fontsize=FONT, x=0.5 * width / COLUMN, y=1 - 0.04 / (height + top), va="top")
    cax = fig.add_axes((width / COLUMN + 0.02, 0.1 * height / (height + top), 0.12 / COLUMN,
                        0.8 * height / (height + top)))
    mappable = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(vmin, vmax), cmap=cmap)
    colour_bar = fig.colorbar(mappable, cax=cax)
    colour_bar.ax.tick_params(labelsize=MIN_FONT, length=2, pad=1)
    colour_bar.set_label(bar, fontsize=MIN_FONT)
    _save(fig, path)


def _map_row(fig, row_axes, picture: np.ndarray, m: np.ndarray, label: str, method: str, cmap, vmin: float,
             vmax: float):
    """One row of an attribution figure: the image, the map with its colour bar, the map over the image; returns
    the map's axes."""
    ax_img, ax_map, ax_over = row_axes
    ax_img.imshow(picture, interpolation=_interpolation(picture))
    ax_img.set_title(_short(label, 34), fontsize=FONT)
    im = ax_map.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax)
    ax_map.set_title(_short(method, 34), fontsize=FONT)
    ax_over.imshow(picture, interpolation=_interpolation(picture))
    ax_over.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax, alpha=0.6)
    ax_over.set_title("overlay", fontsize=FONT)
    for ax in row_axes:
        ax.set_axis_off()
    _colour_bar(fig, im, row_axes.tolist())
    return ax_map


def attribution_rows(picture: np.ndarray, maps: np.ndarray, labels: list[str], path: Path, method: str,
                     meaning: str, signed: bool = False) -> None:
    """One row per target: the image, the map (own colour scale with a bar), the map over the image."""
    t = len(maps)
    fig, axes = plt.subplots(t, 3, figsize=(COLUMN, ROW * t + 0.35), squeeze=False, layout="constrained")
    for row, (m, label) in enumerate(zip(maps, labels)):
        if signed:
            v = float(np.abs(m).max()) or 1.0
            cmap, vmin, vmax = DIVERGING, -v, v
        else:
            cmap, vmin, vmax = SEQUENTIAL, 0.0, float(m.max()) or 1.0
        _map_row(fig, axes[row], picture, m, label, method, cmap, vmin, vmax)
    _footnote(fig, f"Colour: {meaning}; each row on its own scale.")
    _save(fig, path)


def heat_overlay(picture: np.ndarray, m: np.ndarray, signed: bool, percentile: float) -> np.ndarray:
    """(H, W, 3) floats in [0, 1]: a map over a dimmed grey copy of the picture (see _heat_overlay)."""
    return _heat_overlay(picture, m, signed, percentile)


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
    tile = COLUMN / cols
    low = 2.3 + 0.16 * m  # the curves and, under each, its legend (a method a line)
    fig = plt.figure(figsize=(COLUMN, (tile + 0.2) * rows + (low if curves else 0) + 0.2), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[tile * rows, low]) if curves else (fig, None)
    panels = top.subplots(rows, cols, squeeze=False).ravel()
    panels[0].imshow(picture, interpolation=_interpolation(picture))
    panels[0].set_title(_short(target or "image", 24), fontsize=MIN_FONT)
    for ax, mp, title, sgn, colour in zip(panels[1:], maps, titles, signed, colours):
        ax.imshow(_heat_overlay(picture, mp, sgn, percentile), interpolation=_interpolation(picture))
        ax.set_title(_short(title, 24), fontsize=MIN_FONT, color=colour, fontweight="bold")
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
            ax.set_xlabel(f"fraction of pixels {what}", fontsize=MIN_FONT)
            ax.set_ylabel("log-odds of the class (nats)", fontsize=MIN_FONT)
            ax.tick_params(labelsize=MIN_FONT)
            ax.spines[["top", "right"]].set_visible(False)
            ax.legend(fontsize=MIN_FONT, frameon=False, ncol=1, loc="upper center", bbox_to_anchor=(0.5, -0.22))
        ax_del.set_title("deletion (area: lower = more faithful)", fontsize=MIN_FONT + 0.5)
        ax_ins.set_title("insertion (area: higher = more faithful)", fontsize=MIN_FONT + 0.5)
    _save(fig, path)


def occlusion_rows(picture: np.ndarray, maps: np.ndarray, labels: list[str], path: Path, method: str,
                   meaning: str, window: int) -> None:
    """Occlusion maps, one row per target: the image, the signed map on a symmetric diverging scale (a square of the
    window's size in its corner for scale), and the map over the image."""
    from matplotlib.patches import Rectangle

    t = len(maps)
    fig, axes = plt.subplots(t, 3, figsize=(COLUMN, ROW * t + 0.35), squeeze=False, layout="constrained")
    for row, (m, label) in enumerate(zip(maps, labels)):
        v = float(np.abs(m).max()) or 1.0
        ax_map = _map_row(fig, axes[row], picture, m, label, method, DIVERGING, -v, v)
        h = m.shape[0]
        ax_map.add_patch(Rectangle((1, h - 1 - window), window, window, fill=False, edgecolor="black", lw=1.2))
        ax_map.text(1 + window / 2, h - 3 - window, "window", ha="center", va="bottom", fontsize=MIN_FONT)
    _footnote(fig, f"Colour: {meaning}; each row on its own symmetric scale.")
    _save(fig, path)


def grabcut_rows(picture: np.ndarray, saliency: np.ndarray, masks: np.ndarray, labels: list[str], path: Path,
                 saliency_meaning: str) -> None:
    """One row per target: the image, the saliency map that seeded GrabCut (own scale, with a bar), and the
    foreground mask over the image (foreground tinted green and outlined, background greyed out, area in the
    title)."""
    t = len(masks)
    fig, axes = plt.subplots(t, 3, figsize=(COLUMN, ROW * t + 0.35), squeeze=False, layout="constrained")
    for row, (s, mask, label) in enumerate(zip(saliency, masks, labels)):
        ax_img, ax_sal, ax_mask = axes[row]
        ax_img.imshow(picture, interpolation=_interpolation(picture))
        ax_img.set_title(_short(label, 34), fontsize=FONT)
        im = ax_sal.imshow(s, cmap=SEQUENTIAL, vmin=0.0, vmax=float(s.max()) or 1.0)
        ax_sal.set_title("saliency (GrabCut seeds)", fontsize=FONT)
        fg = mask > 0.5
        grey = picture.astype(np.float32).mean(-1, keepdims=True)
        tint = np.array([60.0, 255.0, 60.0], dtype=np.float32)
        shown = np.where(fg[..., None], 0.75 * picture + 0.25 * tint, 0.25 * grey + 0.15 * 255)  # object: tinted green
        ax_mask.imshow(np.clip(shown, 0, 255).astype(np.uint8))
        if fg.any() and not fg.all():
            ax_mask.contour(fg.astype(float), levels=[0.5], colors=["#3f3"], linewidths=1.2)
        ax_mask.set_title(f"foreground: {fg.mean():.0%} of the image", fontsize=FONT)
        for ax in axes[row]:
            ax.set_axis_off()
        _colour_bar(fig, im, [ax_sal])
    _footnote(fig, f"Saliency colour: {saliency_meaning}.")
    _save(fig, path)


def guided_rows(picture: np.ndarray, grads: np.ndarray, shown: np.ndarray, labels: list[str], path: Path,
                title: str, map_title: str, percentile: float, bar_label: str = "|gradient|") -> None:
    """One row per target: image | guided gradient as colour | its max-|gradient| map (already clipped for
    display at `percentile`) | overlay. The colour image is 0.5 grey where the gradient is zero, ±(the percentile
    of |g|) mapped to the ends of each channel's range."""
    t = len(shown)
    fig, axes = plt.subplots(t, 4, figsize=(COLUMN, 1.75 * t + 0.35), squeeze=False, layout="constrained")
    for row in range(t):
        g = grads[row].transpose(1, 2, 0)
        if g.shape[-1] == 1:
            g = np.repeat(g, 3, axis=-1)
        top = float(np.percentile(np.abs(g), percentile)) or float(np.abs(g).max()) or 1.0
        colour = np.clip(g / (2 * top) + 0.5, 0, 1)
        m = shown[row]
        vmax = float(m.max()) or 1.0
        ax_img, ax_rgb, ax_map, ax_over = axes[row]
        ax_img.imshow(picture, interpolation=_interpolation(picture))
        ax_img.set_title(_short(labels[row], 24), fontsize=MIN_FONT)
        ax_rgb.imshow(colour, interpolation=_interpolation(colour))
        ax_rgb.set_title(_wrapped(f"{title} (colour)", 1.5), fontsize=MIN_FONT)
        im = ax_map.imshow(m, cmap=SEQUENTIAL, vmin=0, vmax=vmax)
        ax_map.set_title(_wrapped(map_title, 1.5), fontsize=MIN_FONT)
        ax_over.imshow(picture, interpolation=_interpolation(picture))
        ax_over.imshow(m, cmap=SEQUENTIAL, vmin=0, vmax=vmax, alpha=0.6)
        ax_over.set_title("overlay", fontsize=MIN_FONT)
        for ax in axes[row]:
            ax.set_axis_off()
        _colour_bar(fig, im, axes[row].tolist())
    _footnote(fig, f"Colour of the map: {bar_label}, clipped at the {percentile:g}th percentile; grey in the colour "
                   "image is a zero gradient.")
    _save(fig, path)


def picture_row(pictures: list[np.ndarray], titles: list[str], path: Path, suptitle: str | None = None,
                columns: int | None = None) -> None:
    """Pictures side by side at the same size, each titled (original, changed, difference ...); more than `columns`
    wrap onto further rows, so that a long row stays legible at the page's width."""
    cols = min(len(pictures), columns or grid_columns(len(pictures)))
    rows = -(-len(pictures) // cols)
    cell = COLUMN / cols
    lines = max(1, max(_wrapped(t, cell - 0.1).count("\n") + 1 for t in titles))
    fig, axes = plt.subplots(rows, cols, figsize=(COLUMN, (cell + 0.16 * lines + 0.05) * rows + (0.3 if suptitle else 0)),
                             squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, picture, title in zip(axes.flat, pictures, titles):
        ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=255,
                  interpolation="nearest" if max(picture.shape[:2]) < 100 else "lanczos")
        ax.set_title(_wrapped(title, cell - 0.1), fontsize=MIN_FONT)
    if suptitle:
        fig.suptitle(_wrapped(suptitle, COLUMN - 0.2, FONT), fontsize=FONT)
    _save(fig, path)


def picture_grid(grid: list[list[np.ndarray]], cell_titles: list[list[str]], row_titles: list[str],
                 column_titles: list[str], path: Path, cell: float = 2.4) -> None:
    """grid[r][c] pictures (uint8, RGB or grayscale) with a title per row (left), per column (top) and per cell
    (below it)."""
    rows, cols = len(grid), max(len(r) for r in grid)
    side = 1.0 if any(row_titles) else 0.1  # inches for the row titles
    cell = min(cell, (COLUMN - side) / cols)
    below = 0.3 if any(t for r in cell_titles for t in r) else 0.05
    fig, axes = plt.subplots(rows, cols, figsize=(cell * cols + side, (cell + below) * rows + 0.3), squeeze=False,
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
                      interpolation="nearest" if max(picture.shape[:2]) < 100 else "lanczos")
            if cell_titles[r][c]:
                ax.set_xlabel(_wrapped(cell_titles[r][c], cell), fontsize=MIN_FONT)
            if r == 0 and column_titles[c]:
                ax.set_title(_wrapped(column_titles[c], cell), fontsize=MIN_FONT)
            if c == 0 and row_titles[r]:
                ax.set_ylabel(_wrapped(row_titles[r], 1.2), fontsize=MIN_FONT)
    _save(fig, path)
