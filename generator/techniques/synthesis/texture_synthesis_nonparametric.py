"""Non-parametric texture synthesis (Efros & Leung 1999): a texture grown pixel by pixel, each pixel copied from the
source pixel whose neighbourhood best matches what has been grown around it so far. No network is involved: this is
the classical baseline that the Gram-matrix texture synthesis is compared with, and its result does not depend on
the model (the job's cache key names the model all the same). The algorithm is in `techniques/synthesis/efros_leung.py`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pydantic import Field

from generator.techniques.synthesis import efros_leung
from generator import figures
from generator.artifacts import Artifact, Job, Params, Reads, PER_IMAGE
from generator.techniques.base import Technique
from generator.techniques.synthesis.gram import image_set_problems, image_sets_field


class TextureSynthesisNonparametricParams(Params):
    quick_caps = {"source_size": 48, "size": 64}

    images: list[str] | None = image_sets_field("the textures to grow from")
    scale: int | None = Field(128, ge=8, le=2048, description="the texture image is first resized so its shorter side "
                                                            "is this many pixels (None: source_size, the whole image)")
    source_size: int = Field(96, ge=8, le=512, description="side of the square cut from the resized image's centre: "
                                                           "the source the texture grows from")
    size: int = Field(128, ge=8, le=1024, description="side of the synthesized texture")
    window: int = Field(11, ge=3, le=41, description="side of the (odd) neighbourhood that is matched")
    epsilon: float = Field(0.1, ge=0, le=10, description="candidates: source windows within (1 + epsilon) × the "
                                                         "smallest distance")


def source_picture(image: Image.Image, p: TextureSynthesisNonparametricParams) -> np.ndarray:
    """The source square: the image (8-bit RGB, full resolution) resized so its shorter side is `scale`, its centre
    `source_size` square cut out. (H, W, 3) uint8."""
    scale = p.scale or p.source_size
    w, h = image.size
    k = scale / min(w, h)
    resized = image.convert("RGB").resize((max(scale, round(w * k)), max(scale, round(h * k))), Image.LANCZOS)
    left, top = (resized.width - p.source_size) // 2, (resized.height - p.source_size) // 2
    return np.asarray(resized.crop((left, top, left + p.source_size, top + p.source_size)))


def texture_metrics(texture: np.ndarray, provenance: np.ndarray, source: np.ndarray, window: int, seed: int,
                    device: torch.device) -> dict:
    """How much the result looks like its source, with references that show the scale of each number."""
    h = window // 2
    stride = h + 1  # windows on a grid: every output pixel lies in one or two of them
    nearest = efros_leung.nearest_windows(texture, source, window, stride, device)
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(texture.reshape(-1, texture.shape[-1])).reshape(texture.shape)
    nearest_shuffled = efros_leung.nearest_windows(shuffled, source, window, stride, device)
    noise = rng.integers(0, 256, size=texture.shape, dtype=np.uint8)
    values = window * window * texture.shape[-1]
    centres = efros_leung.source_windows(source, window)[1]
    return {
        "exact_windows": float(np.mean(nearest == 0)),
        "nearest_rms": float(np.mean(np.sqrt(nearest / values))),
        "shuffled_rms": float(np.mean(np.sqrt(nearest_shuffled / values))),
        "windows_checked": int(len(nearest)),
        "coherence": efros_leung.coherence(provenance),
        "source_used": float(np.isin(centres, provenance).mean()),
        "histogram_distance": efros_leung.histogram_distance(texture, source),
        "noise_histogram_distance": efros_leung.histogram_distance(noise, source),
    }


class TextureSynthesisNonparametric(Technique):
    kind = "texture_synthesis_nonparametric"
    title = "Texture synthesis (non-parametric)"
    summary = "a texture grown pixel by pixel by copying from the source where the neighbourhood matches (no network)"
    version = 1
    Params = TextureSynthesisNonparametricParams
    scope = PER_IMAGE
    arrays = {"texture": "(size, size, 3) uint8: the synthesized texture, RGB",
              "provenance": "(size, size) int32: flat index (y · source width + x) of the source pixel each "
                            "texture pixel copies",
              "source": "(source_size, source_size, 3) uint8: the source square the texture grew from, RGB"}

    def reads(self, params: TextureSynthesisNonparametricParams) -> Reads:
        return Reads(image_sets=None if params.images is None else tuple(params.images))

    def check(self, model, params: TextureSynthesisNonparametricParams) -> list[str]:
        p = params
        problems = image_set_problems(p.images)
        if p.scale is not None and p.source_size > p.scale:
            problems.append(f"source_size: {p.source_size} is larger than the resized image (scale {p.scale}); "
                            f"at most {p.scale}")
        if p.window % 2 == 0:
            problems.append(f"window: {p.window} is even; the neighbourhood needs a centre pixel, use {p.window - 1} "
                            f"or {p.window + 1}")
        elif p.window > p.source_size - 2:
            largest = p.source_size - 2 if p.source_size % 2 else p.source_size - 3  # odd, and 3 × 3 windows fit
            problems.append(f"window: {p.window} does not fit the source (source_size {p.source_size}) often enough "
                            f"to choose between windows; at most {largest}")
        if p.size < p.window:
            problems.append(f"size: {p.size} is smaller than the window ({p.window}); the texture must hold at least "
                            "one whole neighbourhood")
        return problems

    def run(self, ctx, jobs: list[Job]) -> list[Artifact]:
        p: TextureSynthesisNonparametricParams = jobs[0].params
        # float64 throughout (exact distances, see efros_leung); Apple's MPS has no float64, so it runs on the CPU.
        device = ctx.device if ctx.device.type != "mps" else torch.device("cpu")
        out = []
        for job in jobs:
            source = source_picture(ctx.images[job.image].image, p)
            result = efros_leung.synthesize(source, p.size, p.window, p.epsilon, seed=ctx.seed, device=device)
            metrics = {"seconds": round(result.seconds, 3), "device": str(device),
                       "source_windows": int(len(efros_leung.source_windows(source, p.window)[1])),
                       "match_error": float(result.error.mean()),
                       "match_error_p95": float(np.percentile(result.error, 95)),
                       **texture_metrics(result.texture, result.provenance, source, p.window, ctx.seed, device)}
            out.append(Artifact({"texture": result.texture, "provenance": result.provenance.astype(np.int32),
                                 "source": source}, {"metrics": metrics}))
        return out

    def draw(self, art, job, env, path: Path) -> bool:
        m = art.metrics
        texture, source, provenance = art.arrays["texture"], art.arrays["source"], art.arrays["provenance"]
        height, width = texture.shape[:2]
        sh, sw = source.shape[:2]
        key = position_colours(sh, sw)
        copied = key.reshape(-1, 3)[provenance.astype(np.int64)].reshape(height, width, 3)
        # Every panel on a white canvas of the same size, unscaled: source and texture at the same pixel scale.
        ch, cw = max(height, sh), max(width, sw)
        zoom = 3  # nearest-neighbour first, so that the patch borders stay sharp when the figure is resampled
        panels = [np.repeat(np.repeat(on_canvas(x, ch, cw), zoom, 0), zoom, 1) for x in (source, texture, copied, key)]
        figures.picture_row(
            panels,
            [f"source ({sw}×{sh}, same scale)", f"synthesized ({width}×{height}, {m['seconds']:.1f} s)",
             f"where each pixel came from ({m['coherence']:.0%} in runs)", "colour = position in the source"],
            path, f"{env.image_name(job.image)}: {job.params.window} × {job.params.window} neighbourhoods, no network")
        return True


def position_colours(height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8: a colour for each source position, changing smoothly (red rises to the right, green
    downwards, blue falls along the diagonal), so that a run of copied pixels shows as a smooth patch."""
    y, x = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    rgb = np.stack([0.15 + 0.85 * x, 0.15 + 0.85 * y, 1 - 0.8 * (x + y) / 2], -1)
    return (rgb * 255).round().astype(np.uint8)


def on_canvas(picture: np.ndarray, height: int, width: int) -> np.ndarray:
    """The picture centred on a white canvas at least (height, width), without scaling."""
    ph, pw = picture.shape[:2]
    canvas = np.full((max(height, ph), max(width, pw), 3), 255, np.uint8)
    top, left = (canvas.shape[0] - ph) // 2, (canvas.shape[1] - pw) // 2
    canvas[top:top + ph, left:left + pw] = picture
    return canvas
