"""kind → Technique: the one list every stage enumerates. A new technique is added here once."""
from __future__ import annotations

from generator.techniques.activations import Activations
from generator.techniques.architecture import Architecture
from generator.techniques.base import Technique
from generator.techniques.filters import Filters
from generator.techniques.input import Input
from generator.techniques.predictions import Predictions

from generator.techniques.attribution.guided_backprop import GuidedBackprop
from generator.techniques.attribution.integrated_gradients import IntegratedGradients
from generator.techniques.attribution.saliency import Saliency
from generator.techniques.attribution.smoothgrad import SmoothGrad
from generator.techniques.attribution.occlusion import Occlusion
from generator.techniques.attribution.gradcam import GradCAM, GuidedGradCAM
from generator.techniques.attribution.saliency_grabcut import SaliencyGrabCut

from generator.techniques.dataset.embedding import Embedding
from generator.techniques.dataset.max_patches import MaxPatches
from generator.techniques.dataset.nearest_neighbors import NearestNeighbors

from generator.techniques.synthesis.class_visualization import ClassVisualization
from generator.techniques.synthesis.deepdream import DeepDream
from generator.techniques.synthesis.unit_visualization import UnitVisualization
from generator.techniques.synthesis.multifaceted import Multifaceted
from generator.techniques.synthesis.fooling import Fooling
from generator.techniques.synthesis.feature_inversion import FeatureInversion
from generator.techniques.synthesis.texture_synthesis_nonparametric import TextureSynthesisNonparametric
from generator.techniques.synthesis.texture_synthesis import TextureSynthesis
from generator.techniques.synthesis.style_transfer import StyleTransfer

_ALL: list[type[Technique]] = [Input, Architecture, Predictions, Filters, Activations,
                               Saliency, GuidedBackprop, IntegratedGradients, SmoothGrad,
                               Occlusion, GradCAM, GuidedGradCAM, SaliencyGrabCut,
                               NearestNeighbors, Embedding, MaxPatches,
                               ClassVisualization, UnitVisualization, Fooling, DeepDream,
                               Multifaceted, FeatureInversion, TextureSynthesisNonparametric,
                               TextureSynthesis, StyleTransfer]
TECHNIQUES: dict[str, Technique] = {cls.kind: cls() for cls in _ALL}

# The families of the site's overview (site_src/index.md), in its order: the model page and the sidebar group a
# model's techniques under these titles, in this order, each family's techniques in the spec's order.
FAMILIES: dict[str, list[str]] = {
    "What it sees": ["input", "architecture", "predictions", "filters", "activations", "max_patches"],
    "How it arranges a data set": ["nearest_neighbors", "embedding"],
    "Why it decides": ["saliency", "guided_backprop", "integrated_gradients", "smoothgrad", "occlusion", "gradcam",
                       "guided_gradcam", "saliency_grabcut"],
    "What it would draw": ["class_visualization", "unit_visualization", "multifaceted", "fooling", "deepdream"],
    "What it remembers, and style": ["feature_inversion", "texture_synthesis_nonparametric", "texture_synthesis",
                                     "style_transfer"],
}
OTHER_FAMILY = "Other techniques"


def family(kind: str) -> str:
    """The overview family a technique belongs to (OTHER_FAMILY for one not listed)."""
    return next((title for title, kinds in FAMILIES.items() if kind in kinds), OTHER_FAMILY)


def by_family(kinds: list[str]) -> list[tuple[str, list[str]]]:
    """kinds grouped by family: families in the overview's order, kinds in their given order; empty families left out."""
    order = list(FAMILIES) + [OTHER_FAMILY]
    groups: dict[str, list[str]] = {}
    for kind in kinds:
        groups.setdefault(family(kind), []).append(kind)
    return [(title, groups[title]) for title in order if title in groups]


def get(kind: str) -> Technique:
    return TECHNIQUES[kind]


def selectable() -> dict[str, Technique]:
    """Techniques a spec can name under `techniques:`."""
    return {k: t for k, t in TECHNIQUES.items() if not t.always}


def core() -> dict[str, Technique]:
    """Techniques every model runs (the preprocessed inputs, the architecture table)."""
    return {k: t for k, t in TECHNIQUES.items() if t.always}
