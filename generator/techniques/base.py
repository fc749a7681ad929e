"""The Technique protocol: what every technique module provides, so spec, planner, pages and tests enumerate one list."""
from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from generator.artifacts import Artifact, Job, Params, Reads, Scope

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
    # What each array of an artifact means (name → meaning, with shape and units), published in manifest.json
    # beside the array. A key with `*` is a pattern (fnmatch) for names made at run time, e.g. "unit-*".
    arrays: ClassVar[dict[str, str]] = {}

    @classmethod
    def meaning(cls, name: str) -> str | None:
        """What the array `name` means: its exact entry in `arrays`, else the first pattern it matches."""
        if name in cls.arrays:
            return cls.arrays[name]
        return next((text for key, text in cls.arrays.items() if "*" in key and fnmatchcase(name, key)), None)

    @property
    def always(self) -> bool:
        return self.scope.core

    @property
    def uses_dataset(self) -> bool:
        """Looks across the model's data set (its features are in ctx.features)."""
        return self.scope.dataset == "needs"

    def reads(self, params: Params) -> Reads:
        """What a job reads that its parameters decide (image sets, the model's chosen layers): see `Reads`."""
        return Reads()

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
        """Compute the artifacts of several jobs that differ only in image (or layer): batch them where the device
        gains from it; by default one job at a time."""
        return [self.one(ctx, job) for job in jobs]

    def one(self, ctx: "RunContext", job: Job) -> Artifact:
        """The artifact of one job (for techniques that gain nothing from batching)."""
        raise NotImplementedError

    def draw(self, art: Artifact, job: Job, env: "DrawContext", path: Path) -> bool | dict[str, Path]:
        """Write the figure of one artifact to `path` (PNG); return False when it has none. A technique with several
        figures per artifact writes them beside `path` and returns {name: path}, the main one first."""
        return False
