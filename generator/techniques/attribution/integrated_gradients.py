"""Integrated gradients (Sundararajan, Taly & Yan 2017): the class-score gradient averaged along the straight path
from a baseline image x' to the input x, times (x − x'). Attributions are signed, and by completeness they sum to
F(x) − F(x') (F: the class logit) up to the error of the numerical integral, which the page reports.

Baselines, both built in the model's normalized input space:
  - `black`: a black picture, i.e. per channel (0 − mean) / std — *not* zeros of the normalized tensor, which
    would be the mean (grey) colour;
  - `blurred`: the input under a Gaussian blur of σ = `blur_sigma` × the input side (reflect padding).
Integration (`method`), over `steps` points:
  - `riemann_trapezoid`: α = 0, 1/(n−1), …, 1 with trapezoid weights 1/(n−1) (halved at both ends), which sum to
    1. Captum's `riemann_trapezoid` uses the same points with weights 1/n (halved at the ends), summing to 1 − 1/n:
    its attributions are ours × (n−1)/n.
  - `gausslegendre`: Gauss–Legendre nodes and weights on [0, 1], Captum's default (identical to Captum's).
The map is the sum over colour channels of the attributions (signed: drawn on a diverging scale)."""
from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from pydantic import Field

from generator.techniques.attribution.base import (CLIP_PERCENTILE, AttributionParams, AttributionTechnique,
                                                  attribution_arrays, flag)
from generator.artifacts import Artifact, Job
from generator.techniques.attribution.gradients import batch_field, copy_batches, gradient_batch

GAP_WARNING = 0.1
"""A completeness gap above 10 % of |F(x) − F(x′)| means the path integral missed: the target is flagged on its
figure, and the result listed in meta['unmet'] (the page's warning, the index's count)."""


SANITY_STEPS = 16  # path points of the randomization check's maps (see sanity_params)


class IntegratedGradientsParams(AttributionParams):
    quick_caps = {"steps": 8}

    baseline: Literal["black", "blurred"] = Field(
        "black", description="the reference image: a black picture, or a Gaussian blur of the input"
    )
    blur_sigma: float = Field(0.08, gt=0, le=1,
                              description="σ of the blurred baseline, as a fraction of the input side")
    steps: int = Field(32, ge=2, le=1024, description="points on the path from the baseline to the input")
    method: Literal["riemann_trapezoid", "gausslegendre"] = Field(
        "riemann_trapezoid", description="how the path integral is approximated (see the page)"
    )
    batch: int | None = batch_field("path points")

    def sanity_params(self) -> "IntegratedGradientsParams":
        # The check compares rankings of pixels, the model's own map against its randomized copies' maps, all made
        # at these settings. 16 path points rank pixels much as 64 do (Spearman 0.91–0.99 between the two on the
        # sample report's six photos, EfficientNet-Lite0), while a randomized top stage gives a different map; the
        # check costs a quarter of what it did at 64.
        return self.model_copy(update={"steps": min(self.steps, SANITY_STEPS)})


def path_points(method: str, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(alphas, weights) in float64 for integrating over [0, 1]."""
    if method == "riemann_trapezoid":
        alphas = torch.linspace(0, 1, steps, dtype=torch.float64)
        weights = torch.full((steps,), 1.0 / (steps - 1), dtype=torch.float64)
        weights[0] /= 2
        weights[-1] /= 2
        return alphas, weights
    if method == "gausslegendre":
        nodes, w = np.polynomial.legendre.leggauss(steps)
        return torch.from_numpy(0.5 * (nodes + 1)), torch.from_numpy(0.5 * w)
    raise ValueError(f"unknown integration method '{method}'")


def make_baseline(model, x: torch.Tensor, kind: str, blur_sigma: float = 0.08) -> torch.Tensor:
    """The baseline of each row of x (N, C, H, W), in the normalized input space the model sees."""
    if kind == "black":
        return model.normalize(torch.zeros_like(x))
    if kind == "blurred":
        h, w = x.shape[-2:]
        sigma = blur_sigma * min(h, w)
        size = min(2 * math.ceil(3 * sigma) + 1, 2 * min(h, w) - 1)  # reflect padding needs < the side
        size -= 1 - size % 2
        return TF.gaussian_blur(x, [size, size], [sigma, sigma])
    raise ValueError(f"unknown baseline '{kind}'")


def integrated_gradients(model, x: torch.Tensor, baseline: torch.Tensor, targets: torch.Tensor, steps: int,
                         method: str, batch: int) -> torch.Tensor:
    """(x − x') · Σ_k w_k ∂F/∂x(x' + α_k (x − x')) for each row → (N, C, H, W). The N × steps path points go
    through the model `batch` at a time; each point's gradient is accumulated into its row."""
    alphas, weights = path_points(method, steps)
    alphas, weights = alphas.to(x.device, x.dtype), weights.to(x.device, x.dtype)
    x, baseline = x.detach(), baseline.detach()
    delta = x - baseline
    targets = targets.to(x.device)
    total = torch.zeros_like(x)
    for row, k in copy_batches(len(x), steps, batch, x.device):
        leaf = (baseline[row] + alphas[k].view(-1, 1, 1, 1) * delta[row]).requires_grad_(True)
        with torch.enable_grad():
            logits = _logits(model, leaf)
            score = logits.gather(1, targets[row].view(-1, 1)).sum()
            (grad,) = torch.autograd.grad(score, leaf)
        total.index_add_(0, row, grad * weights[k].view(-1, 1, 1, 1))
    return delta * total


def _logits(model, leaf: torch.Tensor) -> torch.Tensor:
    return model.logits(leaf.clone())  # a non-leaf copy: a model may modify its input in place


class IntegratedGradients(AttributionTechnique):
    kind = "integrated_gradients"
    title = "Integrated gradients"
    summary = ("gradients integrated along the path from a baseline image: signed attributions that sum to the "
               "score change")
    # version 4: the randomization check at 16 path points, against the model's own map at 16
    version = 4
    Params = IntegratedGradientsParams
    colour_map_meaning = "attribution (red +, blue −)"
    clip = CLIP_PERCENTILE
    signed = True
    arrays = attribution_arrays("signed integrated gradients, summed over colour channels (each pixel's share of "
                                "F(x) − F(x′), in logits)",
                                completeness="(targets, 3) float32: per target F(x) − F(x′) (the class logit at "
                                             "the image minus at the baseline), the sum of the attributions, and "
                                             "the absolute gap between them")

    def attributions(self, ctx, x: torch.Tensor, targets: torch.Tensor, params) -> tuple[torch.Tensor, torch.Tensor]:
        baseline = make_baseline(ctx.model, x, params.baseline, params.blur_sigma)
        batch = gradient_batch(ctx.model, x, params.steps, params.batch)
        attr = integrated_gradients(ctx.model, x, baseline, targets, params.steps, params.method, batch)
        return attr, baseline

    def attribute(self, ctx, x: torch.Tensor, targets: torch.Tensor, params) -> torch.Tensor:
        return self.attributions(ctx, x, targets, params)[0].sum(1)

    def compute(self, ctx, x: torch.Tensor, targets: torch.Tensor, params) -> dict[str, torch.Tensor]:
        attr, baseline = self.attributions(ctx, x, targets, params)
        with torch.no_grad():
            ends = torch.stack([ctx.model.logits(x), ctx.model.logits(baseline)])  # F(x), F(x')
        scores = ends.gather(2, targets.view(1, -1, 1).expand(2, -1, 1)).squeeze(2)
        total = attr.double().sum((1, 2, 3))
        # per row: F(x) − F(x'), Σ attributions, |Σ attributions − (F(x) − F(x'))|
        difference = (scores[0] - scores[1]).double()
        completeness = torch.stack([difference, total, (total - difference).abs()], 1)
        return {"map": attr.sum(1), "completeness": completeness}

    def run(self, ctx, jobs: list[Job]) -> list[Artifact]:
        arts = super().run(ctx, jobs)
        for art in arts:
            rows = art.arrays["completeness"]
            for target, (difference, total, gap) in zip(art.meta["targets"], rows.tolist()):
                target.update(score_difference=difference, attribution_sum=total, completeness_gap=gap,
                              relative_gap=gap / abs(difference) if difference else None)
                if target["relative_gap"] is not None and target["relative_gap"] > GAP_WARNING:
                    flag(art, target, f"completeness gap {target['relative_gap']:.0%}",
                         f"{target['label']}: the attributions miss F(x) − F(x′) = {difference:.3g} by "
                         f"{target['relative_gap']:.0%} (more than {GAP_WARNING:.0%}): the path integral needs more "
                         f"than {jobs[0].params.steps} steps, or the path crosses a steep region")
            gaps = [t["completeness_gap"] for t in art.meta["targets"]]
            relative = [t["relative_gap"] for t in art.meta["targets"] if t["relative_gap"] is not None]
            art.meta["metrics"]["completeness_gap"] = max(gaps)
            art.meta["metrics"]["relative_completeness_gap"] = max(relative) if relative else None
            worst = art.meta["metrics"]["relative_completeness_gap"]
            if worst is not None and worst > GAP_WARNING:
                art.meta["note"] = (f"the attributions miss F(x) − F(x′) by {worst:.0%}: the path integral needs more "
                                    f"steps than {jobs[0].params.steps} on this image")
        return arts
