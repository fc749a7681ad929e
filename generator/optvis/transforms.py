"""Random, differentiable image transforms applied at every optimization step (transformation robustness).

Optimizing an image so that the objective stays high under small random shifts, zooms and rotations suppresses the
high-frequency patterns a plain gradient ascent finds (Mordvintsev et al. 2015, "Inceptionism"; Olah et al. 2017,
"Feature Visualization", Distill; Lucid's `lucid/optvis/transform.py` and its `standard_transforms`).

Each transform is a small frozen dataclass (hashable, `spec()` is JSON for cache keys, `describe()` a caption) with
two halves, so that tests and callers can replay or undo a draw:

    params = t.sample(generator)      # the random choice, plain Python numbers, drawn from a torch.Generator
    y = t.apply(x, params)            # deterministic and differentiable in x
    y = t(x, generator)               # both at once

All randomness comes from the `torch.Generator` passed in (a CPU generator: the same draws on every device), and one
draw is shared by the whole batch, so a batch of B images sees exactly the transforms a single image would see with
the same seed. `render` applies transforms to the model's *normalized* input, so a fill of 0 (padding, the corners
uncovered by a rotation or a zoom-out) is the model's mean colour: neutral, like Lucid's grey 0.5 padding.

Differences from Lucid, on purpose:
- `jitter(d)` is a circular shift by a random (dy, dx) in [-d, d]² (as in the original DeepDream notebook's
  `np.roll`), not a random crop: the image keeps its size, and `shift(x, -dy, -dx)` undoes it exactly. After
  `pad(w)` with w ≥ d only the neutral border wraps around.
- `random_scale` zooms about the centre at constant size with one bilinear resample (Lucid resizes, changing the
  input size): the network sees a fixed input size, which on a CPU avoids re-planning convolutions for 11 sizes.

`standard_transforms(size)` is Lucid's list scaled to the image size (Lucid's pixel numbers are for 224 px).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


def resample(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resampling of (B, C, H, W) to `size`, antialiased when shrinking (the one resize of the engine's
    coarse-to-fine schedule and matching targets)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    shrink = size[0] < images.shape[-2] or size[1] < images.shape[-1]
    return F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False, antialias=shrink)


def _choice(values: Sequence[float], generator: torch.Generator) -> float:
    i = int(torch.randint(len(values), (1,), generator=generator).item())
    return values[i]


class Transform:
    """Base: `sample` draws the random parameters, `apply` is deterministic, `__call__` does both."""

    def sample(self, generator: torch.Generator) -> Any:
        return None

    def apply(self, x: torch.Tensor, params: Any) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(x, self.sample(generator))

    def spec(self) -> dict:
        out: dict[str, Any] = {"transform": type(self).__name__}
        for name, value in vars(self).items():
            out[name] = [v.spec() for v in value] if name == "transforms" else value
        return out

    def describe(self) -> str:
        return repr(self)


@dataclass(frozen=True)
class Pad(Transform):
    """Pad every side by `width` pixels: constant `value` (0 = the model's mean colour after normalization) or
    `mode="reflect"`/`"replicate"`."""

    width: int
    mode: str = "constant"
    value: float = 0.0

    def apply(self, x: torch.Tensor, params: Any = None) -> torch.Tensor:
        if self.width <= 0:
            return x
        w = self.width
        if self.mode == "constant":
            return F.pad(x, (w, w, w, w), mode="constant", value=self.value)
        return F.pad(x, (w, w, w, w), mode=self.mode)

    def describe(self) -> str:
        return f"pad {self.width}"


def shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Circular shift of the last two dimensions by (dy, dx) pixels; `shift(shift(x, a, b), -a, -b) == x`."""
    if dy == 0 and dx == 0:
        return x
    return torch.roll(x, shifts=(int(dy), int(dx)), dims=(-2, -1))


@dataclass(frozen=True)
class Jitter(Transform):
    """Shift by a random (dy, dx), each uniform in [-d, d] pixels (circular: see the module docstring)."""

    d: int

    def sample(self, generator: torch.Generator) -> tuple[int, int]:
        if self.d <= 0:
            return (0, 0)
        dy, dx = torch.randint(-self.d, self.d + 1, (2,), generator=generator).tolist()
        return int(dy), int(dx)

    def apply(self, x: torch.Tensor, params: tuple[int, int]) -> torch.Tensor:
        return shift(x, *params)

    def describe(self) -> str:
        return f"jitter ±{self.d} px"


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample x (B, C, H, W) through a 2×3 affine map of normalized coordinates (output → input), zero fill."""
    b = x.shape[0]
    grid = F.affine_grid(theta.to(x.dtype).to(x.device).expand(b, 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def zoom(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Scale the content by `scale` about the centre at constant size (>1 zooms in); identity at 1."""
    if scale == 1:
        return x
    theta = torch.tensor([[[1.0 / scale, 0.0, 0.0], [0.0, 1.0 / scale, 0.0]]])
    return _affine(x, theta)


def rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate the content by `degrees` about the centre (zero fill at the corners); identity at 0."""
    if degrees == 0:
        return x
    h, w = x.shape[-2:]
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    # A rotation in pixel space written in normalized coordinates (x/(W/2), y/(H/2)) for non-square images.
    theta = torch.tensor([[[c, -s * h / w, 0.0], [s * w / h, c, 0.0]]])
    return _affine(x, theta)


@dataclass(frozen=True)
class RandomChoice(Transform):
    """Zoom (`op="scale"`, by a factor) or rotate (`op="rotate"`, by degrees) by a value drawn uniformly from `values`
    (Lucid: scales 1 + (i − 5)/50 for i in 0..10, i.e. 0.9..1.1; angles −10..10 with extra weight on 0)."""

    op: str
    values: tuple[float, ...]

    def __post_init__(self):
        if self.op not in ("scale", "rotate"):
            raise ValueError(f"op must be 'scale' or 'rotate', not {self.op!r}")
        object.__setattr__(self, "values", tuple(float(v) for v in self.values))

    def sample(self, generator: torch.Generator) -> float:
        return _choice(self.values, generator)

    def apply(self, x: torch.Tensor, params: float) -> torch.Tensor:
        return zoom(x, params) if self.op == "scale" else rotate(x, params)

    def describe(self) -> str:
        if self.op == "scale":
            return f"scale {min(self.values):g}–{max(self.values):g}"
        return f"rotate ±{max(abs(a) for a in self.values):g}°"


def gaussian_kernel(sigma: float, dtype=torch.float32) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).to(dtype)


def blur_image(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of each channel (kernel radius ⌈3σ⌉, reflected borders); identity at σ = 0."""
    if sigma <= 0:
        return x
    b, c, h, w = x.shape
    k = gaussian_kernel(sigma, x.dtype).to(x.device)
    r = min((k.numel() - 1) // 2, h - 1, w - 1)
    k = k[(k.numel() - 1) // 2 - r: (k.numel() - 1) // 2 + r + 1]
    k = k / k.sum()
    y = F.pad(x.reshape(b * c, 1, h, w), (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    y = F.conv2d(y, k.view(1, 1, -1, 1))
    return y.reshape(b, c, h, w)


@dataclass(frozen=True)
class GaussianBlur(Transform):
    """A fixed Gaussian blur of width `sigma` pixels (not random; σ = 0 is the identity)."""

    sigma: float

    def apply(self, x: torch.Tensor, params: Any = None) -> torch.Tensor:
        return blur_image(x, self.sigma)

    def describe(self) -> str:
        return f"blur σ={self.sigma:g}"


@dataclass(frozen=True)
class Compose(Transform):
    """Apply transforms in order; `sample` returns one draw per transform."""

    transforms: tuple[Transform, ...]

    def __post_init__(self):
        object.__setattr__(self, "transforms", tuple(self.transforms))

    def sample(self, generator: torch.Generator) -> list[Any]:
        return [t.sample(generator) for t in self.transforms]

    def apply(self, x: torch.Tensor, params: list[Any]) -> torch.Tensor:
        for t, p in zip(self.transforms, params):
            x = t.apply(x, p)
        return x

    def describe(self) -> str:
        return ", ".join(t.describe() for t in self.transforms) or "none"


# Lowercase constructors, Lucid's spelling.
def pad(width: int, mode: str = "constant", value: float = 0.0) -> Pad:
    return Pad(int(width), mode, float(value))


def jitter(d: int) -> Jitter:
    return Jitter(int(d))


def random_scale(scales: Sequence[float]) -> RandomChoice:
    return RandomChoice("scale", tuple(scales))


def random_rotate(angles: Sequence[float]) -> RandomChoice:
    return RandomChoice("rotate", tuple(angles))


def gaussian_blur(sigma: float) -> GaussianBlur:
    return GaussianBlur(float(sigma))


def compose(transforms: Sequence[Transform]) -> Compose:
    return Compose(tuple(transforms))


def standard_transforms(size: int = 224, strength: float = 1.0) -> Compose:
    """Lucid's `standard_transforms` (pad 12, jitter 8, scale 0.9–1.1, rotate ±10°, jitter 4 at 224 px), with the
    pixel amounts scaled to `size` and every amount multiplied by `strength` (0 gives the identity)."""
    k = size / 224 * strength
    spread = 0.1 * strength
    return compose([
        pad(round(12 * k)),
        jitter(round(8 * k)),
        random_scale([1 + spread * (i - 5) / 5 for i in range(11)]),
        random_rotate([10 * strength * a / 10 for a in range(-10, 11)] + 5 * [0.0]),
        jitter(round(4 * k)),
    ])


@dataclass(frozen=True)
class Resize(Transform):
    """Resample to `size` × `size` (bilinear): the last transform for models that take one input size only, since
    padding and scaling change it."""

    size: int

    def apply(self, x: torch.Tensor, params: Any) -> torch.Tensor:
        if x.shape[-2:] == (self.size, self.size):
            return x
        return torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)


def resize(size: int) -> Resize:
    return Resize(int(size))
