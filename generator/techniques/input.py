"""The preprocessed input tensor of each model × image: an artifact so anyone can recompute a result."""
from __future__ import annotations

from pathlib import Path

from generator import figures
from generator.artifacts import Artifact, Job, CORE_PER_IMAGE
from generator.techniques.base import Technique
from generator.images import display


class Input(Technique):
    kind = "input"
    title = "Inputs"
    summary = "the preprocessed tensor each image becomes (resize, centre crop, normalize)"
    version = 1
    scope = CORE_PER_IMAGE
    arrays = {"input": "the preprocessed image the model is given: (C, H, W) float32, resized, centre-cropped and "
                       "normalized with the model's mean and std"}

    def one(self, ctx, job: Job) -> Artifact:
        x = ctx.input(job.image).cpu().numpy()
        return Artifact({"input": x}, {"metrics": {"shape": list(x.shape)}, "preprocess": ctx.model.input.model_dump()})

    def draw(self, art, job, env, path: Path) -> bool:
        # A small input (28 px) is enlarged with crisp pixels, so that it is visible beside 224-px photos.
        figures.save_picture(display(art.main, env.model.input), path, min_side=160)
        return True
