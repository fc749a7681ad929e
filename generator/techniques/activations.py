"""Activation maps: the channels of a layer's output volume for one image, with dead-channel counts."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch

from generator import figures
from generator.hooks import record_outputs
from generator.artifacts import Artifact, Job, Params, PER_LAYER_AND_IMAGE, drawing_field
from generator.techniques.base import Technique


class ActivationsParams(Params):
    quick_caps = {"max_channels": 16}

    max_channels: int = drawing_field(48, ge=1, le=1024, description="channels drawn per layer")
    order: Literal["index", "strongest"] = drawing_field("index", description="which channels to draw: the first ones, or the most active")


class Activations(Technique):
    kind = "activations"
    title = "Activation maps"
    summary = "each chosen layer's channel maps for each image, with statistics"
    version = 1
    Params = ActivationsParams
    scope = PER_LAYER_AND_IMAGE
    arrays = {"activation": "(C, h, w) float32: the layer's output for the image, every channel (the figure draws "
                            "max_channels of them)"}

    def run(self, ctx, jobs: list[Job]) -> list[Artifact]:
        layer = jobs[0].layer
        with torch.no_grad(), record_outputs(ctx.model.module, [layer]) as acts:
            ctx.model.module(ctx.batch([j.image for j in jobs]))
        volume = acts[layer]
        if not isinstance(volume, torch.Tensor) or volume.dim() != 4:
            raise ValueError(f"layer '{layer}' gives {getattr(volume, 'shape', type(volume).__name__)}, not a (C, H, W) volume")
        out = []
        for job, a in zip(jobs, volume.float().cpu().numpy()):
            dead = (a.reshape(len(a), -1) <= 0).all(1)
            metrics = {
                "channels": int(a.shape[0]), "height": int(a.shape[1]), "width": int(a.shape[2]),
                "mean": float(a.mean()), "max": float(a.max()), "zero_fraction": float((a == 0).mean()),
                "dead_channels": int(dead.sum()),
            }
            out.append(Artifact({"activation": a}, {"metrics": metrics}))
        return out

    @staticmethod
    def shown_channels(a: np.ndarray, params: ActivationsParams) -> list[int]:
        k = min(params.max_channels, len(a))
        if params.order == "strongest":
            return sorted(np.argsort(-a.reshape(len(a), -1).mean(1))[:k].tolist())
        return list(range(k))

    def draw(self, art, job, env, path: Path) -> bool:
        a = art.main
        shown = self.shown_channels(a, job.params)
        dead = (a[shown].reshape(len(shown), -1) <= 0).all(1)
        title = f"{job.layer} on {env.image_name(job.image)}: {len(shown)} of {len(a)} channels ({job.params.order})"
        figures.channel_grid(a[shown], shown, dead, path, title)
        return True
