"""Convolution weights as pictures: RGB tiles for the first layer, grayscale per input channel deeper in,
one tile per channel for depthwise convolutions, a matrix for 1×1 (pointwise) convolutions."""
from __future__ import annotations

from pathlib import Path

from pydantic import Field
from torch import nn

from generator import figures
from generator.techniques.base import Artifact, Job, Params, Technique


class FiltersParams(Params):
    layers: list[str] | None = Field(None, description="conv modules (default: the first conv and one in each chosen layer)")
    max_filters: int = Field(64, ge=1, le=1024, description="output filters shown per layer")
    max_inputs: int = Field(16, ge=1, le=512, description="input channels shown per filter (grayscale tiles)")

    def quick(self) -> "FiltersParams":
        return self.model_copy(update={"max_filters": min(self.max_filters, 16), "max_inputs": min(self.max_inputs, 8)})


def convs(model) -> list[str]:
    return [n for n, m in model.module.named_modules() if isinstance(m, nn.Conv2d)]


class Filters(Technique):
    kind = "filters"
    title = "Filters"
    summary = "convolution weights: first layer in colour, deeper layers per input channel"
    Params = FiltersParams
    scope = "layer"

    def applies(self, model) -> bool:
        return bool(convs(model))

    def layers(self, model, params: FiltersParams) -> list[str]:
        if params.layers is not None:
            return list(params.layers)
        all_convs = convs(model)
        chosen = [all_convs[0]]
        for layer in model.layers:  # the chosen layer itself, or the first conv inside it
            inside = [c for c in all_convs if c == layer or c.startswith(layer + ".")]
            if inside and inside[0] not in chosen:
                chosen.append(inside[0])
        return chosen

    def check(self, model, params: FiltersParams) -> list[str]:
        problems = []
        names = set(convs(model))
        for i, name in enumerate(params.layers or []):
            if name not in names:
                from generator.errors import did_you_mean

                problems.append(f"layers[{i}]: '{name}' is not a Conv2d in {model.name}; {did_you_mean(name, sorted(names), 'conv layers')}")
        return problems

    def run(self, ctx, jobs: list[Job]) -> list[Artifact]:
        out = []
        for job in jobs:
            conv = ctx.model.resolve(job.layer)
            w = conv.weight.detach().float().cpu().numpy()
            kind = self.layout(w.shape, conv.groups)
            meta = {
                "layout": kind,
                "metrics": {"filters": int(w.shape[0]), "inputs_per_filter": int(w.shape[1]), "kernel": list(w.shape[2:]),
                            "groups": int(conv.groups), "stride": list(conv.stride)},
            }
            out.append(Artifact({"weight": w}, meta))
        return out

    @staticmethod
    def layout(shape: tuple[int, ...], groups: int) -> str:
        n, c, kh, kw = shape
        if kh == kw == 1:
            return "pointwise"
        if c == 1 and groups > 1:
            return "depthwise"
        if c == 3 and groups == 1:
            return "rgb"
        return "per-input"

    def draw(self, art, job, env, path: Path) -> bool:
        w = art.main[: job.params.max_filters]
        layout = art.meta["layout"]
        if layout == "rgb":
            figures.rgb_filters(w, path)
        elif layout == "depthwise":
            figures.depthwise_filters(w, path)
        elif layout == "pointwise":
            figures.matrix(art.main[:, : 256, 0, 0][:256], path, "input channel", "output filter",
                           f"{job.layer}: 1×1 weights (first 256 × 256 at most)")
        else:
            figures.gray_filters(w[:, : job.params.max_inputs], path)
        return True
