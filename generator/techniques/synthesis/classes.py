"""What the class-score techniques (class visualization, multifaceted) share: which classes they show, and the
judgement of a result, whether the class's probability rose."""
from __future__ import annotations

from typing import Any

from pydantic import Field

SATURATED = 0.99  # a class probability at or above this on the start has nothing left to rise


def rose(before: float, after: float) -> bool:
    """Whether a class probability rose (or was already saturated and stayed so)."""
    return after > before or min(before, after) >= SATURATED


def classes_field(default: str) -> Any:
    """The `classes` parameter: class labels or indices, at least one; `default` says which when it is not given."""
    return Field(None, min_length=1, description=f"classes to show, at least one (labels or indices; default: {default})")


def max_classes_field(default: int) -> Any:
    """The `max_classes` parameter: how many of the default classes are shown."""
    return Field(default, ge=1, le=32, description="how many classes are shown when 'classes' is not given")
