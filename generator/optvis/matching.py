"""Synthesis by matching: optimize an image so that a network's features (content) or their Gram matrices (texture,
style) match those of other images — the machinery shared by texture synthesis (Gatys, Ecker & Bethge 2015) and
neural style transfer (Gatys, Ecker & Bethge 2016).

Pieces:
- `Network`: a module, how a [0, 1] image becomes its input (mean, std, a fixed input size for models that take only
  one), and a label naming it on the pages. `model_network(model)` wraps a loaded model, `random_network(...)` the
  random multi-scale filters of `generator.optvis.random_filters`.
- `gram(features)`: G = F Fᵀ / (H·W) per image, F the (C, H·W) feature map: the mean over positions of the outer
  product of the feature vector, so images of different sizes (a 512 px source, a 128 px synthesis, the coarse
  scales) have comparable Gram matrices. Gatys et al. use the unnormalized F Fᵀ with the factor 1/(4 N² M²) in the
  loss; the PyTorch tutorial divides by C·H·W.
- Losses, all relative so that every layer counts alike whatever its activation scale (EfficientNet's ReLU6 layers
  and VGG's unbounded ReLUs differ by orders of magnitude): the Gram loss of a layer is ‖G − A‖² / ‖A‖² (Gatys'
  E_l up to that normalization), averaged over the layers of a set; the content loss ‖F − P‖² / ‖P‖²; total
  variation is the mean absolute difference of neighbouring pixels (optvis' `ImageTV` divided by the pixel count).
- `Features`: records several layers of a network in one forward (`generator.hooks.record_outputs`), with the
  network frozen (eval mode, no parameter gradients) and restored, and the hooks removed, in `finally` — as
  `generator.optvis.render` does. Two refinements: each recorded output is cloned into the forward, so that a
  later in-place ReLU (torchvision's VGG) does not change what was recorded (a conv layer gives the pre-ReLU map,
  as in the PyTorch tutorial); and the forward stops once the last recorded layer has run (`_Stop`), so matching
  `features.10` of a VGG does not pay for its classifier.
- `synthesize(...)`: the loop. Terms (`GramTerm`, `ContentTerm`) say what to match with which network; the pixels
  are optimized with L-BFGS (`torch.optim.LBFGS`, strong-Wolfe line search; `steps` counts forward-backward
  evaluations, so the cost is predictable) or Adam, coarse to fine over `scales` (e.g. (0.5, 1): the image is first
  made at half size against half-size targets, then upsampled and refined — large structures settle cheaply at the
  coarse scale). L-BFGS keeps pixels in [0, 1] by a smooth penalty (`RANGE_WEIGHT`), Adam by projection; the
  result is clamped. Every batch element has its own targets and its loss depends on its row only, but L-BFGS on
  a batch shares one line search: the techniques optimize one image per call, so a result never depends on what
  else is in the batch (or in the build).
- Measures of a result that it was not optimized for: `gram_distance` (the median over a network's layers of the
  relative Gram error: for a network that did not make the image), `histogram_distance` (joint colour
  histograms), against `reference_noise` (the source's mean and contrast, no structure).

Seeds: the noise start is drawn from a CPU generator (`noise_start`), so CPU runs repeat bit for bit.
Seconds per evaluation, measured (`bench/matching.py style`): site_src/tuning.md#matching-and-random-filters."""
from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from generator.hooks import hooked, record_outputs
from generator.optvis.objectives import image_tv
from generator.optvis.random_filters import LABEL, random_filters
from generator.optvis.render import check_modules, frozen

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


def gram(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (B, C, C): F Fᵀ / (H·W), F the (C, H·W) map of each image (see the module docstring)."""
    b, c = features.shape[:2]
    f = features.reshape(b, c, -1).float()
    return torch.bmm(f, f.transpose(1, 2)) / f.shape[-1]


def smooth_activations(features: torch.Tensor) -> torch.Tensor:
    """SWAG's activation smoothing (Wang, Li & Vasconcelos, CVPR 2021, "Rethinking and Improving the Robustness of
    Image Style Transfer", "Stylization With Activation smoothinG"): a softmax over ALL activations of a layer of
    one image — channels and positions flattened together, temperature 1 — as the authors' `softmax3d` does
    (github.com/peiwang062/swag, resnet_swag.py: reshape to one row, `nn.Softmax`, reshape back), applied before
    the Gram matrix and before the content comparison. Residual networks' activations are peaky (low entropy: a few
    large values carry most of the energy of F Fᵀ); the softmax raises their entropy.

    (B, C, H, W) → the same shape: per image, exp(F) / Σ exp(F) times N = C·H·W — the softmax scaled to mean 1.
    The factor N is ours: the paper resizes both images to one size, while here the source and the result differ
    in size (and the coarse scale halves both), and a plain softmax shrinks as 1/N. For images of equal size it is a
    constant, and the relative losses (‖G − A‖² / ‖A‖², ‖F − P‖² / ‖P‖²) are exactly the paper's transform's."""
    b = features.shape[0]
    f = features.reshape(b, -1).float()
    return (torch.softmax(f, dim=1) * f.shape[1]).reshape(features.shape)


def _transform(features: torch.Tensor, smooth: bool) -> torch.Tensor:
    return smooth_activations(features) if smooth else features.float()


def relative_error(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """‖x − target‖² / ‖target‖² per batch element (target broadcast over the batch when it has one row)."""
    diff = (x - target).flatten(1).pow(2).sum(1)
    norm = target.flatten(1).pow(2).sum(1).clamp_min(1e-12)
    return diff / norm


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of vertically and horizontally neighbouring pixels, per image (optvis' anisotropic
    `ImageTV`, which sums, divided by the number of values)."""
    return image_tv(image) / image[0].numel()


# Pixels leave [0, 1] freely during the optimization but pay RANGE_WEIGHT × the mean squared excess: a smooth
# bound that L-BFGS can model (clamping inside the loss instead leaves pixels stuck outside with zero gradient, seen
# as coloured salt-and-pepper dots; clamping the parameters between steps breaks L-BFGS' curvature history).
RANGE_WEIGHT = 100.0


def range_penalty(image: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of the pixels from [0, 1], per image."""
    return (image - image.clamp(0, 1)).pow(2).flatten(1).mean(1)


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
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    shrink = size[0] < image.shape[-2] or size[1] < image.shape[-1]
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=shrink)


class _Stop(Exception):
    """Raised by the hook of the last recorded layer, to end a forward whose remaining layers nobody reads."""


class Features:
    """Records `layers` of a network, one forward per call: `Features(net, layers)` is a context manager; inside,
    `features(image)` returns {layer: output} (layers the forward did not reach, e.g. a kernel larger than a coarse
    image, are absent). Hooks are removed and the module restored on exit, also after an error."""

    def __init__(self, net: Network, layers: Sequence[str]):
        self.net = net
        self.layers = list(dict.fromkeys(layers))
        self._stack: ExitStack | None = None
        self._stop_at: tuple[str, int] | None = None
        self._last: str | None = None

    def __enter__(self) -> "Features":
        check_modules(self.net.module, self.layers, self.net.label)
        self._stack = ExitStack()
        try:
            self._stack.enter_context(frozen(self.net.module))
            self.outputs = self._stack.enter_context(record_outputs(self.net.module, self.layers, detach=False))
            self._calls: dict[str, int] = {}
            self._stack.enter_context(hooked(self.net.module, {name: self._hook(name) for name in self.layers}))
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def _hook(self, name: str):
        def hook(_module, _inputs, output):
            self._calls[name] = self._calls.get(name, 0) + 1
            self._last = name
            if self._stop_at == (name, self._calls[name]) and len(self.outputs) == len(self.layers):
                raise _Stop
            # A copy goes on into the network, so that an in-place op after this layer cannot change the record.
            return output.clone() if isinstance(output, torch.Tensor) else None

        return hook

    def __call__(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        self.outputs.clear()
        self._calls.clear()
        self._last = None
        x = self.net.prepare(image)
        try:
            self.net.module(x)
        except _Stop:
            pass
        else:
            # The last recorded call of a forward that reached every layer ends the later ones (same layers, same
            # order); a forward that misses a layer (an image smaller than a kernel) never stops early.
            if self._stop_at is None and self._last is not None and len(self.outputs) == len(self.layers):
                self._stop_at = (self._last, self._calls[self._last])
        return {k: v for k, v in self.outputs.items() if isinstance(v, torch.Tensor)}


@dataclass(eq=False)
class GramTerm:
    """Match the Gram matrices of `layers` of `net` to those of `sources` — one (C, h, w) image in [0, 1] per batch
    element, at any resolution (at scale s it is resampled to s × `source_side` pixels on its shorter side). The
    loss of a row is the mean of its layers' relative Gram errors (layers the forward does not reach at a coarse
    scale, e.g. a filter wider than the image, are left out there)."""

    net: Network
    layers: list[str]
    sources: list[torch.Tensor]
    source_side: int
    weight: float = 1.0
    name: str = "style"
    smooth: bool = False  # SWAG's activation smoothing (`smooth_activations`) before the Gram matrices
    targets: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def prepare(self, feats: Features, scale: float) -> None:
        side = max(8, round(self.source_side * scale))
        per_layer: dict[str, list[torch.Tensor]] = {layer: [] for layer in self.layers}
        done: dict[int, dict[str, torch.Tensor]] = {}
        with torch.no_grad():
            for src in self.sources:
                if id(src) not in done:  # the same source for several elements is measured once
                    h, w = src.shape[-2:]
                    k = side / min(h, w)
                    out = feats(resize(src[None], (max(1, round(h * k)), max(1, round(w * k)))))
                    done[id(src)] = {layer: gram(_transform(out[layer], self.smooth)) for layer in self.layers
                                     if layer in out}
                for layer, g in done[id(src)].items():
                    per_layer[layer].append(g)
        self.targets = {layer: torch.cat(g) for layer, g in per_layer.items() if len(g) == len(self.sources)}

    def loss(self, outs: dict[str, torch.Tensor]) -> torch.Tensor:
        errors = [relative_error(gram(_transform(outs[layer], self.smooth)), self.targets[layer])
                  for layer in self.layers if layer in self.targets and layer in outs]
        if not errors:
            raise ValueError(f"none of the layers {self.layers} of {self.net.label} was reached")
        return torch.stack(errors).mean(0)


@dataclass(eq=False)
class ContentTerm:
    """Match `layer` of `net` to that of `content` (B, C, H, W) in [0, 1], resampled to the image at each scale."""

    net: Network
    layer: str
    content: torch.Tensor
    weight: float = 1.0
    name: str = "content"
    smooth: bool = False  # SWAG's activation smoothing (`smooth_activations`) before the comparison
    target: torch.Tensor | None = field(default=None, repr=False)

    @property
    def layers(self) -> list[str]:
        return [self.layer]

    def prepare(self, feats: Features, scale: float, size: tuple[int, int]) -> None:
        with torch.no_grad():
            self.target = _transform(feats(resize(self.content, size))[self.layer], self.smooth)

    def loss(self, outs: dict[str, torch.Tensor]) -> torch.Tensor:
        return relative_error(_transform(outs[self.layer], self.smooth), self.target)


Term = GramTerm | ContentTerm


@dataclass
class MatchResult:
    images: np.ndarray  # (B, C, H, W) float32 in [0, 1]
    start: dict[str, np.ndarray]  # term name (and "tv") → (B,) value on the start image, at full size
    end: dict[str, np.ndarray]  # the same on the result
    losses: list[float]  # the total loss (summed over the batch) at each evaluation
    seconds: float
    evaluations: int


def _size_at(size: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(8, round(size[0] * scale)), max(8, round(size[1] * scale))


def _evaluate(terms: Sequence[Term], feats: dict[int, Features], image: torch.Tensor, tv_weight: float,
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted total loss (B,) and each term's unweighted loss (B,)."""
    outs = {key: f(image) for key, f in feats.items()}
    parts: dict[str, torch.Tensor] = {}
    total = torch.zeros(image.shape[0], device=image.device)
    for term in terms:
        value = term.loss(outs[id(term.net)])
        parts[term.name] = value
        total = total + term.weight * value
    tv = total_variation(image)
    parts["tv"] = tv
    if tv_weight:
        total = total + tv_weight * tv
    return total, parts


def _prepare(terms: Sequence[Term], feats: dict[int, Features], scale: float, size: tuple[int, int]) -> None:
    for term in terms:
        f = feats[id(term.net)]
        if isinstance(term, ContentTerm):
            term.prepare(f, scale, size)
        else:
            term.prepare(f, scale)


def synthesize(terms: Sequence[Term], start: torch.Tensor, *, steps: int = 200, optimizer: Optimizer = "lbfgs",
               lr: float = 0.02, tv_weight: float = 0.0, scales: Sequence[float] = (1.0,),
               coarse_steps: int | None = None, history: int = 20) -> MatchResult:
    """Optimize `start` (B, C, H, W) in [0, 1] so that the weighted sum of the terms' losses (+ tv_weight × TV)
    falls; coarse to fine over `scales` (ascending, the last 1). `steps` evaluations at full size, `coarse_steps`
    (default `steps`) at each coarser scale. Terms with the same `Network` share its forward."""
    if not terms:
        raise ValueError("nothing to match: no terms")
    scales = [float(s) for s in scales]
    if scales[-1] != 1.0 or sorted(scales) != scales:
        raise ValueError(f"scales must ascend to 1, got {scales}")
    full = tuple(start.shape[-2:])
    nets = {id(t.net): t.net for t in terms}
    layers = {key: list(dict.fromkeys(layer for t in terms if id(t.net) == key for layer in t.layers)) for key in nets}
    losses: list[float] = []
    began = time.perf_counter()
    with ExitStack() as stack:
        feats = {key: stack.enter_context(Features(net, layers[key])) for key, net in nets.items()}
        _prepare(terms, feats, 1.0, full)
        with torch.no_grad():
            _, before = _evaluate(terms, feats, start, tv_weight)
        image = None
        for scale in scales:
            size = _size_at(full, scale)
            x = resize(start, size) if image is None else F.interpolate(image, size=size, mode="bilinear",
                                                                        align_corners=False)
            if scale != 1.0 or len(scales) > 1:
                _prepare(terms, feats, scale, size)
            n = steps if scale == 1.0 else (coarse_steps if coarse_steps is not None else steps)
            image = _run(terms, feats, x.detach().clone(), n, optimizer, lr, tv_weight, history, losses)
        if len(scales) > 1:
            _prepare(terms, feats, 1.0, full)
        with torch.no_grad():
            _, after = _evaluate(terms, feats, image, tv_weight)
    seconds = time.perf_counter() - began
    as_np = lambda d: {k: v.detach().float().cpu().numpy() for k, v in d.items()}  # noqa: E731
    return MatchResult(image.detach().float().cpu().numpy(), as_np(before), as_np(after), losses, seconds,
                       len(losses))


def _run(terms, feats, x: torch.Tensor, steps: int, optimizer: Optimizer, lr: float, tv_weight: float,
         history: int, losses: list[float]) -> torch.Tensor:
    pixels = x.requires_grad_(True)
    if steps <= 0:
        return pixels.detach()

    def closure() -> torch.Tensor:
        total, _ = _evaluate(terms, feats, pixels, tv_weight)
        loss = (total + RANGE_WEIGHT * range_penalty(pixels)).sum()
        (grad,) = torch.autograd.grad(loss, pixels)
        pixels.grad = grad
        losses.append(float(loss.detach()))
        return loss.detach()

    if optimizer == "lbfgs":
        opt = torch.optim.LBFGS([pixels], lr=1.0, max_iter=steps, max_eval=steps, history_size=history,
                                tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe")
        opt.step(closure)
    elif optimizer == "adam":
        opt = torch.optim.Adam([pixels], lr=lr)
        for _ in range(steps):
            closure()
            opt.step()
            with torch.no_grad():
                pixels.clamp_(0, 1)
    else:
        raise ValueError(f"unknown optimizer '{optimizer}'; use 'lbfgs' or 'adam'")
    return pixels.detach().clamp(0, 1)


# --- measures of a result that do not come from the loss it was optimized for --------------------------------------

def gram_errors(net: Network, layers: Sequence[str], images: torch.Tensor, sources: Sequence[torch.Tensor],
                source_side: int | None = None) -> np.ndarray:
    """(B, L): the relative Gram error of each image (B, C, H, W) against its source at each of `layers` of `net`
    (NaN where a layer is not reached) — the losses a `GramTerm` would average."""
    side = source_side or min(images.shape[-2:])
    term = GramTerm(net, list(layers), list(sources), side)
    with torch.no_grad(), Features(net, term.layers) as feats:
        term.prepare(feats, 1.0)
        outs = feats(images)
        cols = [relative_error(gram(outs[layer]), term.targets[layer]).float().cpu().numpy()
                if layer in outs and layer in term.targets else np.full(images.shape[0], np.nan)
                for layer in term.layers]
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
