"""What every attribution technique shares: which classes to explain, one job per image with all its targets
batched, a (targets, H, W) map at input resolution, and the image | map | overlay figure.

A technique subclasses `AttributionTechnique` and implements `attribute` (numbers only)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from generator import figures
from generator.errors import did_you_mean
from generator.techniques.base import Artifact, Job, Params, Technique


class AttributionParams(Params):
    targets: list[str | int] | None = Field(
        None, description="classes to explain, by label or index (default: each image's top-1 class)"
    )


def resolve_target(model, target: str | int) -> int | str:
    """A class index, or an error message (without key path) when the class does not exist."""
    n = len(model.labels) if model.labels else None
    if isinstance(target, int):
        if target < 0 or (n is not None and target >= n):
            return f"class index {target} is out of range (the model has {n} classes)"
        return target
    if model.labels:
        lowered = [label.lower() for label in model.labels]
        if target.lower() in lowered:
            return lowered.index(target.lower())
        return f"no class '{target}' in {model.name}; {did_you_mean(target, model.labels, 'classes')}"
    return f"class '{target}' given by name, but {model.name} has no labels; give an index or set 'labels'"


class AttributionTechnique(Technique):
    Params = AttributionParams
    scope = "image"
    colour_map_meaning = "how much each pixel raised the class score (bright = more)"

    def check(self, model, params: AttributionParams) -> list[str]:
        problems = []
        for i, target in enumerate(params.targets or []):
            resolved = resolve_target(model, target)
            if isinstance(resolved, str):
                problems.append(f"targets[{i}]: {resolved}")
        return problems

    def attribute(self, ctx, x: torch.Tensor, targets: torch.Tensor, params) -> torch.Tensor:
        """Maps for a batch: x (N, C, H, W) on the device, targets (N,) class indices → (N, H, W), >= 0 where
        the technique's maps are unsigned. Must leave the model exactly as it found it."""
        raise NotImplementedError

    def run(self, ctx, jobs: list[Job]) -> list[Artifact]:
        model = ctx.model
        x = ctx.batch([j.image for j in jobs])
        with torch.no_grad():
            probs = model.logits(x).float().softmax(1)
        # Every (image, target) pair becomes one row of a single batch.
        pairs: list[tuple[int, int]] = []
        for i, job in enumerate(jobs):
            wanted = job.params.targets
            ids = [resolve_target(model, t) for t in wanted] if wanted else [int(probs[i].argmax())]
            pairs += [(i, int(t)) for t in ids]
        rows = torch.tensor([p[0] for p in pairs], device=x.device)
        classes = torch.tensor([p[1] for p in pairs], device=x.device)
        maps = self.attribute(ctx, x[rows], classes, jobs[0].params).detach().float().cpu().numpy()
        out = []
        for i, job in enumerate(jobs):
            mine = [k for k, p in enumerate(pairs) if p[0] == i]
            targets = [{"index": pairs[k][1], "label": model.label(pairs[k][1]),
                        "probability": float(probs[i, pairs[k][1]])} for k in mine]
            meta = {"targets": targets, "target": ", ".join(t["label"] for t in targets),
                    "metrics": {"max": float(maps[mine].max()), "mean": float(maps[mine].mean())}}
            out.append(Artifact({"map": maps[mine].astype(np.float32)}, meta))
        return out

    def draw(self, art: Artifact, job: Job, env, path: Path) -> bool:
        labels = [f"{t['label']} (p={t['probability']:.2f})" for t in art.meta["targets"]]
        figures.attribution_rows(env.picture(job.image), art.main, labels, path, self.title, self.colour_map_meaning,
                                 signed=self.signed)
        return True

    signed = False  # True for maps whose sign matters (integrated gradients): drawn on a diverging scale
