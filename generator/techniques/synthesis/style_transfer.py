"""Neural style transfer (Gatys, Ecker & Bethge 2016, "Image Style Transfer Using Convolutional Neural Networks"):
an image optimized so that its features at one layer match a content photograph's, while its Gram matrices at
several layers match a style image's; a small total-variation term keeps it from turning grainy.

Two networks give the style, side by side on every content × style row:
- the model itself (content and style from its own layers, the classic recipe);
- random multi-scale filters (Ustyuzhaninov et al. 2017, `generator/optvis/random_filters.py`) for the style, with
  the content still from the model's content layer (by default the model's middle chosen layer).

Activation smoothing (`smoothing`, on by default): the model's style is also painted with SWAG (Wang, Li &
Vasconcelos, CVPR 2021): a softmax over all of a layer's activations before both the Gram matrices and the content
comparison (`matching.smooth_activations`), shown beside the plain Gram result, and each model result is measured
by the random filters (which made neither). The weight row keeps the random filters.

Style layers: by default the chosen layers with at least a quarter as many positions as channels
(`default_style_layers`), since a layer whose Gram matrix no image can match (EfficientNet-Lite0's head) stalls the
loss whatever the weight.

A row of results at increasing style weight (`style_weights`, first style) shows the trade-off. The optimization
starts from the content photograph (`start: content`; Gatys et al. start from noise, `start: noise`): the style
loss then falls from its value on the photograph, and the content loss, zero there by definition, rises as the
style takes over — the page reports both. From noise both fall.

Styles: the image sets named under `styles`, or, when none are, the two styles that ship with convscope
(`SHIPPED_STYLES`: van Gogh-like swirls and a tile mosaic, painted by scripts/make_style_images.py and installed
beside this module) — not another of the user's photographs, whose "style" is a photograph's.

What it costs on a user's model: the comparison (every style with the model's plain Gram matrices, with smoothing,
and with the random filters) and the row of style weights are painted for the first content image of the job set
only (`compare: first`); the others are painted once per style, with the model's plain Gram matrices: a fraction of
the random filters' cost (2–6 s against 15–24 s a painting on one CPU thread), and of the model's two the one that
takes on the style (on a random ResNet-18 at 96 px, judged by the random filters: 0.01–0.04× the photograph's Gram
distance to swirls and mosaic on four photographs, against 0.7–1.0× smoothed on the first, which left it nearly as
it was; on EfficientNet-Lite0 the two were alike, site_src/tuning.md). The result is the model's input size (at most
160 px) unless `size` says otherwise. On that ResNet-18 with 4 images: 14 paintings at 96 px in the two shipped
styles (77 CPU seconds), where each image in the style of the next took 20 at 160 px (549 s; 32 with two styles).
How the defaults were chosen: site_src/tuning.md#neural-style-transfer."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from generator import figures
from generator.figures import to_picture
from generator.artifacts import Artifact, Job, Reads, PER_IMAGE
from generator.techniques.synthesis.base import SynthesisTechnique
from generator.techniques.synthesis.gram import (NOISE_SD, PLAIN, SMOOTHED, STEPS, Fallback, GramParams, centre,
                                                 image_set_problems, image_sets_field, layer_problems, source_tensor)
from generator.optvis import matching

# The styles painted in when a spec names none: files beside this module (package data; the same files as
# samples/styles/, which the default report names as a set of its own).
SHIPPED_STYLES = Fallback("shipped-styles", ("styles/swirls.png", "styles/mosaic.png"))


class StyleTransferParams(GramParams):
    quick_caps = {"size": 80, "style_size": 96, "steps": 8, "coarse_steps": 0}
    source_field: ClassVar[str] = "style_size"
    source_ratio: ClassVar[float] = 1.6  # 256 px of style for a 160-px result

    images: list[str] | None = image_sets_field("the content photographs")
    styles: list[str] | None = Field(None, description="image sets of the style images; every content image is "
                                                       "painted in every style (default: the two styles that ship "
                                                       "with convscope, swirls and mosaic)")
    size: int | None = Field(None, ge=16, le=1024, description="side of the result, in pixels: the content "
                                                               "photograph's centre square, resized (default: the "
                                                               "model's input size, at most 160 and at least what "
                                                               "the random filters span at the coarse scale)")
    style_size: int | None = Field(None, ge=16, le=2048, description="shorter side the style image is resized to "
                                                                     "before its statistics are taken (larger: "
                                                                     "bigger brush strokes; default: 1.6 × size)")
    content_layer: str | None = Field(None, description="the model's layer whose features keep the content "
                                                        "(default: the middle one of its chosen layers)")
    style_layers: list[str] | None = Field(None, description="the model's layers whose Gram matrices give the style "
                                                             "(default: those of the model's chosen layers with at "
                                                             "least a quarter as many positions as channels at this "
                                                             "size: deeper ones cannot be matched)")
    style_weight: float = Field(100.0, gt=0, description="weight of the style loss against the content loss (both "
                                                         "relative errors) in every content × style row")
    style_weights: list[Annotated[float, Field(gt=0)]] = Field(
        [0.1, 1.0, 100.0], description="style weights of the row of results for the first style, painted for the "
                                       "content images that `compare` names (empty: no row)")
    compare: Literal["first", "every"] = Field(
        "first", description="the content images painted by every network (the model's plain Gram matrices, with "
                             "smoothing, the random filters) and with the row of style weights: the first of the "
                             "content images, or every one; the others are painted once per style, with the model's "
                             "plain Gram matrices")
    tv_weight: float = Field(0.3, ge=0, description="weight of the total variation (mean absolute difference of "
                                                    "neighbouring pixels)")
    steps: int = Field(60, ge=1, le=5000, description=STEPS)
    lr: float = Field(0.02, gt=0, le=1, description="Adam's learning rate")
    start: Literal["content", "noise"] = Field("content", description="start from the content photograph or from "
                                                                      "noise around its mean colour")
    smoothing: bool = Field(True, description="also paint with activation smoothing (SWAG: Wang, Li & Vasconcelos "
                                              "2021): a softmax over all of a layer's activations before the Gram "
                                              "matrices and the content comparison, beside the plain Gram result")
    random_filters: bool = Field(True, description="also paint with the style of random multi-scale filters "
                                                   "(Ustyuzhaninov et al. 2017)")

    def quick(self) -> "StyleTransferParams":
        return super().quick().model_copy(update={"style_weights": self.style_weights[:2]})

    def cache_fields(self) -> dict:
        fields = super().cache_fields()
        if self.styles is None:  # the shipped styles' pixels join the key, as a named set's would
            fields["shipped_styles"] = SHIPPED_STYLES.digest()
        return fields


def content_layer_of(model, params: StyleTransferParams) -> str | None:
    if params.content_layer is not None:
        return params.content_layer
    return model.layers[len(model.layers) // 2] if model.layers else None


# A Gram matrix of C channels from P positions is matched only where P ≥ C / 4 (measured on EfficientNet-Lite0, chelsea
# in the style of swirls at 128 px, the random filters judging: the first three chosen layers bring the style's Gram
# distance to 0.11× the photograph's; adding `_blocks.10._act1`, 672 channels on 8 × 8 positions, 0.23×; all five,
# with the head's 1280 channels on 4 × 4 positions, 0.98×: the image barely changes, whatever the style weight).
POSITIONS_PER_CHANNEL = 0.25


def default_style_layers(model, side: int) -> list[str]:
    """The model's chosen layers whose Gram matrices a `side`-pixel image can match (P ≥ C / 4), the first of them
    when none can."""
    shapes = model.shapes_at(side)
    usable = [layer for layer in model.layers if layer in shapes and len(shapes[layer]) == 3
              and shapes[layer][1] * shapes[layer][2] >= POSITIONS_PER_CHANNEL * shapes[layer][0]]
    return usable or list(model.layers[:1])


def content_tensor(record, channels: int, size: int) -> torch.Tensor:
    """The content photograph as (C, size, size) in [0, 1]: its centre square (as the model's own crop), resized."""
    x = matching.to_tensor(record.image, channels)
    side = min(x.shape[-2:])
    return matching.resize(centre(x, side, side)[None], (size, size))[0]




def measure(matching, results: list[dict], images: list[np.ndarray], styles: dict, content: torch.Tensor, own,
            rnd, style_layers: list[str], style_size: int) -> None:
    """Measures of each result that it was not optimized for, added to its entry: `hist_result` / `hist_content`,
    the colour-histogram distance of the result / of the content photograph to the style; and, with the random
    filters, `judge_result` / `judge_content`, the Gram distance to the style (`matching.gram_distance`, the median
    over layers of the plain relative Gram error) by the network that did not make the result — the random filters
    for the model's results (plain or smoothed), the model's plain Gram matrices for the random filters' — and
    `judge_ratio`, their ratio (below 1: the result is closer to the style than the photograph it started from)."""
    src = content.cpu().numpy()
    for r, image in zip(results, images):
        style = styles[r["style"]]
        r["hist_result"] = matching.histogram_distance(image, style)
        r["hist_content"] = matching.histogram_distance(src, style)
    if rnd is None:
        return
    for sid, style in styles.items():
        for judge, layers, made in ((rnd, rnd.module.layers, ("model", "smoothed")), (own, style_layers, ("random",))):
            rows = [i for i, r in enumerate(results) if r["style"] == sid and r["network"] in made]
            if not rows:
                continue
            batch = torch.cat([torch.from_numpy(np.stack([images[i] for i in rows])).to(content.device), content[None]])
            d = matching.gram_distance(judge, layers, batch, [style] * len(batch), style_size)
            for k, i in enumerate(rows):
                results[i].update(judge=judge.label, judge_result=float(d[k]), judge_content=float(d[-1]),
                                  judge_ratio=float(d[k] / d[-1]) if d[-1] > 0 else None)


class StyleTransfer(SynthesisTechnique):
    kind = "style_transfer"
    title = "Neural style transfer"
    summary = ("a content photograph repainted with the Gram-matrix statistics of a style image: the model's own "
               "style next to random multi-scale filters'")
    version = 5
    Params = StyleTransferParams
    scope = PER_IMAGE
    arrays = {
        "results": "(results, C, H, W) float32: every painted image, pixels in [0, 1] (which style, network and "
                   "weight each is: the arrays below)",
        "content": "(C, H, W) float32: the content image as painted, pixels in [0, 1]",
        "styles": "(styles, C, H, W) float32: each style image's centre at the scale its statistics were taken, "
                  "on white where smaller, pixels in [0, 1]",
        "style_of": "(results,) int64: the row of `styles` each result was painted in",
        "random_filters": "(results,) bool: true where the style term used the random multi-scale filters instead "
                          "of the model's layers",
        "smoothing": "(results,) bool: true where both terms used activation smoothing (SWAG: a softmax over all of "
                     "a layer's activations before the Gram matrices and the content comparison)",
        "style_weights": "(results,) float64: the style weight of each result",
        "style_loss": "(results, 2) float64: the Gram (style) loss at the start and at the end",
        "content_loss": "(results, 2) float64: the content loss at the start and at the end (the figure's 'content' "
                        "number is the end)",
        "judged": "(results, 2) float64: the Gram distance to the style by the network that did not make the result "
                  "(the random filters for the model's results, the model's plain Gram matrices for the random "
                  "filters'), of the result and of the content photograph (NaN without random filters)",
        "histogram_distance": "(results, 2) float64: the colour-histogram distance to the style (total variation "
                              "of 8-bin-per-channel joint histograms) of the result and of the content photograph",
    }

    def reads(self, params: StyleTransferParams) -> Reads:
        p = params
        # Whether a job paints the comparison depends on its image's place in the job set (the first of it): the
        # named content sets join the key in order; the model's own images as a set (`whole_set`).
        by_place = p.compare == "first"
        return Reads(
            image_sets=None if p.images is None else tuple(p.images),
            references=tuple(p.styles or ()) + (tuple(p.images) if by_place and p.images is not None else ()),
            whole_set=by_place and p.images is None,
            model_layers=p.style_layers is None or p.content_layer is None)

    def contents(self, ctx, params: StyleTransferParams) -> list[str]:
        """The ids of the job set's content images, in spec order."""
        if params.images is None:
            return ctx.own_images
        return [i for name in params.images for i in ctx.set_ids(name)]

    def style_records(self, ctx, params: StyleTransferParams) -> dict:
        """id → record of the style images: the named sets', or the shipped styles."""
        if params.styles is None:
            return SHIPPED_STYLES.records()
        ids = [i for name in params.styles for i in ctx.set_ids(name)]
        if not ids:
            raise ValueError(f"styles: the image sets {params.styles} hold no images")
        return {i: ctx.images[i] for i in ids}

    def check(self, model, params: StyleTransferParams) -> list[str]:
        p = params.resolved(model)
        problems = image_set_problems(p.images)
        if p.styles is not None and not p.styles:
            problems.append("styles: an empty list; name at least one image set of style images, or leave it out "
                            "for the shipped styles (swirls and mosaic)")
        sizes = p.seen_sides(model)
        content = content_layer_of(model, p)
        if content is None:
            problems.append(f"content_layer: {model.name} has no chosen layers; name the content layer")
        else:
            problems += layer_problems(model, None, "content_layer", [content], sizes, "style transfer")
        problems += layer_problems(model, p.style_layers, "style_layers", model.layers, sizes, "style transfer")
        problems += p.random_size_problems()
        return list(dict.fromkeys(problems))

    def one(self, ctx, job: Job) -> Artifact:
        model, device = ctx.model, ctx.device
        p: StyleTransferParams = job.params.resolved(model)
        channels = model.channels
        records = self.style_records(ctx, p)
        style_ids = list(records)
        contents = self.contents(ctx, p)
        full = p.compare == "every" or not contents or job.image == contents[0]  # the comparison and the weight row
        content = content_tensor(ctx.images[job.image], channels, p.size).to(device)
        h, w = content.shape[-2:]
        styles = {i: source_tensor(records[i], channels, p.style_size).to(device) for i in style_ids}
        if p.start == "content":
            start = content[None].clone()
        else:
            start = matching.noise_start(1, channels, h, w, ctx.seed, mean=content.mean((1, 2)).cpu(),
                                         sd=NOISE_SD).to(device)
        own = matching.model_network(model)
        rnd = p.random_network(channels, device) if p.random_filters else None
        content_layer = content_layer_of(model, p)
        style_layers = (list(p.style_layers) if p.style_layers is not None
                        else default_style_layers(model, min(p.seen_sides(model))))
        options = dict(steps=p.steps, coarse_steps=p.coarse_steps, scales=p.scales, optimizer=p.optimizer, lr=p.lr,
                       tv_weight=p.tv_weight)
        done: dict[tuple, int] = {}
        images, results = [], []

        def paint(style_id: str, network: str, weight: float) -> int:
            """network: "model" (plain Gram), "smoothed" (the model with SWAG's activation smoothing on both terms)
            or "random" (the random filters' Gram matrices, the model's plain content term)."""
            key = (style_id, network, float(weight))
            if key not in done:
                net, layers = (rnd, rnd.module.layers) if network == "random" else (own, style_layers)
                smooth = network == "smoothed"
                terms = [matching.GramTerm(net, layers, [styles[style_id]], p.style_size, weight=weight,
                                           smooth=smooth),
                         matching.ContentTerm(own, content_layer, content[None], smooth=smooth)]
                r = matching.synthesize(terms, start.clone(), **options)
                images.append(r.images[0])
                results.append({"style": style_id, "network": network, "smoothing": smooth,
                                "gram": SMOOTHED if smooth else PLAIN,
                                "label": net.label, "weight": float(weight),
                                "style_start": float(r.start["style"][0]), "style_end": float(r.end["style"][0]),
                                "content_start": float(r.start["content"][0]),
                                "content_end": float(r.end["content"][0]),
                                "tv_end": float(r.end["tv"][0]), "seconds": r.seconds})
                done[key] = len(results) - 1
            return done[key]

        painter = "random" if p.random_filters else ("smoothed" if p.smoothing else "model")
        grid = [paint(style_ids[0], painter, wt) for wt in p.style_weights] if full else []
        pairs = []
        for sid in style_ids:
            if full:
                row = {"style": sid, "model": paint(sid, "model", p.style_weight)}
                if p.smoothing:
                    row["smoothed"] = paint(sid, "smoothed", p.style_weight)
                if p.random_filters:
                    row["random"] = paint(sid, "random", p.style_weight)
            else:  # the model's plain Gram matrices only: the cheap painting that shows the style (see the docstring)
                row = {"style": sid, "model": paint(sid, "model", p.style_weight)}
            pairs.append(row)
        measure(matching, results, images, styles, content, own, rnd, style_layers, p.style_size)
        style_falls = [1 - r["style_end"] / r["style_start"] for r in results if r["style_start"] > 0]
        metrics = {"results": len(results), "style_fall_min": min(style_falls) if style_falls else None,
                   "content_end_max": max(r["content_end"] for r in results),
                   "seconds": sum(r["seconds"] for r in results)}
        if full and p.smoothing and p.random_filters:
            # SWAG against the plain Gram matrices, judged by the random filters (which made neither): the mean over
            # the styles of each result's Gram distance to its style, as a fraction of the content photograph's.
            by = lambda kind: float(np.mean([results[pair[kind]]["judge_ratio"] for pair in pairs]))  # noqa: E731
            metrics.update(judged_plain=by("model"), judged_smoothed=by("smoothed"))
        # Each style as shown: its centre at the scale its statistics were taken, cut to the result's size.
        shown = []
        for sid in style_ids:
            crop = centre(styles[sid], h, w)
            canvas = torch.ones(channels, h, w, device=device)
            canvas[:, :crop.shape[-2], :crop.shape[-1]] = crop
            shown.append(canvas.cpu().numpy())
        meta = {"results": results, "grid": grid, "pairs": pairs, "styles": style_ids,
                "style_names": [records[i].name for i in style_ids],
                # where the styles came from: the named sets, or (None) the shipped samples
                "style_sets": list(p.styles) if p.styles is not None else None,
                "compared": full, "content_layer": content_layer,
                "style_layers": style_layers, "random_layers": rnd.module.layers if rnd is not None else [],
                "size": [int(h), int(w)], "style_size": p.style_size, "painter": painter, "metrics": metrics}
        return Artifact({"results": np.stack(images).astype(np.float32),
                         "content": content.cpu().numpy().astype(np.float32),
                         "styles": np.stack(shown).astype(np.float32),
                         "style_of": np.array([style_ids.index(r["style"]) for r in results], dtype=np.int64),
                         "random_filters": np.array([r["network"] == "random" for r in results], dtype=bool),
                         "smoothing": np.array([r["smoothing"] for r in results], dtype=bool),
                         "style_weights": np.array([r["weight"] for r in results], dtype=np.float64),
                         "style_loss": np.array([[r["style_start"], r["style_end"]] for r in results], np.float64),
                         "content_loss": np.array([[r["content_start"], r["content_end"]] for r in results],
                                                  np.float64),
                         "judged": np.array([[r.get("judge_result", np.nan), r.get("judge_content", np.nan)]
                                             for r in results], np.float64),
                         "histogram_distance": np.array([[r["hist_result"], r["hist_content"]] for r in results],
                                                        np.float64)}, meta)

    def draw(self, art, job, env, path: Path) -> dict[str, Path]:
        m = art.meta
        res = m["results"]
        content = to_picture(art.arrays["content"])
        styles = [to_picture(s) for s in art.arrays["styles"]]
        labels = {"model": f"{env.model.name}, {PLAIN}", "smoothed": f"{env.model.name}, {SMOOTHED}",
                  "random": "random filters"}

        def caption(i: int) -> str:
            r = res[i]
            text = f"style −{1 - r['style_end'] / r['style_start']:.0%}, content {r['content_end']:.2f}"
            if r.get("judge_ratio") is not None and r["network"] != "random":
                text += f"\nrandom filters: {r['judge_ratio']:.2f}× photo"
            return text

        kinds = [k for k in ("model", "smoothed", "random") if any(k in pair for pair in m["pairs"])]
        grid, cells, rows = [], [], []
        for k, pair in enumerate(m["pairs"]):
            line, texts = [content, styles[k]], ["", ""]
            for kind in kinds:
                line.append(to_picture(art.arrays["results"][pair[kind]]))
                texts.append(caption(pair[kind]))
            grid.append(line)
            cells.append(texts)
            rows.append(m["style_names"][k])
        weight = res[m["pairs"][0][kinds[0]]]["weight"]
        columns = ["content", "style"] + [f"{labels[kind]} (weight {weight:g})" for kind in kinds]
        figures.picture_grid(grid, cells, rows, columns, path, cell=2.8)
        out = {"main": path}
        if m["grid"]:
            weights = path.with_name(f"{path.stem}--weights.png")
            line = [content, styles[0]] + [to_picture(art.arrays["results"][i]) for i in m["grid"]]
            texts = ["", ""] + [caption(i) for i in m["grid"]]
            figures.picture_grid([line], [texts], [m["style_names"][0]],
                                 ["content", "style"] + [f"weight {res[i]['weight']:g}" for i in m["grid"]],
                                 weights, cell=2.8)
            out["weights"] = weights
        return out
