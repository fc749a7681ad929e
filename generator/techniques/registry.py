"""kind → Technique: the one list every stage enumerates. A new technique is added here once."""
from __future__ import annotations

from generator.techniques.activations import Activations
from generator.techniques.architecture import Architecture
from generator.techniques.base import Technique
from generator.techniques.filters import Filters
from generator.techniques.input import Input
from generator.techniques.predictions import Predictions

from generator.techniques.guided_backprop import GuidedBackprop
from generator.techniques.integrated_gradients import IntegratedGradients
from generator.techniques.saliency import Saliency
from generator.techniques.smoothgrad import SmoothGrad
from generator.techniques.occlusion import Occlusion
from generator.techniques.gradcam import GradCAM, GuidedGradCAM
from generator.techniques.saliency_grabcut import SaliencyGrabCut

from generator.techniques.embedding import Embedding
from generator.techniques.max_patches import MaxPatches
from generator.techniques.nearest_neighbors import NearestNeighbors

from generator.techniques.class_visualization import ClassVisualization
from generator.techniques.deepdream import DeepDream
from generator.techniques.unit_visualization import UnitVisualization
from generator.techniques.multifaceted import Multifaceted
from generator.techniques.fooling import Fooling
from generator.techniques.feature_inversion import FeatureInversion
from generator.techniques.texture_synthesis_nonparametric import TextureSynthesisNonparametric
from generator.techniques.texture_synthesis import TextureSynthesis
from generator.techniques.style_transfer import StyleTransfer

_ALL: list[type[Technique]] = [Input, Architecture, Predictions, Filters, Activations,
                               Saliency, GuidedBackprop, IntegratedGradients, SmoothGrad,
                               Occlusion, GradCAM, GuidedGradCAM, SaliencyGrabCut,
                               NearestNeighbors, Embedding, MaxPatches,
                               ClassVisualization, UnitVisualization, Fooling, DeepDream,
                               Multifaceted, FeatureInversion, TextureSynthesisNonparametric,
                               TextureSynthesis, StyleTransfer]
TECHNIQUES: dict[str, Technique] = {cls.kind: cls() for cls in _ALL}


def get(kind: str) -> Technique:
    return TECHNIQUES[kind]


def selectable() -> dict[str, Technique]:
    """Techniques a spec can name under `techniques:`."""
    return {k: t for k, t in TECHNIQUES.items() if not t.always}


def core() -> dict[str, Technique]:
    """Techniques every model runs (the preprocessed inputs, the architecture table)."""
    return {k: t for k, t in TECHNIQUES.items() if t.always}
