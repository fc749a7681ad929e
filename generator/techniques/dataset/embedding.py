"""t-SNE and PCA of a layer's features over the data set (van der Maaten & Hinton 2008): a scatter coloured by label,
and Karpathy's t-SNE grid (cnnembed), where each cell shows the image nearest to it. How far to trust the 2-D map is
measured, not assumed: trustworthiness (Venna & Kaski 2001) and the k-NN label agreement in 2-D."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from generator.techniques.dataset import figures as dataset_figures, tsne
from generator.datasets import stratified
from generator.artifacts import Artifact, Job, drawing_field
from generator.techniques.dataset.base import FeatureSpaceParams, FeatureSpaceTechnique

TRUST_POINTS = 2000  # trustworthiness compares all pairs: measured on a stratified subset of this many points


class EmbeddingParams(FeatureSpaceParams):
    quick_caps = {"grid": 8}

    grid: int = Field(16, ge=4, le=64, description="cells per side of the thumbnail grid")
    cell: int = drawing_field(40, ge=16, le=128, description="pixels per thumbnail in the grid")
    perplexity: float = Field(30.0, gt=1, le=200, description="t-SNE perplexity (lowered automatically for small "
                                                              "data sets)")


class Embedding(FeatureSpaceTechnique):
    kind = "embedding"
    title = "t-SNE and PCA embedding"
    summary = "the data set mapped to 2-D by t-SNE and PCA of a layer's features, with Karpathy's thumbnail grid"
    # version 2: t-SNE's shorter schedule (125 + 250 iterations up to 10 000 points, tsne.plain_iterations)
    version = 2
    Params = EmbeddingParams
    arrays = {
        "tsne": "(images, 2) float32: t-SNE coordinates of every data-set image (in data-set order) from the "
                "layer's features (its channels' spatial means)",
        "pca": "(images, 2) float32: the same images' coordinates on the first two principal components",
        "grid": "(grid, grid) int64: data-set index of the image in each cell of the thumbnail grid laid over the "
                "t-SNE map (row 0 on top), -1 for an empty cell",
        "labels": "(images,) int64: class index of every data-set image in the data set's classes; -1 unlabelled",
    }

    def one(self, ctx, job: Job) -> Artifact:
        p: EmbeddingParams = job.params
        vectors = np.asarray(ctx.features.layer(job.layer).vectors, dtype=np.float32)
        labels = ctx.dataset.labels
        points_tsne = tsne.tsne(vectors, seed=ctx.seed, perplexity=p.perplexity, device=ctx.device).astype(np.float32)
        pca, variance = tsne.pca(vectors, 2, seed=ctx.seed)
        grid = tsne.grid_assignment(points_tsne, p.grid, p.grid)
        subset = stratified(labels, min(TRUST_POINTS, len(labels)), ctx.seed + 3)
        metrics = {"images": len(labels), "dims": int(vectors.shape[1]), "trust_points": len(subset),
                   "pca_variance": [float(v) for v in variance[:2]]}
        for name, points in (("tsne", points_tsne), ("pca", pca)):
            metrics[f"{name}_trustworthiness"] = tsne.trustworthiness(vectors[subset], points[subset], k=5)
            if ctx.dataset.labelled:
                metrics[f"{name}_knn_agreement"] = tsne.knn_label_agreement(points, labels, k=5)
        return Artifact({"tsne": points_tsne, "pca": pca.astype(np.float32), "grid": grid, "labels": labels.copy()},
                        {"metrics": metrics})

    def draw(self, art, job, env, path: Path) -> dict[str, Path]:
        a = art.arrays
        m = art.meta["metrics"]
        classes = env.dataset.classes
        where = f"{job.layer}, {m['images']} images"
        figures = {"main": path, "pca": path.with_name(f"{path.stem}--pca.png"),
                   "grid": path.with_name(f"{path.stem}--grid.png")}
        dataset_figures.embedding_scatter(a["tsne"], a["labels"], classes, figures["main"], f"t-SNE of {where}")
        v0, v1 = m["pca_variance"]
        dataset_figures.embedding_scatter(a["pca"], a["labels"], classes, figures["pca"], f"PCA of {where}",
                                          axis_labels=(f"PC1 ({v0:.0%} of the variance)", f"PC2 ({v1:.0%})"))
        grid = a["grid"]
        used = sorted({int(i) for i in grid.ravel() if i >= 0})
        pictures = {i: env.dataset_picture(i) for i in used}
        position = {i: k for k, i in enumerate(used)}
        remap = np.array([[position.get(int(i), -1) for i in row] for row in grid], dtype=np.int64)
        dataset_figures.thumbnail_grid([pictures[i] for i in used], remap, figures["grid"], cell=job.params.cell)
        return figures
