"""The model's layer table: type, output shape, parameters and receptive field of each module."""
from __future__ import annotations

import numpy as np

from generator.layers import layer_table
from generator.artifacts import Artifact, Job, Params, CORE_PER_MODEL
from generator.techniques.base import Technique


class ArchitectureParams(Params):
    depth: int = 2  # module nesting shown in the table (chosen layers are always added)


class Architecture(Technique):
    kind = "architecture"
    title = "Architecture"
    summary = "layer table with output shapes, parameters and receptive fields"
    version = 3
    Params = ArchitectureParams
    scope = CORE_PER_MODEL
    arrays = {
        "receptive_fields": "(rows, 3) float64: receptive field size, stride and offset (centre of unit (0, 0)) in "
                            "input pixels of each row of the layer table, in `names` order; NaN where unknown",
        "names": "(rows,) str: the module of each row of the layer table",
        "parameters": "(rows,) int64: parameters of each row's module (its submodules included)",
    }

    def run(self, ctx, jobs: list[Job]) -> list[Artifact]:
        model = ctx.model
        rows = layer_table(model.module, model.input_shape, ctx.device,
                           depth=jobs[0].params.depth, extra=model.layers)
        # The receptive-field table as numbers: size, stride, offset per row (NaN where unknown).
        rf = np.array([[r.rf.size, r.rf.stride, r.rf.offset] if r.rf else [np.nan] * 3 for r in rows], dtype=np.float64)
        meta = {
            "rows": [r.as_row() for r in rows],
            "metrics": {"parameters": model.num_params, "modules": len(model.module_names())},
        }
        names = np.array([r.name for r in rows], dtype=str)
        params = np.array([r.params for r in rows], dtype=np.int64)
        return [Artifact({"receptive_fields": rf, "names": names, "parameters": params}, meta) for _ in jobs]
