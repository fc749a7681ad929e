"""The comparison page's figures, drawn with the primitives of `generator/figures.py`: computed numbers in, PNGs out,
nothing computed here."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from generator.figures import (COLUMN, MIN_FONT, _colour_bar, _save, _short, filter_scale, heat_overlay,
                               normalize_filters, tile_grid)


def cka_heatmap(cka: np.ndarray, rows: list[str], cols: list[str], row_model: str, col_model: str, path: Path) -> None:
    """Linear CKA of every pair of layers, each cell printed."""
    side = max(2.4, 0.42 * max(len(rows), len(cols)) + 1.4)
    fig, ax = plt.subplots(figsize=(min(COLUMN, side + 1.0), side), layout="constrained")
    im = ax.imshow(cka, vmin=0, vmax=1, cmap="viridis")
    for i in range(cka.shape[0]):
        for j in range(cka.shape[1]):
            value = cka[i, j]
            ax.text(j, i, "–" if np.isnan(value) else f"{value:.2f}", ha="center", va="center", fontsize=MIN_FONT,
                    color="black" if value > 0.6 else "white")
    ax.set_xticks(range(len(cols)), [_short(c, 18) for c in cols], rotation=40, ha="right", fontsize=MIN_FONT)
    ax.set_yticks(range(len(rows)), [_short(r, 18) for r in rows], fontsize=MIN_FONT)
    ax.set_xlabel(f"{_short(col_model, 40)} layer", fontsize=MIN_FONT + 1)
    ax.set_ylabel(f"{_short(row_model, 40)} layer", fontsize=MIN_FONT + 1)
    _colour_bar(fig, im, ax, "linear CKA")
    _save(fig, path)


def series_lines(members: list[str], layers: list[str], cka: np.ndarray, path: Path) -> None:
    """CKA of each layer with the same layer of the series' last model, checkpoint by checkpoint (cka: (M, L))."""
    fig, ax = plt.subplots(figsize=(COLUMN, 2.6), layout="constrained")
    x = np.arange(len(members))
    for j, layer in enumerate(layers):
        ax.plot(x, cka[:, j], marker="o", label=_short(layer, 24))
    # A series' members share its name: the ticks show what differs (epoch-1, epoch-2, ...), the label the rest.
    shared = os.path.commonprefix(members)
    shared = shared[: shared.rfind("-") + 1] if len(members) > 1 else ""
    ax.set_xticks(x, [_short(m[len(shared):], 22) for m in members], fontsize=MIN_FONT)
    if shared:
        ax.set_xlabel(shared.rstrip("-"), fontsize=MIN_FONT + 1)
    low = float(np.nanmin(cka)) if np.isfinite(cka).any() else 0.0
    ax.set_ylim(max(0.0, low - 0.05) if low > 0.5 else 0.0, 1.01)  # close-up when all layers are alike
    ax.set_ylabel("CKA with the last", fontsize=MIN_FONT + 1)
    ax.tick_params(labelsize=MIN_FONT)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=MIN_FONT, ncol=2 if len(layers) > 4 else 1, loc="lower right")
    _save(fig, path)


def weight_bars(names: list[str], change: np.ndarray, path: Path) -> None:
    """Relative change of each conv and linear layer's weights, one bar each, top to bottom in definition order."""
    fig, ax = plt.subplots(figsize=(COLUMN, max(1.6, 0.22 * len(names) + 0.8)), layout="constrained")
    y = np.arange(len(names))
    ax.barh(y, change, color="#4c72b0")
    for i, value in enumerate(change):
        ax.text(value, i, f" {value:.2f}", va="center", fontsize=MIN_FONT)
    ax.set_yticks(y, [_short(n, 28) for n in names], fontsize=MIN_FONT)
    ax.invert_yaxis()
    ax.set_xlabel("‖W_B − W_A‖ / ‖W_A‖", fontsize=MIN_FONT + 1)
    ax.set_xlim(0, max(float(np.nanmax(change)) * 1.18, 1e-3) if len(change) else 1)
    ax.tick_params(axis="x", labelsize=MIN_FONT)
    _save(fig, path)


def filters_side_by_side(weights: list[np.ndarray], titles: list[str], path: Path, most: int = 32) -> None:
    """The first conv layer's filters of each model, the same filters in the same places."""
    fig, axes = plt.subplots(1, len(weights), figsize=(COLUMN, COLUMN / len(weights) * 0.62), layout="constrained")
    for ax, w, title in zip(np.atleast_1d(axes), weights, titles):
        w = w[:most] if w.shape[1] in (1, 3) else w[:most].mean(1, keepdims=True)
        tiles = normalize_filters(w)  # uint8, each filter scaled on its own
        tiles = tiles.transpose(0, 2, 3, 1) if tiles.shape[1] == 3 else tiles[:, 0]
        cols = int(np.ceil(np.sqrt(len(tiles))))
        grid = tile_grid(tiles, cols, pad=1, scale=filter_scale(w.shape[-1], 24))
        ax.imshow(grid, cmap=None if grid.ndim == 3 else "gray", interpolation="nearest")
        ax.set_title(_short(title, 34), fontsize=MIN_FONT + 1)
        ax.axis("off")
    _save(fig, path)


def correlation_curve(layers: list[str], correlations: list[np.ndarray], path: Path) -> None:
    """Each shared layer's channels sorted by how alike they stay: correlation of A's and B's activation."""
    fig, ax = plt.subplots(figsize=(COLUMN, 2.4), layout="constrained")
    for layer, r in zip(layers, correlations):
        values = np.sort(r[~np.isnan(r)])
        ax.plot(np.linspace(0, 1, len(values)), values, label=f"{_short(layer, 24)} ({len(r)} channels)")
    ax.set_xlabel("share of the layer's channels, least alike first", fontsize=MIN_FONT + 1)
    ax.set_ylabel("correlation A ↔ B", fontsize=MIN_FONT + 1)
    ax.set_ylim(-1.02, 1.02)
    ax.tick_params(labelsize=MIN_FONT)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=MIN_FONT)
    _save(fig, path)


def top_images(rows: list[tuple[str, list[np.ndarray]]], path: Path) -> None:
    """For each changed channel, the data-set images it responds to most in A, then in B (one row each)."""
    cols = max(len(p) for _, p in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(COLUMN, 0.95 * len(rows) + 0.2), squeeze=False,
                             gridspec_kw={"wspace": 0.04, "hspace": 0.55})
    for (title, pictures), row in zip(rows, axes):
        for k, ax in enumerate(row):
            ax.axis("off")
            if k < len(pictures):
                ax.imshow(pictures[k], cmap="gray" if pictures[k].ndim == 2 else None, interpolation="nearest")
        row[0].set_title(title, fontsize=MIN_FONT, loc="left")
    _save(fig, path)


def maps_side_by_side(picture: np.ndarray, maps: list[np.ndarray], titles: list[str], path: Path) -> None:
    """An image and each model's map over it, on each map's own colour scale (overlay at the 99th percentile)."""
    fig, axes = plt.subplots(1, len(maps) + 1, figsize=(COLUMN, COLUMN / (len(maps) + 1) + 0.35), layout="constrained")
    axes[0].imshow(picture, cmap="gray" if picture.ndim == 2 else None)
    axes[0].set_title("image", fontsize=MIN_FONT + 1)
    for ax, m, title in zip(axes[1:], maps, titles):
        ax.imshow(heat_overlay(picture, m, signed=False, percentile=99))
        ax.set_title(_short(title, 30), fontsize=MIN_FONT + 1)
    for ax in axes:
        ax.axis("off")
    _save(fig, path)
