"""Maximally activating patches (Zeiler & Fergus 2014; Girshick et al. 2014): for each chosen channel of a layer, the
data-set images where it fires hardest, each cropped at the receptive field of the position where it peaks.

One pass over the data set (the shared feature store keeps each channel's maximum and its position per image) serves
every channel of a layer; the boxes come from the measured receptive fields, so deeper layers show larger patches.
Each layer's channels also get a unit page: their patches beside their activation histogram over the data set."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from generator.techniques.dataset import figures as dataset_figures
from generator.layers import receptive_fields, spread
from generator.artifacts import Artifact, Job, Params, PER_LAYER_ACROSS_DATASET
from generator.techniques.base import Technique


class MaxPatchesParams(Params):
    quick_caps = {"per_layer": 4, "top_k": 4}

    channels: list[int] | None = Field(None, min_length=1, description="channels to show in every layer, at least "
                                                                       "one (default: a spread)")
    per_layer: int = Field(12, ge=1, le=256, description="channels per layer when 'channels' is not given")
    top_k: int = Field(8, ge=1, le=64, description="patches per channel")


def top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, largest first, ties to the lower index (so a ranking is reproducible)."""
    k = min(k, len(values))
    return np.lexsort((np.arange(len(values)), -values))[:k]


class MaxPatches(Technique):
    kind = "max_patches"
    title = "Top patches and unit pages"
    summary = "for chosen channels, the data-set patches that activate them most, cropped at the receptive field"
    version = 2
    Params = MaxPatchesParams
    scope = PER_LAYER_ACROSS_DATASET
    arrays = {
        "values": "(channels, top_k) float32: each chosen channel's largest activation in each of its top images, "
                  "largest first (the tiles' captions)",
        "images": "(channels, top_k) int64: data-set index of those images",
        "positions": "(channels, top_k, 2) int32: (row, column) of the peak in the layer's map",
        "boxes": "(channels, top_k, 4) int32: the crop shown, (top, left, bottom, right) in input pixels: the peak "
                 "unit's receptive field clipped at the border (the whole input when unknown)",
        "maxima": "(images, channels) float32: each chosen channel's largest activation in every data-set image (the "
                  "unit pages' histograms), in data-set order",
        "channels": "(channels,) int64: the chosen channels, the rows of the other arrays",
        "labels": "(channels, top_k) int64: class index of each top image in the data set's classes; -1 unlabelled",
    }

    def run(self, ctx, jobs: list[Job]) -> list[Artifact]:
        side = ctx.model.input.size
        fields = receptive_fields(ctx.model.module, [j.layer for j in jobs], ctx.model.channels, side)
        out = []
        for job in jobs:
            feats = ctx.features.layer(job.layer)
            maxima = np.asarray(feats.maxima)
            params: MaxPatchesParams = job.params
            if params.channels is not None:
                bad = [c for c in params.channels if not 0 <= c < maxima.shape[1]]
                if bad:
                    raise ValueError(f"channel {bad[0]} does not exist: '{job.layer}' has {maxima.shape[1]} channels")
                chosen = list(params.channels)
            else:
                chosen = spread(maxima, params.per_layer)
            rf = fields.get(job.layer)
            width = feats.spatial[1] if feats.spatial else 1
            labels = ctx.dataset.labels
            k = min(params.top_k, len(maxima))
            images = np.stack([top_k(maxima[:, c], k) for c in chosen])
            values = np.stack([maxima[images[i], c] for i, c in enumerate(chosen)]).astype(np.float32)
            flat = np.stack([np.asarray(feats.argmax)[images[i], c] for i, c in enumerate(chosen)])
            positions = np.stack([flat // width, flat % width], axis=-1).astype(np.int32)
            boxes = np.array([[rf.box(r, c, side, side) if rf is not None else (0, 0, side, side)
                               for r, c in row] for row in positions], dtype=np.int32)
            units = []
            for i, c in enumerate(chosen):
                top_labels = labels[images[i]]
                known = top_labels[top_labels >= 0]
                common = np.bincount(known).argmax() if len(known) else -1
                units.append({
                    "channel": int(c), "max": float(values[i, 0]), "mean_max": float(maxima[:, c].mean()),
                    "firing": float((maxima[:, c] > 0).mean()),
                    "top_label": ctx.dataset.classes[common] if common >= 0 else None,
                    "top_label_share": float((known == common).mean()) if len(known) else None,
                })
            meta = {
                "channels": [int(c) for c in chosen], "units": units, "shape": list(feats.shape),
                "field": None if rf is None else {"size": rf.size, "stride": rf.stride, "whole": rf.whole},
                "names": [[ctx.dataset.names[j] for j in row] for row in images],
                "metrics": {"channels": len(chosen), "images": len(maxima), "top_k": k,
                            "patch": None if rf is None or rf.whole else min(rf.size, side)},
            }
            out.append(Artifact({"values": values, "images": images.astype(np.int64), "positions": positions,
                                 "boxes": boxes, "maxima": maxima[:, chosen].astype(np.float32),
                                 "channels": np.asarray(chosen, dtype=np.int64),
                                 "labels": labels[images].astype(np.int64)}, meta))
        return out

    def draw(self, art, job, env, path: Path) -> dict[str, Path]:
        a = art.arrays
        channels = art.meta["channels"]
        patches = [[self.patch(env, int(i), box) for i, box in zip(a["images"][r], a["boxes"][r])]
                   for r in range(len(channels))]
        captions = [[f"{v:.2f}" for v in row] for row in a["values"]]
        titles = [f"channel {c}" for c in channels]
        figures = {"main": path}
        dataset_figures.patch_grid(patches, titles, captions, path)
        for r, c in enumerate(channels):
            unit = path.with_name(f"{path.stem}--unit-{c}.png")
            dataset_figures.patch_grid([patches[r]], [titles[r]], [[f"{v:.2f} · {env.dataset.label(int(i))}"
                                       for v, i in zip(a["values"][r], a["images"][r])]], unit, cell=96)
            hist = path.with_name(f"{path.stem}--hist-{c}.png")
            dataset_figures.activation_histograms([a["maxima"][:, r]], [f"{job.layer} · channel {c}"], hist,
                                                  marks=[a["values"][r]])
            figures[f"unit-{c}"] = unit
            figures[f"hist-{c}"] = hist
        return figures

    @staticmethod
    def patch(env, index: int, box) -> np.ndarray:
        top, left, bottom, right = (int(v) for v in box)
        return env.dataset_picture(index)[top:bottom, left:right]
