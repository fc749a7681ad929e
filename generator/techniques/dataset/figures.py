"""Figures of the data-set views: embedding maps, the t-SNE thumbnail grid, nearest neighbours, top patches per
channel and activation histograms. Figures draw and never compute: every number shown arrives in the arguments.

Pictures are uint8 arrays, (H, W, 3) colour or (H, W) grayscale; grayscale stays grey (never a false colour map).
Mosaics of many pictures are composed as one array and drawn with one imshow, captions placed over it, so a
figure of a hundred pictures takes a fraction of a second.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import LogLocator, MaxNLocator
from PIL import Image

from generator.figures import COLUMN, DISPLAY_PPI, DPI, MIN_FONT, _save, _short, save_picture, show_pixels

DENSITY = DPI // DISPLAY_PPI  # mosaics are composed at 2×: one canvas pixel per PNG pixel, shown at half
COLUMN_PX = int(COLUMN * DISPLAY_PPI)  # the column's width in CSS pixels
CHAR_PX = 0.5 * MIN_FONT * DISPLAY_PPI / 72  # CSS pixels per character of a caption

MATCH = np.array([40, 160, 40], np.uint8)  # neighbour frame: same label as the query
MISMATCH = np.array([210, 40, 40], np.uint8)  # different label
UNLABELLED = "#b0b0b0"
_MARKERS = "os^Dv<>p"


def _rgb(picture: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3): grayscale repeated into three equal channels, so grey stays grey in a colour mosaic."""
    p = np.asarray(picture)
    if p.dtype != np.uint8:
        p = np.clip(np.round(p), 0, 255).astype(np.uint8)
    if p.ndim == 3 and p.shape[2] == 1:
        p = p[..., 0]
    if p.ndim == 2:
        p = np.repeat(p[..., None], 3, axis=2)
    return p[..., :3]


def _fit(picture: np.ndarray, size: int, crop: bool) -> np.ndarray:
    """(size, size, 3) uint8. crop: centre-crop to a square first; otherwise the whole picture letterboxed on white.
    Enlarged 4× or more: nearest-neighbour, so a 3-pixel patch reads as pixels; otherwise bilinear (which also
    averages properly when shrinking)."""
    p = _rgb(picture)
    h, w = p.shape[:2]
    if crop:
        s = min(h, w)
        p = p[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        h = w = s
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resample = Image.NEAREST if scale >= 4 else Image.BILINEAR
    p = np.asarray(Image.fromarray(p).resize((nw, nh), resample))
    if (nh, nw) == (size, size):
        return p
    out = np.full((size, size, 3), 255, np.uint8)
    y, x = (size - nh) // 2, (size - nw) // 2
    out[y:y + nh, x:x + nw] = p
    return out


def _class_style(n_classes: int):
    """(colour, marker) of class i: tab10 up to 10 classes, tab20 up to 20, beyond that tab20's colours cycled with
    a different marker on each lap."""
    cmap = plt.get_cmap("tab10" if n_classes <= 10 else "tab20")
    laps = cmap.N
    return lambda i: (cmap(i % laps), _MARKERS[(i // laps) % len(_MARKERS)])


def embedding_scatter(points: np.ndarray, labels: np.ndarray, classes: list[str], path: Path, title: str,
                      axis_labels: tuple[str, str] | None = None, max_legend: int = 40) -> None:
    """A 2-D map coloured by label, the legend (classes present, with their counts) outside the axes. Unlabelled
    points (label < 0) are grey, drawn first so labelled points stay on top. axis_labels: shown for maps whose
    axes mean something (PCA); without them the ticks are hidden (t-SNE's axes mean nothing)."""
    points = np.asarray(points, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1)
    n = len(points)
    size = float(np.clip(8000 / max(n, 1), 2, 36))  # marker area: small markers for large N
    style = _class_style(len(classes))
    present = [int(c) for c in np.unique(labels[labels >= 0])]
    legend = len(present) <= max_legend
    fig, ax = plt.subplots(figsize=(COLUMN, 5.0), layout="constrained")
    unknown = labels < 0
    if unknown.any():
        ax.scatter(points[unknown, 0], points[unknown, 1], s=size, c=UNLABELLED, marker="o", linewidths=0,
                   label=f"unlabelled ({int(unknown.sum())})", rasterized=n > 2000)
    for c in present:
        mask = labels == c
        colour, marker = style(c)
        name = _short(classes[c], 24) if c < len(classes) else str(c)
        ax.scatter(points[mask, 0], points[mask, 1], s=size, color=colour, marker=marker, linewidths=0,
                   alpha=0.85 if n > 500 else 1.0, label=f"{name} ({int(mask.sum())})", rasterized=n > 2000)
    if axis_labels:
        ax.set_xlabel(axis_labels[0], fontsize=MIN_FONT + 1)
        ax.set_ylabel(axis_labels[1], fontsize=MIN_FONT + 1)
        ax.tick_params(labelsize=MIN_FONT)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")
    ax.spines[["top", "right"]].set_visible(False)
    shown = len(present) + bool(unknown.any())
    if legend and shown:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=MIN_FONT, frameon=False,
                  markerscale=max(1, 20 / size) ** 0.5, ncol=max(1, math.ceil(shown / 25)), handletextpad=0.2,
                  borderaxespad=0)
    note = "" if legend else f" ({len(present)} classes, too many for a legend)"
    ax.set_title(_short(title + note, 90), fontsize=MIN_FONT + 1)
    _save(fig, path)


def thumbnail_grid(pictures: list[np.ndarray], assignment: np.ndarray, path: Path, cell: int = 48) -> None:
    """The cnnembed grid: cell (r, c) shows pictures[assignment[r, c]], centre-cropped to a square and resized to
    cell × cell CSS pixels (drawn at 2×, so sharp on a 2× screen); cells holding -1 stay white."""
    rows, cols = assignment.shape
    cell = max(8, min(cell, COLUMN_PX // cols)) * DENSITY
    canvas = np.full((rows * cell, cols * cell, 3), 255, np.uint8)
    for (r, c), i in np.ndenumerate(assignment):
        if i >= 0:
            canvas[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = _fit(pictures[i], cell, crop=True)
    save_picture(canvas, path, density=DENSITY)


def _mosaic_figure(canvas: np.ndarray) -> tuple[plt.Figure, plt.Axes]:
    """A figure showing `canvas` at one PNG pixel per canvas pixel (a canvas composed at DENSITY × its size on the
    page), for captions drawn in canvas pixels."""
    h, w = canvas.shape[:2]
    fig = plt.figure(figsize=(w / DPI, h / DPI))
    ax = fig.add_axes((0, 0, 1, 1))
    show_pixels(ax, canvas)
    ax.set_axis_off()
    return fig, ax


def _frame(canvas: np.ndarray, y: int, x: int, size: int, width: int, colour: np.ndarray) -> None:
    canvas[y - width:y, x - width:x + size + width] = colour
    canvas[y + size:y + size + width, x - width:x + size + width] = colour
    canvas[y:y + size, x - width:x] = colour
    canvas[y:y + size, x + size:x + size + width] = colour


def neighbor_rows(queries: list[np.ndarray], feature_neighbors: list[list[np.ndarray]],
                  pixel_neighbors: list[list[np.ndarray]], path: Path, query_titles: list[str],
                  feature_titles: list[list[str]], pixel_titles: list[list[str]],
                  feature_match: list[list[bool]] | None = None, pixel_match: list[list[bool]] | None = None,
                  space_title: str = "feature space", cell: int = 96) -> None:
    """Nearest neighbours, one block per query: the query on the left, its neighbours in feature space on the
    block's first row and in pixel space on the second (omitted when no query has pixel neighbours). A green frame:
    the neighbour's label equals the query's; red: it does not; none when the match is not given. Captions under
    every picture (label, distance). Sizes are CSS pixels on the page: `cell` shrinks so that the query and its k
    neighbours fit the column; the canvas is composed at DENSITY ×."""
    rows_per = 2 if any(len(p) for p in pixel_neighbors) else 1
    k = max([len(f) for f in feature_neighbors] + [len(p) for p in pixel_neighbors] + [1])
    frame, pad, caption, gutter = 2, 6, 26, 16  # CSS pixels: frame, space around tiles, caption lines, row labels
    cell = max(40, min(cell, (COLUMN_PX - 2 * pad - gutter - k * (2 * frame + pad)) // (k + 1)))
    css_cell = cell
    frame, pad, caption, gutter, cell = (v * DENSITY for v in (frame, pad, caption, gutter, cell))
    step = cell + 2 * frame + pad + caption  # one row of tiles with its captions
    block = rows_per * step + pad  # one query
    left = pad + cell + gutter + pad  # the query column and the gutter holding the row labels
    width = left + k * (cell + 2 * frame + pad)
    canvas = np.full((len(queries) * block + pad, width, 3), 255, np.uint8)
    texts = []  # (x, y, text, kwargs)
    for qi, query in enumerate(queries):
        top = pad + qi * block
        qy = top + (rows_per * step - caption - cell) // 2
        canvas[qy:qy + cell, pad:pad + cell] = _fit(query, cell, crop=False)
        texts.append((pad + cell / 2, qy + cell + 2, query_titles[qi], {"weight": "bold"}))
        rows = [(feature_neighbors[qi], feature_titles[qi], feature_match and feature_match[qi], space_title)]
        if rows_per == 2:
            rows.append((pixel_neighbors[qi], pixel_titles[qi], pixel_match and pixel_match[qi], "pixel space"))
        for ri, (pictures, titles, match, name) in enumerate(rows):
            y = top + ri * step + frame
            texts.append((pad + cell + gutter / 2 + pad / 2, y + cell / 2, name, {"rotation": 90, "color": "#555"}))
            for j, picture in enumerate(pictures):
                x = left + j * (cell + 2 * frame + pad) + frame
                canvas[y:y + cell, x:x + cell] = _fit(picture, cell, crop=False)
                if match is not None:
                    _frame(canvas, y, x, cell, frame, MATCH if match[j] else MISMATCH)
                texts.append((x + cell / 2, y + cell + frame + 1, titles[j], {}))
        if qi:  # a thin rule between queries
            canvas[top - pad // 2, pad:width - pad] = 210
    fig, ax = _mosaic_figure(canvas)
    for x, y, text, kw in texts:
        room = css_cell if "rotation" not in kw else step // DENSITY
        ax.text(x, y, _wrap(text, room), ha="center", va="top" if "rotation" not in kw else "center",
                fontsize=MIN_FONT, linespacing=1.0, **kw)
    _save(fig, path)


def _wrap(text: str, width_px: float) -> str:
    """At most two lines (the caption space holds two), each cut to about the tile's width in CSS pixels; a caption
    "label · number" too long for one line is split at the dot."""
    import textwrap

    n = max(6, int(width_px / CHAR_PX))
    lines = text.splitlines()
    if len(lines) == 1 and len(text) > n:
        lines = text.rsplit(" · ", 1) if " · " in text else textwrap.wrap(text, n) or [text]
        if len(lines) > 2:
            lines = [lines[0], " ".join(lines[1:])]
    return "\n".join(_short(line, n) for line in lines[:2])


def patch_grid(patches: list[list[np.ndarray]], channel_titles: list[str], patch_titles: list[list[str]], path: Path,
               cell: int = 72) -> None:
    """One row per channel: its top patches (image regions that activate it most), each enlarged or shrunk to the
    same cell size, whole (a patch cut short by the image border stays narrow, letterboxed on white); the channel's
    title on the left, a caption (its activation) under each patch, on two lines when it does not fit one. `cell`
    in CSS pixels, shrunk so that a row fits the column; the canvas is composed at DENSITY ×."""
    k = max([len(p) for p in patches] + [1])
    pad, caption, left = 4, 26, 80  # CSS pixels; `left` is kept for the channel titles
    cell = max(32, min(cell, (COLUMN_PX - left - pad - k * pad) // k))
    css_cell = cell
    pad, caption, cell = (v * DENSITY for v in (pad, caption, cell))
    step = cell + caption + pad
    canvas = np.full((len(patches) * step + pad, pad + k * (cell + pad), 3), 255, np.uint8)
    fig_texts = []
    for r, row in enumerate(patches):
        y = pad + r * step
        fig_texts.append((-pad, y + cell / 2, channel_titles[r], "right", "center"))
        for j, patch in enumerate(row):
            x = pad + j * (cell + pad)
            canvas[y:y + cell, x:x + cell] = _fit(patch, cell, crop=False)
            fig_texts.append((x + cell / 2, y + cell + 1, patch_titles[r][j], "center", "top"))
    fig, ax = _mosaic_figure(canvas)
    for x, y, text, ha, va in fig_texts:
        ax.text(x, y, _wrap(text, css_cell) if va == "top" else text, ha=ha, va=va, fontsize=MIN_FONT,
                linespacing=1.0)
    _save(fig, path)


def activation_histograms(values: list[np.ndarray], titles: list[str], path: Path,
                          marks: list[np.ndarray] | None = None, bins: int = 40) -> None:
    """Small multiples: per channel, the histogram of its maximum activation on each image of the data set, each
    on its own x scale; red lines mark `marks` (the top-k values shown as patches). Counts go on a log scale where
    one bin dwarfs the typical one (a channel silent on most images), so the tail stays visible. Drawn as one
    filled outline per panel, few ticks, no layout engine."""
    n = len(values)
    cols = min(n, 4) or 1
    rows = max(1, math.ceil(n / cols))
    width, height = (COLUMN if cols > 1 else 2.8), 1.6 * rows + 0.5
    fig, axes = plt.subplots(rows, cols, figsize=(width, height), squeeze=False)
    fig.subplots_adjust(left=0.65 / width, right=1 - 0.1 / width, bottom=0.55 / height, top=1 - 0.25 / height,
                        wspace=0.4, hspace=0.55)
    for i, ax in enumerate(axes.ravel()):
        if i >= n:
            ax.set_axis_off()
            continue
        v = np.asarray(values[i], dtype=np.float64).ravel()
        v = v[np.isfinite(v)]
        counts, edges = np.histogram(v, bins=bins)
        ax.stairs(counts, edges, fill=True, color="#4c72b0")
        nonzero = counts[counts > 0]
        if len(nonzero) and counts.max() > 20 * np.median(nonzero):
            ax.set_yscale("log")
            ax.set_ylim(0.7, None)
            ax.yaxis.set_major_locator(LogLocator(numticks=4))
        else:
            ax.yaxis.set_major_locator(MaxNLocator(3, integer=True))
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.minorticks_off()  # log axes' minor ticks were most of the drawing time
        if marks is not None and marks[i] is not None and len(np.ravel(marks[i])):
            ax.vlines(np.ravel(marks[i]).astype(float), 0, 1, transform=ax.get_xaxis_transform(), color="#c00",
                      lw=0.7, alpha=0.8)
        ax.set_title(_short(titles[i], 30), fontsize=MIN_FONT)
        ax.tick_params(labelsize=MIN_FONT)
        ax.spines[["top", "right"]].set_visible(False)
    fig.supxlabel("maximum activation over the image (per image)", fontsize=MIN_FONT)
    fig.supylabel("images", fontsize=MIN_FONT)
    _save(fig, path)
