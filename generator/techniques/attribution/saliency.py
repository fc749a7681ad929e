"""Vanilla gradient saliency (Simonyan, Vedaldi & Zisserman 2014): how much each pixel would change the class score.

The class score is the unnormalized logit (not the softmax probability, whose gradient also depends on every other
class). The map is max |∂score/∂x| over the colour channels."""
from __future__ import annotations

import torch

from generator.techniques.attribution.base import CLIP_PERCENTILE, AttributionParams, AttributionTechnique, attribution_arrays
from generator.techniques.attribution.gradients import saliency_map


class SaliencyParams(AttributionParams):
    pass


class Saliency(AttributionTechnique):
    kind = "saliency"
    title = "Saliency (gradient)"
    summary = "gradient of the class score w.r.t. the input pixels: max |∂score/∂x| over colour channels"
    # version 3: log-odds faithfulness; constant maps unscored
    version = 3
    Params = SaliencyParams
    colour_map_meaning = "|∂score/∂x|, max over channels"
    clip = CLIP_PERCENTILE
    arrays = attribution_arrays("saliency, max over colour channels of |∂ class logit / ∂ input pixel| (normalized "
                                "input units), unclipped")

    def attribute(self, ctx, x: torch.Tensor, targets: torch.Tensor, params) -> torch.Tensor:
        return saliency_map(ctx.model, x, targets)
