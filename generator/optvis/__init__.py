"""Input optimization shared by class visualization, DeepDream, inversion, texture and style (Lucid's four concepts
in four places): `objectives` (what to maximize), `param` (pixel / Fourier / decorrelated images), `transforms`
(jitter, scale, rotate, blur) and `render` (the loop, snapshots, Yosinski's regularizers)."""
from generator.optvis.objectives import (
    Activations,
    BatchedObjective,
    Objective,
    batched,
    channel,
    class_logit,
    l2_penalty,
    layer_l2,
    neuron,
    total_variation,
)
from generator.optvis.param import FFTImage, ImageParam, PixelImage, fft_image, from_image, pixel_image
from generator.optvis.render import YOSINSKI_SETTINGS, Regularizers, RenderResult, render
from generator.optvis.transforms import (
    blur_image,
    compose,
    gaussian_blur,
    jitter,
    pad,
    random_rotate,
    random_scale,
    resize,
    shift,
    standard_transforms,
)

__all__ = [
    "Activations", "BatchedObjective", "Objective", "batched", "channel", "class_logit", "l2_penalty", "layer_l2",
    "neuron", "total_variation",
    "FFTImage", "ImageParam", "PixelImage", "fft_image", "from_image", "pixel_image",
    "YOSINSKI_SETTINGS", "Regularizers", "RenderResult", "render",
    "blur_image", "compose", "gaussian_blur", "jitter", "pad", "random_rotate", "random_scale", "resize", "shift",
    "standard_transforms",
]
