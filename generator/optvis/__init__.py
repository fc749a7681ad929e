"""The synthesis engine shared by every synthesis technique (Lucid's four concepts in four places): `objectives`
(what to maximize, matching terms included), `param` (pixel / Fourier / decorrelated images), `transforms` (jitter,
scale, rotate, blur) and `render` (the one loop: optimizers, coarse to fine, a stop rule, snapshots, Yosinski's
regularizers), with `forward` (the early-exit recording forward) under it."""
from generator.optvis.objectives import (
    Activations,
    BatchedObjective,
    Objective,
    batched,
    channel,
    feature_match,
    gram_match,
    range_penalty,
    class_log_probability,
    class_logit,
    l2_penalty,
    layer_l2,
    neuron,
    total_variation,
)
from generator.optvis.param import (
    FFTImage,
    ImageParam,
    MacoImage,
    PixelImage,
    fft_image,
    from_image,
    maco_image,
    pixel_image,
)
from generator.optvis.render import YOSINSKI_SETTINGS, Regularizers, RenderResult, StopRule, render
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
    "Activations", "BatchedObjective", "Objective", "batched", "channel", "class_log_probability", "class_logit", "feature_match",
    "gram_match", "range_penalty", "l2_penalty", "layer_l2",
    "neuron", "total_variation",
    "FFTImage", "ImageParam", "MacoImage", "PixelImage", "fft_image", "from_image", "maco_image", "pixel_image",
    "YOSINSKI_SETTINGS", "Regularizers", "RenderResult", "StopRule", "render",
    "blur_image", "compose", "gaussian_blur", "jitter", "pad", "random_rotate", "random_scale", "resize", "shift",
    "standard_transforms",
]
