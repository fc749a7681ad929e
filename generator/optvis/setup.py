"""How a Fourier-parameterized synthesis (class and unit visualization) is set up on a model: the image, learning
rate, transforms and regularizers that `fourier_setup` decides from the model's input size."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from pydantic import Field

from generator.artifacts import Params
from generator.optvis.param import fft_image
from generator.optvis.render import SMALL_INPUT, SMALL_INPUT_DEFAULTS, Regularizers, StopRule
from generator.optvis.transforms import compose, gaussian_blur, resize, standard_transforms


@dataclass
class FourierSetup:
    """How a Fourier-parameterized synthesis runs on a model: what `fourier_setup` decides from the input size."""

    size: int  # side of the optimized image
    param: Any  # optvis.FFTImage, at its start
    lr: float
    transforms: Any  # the random transforms, then `fit`
    regularizers: Any  # optvis.Regularizers or None
    fit: Any  # deterministic map from the optimized image to the model's input (None: as it is)
    note: str | None  # what differs from the plain Lucid setting, for the page (None: nothing)

    def model_view(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, size, size) images in [0, 1] → what the model is shown (without the random transforms)."""
        return images if self.fit is None else self.fit.apply(images, self.fit.sample(torch.Generator()))


def fourier_setup(model, batch: int, seed: int, *, size: int | None, default_size: int, lr: float,
                  decay_power: float, strength: float) -> FourierSetup:
    """The Fourier image, learning rate, transforms and regularizers for `batch` images on `model`.

    Inputs of SMALL_INPUT px or more: Lucid's setting as tuned on EfficientNet-Lite0 (`size` or the input size, at
    most `default_size`; a model of one input size gets exactly that size). Smaller inputs: SMALL_INPUT_DEFAULTS —
    optimized at `size` or 4× the input size, the model sees a blurred, resized copy; decay power + 0.5, lr × 0.25,
    a periodic blur (what each one fixed: site_src/tuning.md#class-visualization)."""
    side = model.input.size
    channels = model.channels
    rgb = channels == 3
    if side >= SMALL_INPUT:
        fixed = not model.takes_other_sizes()
        n = side if fixed else size or min(side, default_size)
        fit = [resize(n)] if fixed else []  # pad and scale change the size; such a model needs it back
        param = fft_image(batch, n, seed=seed, channels=channels, decay_power=decay_power, decorrelate=rgb)
        return FourierSetup(n, param, lr, compose([standard_transforms(n, strength)] + fit), None, None, None)
    d = SMALL_INPUT_DEFAULTS
    n = size or side * d["upsample"]
    k = n / side  # optimized pixels per model pixel
    fit = compose(([gaussian_blur(d["antialias_sigma"] * k)] if n > side else []) + [resize(side)])
    power, rate = decay_power + d["decay_power_add"], lr * d["lr_factor"]
    param = fft_image(batch, n, seed=seed, channels=channels, decay_power=power, decorrelate=rgb)
    regularizers = Regularizers(blur_every=d["blur_every"], blur_sigma=d["blur_sigma"] * k)
    note = (f"small input: optimized at {n} px, shown to the model blurred (σ = {d['antialias_sigma'] * k:g} px) "
            f"and resized to {side} px; decay power {power:g}, learning rate {rate:g}, {regularizers.describe()} steps")
    return FourierSetup(n, param, rate, compose([standard_transforms(n, strength), fit]), regularizers, fit, note)


def side_field(at_most: int) -> Any:
    """The `size` parameter of a Fourier-parameterized technique (None: decided from the model's input size)."""
    return Field(None, ge=16, le=512, description=f"side of the Fourier image (default: the model's input size, at "
                                                  f"most {at_most}; under 64 px: 4× the input size, shown to the "
                                                  "model resized)")


def steps_field(default: int) -> Any:
    return Field(default, ge=1, le=5000, description="steps of the Fourier (Lucid-style) optimization")


def lr_field(default: float) -> Any:
    return Field(default, gt=0, le=1, description="Adam learning rate of the Fourier optimization (inputs under 64 "
                                                  "px: a quarter of it)")


class FourierParams(Params):
    """The parameters of a technique that runs `fourier_setup` (class and unit visualization); each adds its own
    `size`, `steps` and `lr` (with `side_field`, `steps_field` and `lr_field`: their defaults differ)."""

    decay_power: float = Field(1.5, ge=0, le=3, description="spectrum falloff of the Fourier start (higher: smoother; "
                                                           "inputs under 64 px: 0.5 more)")
    transform_strength: float = Field(1.0, ge=0, le=3, description="scale of the random pad/jitter/scale/rotate")
    early_stop: bool = Field(True, description="end a run once its loss has stopped improving (the mean loss of "
                                               "the last 16 steps fell by less than 1% against the 16 before, after "
                                               "at least 32 steps); the steps used are shown")

    coarse_to_fine: bool = Field(True, description="take the first half of the steps at half the size (a quarter of "
                                                   "the cost each), then refine at full size: the layout settles "
                                                   "cheaply where it is coarse")

    def stop_rule(self) -> StopRule | None:
        return StopRule() if self.early_stop else None

    def schedule(self, steps: int) -> dict:
        """The engine's `steps`, `coarse_steps` and `scales` for a run of `steps` in all."""
        if not self.coarse_to_fine or steps < 2:
            return {"steps": steps}
        return {"steps": steps - steps // 2, "coarse_steps": steps // 2, "scales": (0.5, 1.0)}

    def fourier(self, model, batch: int, seed: int, default_size: int) -> FourierSetup:
        """`fourier_setup` with these parameters."""
        return fourier_setup(model, batch, seed, size=self.size, default_size=default_size, lr=self.lr,
                             decay_power=self.decay_power, strength=self.transform_strength)
