"""kind → Technique: the one list every stage enumerates. A new technique is added here once."""
from __future__ import annotations

from generator.techniques.activations import Activations
from generator.techniques.architecture import Architecture
from generator.techniques.base import Technique
from generator.techniques.filters import Filters
from generator.techniques.input import Input
from generator.techniques.predictions import Predictions

_ALL: list[type[Technique]] = [Input, Architecture, Predictions, Filters, Activations]
TECHNIQUES: dict[str, Technique] = {cls.kind: cls() for cls in _ALL}


def get(kind: str) -> Technique:
    return TECHNIQUES[kind]


def selectable() -> dict[str, Technique]:
    """Techniques a spec can name under `techniques:`."""
    return {k: t for k, t in TECHNIQUES.items() if not t.always}


def core() -> dict[str, Technique]:
    """Techniques every model runs (the preprocessed inputs, the architecture table)."""
    return {k: t for k, t in TECHNIQUES.items() if t.always}
