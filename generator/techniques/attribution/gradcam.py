"""Grad-CAM (Selvaraju et al. 2017) and Guided Grad-CAM: where in a convolutional layer's map the class lives.

Grad-CAM: for a chosen layer with activation A (K channels of h × w), the weight of channel k is the spatial mean of
∂score/∂A_k, where the score is the class's logit (before the softmax); the map is ReLU(Σ_k w_k A_k), h × w, then
upsampled bilinearly (half-pixel centres, `align_corners=False`) to the input size. Unnormalized: the numbers
saved are in the layer's units, comparable between the images and classes of one layer (figures scale each map to
its own maximum).

The default layer (`default_layer`) is the last layer with spatial extent before global pooling, at least
`MIN_SIDE` = 7 positions on its shorter side where the network has such a layer. Candidates are the modules whose
output is a 4-D (N, C, h, w) volume with more than one position and that are not an adaptive (global) pooling, in
the order the forward finishes them; the default is the last candidate with min(h, w) ≥ 7, or, when no candidate is
that large (a small input), the last candidate. So a network whose last stage is pooled down to a few positions
gets its last convolutional stage *before* that pool: on the Fashion-MNIST network (28 px input) that is the 7 × 7
ReLU `features.13`, not the 3 × 3 output of the max-pool after it (`features`), where a map has nine cells, the
class often has none (an all-zero map) and the upsampled corners light up the background. On 224-px ImageNet
models the last stage is 7 × 7 anyway: `layer4` in a ResNet, `features` in VGG, `_act_head` in EfficientNet-Lite,
as Selvaraju et al. A module that runs several times in one forward (a ReLU module a ResNet block calls twice)
gives the map of its last call.

How: one forward of the whole batch with a forward hook on the layer that swaps the layer's output for a detached
copy requiring grad (so the backward stops there: nothing below the layer is differentiated) and passes a clone on
(so in-place operations downstream — in-place ReLUs, `+=` in residual blocks — never modify the activation kept);
one backward of the sum of each row's class logit gives every row's gradient, since rows are independent in eval
mode. The hook (`generator.hooks.hooked`) is removed also when the forward raises.

Guided Grad-CAM: the Grad-CAM map (at input resolution) times guided backpropagation's input gradient
(techniques/attribution/rectifiers.py: every ReLU-family call guided, modules, in-place and functional), elementwise per colour
channel, as in the paper; the map is the largest absolute value over the colour channels.

On CUDA, the backward through adaptive average pooling is not deterministic: maps agree to float tolerance, not
bit for bit, between runs there.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from generator.hooks import hooked
from generator.techniques.attribution.rectifiers import no_rectifier
from generator.techniques.attribution.base import AttributionParams, AttributionTechnique, attribution_arrays
from generator.artifacts import Artifact, Job
from generator.techniques.attribution.gradients import channel_max_abs, class_gradients, draw_guided

_GLOBAL_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
MIN_SIDE = 7
"""The default layer's map is at least this many positions on its shorter side where the network has such a layer:
the 7 × 7 of an ImageNet model's last stage, and no coarser (a 3 × 3 map is a blob or nothing)."""
DEFAULT_RULE = (f"the last layer with spatial extent before global pooling, at least {MIN_SIDE} × {MIN_SIDE} where "
                "the network has such a layer (so a last stage pooled to fewer positions is passed over for the "
                "convolutional stage before it)")


class GradCAMParams(AttributionParams):
    layer: str | None = Field(
        None, description="module whose output is explained, a (C, h, w) volume (default: the last layer with "
                          "spatial extent before global pooling, at least 7 × 7 where the network has one)")


def _spatial(shape: tuple | None) -> bool:
    return shape is not None and len(shape) == 3 and shape[1] * shape[2] > 1


def default_layer(model) -> str:
    """`DEFAULT_RULE`: the last module (in the order forwards finish) with a spatial (C, h, w) output that is not a
    global pooling and whose shorter side has at least `MIN_SIDE` positions; the last spatial one if none has."""
    probe = model.probe()
    shapes = probe.shapes
    modules = dict(model.module.named_modules())
    found = [n for n in probe.order if _spatial(shapes[n]) and not isinstance(modules[n], _GLOBAL_POOLS)]
    if not found:
        raise ValueError(f"{model.name} has no module with a spatial (C, h, w) output; Grad-CAM needs a "
                         "convolutional layer")
    large = [n for n in found if min(shapes[n][1:]) >= MIN_SIDE]
    return (large or found)[-1]


def layer_problem(model, layer: str) -> str | None:
    """Why `layer` cannot be explained by Grad-CAM (unknown, unused, not a (C, h, w) volume), or None."""
    missing = model.missing_module(layer)
    if missing:
        return missing
    shapes = model.probe().shapes
    if layer not in shapes:
        return f"module '{layer}' is not used by {model.name}'s forward"
    shape = shapes[layer]
    if shape is None:
        return f"module '{layer}' does not return a tensor; Grad-CAM needs a convolutional layer"
    if len(shape) != 3:
        return (f"layer '{layer}' gives an output of shape {list(shape)}, not a (C, h, w) volume: Grad-CAM needs a "
                f"convolutional layer, e.g. '{default_layer(model)}'")
    if shape[1] * shape[2] == 1:
        return (f"layer '{layer}' has a 1 × 1 output (after global pooling): its Grad-CAM map would be one "
                f"number; choose an earlier convolutional layer, e.g. '{default_layer(model)}'")
    return None


def grad_cam(model, x: torch.Tensor, targets: torch.Tensor, layer: str) -> torch.Tensor:
    """Grad-CAM of each row: x (N, C, H, W), targets (N,) → (N, h, w) at the layer's resolution, >= 0."""
    model.resolve(layer)  # one line for an unknown layer
    kept: list[torch.Tensor] = []

    def hook(_m, _i, out):
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"layer '{layer}' returned {type(out).__name__}, not a tensor")
        a = out.detach().requires_grad_(True)
        kept.append(a)
        return a.clone()

    with hooked(model.module, {layer: hook}), torch.enable_grad():
        logits = model.logits(x.detach())
    if not kept:
        raise RuntimeError(f"layer '{layer}' did not run in the forward")
    a = kept[-1]
    if a.dim() != 4:
        raise ValueError(f"layer '{layer}' gives {tuple(a.shape)}, not an (N, C, h, w) volume")
    score = logits.gather(1, targets.view(-1, 1).to(logits.device)).sum()
    (grad,) = torch.autograd.grad(score, a)
    weights = grad.float().mean(dim=(2, 3), keepdim=True)
    return torch.relu((weights * a.detach().float()).sum(1))


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) → (N, H, W), bilinear with half-pixel centres (as OpenCV's resize)."""
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


class GradCAM(AttributionTechnique):
    kind = "gradcam"
    title = "Grad-CAM"
    summary = "class-discriminative map of a convolutional layer: its channels weighted by their mean gradient"
    # version 3: default layer ≥ 7 × 7; log-odds faithfulness; constant maps unscored
    version = 3
    Params = GradCAMParams
    colour_map_meaning = "ReLU(Σ_k w_k A_k): how strongly each place supports the class (bright = more)"
    arrays = attribution_arrays("Grad-CAM, ReLU(Σ_k w_k A_k) of the layer (w_k: the mean gradient of the class logit "
                                "over channel k's map A_k), bilinearly upsampled to the input")

    def check(self, model, params: GradCAMParams) -> list[str]:
        problems = super().check(model, params)
        problem = layer_problem(model, params.layer) if params.layer else None
        if problem:
            problems.append(f"layer: {problem}")
        return problems

    def inapplicable(self, model, params: GradCAMParams) -> str | None:
        if params.layer is None:  # a named layer that does not fit is the spec's error (check), not this
            try:
                default_layer(model)
            except ValueError as exc:
                return str(exc)
        return None

    def layer_of(self, model, params: GradCAMParams) -> str:
        return params.layer or default_layer(model)

    def attribute(self, ctx, x: torch.Tensor, targets: torch.Tensor, params: GradCAMParams) -> torch.Tensor:
        return upsample(grad_cam(ctx.model, x, targets, self.layer_of(ctx.model, params)), tuple(x.shape[-2:]))

    def run(self, ctx, jobs: list[Job]) -> list[Artifact]:
        # The default layer is found once (a dry forward) and named in the params every later call sees, the
        # randomization check's copies of the model included.
        layer = self.layer_of(ctx.model, jobs[0].params)
        named = [dataclasses.replace(j, params=j.params.model_copy(update={"layer": layer})) for j in jobs]
        arts = super().run(ctx, named)
        shape = ctx.model.probe().shapes.get(layer)
        for art in arts:
            art.meta["layer"] = layer
            art.meta["layer_shape"] = list(shape) if shape else None
            art.meta["layer_rule"] = None if jobs[0].params.layer else DEFAULT_RULE
        return arts

    def figure_title(self, art: Artifact) -> str:
        return f"{self.title} at {art.meta.get('layer', '?')}"


class GuidedGradCAM(GradCAM):
    kind = "guided_gradcam"
    title = "Guided Grad-CAM"
    summary = "Grad-CAM times guided backpropagation: high-resolution and class-discriminative"
    version = 4
    colour_map_meaning = "max over colour channels of |Grad-CAM × guided gradient| (bright = more)"
    arrays = attribution_arrays("max over colour channels of |Grad-CAM × guided gradient| (the figure's third panel, "
                                "unclipped)",
                                guided="(targets, C, H, W) float32: the signed product of the upsampled Grad-CAM "
                                       "map and the guided gradient (the figure's second panel)")

    def inapplicable(self, model, params: GradCAMParams) -> str | None:
        return super().inapplicable(model, params) or no_rectifier(model)

    def compute(self, ctx, x: torch.Tensor, targets: torch.Tensor, params) -> dict[str, torch.Tensor]:
        """The map, and the colour product Grad-CAM × guided gradient (N, C, H, W) the paper shows."""
        cam = GradCAM.attribute(self, ctx, x, targets, params)
        product = cam[:, None] * class_gradients(ctx.model, x, targets, guided=True).float()
        return {"map": channel_max_abs(product), "guided": product}

    def attribute(self, ctx, x: torch.Tensor, targets: torch.Tensor, params: GradCAMParams) -> torch.Tensor:
        return self.compute(ctx, x, targets, params)["map"]

    def draw(self, art: Artifact, job: Job, env, path: Path) -> bool:
        return draw_guided(art, job, env, path, self.figure_title(art), "max |guided Grad-CAM| over channels",
                           bar_label="|guided Grad-CAM|")
