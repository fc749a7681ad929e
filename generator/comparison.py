"""The attribution comparison of one model, from artifacts already computed: per image, every attribution method's
map of its first target with its deletion/insertion scores and randomization check, ranked; then each method's
means. Read by the figures stage (which draws the maps side by side) and by the comparison page."""
from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from generator.artifacts import file_name
from generator.pipeline import ModelPages, Result
from generator.techniques import registry
from generator.techniques.attribution.base import AttributionTechnique


def figure_path(model: str, image: str) -> str:
    """Where the comparison figure of one image goes, relative to the output folder."""
    return f"{model}/figures/comparison/{file_name(image)}.png"


def comparison(pages: ModelPages, kinds: list[str]) -> dict[str, Any] | None:
    """The attribution comparison page of one model, from artifacts already computed (None with fewer than two
    attribution methods): per image, every method's map of its first (top-1) target (drawn side by side by the
    figures stage, `outputs.draw_comparisons`), and the methods ranked by deletion AUC (lower is better) and
    insertion AUC (higher is better), with the randomization check; then each method's means over the images."""
    methods = [k for k in kinds if isinstance(registry.get(k), AttributionTechnique)
               and any(r.job.kind == k and r.artifact is not None for r in pages.results)]
    if len(methods) < 2:
        return None
    by_image: dict[str, dict[str, Result]] = defaultdict(dict)
    for r in pages.results:
        if r.job.kind in methods and r.job.image:
            by_image[r.job.image][r.job.kind] = r
    sanity = next((r.artifact.meta["sanity"] for r in pages.results
                   if r.job.kind in methods and r.artifact and "sanity" in r.artifact.meta), None)
    faith = next((r.artifact.meta["faithfulness"] for r in pages.results
                  if r.job.kind in methods and r.artifact and "faithfulness" in r.artifact.meta), None)
    threshold = sanity["threshold"] if sanity else None
    images = []
    for image, found in by_image.items():
        rows, missing = [], []
        for k in methods:
            r = found.get(k)
            if r is None or r.artifact is None:
                missing.append({"title": registry.get(k).title, "error": r.error if r else "not run"})
                continue
            first = r.artifact.meta["targets"][0]
            corr = first.get("sanity_correlations")
            rows.append({
                "kind": k, "title": registry.get(k).title, "target": first["label"],
                "probability": first["probability"], "deletion_auc": first.get("deletion_auc"),
                "insertion_auc": first.get("insertion_auc"), "correlations": corr,
                "constant": first.get("constant_map"),  # 'all zeros', say: such a map is shown but never scored
                "flag": first.get("sanity_flag", None if not corr or corr[-1] is None or threshold is None
                                  else bool(corr[-1] > threshold)),
                "signed": registry.get(k).signed, "result": r,
            })
        for key, reverse in (("deletion_auc", False), ("insertion_auc", True)):
            for row in rows:
                row[key.replace("_auc", "_rank")] = None
            scored = sorted((row for row in rows if row[key] is not None), key=lambda row: row[key], reverse=reverse)
            for rank, row in enumerate(scored, 1):
                row[key.replace("_auc", "_rank")] = rank
        in_order = list(rows)  # the figure's order (the spec's), before ranking
        targets = {row["target"] for row in rows}
        columns = [row["title"] for row in rows]  # the figure's order (the spec's), before ranking
        rows.sort(key=lambda row: (row["deletion_rank"] is None, row["deletion_rank"] or 0))
        images.append({
            "image": image, "image_name": pages.draw.image_name(image), "rows": rows, "in_order": in_order, "missing": missing, "columns": columns,
            "target": rows[0]["target"] if len(targets) == 1 else None,
        })
    overall = []
    for k in methods:
        rows = [row for img in images for row in img["rows"] if row["kind"] == k]
        mean = lambda key: (float(np.mean([row[key] for row in rows if row[key] is not None]))  # noqa: E731
                            if any(row[key] is not None for row in rows) else None)
        lasts = [row["correlations"][-1] for row in rows if row["correlations"] and row["correlations"][-1] is not None]
        overall.append({
            "title": registry.get(k).title, "kind": k, "images": len(rows),
            "deletion_auc": mean("deletion_auc"), "insertion_auc": mean("insertion_auc"),
            "correlation": float(np.mean(lasts)) if lasts else None,
            "flagged": sum(bool(row["flag"]) for row in rows),
            "checked": sum(row["flag"] is not None for row in rows),
        })
    overall.sort(key=lambda row: (row["deletion_auc"] is None, row["deletion_auc"] or 0))
    return {
        "model": {"name": pages.model.name, "source": pages.model.source},
        "images": images, "overall": overall, "stages": sanity["stages"] if sanity else [],
        "threshold": threshold, "faithfulness": faith,
    }
