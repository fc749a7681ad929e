"""What every synthesis technique shares, as `AttributionTechnique` is for the attribution family: each declares its
objective, its parameterization and its settings and runs them through the one engine (`optvis.render`) with
`optimize`; each keeps its own drawing. And one honesty rule: a synthesized image that is mostly at the clip limits
(saturated) or has almost no contrast (flat) did not reach its goal as a picture, whatever its objective says, so
`image_problems` names it for the tile and the page's list of results that fell short."""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from generator import optvis
from generator.optvis.render import StopRule
from generator.techniques.base import Technique

# A pixel whose every channel is within CLIP_MARGIN of 0 or 1 is at the clip limits (pure black, white, red, ...);
# an image with more than SATURATED_SHARE of its pixels there is saturated (Lite0's stem units were solid black or
# solid red). An image whose values vary by less than FLAT_STD (about 8 grey levels) is flat.
CLIP_MARGIN = 0.1
SATURATED_SHARE = 0.5
FLAT_STD = 8 / 255


def image_problems(images: np.ndarray) -> list[str | None]:
    """For (N, C, H, W) images in [0, 1]: "saturated", "flat" or None for each."""
    out: list[str | None] = []
    for image in np.asarray(images, dtype=np.float32):
        clipped = float(np.mean(((image <= CLIP_MARGIN) | (image >= 1 - CLIP_MARGIN)).all(0)))
        if clipped > SATURATED_SHARE:
            out.append("saturated")
        elif float(image.std()) < FLAT_STD:
            out.append("flat")
        else:
            out.append(None)
    return out


def problem_note(problem: str | None) -> str:
    """The words a tile's caption adds for a problem."""
    return {"saturated": " — SATURATED", "flat": " — FLAT"}.get(problem or "", "")


class SynthesisTechnique(Technique):
    """A technique that synthesizes or changes images with the engine. `stop_rule`: the default stop rule of its
    Adam runs (None: every planned step)."""

    stop_rule: ClassVar[StopRule | None] = None

    def optimize(self, ctx, objective, param, **settings) -> optvis.RenderResult:
        """`optvis.render` on the context's model, with its normalization, seed, device and logits."""
        model = ctx.model
        settings.setdefault("stop", self.stop_rule)
        return optvis.render(model.module, objective, param, mean=model.input.mean, std=model.input.std,
                             seed=ctx.seed, device=ctx.device, logits_key=model.logits_key, **settings)


def difference_picture(image: np.ndarray, start: np.ndarray) -> np.ndarray:
    """(C, H, W) result and start in [0, 1] → an 8-bit picture of result − start around mid-grey, stretched so that
    the 99th percentile of |difference| reaches the ends of the range (what an optimization added, visible even
    where it is small); (H, W) for one channel, (H, W, 3) for colour."""
    diff = np.asarray(image, np.float32) - np.asarray(start, np.float32)
    top = float(np.percentile(np.abs(diff), 99)) or 1.0
    shown = np.clip(127.5 + 127.5 * diff / top, 0, 255).astype(np.uint8).transpose(1, 2, 0)
    return shown[..., 0] if shown.shape[2] == 1 else shown
