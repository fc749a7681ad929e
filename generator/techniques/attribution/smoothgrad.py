"""SmoothGrad (Smilkov, Thorat, Kim, Viégas & Wattenberg 2017): the average of a gradient over copies of the input
with Gaussian noise added, which removes the gradient's pixel-scale noise and leaves the shape it keeps finding.

For each image x, `samples` copies x + ε_s with ε_s ~ N(0, σ²), σ = `noise` × (max(x) − min(x)) (the paper's noise
level: a fraction of the input's range, measured in the normalized input the model sees). The gradient
(`of: saliency` plain, `of: guided_backprop` guided) is taken on every copy, its magnitude |∂score/∂x| averaged over
the copies per colour channel, and the map is the max over channels, as for saliency: the smoothed saliency map. This
is what Captum's NoiseTunnel over Saliency computes (abs=True, its default), and the magnitude average that the
authors' code uses by default: averaging the *signed* gradient instead lets its pixel-scale sign flips cancel into
noise of the same size as the signal (site_src/tuning.md#smoothgrad). With `of:
guided_backprop` the signed mean is kept too (`guided`), drawn as a colour image like guided backprop's.

The noise is drawn once per call from a CPU `torch.Generator` seeded with the spec's seed, as standard normals of
one image's shape scaled per image by σ: every image sees the same draws, so an image's map does not depend on the
other images in its batch, and it is the same on every device."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from generator.techniques.attribution.rectifiers import no_rectifier
from generator.techniques.attribution.base import (CLIP_PERCENTILE, AttributionParams,
                                                  AttributionTechnique, attribution_arrays)
from generator.artifacts import Artifact, Job
from generator.techniques.attribution.gradients import (batch_field, class_gradients, copy_batches,
    draw_guided, gradient_batch)


class SmoothGradParams(AttributionParams):
    quick_caps = {"samples": 4}

    noise: float = Field(0.15, gt=0, le=1, description="noise σ as a fraction of the input's range (max − min)")
    samples: int = Field(16, ge=1, le=1024, description="noisy copies averaged per image")
    of: Literal["saliency", "guided_backprop"] = Field("saliency", description="which gradient is smoothed")
    batch: int | None = batch_field("noisy copies")


def noise_draws(seed: int, samples: int, shape: tuple[int, ...]) -> torch.Tensor:
    """(samples, *shape) standard normals from a CPU generator seeded with `seed`: the same on every device."""
    return torch.randn((samples, *shape), generator=torch.Generator().manual_seed(seed))


def noise_scale(x: torch.Tensor, noise: float) -> torch.Tensor:
    """σ of each row of x (N, ...): `noise` × (max − min) of that row."""
    flat = x.detach().flatten(1)
    return noise * (flat.amax(1) - flat.amin(1))


def smooth_gradients(model, x: torch.Tensor, targets: torch.Tensor, noise: float, samples: int, guided: bool,
                     batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean |class gradient| and mean class gradient over noisy copies of each row of x (N, C, H, W): two
    (N, C, H, W) tensors."""
    z = noise_draws(seed, samples, tuple(x.shape[1:])).to(x.device, x.dtype)
    sigma = noise_scale(x, noise)
    targets = targets.to(x.device)
    magnitude = torch.zeros_like(x)
    total = torch.zeros_like(x)
    for row, s in copy_batches(len(x), samples, batch, x.device):
        noisy = x[row] + sigma[row].view(-1, 1, 1, 1) * z[s]
        grad = class_gradients(model, noisy, targets[row], guided=guided)
        magnitude.index_add_(0, row, grad.abs())
        total.index_add_(0, row, grad)
    return magnitude / samples, total / samples


class SmoothGrad(AttributionTechnique):
    kind = "smoothgrad"
    title = "SmoothGrad"
    summary = "a gradient map averaged over noisy copies of the image: less speckle, the same evidence"
    # version 4: log-odds faithfulness; constant maps unscored
    version = 4
    Params = SmoothGradParams
    colour_map_meaning = "mean |∂score/∂x|, max over channels"
    clip = CLIP_PERCENTILE
    signed = False
    arrays = attribution_arrays("the mean over noisy copies of |class-logit gradient| (plain or guided, by `of`), "
                                "max over colour channels",
                                guided="(targets, C, H, W) float32: with of: guided_backprop, the signed guided "
                                       "gradient averaged over the noisy copies")

    def inapplicable(self, model, params: SmoothGradParams) -> str | None:
        return no_rectifier(model) if params.of == "guided_backprop" else None

    def compute(self, ctx, x: torch.Tensor, targets: torch.Tensor, params) -> dict[str, torch.Tensor]:
        magnitude, mean = smooth_gradients(ctx.model, x, targets, params.noise, params.samples,
                                           params.of == "guided_backprop",
                                           gradient_batch(ctx.model, x, params.samples, params.batch), ctx.seed)
        arrays = {"map": magnitude.amax(1)}
        if params.of == "guided_backprop":
            arrays["guided"] = mean  # the signed mean, drawn as a colour image like guided backprop's
        return arrays

    def draw(self, art: Artifact, job: Job, env, path: Path) -> bool:
        if "guided" in art.arrays:
            return draw_guided(art, job, env, path, "SmoothGrad of guided backprop", "mean |gradient|, max over channels")
        return super().draw(art, job, env, path)
