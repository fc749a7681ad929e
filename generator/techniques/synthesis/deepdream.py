"""DeepDream (Mordvintsev, Olah & Tyka 2015): amplify whatever a layer already sees in an image, by gradient ascent on
the layer's L2 norm. As in the original notebook: steps of the gradient divided by its mean absolute value (so the
step size means the same at every layer), a random shift (jitter) each step, pixels kept in range, and octaves —
the image is dreamt small first and then at larger scales, so the patterns get both large structure and detail."""
from __future__ import annotations

from pathlib import Path

import numpy as np

import torch
from pydantic import Field

from generator import figures
from generator.figures import to_picture
from generator import optvis
from generator.optvis.forward import LayerForward
from generator.artifacts import Artifact, Job, Params, PER_LAYER_AND_IMAGE
from generator.techniques.synthesis.base import SynthesisTechnique, difference_picture


class DeepDreamParams(Params):
    quick_caps = {"octaves": 2, "steps": 4}

    layers: list[str] | None = Field(None, min_length=1, description="layers to amplify, at least one (default: "
                                                                     "the model's chosen layers)")
    octaves: int = Field(4, ge=1, le=8, description="scales, each `octave_scale` times the previous")
    octave_scale: float = Field(1.4, gt=1, le=3)
    steps: int = Field(12, ge=1, le=500, description="steps per octave")
    step_size: float = Field(0.01, gt=0, le=1, description="pixel change per step (0..1 units) for a unit-mean gradient")
    jitter: int = Field(16, ge=0, le=256, description="largest random shift per step, in pixels")


def layer_norm(module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """Mean squared activation of `layer` per image (the quantity DeepDream raises), with the forward stopped there."""
    with torch.no_grad(), LayerForward(module, [layer]) as forward:
        return forward(x)[0][layer].float().pow(2).flatten(1).mean(1)


class DeepDream(SynthesisTechnique):
    kind = "deepdream"
    title = "DeepDream"
    summary = "an image changed to amplify what a layer already sees in it, over several octaves"
    version = 2
    Params = DeepDreamParams
    scope = PER_LAYER_AND_IMAGE
    arrays = {"dream": "(C, H, W) float32: the dreamt image at the model's input size, pixels in [0, 1]"}

    def layers(self, model, params: DeepDreamParams) -> list[str]:
        return list(params.layers) if params.layers is not None else list(model.layers)

    def check(self, model, params: DeepDreamParams) -> list[str]:
        problems = [f"layers[{i}]: {problem}" for i, layer in enumerate(params.layers or [])
                    if (problem := model.missing_module(layer))]
        wanted = [w for w in self.layers(model, params) if not model.missing_module(w)]
        if wanted and not problems:
            shapes = model.probe().shapes
            for layer in wanted:
                shape = shapes.get(layer)
                if shape is None or len(shape) != 3:
                    key = f"layers[{params.layers.index(layer)}]" if params.layers else "layers"
                    shape = shape if shape is not None else "not one tensor"
                    problems.append(f"{key}: '{layer}' has no spatial extent (output {shape}); DeepDream needs a "
                                    "layer with a spatial map, such as a conv layer's")
        return problems

    def run(self, ctx, jobs: list[Job]) -> list[Artifact]:
        p: DeepDreamParams = jobs[0].params
        layer, model = jobs[0].layer, ctx.model
        base = model.denormalize(ctx.batch([j.image for j in jobs])).clamp(0, 1)
        side = base.shape[-1]
        fixed = not model.takes_other_sizes()
        # A fixed-size model sees each octave resampled to its input size.
        transforms = optvis.compose(([optvis.jitter(p.jitter)] if p.jitter else [])
                                    + ([optvis.resize(side)] if fixed else []))
        before = layer_norm(model.module, layer, model.normalize(base))
        sizes = [max(16, round(side / p.octave_scale ** k)) for k in reversed(range(p.octaves))]
        param = optvis.from_image(base, kind="pixel", base=base)
        result = self.optimize(ctx, optvis.layer_l2(layer), param, steps=p.steps, coarse_steps=p.steps,
                               lr=p.step_size, optimizer="normalized", scales=[size / side for size in sizes],
                               transforms=transforms)
        x = torch.from_numpy(result.images).to(ctx.device)
        after = layer_norm(model.module, layer, model.normalize(x))
        change = (x - base).abs().flatten(1).mean(1)
        out = []
        for i, job in enumerate(jobs):
            meta = {"metrics": {"norm_before": float(before[i]), "norm_after": float(after[i]),
                                "gain": float(after[i] / before[i]) if before[i] > 0 else None,
                                "octaves": sizes, "steps": result.steps,
                                "mean_change": float(change[i])}}
            out.append(Artifact({"dream": x[i].cpu().numpy()}, meta))
        return out

    def draw(self, art, job, env, path: Path) -> bool:
        m = art.metrics
        dream = to_picture(art.main)
        gain = f"{m['gain']:.1f}×" if m["gain"] is not None else "from zero"
        start = np.asarray(env.picture(job.image), np.float32) / 255.0
        start = start[None] if start.ndim == 2 else start.transpose(2, 0, 1)
        if art.main.shape[0] == 1:  # a grayscale model: its picture is drawn in RGB
            start = start.mean(0, keepdims=True)
        change = difference_picture(art.main, start) if start.shape == art.main.shape else None
        pictures = [env.picture(job.image), dream] + ([change] if change is not None else [])
        captions = ["original", f"dreamt at {job.layer}: layer norm {gain}"]
        if change is not None:
            captions.append(f"what it added (mean |Δ| = {m.get('mean_change', float('nan')):.3f})")
        figures.picture_row(pictures, captions, path)
        return True
