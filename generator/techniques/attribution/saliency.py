"""Vanilla gradient saliency (Simonyan, Vedaldi & Zisserman 2014): how much each pixel would change the class score.

The class score is the unnormalized logit (not the softmax probability, whose gradient also depends on every other
class). The map is max |∂score/∂x| over the colour channels."""
from __future__ import annotations

import torch

from generator.techniques.attribution.base import ATTRIBUTION_ARRAYS, AttributionParams, AttributionTechnique
from generator.techniques.attribution.gradients import GradientDrawing, saliency_map


class SaliencyParams(AttributionParams):
    pass


class Saliency(GradientDrawing, AttributionTechnique):
    kind = "saliency"
    title = "Saliency (gradient)"
    summary = "gradient of the class score w.r.t. the input pixels: max |∂score/∂x| over colour channels"
    version = 3  # 3: log-odds faithfulness; constant maps unscored
    Params = SaliencyParams
    colour_map_meaning = "|∂score/∂x|, max over channels"
    arrays = {"map": "(targets, H, W) float32: saliency, max over colour channels of |∂ class logit / ∂ input "
                     "pixel| (normalized input units), unclipped; one map per target", **ATTRIBUTION_ARRAYS}

    def attribute(self, ctx, x: torch.Tensor, targets: torch.Tensor, params) -> torch.Tensor:
        return saliency_map(ctx.model, x, targets)
