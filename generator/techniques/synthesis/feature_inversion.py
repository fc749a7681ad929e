"""Feature inversion (Mahendran & Vedaldi 2015, "Understanding Deep Image Representations by Inverting Them"): what
does a layer remember about an image? Reconstruct an image x from nothing but the layer's features Φ0 = Φ(x0) of the
original x0, by minimizing from a random start

    ‖Φ(x) − Φ0‖² / ‖Φ0‖²  +  λ_TV · TV_β(x)

The first term is their normalized feature loss (one λ means the same at every layer); the second their
total-variation regularizer, with β = 2 as they use, here the mean over pixels and channels of (∂x/∂u)² + (∂x/∂v)²
of the [0, 1] image. Their bounded-range term (the α-norm) is replaced by a hard bound: the image is squashed into
[0, 1] by a sigmoid (Fourier parameterization) or clamped (pixels). Their optimizer is gradient descent with
momentum and a decaying rate; ours is Adam with a cosine decay to a tenth of the rate.

Choices, made by looking at EfficientNet-Lite0's five report layers (`_act_stem` … `_act_head`) on the sample photos
(scripts under /tmp, not kept; 150–200 steps, batches of 2–6):
- Parameterization: Lucid's decorrelated Fourier image (`generator.optvis.param`), spectrum falloff 1/f^1.5. Plain
  pixels with TV (M&V's own setting; λ_TV 0.5, Adam 0.05, 150 steps) matched `_act_stem` best (error 0.03) but gave
  high-frequency colour noise from `_blocks.2._act1` on and no progress at `_act_head` (error 1.0; 0.86 after 300
  steps at rate 0.01); the Fourier image gives smooth pictures whose detail fades layer by layer. At `_act_head`
  (224 px, 150 steps) falloff 1.0 reached error 0.55, falloff 1.5 0.36.
- Squashing: the sigmoid (the straight-through clip matched `_act_stem` a little better, 0.014 vs 0.02 relative
  error, but filled what deep layers leave open with saturated colour noise; the sigmoid leaves it grey).
- Learning rate by depth: shallow layers want a large rate, deep ones a small one (Adam rate 0.05 was best at
  `_act_stem`, 0.03 at `_blocks.2._act1`, 0.005–0.01 at `_blocks.10._act1` and `_act_head`, where higher rates
  ended with larger errors). So the rate at a layer of total stride s (input side / feature side; the whole
  side for a flat output) is lr · min(1, 2/s)^(2/3).
- Straight-through gradient at the inverted layer: when it is a ReLU, ReLU6 or Hardtanh module, the loss is computed
  on its output but the gradient reaches its input as if it were the identity (Bengio, Léonard & Courville 2013).
  A unit the original switches on but the reconstruction leaves off has zero gradient otherwise; at `_act_head`
  (ReLU6) the loss stayed at 0.9 for 150 steps without it, and fell to 0.3 with it. The objective is unchanged (the
  same value, zero at x = x0). Passing gradients straight through every ReLU6 of the network diverged.
- Jitter (M&V 2016, "Visualizing Deep Convolutional Neural Networks Using Natural Pre-images"): available, off by
  default. The reconstruction and the original are shifted by the same random (dy, dx) at each step, so the loss is
  still exact; at ±2 px it looked the same, ended with 0.03–0.07 more relative error and took 1.3–2× the time (one
  forward of the shifted original per step).
- Size 160 px, 200 steps: the five layers × six photos of the default report took 335 s in a build on the shared
  2-core machine with other jobs running (one thread; 20 s for `_act_stem` … 135 s for `_act_head`, each a batch of
  six); 224 px costs about twice as much. Mean relative error by layer: 0.03, 0.11, 0.14, 0.18, 0.56; mean pixel
  correlation 1.00, 0.90, 0.72, 0.23, −0.14. Faces, cups, the pagoda and the flower stay recognizable through
  `_blocks.10._act1`; `_act_head` (5 × 5 × 1280) keeps hardly any layout, and on three of the six photos its error
  stays above 0.5 (two above 0.8). A larger start noise (sd 0.1) brought those to about 0.67 but gave busier
  pictures that were no more recognizable; 400 steps brought one from 0.9 to 0.44, still unrecognizable.

Each forward stops at the inverted layer (a hook raises once it has the output), so a shallow layer costs a fraction
of a full forward; the images of a job batch are inverted together, one batch (one forward per step) per layer, and
each image starts from its own seed, so a batch gives what single runs give. The model is left as it was: its
parameters' requires_grad flags and every module's train flag are restored and the hooks removed in `finally`;
gradients are taken with torch.autograd.grad w.r.t. the image only. On CUDA, results repeat only up to float
rounding.
"""
from __future__ import annotations

import math
import time
import zlib
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from generator import figures
from generator.artifacts import Artifact, Job, Params, Reads, Scope
from generator.techniques.base import Technique
from generator.optvis import fft_image, pixel_image
from generator.errors import did_you_mean
from generator.hooks import record_outputs


class FeatureInversionParams(Params):
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

    def quick(self) -> "FeatureInversionParams":
        return self.model_copy(update={"steps": min(self.steps, 16), "size": min(self.size, 64)})


class _Reached(Exception):
    """Raised by the hook at the inverted layer: nothing after it needs to run."""


def tv_beta(x: torch.Tensor, beta: float) -> torch.Tensor:
    """Mahendran & Vedaldi's TV^β per image: mean over pixels and channels of ((∂x/∂u)² + (∂x/∂v)²)^(β/2), with
    forward differences (the last row/column left out)."""
    dy = x[..., 1:, :-1] - x[..., :-1, :-1]
    dx = x[..., :-1, 1:] - x[..., :-1, :-1]
    squared = dy * dy + dx * dx
    if beta != 2:
        squared = (squared + 1e-8) ** (beta / 2)
    return squared.flatten(1).mean(1)


def pixel_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per image over all pixels and channels."""
    a = a.flatten(1).double()
    b = b.flatten(1).double()
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)


# Activations whose flat regions (zero gradient) can stall the inversion: their gradient is passed straight through.
CLIPPING = (nn.ReLU, nn.Hardtanh)  # Hardtanh covers ReLU6


class LayerProbe:
    """Forward up to one layer: returns its output and stops the rest of the forward. Use as a context manager
    (the hooks are removed on exit). With `straight_through` and a ReLU/ReLU6/Hardtanh layer, the output's value is
    the layer's but its gradient flows to the activation's input as if the activation were the identity."""

    def __init__(self, module: nn.Module, layer: str, straight_through: bool = False):
        self.module, self.layer = module, layer
        self.target = dict(module.named_modules())[layer]
        self.straight = straight_through and isinstance(self.target, CLIPPING)
        self.handles = []
        self.output = self.input = None

    def __enter__(self) -> "LayerProbe":
        def pre_hook(_m, inputs):
            z = inputs[0] if inputs else None
            # An in-place activation overwrites its input: keep a copy of the pre-activation.
            self.input = z.clone() if isinstance(z, torch.Tensor) and getattr(self.target, "inplace", False) else z

        def hook(_m, _inputs, output):
            self.output = output
            raise _Reached

        try:
            if self.straight:
                self.handles.append(self.target.register_forward_pre_hook(pre_hook))
            self.handles.append(self.target.register_forward_hook(hook))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.output = self.input = None
        try:
            self.module(x)
        except _Reached:
            pass
        out, z = self.output, self.input
        self.output = self.input = None
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"layer '{self.layer}' returned {type(out).__name__}, not a tensor")
        if self.straight and isinstance(z, torch.Tensor) and z.shape == out.shape and torch.is_grad_enabled():
            return z + (out - z).detach()
        return out


def invert(module: nn.Module, layer: str, originals: torch.Tensor, *, mean: torch.Tensor, std: torch.Tensor,
           steps: int, lr: float, tv: float, beta: float = 2.0, jitter: int = 0, parameterization: str = "fft",
           seed: int | list[int] = 0, decay_power: float = 1.5, sd: float = 0.01, straight_through: bool = True,
           squash: str = "sigmoid", lr_falloff: float = 2 / 3, jitter_seed: int = 0) -> dict:
    """Reconstruct each of `originals` (B, C, H, W) in [0, 1] from its features at `layer` (see the module
    docstring); `seed`: one per image, or one int (image b then uses seed + b). Returns the images (B, C, H, W) in
    [0, 1], the relative feature error ‖Φ(x) − Φ0‖/‖Φ0‖ per image at the end (unshifted), the loss per step
    (steps, B), the seconds, the layer's feature shape and the learning rate used."""
    device = originals.device
    b, c, h, w = originals.shape
    if parameterization == "fft":
        param = fft_image(b, h, w, seed=seed, channels=c, decay_power=decay_power, sd=sd, decorrelate=c == 3,
                          squash=squash)
    else:  # M&V start from noise; here the model's mean colour plus a little of it
        param = pixel_image(b, h, w, seed=seed, channels=c, sd=sd, center=float(mean.mean()))
    param.to(device)
    tensors = param.parameters()
    optimizer = torch.optim.Adam(tensors, lr=lr)
    generator = torch.Generator().manual_seed(int(jitter_seed))  # one draw per step for the whole batch
    modes = [(m, m.training) for m in module.modules()]
    flags = [(p, p.requires_grad) for p in module.parameters()]
    losses = []
    start = time.perf_counter()
    try:
        module.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        with LayerProbe(module, layer, straight_through) as probe:
            with torch.no_grad():
                fixed = probe((originals - mean) / std)
            dims = tuple(range(1, fixed.dim()))
            stride = h / fixed.shape[-2] if fixed.dim() == 4 else float(h)  # a flat output sees the whole image
            top = lr * min(1.0, 2.0 / stride) ** lr_falloff
            for step in range(steps):
                for group in optimizer.param_groups:  # cosine decay from top to top / 10
                    group["lr"] = top * (0.1 + 0.45 * (1 + math.cos(math.pi * step / max(1, steps))))
                dy, dx = (torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist() if jitter else (0, 0))
                if dy or dx:
                    with torch.no_grad():
                        target = probe((torch.roll(originals, (dy, dx), (2, 3)) - mean) / std)
                else:
                    target = fixed
                image = param()
                feats = probe((torch.roll(image, (dy, dx), (2, 3)) - mean) / std)
                norm = target.float().pow(2).sum(dims).clamp_min(1e-12)
                loss = (feats.float() - target.float()).pow(2).sum(dims) / norm
                if tv:
                    loss = loss + tv * tv_beta(image, beta)
                losses.append(loss.detach())
                grads = torch.autograd.grad(loss.sum(), tensors)
                optimizer.zero_grad(set_to_none=True)
                for t, g in zip(tensors, grads):
                    t.grad = g
                optimizer.step()
                param.project()
            with torch.no_grad():
                final = param().detach().float()
                feats, fixed = probe((final - mean) / std).float(), fixed.float()
                error = ((feats - fixed).pow(2).sum(dims) / fixed.pow(2).sum(dims).clamp_min(1e-12)).sqrt()
                shape = tuple(fixed.shape[1:])
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, training in modes:
            m.training = training
    return {"images": final, "error": error.cpu(), "losses": torch.stack(losses).cpu() if losses else None,
            "seconds": time.perf_counter() - start, "shape": list(shape), "lr": top}


class FeatureInversion(Technique):
    kind = "feature_inversion"
    title = "Feature inversion"
    summary = "images reconstructed from one layer's features alone: what each layer keeps of an image"
    Params = FeatureInversionParams
    scope = Scope("image")
    arrays = {"reconstructions": "(layers, C, S, S) float32: the image reconstructed from each layer's features "
                                 "(in meta['layers'] order, the metrics' order), pixels in [0, 1]",
              "original": "(C, S, S) float32: the model's crop of the image at the reconstruction size, pixels in "
                          "[0, 1]"}
    version = 1

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
        names = model.module_names()
        problems = []
        for i, layer in enumerate(params.layers or []):
            if layer not in names:
                problems.append(f"layers[{i}]: no module '{layer}' in {model.name}; "
                                f"{did_you_mean(layer, names, 'modules')}")
        if problems:
            return problems
        wanted = self.wanted(model, params)
        channels = 3 if model.input.mode == "RGB" else 1
        side = self.side(model, params)
        x = torch.zeros(1, channels, side, side, device=model.device)
        try:
            with torch.no_grad(), record_outputs(model.module, wanted) as outs:
                model.module(x)
        except Exception as exc:  # e.g. a size too small for the layers
            return [f"size: the model fails on a {side}×{side} input ({type(exc).__name__}); choose a larger size"]
        for layer in wanted:
            out = outs.get(layer)
            if not isinstance(out, torch.Tensor):
                key = f"layers[{params.layers.index(layer)}]" if params.layers else "layers"
                problems.append(f"{key}: '{layer}' returns {type(out).__name__}, not a tensor; feature inversion "
                                "needs a layer whose output is one tensor of features")
        return problems

    def side(self, model, params: FeatureInversionParams) -> int:
        if not model.takes_other_sizes():
            return model.input.size
        return min(params.size, model.input.size)

    def run(self, ctx, jobs: list[Job]) -> list[Artifact]:
        import torch.nn.functional as F

        p: FeatureInversionParams = jobs[0].params
        model = ctx.model
        layers = self.wanted(model, p)
        mean = torch.tensor(model.input.mean, device=ctx.device, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(model.input.std, device=ctx.device, dtype=torch.float32).view(1, -1, 1, 1)
        originals = (ctx.batch([j.image for j in jobs]) * std + mean).clamp(0, 1)
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
                                    jitter_seed=ctx.seed + k)
        out = []
        for i, job in enumerate(jobs):
            rows = []
            for layer in layers:
                r = results[layer]
                rows.append({"layer": layer, "shape": r["shape"], "relative_error": float(r["error"][i]),
                             "correlation": float(pixel_correlation(r["images"][i:i + 1], originals[i:i + 1])[0]),
                             "steps": p.steps, "lr": r["lr"], "seconds": r["seconds"], "batch": len(jobs),
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
        pictures = [_picture(art.arrays["original"])] + [_picture(im) for im in art.arrays["reconstructions"]]
        cells = [f"the model's crop at {art.meta['size']} px"]
        cells += [f"rel. error {r['relative_error']:.2f} · r = {r['correlation']:.2f}" for r in rows]
        figures.picture_grid([pictures], [cells], [env.image_name(job.image)],
                             ["original"] + [r["layer"] for r in rows], path)
        return True


def _picture(image: np.ndarray) -> np.ndarray:
    """(C, H, W) in [0, 1] → (H, W, 3) or (H, W) uint8."""
    a = (np.clip(image, 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0)
    return a[..., 0] if a.shape[2] == 1 else a
