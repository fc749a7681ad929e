"""What the Gram-matrix syntheses (texture synthesis, style transfer) share: their optimization and random-filter
parameters, sizes that follow the model's input, the checks of the layers they match, the images they fall back on
when a spec names none (`Fallback`), and photographs as source tensors (`generator/optvis/matching.py` does the
optimizing)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import Field

from generator import images as imagelib
from generator.artifacts import Params
from generator.optvis import matching

PLAIN, SMOOTHED = "plain Gram", "activation smoothing (SWAG)"
# The start: Gaussian noise of this sd around the source's mean colour (faint, so little of it is left over; the
# reference that results are measured against is stronger noise, `matching.reference_noise`).
NOISE_SD = 0.05
STEPS = "L-BFGS evaluations (forward + backward) at full size"


class GramParams(Params):
    """The parameters texture synthesis and style transfer share (each adds its own `size`, `steps`, …).

    `size` and the source's side (`source_field`: `style_size`, `source_size`) may be left out (None): `resolved`
    fills them in for a model — the model's input size, at most `largest_default` and at least what the random
    filters span at the coarse scale, and the source side `source_ratio` × that. So a 96-px model paints and
    synthesizes at 96 px (a third of the work at 160), and a 224-px one at the cap, as before."""

    largest_default: ClassVar[int] = 160
    source_field: ClassVar[str] = "source_size"
    source_ratio: ClassVar[float] = 2.0

    coarse_steps: int = Field(40, ge=0, le=5000, description="evaluations at half size first (0: single scale)")
    optimizer: Literal["lbfgs", "adam"] = Field("lbfgs", description="'lbfgs' (as Gatys et al.) or 'adam'")
    lr: float = Field(0.02, gt=0, le=1, description="Adam's learning rate (L-BFGS takes unit steps with a line "
                                                    "search)")
    smoothing: bool = Field(True, description="also synthesize with all of the model's layers under activation "
                                              "smoothing (SWAG: Wang, Li & Vasconcelos 2021): a softmax over all of "
                                              "a layer's activations before the Gram matrices; shown beside the "
                                              "plain Gram results")
    random_filters: bool = Field(True, description="also synthesize with random multi-scale filters "
                                                   "(Ustyuzhaninov et al. 2017) and measure each network's result "
                                                   "with the other")
    random_seed: int = Field(0, ge=0, description="seed of the random filters")
    random_kernel_sizes: list[Annotated[int, Field(ge=1, le=127)]] = Field(
        [3, 5, 7, 11, 15, 23, 37], min_length=1, description="widths of the random filters, in pixels (above 11 px "
                                                             "they are applied to a 2× or 4× downsampled image)")
    random_filter_count: int = Field(128, ge=1, le=1024, description="random filters per width")

    def resolved(self, model) -> "GramParams":
        """These parameters with `size` and the source side filled in for `model` where they are left out (None)."""
        update = {}
        size = self.size
        if size is None:
            largest = max(self.random_kernel_sizes) * (2 if self.coarse_steps else 1) if self.random_filters else 16
            size = update["size"] = min(self.largest_default, max(model.input.size, largest, 16))
        if getattr(self, self.source_field) is None:
            update[self.source_field] = max(16, round(size * self.source_ratio))
        return self.model_copy(update=update) if update else self

    @property
    def scales(self) -> tuple[float, ...]:
        return (0.5, 1.0) if self.coarse_steps else (1.0,)

    def sides(self) -> list[int]:
        """The side of the synthesized image at each scale (`size`: the subclass's field)."""
        return [max(8, round(self.size * s)) for s in self.scales]

    def seen_sides(self, model) -> list[int]:
        """The image sides the model sees: those of `sides`, or its one input size for a model that takes no other."""
        return self.sides() if model.takes_other_sizes() else [model.input.size]

    def random_network(self, channels: int, device) -> matching.Network:
        return matching.random_network(channels, self.random_seed, device=device, kernel_sizes=self.random_kernel_sizes,
                                       filters=self.random_filter_count)

    def random_size_problems(self) -> list[str]:
        """The random filters (when on) against the smallest synthesized side."""
        largest, smallest = max(self.random_kernel_sizes), min(self.sides())
        if not self.random_filters or smallest >= largest:
            return []
        what = "the coarse scale" if self.coarse_steps else "the synthesis"
        return [f"size: the random filters span up to {largest} px, and {what} works at {smallest} px; use a "
                f"size of at least {2 * largest} with coarse steps, {largest} without"]


def image_sets_field(what: str, default: str = "the model's images") -> Any:
    """The `images` parameter of a technique that runs over image sets of its own: `what` they hold, and what it
    reads when none are named."""
    return Field(None, description=f"image sets of {what} (default: {default})")


def image_set_problems(images: list[str] | None, default: str = "the model's images") -> list[str]:
    """An empty list of image sets (None: `default`)."""
    if images is not None and not images:
        return [f"images: an empty list; name at least one image set, or leave it out for {default}"]
    return []


@dataclass(frozen=True)
class Fallback:
    """Images a technique reads when the spec names none for it: samples that ship with convscope or its
    dependencies, in a set of their own (`set`), so that a spec without image sets of textures or styles gets
    pictures a reader recognizes as such instead of its own photographs. `sources` are image entries as a spec
    writes them (`skimage:brick`) or files beside this module (`styles/swirls.png`, package data)."""

    set: str
    sources: tuple[str, ...]

    def records(self) -> dict[str, imagelib.ImageRecord]:
        """id → record, in order; decoded once per process."""
        return _fallback_records(self.sources, self.set)

    def digest(self) -> str:
        """Of the images' pixels: joins the cache key of the jobs that read them (`cache_fields`)."""
        return hashlib.sha256("".join(r.digest for r in self.records().values()).encode()).hexdigest()[:24]


HERE = Path(__file__).parent


@lru_cache(maxsize=8)
def _fallback_records(sources: tuple[str, ...], set_name: str) -> dict[str, imagelib.ImageRecord]:
    records = {}
    for source in sources:
        im = imagelib.sample(source) if ":" in source else imagelib.decode(HERE / source)
        name = Path(source.split(":")[-1]).stem
        records[f"{set_name}/{name}"] = imagelib.ImageRecord(f"{set_name}/{name}", set_name, name, source, im,
                                                             imagelib.digest(im))
    return records


def layer_problems(model, layers: list[str] | None, key: str, default: list[str], sizes: list[int],
                   what: str) -> list[str]:
    """Problems with a list of layers to match (`key` names it): empty, unknown (did you mean), or without a
    spatial map at the smallest synthesis size (`sizes`: the smallest image sides the network sees)."""
    if layers is not None and not layers:
        return [f"{key}: an empty list; name at least one layer"]
    wanted = list(layers) if layers is not None else list(default)
    if not wanted:
        return [f"{key}: {model.name} has no chosen layers; list the layers to match"]
    where = [f"{key}[{i}]" if layers is not None else key for i in range(len(wanted))]
    problems = [f"{where[i]}: {problem}" for i, layer in enumerate(wanted) if (problem := model.missing_module(layer))]
    if problems:
        return problems
    side = min(sizes)
    try:
        shapes = model.shapes_at(side)
    except Exception as exc:  # the forward fails: the input is smaller than the layers' downsampling
        return [f"size: {side} px is too small for {model.name} ({type(exc).__name__}); {what} needs a larger size"]
    for i, layer in enumerate(wanted):
        shape = shapes.get(layer)
        if shape is None or len(shape) != 3:
            got = shape if shape is not None else "no output"
            problems.append(f"{where[i]}: '{layer}' has no spatial extent (output {got}); {what} needs layers with "
                            "spatial maps, such as conv layers'")
        elif min(shape[1:]) < 1:
            problems.append(f"size: {side} px is too small for '{layer}' (output {shape}); {what} needs a larger "
                            "size")
    return problems


def centre(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The centre (at most) `height` × `width` of a (..., H, W) tensor."""
    top, left = max(0, (x.shape[-2] - height) // 2), max(0, (x.shape[-1] - width) // 2)
    return x[..., top:top + height, left:left + width]


def source_tensor(record, channels: int, side: int) -> torch.Tensor:
    """A photograph (its full-resolution 8-bit image) as (C, h, w) in [0, 1], shorter side `side`."""
    x = matching.to_tensor(record.image, channels)
    h, w = x.shape[-2:]
    k = side / min(h, w)
    return matching.resize(x[None], (max(side, round(h * k)), max(side, round(w * k))))[0]
