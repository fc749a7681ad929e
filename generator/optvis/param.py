"""Image parameterizations: the tensors an optimizer changes, and the map from them to a (B, C, H, W) image in [0, 1].

Three kinds (Olah et al. 2017, "Feature Visualization", Distill, section "The Enemy of Feature Visualization";
Lucid's `lucid/optvis/param/spatial.py` and `color.py`):

- `pixel_image`: the pixels themselves. Kept in [0, 1] by projection (clamped after every optimizer step), so it is
  plain projected gradient ascent as in Simonyan et al. 2014 and the Yosinski et al. 2015 regularizers can edit
  pixels directly. Encoding an image is exact.
- `fft_image`: the real and imaginary parts of each channel's 2-D real FFT, scaled by 1/f^decay_power (f the
  spatial frequency, floored at 1/max(H, W)), so that a step of equal size in every coefficient changes low
  frequencies far more than high ones — a preconditioner towards natural-image statistics. Then, for 3 channels,
  Lucid's colour decorrelation (the square root of ImageNet's colour correlation matrix, normalized to unit maximal
  column norm) and a sigmoid (or a straight-through clip) to [0, 1].
- `maco_image`: MaCo (Fel et al. 2023): only the Fourier phase is optimized, the magnitude is a fixed natural-image
  spectrum (1/f^1.4, or the mean of bundled photographs'), then the same colour matrix and sigmoid (`MacoImage`).

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

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from generator.optvis.transforms import resample

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

    def final(self) -> torch.Tensor:
        """The image as a result: in [0, 1], detached."""
        return self().detach()

    def to(self, device: torch.device | str) -> "ImageParam":
        raise NotImplementedError

    def spec(self) -> dict:
        raise NotImplementedError

    def resized(self, height: int, width: int) -> "ImageParam":
        """The same kind of parameterization at another size, starting at this image resampled (the engine's
        coarse-to-fine schedule)."""
        with torch.no_grad():
            image = resample(self().detach(), (height, width))
        return self.like(height, width).assign(image)

    def like(self, height: int, width: int) -> "ImageParam":
        """A new parameterization of this kind and these options at another size (its start is overwritten)."""
        raise NotImplementedError

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.channels, self.height, self.width)

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape) != self.shape:
            raise ValueError(f"image of shape {tuple(x.shape)} does not fit a parameterization of shape {self.shape}")
        return x


class PixelImage(ImageParam):
    """Pixels in [0, 1], optimized directly and clamped to [0, 1] after each step.

    Options for the techniques that change a given photograph or match statistics:
    - `clamp=False`: pixels left free (for L-BFGS, whose curvature history a projection breaks; pair it with
      `objectives.range_penalty`); the image is still clamped when it is read out at the end (`final`);
    - `ball=(origin, radius)`: after each step the pixels are also kept within `radius` of `origin` (B, C, H, W) in
      every value (the L∞ ball of projected gradient descent);
    - `base`: the photograph the image was made from, at full size; resizing then keeps the base's own detail and
      carries over only what the optimization added (DeepDream's octaves: the detail is upsampled and added to the
      photograph resampled afresh at each size)."""

    def __init__(self, batch: int, height: int, width: int, *, channels: int = 3, seed: int | Sequence[int] = 0,
                 sd: float = 0.01, center: float = 0.5, clamp: bool = True,
                 ball: tuple[torch.Tensor, float] | None = None, base: torch.Tensor | None = None):
        self.batch, self.channels, self.height, self.width = batch, channels, height, width
        self.sd, self.center, self.clamp, self.ball, self.base = float(sd), float(center), clamp, ball, base
        noise = _randn((channels, height, width), _seeds(batch, seed))
        self.pixels = (center + sd * noise).clamp(0, 1).requires_grad_(True)

    def parameters(self) -> list[torch.Tensor]:
        return [self.pixels]

    def __call__(self) -> torch.Tensor:
        # Kept in [0, 1] by `project` (and clamped where set), not by a clamp here: torch's clamp passes no gradient
        # at exactly 0 or 1, so a pixel that reached a limit would stay there for good.
        return self.pixels

    def final(self) -> torch.Tensor:
        return self.pixels.detach().clamp(0, 1)

    @torch.no_grad()
    def project(self) -> None:
        if self.ball is not None:
            origin, radius = self.ball
            self.pixels.copy_(torch.min(torch.max(self.pixels, origin - radius), origin + radius))
        if self.clamp:
            self.pixels.clamp_(0, 1)

    def like(self, height: int, width: int) -> "PixelImage":
        return PixelImage(self.batch, height, width, channels=self.channels, sd=self.sd, center=self.center,
                          clamp=self.clamp, base=self.base)

    def resized(self, height: int, width: int) -> "PixelImage":
        if self.base is None:
            return super().resized(height, width)
        size = (height, width)
        with torch.no_grad():
            here = resample(self.base, (self.height, self.width))
            detail = self.pixels.detach() - here
            image = resample(self.base, size) + torch.nn.functional.interpolate(
                detail, size=size, mode="bilinear", align_corners=False)
        new = self.like(height, width)
        new.pixels = (image.clamp(0, 1) if self.clamp else image).to(self.pixels.device).requires_grad_(True)
        return new

    @torch.no_grad()
    def assign(self, images: Any) -> "PixelImage":
        x = self._check(_as_images(images).to(self.pixels.device, self.pixels.dtype))
        self.pixels.copy_(x.clamp(0, 1))
        return self

    def to(self, device: torch.device | str) -> "PixelImage":
        self.pixels = self.pixels.detach().to(device).requires_grad_(True)
        if self.base is not None:
            self.base = self.base.to(device)
        if self.ball is not None:
            self.ball = (self.ball[0].to(device), self.ball[1])
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

    def like(self, height: int, width: int) -> "FFTImage":
        return FFTImage(self.batch, height, width, channels=self.channels, decay_power=self.decay_power, sd=self.sd,
                        decorrelate=self.decorrelate, squash=self.squash).to(self.spectrum.device)

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


# ---------------------------------------------------------------- MaCo: phase only, fixed magnitude

# The colour photographs that ship with scikit-image and scikit-learn (scenes, not close-up textures: brick, grass
# and gravel have spectra far flatter than 1/f and are left out), whose mean magnitude spectrum stands in for MaCo's
# ImageNet mean (`magnitude="photos"`) and gives the default power law its exponent.
MAGNITUDE_PHOTOS = ("skimage:astronaut", "skimage:chelsea", "skimage:coffee", "skimage:rocket", "sklearn:china",
                    "sklearn:flower")
GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma


@functools.lru_cache(maxsize=None)
def _photo(entry: str) -> np.ndarray:
    """(3, h, w) float64 in [0, 1], read-only."""
    kind, name = entry.split(":", 1)
    if kind == "skimage":
        import skimage.data

        array = getattr(skimage.data, name)()
    else:
        from sklearn.datasets import load_sample_image

        array = load_sample_image(f"{name}.jpg")
    photo = np.ascontiguousarray(np.asarray(array, np.float64).transpose(2, 0, 1) / 255.0)
    photo.setflags(write=False)
    return photo


def _edge_weights(width: int) -> np.ndarray:
    """How often each column of a real FFT counts in the full spectrum: 2, except the columns that are their own
    conjugate's (kx = 0, and kx = W/2 for even W)."""
    weights = np.full(width // 2 + 1, 2.0)
    weights[0] = 1.0
    if width % 2 == 0:
        weights[-1] = 1.0
    return weights


def _unit_variance(magnitude: np.ndarray, height: int, width: int) -> np.ndarray:
    """Each channel scaled so that its image (zero mean, unitary inverse FFT) has variance 1: Parseval, with the
    half spectrum's columns weighted by `_edge_weights`."""
    energy = (magnitude ** 2 * _edge_weights(width)).sum(axis=(-2, -1), keepdims=True)
    return magnitude * np.sqrt(height * width / np.maximum(energy, 1e-30))


def periodic_component(x: torch.Tensor) -> torch.Tensor:
    """The periodic part of images (..., H, W): the image minus the smooth image whose Laplacian is the jump across
    opposite borders (Moisan 2011, "Periodic plus Smooth Image Decomposition", J. Math. Imaging Vis.). A photo's FFT
    treats it as tiled, and the jumps at the seams put a bright cross along the axes of its spectrum: as a MaCo
    magnitude, that cross paints horizontal and vertical streaks."""
    v = torch.zeros_like(x)
    rows = x[..., -1, :] - x[..., 0, :]
    cols = x[..., :, -1] - x[..., :, 0]
    v[..., 0, :] += rows
    v[..., -1, :] -= rows
    v[..., :, 0] += cols
    v[..., :, -1] -= cols
    h, w = x.shape[-2:]
    fy = torch.fft.fftfreq(h, dtype=x.dtype)[:, None]
    fx = torch.fft.rfftfreq(w, dtype=x.dtype)[None, :]
    denominator = 2 * torch.cos(2 * np.pi * fy) + 2 * torch.cos(2 * np.pi * fx) - 4
    denominator[0, 0] = 1.0
    smooth = torch.fft.rfftn(v, dim=(-2, -1)) / denominator
    smooth[..., 0, 0] = 0.0
    return x - torch.fft.irfftn(smooth, s=(h, w), dim=(-2, -1))


@functools.lru_cache(maxsize=16)
def photo_magnitude(height: int, width: int, channels: int = 3, decorrelate: bool = True) -> np.ndarray:
    """The mean magnitude spectrum of `MAGNITUDE_PHOTOS` at height × width: (channels, H, W // 2 + 1) float32.

    Each photo is centre-cropped to the aspect ratio, resized with antialiasing, taken to the decorrelated colour
    space (3 channels) or to grey (any other count: every channel gets the grey spectrum), made periodic
    (`periodic_component`), its channel means removed, and its unitary FFT magnitude averaged with its mirror image's
    and over the photos. Each channel is then scaled to unit variance: the colour balance is left to the colour matrix
    (whose inverse whitens ImageNet's colours), as MaCo standardizes its image. The DC term is 0. Deterministic (no
    download); cached per size."""
    total = np.zeros((channels, height, width // 2 + 1))
    mirror = (-np.arange(height)) % height  # a left-right flip maps |X(ky, kx)| to |X(−ky, kx)|
    for entry in MAGNITUDE_PHOTOS:
        x = torch.tensor(_photo(entry))
        h, w = x.shape[-2:]
        ch, cw = (h, round(h * width / height)) if w * height >= h * width else (round(w * height / width), w)
        x = x[:, (h - ch) // 2:(h - ch) // 2 + ch, (w - cw) // 2:(w - cw) // 2 + cw]
        x = torch.nn.functional.interpolate(x[None], size=(height, width), mode="bilinear", antialias=True,
                                            align_corners=False)
        if channels == 3 and decorrelate:
            x = correlate_colors(x)
        elif channels != 3:
            grey = torch.einsum("c,bchw->bhw", torch.tensor(GREY_WEIGHTS, dtype=x.dtype), x)
            x = grey[:, None].expand(1, channels, height, width)
        x = periodic_component(x)
        x = x - x.mean(dim=(-2, -1), keepdim=True)
        m = torch.fft.rfftn(x[0], dim=(-2, -1), norm="ortho").abs().numpy()
        m = 0.5 * (m + m[:, mirror])
        total += m / np.sqrt((m ** 2 * _edge_weights(width)).sum())  # every photo weighs the same
    total[:, 0, 0] = 0.0
    magnitude = _unit_variance(total, height, width).astype(np.float32)
    magnitude.setflags(write=False)
    return magnitude


def power_magnitude(height: int, width: int, channels: int = 3, decay_power: float = 1.0) -> np.ndarray:
    """1/f^decay_power (the falloff FFTImage's scale has), DC 0, each channel of unit variance."""
    freqs = rfft2d_freqs(height, width)
    magnitude = 1.0 / np.maximum(freqs, 1.0 / max(height, width)) ** decay_power
    magnitude[0, 0] = 0.0
    return _unit_variance(np.repeat(magnitude[None], channels, 0), height, width).astype(np.float32)


def hermitian_phase(phase: torch.Tensor, width: int) -> torch.Tensor:
    """The phase made odd, φ(−ky) = −φ(ky), in the columns of a real FFT that hold their own conjugates (kx = 0, and
    kx = W/2 for even W). An inverse real FFT keeps only the Hermitian part there, which would change those
    coefficients' magnitudes; with this the image's spectrum has exactly the magnitude it was given (the few
    coefficients that are their own conjugates get phase 0)."""
    mirror = (-torch.arange(phase.shape[-2], device=phase.device)) % phase.shape[-2]

    def odd(column: torch.Tensor) -> torch.Tensor:
        return 0.5 * (column - column[..., mirror, :])

    if width % 2 == 0 and phase.shape[-1] > 1:
        return torch.cat([odd(phase[..., :1]), phase[..., 1:-1], odd(phase[..., -1:])], dim=-1)
    return torch.cat([odd(phase[..., :1]), phase[..., 1:]], dim=-1)


class MacoImage(ImageParam):
    """MaCo's image: the Fourier phase of each channel is optimized, the magnitude is fixed (Fel et al. 2023,
    "Unlocking Feature Visualization for Deeper Networks with MAgnitude Constrained Optimization", NeurIPS; the
    `horama` package's `maco_preconditioner`). The magnitude carries a natural image's energy per frequency, so the
    optimizer can only move structure around, never add high-frequency energy: the adversarial noise that plain or
    Fourier ascent drifts into on deep networks has no room, and no strong regularizer is needed.

    Image = sigmoid(colour matrix · irfft(magnitude · e^{iφ}, unitary)), the colour matrix Lucid's as in FFTImage
    (3 channels). The magnitude: MaCo uses the mean magnitude spectrum of ImageNet in decorrelated colours, which
    horama downloads; we never download. `magnitude="power"` (default) is 1/f^decay_power with decay_power 1.4, the
    falloff of the mean spectrum of the six colour photographs bundled with scikit-image and scikit-learn (fitted over
    its octaves at 128 and 224 px); `magnitude="photos"` is that mean itself (`photo_magnitude`, computed once per
    size). On EfficientNet-Lite0's tabby class (128 px, 256 steps, lr 0.1) the power law gave the more legible image
    (fur swirls, a nose) and the higher logit (45 against 38): six photos' mean has less energy than 1/f^1.4 in the
    lowest octave and more in the middle ones, which stayed as a fine grain. Each channel has unit variance before
    the colour matrix (MaCo standardizes its image to unit variance) and no DC term (mean grey), so the pixels'
    contrast is natural and the same for all phases.

    Phase: one angle (radians) per coefficient, made Hermitian where needed (`hermitian_phase`), N(0, sd²) at the
    start. sd = π: the angles are then nearly uniform, a stationary random texture. horama starts at N(0, 1) (its
    standardized phase), where E[e^{iφ}] = e^{−1/2}: 61% of every coefficient's amplitude adds up in phase at pixel
    (0, 0), a bright blob in the corners that the optimization must first undo. Unlike horama we do not
    re-standardize the phase at each step, so the parameter is the phase itself and `assign` can set it.

    `assign(images)` takes the pictures' phase (in the space before the sigmoid, as FFTImage's inverse). The
    magnitude stays fixed, so it is not exact: the result keeps the pictures' layout and edges (the phase carries
    them, Oppenheim & Lim 1981) with the fixed energy per frequency, not their contrast or texture.
    """

    def __init__(self, batch: int, height: int, width: int, *, channels: int = 3, seed: int | Sequence[int] = 0,
                 sd: float = np.pi, magnitude: str = "power", decay_power: float = 1.4, decorrelate: bool = True):
        if magnitude not in ("photos", "power"):
            raise ValueError(f"magnitude must be 'photos' or 'power', not {magnitude!r}")
        self.batch, self.channels, self.height, self.width = batch, channels, height, width
        self.sd, self.magnitude_kind, self.decay_power = float(sd), magnitude, float(decay_power)
        self.decorrelate = bool(decorrelate) and channels == 3
        if magnitude == "photos":
            m = photo_magnitude(height, width, channels, self.decorrelate)
        else:
            m = power_magnitude(height, width, channels, self.decay_power)
        self.magnitude = torch.tensor(m)[None]  # (1, C, H, W // 2 + 1)
        self.phase = (sd * _randn((channels, height, width // 2 + 1), _seeds(batch, seed))).requires_grad_(True)

    def parameters(self) -> list[torch.Tensor]:
        return [self.phase]

    def raw(self) -> torch.Tensor:
        """The image before the colour matrix and the sigmoid: its spectrum's magnitude is `self.magnitude`."""
        spectrum = torch.polar(self.magnitude.expand_as(self.phase), hermitian_phase(self.phase, self.width))
        return torch.fft.irfftn(spectrum, s=(self.height, self.width), dim=(-2, -1), norm="ortho")

    def __call__(self) -> torch.Tensor:
        t = self.raw()
        if self.decorrelate:
            t = decorrelate_colors(t)
        return torch.sigmoid(t)

    @torch.no_grad()
    def assign(self, images: Any) -> "MacoImage":
        x = self._check(_as_images(images).to(self.phase.device, torch.float64)).clamp(EPS, 1 - EPS)
        t = torch.log(x) - torch.log1p(-x)
        if self.decorrelate:
            t = correlate_colors(t)
        self.phase.copy_(torch.fft.rfftn(t, dim=(-2, -1), norm="ortho").angle().to(self.phase.dtype))
        return self

    def to(self, device: torch.device | str) -> "MacoImage":
        self.phase = self.phase.detach().to(device).requires_grad_(True)
        self.magnitude = self.magnitude.to(device)
        return self

    def spec(self) -> dict:
        spec = {"param": "maco", "shape": list(self.shape), "sd": self.sd, "magnitude": self.magnitude_kind,
                "decorrelate": self.decorrelate}
        if self.magnitude_kind == "power":
            spec["decay_power"] = self.decay_power
        else:
            spec["photos"] = list(MAGNITUDE_PHOTOS)
        return spec


def maco_image(batch: int, height: int, width: int | None = None, seed: int | Sequence[int] = 0, *,
               channels: int = 3, sd: float = np.pi, magnitude: str = "power", decay_power: float = 1.4,
               decorrelate: bool = True) -> MacoImage:
    """MaCo's phase-only image (Fel et al. 2023): random phase, a fixed natural magnitude spectrum (see MacoImage)."""
    return MacoImage(batch, height, width or height, channels=channels, seed=seed, sd=sd, magnitude=magnitude,
                     decay_power=decay_power, decorrelate=decorrelate)
