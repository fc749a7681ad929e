"""Guided backpropagation (Springenberg, Dosovitskiy, Brox & Riedmiller 2015): the input gradient of a class score
(or of one unit of an inner layer), with every ReLU-family activation passing back only positive gradient, and only
where it was active in the forward. The result is a sharp colour image of the edges that excite the target.

The mechanism lives in `generator.guided` (a torch function mode: ReLU, ReLU6, LeakyReLU, in-place and functional
calls all covered; no module hooks). The main array is max |guided gradient| over colour channels (N, H, W); the
guided gradient itself (N, C, H, W) is kept as the `guided` array and drawn as a colour image, the classic look.

With `layer` and `channel` set, the target is a unit instead of a class: the channel's activation at its strongest
spatial position in each image (`at: max`, the default) or its spatial mean (`at: mean`). Class targets and the
faithfulness checks (which measure a class score) do not apply then."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from generator.errors import ConvscopeError
from generator.hooks import hooked
from generator.techniques.attribution.rectifiers import SMOOTH_RECTIFIERS, guided_relus, no_rectifier, rectifiers
from generator.techniques.attribution.base import AttributionParams, AttributionTechnique, attribution_arrays
from generator.artifacts import Artifact, Job
from generator.techniques.attribution.gradients import channel_max_abs, class_gradients, draw_guided


class GuidedBackpropParams(AttributionParams):
    layer: str | None = Field(
        None, description="explain one unit of this layer (dotted module name) instead of a class; needs 'channel'"
    )
    channel: int | None = Field(None, ge=0, description="the unit's channel in 'layer'")
    at: Literal["max", "mean"] = Field(
        "max", description="with 'layer': the channel's activation at its maximal spatial position, or its mean"
    )

    @model_validator(mode="after")
    def _unit_or_classes(self) -> "GuidedBackpropParams":
        if (self.layer is None) != (self.channel is None):
            raise ValueError("'layer' and 'channel' go together: give both to explain one unit, or neither")
        if self.layer is not None and self.targets:
            raise ValueError("'targets' do not apply when 'layer' is set (the unit is the target); remove one")
        return self


def unit_output_shape(model, layer: str) -> tuple[int, ...] | None:
    """The output shape (without batch) of a named module, from one forward of a blank input."""
    model.resolve(layer)  # one line for an unknown layer
    shape: dict[str, tuple[int, ...]] = {}

    def hook(_m, _inputs, output):
        t = output[0] if isinstance(output, (tuple, list)) else output
        if isinstance(t, torch.Tensor):
            shape.setdefault("s", tuple(t.shape[1:]))

    with hooked(model.module, {layer: hook}), torch.no_grad():
        model.logits(model.blank())
    return shape.get("s")


def unit_gradients(model, x: torch.Tensor, layer: str, channel: int, at: str):
    """Guided gradient of one unit per image → (grad (N, C, H, W), activation (N,), position [(row, col)] or
    None, number of ReLU-family activations met before the unit)."""
    model.resolve(layer)  # one line for an unknown layer
    leaf = x.detach().clone().requires_grad_(True)
    seen: dict = {}

    def hook(_m, _inputs, output):
        if "act" in seen:  # a module called twice: its first call is the unit
            return
        t = output[0] if isinstance(output, (tuple, list)) else output
        seen["act"] = t[:, channel].clone()  # a clone: a later in-place op of the forward must not change it
        seen["before"] = mode.total

    with torch.enable_grad():
        with hooked(model.module, {layer: hook}), guided_relus() as mode:
            model.logits(leaf.clone())
        mode.require(model.name)
        if "act" not in seen:
            raise RuntimeError(f"'{layer}' did not run in the forward of {model.name}")
        act = seen["act"]
        positions = None
        if act.dim() == 1:
            value = act
        elif at == "max":
            flat = act.flatten(1)
            index = flat.argmax(1)
            value = flat.gather(1, index.view(-1, 1)).squeeze(1)
            width = act.shape[-1]
            positions = [(int(i) // width, int(i) % width) for i in index.tolist()]
        else:
            value = act.flatten(1).mean(1)
        (grad,) = torch.autograd.grad(value.sum(), leaf)
    return grad, value.detach(), positions, seen["before"]


class GuidedBackprop(AttributionTechnique):
    kind = "guided_backprop"
    title = "Guided backpropagation"
    summary = "input gradient with only positive signals passed back through ReLUs: sharp edges that excite a class"
    # version 4: log-odds faithfulness; constant maps unscored
    version = 4
    Params = GuidedBackpropParams
    colour_map_meaning = "|guided gradient|, max over channels"
    arrays = attribution_arrays(
        "max over colour channels of |guided gradient| (the figure's third panel, unclipped)",
        guided="(targets, C, H, W) float32: the signed guided gradient of the class logit (or of the unit, with "
               "`layer`) w.r.t. the normalized input",
        targets="(targets,) int64: the class index each row explains (with `layer`: the unit's channel)",
        activation="(1,) float32: with `layer`, the unit's activation on the image (at its maximum or spatial mean, "
                   "by `at`)",
        position="(1, 2) int64: with `layer` and at: max, the (row, column) of the unit in the layer's map")

    def inapplicable(self, model, params: GuidedBackpropParams) -> str | None:
        return no_rectifier(model)

    def check(self, model, params: GuidedBackpropParams) -> list[str]:
        problems = super().check(model, params)
        if params.layer is None:
            return problems
        try:
            shape = unit_output_shape(model, params.layer)
        except ConvscopeError as exc:
            return problems + [f"layer: {exc.message}"]
        if shape is None or len(shape) < 1:
            problems.append(f"layer: '{params.layer}' does not output a (batch, channels, ...) tensor")
        elif params.channel >= shape[0]:
            problems.append(f"channel: {params.channel} is out of range: '{params.layer}' has {shape[0]} channels "
                            f"(0 to {shape[0] - 1})")
        return problems

    def compute(self, ctx, x: torch.Tensor, targets: torch.Tensor, params) -> dict[str, torch.Tensor]:
        grad = class_gradients(ctx.model, x, targets, guided=True)
        return {"map": channel_max_abs(grad), "guided": grad}

    def run(self, ctx, jobs: list[Job]) -> list[Artifact]:
        params = jobs[0].params
        if params.layer is None:
            out = super().run(ctx, jobs)
            met = rectifiers(ctx.model.logits, ctx.batch([jobs[0].image]))
            for art in out:  # the page states the rule each kind of rectifier got
                art.meta["rectifiers"] = met
                art.meta["smooth_rectifiers"] = sorted(set(met) & SMOOTH_RECTIFIERS)
            return out
        grad, value, positions, before = unit_gradients(
            ctx.model, ctx.batch([j.image for j in jobs]), params.layer, params.channel, params.at)
        maps = channel_max_abs(grad).float().cpu().numpy()
        grad = grad.float().cpu().numpy()
        out = []
        for i, job in enumerate(jobs):
            where = f" at {positions[i]}" if positions else (" (mean)" if params.at == "mean" else "")
            label = f"{params.layer} channel {params.channel}{where}"
            unit = {"index": params.channel, "label": label, "probability": None, "layer": params.layer,
                    "channel": params.channel, "at": params.at, "position": list(positions[i]) if positions else None,
                    "activation": float(value[i])}
            meta = {"targets": [unit], "target": label,
                    "metrics": {"max": float(maps[i].max()), "mean": float(maps[i].mean()),
                                "activation": float(value[i])}}
            if before == 0:
                meta["note"] = (f"no ReLU-family activation runs before {params.layer}: "
                                "its guided gradient is the plain gradient")
            if float(value[i]) <= 0:
                meta["note"] = f"the unit is not active on this image (activation {float(value[i]):.3g} ≤ 0)"
            arrays = {"map": maps[i:i + 1].astype(np.float32), "guided": grad[i:i + 1].astype(np.float32),
                      "targets": np.array([params.channel], dtype=np.int64),
                      "activation": np.array([float(value[i])], dtype=np.float32)}
            if positions:
                arrays["position"] = np.array([positions[i]], dtype=np.int64)
            out.append(Artifact(arrays, meta))
        return out

    def draw(self, art: Artifact, job: Job, env, path: Path) -> bool:
        return draw_guided(art, job, env, path, self.title, "max |gradient| over channels")
