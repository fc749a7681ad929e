"""The Technique protocol: what every technique module provides, so spec, planner, pages and tests enumerate one list."""
from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from generator.artifacts import Artifact, Job, Params, Scope

if TYPE_CHECKING:
    from generator.context import DrawContext, RunContext
    from generator.models import LoadedModel


class Technique:
    kind: ClassVar[str]
    title: ClassVar[str]
    summary: ClassVar[str]
    version: ClassVar[int] = 1
    Params: ClassVar[type[Params]] = Params
    scope: ClassVar[Scope]
    always: ClassVar[bool] = False  # core artifacts every model gets, not chosen in the spec
    uses_dataset: ClassVar[bool] = False  # looks across the model's data set (its features are in ctx.features)
    follows_dataset: ClassVar[bool] = False  # runs without one, but uses the data set when the model has one
    # What each array of an artifact means (name → meaning, with shape and units), published in manifest.json
    # beside the array. A key with `*` is a pattern (fnmatch) for names made at run time, e.g. "unit-*".
    arrays: ClassVar[dict[str, str]] = {}

    @classmethod
    def meaning(cls, name: str) -> str | None:
        """What the array `name` means: its exact entry in `arrays`, else the first pattern it matches."""
        if name in cls.arrays:
            return cls.arrays[name]
        return next((text for key, text in cls.arrays.items() if "*" in key and fnmatchcase(name, key)), None)

    def uses_image_set(self, params: Params) -> bool:
        """True when one image's result also depends on the other images of its set (e.g. their mean colour):
        the cache key then covers the whole set."""
        return False

    def reads_model_layers(self, params: Params) -> bool:
        """True when a job's result depends on the model's chosen layers without being expanded over them (an
        image's inversion at each of them): the cache key then covers the list."""
        return False

    def image_sets(self, params: Params) -> list[str] | None:
        """Image sets (names under the spec's `images:`) whose images this technique's jobs expand over instead of
        the model's own sets, e.g. the textures of a texture synthesis; None: the model's sets."""
        return None

    def reference_sets(self, params: Params) -> list[str]:
        """Further image sets that every job reads (e.g. the style images of a style transfer): their records are in
        the contexts' `images` and their contents join every job's cache key."""
        return []

    def inapplicable(self, model: "LoadedModel", params: Params) -> str | None:
        """Why this technique cannot say anything about this model, in one sentence for its page (it then runs no
        job and its page says so), or None when it applies."""
        if self.uses_dataset and model.dataset is None:
            return ("it looks across a data set, and this model names none: give it a dataset: key in the spec "
                    "(a folder of images, a torchvision data set on local files, or crops of sample photos)")
        return None

    def layers(self, model: "LoadedModel", params: Params) -> list[str]:
        """Layers this technique's jobs expand over (layer scopes only)."""
        return list(model.layers)

    def check(self, model: "LoadedModel", params: Params) -> list[str]:
        """Problems with params that need the model to see (unknown layers, classes); messages without key path."""
        return []

    def run(self, ctx: "RunContext", jobs: list[Job]) -> list[Artifact]:
        """Compute the artifacts of several jobs that differ only in image (or layer) — batch them."""
        raise NotImplementedError

    def draw(self, art: Artifact, job: Job, env: "DrawContext", path: Path) -> bool | dict[str, Path]:
        """Write the figure of one artifact to `path` (PNG); return False when it has none. A technique with several
        figures per artifact writes them beside `path` and returns {name: path}, the main one first."""
        return False
