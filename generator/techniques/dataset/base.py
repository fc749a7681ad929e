"""Shared by the views of a whole data set in one layer's feature space (neighbours, embeddings): which layer."""
from __future__ import annotations

from pydantic import Field

from generator.techniques.dataset.feature_pass import penultimate
from generator.artifacts import Params, PER_LAYER_ACROSS_DATASET
from generator.techniques.base import Technique


class FeatureSpaceParams(Params):
    layer: str | None = Field(None, description="the layer whose features are compared (default: the penultimate, "
                                                "i.e. the input of the last linear layer)")


class FeatureSpaceTechnique(Technique):
    scope = PER_LAYER_ACROSS_DATASET

    def layers(self, model, params: FeatureSpaceParams) -> list[str]:
        return [params.layer or penultimate(model)]

    def check(self, model, params: FeatureSpaceParams) -> list[str]:
        problem = model.missing_module(params.layer) if params.layer is not None else None
        return [f"layer: {problem}"] if problem else []
