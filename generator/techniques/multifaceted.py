"""Multifaceted feature visualization (Nguyen, Yosinski & Clune 2016, "Multifaceted Feature Visualization: Uncovering
the Different Types of Features Learned By Each Neuron in Deep Neural Networks"): a class is recognized from several
kinds of images — its *facets* (a bell pepper whole, cut in half, on a plate). A single visualization from noise
shows a blend of them, or one; starting the optimization from the mean of one kind of training image shows each.

For each chosen class: the data-set images of that class (by label when the data set's classes are the model's
classes, else those the model predicts as the class), clustered by k-means in the model's penultimate feature space
(scikit-learn, seeded). Each cluster's *mean image* — the average of its members as the model sees them, the
preprocessed crops in [0, 1] pixels — is the start of a class visualization: the class logit is maximized through
a Fourier (or pixel) parameterization that starts exactly at the mean image, with total variation and L2 penalties
and random jitter/scale/rotation (the paper used total variation, jitter and a centre bias; the centre bias is left
out here). All facets of all classes are one batch: element b maximizes its own class, so the batch is b separate
runs done at once.

Differences from the paper: it reduced the fc7 features to 2-D with t-SNE before k-means and used k = 10 clusters of
ImageNet training images; here k-means runs on the penultimate features themselves, over the report's data set."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from generator import figures
from generator import images as imagelib
from generator.features import penultimate
from generator.techniques.attribution import resolve_target
from generator.techniques.base import Artifact, Job, Params, Technique

PREDICT_BATCH = 64  # data-set images per forward when the model's own predictions pick the members


class MultifacetedParams(Params):
    classes: list[str | int] | None = Field(None, description="classes to visualize (labels or indices; default: the "
                                                              "`max_classes` classes with the most data-set images — "
                                                              "or the most predicted, when the data set's classes are "
                                                              "not the model's)")
    max_classes: int = Field(3, ge=1, le=32, description="classes visualized when 'classes' is not given")
    facets: int = Field(3, ge=1, le=16, description="k-means clusters (facets) per class; fewer when the class has "
                                                    "fewer images")
    steps: int = Field(128, ge=1, le=5000, description="optimization steps from each mean image")
    lr: float = Field(0.005, gt=0, le=1, description="Adam learning rate (a tenth of a start from noise: larger steps "
                                                     "wash the mean image out within a few steps)")
    size: int | None = Field(None, ge=16, le=512, description="image side (default: the model's input size, at most "
                                                              "224)")
    param: Literal["fft", "pixel"] = Field("fft", description="parameterization started at the mean image: "
                                                              "Fourier (Lucid-style) or plain pixels")
    decay_power: float = Field(1.5, ge=0, le=3, description="spectrum scaling of the Fourier parameterization "
                                                            "(higher: smoother changes)")
    tv: float = Field(0.05, ge=0, description="total-variation penalty weight (per unit of the [0, 1] image's "
                                              "summed neighbour differences)")
    l2: float = Field(0.0, ge=0, description="L2 penalty weight on the normalized image")
    transform_strength: float = Field(1.0, ge=0, le=3, description="scale of the random jitter/scale/rotate (Lucid's "
                                                                      "standard transforms without the padding)")
    thumbnails: int = Field(4, ge=1, le=12, description="member images shown per facet (those nearest the cluster "
                                                        "centre)")

    def quick(self) -> "MultifacetedParams":
        return self.model_copy(update={"steps": min(self.steps, 24), "max_classes": min(self.max_classes, 2),
                                       "facets": min(self.facets, 2)})


class Multifaceted(Technique):
    kind = "multifaceted"
    title = "Multifaceted feature visualization"
    summary = ("one class visualization per kind of image the class is recognized from, each started at the mean "
               "image of a k-means cluster of the data set")
    Params = MultifacetedParams
    scope = "model"
    uses_dataset = True

    def check(self, model, params: MultifacetedParams) -> list[str]:
        problems = []
        for i, target in enumerate(params.classes or []):
            resolved = resolve_target(model, target)
            if isinstance(resolved, str):
                problems.append(f"classes[{i}]: {resolved}")
        return problems

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

    def run(self, ctx, jobs: list[Job]) -> list[Artifact]:
        return [self.one(ctx, job) for job in jobs]

    def one(self, ctx, job: Job) -> Artifact:
        from generator import optvis  # optvis imports models, which imports the spec, which imports this registry
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
        size = p.size or min(model.input.size, 224)
        channels = 3 if model.input.mode == "RGB" else 1
        mean_t = torch.tensor(model.input.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std_t = torch.tensor(model.input.std, dtype=torch.float32).view(1, -1, 1, 1)

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
                dist = np.linalg.norm(np.asarray(vectors[member], dtype=np.float64) - km.cluster_centers_[cluster], axis=1)
                nearest = member[np.argsort(dist, kind="stable")[: p.thumbnails]]
                members.append(np.pad(nearest, (0, p.thumbnails - len(nearest)), constant_values=-1))
                means.append(self.mean_image(ctx, member, mean_t, std_t))
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
        objective = optvis.batched([optvis.class_logit(c, label) for c, label in zip(facet_class, labels)])
        if p.tv:
            objective = objective + optvis.total_variation(p.tv)
        if p.l2:
            objective = objective + optvis.l2_penalty(p.l2)
        options = ({"decay_power": p.decay_power, "decorrelate": channels == 3} if p.param == "fft" else {})
        param = optvis.from_image(start, kind=p.param, **options)
        before = self.probabilities(ctx, start, facet_class)
        result = optvis.render(model.module, objective, param, mean=model.input.mean, std=model.input.std,
                               steps=p.steps, lr=p.lr, seed=ctx.seed, device=ctx.device, logits_key=model.logits_key,
                               transforms=same_size_transforms(size, p.transform_strength))
        facets = result.images.astype(np.float32)
        after = self.probabilities(ctx, torch.from_numpy(facets), facet_class)
        facet_meta = [{"class": c, "label": l, "size": s, "before": float(b), "after": float(a)}
                      for c, l, s, b, a in zip(facet_class, labels, facet_size, before, after)]
        meta = {
            "target": ", ".join(dict.fromkeys(labels)),
            "membership": source, "layer": layer, "classes": per_class, "empty": empty, "facets": facet_meta,
            "size": size, "steps": p.steps, "seconds": result.seconds,
            "metrics": {"classes": len(per_class), "facets": len(facet_class),
                        "mean_probability_before": float(np.mean(before)),
                        "mean_probability_after": float(np.mean(after)),
                        "min_probability_after": float(np.min(after)),
                        "risen": int(np.sum(after > before)), "steps": p.steps, "seconds": result.seconds},
        }
        return Artifact({"facets": facets, "means": start.numpy().astype(np.float32),
                         "members": np.stack(members).astype(np.int64),
                         "classes": np.asarray(facet_class, dtype=np.int64), "assignment": assignment}, meta)

    @staticmethod
    def mean_image(ctx, member: np.ndarray, mean_t: torch.Tensor, std_t: torch.Tensor) -> torch.Tensor:
        """The average of the members' preprocessed crops, in [0, 1] pixels: (C, H, W)."""
        total = None
        for i in member:
            x = imagelib.preprocess(ctx.dataset.image(int(i)), ctx.model.input)[None].float() * std_t + mean_t
            x = x.double()
            total = x if total is None else total + x
        return (total / len(member))[0].float().clamp(0, 1)

    @staticmethod
    def probabilities(ctx, images: torch.Tensor, classes: list[int]) -> np.ndarray:
        """Softmax probability of each element's class on the untransformed image."""
        mean = torch.tensor(ctx.model.input.mean, device=ctx.device).view(1, -1, 1, 1)
        std = torch.tensor(ctx.model.input.std, device=ctx.device).view(1, -1, 1, 1)
        with torch.no_grad():
            probs = ctx.model.logits((images.to(ctx.device).float() - mean) / std).float().softmax(1)
        return probs[torch.arange(len(classes)), torch.tensor(classes)].cpu().numpy()

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
            grid.append(pics + blank + [to_picture(art.arrays["means"][f]), to_picture(art.arrays["facets"][f])])
            cells.append([""] * t + [f"p = {facet['before']:.2f}", f"p = {facet['after']:.2f}"])
            rows.append(f"{facet['label']}\n{facet['size']} images")
        columns = [f"member {i + 1}" for i in range(t)] + ["mean image (start)", f"after {m['steps']} steps"]
        figures.picture_grid(grid, cells, rows, columns, path, cell=1.8)
        return True


def same_size_transforms(size: int, strength: float):
    """Lucid's standard transforms (`optvis.standard_transforms`) without the padding, so the model sees an input
    of exactly `size` (models with a fixed-size classifier, like the Fashion-MNIST one, need that); zooms and
    rotations still fill uncovered corners with the mean colour. None at strength 0."""
    from generator import optvis
    from generator.optvis.transforms import Pad

    if not strength:
        return None
    return optvis.compose([t for t in optvis.standard_transforms(size, strength).transforms if not isinstance(t, Pad)])


def to_picture(image: np.ndarray) -> np.ndarray:
    """(C, H, W) in [0, 1] → (H, W, 3) or (H, W) uint8."""
    a = (np.clip(image, 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0)
    return a[..., 0] if a.shape[2] == 1 else a


def as_picture(picture: np.ndarray, like: np.ndarray) -> np.ndarray:
    """A data-set thumbnail as (H, W) for grayscale, (H, W, 3) for colour results: one grid, one kind of cell."""
    if like.shape[0] == 1:
        return picture if picture.ndim == 2 else np.asarray(picture.mean(2), dtype=np.uint8)
    return picture if picture.ndim == 3 else np.repeat(picture[..., None], 3, axis=2)
