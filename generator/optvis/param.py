"""Image parameterizations: the tensors an optimizer changes, and the map from them to a (B, C, H, W) image in [0, 1].

Two kinds (Olah et al. 2017, "Feature Visualization", Distill, section "The Enemy of Feature Visualization";
Lucid's `lucid/optvis/param/spatial.py` and `color.py`):

- `pixel_image`: the pixels themselves. Kept in [0, 1] by projection (clamped after every optimizer step), so it is
  plain projected gradient ascent as in Simonyan et al. 2014 and the Yosinski et al. 2015 regularizers can edit
  pixels directly. Encoding an image is exact.
- `fft_image`: the real and imaginary parts of each channel's 2-D real FFT, scaled by 1/f^decay_power (f the
  spatial frequency, floored at 1/max(H, W)), so that a step of equal size in every coefficient changes low
  frequencies far more than high ones — a preconditioner towards natural-image statistics. Then, for 3 channels,
  Lucid's colour decorrelation (the square root of ImageNet's colour correlation matrix, normalized to unit maximal
  column norm) and a sigmoid (or a straight-through clip) to [0, 1].

FFT scaling. Lucid's TF code multiplies the spectrum by √(HW) and calls `tf.spectral.irfft2d`, which divides by HW:
the net transform is the *unitary* inverse FFT. In torch that is `irfftn(..., norm="ortho")` with no extra √(HW)
(multiplying by √(HW) as well makes every pixel ~√(HW) ≈ 200× too large and the sigmoid saturates). Lucid then
divides by 4. With the default sd = 0.01 the initial image is grey with a faint low-frequency noise (pixel std
≈ 0.003 after the sigmoid at 160–224 px); `tests/test_optvis.py` pins that.

`from_image` (and `.assign`) encode a given picture into either parameterization — the start point for fooling
images and for Nguyen et al.'s multifaceted visualization. For the FFT image it is the exact inverse: logit (inputs
clipped to [1e-4, 1 − 1e-4]), inverse colour matrix, ×4, forward unitary FFT, ÷ the frequency scale.

Grayscale models: `channels=1` gives one-channel images (no colour decorrelation, which is only defined for RGB).

Seeds: `seed` may be one int (element b then uses seed + b) or one seed per element, so a batch of B images starts
exactly where B single-image runs with the same seeds start.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

# Square root of the colour correlation matrix of ImageNet (Lucid, `param/color.py`): columns are the principal
# colour directions scaled by the square roots of their variances.
COLOR_CORRELATION_SVD_SQRT = torch.tensor(
    [[0.26, 0.09, 0.02],
     [0.27, 0.00, -0.05],
     [0.27, -0.09, 0.03]], dtype=torch.float64)
COLOR_DECORRELATION = COLOR_CORRELATION_SVD_SQRT / COLOR_CORRELATION_SVD_SQRT.norm(dim=0).max()
SPECTRUM_DIVISOR = 4.0  # Lucid's final `/ 4.`
EPS = 1e-4  # pixels are clipped to [EPS, 1 − EPS] before the logit when a picture is encoded with the sigmoid


def decorrelate_colors(t: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in decorrelated colour space → RGB (before squashing): rgb = M · t per pixel."""
    m = COLOR_DECORRELATION.to(t.dtype).to(t.device)
    return torch.einsum("ij,bjhw->bihw", m, t)


def correlate_colors(rgb: torch.Tensor) -> torch.Tensor:
    """The inverse of `decorrelate_colors`."""
    m = torch.linalg.inv(COLOR_DECORRELATION).to(rgb.dtype).to(rgb.device)
    return torch.einsum("ij,bjhw->bihw", m, rgb)


def _seeds(batch: int, seed: int | Sequence[int]) -> list[int]:
    if isinstance(seed, (int, np.integer)):
        return [int(seed) + b for b in range(batch)]
    seeds = [int(s) for s in seed]
    if len(seeds) != batch:
        raise ValueError(f"{len(seeds)} seeds given for a batch of {batch}")
    return seeds


def _randn(shape: tuple[int, ...], seeds: list[int]) -> torch.Tensor:
    """One independent standard normal tensor of `shape` per seed, stacked: element b depends only on seeds[b]."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds])


def _as_images(images: Any) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images).float()
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4:
        raise ValueError(f"expected images of shape (B, C, H, W) or (C, H, W), got {tuple(x.shape)}")
    return x


class ImageParam:
    """What the render loop needs: `parameters()` to optimize, `__call__()` → (B, C, H, W) image in [0, 1],
    `project()` after each step, `assign(images)` to encode pictures, `to(device)`, and `spec()` (JSON)."""

    batch: int
    channels: int
    height: int
    width: int

    def parameters(self) -> list[torch.Tensor]:
        raise NotImplementedError

    def __call__(self) -> torch.Tensor:
        raise NotImplementedError

    def assign(self, images: Any) -> "ImageParam":
        raise NotImplementedError

    def project(self) -> None:
        """Called after every optimizer step (no grad)."""

    def to(self, device: torch.device | str) -> "ImageParam":
        raise NotImplementedError

    def spec(self) -> dict:
        raise NotImplementedError

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.channels, self.height, self.width)

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape) != self.shape:
            raise ValueError(f"image of shape {tuple(x.shape)} does not fit a parameterization of shape {self.shape}")
        return x


class PixelImage(ImageParam):
    """Pixels in [0, 1], optimized directly and clamped to [0, 1] after each step."""

    def __init__(self, batch: int, height: int, width: int, *, channels: int = 3, seed: int | Sequence[int] = 0,
                 sd: float = 0.01, center: float = 0.5):
        self.batch, self.channels, self.height, self.width = batch, channels, height, width
        self.sd, self.center = float(sd), float(center)
        noise = _randn((channels, height, width), _seeds(batch, seed))
        self.pixels = (center + sd * noise).clamp(0, 1).requires_grad_(True)

    def parameters(self) -> list[torch.Tensor]:
        return [self.pixels]

    def __call__(self) -> torch.Tensor:
        return self.pixels.clamp(0, 1)

    @torch.no_grad()
    def project(self) -> None:
        self.pixels.clamp_(0, 1)

    @torch.no_grad()
    def assign(self, images: Any) -> "PixelImage":
        x = self._check(_as_images(images).to(self.pixels.device, self.pixels.dtype))
        self.pixels.copy_(x.clamp(0, 1))
        return self

    def to(self, device: torch.device | str) -> "PixelImage":
        self.pixels = self.pixels.detach().to(device).requires_grad_(True)
        return self

    def spec(self) -> dict:
        return {"param": "pixel", "shape": list(self.shape), "sd": self.sd, "center": self.center}


def rfft2d_freqs(h: int, w: int) -> np.ndarray:
    """|f| (cycles per pixel) of each coefficient of a real 2-D FFT of an h × w image: shape (h, w // 2 + 1)."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    return np.sqrt(fx * fx + fy * fy)


class FFTImage(ImageParam):
    """A Fourier-space image with 1/f^decay_power scaling, colour decorrelation (RGB) and a sigmoid (or clip)."""

    def __init__(self, batch: int, height: int, width: int, *, channels: int = 3, seed: int | Sequence[int] = 0,
                 decay_power: float = 1.0, sd: float = 0.01, decorrelate: bool = True, squash: str = "sigmoid"):
        if squash not in ("sigmoid", "clip"):
            raise ValueError(f"squash must be 'sigmoid' or 'clip', not {squash!r}")
        self.batch, self.channels, self.height, self.width = batch, channels, height, width
        self.decay_power, self.sd, self.squash = float(decay_power), float(sd), squash
        self.decorrelate = bool(decorrelate) and channels == 3
        freqs = rfft2d_freqs(height, width)
        scale = 1.0 / np.maximum(freqs, 1.0 / max(height, width)) ** decay_power
        self.scale = torch.tensor(scale, dtype=torch.float32)[None, None, :, :, None]
        shape = (channels, height, width // 2 + 1, 2)
        self.spectrum = (sd * _randn(shape, _seeds(batch, seed))).requires_grad_(True)

    def parameters(self) -> list[torch.Tensor]:
        return [self.spectrum]

    def raw(self) -> torch.Tensor:
        """The image before the colour matrix and the squashing (unbounded)."""
        spectrum = torch.view_as_complex((self.spectrum * self.scale).contiguous())
        t = torch.fft.irfftn(spectrum, s=(self.height, self.width), dim=(-2, -1), norm="ortho")
        return t / SPECTRUM_DIVISOR

    def __call__(self) -> torch.Tensor:
        t = self.raw()
        if self.decorrelate:
            t = decorrelate_colors(t)
        if self.squash == "sigmoid":
            return torch.sigmoid(t)
        # Clip to [0, 1] in the forward pass, identity in the backward pass (straight-through), around grey 0.5.
        t = t + 0.5
        return t + (t.clamp(0, 1) - t).detach()

    @torch.no_grad()
    def assign(self, images: Any) -> "FFTImage":
        x = self._check(_as_images(images).to(self.spectrum.device, torch.float64))
        if self.squash == "sigmoid":
            x = x.clamp(EPS, 1 - EPS)
            t = torch.log(x) - torch.log1p(-x)
        else:
            t = x.clamp(0, 1) - 0.5
        if self.decorrelate:
            t = correlate_colors(t)
        spectrum = torch.fft.rfftn(t * SPECTRUM_DIVISOR, dim=(-2, -1), norm="ortho")
        real = torch.view_as_real(spectrum) / self.scale.to(spectrum.device, torch.float64)
        self.spectrum.copy_(real.to(self.spectrum.dtype))
        return self

    def to(self, device: torch.device | str) -> "FFTImage":
        self.spectrum = self.spectrum.detach().to(device).requires_grad_(True)
        self.scale = self.scale.to(device)
        return self

    def spec(self) -> dict:
        return {"param": "fft", "shape": list(self.shape), "decay_power": self.decay_power, "sd": self.sd,
                "decorrelate": self.decorrelate, "squash": self.squash}


def pixel_image(batch: int, height: int, width: int | None = None, seed: int | Sequence[int] = 0, sd: float = 0.01,
                *, channels: int = 3, center: float = 0.5) -> PixelImage:
    """Plain pixels starting at `center` (grey) plus N(0, sd²) noise, for Simonyan's plain ascent and Yosinski's
    regularized one."""
    return PixelImage(batch, height, width or height, channels=channels, seed=seed, sd=sd, center=center)


def fft_image(batch: int, height: int, width: int | None = None, seed: int | Sequence[int] = 0,
              decay_power: float = 1.0, sd: float = 0.01, *, channels: int = 3, decorrelate: bool = True,
              squash: str = "sigmoid") -> FFTImage:
    """Lucid's default image: Fourier coefficients ~ N(0, sd²) scaled by 1/f^decay_power, decorrelated colours,
    sigmoid."""
    return FFTImage(batch, height, width or height, channels=channels, seed=seed, decay_power=decay_power, sd=sd,
                    decorrelate=decorrelate, squash=squash)


def from_image(images: Any, kind: str = "fft", **options) -> ImageParam:
    """A parameterization (`kind` "pixel" or "fft", with that kind's options) that starts at `images`:
    (B, C, H, W) or (C, H, W) in [0, 1], a tensor or an array."""
    x = _as_images(images)
    b, c, h, w = x.shape
    if kind == "pixel":
        param: ImageParam = PixelImage(b, h, w, channels=c, **options)
    elif kind == "fft":
        param = FFTImage(b, h, w, channels=c, **options)
    else:
        raise ValueError(f"kind must be 'pixel' or 'fft', not {kind!r}")
    return param.assign(x)
