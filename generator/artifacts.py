"""What every stage passes on: a job (one unit of cached work), its parameters and its artifact (the numbers).
The lowest layer of the package: the cache, the planner, the techniques and the pages all read these."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

def file_name(text: str, empty: str = "image") -> str:
    """A layer or image name as a file name the pages can link to: runs of other characters become "--"."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "--", text) or empty


Expansion = Literal["model", "layer", "image", "layer×image"]


@dataclass(frozen=True)
class Scope:
    """How a technique's jobs expand and what they read of the model's data set: declared once per technique. The
    planner derives every job's cache key from it and from `Reads`, never from a list kept by hand."""

    over: Expansion  # one job per model, per chosen layer, per image, or per layer and image
    dataset: Literal["none", "needs", "follows"] = "none"  # needs: looks across it; follows: uses it when there
    core: bool = False  # every model runs it (the inputs, the architecture table); never chosen in the spec


def drawing_field(default: Any, **constraints: Any) -> Any:
    """A parameter that changes only how a result is drawn (how many channels a figure shows): left out of the cache
    key, so changing it redraws the figure from the cached numbers; its JSON Schema says `drawing_only`."""
    return Field(default, json_schema_extra={"drawing_only": True}, **constraints)


# The scopes techniques declare, by name.
PER_IMAGE = Scope("image")
CORE_PER_IMAGE = Scope("image", core=True)
PER_LAYER = Scope("layer")
PER_LAYER_WITH_DATASET = Scope("layer", dataset="follows")
PER_LAYER_ACROSS_DATASET = Scope("layer", dataset="needs")
PER_LAYER_AND_IMAGE = Scope("layer×image")
PER_MODEL = Scope("model")
CORE_PER_MODEL = Scope("model", core=True)
PER_MODEL_ACROSS_DATASET = Scope("model", dataset="needs")


@dataclass(frozen=True)
class Reads:
    """What a job reads besides its model, technique, parameters, layer and image, as its parameters decide; each
    entry joins the cache key."""

    image_sets: tuple[str, ...] | None = None  # sets its jobs expand over instead of the model's own (textures)
    references: tuple[str, ...] = ()  # sets every job reads whole (style images): their contents join the key
    whole_set: bool = False  # one image's result depends on the other images of its set (their mean colour)
    model_layers: bool = False  # depends on the model's chosen layers without expanding over them


class Params(BaseModel):
    """Base of every technique's parameters: unknown keys are errors; `quick()` shrinks work for previews."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def drawing_only(cls) -> set[str]:
        """The fields that change only how a result is drawn, not what is computed (declared with `drawing_field`)."""
        return {name for name, f in cls.model_fields.items()
                if isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("drawing_only")}

    def cache_fields(self) -> dict:
        """The parameters a result depends on: every field but the drawing-only ones (left out of the cache key)."""
        return self.model_dump(mode="json", exclude=self.drawing_only())

    # What `quick()` (previews and tests: `convscope build --quick`) caps, by field: a number caps the value (a
    # None takes the cap), any other value replaces it. A class adds to its bases' caps.
    quick_caps: ClassVar[dict[str, Any]] = {}

    def quick(self) -> "Params":
        update = {}
        for cls in reversed(type(self).__mro__):
            for name, cap in vars(cls).get("quick_caps", {}).items():
                value = getattr(self, name)
                numeric = isinstance(cap, (int, float)) and not isinstance(cap, bool)
                update[name] = (cap if value is None else min(value, cap)) if numeric else cap
        return self.model_copy(update=update) if update else self


@dataclass
class Job:
    """One unit of cached work: a technique applied to one model (and one layer and/or one image)."""

    model: str
    kind: str
    params: Params
    layer: str | None = None
    image: str | None = None
    key: str = ""

    @property
    def label(self) -> str:
        parts = [self.model, self.kind] + [p for p in (self.layer, self.image) if p]
        return " · ".join(parts)


@dataclass
class Artifact:
    """What a technique computes: named arrays (the first is the main one; all are published in the artifact's data
    file, each described by its technique's `arrays`) and JSON-able metadata. `meta['metrics']` holds the numbers
    its page reports, `meta['target']` what it explains."""

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def main(self) -> np.ndarray:
        return next(iter(self.arrays.values()))

    @property
    def metrics(self) -> dict[str, Any]:
        return self.meta.get("metrics", {})
