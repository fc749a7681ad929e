"""Feature inversion (Mahendran & Vedaldi 2015, "Understanding Deep Image Representations by Inverting Them"): what
does a layer remember about an image? Reconstruct an image x from nothing but the layer's features Φ0 = Φ(x0) of the
original x0, by minimizing from a random start

    ‖Φ(x) − Φ0‖² / ‖Φ0‖²  +  λ_TV · TV_β(x)

The first term is their normalized feature loss (one λ means the same at every layer); the second their
total-variation regularizer, with β = 2 as they use, here the mean over pixels and channels of (∂x/∂u)² + (∂x/∂v)²
of the [0, 1] image. Their bounded-range term (the α-norm) is replaced by a hard bound: the image is squashed into
[0, 1] by a sigmoid (Fourier parameterization) or clamped (pixels). Their optimizer is gradient descent with
momentum and a decaying rate; ours is Adam with a cosine decay to a tenth of the rate.

Defaults (160 px, 200 steps):
- Parameterization: Lucid's decorrelated Fourier image (`generator.optvis.param`), spectrum falloff 1/f^1.5,
  squashed by the sigmoid.
- Learning rate by depth: the rate at a layer of total stride s (input side / feature side; the whole side for a
  flat output) is lr · min(1, 2/s)^(2/3): shallow layers want a large rate, deep ones a small one.
- Straight-through gradient at the inverted layer: when it is a ReLU, ReLU6 or Hardtanh module, the loss is computed
  on its output but the gradient reaches its input as if it were the identity (Bengio, Léonard & Courville 2013),
  so a unit the original switches on but the reconstruction leaves off still gets a gradient. The objective is
  unchanged (the same value, zero at x = x0).
- Jitter (M&V 2016, "Visualizing Deep Convolutional Neural Networks Using Natural Pre-images"): available, off by
  default. The reconstruction and the original are shifted by the same random (dy, dx) at each step, so the loss is
  still exact.
How the defaults were chosen: site_src/tuning.md#feature-inversion.

The loss is the engine's `feature_match` objective plus its `total_variation(β)`, run by the engine's one loop
(`optvis.render`: Adam with a cosine schedule, the straight-through read at a rectifier). Each forward stops at the
inverted layer, so a shallow layer costs a fraction of a full forward; the images of a job batch are inverted together, one batch (one forward per step) per layer, and
each image starts from its own seed, so a batch gives what single runs give. The model is left as it was: its
parameters' requires_grad flags and every module's train flag are restored and the hooks removed in `finally`;
gradients are taken with torch.autograd.grad w.r.t. the image only. On CUDA, results repeat only up to float
rounding.
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from generator import figures
from generator.artifacts import Artifact, Job, Params, Reads, PER_IMAGE
from generator.techniques.synthesis.base import SynthesisTechnique
from generator.figures import to_picture
from generator import optvis
from generator.optvis import fft_image, pixel_image
from generator.optvis.forward import LayerForward
from generator.hooks import record_outputs


class FeatureInversionParams(Params):
    quick_caps = {"steps": 16, "size": 64}

    layers: list[str] | None = Field(None, description="layers to invert (default: the model's chosen layers)")
    steps: int = Field(200, ge=1, le=5000, description="optimizer steps per layer")
    lr: float = Field(0.05, gt=0, le=1, description="Adam learning rate at the shallowest layers; a layer of stride "
                                                    "s uses lr·min(1, 2/s)^(2/3), decayed to a tenth (cosine)")
    tv: float = Field(0.5, ge=0, description="λ_TV: weight of the total variation of the [0, 1] image")
    beta: float = Field(2.0, ge=1, le=4, description="β of the total variation (Mahendran & Vedaldi use 2)")
    jitter: int = Field(0, ge=0, le=64, description="largest random shift per step, in pixels, of both the "
                                                     "reconstruction and the original")
    parameterization: Literal["fft", "pixel"] = Field(
        "fft", description="fft: Lucid's decorrelated Fourier image; pixel: the pixels themselves")
    decay_power: float = Field(1.5, ge=0, le=3, description="spectrum falloff of the Fourier image (higher: "
                                                            "smoother, and faster to find the layout)")
    size: int = Field(160, ge=8, le=512, description="image side, at most the model's input size (models of one "
                                                     "fixed size use theirs)")
    coarse_to_fine: bool = Field(True, description="the first half of the steps at half the size (a quarter of the "
                                                   "cost each), then the rest at full size (models that take other "
                                                   "sizes than their own)")


def pixel_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per image over all pixels and channels."""
    a = a.flatten(1).double()
    b = b.flatten(1).double()
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)


def invert(module: nn.Module, layer: str, originals: torch.Tensor, *, mean: torch.Tensor, std: torch.Tensor,
           steps: int, lr: float, tv: float, beta: float = 2.0, jitter: int = 0, parameterization: str = "fft",
           seed: int | list[int] = 0, decay_power: float = 1.5, sd: float = 0.01, straight_through: bool = True,
           squash: str = "sigmoid", lr_falloff: float = 2 / 3, jitter_seed: int = 0,
           coarse_to_fine: bool = False) -> dict:
    """Reconstruct each of `originals` (B, C, H, W) in [0, 1] from its features at `layer` with the engine (see the
    module docstring); `seed`: one per image, or one int (image b then uses seed + b). Returns the images (B, C, H,
    W) in [0, 1], the relative feature error ‖Φ(x) − Φ0‖/‖Φ0‖ per image at the end (unshifted), the loss per step
    (steps, B), the seconds, the layer's feature shape and the learning rate used."""
    b, c, h, w = originals.shape
    mean_values, std_values = mean.flatten().tolist(), std.flatten().tolist()
    if parameterization == "fft":
        param = fft_image(b, h, w, seed=seed, channels=c, decay_power=decay_power, sd=sd, decorrelate=c == 3,
                          squash=squash)
    else:  # M&V start from noise; here the model's mean colour plus a little of it
        param = pixel_image(b, h, w, seed=seed, channels=c, sd=sd, center=float(mean.mean()))
    with torch.no_grad(), LayerForward(module, [layer]) as forward:
        fixed = forward((originals - mean) / std)[0][layer]
    if not isinstance(fixed, torch.Tensor):
        raise TypeError(f"layer '{layer}' returned {type(fixed).__name__}, not a tensor")
    stride = h / fixed.shape[-2] if fixed.dim() == 4 else float(h)  # a flat output sees the whole image
    top = lr * min(1.0, 2.0 / stride) ** lr_falloff
    objective = optvis.feature_match(layer, originals, follows_transforms=jitter > 0, tag="feature")
    if tv:
        objective = objective + optvis.total_variation(tv, beta=beta)
    schedule = ({"steps": steps - steps // 2, "coarse_steps": steps // 2, "scales": (0.5, 1.0)}
                if coarse_to_fine and steps > 1 else {"steps": steps})
    result = optvis.render(module, objective, param, mean=mean_values, std=std_values, **schedule, lr=top,
                           schedule="cosine", transforms=optvis.jitter(jitter) if jitter else None, seed=jitter_seed,
                           read="straight" if straight_through else "output", measure=True,
                           device=originals.device)
    error = torch.from_numpy(np.sqrt(result.end["feature"]))
    return {"images": torch.from_numpy(result.images).to(originals.device), "error": error,
            "losses": torch.from_numpy(result.losses) if len(result.losses) else None, "seconds": result.seconds,
            "shape": list(fixed.shape[1:]), "lr": top, "steps": result.steps}


class FeatureInversion(SynthesisTechnique):
    kind = "feature_inversion"
    title = "Feature inversion"
    summary = "images reconstructed from one layer's features alone: what each layer keeps of an image"
    version = 2
    Params = FeatureInversionParams
    scope = PER_IMAGE
    arrays = {"reconstructions": "(layers, C, S, S) float32: the image reconstructed from each layer's features "
                                 "(in meta['layers'] order, the metrics' order), pixels in [0, 1]",
              "original": "(C, S, S) float32: the model's crop of the image at the reconstruction size, pixels in "
                          "[0, 1]"}

    def reads(self, params: FeatureInversionParams) -> Reads:
        return Reads(model_layers=params.layers is None)

    def wanted(self, model, params: FeatureInversionParams) -> list[str]:
        return list(params.layers) if params.layers is not None else list(model.layers)

    def check(self, model, params: FeatureInversionParams) -> list[str]:
        if params.layers is not None and not params.layers:
            return ["layers: the list is empty; name at least one layer to invert (or leave it out for the model's "
                    "chosen layers)"]
        if params.layers is None and not model.layers:
            return ["layers: the model has no chosen layers; name the layers to invert"]
        problems = [f"layers[{i}]: {problem}" for i, layer in enumerate(params.layers or [])
                    if (problem := model.missing_module(layer))]
        if problems:
            return problems
        wanted = self.wanted(model, params)
        side = self.side(model, params)
        try:
            shapes = model.probe(side).shapes
        except Exception as exc:  # e.g. a size too small for the layers
            return [f"size: the model fails on a {side}×{side} input ({type(exc).__name__}); choose a larger size"]
        not_tensors = [layer for layer in wanted if shapes.get(layer) is None]
        if not_tensors:  # the probe keeps shapes only: one more forward says what those layers do return
            with torch.no_grad(), record_outputs(model.module, not_tensors) as outs:
                model.module(model.blank(side))
        for layer in not_tensors:
            key = f"layers[{params.layers.index(layer)}]" if params.layers else "layers"
            problems.append(f"{key}: '{layer}' returns {type(outs.get(layer)).__name__}, not a tensor; feature "
                            "inversion needs a layer whose output is one tensor of features")
        return problems

    def side(self, model, params: FeatureInversionParams) -> int:
        if not model.takes_other_sizes():
            return model.input.size
        return min(params.size, model.input.size)

    def run(self, ctx, jobs: list[Job]) -> list[Artifact]:
        p: FeatureInversionParams = jobs[0].params
        model = ctx.model
        layers = self.wanted(model, p)
        batch = ctx.batch([j.image for j in jobs])
        mean, std = model.mean_std(batch)
        originals = model.denormalize(batch).clamp(0, 1)
        side = self.side(model, p)
        if originals.shape[-1] != side or originals.shape[-2] != side:
            originals = F.interpolate(originals, size=(side, side), mode="bilinear", align_corners=False,
                                      antialias=True).clamp(0, 1)
        # Each image's start depends on the seed, its contents and the layer only, not on the rest of the batch.
        seeds = [zlib.crc32(ctx.images[j.image].digest.encode()) % 2 ** 20 for j in jobs]
        results = {}
        for k, layer in enumerate(layers):
            results[layer] = invert(model.module, layer, originals, mean=mean, std=std, steps=p.steps, lr=p.lr,
                                    tv=p.tv, beta=p.beta, jitter=p.jitter, parameterization=p.parameterization,
                                    decay_power=p.decay_power, seed=[ctx.seed * 7919 + 104729 * k + s for s in seeds],
                                    jitter_seed=ctx.seed + k,
                                    coarse_to_fine=p.coarse_to_fine and model.takes_other_sizes())
        out = []
        for i, job in enumerate(jobs):
            rows = []
            for layer in layers:
                r = results[layer]
                rows.append({"layer": layer, "shape": r["shape"], "relative_error": float(r["error"][i]),
                             "correlation": float(pixel_correlation(r["images"][i:i + 1], originals[i:i + 1])[0]),
                             "steps": r["steps"], "lr": r["lr"], "seconds": r["seconds"], "batch": len(jobs),
                             "loss_start": float(r["losses"][0, i]), "loss_end": float(r["losses"][-1, i])})
            arrays = {"reconstructions": np.stack([results[l]["images"][i].cpu().numpy() for l in layers]),
                      "original": originals[i].cpu().numpy()}
            meta = {"layers": layers, "size": side,
                    "metrics": {"layers": rows,
                                "relative_error": [r["relative_error"] for r in rows],
                                "correlation": [r["correlation"] for r in rows]}}
            out.append(Artifact(arrays, meta))
        return out

    def draw(self, art, job, env, path: Path) -> bool:
        rows = art.metrics["layers"]
        pictures = [to_picture(art.arrays["original"])] + [to_picture(im) for im in art.arrays["reconstructions"]]
        cells = [f"the model's crop at {art.meta['size']} px"]
        cells += [f"rel. error {r['relative_error']:.2f} · r = {r['correlation']:.2f}" for r in rows]
        figures.picture_grid([pictures], [cells], [env.image_name(job.image)],
                             ["original"] + [r["layer"] for r in rows], path)
        return True

