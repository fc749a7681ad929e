"""Last-layer nearest neighbours (Krizhevsky et al. 2012, fig. 4): the data-set images closest to a query in a
layer's feature space, beside those closest in pixel space. Pixels match colour and layout; features match what
the object is. The page says how often each space's neighbours share the query's label, over the whole data set."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from generator.techniques.dataset import figures as dataset_figures
from generator.datasets import stratified
from generator.techniques.dataset.feature_pass import PIXEL_SIDE, reduce
from generator.hooks import record_outputs
from generator.techniques.dataset.knn import label_agreement, nearest
from generator.artifacts import Artifact, Job, Reads
from generator.techniques.dataset.base import FeatureSpaceParams, FeatureSpaceTechnique

AGREEMENT_QUERIES = 5000  # leave-one-out queries behind the page's agreement figures (all images up to this many)


class NearestNeighborsParams(FeatureSpaceParams):
    quick_caps = {"queries": 4, "k": 4}

    k: int = Field(6, ge=1, le=50, description="neighbours shown per query")
    metric: Literal["cosine", "l2"] = Field("cosine", description="distance in feature space (pixel space uses L2)")
    queries: int = Field(8, ge=1, le=64, description="queries drawn from the data set, spread over its classes")
    query_set: str | None = Field(None, description="an image set of the model to use as queries instead")


class NearestNeighbors(FeatureSpaceTechnique):
    kind = "nearest_neighbors"
    title = "Nearest neighbours"
    summary = "the data-set images nearest to a query in feature space, beside the nearest in pixel space"
    version = 2
    Params = NearestNeighborsParams
    arrays = {
        "feature_neighbors": "(queries, k) int64: data-set indices of each query's nearest images in the layer's "
                             "feature space (its channels' spatial means), nearest first",
        "feature_distances": "(queries, k) float32: their distances (`metric`: 1 − cosine similarity, or L2)",
        "pixel_neighbors": "(queries, k) int64: data-set indices of each query's nearest images in pixel space (the "
                           "normalized input average-pooled to at most 32 × 32), nearest first",
        "pixel_distances": "(queries, k) float32: their L2 distances in pixel space",
        "queries": "(queries,) int64: data-set index of each query; -1 for a query from `query_set`",
        "query_labels": "(queries,) int64: class index of each query in the data set's classes; -1 when unknown",
        "feature_neighbor_labels": "(queries, k) int64: class index of each feature-space neighbour; -1 unlabelled",
        "pixel_neighbor_labels": "(queries, k) int64: class index of each pixel-space neighbour; -1 unlabelled",
    }

    def reads(self, params: NearestNeighborsParams) -> Reads:
        return Reads(whole_set=params.query_set is not None)

    def one(self, ctx, job: Job) -> Artifact:
        p: NearestNeighborsParams = job.params
        labels = ctx.dataset.labels
        base = torch.from_numpy(np.array(ctx.features.layer(job.layer).vectors, dtype=np.float32))
        pixels = torch.from_numpy(np.array(ctx.features.pixels(), dtype=np.float32))
        k = min(p.k, len(labels) - 1)
        if p.query_set is not None:
            ids = [i for i, r in ctx.images.items() if r.set == p.query_set]
            if not ids:
                raise ValueError(f"query_set '{p.query_set}' is not an image set of this model")
            q_feat, q_pix = self.encode(ctx, job.layer, ids)
            queries, exclude, q_labels = np.full(len(ids), -1), None, np.full(len(ids), -1)
            names = [ctx.images[i].name for i in ids]
        else:
            queries = stratified(labels, min(p.queries, len(labels)), ctx.seed + 1)
            q_feat, q_pix, exclude, q_labels = base[queries], pixels[queries], queries, labels[queries]
            names = [ctx.dataset.names[i] for i in queries]
        f_idx, f_dist = nearest(q_feat, base, k, p.metric, ctx.device, exclude=exclude)
        p_idx, p_dist = nearest(q_pix, pixels, k, "l2", ctx.device, exclude=exclude)
        metrics = {"images": len(labels), "k": k, "metric": p.metric, "dims": int(base.shape[1]),
                   "pixel_dims": int(pixels.shape[1])}
        if ctx.dataset.labelled:  # leave-one-out over (up to AGREEMENT_QUERIES of) the whole data set
            every = stratified(labels, min(AGREEMENT_QUERIES, len(labels)), ctx.seed + 2)
            fi, _ = nearest(base[every], base, k, p.metric, ctx.device, exclude=every)
            pi, _ = nearest(pixels[every], pixels, k, "l2", ctx.device, exclude=every)
            metrics |= {"feature_agreement": label_agreement(fi, labels, labels[every]),
                        "pixel_agreement": label_agreement(pi, labels, labels[every]),
                        "chance": float(np.sum((np.bincount(labels[labels >= 0]) / (labels >= 0).sum()) ** 2)),
                        "agreement_queries": len(every)}
        meta = {"query_names": names, "query_labels": [ctx.dataset.label(int(i)) if i >= 0 else None for i in queries],
                "metrics": metrics}
        return Artifact({"feature_neighbors": f_idx, "feature_distances": f_dist, "pixel_neighbors": p_idx,
                         "pixel_distances": p_dist, "queries": np.asarray(queries, dtype=np.int64),
                         "query_labels": np.asarray(q_labels, dtype=np.int64),
                         "feature_neighbor_labels": labels[f_idx].astype(np.int64),
                         "pixel_neighbor_labels": labels[p_idx].astype(np.int64)}, meta)

    @staticmethod
    def encode(ctx, layer: str, ids: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Feature and pixel vectors of image-set images, reduced exactly as the feature store reduces the data set."""
        x = ctx.batch(ids)
        with torch.inference_mode(), record_outputs(ctx.model.module, [layer]) as outs:
            ctx.model.module(x)
        vectors = reduce(outs[layer].float())[0]
        pix = F.adaptive_avg_pool2d(x.float(), min(PIXEL_SIDE, x.shape[-1])).flatten(1).cpu()
        return torch.from_numpy(vectors), pix

    def draw(self, art, job, env, path: Path) -> bool:
        a = art.arrays
        queries = a["queries"]
        query_pics = [env.dataset_picture(int(q)) if q >= 0 else env.picture(i)
                      for q, i in zip(queries, self._query_ids(env, job, len(queries)))]
        ql = a["query_labels"]
        def row(idx, dist):
            pics = [[env.dataset_picture(int(i)) for i in r] for r in idx]
            short = lambda d: f"{d:.2f}" if d < 10 else f"{d:.0f}"  # noqa: E731  (captions are narrow)
            titles = [[f"{env.dataset.label(int(i))} · {short(d)}" for i, d in zip(r, dr)] for r, dr in zip(idx, dist)]
            match = [[bool(ql[q] >= 0 and env.dataset.labels[int(i)] == ql[q]) for i in r] for q, r in enumerate(idx)]
            return pics, titles, match
        fp, ft, fm = row(a["feature_neighbors"], a["feature_distances"])
        pp, pt, pm = row(a["pixel_neighbors"], a["pixel_distances"])
        names = art.meta["query_names"]
        labels = art.meta["query_labels"]
        titles = [f"{n} ({l})" if l and l not in n else n for n, l in zip(names, labels)]
        dataset_figures.neighbor_rows(query_pics, fp, pp, path, titles, ft, pt,
                                      feature_match=fm if ql.max() >= 0 else None,
                                      pixel_match=pm if ql.max() >= 0 else None,
                                      space_title=f"features ({job.params.metric})")
        return True

    @staticmethod
    def _query_ids(env, job, n: int) -> list[str | None]:
        if job.params.query_set is None:
            return [None] * n
        return [i for i, r in env.images.items() if r.set == job.params.query_set]
