"""Synthesis by matching: optimize an image so that a network's features (content) or their Gram matrices (texture,
style) match those of other images — the machinery shared by texture synthesis (Gatys, Ecker & Bethge 2015) and
neural style transfer (Gatys, Ecker & Bethge 2016).

Pieces:
- `Network`: a module, how a [0, 1] image becomes its input (mean, std, a fixed input size for models that take only
  one), and a label naming it on the pages. `model_network(model)` wraps a loaded model, `random_network(...)` the
  random multi-scale filters of `generator.optvis.random_filters`.
- The losses are the engine's matching objectives (`objectives.gram_match`, `objectives.feature_match`), all
  relative so that every layer counts alike whatever its activation scale (EfficientNet's ReLU6 layers and VGG's
  unbounded ReLUs differ by orders of magnitude): the Gram loss of a layer is ‖G − A‖² / ‖A‖² with
  G = F Fᵀ / (H·W) (a mean over positions, so a 512 px source, a 128 px synthesis and the coarse scales compare;
  Gatys et al. use the unnormalized F Fᵀ with 1/(4 N² M²) in the loss), averaged over the layers of a set; the
  content loss ‖F − P‖² / ‖P‖²; total variation the mean absolute difference of neighbouring pixels.
- `synthesize(...)`: terms (`GramTerm`, `ContentTerm`) say what to match with which network; they become one
  objective on `Networks` (every network in one module) and the engine's one loop (`render`) optimizes the pixels
  with L-BFGS (`steps` counts forward-backward evaluations, so the cost is predictable) or Adam, coarse to fine over
  `scales` (large structures settle cheaply at the coarse scale). The engine's forward records copies (an in-place
  ReLU after a recorded conv cannot change them) and stops after the deepest layer read, so matching `features.10`
  of a VGG does not pay for its classifier. L-BFGS keeps pixels in [0, 1] by a smooth penalty (`RANGE_WEIGHT`),
  Adam by projection; the result is clamped. L-BFGS on a batch shares one line search: the techniques optimize one
  image per call, so a result never depends on what else is in the build.
- Measures of a result that it was not optimized for: `gram_distance` (the median over a network's layers of the
  relative Gram error: for a network that did not make the image), `histogram_distance` (joint colour
  histograms), against `reference_noise` (the source's mean and contrast, no structure).

Seeds: the noise start is drawn from a CPU generator (`noise_start`), so CPU runs repeat bit for bit.
Seconds per evaluation, measured (`bench/matching.py style`): site_src/tuning.md#matching-and-random-filters."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from generator.hooks import missing_module
from generator.optvis.forward import LayerForward
from generator.optvis.objectives import (GramMatch, Objective, Preparation, feature_match, gram, gram_match, image_tv,
                                         range_penalty, relative_error, smooth_activations)
from generator.optvis.objectives import total_variation as total_variation_penalty
from generator.optvis.param import PixelImage
from generator.optvis.random_filters import LABEL, random_filters
from generator.optvis.render import StopRule, render
from generator.optvis.transforms import resample

Optimizer = Literal["lbfgs", "adam"]


@dataclass(eq=False)
class Network:
    """A network whose layer outputs are matched. `fixed_size`: the one input size the module accepts (every image
    is resampled to it), None when it takes any size."""

    module: nn.Module
    mean: tuple[float, ...]
    std: tuple[float, ...]
    label: str
    fixed_size: int | None = None

    @property
    def channels(self) -> int:
        return len(self.mean)

    def prepare(self, image: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) image in [0, 1] → the module's input."""
        mean = torch.tensor(self.mean, device=image.device, dtype=image.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=image.device, dtype=image.dtype).view(1, -1, 1, 1)
        if self.fixed_size and image.shape[-2:] != (self.fixed_size, self.fixed_size):
            image = F.interpolate(image, size=(self.fixed_size, self.fixed_size), mode="bilinear", align_corners=False)
        return (image - mean) / std


def model_network(model) -> Network:
    """A loaded model (`generator.models.LoadedModel`) as a `Network`, labelled with its name."""
    fixed = None if model.takes_other_sizes() else model.input.size
    return Network(model.module, tuple(model.input.mean), tuple(model.input.std), model.name, fixed)


def random_network(channels: int = 3, seed: int = 0, device: torch.device | str | None = None, **kw) -> Network:
    """The random multi-scale filter network (`generator.optvis.random_filters`) as a `Network`."""
    net = random_filters(channels=channels, seed=seed, device=device, **kw)
    return Network(net, (0.5,) * channels, (0.5,) * channels, LABEL)


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of vertically and horizontally neighbouring pixels, per image (optvis' anisotropic
    `ImageTV`, which sums, divided by the number of values)."""
    return image_tv(image) / image[0].numel()


# Pixels leave [0, 1] freely during L-BFGS but pay RANGE_WEIGHT × the mean squared excess (`range_penalty`): a
# smooth bound that L-BFGS can model (clamping inside the loss instead leaves pixels stuck outside with zero
# gradient, seen as coloured salt-and-pepper dots; clamping the parameters between steps breaks L-BFGS' curvature
# history). Adam projects instead.
RANGE_WEIGHT = 100.0


def noise_start(batch: int, channels: int, height: int, width: int, seed: int, device=None,
                mean: torch.Tensor | None = None, sd: float = 0.2) -> torch.Tensor:
    """White Gaussian noise (the start of Gatys' texture synthesis) around `mean` (per image and channel, default
    0.5), standard deviation `sd`, clamped to [0, 1]; element b is drawn from seed + b."""
    noise = torch.stack([torch.randn(channels, height, width, generator=torch.Generator().manual_seed(seed + b))
                         for b in range(batch)])
    centre = torch.full((batch, channels, 1, 1), 0.5) if mean is None else mean.cpu().view(batch, channels, 1, 1)
    x = (centre + sd * noise).clamp(0, 1)
    return x.to(device) if device is not None else x


def resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resample (B, C, H, W) to `size` (bilinear, antialiased when shrinking)."""
    return resample(image, size)


class Networks(nn.Module):
    """Several `Network`s seen by the engine as one module: child i is network i, each given the [0, 1] image its
    own way (its normalization, its fixed size); layer `l` of network i is `net.{i}.{l}`. The engine's forward stops
    after the deepest recorded layer of the last network that has one."""

    def __init__(self, nets: Sequence[Network]):
        super().__init__()
        self.networks = list(nets)
        self.net = nn.ModuleList([n.module for n in nets])

    def name(self, net: Network, layer: str) -> str:
        return f"net.{next(i for i, n in enumerate(self.networks) if n is net)}.{layer}"

    def forward(self, image: torch.Tensor) -> None:
        for network, module in zip(self.networks, self.net):
            module(network.prepare(image))


@dataclass(eq=False)
class GramTerm:
    """Match the Gram matrices of `layers` of `net` to those of `sources` — one (C, h, w) image in [0, 1] per batch
    element, at any resolution (at scale s it is resampled to s × `source_side` pixels on its shorter side): the
    engine's `objectives.gram_match` on that network."""

    net: Network
    layers: list[str]
    sources: list[torch.Tensor]
    source_side: int
    weight: float = 1.0
    name: str = "style"
    smooth: bool = False  # SWAG's activation smoothing (`smooth_activations`) before the Gram matrices

    def objective(self, nets: Networks) -> Objective:
        return gram_match([nets.name(self.net, layer) for layer in self.layers], self.sources, self.source_side,
                          self.weight, smooth=self.smooth, tag=self.name)


@dataclass(eq=False)
class ContentTerm:
    """Match `layer` of `net` to that of `content` (B, C, H, W) in [0, 1], resampled to the image at each scale:
    the engine's `objectives.feature_match`."""

    net: Network
    layer: str
    content: torch.Tensor
    weight: float = 1.0
    name: str = "content"
    smooth: bool = False  # SWAG's activation smoothing (`smooth_activations`) before the comparison

    @property
    def layers(self) -> list[str]:
        return [self.layer]

    def objective(self, nets: Networks) -> Objective:
        return feature_match(nets.name(self.net, self.layer), self.content, self.weight, smooth=self.smooth,
                             tag=self.name)


Term = GramTerm | ContentTerm


@dataclass
class MatchResult:
    images: np.ndarray  # (B, C, H, W) float32 in [0, 1]
    start: dict[str, np.ndarray]  # term name (and "tv") → (B,) value on the start image, at full size
    end: dict[str, np.ndarray]  # the same on the result
    losses: list[float]  # the total loss (summed over the batch) at each evaluation
    seconds: float
    evaluations: int
    stopped_early: bool = False


def synthesize(terms: Sequence[Term], start: torch.Tensor, *, steps: int = 200, optimizer: Optimizer = "lbfgs",
               lr: float = 0.02, tv_weight: float = 0.0, scales: Sequence[float] = (1.0,),
               coarse_steps: int | None = None, history: int = 20, stop: StopRule | None = None) -> MatchResult:
    """Optimize `start` (B, C, H, W) in [0, 1] with the engine (`render`) so that the weighted sum of the terms'
    losses (+ tv_weight × TV) falls; coarse to fine over `scales` (ascending, the last 1); `steps` evaluations at
    full size, `coarse_steps` (default `steps`) at each coarser scale. Terms on the same `Network` share its
    forward, which stops after the deepest layer they read."""
    if not terms:
        raise ValueError("nothing to match: no terms")
    if optimizer not in ("lbfgs", "adam"):
        raise ValueError(f"unknown optimizer '{optimizer}'; use 'lbfgs' or 'adam'")
    nets = Networks(list({id(t.net): t.net for t in terms}.values()))
    for net in nets.networks:
        layers = [layer for t in terms if t.net is net for layer in t.layers]
        for name in layers:
            problem = missing_module(net.module, name, net.label)
            if problem:
                raise ValueError(problem)
    objective = sum((t.objective(nets) for t in terms[1:]), terms[0].objective(nets))
    if tv_weight:
        objective = objective + total_variation_penalty(tv_weight, per_value=True)
    lbfgs = optimizer == "lbfgs"
    if lbfgs:
        objective = objective + range_penalty(RANGE_WEIGHT)
    param = _pixels(start, clamp=not lbfgs)
    result = render(nets, objective, param, mean=0.0, std=1.0, steps=steps, lr=lr, optimizer=optimizer,
                    scales=scales, coarse_steps=coarse_steps, history=history, stop=stop, measure=True,
                    device=start.device)
    images = torch.from_numpy(result.images)
    begin = {k: v for k, v in result.start.items() if k in {t.name for t in terms}}
    end = {k: v for k, v in result.end.items() if k in {t.name for t in terms}}
    begin["tv"] = total_variation(start.detach().clamp(0, 1)).float().cpu().numpy()
    end["tv"] = total_variation(images).float().numpy()
    return MatchResult(result.images, begin, end, result.losses.sum(1).tolist(), result.seconds, result.steps,
                       result.stopped_early)


def _pixels(start: torch.Tensor, clamp: bool) -> PixelImage:
    """A pixel parameterization that starts exactly at `start` (clamped to [0, 1] when `clamp`)."""
    b, c, h, w = start.shape
    param = PixelImage(b, h, w, channels=c, clamp=clamp)
    param.pixels = (start.detach().clamp(0, 1) if clamp else start.detach()).clone().requires_grad_(True)
    return param


# --- measures of a result that do not come from the loss it was optimized for --------------------------------------

def gram_errors(net: Network, layers: Sequence[str], images: torch.Tensor, sources: Sequence[torch.Tensor],
                source_side: int | None = None) -> np.ndarray:
    """(B, L): the relative Gram error of each image (B, C, H, W) against its source at each of `layers` of `net`
    (NaN where a layer is not reached) — the losses a `GramTerm` would average."""
    side = source_side or min(images.shape[-2:])
    term = GramMatch(tuple(dict.fromkeys(layers)), tuple(sources), side)
    with torch.no_grad(), LayerForward(net.module, term.layers(), owner=net.label) as forward:
        def features(x: torch.Tensor) -> dict[str, torch.Tensor]:
            return forward(net.prepare(x))[0]

        term.prepare(Preparation(features, 1.0, tuple(images.shape[-2:])))
        outs = features(images)
        cols = [relative_error(gram(outs[layer]), term.targets[layer]).float().cpu().numpy()
                if layer in outs and layer in term.targets else np.full(images.shape[0], np.nan)
                for layer in term.layers()]
    return np.stack(cols, 1)


def gram_distance(net: Network, layers: Sequence[str], images: torch.Tensor, sources: Sequence[torch.Tensor],
                  source_side: int | None = None) -> np.ndarray:
    """(B,): the MEDIAN over `layers` of the relative Gram errors, to measure images with a network that did not
    make them. The median, because one layer with few positions (EfficientNet-Lite0's head has 4 × 4 at 128 px) can
    have errors of 10 and more that would swamp the mean of the others."""
    return np.nanmedian(gram_errors(net, layers, images, sources, source_side), axis=1)


def reference_noise(source: torch.Tensor, height: int, width: int, seed: int) -> torch.Tensor:
    """(C, H, W): independent Gaussian pixels with the source's mean and standard deviation per channel, clamped to
    [0, 1] — the right brightness and contrast, and no structure: the reference a texture must beat."""
    c = source.shape[0]
    g = torch.Generator().manual_seed(int(seed) + 7919)
    mean, std = source.mean((1, 2)).cpu().view(c, 1, 1), source.std((1, 2)).cpu().view(c, 1, 1)
    return (mean + std * torch.randn(c, height, width, generator=g)).clamp(0, 1).to(source.device)


def colour_histogram(image: np.ndarray | torch.Tensor, bins: int = 8) -> np.ndarray:
    """Joint colour histogram of a (C, H, W) image in [0, 1] (bins per channel; 1 or 3 channels), summing to 1."""
    a = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    idx = np.clip((a * bins).astype(np.int64), 0, bins - 1).reshape(a.shape[0], -1)
    flat = np.zeros(idx.shape[1], np.int64)
    for c in range(a.shape[0]):
        flat = flat * bins + idx[c]
    return np.bincount(flat, minlength=bins ** a.shape[0]).astype(np.float64) / idx.shape[1]


def histogram_distance(image, source, bins: int = 8) -> float:
    """Total-variation distance (half the L1 distance, 0 = same colours, 1 = no colour in common) between the joint
    colour histograms of two images of any sizes."""
    return float(0.5 * np.abs(colour_histogram(image, bins) - colour_histogram(source, bins)).sum())


def to_tensor(picture: Any, channels: int = 3) -> torch.Tensor:
    """A PIL image or (H, W[, C]) uint8 array → (C, H, W) float in [0, 1]; luminance for one channel."""
    if isinstance(picture, Image.Image):
        picture = picture.convert("RGB" if channels == 3 else "L")
    a = np.asarray(picture)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[2] != channels:
        a = a.mean(2, keepdims=True) if channels == 1 else np.repeat(a[..., :1], channels, 2)
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).float() / 255.0
