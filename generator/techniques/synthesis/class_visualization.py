"""Class visualization by gradient ascent: the image the network itself would draw for a class, three ways side by
side, because the lecture's point is the difference between them:

- plain (Simonyan, Vedaldi & Zisserman 2014): pixels, L2-regularized ascent on the unnormalized class score; it
  reaches any probability quickly and looks like high-frequency noise;
- regularized (Yosinski et al. 2015): pixels again, with jitter and their image-space regularizers (periodic blur,
  clipping pixels of small norm) that keep low frequencies;
- Fourier (Olah, Mordvintsev & Schubert 2017, Lucid): a decorrelated-colour Fourier parameterization, optimized
  through random pad / jitter / scale / rotate, which gives the most natural images.

All classes are optimized together, one batch per method, so the device is filled. The defaults are those tuned by
looking at EfficientNet-Lite0's results (`generator/optvis/render.py`, CLASS_, SIMONYAN_ and YOSINSKI_DEFAULTS).
Models with small inputs (under `SMALL_INPUT` = 64 px a side, e.g. the 28-px fashion-mnist-net) get the Fourier
image at 4× their size, shown to the model blurred and resized, with the adjustments of SMALL_INPUT_DEFAULTS
(`fourier_setup`); the pixel methods stay at the model's own size.

All three run with Lucid's redirected rectifier gradient (`generator/optvis/redirect.py`): where every ReLU of a layer
is closed for a class's image the ascent still gets the gradient that opens them (otherwise the exact gradient, so
results that moved are unchanged). A class whose probability did not rise under a method — and was not already
above `SATURATED` — is marked "did not rise" in its cell and listed in `meta["unmet"]`.
How the defaults were chosen: site_src/tuning.md#class-visualization."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from generator import figures, optvis
from generator.figures import to_picture
from generator.models import resolve_target, target_problems
from generator.artifacts import Artifact, Job, Reads, PER_MODEL
from generator.techniques.synthesis.base import SynthesisTechnique, image_problems, problem_note
from generator.optvis.setup import FourierParams, lr_field, side_field, steps_field
from generator.techniques.synthesis.classes import classes_field, max_classes_field, rose

METHODS = ("plain", "regularized", "fourier")
METHOD_TITLES = {"plain": "plain (Simonyan 2014)", "regularized": "regularized (Yosinski 2015)",
                 "fourier": "Fourier + transforms (Lucid)"}


class ClassVisualizationParams(FourierParams):
    quick_caps = {"steps": 24, "pixel_steps": 12, "size": 64, "max_classes": 2}

    classes: list[str | int] | None = classes_field("the top-1 classes of the model's images")
    max_classes: int = max_classes_field(4)
    size: int | None = side_field(224)
    steps: int = steps_field(256)
    lr: float = lr_field(0.01)
    pixel_steps: int = Field(128, ge=1, le=5000, description="steps of the plain and the regularized pixel ascent")
    plain_lr: float = Field(0.01, gt=0, le=1, description="Adam learning rate of the plain ascent")
    regularized_lr: float = Field(0.03, gt=0, le=1, description="Adam learning rate of the regularized ascent")
    l2: float = Field(1e-3, ge=0, description="L2 penalty weight of the plain ascent (Simonyan's λ)")
    snapshots: list[int] = Field([0, 16, 64, 128, 256], description="steps shown in the progress strip (steps "
                                                                   "outside 0..steps are left out; none left: no "
                                                                   "strip)")


class ClassVisualization(SynthesisTechnique):
    kind = "class_visualization"
    title = "Class visualization"
    summary = "images optimized to maximize a class score: plain, regularized and Fourier-parameterized side by side"
    version = 4
    Params = ClassVisualizationParams
    scope = PER_MODEL
    arrays = {
        "fourier": "(classes, C, S, S) float32: the Fourier-parameterized (Lucid-style) image of each class, pixels in "
                   "[0, 1] (S: the Fourier size, 4× the input for inputs under 64 px)",
        "plain": "(classes, C, s, s) float32: the plain gradient-ascent image (Simonyan 2014), pixels in [0, 1]",
        "regularized": "(classes, C, s, s) float32: the image with Yosinski's regularizers, pixels in [0, 1]",
        "progress": "(snapshots, classes, C, S, S) float32: the Fourier images at the steps in progress_steps",
        "classes": "(classes,) int64: the class index of each row",
        "progress_steps": "(snapshots,) int64: the optimization step of each progress snapshot",
        "*_before": "(classes,) float32: per method (plain, regularized, fourier), the class's softmax probability "
                    "on the starting image",
        "*_after": "(classes,) float32: per method, the class's softmax probability on the result (the figure's "
                   "captions)",
    }

    def reads(self, params: ClassVisualizationParams) -> Reads:
        return Reads(whole_set=params.classes is None)

    def check(self, model, params: ClassVisualizationParams) -> list[str]:
        return target_problems(model, params.classes, "classes")

    def targets(self, ctx, params: ClassVisualizationParams) -> list[int]:
        if params.classes is not None:
            return list(dict.fromkeys(int(resolve_target(ctx.model, c)) for c in params.classes))
        if not ctx.own_images:
            return list(range(min(params.max_classes, 4)))
        with torch.no_grad():
            top = ctx.model.logits(ctx.batch(ctx.own_images)).argmax(1).tolist()
        return list(dict.fromkeys(top))[: params.max_classes]

    def one(self, ctx, job: Job) -> Artifact:
        p: ClassVisualizationParams = job.params
        model = ctx.model
        classes = self.targets(ctx, p)
        labels = [model.label(c) for c in classes]
        b = len(classes)
        fourier = p.fourier(model, b, ctx.seed, default_size=224)
        fixed = not model.takes_other_sizes()
        # The pixel methods work in the model's own pixels: its size when it takes one size only or is small.
        size = model.input.size if fixed or fourier.fit is not None else fourier.size
        fit = [optvis.resize(size)] if fixed else []  # pad and scale change the size; such a model needs it back
        channels = model.channels
        objective = optvis.class_logit(classes, labels)
        runs = {
            "plain": (optvis.pixel_image(b, size, seed=ctx.seed, channels=channels),
                      dict(objective=objective + optvis.l2_penalty(p.l2), steps=p.pixel_steps, lr=p.plain_lr)),
            "regularized": (optvis.pixel_image(b, size, seed=ctx.seed, channels=channels),
                            dict(objective=objective, steps=p.pixel_steps, lr=p.regularized_lr,
                                 transforms=optvis.compose([optvis.jitter(max(1, round(size * 6 / 160)))] + fit),
                                 regularizers=optvis.Regularizers(decay=1e-4, blur_every=4, blur_sigma=1.0,
                                                                  norm_pct=20))),
            "fourier": (fourier.param,
                        dict(objective=objective, **p.schedule(p.steps), lr=fourier.lr,
                             transforms=fourier.transforms,
                             regularizers=fourier.regularizers,
                             snapshots=[s for s in p.snapshots if s <= p.steps])),
        }
        arrays, methods = {}, {}
        for name, (param, options) in runs.items():
            view = fourier.model_view if name == "fourier" else (lambda x: x)
            start = ctx.probabilities(view(param().detach()), classes)
            planned = options["steps"] + options.get("coarse_steps", 0)
            result = self.optimize(ctx, options.pop("objective"), param, **options, redirect_steps=planned,
                                   stop=p.stop_rule())
            end = ctx.probabilities(view(torch.from_numpy(result.images)), classes)
            arrays[name] = result.images.astype(np.float32)
            if name == "fourier":
                steps = sorted(result.snapshots)
                arrays["progress"] = (np.stack([result.snapshots[s] for s in steps]) if steps else  # no strip
                                      np.zeros((0, *result.images.shape))).astype(np.float32)
                progress_steps = steps
            methods[name] = {"steps": result.steps, "planned": result.planned, "seconds": result.seconds,
                             "before": [float(v) for v in start], "after": [float(v) for v in end],
                             "problems": image_problems(result.images)}
        meta = {"classes": [{"index": c, "label": l} for c, l in zip(classes, labels)], "methods": methods,
                "progress_steps": progress_steps, "size": size,
                "metrics": {"classes": len(classes),
                            "fourier_probability": float(np.mean(methods["fourier"]["after"])),
                            "plain_probability": float(np.mean(methods["plain"]["after"]))}}
        if fourier.note is not None:  # only then, so that results of larger models stay as they were
            meta.update(fourier_size=fourier.size, fourier_note=fourier.note)
        unmet = [f"'{label}', {METHOD_TITLES[name]}: p did not rise ({methods[name]['before'][i]:.3f} → "
                 f"{methods[name]['after'][i]:.3f} after {methods[name]['steps']} steps)"
                 for i, label in enumerate(labels) for name in METHODS
                 if not rose(methods[name]["before"][i], methods[name]["after"][i])]
        unmet += [f"'{label}', {METHOD_TITLES[name]}: the image is {methods[name]['problems'][i]}"
                  for i, label in enumerate(labels) for name in METHODS if methods[name]["problems"][i]]
        if unmet:
            meta["unmet"] = unmet
        numbers = {"classes": np.asarray(classes, dtype=np.int64),
                   "progress_steps": np.asarray(progress_steps, dtype=np.int64)}
        for name in METHODS:
            numbers[f"{name}_before"] = np.asarray(methods[name]["before"], dtype=np.float32)
            numbers[f"{name}_after"] = np.asarray(methods[name]["after"], dtype=np.float32)
        return Artifact({"fourier": arrays["fourier"], "plain": arrays["plain"],
                         "regularized": arrays["regularized"], "progress": arrays["progress"], **numbers}, meta)

    def draw(self, art, job, env, path: Path) -> dict[str, Path]:
        m = art.meta
        classes = [c["label"] for c in m["classes"]]
        grid = [[to_picture(art.arrays[name][i]) for name in METHODS] for i in range(len(classes))]
        cells = [[f"p = {m['methods'][name]['after'][i]:.2f} after {m['methods'][name]['steps']} steps"
                  + ("" if rose(m["methods"][name]["before"][i], m["methods"][name]["after"][i]) else
                     " — did not rise")
                  + problem_note(m["methods"][name].get("problems", [None] * len(classes))[i])
                  for name in METHODS] for i in range(len(classes))]
        figures.picture_grid(grid, cells, classes, [METHOD_TITLES[n] for n in METHODS], path)
        if not m["progress_steps"]:  # `snapshots` empty, or none within the steps: no strip
            return {"main": path}
        progress = path.with_name(f"{path.stem}--progress.png")
        strip = [[to_picture(im) for im in art.arrays["progress"][:, i]] for i in range(len(classes))]
        figures.picture_grid(strip, [[""] * len(m["progress_steps"]) for _ in classes], classes,
                             [f"step {s}" for s in m["progress_steps"]], progress)
        return {"main": path, "progress": progress}


