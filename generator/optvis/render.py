"""The input-optimization loop: one forward and one backward per step for the whole batch.

    result = render(model, objective, param, steps=256, lr=0.05, transforms=standard_transforms(160),
                    mean=(0.5,) * 3, std=(0.5,) * 3, snapshots=(0, 16, 64, 256), seed=0)

Each step: image = param() in [0, 1] → x = (image − mean)/std → transforms(x) (one random draw per step from a CPU
`torch.Generator` seeded with `seed`) → model forward, recording exactly the layers the objective names
(`generator.hooks.record_outputs`) → loss (B,) → the gradient of loss.sum() w.r.t. the parameterization only
(`torch.autograd.grad`, so nothing accumulates in the model's `.grad`) → Adam step → `param.project()` → the
Yosinski et al. 2015 regularizers, if any, edit the image and re-encode it (`param.assign`). During the first
`redirect_steps` steps (0: none) the model's ReLU/ReLU6 modules pass Lucid's redirected gradient to batch elements
whose gradient they block entirely (`generator/optvis/redirect.py`): a unit silent on the start still gets an image
that moves.

The model is left as it was: its parameters' `requires_grad` flags are switched off during the loop and restored, it
runs in eval mode (so BatchNorm statistics and dropout are frozen) and every module's train/eval flag is restored,
and the hooks are removed — all in `finally`, also when the objective or the forward raises. The param is
optimized in place (so a render can be continued); it is moved to the model's device first.

Element b's loss depends only on row b (objectives see per-element values; BatchNorm is in eval mode), Adam's update
is elementwise, and the transforms draw once per step for the whole batch, so a batch of B images follows the same
trajectory as B single-image renders with the same param seeds and render seed (up to float rounding: tested).

Regularizers (Yosinski, Clune, Nguyen, Fuchs & Lipson 2015, "Understanding Neural Networks Through Deep
Visualization", section 3; the update order of their deep-visualization-toolbox `gradient_optimizer.py`), all in
the model's normalized units where 0 is the mean colour:
- `decay`: x ← (1 − decay)·x after each step (their L2 decay);
- `blur_every`, `blur_sigma`: Gaussian blur of the image every n steps;
- `norm_pct`: pixels whose norm over the channels is below this percentile (per image) are set to 0;
- `contrib_pct`: pixels whose |Σ_c x·∂objective/∂x| (the linearized drop of the objective if the pixel were set
  to 0) is below this percentile are set to 0.
Their paper's four settings are `YOSINSKI_SETTINGS` (for 0..255 pixel scale; decay and percentiles carry over).

Tuned defaults: `CLASS_DEFAULTS`, `UNIT_DEFAULTS`, `SIMONYAN_DEFAULTS`, `YOSINSKI_DEFAULTS` below (found with
`scripts/optvis_trial.py` on EfficientNet-Lite0 by looking at the images), and `SMALL_INPUT_DEFAULTS` for models
under `SMALL_INPUT` px a side (the 28-px fashion-mnist-net). On a shared CPU, render on one intra-op thread
(`torch.set_num_threads(1)`): with 2 threads every step was 10–15× slower.
How the defaults were chosen: site_src/tuning.md#class-visualization.
"""
from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from itertools import chain
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from generator.hooks import missing_module, record_outputs
from generator.models import select_logits
from generator.optvis.objectives import Activations, BaseObjective
from generator.optvis.param import ImageParam
from generator.optvis.redirect import redirected_rectifiers
from generator.optvis.transforms import Transform, blur_image


@dataclass(frozen=True)
class Regularizers:
    """Yosinski et al. 2015's image-space regularizers, applied after each optimizer step."""

    decay: float = 0.0
    blur_every: int = 0
    blur_sigma: float = 0.0
    norm_pct: float = 0.0
    contrib_pct: float = 0.0

    @property
    def active(self) -> bool:
        return bool(self.decay or (self.blur_every and self.blur_sigma > 0) or self.norm_pct or self.contrib_pct)

    def describe(self) -> str:
        parts = []
        if self.decay:
            parts.append(f"decay {self.decay:g}")
        if self.blur_every and self.blur_sigma > 0:
            parts.append(f"blur σ={self.blur_sigma:g} every {self.blur_every}")
        if self.norm_pct:
            parts.append(f"clip norm < p{self.norm_pct:g}")
        if self.contrib_pct:
            parts.append(f"clip contribution < p{self.contrib_pct:g}")
        return ", ".join(parts) or "none"


# Table 1 of Yosinski et al. 2015 (θ_decay, θ_b_width, θ_b_every, θ_n_pct, θ_c_pct), rows 1-4.
YOSINSKI_SETTINGS = (
    Regularizers(decay=0.0, blur_sigma=0.5, blur_every=4, norm_pct=50, contrib_pct=0),
    Regularizers(decay=0.3, blur_sigma=0.0, blur_every=0, norm_pct=20, contrib_pct=0),
    Regularizers(decay=0.0001, blur_sigma=1.0, blur_every=4, norm_pct=0, contrib_pct=0),
    Regularizers(decay=0.0, blur_sigma=0.5, blur_every=4, norm_pct=0, contrib_pct=90),
)


# The tuned defaults (site_src/tuning.md) as keyword arguments: `image` for the parameterization, `render` for
# `render(...)`; `transforms` is built with `standard_transforms(size)`.
CLASS_DEFAULTS = {"size": 160, "image": {"decay_power": 1.5, "sd": 0.01}, "render": {"steps": 256, "lr": 0.01},
                  "transform_strength": 1.0}
UNIT_DEFAULTS = {"size": 128, "image": {"decay_power": 1.5, "sd": 0.01}, "render": {"steps": 128, "lr": 0.02},
                 "transform_strength": 1.0}
# Models under SMALL_INPUT px a side (28-px Fashion-MNIST, 32-px CIFAR): the Fourier image is optimized at
# `upsample`× the input size and shown to the model blurred (`antialias_sigma`) and resized to its size; the
# decay power grows by `decay_power_add`, the learning rate is multiplied by `lr_factor`, and the image is blurred
# (`blur_sigma`) every `blur_every` steps. Sigmas are in model pixels.
SMALL_INPUT = 64
SMALL_INPUT_DEFAULTS = {"upsample": 4, "antialias_sigma": 0.5, "decay_power_add": 0.5, "lr_factor": 0.25,
                        "blur_every": 16, "blur_sigma": 0.5}
SIMONYAN_DEFAULTS = {"size": 160, "image": {"sd": 0.01}, "l2": 1e-3, "render": {"steps": 128, "lr": 0.01}}
YOSINSKI_DEFAULTS = {"size": 160, "image": {"sd": 0.01}, "jitter": 6, "render": {"steps": 256, "lr": 0.03},
                     "regularizers": Regularizers(decay=1e-4, blur_every=4, blur_sigma=1.0, norm_pct=20)}


@dataclass
class RenderResult:
    images: np.ndarray  # (B, C, H, W) float32 in [0, 1], after the last step, without transforms
    snapshots: dict[int, np.ndarray]  # step → (B, C, H, W) images after that many steps (0: the start)
    losses: np.ndarray  # (steps, B): the loss of each step (before its update, on the transformed image)
    seconds: float
    captions: list[str] = field(default_factory=list)  # one description per batch element


def _module_device(model: nn.Module) -> torch.device:
    first = next(chain(model.parameters(), model.buffers()), None)
    return first.device if first is not None else torch.device("cpu")


def check_modules(module: nn.Module, names: Iterable[str], owner: str = "the model") -> None:
    """ValueError "no module 'x' in OWNER; did you mean …" for the first of `names` that is no named module."""
    for name in names:
        problem = missing_module(module, name, owner)
        if problem:
            raise ValueError(problem)


@contextmanager
def frozen(module: nn.Module):
    """The module in eval mode with its parameters' `requires_grad` off; both restored in `finally`."""
    modes = [(m, m.training) for m in module.modules()]
    flags = [(p, p.requires_grad) for p in module.parameters()]
    try:
        module.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield module
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, training in modes:
            m.training = training


def descend(optimizer: torch.optim.Optimizer, tensors: list[torch.Tensor], loss: torch.Tensor,
            extra: Sequence[torch.Tensor] = ()) -> tuple[torch.Tensor, ...]:
    """One optimizer step on `tensors` along the gradient of loss.sum(), taken with `torch.autograd.grad` so that
    nothing accumulates in a model's `.grad`; returns the gradients, those w.r.t. `extra` last."""
    grads = torch.autograd.grad(loss.sum(), list(tensors) + list(extra))
    optimizer.zero_grad(set_to_none=True)
    for t, g in zip(tensors, grads):
        t.grad = g
    optimizer.step()
    return grads


def _channel_stats(values: Sequence[float], channels: int, device: torch.device, what: str) -> torch.Tensor:
    v = torch.as_tensor(list(values) if not isinstance(values, (int, float)) else [values], dtype=torch.float32)
    if v.numel() == 1:
        v = v.expand(channels)
    if v.numel() != channels:
        raise ValueError(f"{what} has {v.numel()} values for {channels} channels")
    return v.to(device).view(1, channels, 1, 1)


def _percentile_mask(values: torch.Tensor, pct: float) -> torch.Tensor:
    """(B, H, W) → mask of the entries strictly below the pct-th percentile of their own image."""
    flat = values.flatten(1)
    threshold = torch.quantile(flat.double(), pct / 100.0, dim=1).to(flat.dtype)
    return (flat < threshold[:, None]).view_as(values)


@torch.no_grad()
def apply_regularizers(param: ImageParam, reg: Regularizers, step: int, mean: torch.Tensor, std: torch.Tensor,
                       grad: torch.Tensor | None = None) -> None:
    """Edit the param's image in place with Yosinski's regularizers (`grad`: ∂loss/∂image, for `contrib_pct`)."""
    image = param()
    x = (image - mean) / std
    if reg.decay:
        x = x * (1.0 - reg.decay)
    if reg.blur_every and reg.blur_sigma > 0 and step % reg.blur_every == 0:
        x = blur_image(x, reg.blur_sigma)
    if reg.norm_pct:
        x = x * ~_percentile_mask(x.norm(dim=1), reg.norm_pct)[:, None]
    if reg.contrib_pct and grad is not None:
        ascent = -grad * std  # ∂objective/∂x, x the normalized image
        contribution = (ascent * -x).sum(1).abs()
        x = x * ~_percentile_mask(contribution, reg.contrib_pct)[:, None]
    param.assign((x * std + mean).clamp(0, 1))


def render(
    model: nn.Module,
    objective: BaseObjective,
    param: ImageParam,
    *,
    mean: Sequence[float] | float,
    std: Sequence[float] | float,
    steps: int = 256,
    lr: float = 0.05,
    transforms: Transform | None = None,
    snapshots: Iterable[int] = (),
    seed: int = 0,
    device: torch.device | str | None = None,
    regularizers: Regularizers | None = None,
    logits_key: int | str | None = None,
    callback: Callable[[int, torch.Tensor], None] | None = None,
    redirect_steps: int = 0,
) -> RenderResult:
    """Optimize `param` so that `objective` (a loss per batch element) falls; see the module docstring."""
    device = torch.device(device) if device is not None else _module_device(model)
    param.to(device)
    b, c = param.batch, param.channels
    mean_t = _channel_stats(mean, c, device, "mean")
    std_t = _channel_stats(std, c, device, "std")
    layers = sorted(objective.layers())
    check_modules(model, layers)
    reg = regularizers if regularizers is not None and regularizers.active else None
    want_image_grad = reg is not None and reg.contrib_pct > 0
    snapshot_steps = sorted({int(s) for s in snapshots if 0 <= int(s) <= steps})
    generator = torch.Generator().manual_seed(int(seed))
    tensors = param.parameters()
    optimizer = torch.optim.Adam(tensors, lr=lr)

    losses: list[torch.Tensor] = []
    shots: dict[int, np.ndarray] = {}
    start = time.perf_counter()
    with frozen(model):
        if 0 in snapshot_steps:
            with torch.no_grad():
                shots[0] = param().detach().float().cpu().numpy()
        redirect = redirected_rectifiers(model) if redirect_steps > 0 else nullcontext(None)
        with redirect as redirection, record_outputs(model, layers, detach=False) as outputs:
            for step in range(steps):
                if redirection is not None:
                    redirection.active = step < redirect_steps
                outputs.clear()
                image = param()
                x = (image - mean_t) / std_t
                seen = transforms(x, generator) if transforms is not None else x
                out = model(seen)
                logits = select_logits(out, logits_key) if objective.needs_logits else None
                loss = objective(Activations(outputs, logits, image, x))
                if loss.shape != (b,):
                    raise ValueError(f"the objective returned shape {tuple(loss.shape)}, expected ({b},)")
                losses.append(loss.detach())
                grads = descend(optimizer, tensors, loss, [image] if want_image_grad else [])
                param.project()
                if reg is not None:
                    apply_regularizers(param, reg, step, mean_t, std_t, grads[-1] if want_image_grad else None)
                if callback is not None:
                    callback(step, loss.detach())
                if step + 1 in snapshot_steps:
                    with torch.no_grad():
                        shots[step + 1] = param().detach().float().cpu().numpy()
        with torch.no_grad():
            final = param().detach().float().cpu().numpy()
    seconds = time.perf_counter() - start
    loss_array = torch.stack(losses).float().cpu().numpy() if losses else np.zeros((0, b), np.float32)
    return RenderResult(final, shots, loss_array, seconds, objective.captions(b))
