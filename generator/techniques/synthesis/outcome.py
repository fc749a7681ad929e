"""Judgements of a synthesis result shared by the class-score techniques (class visualization, multifaceted):
whether the class's probability rose."""
from __future__ import annotations

SATURATED = 0.99  # a class probability at or above this on the start has nothing left to rise


def rose(before: float, after: float) -> bool:
    """Whether a class probability rose (or was already saturated and stayed so)."""
    return after > before or min(before, after) >= SATURATED
