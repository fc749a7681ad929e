"""Saliency + GrabCut: the gradient saliency map seeds OpenCV's GrabCut, which grows it into an object mask.

Simonyan et al. (2014, section 3.1) segment the object a class network sees by using its saliency map as GrabCut's
(Rother et al. 2004) colour-model seeds; this is that recipe. The saliency map is max over colour channels of
|∂ class logit / ∂ pixel| (generator/techniques/saliency.py), smoothed with a Gaussian of `smooth` pixels (a single
pixel's gradient is noisy; the seeds should be regions). Pixels are ranked by smoothed saliency, ties in raster
order, and GrabCut's mask is initialized from the ranks:

  top `foreground` fraction                       → definite foreground (GC_FGD)
  next, up to the top `probable_foreground`       → probable foreground  (GC_PR_FGD)
  bottom `background` fraction                    → definite background (GC_BGD)
  the rest                                        → probable background  (GC_PR_BGD)

GrabCut then fits a colour model (two Gaussian mixtures) to the foreground and background seeds and re-labels the
probable pixels by a graph cut over colour and edges, `iterations` times; definite labels never change. The mask is
the final foreground (definite or probable), at the model's input resolution. OpenCV's random number generator
(used by GrabCut's k-means initialization) is seeded with the run's seed before each call, so masks are repeatable.

The artifact's main array is the mask (0/1, float), as the map the shared attribution machinery evaluates (deletion
of the mask's pixels first, the randomization check); `saliency` holds the smoothed saliency that seeded it and
`seeds` GrabCut's initial labels (0 BGD, 1 FGD, 2 PR_BGD, 3 PR_FGD). Metrics: the mask's area fraction and the share
of the total saliency that falls inside the mask.
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch
from pydantic import Field, model_validator

from generator import figures
from generator.techniques.attribution import ATTRIBUTION_ARRAYS, AttributionParams, AttributionTechnique
from generator.techniques.base import Artifact, Job


class SaliencyGrabCutParams(AttributionParams):
    foreground: float = Field(
        0.05, gt=0, lt=1, description="most salient fraction of pixels seeded as definite foreground")
    probable_foreground: float = Field(
        0.30, gt=0, lt=1,
        description="most salient fraction seeded as foreground at least probably (includes the definite)")
    background: float = Field(
        0.30, gt=0, lt=1, description="least salient fraction of pixels seeded as definite background")
    smooth: float = Field(
        3.0, ge=0, le=64, description="σ in input pixels of the Gaussian smoothing the saliency (0: none)")
    iterations: int = Field(5, ge=1, le=50, description="GrabCut iterations")
    sanity: bool = Field(False, description="model randomization check (off by default: the mask is a segmentation, "
                                            "and the saliency technique's own page already checks its map)")

    @model_validator(mode="after")
    def _fractions_fit(self) -> "SaliencyGrabCutParams":
        if self.foreground > self.probable_foreground:
            raise ValueError(f"foreground ({self.foreground}) must not exceed probable_foreground "
                             f"({self.probable_foreground})")
        if self.probable_foreground + self.background > 1:
            raise ValueError(f"probable_foreground + background ({self.probable_foreground + self.background:g}) "
                             "must not exceed 1")
        return self

    def quick(self) -> "SaliencyGrabCutParams":
        return super().quick().model_copy(update={"iterations": min(self.iterations, 2)})


def plain_saliency(model, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """max over channels of |∂ logit[target] / ∂ x|, (N, C, H, W) → (N, H, W): the saliency technique's map."""
    from generator.techniques.saliency import channel_max_abs, class_gradients

    return channel_max_abs(class_gradients(model, x, targets))


def smooth_maps(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma <= 0:
        return maps
    from generator.faithfulness import blur

    return blur(maps[:, None], sigma)[:, 0]


def seed_mask(saliency: np.ndarray, params: SaliencyGrabCutParams) -> np.ndarray:
    """GrabCut's initial labels (H, W) uint8 from a saliency map, by rank (ties in raster order)."""
    flat = saliency.reshape(-1)
    n = flat.size
    order = np.argsort(-flat, kind="stable")  # most salient first
    seeds = np.full(n, cv2.GC_PR_BGD, dtype=np.uint8)
    n_fg = max(1, math.ceil(params.foreground * n))
    n_pr = max(n_fg, math.ceil(params.probable_foreground * n))
    n_bg = max(1, math.ceil(params.background * n))
    seeds[order[:n_pr]] = cv2.GC_PR_FGD
    seeds[order[:n_fg]] = cv2.GC_FGD
    seeds[order[n - n_bg:]] = cv2.GC_BGD
    return seeds.reshape(saliency.shape)


def grabcut(picture: np.ndarray, seeds: np.ndarray, iterations: int, seed: int) -> np.ndarray:
    """Foreground (H, W) bool of an (H, W, 3) uint8 picture, GrabCut initialized with the `seeds` labels."""
    mask = seeds.copy()
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(seed)
    cv2.grabCut(np.ascontiguousarray(picture), mask, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)


class SaliencyGrabCut(AttributionTechnique):
    kind = "saliency_grabcut"
    title = "Saliency + GrabCut"
    summary = "the saliency map seeds OpenCV's GrabCut: an object mask for the class"
    version = 2
    Params = SaliencyGrabCutParams
    arrays = {"map": "(targets, H, W) float32: GrabCut's foreground mask, 1 = foreground, 0 = background; one per "
                     "target",
              "saliency": "(targets, H, W) float32: the saliency map that seeded it, max over colour channels of "
                          "|∂ class logit / ∂ pixel|, Gaussian-smoothed by `smooth`",
              "seeds": "(targets, H, W) float32: GrabCut's initial labels from the saliency ranks: 0 background, "
                       "1 foreground, 2 probable background, 3 probable foreground (OpenCV's GC_* values)",
              **ATTRIBUTION_ARRAYS}
    colour_map_meaning = "GrabCut foreground (1) / background (0)"
    saliency_meaning = "|∂ class score / ∂ pixel|, max over channels, smoothed"

    def compute(self, ctx, x: torch.Tensor, targets: torch.Tensor, params) -> dict[str, torch.Tensor]:
        from generator import images as imagelib  # (a module-level import would be circular)

        sal = smooth_maps(plain_saliency(ctx.model, x, targets).float(), params.smooth)
        sal_np = sal.cpu().numpy()
        masks, seeds = [], []
        for row in range(len(x)):
            picture = imagelib.display(x[row], ctx.model.input)  # the crop the model saw, as uint8 RGB
            s = seed_mask(sal_np[row], params)
            masks.append(grabcut(picture, s, params.iterations, ctx.seed))
            seeds.append(s)
        return {"map": torch.from_numpy(np.stack(masks).astype(np.float32)).to(x.device), "saliency": sal,
                "seeds": torch.from_numpy(np.stack(seeds).astype(np.float32)).to(x.device)}

    def attribute(self, ctx, x: torch.Tensor, targets: torch.Tensor, params) -> torch.Tensor:
        return self.compute(ctx, x, targets, params)["map"]

    def run(self, ctx, jobs: list[Job]) -> list[Artifact]:
        arts = super().run(ctx, jobs)
        for art in arts:
            masks, sal = art.arrays["map"], art.arrays["saliency"]
            for t, m, s in zip(art.meta["targets"], masks, sal):
                t["area_fraction"] = float(m.mean())
                t["saliency_inside"] = float((s * m).sum() / s.sum()) if s.sum() > 0 else None
            art.meta["metrics"].update({
                "area_fraction": float(masks.mean()),
                "saliency_inside": float(np.mean([t["saliency_inside"] or 0.0 for t in art.meta["targets"]])),
            })
        return arts

    def draw(self, art: Artifact, job: Job, env, path: Path) -> bool:
        from generator.techniques.saliency import display_maps

        labels = [f"{t['label']} (p={t['probability']:.2f})" for t in art.meta["targets"]]
        figures.grabcut_rows(env.picture(job.image), display_maps(art.arrays["saliency"], False), art.main, labels,
                             path, self.saliency_meaning)
        return True
