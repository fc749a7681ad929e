"""Unit (feature) visualization (Erhan et al. 2009; Olah, Mordvintsev & Schubert 2017): for chosen channels of a
layer, the image that maximizes the channel's mean activation, in Lucid's decorrelated Fourier parameterization with
random transforms. Deeper layers show larger, more object-like structures. With a data set the channels are those
of the top-patches view (so each unit page shows both), and each result is compared with the channel's average
over the data set. All channels of a layer are optimized as one batch. Models with small inputs (under 64 px a side)
get the image at 4× their size with the adjustments of `optvis.setup.fourier_setup`.

A channel silent on its starting image (its ReLU/ReLU6 closed everywhere) passes no gradient, and plain ascent
would leave its image at the start, though such channels fire on many data-set images. The ascent therefore runs with
Lucid's redirected rectifier gradient (`generator/optvis/redirect.py`) for the whole optimization: an element whose
gradient a rectifier blocks entirely gets the part that opens it, and an element whose unit fires follows the exact
gradient (unchanged results for those). Every channel's activation before and after is kept (`before`, `after`); a
channel whose activation still did not rise is marked on its tile ("did not move") and listed in `meta["unmet"]`.
How the defaults were chosen: site_src/tuning.md#unit-visualization."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from generator import figures, optvis
from generator.figures import to_picture
from generator.hooks import record_outputs
from generator.artifacts import Artifact, Job, PER_LAYER_WITH_DATASET
from generator.optvis.forward import LayerForward
from generator.techniques.synthesis.base import SynthesisTechnique, image_problems, problem_note
from generator.optvis.setup import FourierParams, lr_field, side_field, steps_field
from generator.layers import spread


def moved(before: float, after: float) -> bool:
    """Whether a channel's mean activation rose on its image (beyond float noise)."""
    return after - before > 1e-6 * max(1.0, abs(before))


# A result whose pixels vary by less than this (standard deviation, as a fraction of the batch's range) is a
# near-uniform image: a unit that prefers an overall brightness or colour to any pattern (Fashion-MNIST `features.6`
# channels 13, 21 and 38 reach 0.8 on a flat grey, above every test image's 0.5). The tile and table say so, since a
# reader would otherwise take it for a failed visualization.
UNIFORM_CONTRAST = 0.045


def image_contrast(images: np.ndarray) -> np.ndarray:
    """(N,): each image's pixel standard deviation as a fraction of the range of all N images' pixels."""
    spread = float(np.ptp(images)) or 1.0
    return images.reshape(len(images), -1).std(1) / spread


class UnitVisualizationParams(FourierParams):
    quick_caps = {"steps": 16, "per_layer": 4, "size": 64}

    channels: list[int] | None = Field(None, min_length=1, description="channels to draw in every layer, at least "
                                                                       "one (default: those of "
                                                                       "max_patches with a data set, else evenly "
                                                                       "spaced)")
    per_layer: int = Field(12, ge=1, le=256, description="channels per layer when 'channels' is not given")
    size: int | None = side_field(128)
    steps: int = steps_field(128)
    lr: float = lr_field(0.02)


class UnitVisualization(SynthesisTechnique):
    kind = "unit_visualization"
    title = "Unit visualization"
    summary = "for chosen channels of each layer, the image that maximizes the channel (Fourier parameterization)"
    version = 5
    Params = UnitVisualizationParams
    scope = PER_LAYER_WITH_DATASET
    arrays = {
        "images": "(channels, C, S, S) float32: the image that maximizes each chosen channel's mean activation, "
                  "pixels in [0, 1]",
        "channels": "(channels,) int64: the chosen channels, the rows of the other arrays",
        "before": "(channels,) float32: each channel's optimized value (its spatial mean before the rectifier when "
                  "the layer is a ReLU/ReLU6/Hardtanh/Hardswish, else its output) on its starting image",
        "after": "(channels,) float32: the same on its result (the figure's captions)",
        "after_output": "(channels,) float32: each channel's spatial mean output (after the rectifier) on its result",
        "contrast": "(channels,) float32: the result's pixel standard deviation as a fraction of the range of all the "
                    "layer's results; below 0.045 it is called near-uniform on its tile",
        "dataset_mean": "(channels,) float32: with a data set, each channel's spatial mean activation averaged over "
                        "the data set",
    }

    def channels(self, ctx, layer: str, params: UnitVisualizationParams, count: int) -> list[int]:
        if params.channels is not None:
            bad = [c for c in params.channels if not 0 <= c < count]
            if bad:
                raise ValueError(f"channel {bad[0]} does not exist: '{layer}' has {count} channels")
            return list(params.channels)
        if ctx.features is not None:
            return spread(np.asarray(ctx.features.layer(layer).maxima), params.per_layer)
        # Without a data set, spread over the channels that fire on the model's images: a silent unit has no
        # gradient to climb (through a ReLU), so its image would stay grey.
        if ctx.own_images:
            with torch.no_grad(), record_outputs(ctx.model.module, [layer]) as outs:
                ctx.model.module(ctx.batch(ctx.own_images))
            return spread(outs[layer].float().flatten(2).amax(2).cpu().numpy(), params.per_layer)
        return np.unique(np.linspace(0, count - 1, min(params.per_layer, count)).round().astype(int)).tolist()

    def one(self, ctx, job: Job) -> Artifact:
        p: UnitVisualizationParams = job.params
        model, layer = ctx.model, job.layer
        count = self.output_channels(ctx, layer)
        chosen = self.channels(ctx, layer, p, count)
        setup = p.fourier(model, len(chosen), ctx.seed, default_size=128)
        size = setup.size
        start = self.activation(ctx, layer, setup.model_view(setup.param().detach()), chosen)
        result = self.optimize(ctx, optvis.channel(layer, chosen), setup.param, **p.schedule(p.steps), lr=setup.lr,
                               transforms=setup.transforms, regularizers=setup.regularizers, redirect_steps=p.steps,
                               read="pre", stop=p.stop_rule())
        end = self.activation(ctx, layer, setup.model_view(torch.from_numpy(result.images)), chosen)
        pre = bool(result.read)  # the layer is a rectifier: its input was optimized, its output is reported too
        average = None
        if ctx.features is not None:  # the spatial mean per channel, averaged over the data set
            average = np.asarray(ctx.features.layer(layer).vectors)[:, chosen].mean(0).tolist()
        contrast = image_contrast(result.images)
        problems = image_problems(result.images)
        key = "pre" if pre else "output"
        units = [{"channel": int(c), "before": float(start[key][i]), "after": float(end[key][i]),
                  "after_output": float(end["output"][i]),
                  "moved": moved(float(start[key][i]), float(end[key][i])),
                  "silent": pre and float(end["output"][i]) <= 1e-6, "contrast": float(contrast[i]),
                  "uniform": bool(contrast[i] < UNIFORM_CONTRAST), "problem": problems[i],
                  "dataset_mean": None if average is None else float(average[i])} for i, c in enumerate(chosen)]
        meta = {"channels": [int(c) for c in chosen], "units": units, "steps": result.steps, "planned": p.steps,
                "stopped_early": result.stopped_early, "size": size, "seconds": result.seconds,
                "captions": result.captions,
                "optimized": "before the rectifier" if pre else "the layer's output",
                "metrics": {"channels": len(chosen), "mean_after": float(np.mean(end[key])),
                            "mean_after_output": float(np.mean(end["output"])), "steps": result.steps}}
        if setup.note is not None:  # only then, so that results of larger models stay as they were
            meta.update(model_size=model.input.size, note=setup.note)
        unmet = [f"channel {u['channel']} did not move: mean activation {u['before']:.3f} at the start, "
                 f"{u['after']:.3f} after {result.steps} steps" for u in units if not u["moved"]]
        unmet += [f"channel {u['channel']} stayed silent: its output is {u['after_output']:.3f} after {result.steps} "
                  f"steps (the value before the rectifier went from {u['before']:.3f} to {u['after']:.3f})"
                  for u in units if u["moved"] and u["silent"]]
        unmet += [f"channel {u['channel']}: the image is {u['problem']}" for u in units if u["problem"]]
        if unmet:
            meta["unmet"] = unmet
        arrays = {"images": result.images.astype(np.float32), "channels": np.asarray(chosen, dtype=np.int64),
                  "before": np.asarray(start[key], dtype=np.float32), "after": np.asarray(end[key], dtype=np.float32),
                  "after_output": np.asarray(end["output"], dtype=np.float32),
                  "contrast": contrast.astype(np.float32)}
        if average is not None:
            arrays["dataset_mean"] = np.asarray(average, dtype=np.float32)
        return Artifact(arrays, meta)

    @staticmethod
    def output_channels(ctx, layer: str) -> int:
        shape = ctx.model.probe().shapes[layer]
        if shape is None or len(shape) != 3:
            raise ValueError(f"'{layer}' has no channel maps (output {shape})")
        return int(shape[0])

    @staticmethod
    def activation(ctx, layer: str, images: torch.Tensor, chosen: list[int]) -> dict[str, np.ndarray]:
        """Each image's own channel, spatially averaged, on the untransformed image: {"output": the layer's output,
        "pre": the value before it when it is a rectifier (else the output again)}."""
        x = ctx.model.normalize(images.to(ctx.device).float())
        rows = torch.arange(len(chosen))
        values = {}
        for read in ("output", "pre"):
            with torch.no_grad(), LayerForward(ctx.model.module, [layer], read=read) as forward:
                maps = forward(x)[0][layer].float().mean((2, 3))
            values[read] = maps[rows, torch.tensor(chosen)].cpu().numpy()
        return values

    def draw(self, art, job, env, path: Path) -> dict[str, Path]:
        m = art.meta
        pictures = [to_picture(im) for im in art.main]
        cols = figures.grid_columns(len(pictures))  # 8 units: two rows of 4
        rows = [pictures[i:i + cols] for i in range(0, len(pictures), cols)]
        titles = [[f"channel {u['channel']}: {u['after']:.2f}"
                   + (f" ({u['after_output']:.2f} out)" if m.get("optimized") == "before the rectifier" else "")
                   + ("" if u.get("moved", True) else " — did not move")
                   + (" — silent" if u.get("moved", True) and u.get("silent") else "")
                   + (problem_note(u["problem"]) if u.get("problem") else
                      " — near-uniform" if u.get("uniform") else "")
                   for u in m["units"][i:i + cols]]
                  for i in range(0, len(pictures), cols)]
        figures.picture_grid(rows, titles, [""] * len(rows), [""] * cols, path)
        out = {"main": path}
        for u, picture in zip(m["units"], pictures):
            single = path.with_name(f"{path.stem}--unit-{u['channel']}.png")
            figures.save_picture(picture, single, min_side=160)
            out[f"unit-{u['channel']}"] = single
        return out
