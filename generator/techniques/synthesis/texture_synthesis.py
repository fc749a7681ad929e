"""Texture synthesis by matching Gram matrices (Gatys, Ecker & Bethge 2015, "Texture Synthesis Using Convolutional
Neural Networks"): an image optimized from noise until the correlations between feature channels (Gram matrices)
at several layers equal those of a texture photograph. Which statistics pin down a texture is the question, so the
page shows, per texture:

- the model's own features, with increasing sets of its layers — the first only, the first two, … all of them
  (the lecture's figure, Gatys et al. Fig. 2): shallow layers give colour and small grain, deeper ones larger
  structure, *if* the model's features carry it;
- the same synthesis with a single layer of random multi-scale filters (Ustyuzhaninov et al. 2017,
  `generator/optvis/random_filters.py`): no training at all, and the best texture this product makes.

The Gram loss of a result falls by construction, and noise can match a network's statistics too (a 99% lower Gram
loss can still be coloured noise). So each result is also measured by a network that did not make it — the
model's results by the random filters, the random filters' result by the model (all its chosen layers) — and by
the distance of its colour histogram to the source's, each next to the same number for the noise image the
synthesis started from. A result that is no closer to the source than that noise, by the other network, is a
texture only in the eyes of the network that made it.

Textures: the image sets named under `images`, or, when none are, scikit-image's brick and grass
(`SHIPPED_TEXTURES`) — not the model's own images, which are photographs of things rather than of materials.

Both syntheses use `generator.optvis.matching` (L-BFGS on the pixels, coarse to fine). One job per model, over all
its textures (the fallback textures are no image set of the spec, so the planner could not expand over them); each
texture's runs are independent optimizations, so a texture's results are the same as when it had a job of its own.
The side is the model's input size, at most 128 px, unless `size` says otherwise.
How the defaults were chosen: site_src/tuning.md#texture-synthesis-gram-matrices."""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from pydantic import Field

from generator import figures
from generator.figures import to_picture
from generator.artifacts import Artifact, Job, Reads, PER_MODEL, file_name
from generator.techniques.synthesis.base import SynthesisTechnique
from generator.optvis import matching
from generator.techniques.synthesis.gram import (NOISE_SD, PLAIN, SMOOTHED, STEPS, Fallback, GramParams, centre,
                                                 image_set_problems, image_sets_field, layer_problems, source_tensor)

# The model's statistics "pin down" a texture when its result, measured by the random filters, is at most this
# fraction of the reference noise's distance from the source. On EfficientNet-Lite0 (brick, grass, gravel at
# 128 px) the random filters' results, measured by the model, are at 0.2–0.5 of the noise's distance.
PINNED = 0.5

# The textures synthesized when a spec names none: photographs of materials that ship with scikit-image.
SHIPPED_TEXTURES = Fallback("skimage-textures", ("skimage:brick", "skimage:grass"))
DEFAULT_TEXTURES = "scikit-image's brick and grass"


class TextureSynthesisParams(GramParams):
    quick_caps = {"size": 64, "source_size": 96, "steps": 10, "coarse_steps": 0}
    largest_default: ClassVar[int] = 128
    source_field: ClassVar[str] = "source_size"
    source_ratio: ClassVar[float] = 2.0  # 256 px of photograph for a 128-px texture

    images: list[str] | None = image_sets_field("the texture photographs", DEFAULT_TEXTURES)
    size: int | None = Field(None, ge=16, le=1024, description="side of the synthesized square, in pixels (default: "
                                                               "the model's input size, at most 128 and at least "
                                                               "what the random filters span at the coarse scale)")
    source_size: int | None = Field(None, ge=16, le=2048, description="shorter side the texture photograph is "
                                                                      "resized to before its statistics are taken "
                                                                      "(larger: bigger texture elements in the "
                                                                      "result; default: 2 × size)")
    layers: list[str] | None = Field(None, description="the model's layers whose Gram matrices are matched, "
                                                       "shallow to deep; results for the first, the first two, … "
                                                       "(default: the model's chosen layers)")
    steps: int = Field(80, ge=1, le=5000, description=STEPS)

    def cache_fields(self) -> dict:
        fields = super().cache_fields()
        if self.images is None:  # the fallback textures' pixels join the key, as a named set's would
            fields["shipped_textures"] = SHIPPED_TEXTURES.digest()
        return fields


def model_layers(model, params) -> list[str]:
    return list(params.layers) if params.layers is not None else list(model.layers)


class TextureSynthesis(SynthesisTechnique):
    kind = "texture_synthesis"
    title = "Texture synthesis (Gram matrices)"
    summary = ("textures made from noise by matching Gram matrices: the model's layers, deeper and deeper, next to "
               "random multi-scale filters")
    version = 4
    Params = TextureSynthesisParams
    scope = PER_MODEL
    arrays = {
        "results": "(runs, C, size, size) float32: the synthesized textures, pixels in [0, 1], texture after "
                   "texture (`texture_of`); each texture's runs: the model's first 1, 2, … layers (plain Gram), "
                   "then (smoothing) all of its layers with activation smoothing (SWAG), then (random_filters) the "
                   "random multi-scale filter network",
        "texture_of": "(runs,) int64: the texture (row of `source`, `start` and `noise`) each run synthesized",
        "start": "(textures, C, size, size) float32: the noise each texture's runs start from",
        "noise": "(textures, C, size, size) float32: the reference noise the histogram and Gram distances are "
                 "compared with",
        "source": "(textures, C, size, size) float32: the centre of each texture photograph at the results' pixel "
                  "scale, pixels in [0, 1]",
        "gram_start": "(runs,) float64: each run's Gram-matrix loss at the start",
        "gram_end": "(runs,) float64: its Gram-matrix loss at the end (the figure's 'Gram loss −x %' is "
                    "1 − end / start)",
        "histogram_distance": "(runs,) float64: total-variation distance between each result's joint colour "
                              "histogram and the source's (0: the same colours, 1: none in common)",
    }

    def reads(self, params: TextureSynthesisParams) -> Reads:
        # One job over all the textures: the named sets are read whole, their contents in the key.
        return Reads(references=() if params.images is None else tuple(params.images),
                     model_layers=params.layers is None)

    def check(self, model, params: TextureSynthesisParams) -> list[str]:
        p = params.resolved(model)
        return (image_set_problems(p.images, DEFAULT_TEXTURES)
                + layer_problems(model, p.layers, "layers", model.layers, p.seen_sides(model), "texture synthesis")
                + p.random_size_problems())

    def textures(self, ctx, params: TextureSynthesisParams) -> dict:
        """id → record of the texture photographs: the named sets', or scikit-image's brick and grass."""
        if params.images is None:
            return SHIPPED_TEXTURES.records()
        records = {i: ctx.images[i] for name in params.images for i in ctx.set_ids(name)}
        if not records:
            raise ValueError(f"images: the image sets {params.images} hold no images")
        return records

    def one(self, ctx, job: Job) -> Artifact:
        p: TextureSynthesisParams = job.params.resolved(ctx.model)
        records = self.textures(ctx, p)
        done = [self.texture(ctx, p, record) for record in records.values()]
        runs = [run for d in done for run in d["runs"]]
        textures = [{"id": tid, "name": r.name, "source": r.source, "runs": d["runs"], "metrics": d["metrics"]}
                    for (tid, r), d in zip(records.items(), done)]
        pinned = [t["metrics"]["pinned"] for t in textures if "pinned" in t["metrics"]]
        metrics = {"textures": len(textures), "seconds": sum(r["seconds"] for r in runs)}
        if pinned:
            metrics["pinned"] = sum(pinned)  # textures the model's statistics pin down
        meta = {"textures": textures, "metrics": metrics, "size": p.size, "source_size": p.source_size,
                "scales": list(p.scales), "texture_sets": list(p.images) if p.images is not None else None}
        return Artifact({"results": np.concatenate([d["images"] for d in done]).astype(np.float32),
                         "texture_of": np.array([k for k, d in enumerate(done) for _ in d["runs"]], dtype=np.int64),
                         "start": np.stack([d["start"] for d in done]).astype(np.float32),
                         "noise": np.stack([d["noise"] for d in done]).astype(np.float32),
                         "source": np.stack([d["shown"] for d in done]).astype(np.float32),
                         "gram_start": np.array([r["gram_start"] for r in runs], dtype=np.float64),
                         "gram_end": np.array([r["gram_end"] for r in runs], dtype=np.float64),
                         "histogram_distance": np.array([r["hist_result"] for r in runs], dtype=np.float64)}, meta)

    def texture(self, ctx, p: TextureSynthesisParams, record) -> dict:
        """One texture's runs (the model's layer sets, smoothed, the random filters), each measured by the other
        network: {images, runs, metrics, start, noise, shown}."""
        model, device = ctx.model, ctx.device
        channels = model.channels
        layers = model_layers(model, p)
        source = source_tensor(record, channels, p.source_size).to(device)
        start = matching.noise_start(1, channels, p.size, p.size, ctx.seed, mean=source.mean((1, 2)).cpu(),
                                     sd=NOISE_SD).to(device)
        noise = matching.reference_noise(source, p.size, p.size, ctx.seed)[None]
        options = dict(steps=p.steps, coarse_steps=p.coarse_steps, scales=p.scales, optimizer=p.optimizer, lr=p.lr)
        own = matching.model_network(model)
        nets = [(own, layers[:i + 1], "model") for i in range(len(layers))]
        if p.smoothing:
            nets.append((own, layers, "smoothed"))
        if p.random_filters:
            rnd = p.random_network(channels, device)
            nets.append((rnd, rnd.module.layers, "random"))
        images, runs = [], []
        for net, used, kind in nets:  # one optimization each: L-BFGS on a batch would couple them
            smooth = kind == "smoothed"
            r = matching.synthesize([matching.GramTerm(net, used, [source], p.source_size, smooth=smooth)],
                                    start.clone(), **options)
            images.append(r.images[0])
            start_loss, end_loss = float(r.start["style"][0]), float(r.end["style"][0])
            runs.append({"network": kind, "label": net.label, "layers": list(used), "smoothing": smooth,
                         "gram": SMOOTHED if smooth else PLAIN, "gram_start": start_loss,
                         "gram_end": end_loss, "fall": 1 - end_loss / start_loss if start_loss > 0 else None,
                         "seconds": r.seconds})
        src_np = source.cpu().numpy()
        noise_hist = matching.histogram_distance(noise[0].cpu().numpy(), src_np)
        for run, image in zip(runs, images):
            run["hist_result"] = matching.histogram_distance(image, src_np)
            run["hist_noise"] = noise_hist
        n = len(layers)
        metrics = {"gram_fall_model": runs[n - 1]["fall"], "hist_model": runs[n - 1]["hist_result"],
                   "hist_noise": noise_hist}
        m = n + 1 if p.smoothing else n  # the model's runs: its layer sets, then (smoothing) all layers smoothed
        if p.random_filters:
            # Each network measures the other's results, and the reference noise.
            made = torch.from_numpy(np.stack(images[:m])).to(device)
            by_random = matching.gram_distance(rnd, rnd.module.layers, torch.cat([made, noise]), [source] * (m + 1),
                                               p.source_size)
            theirs = torch.from_numpy(images[m])[None].to(device)
            by_model = matching.gram_distance(own, layers, torch.cat([theirs, noise]), [source] * 2, p.source_size)
            for i in range(m):
                runs[i].update(other=rnd.label, other_result=float(by_random[i]), other_noise=float(by_random[m]))
            runs[m].update(other=model.name, other_result=float(by_model[0]), other_noise=float(by_model[1]))
            ratio = lambda a, b: float(a / b) if b > 0 else None  # noqa: E731
            metrics.update(gram_fall_random=runs[m]["fall"], hist_random=runs[m]["hist_result"],
                           model_by_random=ratio(by_random[n - 1], by_random[m]),
                           random_by_model=ratio(by_model[0], by_model[1]))
            if p.smoothing:
                metrics.update(smoothed_by_random=ratio(by_random[n], by_random[m]),
                               gram_fall_smoothed=runs[n]["fall"], hist_smoothed=runs[n]["hist_result"])
            # The verdict: the model's plain layer set whose result the random filters find closest to the photograph.
            ratios = [ratio(by_random[i], by_random[m]) for i in range(n)]
            best = min(range(n), key=lambda i: ratios[i] if ratios[i] is not None else float("inf"))
            metrics.update(best_set=best + 1, best_layer=layers[best], best_ratio=ratios[best],
                           pinned=ratios[best] is not None and ratios[best] <= PINNED)
        # The source as shown: its centre, at the scale its statistics were taken (the results' pixel scale).
        shown = centre(source, p.size, p.size).cpu().numpy()
        return {"images": np.stack(images), "runs": runs, "metrics": metrics, "start": start[0].cpu().numpy(),
                "noise": noise[0].cpu().numpy(), "shown": shown}

    def draw(self, art, job, env, path: Path) -> dict[str, Path]:
        """A figure per texture, named after it (`<set>--<name>.png`) and keyed by its id; the first is the main one."""
        out = {}
        for k, texture in enumerate(art.meta["textures"]):
            rows = np.flatnonzero(art.arrays["texture_of"] == k)
            pictures = [to_picture(art.arrays["source"][k])] + [to_picture(art.arrays["results"][i]) for i in rows]
            titles = [f"source ({art.meta['source_size']} px shorter side)"]
            for run in texture["runs"]:
                fall = f"Gram loss −{run['fall']:.1%}" if run["fall"] is not None else ""
                if run["network"] in ("model", "smoothed"):
                    what = (f"{run['label']}: {run['layers'][0]}" if len(run["layers"]) == 1
                            else f"{run['label']}: {run['layers'][0]} … {run['layers'][-1]}")
                    what += f"\n{run.get('gram', PLAIN)}"
                else:
                    what = run["label"]
                titles.append(f"{what}\n{fall}")
            figure = path.with_name(f"{file_name(texture['id'])}.png")
            figures.picture_row(pictures, titles, figure, f"{texture['name']}: Gram-matrix texture synthesis",
                                columns=4)
            out[texture["id"]] = figure
        return out
