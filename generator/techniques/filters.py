"""Convolution weights as pictures: RGB tiles for the first layer, grayscale per input channel deeper in,
one tile per channel for depthwise convolutions, a matrix for 1×1 (pointwise) convolutions."""
from __future__ import annotations

from pathlib import Path

from pydantic import Field
from torch import nn

from generator import figures
from generator.artifacts import Artifact, Job, Params, PER_LAYER, drawing_field
from generator.techniques.base import Technique
from generator.errors import did_you_mean


class FiltersParams(Params):
    quick_caps = {"max_filters": 16, "max_inputs": 8}

    layers: list[str] | None = Field(None, min_length=1, description="conv modules, at least one (default: the "
                                                                     "first conv and the conv feeding each chosen "
                                                                     "layer)")
    max_filters: int = drawing_field(64, ge=1, le=1024, description="output filters shown per layer")
    max_inputs: int = drawing_field(16, ge=1, le=512, description="input channels shown per filter (grayscale tiles)")


def convs(model) -> list[str]:
    return [n for n, m in model.module.named_modules() if isinstance(m, nn.Conv2d)]


class Filters(Technique):
    kind = "filters"
    title = "Filters"
    summary = "convolution weights: first layer in colour, deeper layers per input channel"
    version = 3
    Params = FiltersParams
    scope = PER_LAYER
    arrays = {"weight": "(out, in / groups, kh, kw) float32: the conv layer's weights, every filter (the figure "
                        "draws max_filters of them)"}

    def inapplicable(self, model, params: FiltersParams) -> str | None:
        return None if convs(model) else "the model has no Conv2d layer, so it has no filters to draw"

    def layers(self, model, params: FiltersParams) -> list[str]:
        if params.layers is not None:
            return list(params.layers)
        # The first conv, then for each chosen layer the spatial conv that feeds it: itself, the first one inside
        # it, or else the last one before it in module order (an activation's own conv). 1×1 convs have no
        # spatial pattern to look at, so they are shown only when asked for by name.
        order = [n for n, _ in model.module.named_modules() if n]
        modules = dict(model.module.named_modules())
        all_convs = [c for c in convs(model) if max(modules[c].kernel_size) > 1] or convs(model)
        chosen = [convs(model)[0]]
        for layer in model.layers:
            inside = [c for c in all_convs if c == layer or c.startswith(layer + ".")]
            before = [c for c in all_convs if layer in order and order.index(c) < order.index(layer)]
            pick = inside[0] if inside else (before[-1] if before else None)
            if pick and pick not in chosen:
                chosen.append(pick)
        return chosen

    def check(self, model, params: FiltersParams) -> list[str]:
        problems = []
        names = set(convs(model))
        for i, name in enumerate(params.layers or []):
            if name not in names:
                problems.append(f"layers[{i}]: '{name}' is not a Conv2d in {model.name}; {did_you_mean(name, sorted(names), 'conv layers')}")
        return problems

    def one(self, ctx, job: Job) -> Artifact:
        conv = ctx.model.resolve(job.layer)
        w = conv.weight.detach().float().cpu().numpy().copy()  # not a view of the model's live weights
        meta = {
            "layout": self.layout(w.shape, conv.groups),
            "metrics": {"filters": int(w.shape[0]), "inputs_per_filter": int(w.shape[1]), "kernel": list(w.shape[2:]),
                        "groups": int(conv.groups), "stride": list(conv.stride)},
        }
        return Artifact({"weight": w}, meta)

    @staticmethod
    def layout(shape: tuple[int, ...], groups: int) -> str:
        n, c, kh, kw = shape
        if kh == kw == 1:
            return "pointwise"
        if c == 1 and groups > 1:
            return "depthwise"
        if c == 3 and groups == 1:
            return "rgb"
        if c == 1:  # a grayscale model's first layer: one tile per filter, like RGB filters
            return "gray"
        return "per-input"

    def draw(self, art, job, env, path: Path) -> bool:
        w = art.main[: job.params.max_filters]
        layout = art.meta["layout"]
        if layout == "rgb":
            figures.rgb_filters(w, path)
        elif layout in ("depthwise", "gray"):
            figures.depthwise_filters(w, path)
        elif layout == "pointwise":
            figures.pointwise_usage(art.main[:, :, 0, 0], path, job.layer)
        else:
            figures.gray_filters(w[:, : job.params.max_inputs], path)
        return True
