"""Multifaceted feature visualization (Nguyen, Yosinski & Clune 2016, "Multifaceted Feature Visualization: Uncovering
the Different Types of Features Learned By Each Neuron in Deep Neural Networks"): a class is recognized from several
kinds of images — its *facets* (a bell pepper whole, cut in half, on a plate). A single visualization from noise
shows a blend of them, or one; starting the optimization from the mean of one kind of training image shows each.

For each chosen class: the data-set images of that class (by label when every data-set class is one of the model's
labels, case-insensitive; else those the model predicts as the class, top-1), clustered by k-means in the model's
penultimate feature space (scikit-learn, seeded, largest cluster first). Each cluster's *mean image* — the average
of its members as the model sees them, the preprocessed crops in [0, 1] pixels — is the start of a class
visualization: the class logit is maximized through a Fourier (or pixel) parameterization that starts exactly at the
mean image (`optvis.from_image`), with a total-variation penalty (and optionally L2) and random jitter/scale/rotation
(the paper used total variation, jitter and a centre bias; the centre bias is left out here). All facets of all
classes are one batch (`optvis.batched`): element b maximizes its own class, so the batch is b separate runs at once.

Arrays: `facets` (F, C, H, W) the results, `means` (F, C, H, W) the starts, `members` (F, thumbnails) the data-set
indices nearest each cluster centre (-1 pads small clusters), `classes` (F,) the model class of each facet,
`assignment` (N,) the facet of every data-set image (-1: not in a chosen class), and per facet its cluster's
`sizes`, the class probability `before` and `after`, and its `tv_weights`.

Defaults: Fourier image with `decay_power` 1 (Lucid's), Adam lr 0.01 (as class visualization's), 128 steps, a TV
weight of 0.1 relative to each facet's class-score gradient (`score_gradients`, so one weight suits models whose
gradients differ by an order of magnitude). A model that takes only its own input size (the 28 × 28 Fashion-MNIST
classifier) ignores `size` and gets no padding in its transforms.
How the defaults were chosen: site_src/tuning.md#multifaceted-feature-visualization.

Differences from the paper: it reduced the fc7 features to 2-D with t-SNE before k-means and used k = 10 clusters of
ImageNet training images; here k-means runs on the penultimate features themselves, over the report's data set.

The ascent runs with Lucid's redirected rectifier gradient, as class visualization's (`generator/optvis/redirect.py`),
and a facet whose class probability did not rise from its mean image (and was not already saturated, p ≥ 0.99) is
marked "did not rise" on the figure and listed in `meta["unmet"]`."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from generator import figures, images as imagelib, optvis
from generator.figures import to_picture
from generator.techniques.dataset.feature_pass import penultimate
from generator.models import resolve_target, target_problems
from generator.artifacts import Artifact, Job, Params, PER_MODEL_ACROSS_DATASET
from generator.techniques.synthesis.base import SynthesisTechnique, difference_picture, image_problems, problem_note
from generator.techniques.synthesis.classes import classes_field, max_classes_field, rose
from generator.optvis.transforms import Pad

PREDICT_BATCH = 64  # data-set images per forward when the model's own predictions pick the members


class MultifacetedParams(Params):
    quick_caps = {"steps": 24, "max_classes": 2, "facets": 2}

    classes: list[str | int] | None = classes_field("the `max_classes` classes with the most data-set images — or "
                                                    "the most predicted, when the data set's classes are not the "
                                                    "model's")
    max_classes: int = max_classes_field(3)
    facets: int = Field(3, ge=1, le=16, description="k-means clusters (facets) per class; fewer when the class has "
                                                    "fewer images")
    steps: int = Field(128, ge=1, le=5000, description="optimization steps from each mean image")
    early_stop: bool = Field(True, description="end the run once its loss has stopped improving (the mean loss of "
                                               "the last 16 steps fell by less than 1% against the 16 before, after "
                                               "at least 32 steps); the steps used are shown")
    lr: float = Field(0.01, gt=0, le=1, description="Adam learning rate (at 0.05 the mean image is washed out by "
                                                    "coloured noise within a few steps)")
    size: int | None = Field(None, ge=16, le=512, description="image side (default: the model's input size, at most "
                                                              "224; always the input size for a model that takes "
                                                              "no other)")
    param: Literal["fft", "pixel"] = Field("fft", description="parameterization started at the mean image: "
                                                              "Fourier (Lucid-style) or plain pixels")
    decay_power: float = Field(1.0, ge=0, le=3, description="spectrum scaling of the Fourier parameterization "
                                                            "(higher: larger, smoother changes; 1 changes the image "
                                                            "about as much per step at any size)")
    tv: float = Field(0.1, ge=0, description="total-variation penalty, relative to the class score: the weight per "
                                             "unit of TV (summed neighbour differences of the [0, 1] image) is `tv` "
                                             "times the class logit's mean gradient per pixel at the mean images, so "
                                             "it means the same for any model and image size")
    l2: float = Field(0.0, ge=0, description="L2 penalty weight on the normalized image")
    transform_strength: float = Field(1.0, ge=0, le=3, description="scale of the random pad/jitter/scale/rotate "
                                                                      "(Lucid's standard transforms)")
    thumbnails: int = Field(4, ge=1, le=12, description="member images shown per facet (those nearest the cluster "
                                                        "centre)")


class Multifaceted(SynthesisTechnique):
    kind = "multifaceted"
    title = "Multifaceted feature visualization"
    summary = ("one class visualization per kind of image the class is recognized from, each started at the mean "
               "image of a k-means cluster of the data set")
    version = 4
    Params = MultifacetedParams
    scope = PER_MODEL_ACROSS_DATASET
    arrays = {
        "facets": "(facets, C, S, S) float32: each facet's class visualization, pixels in [0, 1]",
        "means": "(facets, C, S, S) float32: each facet's start, the mean of its cluster's preprocessed crops in "
                 "[0, 1] pixels",
        "members": "(facets, thumbnails) int64: data-set indices of the members nearest each cluster centre (-1 pads "
                   "small clusters)",
        "classes": "(facets,) int64: the model class of each facet",
        "assignment": "(images,) int64: the facet of every data-set image, in data-set order (-1: not in a chosen "
                      "class)",
        "sizes": "(facets,) int64: the number of data-set images in each facet's cluster",
        "before": "(facets,) float32: the class's softmax probability on the mean image (the start)",
        "after": "(facets,) float32: the class's softmax probability on the result",
        "tv_weights": "(facets,) float32: each facet's total-variation weight (tv × its class-score gradient)",
    }

    def check(self, model, params: MultifacetedParams) -> list[str]:
        return target_problems(model, params.classes, "classes")

    # -- which images belong to which class --------------------------------------------------------------------

    @staticmethod
    def label_map(model, dataset) -> np.ndarray | None:
        """data-set class index → model class index, when every data-set class is a model label (case-insensitive);
        None otherwise (then the model's predictions decide membership)."""
        if not model.labels or not dataset.classes or not dataset.labelled:
            return None
        lowered = {label.lower(): i for i, label in enumerate(model.labels)}
        mapped = [lowered.get(c.lower()) for c in dataset.classes]
        return None if any(m is None for m in mapped) else np.asarray(mapped, dtype=np.int64)

    @staticmethod
    def predictions(ctx) -> np.ndarray:
        """The model's top-1 class of every data-set image."""
        data, model = ctx.dataset, ctx.model
        out = []
        for start in range(0, len(data), PREDICT_BATCH):
            x = torch.stack([imagelib.preprocess(data.image(i), model.input)
                             for i in range(start, min(start + PREDICT_BATCH, len(data)))]).to(ctx.device)
            with torch.inference_mode():
                out.append(model.logits(x).float().argmax(1).cpu())
        return torch.cat(out).numpy() if out else np.zeros(0, np.int64)

    def membership(self, ctx) -> tuple[np.ndarray, str]:
        """(N,) the model class each data-set image stands for (-1: none), and how it was decided."""
        mapping = self.label_map(ctx.model, ctx.dataset)
        if mapping is not None:
            labels = ctx.dataset.labels
            return np.where(labels >= 0, mapping[np.clip(labels, 0, None)], -1), "label"
        return self.predictions(ctx), "prediction"

    # -- the work -----------------------------------------------------------------------------------------------

    def one(self, ctx, job: Job) -> Artifact:
        from sklearn.cluster import KMeans

        p: MultifacetedParams = job.params
        model = ctx.model
        owner, source = self.membership(ctx)
        if p.classes is not None:
            classes = list(dict.fromkeys(int(resolve_target(model, c)) for c in p.classes))
        else:
            counts = np.bincount(owner[owner >= 0], minlength=len(model.labels or []) or 1)
            order = np.argsort(-counts, kind="stable")
            classes = [int(c) for c in order[: p.max_classes] if counts[c] > 0]
        layer = penultimate(model)
        vectors = ctx.features.layer(layer).vectors
        fixed = not model.takes_other_sizes()  # a fixed-size classifier (Fashion-MNIST's): its own size only
        size = model.input.size if fixed else p.size or min(model.input.size, 224)
        channels = model.channels

        facet_class, facet_size, members, means, empty, per_class = [], [], [], [], [], []
        assignment = np.full(len(owner), -1, dtype=np.int64)  # data-set image → its facet
        for c in classes:
            idx = np.flatnonzero(owner == c)
            if len(idx) == 0:
                empty.append(model.label(c))
                continue
            k = min(p.facets, len(idx))
            feats = np.asarray(vectors[idx], dtype=np.float32)
            km = KMeans(n_clusters=k, random_state=ctx.seed, n_init=10).fit(feats)
            # Largest facet first; ties keep k-means' order.
            sizes = np.bincount(km.labels_, minlength=k)
            per_class.append({"index": c, "label": model.label(c), "images": int(len(idx)), "facets": int(k)})
            for cluster in np.argsort(-sizes, kind="stable"):
                member = idx[km.labels_ == cluster]
                assignment[member] = len(facet_class)
                centre = km.cluster_centers_[cluster]
                dist = np.linalg.norm(np.asarray(vectors[member], dtype=np.float64) - centre, axis=1)
                nearest = member[np.argsort(dist, kind="stable")[: p.thumbnails]]
                members.append(np.pad(nearest, (0, p.thumbnails - len(nearest)), constant_values=-1))
                means.append(self.mean_image(ctx, member))
                facet_class.append(c)
                facet_size.append(int(len(member)))
        if not facet_class:
            raise ValueError(f"no data-set images {'labelled' if source == 'label' else 'predicted'} as "
                             f"{', '.join(repr(model.label(c)) for c in classes) or 'any class'}; nothing to cluster")
        start = torch.stack(means)
        if start.shape[-1] != size:
            start = F.interpolate(start, size=(size, size), mode="bilinear", align_corners=False,
                                  antialias=True).clamp(0, 1)
        labels = [model.label(c) for c in facet_class]
        # Each facet's TV weight is relative to its own class score's gradient, so a batch equals separate runs.
        gradients = self.score_gradients(ctx, start, facet_class)
        tv_weights = [p.tv * g for g in gradients]
        objective = optvis.batched([optvis.class_logit(c, label) + optvis.total_variation(w)
                                    for c, label, w in zip(facet_class, labels, tv_weights)])
        if p.l2:
            objective = objective + optvis.l2_penalty(p.l2)
        options = ({"decay_power": p.decay_power, "decorrelate": channels == 3} if p.param == "fft" else {})
        param = optvis.from_image(start, kind=p.param, **options)
        before = ctx.probabilities(start, facet_class)
        result = self.optimize(ctx, objective, param, steps=p.steps, lr=p.lr,
                               stop=optvis.StopRule() if p.early_stop else None,
                               transforms=self.transforms(size, p.transform_strength, fixed), redirect_steps=p.steps)
        facets = result.images.astype(np.float32)
        after = ctx.probabilities(torch.from_numpy(facets), facet_class)
        # How far each facet moved from its mean image: mean |difference| in [0, 1] pixel units.
        change = np.abs(facets - start.numpy()).reshape(len(facets), -1).mean(1)
        problems = image_problems(facets)
        facet_meta = [{"class": c, "label": l, "size": s, "before": float(b), "after": float(a), "tv_weight": w,
                       "objective": caption, "change": float(d), "problem": problem}
                      for c, l, s, b, a, w, caption, d, problem in zip(facet_class, labels, facet_size, before, after,
                                                                       tv_weights, result.captions, change, problems)]
        meta = {
            "target": ", ".join(dict.fromkeys(labels)),
            "membership": source, "layer": layer, "classes": per_class, "empty": empty, "facets": facet_meta,
            "size": size, "steps": result.steps, "planned": p.steps, "seconds": result.seconds,
            "metrics": {"classes": len(per_class), "facets": len(facet_class),
                        "mean_probability_before": float(np.mean(before)),
                        "mean_probability_after": float(np.mean(after)),
                        "min_probability_after": float(np.min(after)),
                        "risen": int(np.sum(after > before)), "steps": result.steps, "seconds": result.seconds},
        }
        unmet = [f"facet {f + 1} of '{facet['label']}': p did not rise ({facet['before']:.3f} → {facet['after']:.3f} "
                 f"after {result.steps} steps)" for f, facet in enumerate(facet_meta)
                 if not rose(facet["before"], facet["after"])]
        unmet += [f"facet {f + 1} of '{facet['label']}': the image is {facet['problem']}"
                  for f, facet in enumerate(facet_meta) if facet["problem"]]
        if unmet:
            meta["unmet"] = unmet
        return Artifact({"facets": facets, "means": start.numpy().astype(np.float32),
                         "members": np.stack(members).astype(np.int64),
                         "classes": np.asarray(facet_class, dtype=np.int64), "assignment": assignment,
                         "sizes": np.asarray(facet_size, dtype=np.int64), "before": np.asarray(before, np.float32),
                         "after": np.asarray(after, np.float32), "tv_weights": np.asarray(tv_weights, np.float32)},
                        meta)

    @staticmethod
    def mean_image(ctx, member: np.ndarray) -> torch.Tensor:
        """The average of the members' preprocessed crops, in [0, 1] pixels: (C, H, W)."""
        total = None
        for i in member:
            x = ctx.model.denormalize(imagelib.preprocess(ctx.dataset.image(int(i)), ctx.model.input)[None].float())
            x = x.double()
            total = x if total is None else total + x
        return (total / len(member))[0].float().clamp(0, 1)

    @staticmethod
    def score_gradients(ctx, images: torch.Tensor, classes: list[int]) -> list[float]:
        """Mean |∂ class logit / ∂ pixel| ([0, 1] pixel units) of each element's class at its image: the scale its
        TV weight is relative to (measured on the mean images: about 0.5 for the Fashion-MNIST net at 28 px, 0.06
        for EfficientNet-Lite0 at 224 px and 0.16 at 128 px)."""
        x = images.detach().to(ctx.device).float().clone().requires_grad_(True)
        logits = ctx.model.logits(ctx.model.normalize(x)).float()
        picked = logits[torch.arange(len(classes), device=ctx.device), torch.tensor(classes, device=ctx.device)]
        (grad,) = torch.autograd.grad(picked.sum(), x)
        return [float(g) for g in grad.abs().flatten(1).mean(1)]

    @staticmethod
    def transforms(size: int, strength: float, fixed: bool):
        """Lucid's standard transforms scaled to `size`; for a fixed-size model without the padding (so the model sees
        `size` px: zooms and rotations keep the size and fill with the mean colour), and resampled to `size` in case
        a transform changes it. None at strength 0."""
        if not strength:
            return None
        standard = optvis.standard_transforms(size, strength)
        if not fixed:
            return standard
        return optvis.compose([t for t in standard.transforms if not isinstance(t, Pad)] + [optvis.resize(size)])

    # -- the figure ---------------------------------------------------------------------------------------------

    def draw(self, art, job, env, path: Path) -> bool:
        m = art.meta
        thumbs = art.arrays["members"]
        t = thumbs.shape[1]
        grid, cells, rows = [], [], []
        for f, facet in enumerate(m["facets"]):
            shown = [int(i) for i in thumbs[f] if i >= 0]
            pics = [as_picture(env.dataset_picture(i), art.arrays["means"][f]) for i in shown]
            blank = [np.full_like(pics[0], 255)] * (t - len(shown)) if pics else []
            grid.append(pics + blank + [to_picture(art.arrays["means"][f]), to_picture(art.arrays["facets"][f]),
                                        difference_picture(art.arrays["facets"][f], art.arrays["means"][f])])
            cells.append([""] * t + [f"p = {facet['before']:.2f}", f"p = {facet['after']:.2f}"
                                     + ("" if rose(facet["before"], facet["after"]) else " — did not rise")
                                     + problem_note(facet.get("problem")),
                                     f"mean |Δ| = {facet['change']:.3f}" if "change" in facet else ""])
            rows.append(f"{facet['label']}\n{facet['size']} images")
        columns = [f"member {i + 1}" for i in range(t)] + ["mean image (start)", f"after {m['steps']} steps",
                                                            "change from the start"]
        figures.picture_grid(grid, cells, rows, columns, path, cell=1.8)
        return True


def as_picture(picture: np.ndarray, like: np.ndarray) -> np.ndarray:
    """A data-set thumbnail as (H, W) for grayscale, (H, W, 3) for colour results: one grid, one kind of cell."""
    if like.shape[0] == 1:
        return picture if picture.ndim == 2 else np.asarray(picture.mean(2), dtype=np.uint8)
    return picture if picture.ndim == 3 else np.repeat(picture[..., None], 3, axis=2)
