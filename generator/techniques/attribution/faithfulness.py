"""How much an attribution map can be trusted, as numbers: pure functions over tensors and modules, called by
`AttributionTechnique.run` once its maps are computed (they never draw and never touch the model they are given).

Deletion and insertion (Petsiuk et al. 2018, "RISE", section 4.1). Pixels are taken in order of decreasing
attribution (the signed value: for signed maps the most positive first; ties in raster order) and, in `steps`
equal chunks, either *deleted* from the image (replaced by the deletion baseline) or *inserted* into the insertion
baseline; after each chunk the target's score is recorded, giving `steps + 1` points from 0 % to 100 % of the
pixels. The area under each curve (the trapezoid mean over the fraction axis [0, 1]) summarizes it: a faithful map
makes the score fall fast when its top pixels go (low deletion AUC) and rise fast when they come back (high
insertion AUC).

The score (our choice, `SCORE`): the class's **log-odds**, log p / (1 − p) = z_c − log Σ_{j≠c} exp z_j, from the
logits z, in nats. Petsiuk record the softmax probability, which saturates: on a model that is sure of itself
(Fashion-MNIST, p = 1.00 on every test image) the probability stays at 1.0 through most of an insertion curve and
every method gets the same AUC. The log-probability saturates the same way (log p → 0 as p → 1; in float32 it is
exactly 0 once p rounds to 1), and the raw logit moves with every class's logit at once (adding a constant to all
logits changes no prediction but every curve). The log-odds is 0 at p = ½, grows by one nat per nat that the class's
logit gains over its rivals, and is computed from the logits without rounding p, so curves still separate maps on
saturated outputs. AUCs are then in nats, unbounded, comparable between the methods on one image and class.

A constant map (an all-zero Grad-CAM, say) orders no pixel before another: `constant_maps` finds them, and the
attribution techniques leave them unscored rather than rank raster order.

Baselines (our choice): deletion replaces pixels by **zero in the normalized input space**, i.e. the per-channel
mean colour of the model's normalization (grey for EfficientNet-Lite), rather than Petsiuk's black, which is further
from every training image; insertion starts, as in Petsiuk, from a **Gaussian blur** of the image (σ = 5 pixels at
224 × 224, scaled with the input size), so that inserting pixels adds detail rather than sharp edges against black.

Model randomization (Adebayo et al. 2018, "Sanity checks for saliency maps", cascading randomization). The top
layers' weights are re-initialized, cascading from the logits layer down (`randomization_stages`), on a deep copy
of the model (`randomized_copy`); each map is recomputed and compared with the original by the Spearman rank
correlation of the absolute-value maps (`rank_correlation`). A map that depends on what the model learned must
change: a correlation above `SANITY_THRESHOLD` after the whole cascade flags the method (an edge detector would
pass through unchanged).
"""
from __future__ import annotations

import copy
import math
import zlib
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from generator.hooks import hooked

SANITY_THRESHOLD = 0.5
"""Rank correlation (absolute-value maps) above which a map 'barely changed' after the whole randomization cascade.
Adebayo et al. report correlations near 0 to 0.3 for methods that pass after a few top blocks are randomized and
above 0.6 to 0.9 for guided backprop / guided Grad-CAM, which keep looking like the image: 0.5 separates the two."""

SCORE = ("the class's log-odds, log p/(1 − p) = z_c − log Σ_{j≠c} exp z_j, in nats (from the logits; unlike the "
         "probability it does not saturate at p = 1)")
SCORE_SHORT = "log-odds of the class (nats)"
DELETION_BASELINE = "zero in the normalized input space (the per-channel mean colour)"
INSERTION_BASELINE = "a Gaussian blur of the image (σ = 5 px at 224 × 224)"

# Modules that belong with the layer before them: a stage is "conv + its norm", not a lone BatchNorm.
_FOLLOWERS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.PReLU)
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def blur(x: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
    """Gaussian blur of (N, C, H, W), separable, reflect padding. Linear, so blurring the normalized input equals
    normalizing the blurred picture. Default σ = 5 pixels at 224 (Petsiuk's kernel 11, σ 5), scaled with the size."""
    if sigma is None:
        sigma = max(0.5, 5.0 * min(x.shape[-2:]) / 224)
    radius = max(1, min(int(math.ceil(2 * sigma)), min(x.shape[-2:]) - 1))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(x.dtype)
    c = x.shape[1]
    y = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    y = F.pad(y, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(y, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def log_odds(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N, classes) logits, (N,) targets → (N,) log p/(1 − p) of each row's target, z_t − logsumexp_{j≠t} z_j, in
    float32 without forming p (exact where p rounds to 1). A one-class model's score is its logit."""
    z = logits.float()
    t = targets.view(-1, 1).to(z.device)
    own = z.gather(1, t)[:, 0]
    if z.shape[1] == 1:
        return own
    rivals = z.scatter(1, t, float("-inf"))
    return own - torch.logsumexp(rivals, 1)


def constant_maps(maps, rtol: float = 1e-6) -> np.ndarray:
    """(N, H, W) → (N,) bool: which maps are constant (all zeros included), up to `rtol` of their largest |value|;
    a map that is not finite everywhere counts as constant too (it ranks nothing)."""
    m = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1)
    finite = np.isfinite(m).all(1)
    safe = np.where(np.isfinite(m), m, 0.0)
    spread = safe.max(1) - safe.min(1)
    return ~finite | (spread <= rtol * np.abs(safe).max(1))


def pixel_ranks(maps: torch.Tensor) -> torch.Tensor:
    """(N, H, W) → (N, H·W) rank of each pixel, 0 = highest attribution; ties keep raster order."""
    flat = maps.reshape(len(maps), -1)
    order = torch.sort(-flat, dim=1, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order).contiguous())
    return ranks


def step_counts(pixels: int, steps: int) -> torch.Tensor:
    """How many pixels are deleted (inserted) at each of the `steps + 1` points: 0, …, all, in equal chunks."""
    return torch.tensor([round(k * pixels / steps) for k in range(steps + 1)], dtype=torch.long)


@torch.no_grad()
def deletion_insertion(model_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, maps, targets,
                       steps: int = 32, batch: int = 64, baseline_del: torch.Tensor | None = None,
                       baseline_ins: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion curves of N maps: x (N, C, H, W) inputs, maps (N, H, W), targets (N,) class indices
    → two (N, steps + 1) float arrays of the target's score, its log-odds (`log_odds`, `SCORE`). Every step image of
    every map goes through `model_fn` (inputs → logits) in batches of `batch`. Baselines default to zeros (deletion)
    and `blur(x)` (insertion); either may be given as a tensor shaped like x."""
    n, _, h, w = x.shape
    maps = torch.as_tensor(np.asarray(maps) if not isinstance(maps, torch.Tensor) else maps).to(x.device).float()
    if maps.shape != (n, h, w):
        raise ValueError(f"maps of shape {tuple(maps.shape)} for inputs of shape {tuple(x.shape)}")
    targets = torch.as_tensor(targets, device=x.device).long().reshape(n)
    base_del = torch.zeros_like(x) if baseline_del is None else baseline_del.to(x)
    base_ins = blur(x) if baseline_ins is None else baseline_ins.to(x)
    ranks = pixel_ranks(maps)
    counts = step_counts(h * w, steps).to(x.device)
    # One row per step image: (which map, deletion 0 / insertion 1, step).
    which = torch.arange(n, device=x.device).repeat_interleave(2 * (steps + 1))
    kind = torch.arange(2, device=x.device).repeat_interleave(steps + 1).repeat(n)
    step = torch.arange(steps + 1, device=x.device).repeat(2 * n)
    scores = torch.empty(len(which), device=x.device)
    forward = _channels_last(model_fn) if x.device.type == "cpu" else model_fn
    for start in range(0, len(which), batch):
        i, k, s = which[start:start + batch], kind[start:start + batch], step[start:start + batch]
        changed = (ranks[i] < counts[s][:, None]).view(-1, 1, h, w)  # the first counts[s] pixels of the order
        deleted = torch.where(changed, base_del[i], x[i])
        inserted = torch.where(changed, x[i], base_ins[i])
        images = torch.where((k == 0).view(-1, 1, 1, 1), deleted, inserted)
        scores[start:start + batch] = log_odds(forward(images), targets[i])
    curves = scores.view(n, 2, steps + 1).cpu().numpy().astype(np.float32)
    return curves[:, 0], curves[:, 1]


def _channels_last(model_fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """`model_fn` on channels-last inputs: oneDNN's convolutions run about 1.5× faster so on the CPU (measured on
    EfficientNet-Lite0). A model that cannot take them (a `.view` of a feature map, say) gets plain inputs."""
    state = {"ok": True}

    def forward(images: torch.Tensor) -> torch.Tensor:
        if state["ok"]:
            try:
                return model_fn(images.contiguous(memory_format=torch.channels_last))
            except RuntimeError:
                state["ok"] = False
        return model_fn(images)

    return forward


def auc(curve) -> float | np.ndarray:
    """Area under a curve sampled at equal steps over the fraction axis [0, 1] (trapezoid rule): a float for one
    curve, an array for (…, points)."""
    c = np.asarray(curve, dtype=np.float64)
    if c.shape[-1] < 2:
        raise ValueError("a curve needs at least two points")
    area = (c[..., 1:] + c[..., :-1]).sum(-1) / (2 * (c.shape[-1] - 1))
    return float(area) if np.ndim(area) == 0 else area


def _has_params(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _units(module: nn.Module, prefix: str = "") -> list[str]:
    """Named units a cascade randomizes one at a time: the children with parameters, opening containers
    (Sequential, ModuleList: a ResNet's layer4 becomes its blocks) and a lone wrapper child."""
    children = [(n, c) for n, c in module.named_children() if _has_params(c)]
    out = []
    for name, child in children:
        full = f"{prefix}{name}"
        inner = [c for c in child.children() if _has_params(c)]
        opens = (isinstance(child, _CONTAINERS) and len(inner) >= 2) or (len(children) == 1 and inner)
        out += _units(child, full + ".") if opens else [full]
    return out


def randomization_stages(module: nn.Module, x: torch.Tensor | None = None) -> list[list[str]]:
    """Groups of module names in cascade order: the logits layer first, then successively deeper blocks. A norm
    layer (BatchNorm, LayerNorm, …) joins the layer before it. Forward order is the registration order, or, with an
    example input `x`, the order the units actually run in (units that never run, like an auxiliary head in eval
    mode, are left out)."""
    units = _units(module)
    if x is not None and units:
        seen: list[str] = []
        entered = {name: lambda _m, _i, name=name: seen.append(name) if name not in seen else None for name in units}
        with hooked(module, entered, pre=True), torch.no_grad():
            module(x)
        if seen:
            units = seen
    modules = dict(module.named_modules())
    groups: list[list[str]] = []
    for name in units:
        if groups and isinstance(modules[name], _FOLLOWERS):
            groups[-1].append(name)
        else:
            groups.append([name])
    return groups[::-1]


def _reinit(module: nn.Module, seed: int) -> None:
    """Re-initialize a module's parameters (and norm statistics) in place with its own `reset_parameters`, drawn on
    the CPU from `seed` so the result is the same on every device; parameters of modules without one get a normal
    draw with their current standard deviation."""
    device = next(module.parameters()).device
    module.to("cpu")
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        with torch.no_grad():
            for sub in module.modules():
                if callable(getattr(sub, "reset_parameters", None)):
                    sub.reset_parameters()
                else:
                    for p in sub.parameters(recurse=False):
                        std = float(p.float().std()) if p.numel() > 1 else 0.0
                        p.normal_(0.0, std if std > 0 and math.isfinite(std) else 0.02)
    module.to(device)


def randomized_copy(module: nn.Module, stages: list[list[str]], seed: int) -> nn.Module:
    """A deep copy of `module` with every module named in `stages` re-initialized; `module` itself is untouched.
    Each module's draw depends only on `seed` and its name, so a longer cascade extends a shorter one."""
    clone = copy.deepcopy(module)
    named = dict(clone.named_modules())
    for stage in stages:
        for name in stage:
            _reinit(named[name], (seed * 1_000_003 + zlib.crc32(name.encode())) % 2**63)
    return clone


def rank_correlation(a, b) -> float:
    """Spearman rank correlation of two maps (flattened; ties get average ranks); NaN when either is constant."""
    from scipy.stats import rankdata

    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"maps of {a.size} and {b.size} values")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(rankdata(a), rankdata(b))[0, 1])
