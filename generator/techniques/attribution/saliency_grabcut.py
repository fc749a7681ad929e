"""Saliency + GrabCut: the class's saliency seeds OpenCV's GrabCut, which grows it into an object mask.

Simonyan et al. (2014, section 3.1) segment the object a class network sees by using its saliency map as GrabCut's
(Rother et al. 2004) colour-model seeds; this is that recipe, with seeds that find the object on photos. The plain
gradient |∂ class logit / ∂ pixel| is speckled over the whole image, background included, so:

  - the saliency is SmoothGrad's (`samples` noisy copies, noise `noise` × the input's range; generator/techniques/
    smoothgrad.py): the mean |gradient| over the copies, max over colour channels, which keeps the evidence and
    drops the speckle (`samples: 1` gives the plain gradient);
  - it is gated by Grad-CAM (`gate`, at Grad-CAM's default layer, upsampled, each scaled to its maximum): a pixel
    seeds the object only where both the input gradient and the class's evidence in the last spatial layer are
    strong, which keeps seeds off high-contrast background edges (the rocket's towers);
  - the image border (`border`, a fraction of the shorter side) is definite background, as a GrabCut rectangle
    would make it, except where it is definite foreground.

The seed map (gated, then smoothed with a Gaussian of `smooth` pixels) ranks the pixels, ties in raster order, and
GrabCut's mask is initialized from the ranks:

  top `foreground` fraction                       → definite foreground (GC_FGD)
  next, up to the top `probable_foreground`       → probable foreground  (GC_PR_FGD)
  bottom `background` fraction, and the border    → definite background (GC_BGD)
  the rest                                        → probable background  (GC_PR_BGD)

GrabCut then fits a colour model (two Gaussian mixtures) to the foreground and background seeds and re-labels the
probable pixels by a graph cut over colour and edges, `iterations` times; definite labels never change. The mask is
the final foreground (definite or probable), at the model's input resolution. OpenCV's random number generator
(used by GrabCut's k-means initialization) is seeded with the run's seed before each call, so masks are repeatable.

The artifact's main array is the mask (0/1, float), as the map the shared attribution machinery evaluates (deletion
of the mask's pixels first, the randomization check); `saliency` holds the smoothed saliency that seeded it and
`seeds` GrabCut's initial labels (0 BGD, 1 FGD, 2 PR_BGD, 3 PR_FGD). Metrics: the mask's area fraction and the share
of the total saliency that falls inside the mask.
How the seeds were chosen: site_src/tuning.md#saliency-grabcut.
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch
from pydantic import Field, model_validator

from generator import figures, images as imagelib
from generator.techniques.attribution.base import (ATTRIBUTION_ARRAYS, AttributionParams, AttributionTechnique,
                                                  display_maps, target_labels)
from generator.artifacts import Artifact, Job
from generator.techniques.attribution.gradients import gradient_batch, saliency_map
from generator.techniques.attribution.gradcam import default_layer, grad_cam, upsample
from generator.techniques.attribution.smoothgrad import smooth_gradients
from generator.techniques.attribution.faithfulness import blur


class SaliencyGrabCutParams(AttributionParams):
    quick_caps = {"iterations": 2, "samples": 4}

    foreground: float = Field(
        0.02, gt=0, lt=1, description="most salient fraction of pixels seeded as definite foreground")
    probable_foreground: float = Field(
        0.20, gt=0, lt=1,
        description="most salient fraction seeded as foreground at least probably (includes the definite)")
    background: float = Field(
        0.30, gt=0, lt=1, description="least salient fraction of pixels seeded as definite background")
    smooth: float = Field(
        3.0, ge=0, le=64, description="σ in input pixels of the Gaussian smoothing the saliency (0: none)")
    samples: int = Field(16, ge=1, le=1024, description="SmoothGrad's noisy copies behind the saliency (1: the plain "
                                                        "gradient, no noise)")
    noise: float = Field(0.15, gt=0, le=1, description="SmoothGrad's noise σ as a fraction of the input's range")
    gate: bool = Field(True, description="multiply the saliency by the class's Grad-CAM map (at Grad-CAM's default "
                                         "layer) before ranking; off where the model has no spatial layer")
    border: float = Field(0.04, ge=0, lt=0.5, description="width of the image border seeded as definite "
                                                          "background, as a fraction of the shorter side (0: none)")
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


def gate_layer(model, params: SaliencyGrabCutParams) -> str | None:
    """The Grad-CAM layer that gates the saliency: Grad-CAM's default layer; None with `gate` off or where the model
    has no spatial layer (the saliency alone)."""
    if not params.gate:
        return None
    try:
        return default_layer(model)
    except ValueError:
        return None


def seed_saliency(ctx, x: torch.Tensor, targets: torch.Tensor, params: SaliencyGrabCutParams
                  ) -> tuple[torch.Tensor, str | None]:
    """The map the seeds are ranked by, (N, H, W) >= 0, and the Grad-CAM layer that gated it (None: not gated):
    SmoothGrad's mean |gradient| (max over channels) times the class's Grad-CAM map, each scaled to its maximum
    per row, then smoothed by `params.smooth`."""
    if params.samples > 1:
        batch = gradient_batch(ctx.model, x, params.samples)
        sal = smooth_gradients(ctx.model, x, targets, params.noise, params.samples, False, batch, ctx.seed)[0]
        sal = sal.amax(1).float()
    else:
        sal = saliency_map(ctx.model, x, targets).float()
    layer = gate_layer(ctx.model, params)
    if layer is not None:
        cam = upsample(grad_cam(ctx.model, x, targets, layer), tuple(x.shape[-2:])).float()
        scale = lambda m: m / m.flatten(1).amax(1).clamp_min(1e-30).view(-1, 1, 1)  # noqa: E731
        gated = scale(sal) * scale(cam)
        # A class with no positive Grad-CAM anywhere leaves the saliency to rank the pixels alone.
        empty = cam.flatten(1).amax(1) <= 0
        sal = torch.where(empty.view(-1, 1, 1), scale(sal), gated)
    return smooth_maps(sal, params.smooth), layer


def smooth_maps(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma <= 0:
        return maps
    return blur(maps[:, None], sigma)[:, 0]


def border_mask(shape: tuple[int, int], fraction: float) -> np.ndarray:
    """(H, W) bool: the frame `fraction` of the shorter side wide (at least one pixel when fraction > 0)."""
    frame = np.zeros(shape, dtype=bool)
    if fraction <= 0:
        return frame
    b = max(1, round(fraction * min(shape)))
    frame[:b], frame[-b:], frame[:, :b], frame[:, -b:] = True, True, True, True
    return frame


def seed_mask(saliency: np.ndarray, params: SaliencyGrabCutParams) -> np.ndarray:
    """GrabCut's initial labels (H, W) uint8 from a seed map, by rank (ties in raster order); the border is
    definite background where it is not definite foreground."""
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
    seeds = seeds.reshape(saliency.shape)
    seeds[border_mask(saliency.shape, params.border) & (seeds != cv2.GC_FGD)] = cv2.GC_BGD
    return seeds


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
    summary = "the class's saliency seeds OpenCV's GrabCut: an object mask for the class"
    # version 3: SmoothGrad × Grad-CAM seeds, border as background; log-odds faithfulness
    version = 3
    Params = SaliencyGrabCutParams
    colour_map_meaning = "GrabCut foreground (1) / background (0)"
    arrays = {"map": "(targets, H, W) float32: GrabCut's foreground mask, 1 = foreground, 0 = background; one per "
                     "target",
              "saliency": "(targets, H, W) float32: the seed map the pixels were ranked by: SmoothGrad's mean "
                          "|∂ class logit / ∂ pixel| (max over colour channels) times the class's Grad-CAM map "
                          "(gate), each scaled to its maximum, Gaussian-smoothed by `smooth`",
              "seeds": "(targets, H, W) float32: GrabCut's initial labels from the seed map's ranks and the border: "
                       "0 background, 1 foreground, 2 probable background, 3 probable foreground (OpenCV's GC_* "
                       "values)",
              **ATTRIBUTION_ARRAYS}
    saliency_meaning = "seed map: SmoothGrad × Grad-CAM, smoothed"

    def compute(self, ctx, x: torch.Tensor, targets: torch.Tensor, params) -> dict[str, torch.Tensor]:
        sal, _layer = seed_saliency(ctx, x, targets, params)
        sal_np = sal.cpu().numpy()
        masks, seeds = [], []
        for row in range(len(x)):
            picture = imagelib.display(x[row], ctx.model.input)  # the crop the model saw, as uint8 RGB
            s = seed_mask(sal_np[row], params)
            masks.append(grabcut(picture, s, params.iterations, ctx.seed))
            seeds.append(s)
        return {"map": torch.from_numpy(np.stack(masks).astype(np.float32)).to(x.device), "saliency": sal,
                "seeds": torch.from_numpy(np.stack(seeds).astype(np.float32)).to(x.device)}

    def run(self, ctx, jobs: list[Job]) -> list[Artifact]:
        arts = super().run(ctx, jobs)
        gate = gate_layer(ctx.model, jobs[0].params)
        for art in arts:
            art.meta["gate_layer"] = gate
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
        figures.grabcut_rows(env.picture(job.image), display_maps(art.arrays["saliency"], False), art.main,
                             target_labels(art), path, self.saliency_meaning)
        return True
