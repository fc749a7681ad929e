"""Shared by the views of a whole data set in one layer's feature space (neighbours, embeddings): which layer."""
from __future__ import annotations

from pydantic import Field

from generator.errors import did_you_mean
from generator.techniques.dataset.feature_pass import penultimate
from generator.artifacts import Params
from generator.techniques.base import Technique


class FeatureSpaceParams(Params):
    layer: str | None = Field(None, description="the layer whose features are compared (default: the penultimate, "
                                                "i.e. the input of the last linear layer)")


class FeatureSpaceTechnique(Technique):
    scope = "layer"
    uses_dataset = True

    def layers(self, model, params: FeatureSpaceParams) -> list[str]:
        return [params.layer or penultimate(model)]

    def check(self, model, params: FeatureSpaceParams) -> list[str]:
        names = model.module_names()
        if params.layer is not None and params.layer not in names:
            return [f"layer: no module '{params.layer}' in {model.name}; {did_you_mean(params.layer, names, 'modules')}"]
        return []
