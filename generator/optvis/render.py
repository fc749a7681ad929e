"""The synthesis engine's one optimization loop (Lucid's `render_vis`, Lucent's shape): every synthesis technique —
class and unit visualization, multifaceted, DeepDream, fooling, feature inversion, Gram textures, style transfer —
runs `render` with its objective (`objectives`), its parameterization (`param`), its transforms and an optimizer.

    result = render(model, objective, param, steps=256, lr=0.05, transforms=standard_transforms(160),
                    mean=(0.5,) * 3, std=(0.5,) * 3, snapshots=(0, 16, 64, 256), seed=0, stop=StopRule())

Each evaluation: image = param() → x = (image − mean)/std → transforms(x) (one random draw per step from a CPU
`torch.Generator` seeded with `seed`, shared by the batch) → the model's forward up to the deepest layer the objective
reads (`forward.LayerForward`: nothing after it is computed; the whole forward when it reads the logits) → loss (B,)
→ the gradient of loss.sum() w.r.t. the parameterization only (`torch.autograd.grad`: nothing accumulates in the
model's `.grad`) → the optimizer's step → `param.project()` → Yosinski et al. 2015's regularizers, if any.

Options, each used by some technique:
- `optimizer`: "adam" (with `schedule="cosine"`: the rate decays to a tenth), "lbfgs" (`steps` counts evaluations:
  the cost is predictable; strong-Wolfe line search), "normalized" (DeepDream's step) or "signed" (PGD's);
- `scales`: coarse to fine, e.g. (0.5, 1): the image is optimized at half size first (`param.resized`), then
  refined; matching terms recompute their targets at each scale (`objective.prepare`); `coarse_steps` per coarser
  scale;
- `stop`: a `StopRule` ends the run once the loss has stopped improving; the steps used are in the result;
- `goal`: a per-element predicate on each evaluation's `Activations` (a fooled image): an element that reaches it
  stops moving (its gradient is zeroed), and the run ends when all have;
- `read`: what a layer that is a rectifier gives the objective ("pre": the value before it, so a unit can rise past
  ReLU6's cap and an off unit has a gradient; "straight": the output with a straight-through gradient);
- `redirect_steps`: during the first steps the model's ReLU/ReLU6 modules pass Lucid's redirected gradient to batch
  elements whose gradient they block entirely (`redirect.py`);
- `measure`: each tagged term's value (`Objective.tagged`) on the start and the result, at full size;
- `early_exit=False`: every forward runs whole (for benchmarks of the early exit).

The model is left as it was (eval mode and `requires_grad` flags restored, hooks removed, also on errors). The param
is optimized in place where the schedule has one scale; it is moved to the model's device first.

Element b's loss depends only on row b (objectives see per-element values; BatchNorm is in eval mode), Adam's and
the fixed steps' updates are elementwise, and the transforms draw once per step for the whole batch, so a batch of B
images follows the same trajectory as B single-image renders with the same param seeds and render seed (up to float
rounding: tested). L-BFGS shares one line search over the batch: techniques that use it optimize one image a call.

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

import math
import time
from contextlib import ExitStack
from itertools import chain
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from generator.optvis.forward import LayerForward, Read
from generator.optvis.objectives import Activations, BaseObjective, Preparation
from generator.optvis.optimizers import OptimizerName, make_optimizer
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


@dataclass(frozen=True)
class StopRule:
    """End a run once it has stopped improving: after at least `min_steps` evaluations, when the mean loss (summed
    over the batch) of the last `window` evaluations is lower than that of the `window` before by less than
    `tolerance` × the latter's magnitude. Windows of means, not the best value, because random transforms make
    single losses noisy."""

    window: int = 16
    tolerance: float = 0.01
    min_steps: int = 32

    def done(self, totals: Sequence[float]) -> bool:
        n, w = len(totals), self.window
        if n < max(self.min_steps, 2 * w):
            return False
        recent, before = float(np.mean(totals[n - w:])), float(np.mean(totals[n - 2 * w:n - w]))
        return before - recent < self.tolerance * max(abs(before), 1e-8)

    def describe(self) -> str:
        return (f"stopped when the loss of the last {self.window} steps fell by less than {self.tolerance:.0%} "
                f"against the {self.window} before (at least {self.min_steps} steps)")


@dataclass
class RenderResult:
    images: np.ndarray  # (B, C, H, W) float32 in [0, 1], after the last step, without transforms
    snapshots: dict[int, np.ndarray]  # step → (B, C, H, W) images after that many steps (0: the start)
    losses: np.ndarray  # (evaluations, B): the loss of each evaluation (before its update, transformed image)
    seconds: float
    captions: list[str] = field(default_factory=list)  # one description per batch element
    steps: int = 0  # evaluations made (at every scale)
    planned: int = 0  # evaluations the schedule allowed
    stopped_early: bool = False  # the stop rule ended the run before `planned`
    reached: np.ndarray | None = None  # (B,) the evaluation at which each element met `goal` (−1: never)
    start: dict[str, np.ndarray] = field(default_factory=dict)  # `measure`: tag → (B,) on the start image
    end: dict[str, np.ndarray] = field(default_factory=dict)  # the same on the result
    read: list[str] = field(default_factory=list)  # the layers read before (or through) their rectifier


def _module_device(model: nn.Module) -> torch.device:
    first = next(chain(model.parameters(), model.buffers()), None)
    return first.device if first is not None else torch.device("cpu")


def _channel_stats(values: Sequence[float] | float, channels: int, device: torch.device, what: str) -> torch.Tensor:
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


def _size_at(height: int, width: int, scale: float) -> tuple[int, int]:
    return max(8, round(height * scale)), max(8, round(width * scale))


@dataclass
class _Run:
    """The state of one `render` call that its evaluation closure shares."""

    param: ImageParam
    tensors: list[torch.Tensor]
    losses: list[torch.Tensor] = field(default_factory=list)
    totals: list[float] = field(default_factory=list)
    reached: torch.Tensor | None = None


def render(
    model: nn.Module,
    objective: BaseObjective,
    param: ImageParam,
    *,
    mean: Sequence[float] | float,
    std: Sequence[float] | float,
    steps: int = 256,
    lr: float = 0.05,
    optimizer: OptimizerName = "adam",
    schedule: str | None = None,
    transforms: Transform | None = None,
    snapshots: Iterable[int] = (),
    seed: int = 0,
    device: torch.device | str | None = None,
    regularizers: Regularizers | None = None,
    logits_key: int | str | None = None,
    callback: Callable[[int, torch.Tensor, Activations], None] | None = None,
    redirect_steps: int = 0,
    stop: StopRule | None = None,
    goal: Callable[[Activations], torch.Tensor] | None = None,
    scales: Sequence[float] = (1.0,),
    coarse_steps: int | None = None,
    read: Read = "output",
    measure: bool = False,
    history: int = 20,
    early_exit: bool = True,
) -> RenderResult:
    """Optimize `param` so that `objective` (a loss per batch element) falls; see the module docstring."""
    scales = [float(s) for s in scales]
    if not scales or scales[-1] != 1.0 or sorted(scales) != scales:
        raise ValueError(f"scales must ascend to 1, got {scales}")
    device = torch.device(device) if device is not None else _module_device(model)
    param.to(device)
    b, c, full = param.batch, param.channels, (param.height, param.width)
    mean_t = _channel_stats(mean, c, device, "mean")
    std_t = _channel_stats(std, c, device, "std")
    reg = regularizers if regularizers is not None and regularizers.active else None
    budget = [steps if s == 1.0 else (coarse_steps if coarse_steps is not None else steps) for s in scales]
    snapshot_steps = sorted({int(s) for s in snapshots if 0 <= int(s) <= sum(budget)})
    generator = torch.Generator().manual_seed(int(seed))
    run = _Run(param, param.parameters())
    shots: dict[int, np.ndarray] = {}
    started = time.perf_counter()
    with ExitStack() as stack:
        redirection = stack.enter_context(redirected_rectifiers(model)) if redirect_steps > 0 else None
        forward = stack.enter_context(LayerForward(model, sorted(objective.layers()), logits=objective.needs_logits,
                                                   logits_key=logits_key, read=read, early_exit=early_exit))

        def features(images: torch.Tensor, draw=None) -> dict[str, torch.Tensor]:
            x = (images - mean_t) / std_t
            return forward(transforms.apply(x, draw) if draw is not None else x)[0]

        def acts_of(image: torch.Tensor, draw=None) -> Activations:
            x = (image - mean_t) / std_t
            outputs, logits = forward(transforms.apply(x, draw) if draw is not None else x)
            return Activations(outputs, logits, image, x)

        def measured() -> dict[str, np.ndarray]:
            with torch.no_grad():
                return {k: v.float().cpu().numpy() for k, v in objective.tagged(acts_of(run.param())).items()}

        objective.prepare(Preparation(features, 1.0, full))
        start_parts = measured() if measure else {}
        if 0 in snapshot_steps:
            shots[0] = run.param.final().float().cpu().numpy()
        stopped = False
        for scale, allowed in zip(scales, budget):
            size = _size_at(*full, scale)
            if (run.param.height, run.param.width) != size:
                run.param = run.param.resized(*size)
                run.tensors = run.param.parameters()
            if len(scales) > 1:
                objective.prepare(Preparation(features, scale, size))
            stopped = _optimize(run, objective, acts_of, features, allowed, lr, optimizer, schedule, transforms,
                                generator, reg, mean_t, std_t, redirection, redirect_steps, stop, goal, callback,
                                snapshot_steps, shots, history, full)
        if len(scales) > 1 or objective.follows_transforms:
            objective.prepare(Preparation(features, 1.0, full))
        end_parts = measured() if measure else {}
        final = run.param.final().float().cpu().numpy()
        read_layers = forward.pre_rectifier
    loss_array = torch.stack(run.losses).float().cpu().numpy() if run.losses else np.zeros((0, b), np.float32)
    reached = None if run.reached is None else run.reached.cpu().numpy()
    return RenderResult(final, shots, loss_array, time.perf_counter() - started, objective.captions(b),
                        steps=len(run.losses), planned=sum(budget), stopped_early=stopped, reached=reached,
                        start=start_parts, end=end_parts, read=read_layers)


def _optimize(run: _Run, objective, acts_of, features, steps: int, lr: float, optimizer: str, schedule, transforms,
              generator, reg, mean_t, std_t, redirection, redirect_steps: int, stop, goal, callback,
              snapshot_steps: list[int], shots: dict, history: int, full: tuple[int, int]) -> bool:
    """`steps` evaluations of one scale; True when the stop rule or the goal ended them early."""
    if steps <= 0:
        return False
    opt = make_optimizer(optimizer, run.tensors, lr, history)
    want_image_grad = reg is not None and reg.contrib_pct > 0
    image_grad: list[torch.Tensor | None] = [None]
    first = len(run.losses)
    if goal is not None and run.reached is None:
        run.reached = torch.full((run.param.batch,), -1, dtype=torch.long)

    def closure() -> torch.Tensor:
        step = len(run.losses)
        if redirection is not None:
            redirection.active = step < redirect_steps
        image = run.param()
        draw = transforms.sample(generator) if transforms is not None else None
        if objective.follows_transforms:
            objective.prepare(Preparation(lambda images: features(images, draw), 1.0, tuple(image.shape[-2:])))
        acts = acts_of(image, draw)
        loss = objective(acts)
        if loss.shape != (run.param.batch,):
            raise ValueError(f"the objective returned shape {tuple(loss.shape)}, expected ({run.param.batch},)")
        grads = torch.autograd.grad(loss.sum(), run.tensors + ([image] if want_image_grad else []))
        moving = None
        if goal is not None:
            with torch.no_grad():
                hit = goal(acts).cpu()
            run.reached[(run.reached < 0) & hit] = step
            moving = (run.reached < 0).to(loss.device)
        for t, g in zip(run.tensors, grads):
            t.grad = g if moving is None else g * moving.view(-1, *([1] * (g.dim() - 1))).to(g.dtype)
        image_grad[0] = grads[-1] if want_image_grad else None
        run.losses.append(loss.detach())
        run.totals.append(float(loss.detach().sum()))
        if callback is not None:
            callback(step, loss.detach(), acts)
        return loss.detach().sum()

    while len(run.losses) - first < steps:
        done = len(run.losses) - first
        if schedule == "cosine":  # from lr to lr / 10
            for group in opt.param_groups:
                group["lr"] = lr * (0.1 + 0.45 * (1 + math.cos(math.pi * done / max(1, steps))))
        if optimizer == "lbfgs":
            chunk = steps - done if stop is None else min(steps - done, stop.window)
            for group in opt.param_groups:
                group["max_iter"] = group["max_eval"] = chunk
            opt.step(closure)
        else:
            closure()
            opt.step()
        _after_step(run, reg, mean_t, std_t, image_grad[0], snapshot_steps, shots, full)
        if run.reached is not None and bool((run.reached >= 0).all()):
            return True
        if stop is not None and stop.done(run.totals[first:]):
            return len(run.losses) - first < steps
    return False


def _after_step(run: _Run, reg, mean_t, std_t, image_grad, snapshot_steps: list[int], shots: dict,
                full: tuple[int, int]) -> None:
    """The projection, Yosinski's regularizers and the snapshots due after an optimizer step."""
    with torch.no_grad():
        run.param.project()
    if reg is not None:
        apply_regularizers(run.param, reg, len(run.losses) - 1, mean_t, std_t, image_grad)
    for s in snapshot_steps:
        if s not in shots and 0 < s <= len(run.losses):  # at a coarse scale: shown upsampled to full size
            shot = run.param.final().float()
            if tuple(shot.shape[-2:]) != full:
                shot = torch.nn.functional.interpolate(shot, size=full, mode="bilinear", align_corners=False)
            shots[s] = shot.cpu().numpy()
