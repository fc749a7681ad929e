"""Top-k classes with their softmax probabilities, per image."""
from __future__ import annotations

from pathlib import Path

import torch
from pydantic import Field

from generator import figures
from generator.artifacts import Artifact, Job, Params, PER_IMAGE
from generator.techniques.base import Technique


class PredictionsParams(Params):
    top_k: int = Field(5, ge=1, le=50, description="how many classes to list")


class Predictions(Technique):
    kind = "predictions"
    title = "Predictions"
    summary = "top-k classes with probabilities for each image"
    version = 1
    Params = PredictionsParams
    scope = PER_IMAGE
    arrays = {"probabilities": "(classes,) float32: the softmax probability of every class, in the model's class "
                               "order (the top-k shown are the largest)"}

    def draw(self, art, job, env, path: Path) -> bool:
        top = art.meta["top"]
        figures.prediction_bars(env.picture(job.image), [t["label"] for t in top], [t["probability"] for t in top], path)
        return True

    def run(self, ctx, jobs: list[Job]) -> list[Artifact]:
        with torch.no_grad():
            probs = ctx.model.logits(ctx.batch([j.image for j in jobs])).float().softmax(1).cpu()
        out = []
        for job, p in zip(jobs, probs):
            k = min(job.params.top_k, p.numel())
            values, indices = p.topk(k)
            top = [{"index": int(i), "label": ctx.model.label(int(i)), "probability": float(v)} for v, i in zip(values, indices)]
            meta = {"top": top, "target": top[0]["label"], "metrics": {"top1": top[0]["label"], "top1_probability": top[0]["probability"]}}
            out.append(Artifact({"probabilities": p.numpy()}, meta))
        return out
