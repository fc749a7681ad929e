"""The comparisons stage of a build: each comparison of the spec (and each checkpoint series) becomes pairs, each
model against the comparison's last, measured once and cached like a job (keyed by both models' digests, their
layers, the data set and the images), then published: arrays, figures and one page per comparison.

Runs after the jobs, in the build's own process, on the models it loaded: a comparison reads two models at once,
which no single job does, and reads the attribution maps the jobs made."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from generator import images as imagelib
from generator.artifacts import Artifact, file_name
from generator.cache import Cache, cache_key
from generator.compare import figures as cf
from generator.compare import measure
from generator.context import DrawContext, RunContext
from generator.datasets import Dataset
from generator.errors import cannot_write, one_line
from generator.executor import Result
from generator.models import LoadedModel
from generator import web_images
from generator.outputs import array_record, write_arrays
from generator.spec import Spec

KIND = "model_comparison"
ATTRIBUTIONS = {"gradcam": "Grad-CAM", "integrated_gradients": "Integrated gradients"}
CHANGED_UNITS = 4  # channels per layer shown with their top images: the least correlated
TOP_IMAGES = 6


@dataclass
class Pair:
    a: LoadedModel
    b: LoadedModel  # the reference: the comparison's last model
    key: str
    status: str = "ran"  # ran, cached or failed
    seconds: float = 0.0
    artifact: Artifact | None = None
    error: str | None = None
    files: dict[str, Any] = field(default_factory=dict)  # what was written: data, figures


@dataclass
class Comparison:
    name: str
    models: list[LoadedModel]  # in this build, in order: each is compared with the last
    dataset: Dataset | None
    dataset_name: str | None
    left_out: list[str]  # named models not in this build (--skip)
    pairs: list[Pair] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # comparison-wide figures (the series' CKA lines)

    @property
    def page(self) -> str:
        return f"comparisons/{file_name(self.name)}.md"


def plan(spec: Spec, models: list[LoadedModel], datasets: dict[str, Dataset], images: dict[str, RunContext]
         ) -> list[Comparison]:
    """Every comparison with at least two of its models in this build, its pairs keyed for the cache."""
    by_name = {m.name: m for m in models}
    found = []
    for c in spec.all_comparisons():
        present = [by_name[n] for n in c.models if n in by_name]
        if len(present) < 2:
            continue
        data = datasets.get(c.dataset) if c.dataset else None
        comparison = Comparison(c.name, present, data, c.dataset, [n for n in c.models if n not in by_name])
        reference = present[-1]
        for a in present[:-1]:
            common = common_images(images[a.name], images[reference.name])
            key = cache_key(kind=KIND, version=measure.VERSION, a=a.digest, b=reference.digest, layers=[a.layers,
                            reference.layers], dataset=data.digest if data else None,
                            images=[images[a.name].images[i].digest for i in common])
            comparison.pairs.append(Pair(a, reference, key))
        found.append(comparison)
    return found


def common_images(a: RunContext, b: RunContext) -> list[str]:
    """The images both models show (their own image sets), in A's order."""
    return [i for i in a.own_images if i in set(b.own_images)]


def run(comparisons: list[Comparison], cache: Cache, contexts: dict[str, RunContext], force: bool = False,
        runnable: Callable[[Pair], bool] = lambda pair: True) -> None:
    """Measure each pair not in the cache (`runnable` ones only: --models); a pair that raises fails alone, saying
    why. A pair neither cached nor runnable is left out of this build's page."""
    for comparison in comparisons:
        for pair in comparison.pairs:
            art = None if force and runnable(pair) else cache.get(pair.key)
            if art is not None:
                pair.status, pair.artifact = "cached", art
                continue
            if not runnable(pair):
                pair.status = "left out"  # not in the cache, and outside --models
                continue
            start = time.perf_counter()
            try:
                pair.artifact = measure_pair(pair.a, pair.b, comparison.dataset, contexts)
                cache.put(pair.key, pair.artifact)
            except Exception as exc:
                if cannot_write(exc):
                    raise
                pair.status, pair.error = "failed", one_line(exc)
            pair.seconds = time.perf_counter() - start


def measure_pair(a: LoadedModel, b: LoadedModel, data: Dataset | None, contexts: dict[str, RunContext]) -> Artifact:
    ids = common_images(contexts[a.name], contexts[b.name])
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {"models": [a.name, b.name], "layers": [list(a.layers), list(b.layers)], "images": ids,
                            "dataset": data.name if data else None, "same_architecture": measure.same_architecture(a, b)}
    if data is not None:
        units = measure.shared_units(a, b)
        passed = measure.dataset_pass(a, b, data, units)
        arrays["cka"] = passed.cka.astype(np.float32)
        arrays["top1"], arrays["probability"] = passed.top1, passed.prob
        meta.update(batches=passed.batches, images_in_dataset=len(data), units=units,
                    accuracy=[measure.accuracy(passed.top1[k], data, m.labels) for k, m in enumerate((a, b))],
                    agreement=float((passed.top1[0] == passed.top1[1]).mean()),
                    flips=measure.flips(passed.top1, a.labels or [], b.labels or []))
        for layer in units:
            r = measure.unit_correlations(passed.units[layer])
            changed = np.argsort(np.nan_to_num(r, nan=2.0), kind="stable")[:CHANGED_UNITS]
            tops = np.argsort(-passed.units[layer][:, :, changed], axis=1, kind="stable")[:, :TOP_IMAGES]  # (2, k, C')
            arrays[f"unit_correlation/{layer}"] = r.astype(np.float32)
            arrays[f"changed_units/{layer}"] = changed.astype(np.int64)
            arrays[f"top_images/{layer}"] = tops.transpose(0, 2, 1).astype(np.int64)  # (2, channels, images)
    top1, prob = image_predictions(a, b, ids, contexts)
    arrays["image_top1"], arrays["image_probability"] = top1, prob
    if meta["same_architecture"]:
        names, change = measure.weight_change(a.module, b.module)
        arrays["weight_change"] = change
        meta["weight_layers"] = names
        for side, model in (("a", a), ("b", b)):
            first = measure.first_conv(model.module)
            if first is not None:
                arrays[f"first_filters_{side}"] = first[1]
                meta["first_conv"] = first[0]
    return Artifact(arrays, meta)


def image_predictions(a: LoadedModel, b: LoadedModel, ids: list[str], contexts: dict[str, RunContext]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(2, I) top-1 class and its probability of each model on each common image."""
    top1, prob = np.zeros((2, len(ids)), np.int64), np.zeros((2, len(ids)), np.float32)
    for side, model in enumerate((a, b)):
        if not ids:
            break
        with torch.inference_mode():
            p = model.logits(contexts[model.name].batch(ids)).float().softmax(1).max(1)
        top1[side], prob[side] = p.indices.cpu().numpy(), p.values.cpu().numpy()
    return top1, prob


def attribution_correlations(pair: Pair, results: dict[str, list[Result]]) -> dict[str, np.ndarray]:
    """method → (I,) Spearman correlation of the two models' maps of each common image (their top-1 class's map, the
    first their jobs made); nan where either has no map. Read from this build's results, never cached."""
    ids = pair.artifact.meta["images"]
    found = {}
    for method in ATTRIBUTIONS:
        maps = {side: {r.job.image: r.artifact.main[0] for r in results.get(m.name, [])
                       if r.job.kind == method and r.artifact is not None}
                for side, m in (("a", pair.a), ("b", pair.b))}
        if not maps["a"] or not maps["b"]:
            continue
        found[method] = np.asarray([measure.map_correlation(_plane(maps["a"][i]), _plane(maps["b"][i]))
                                    if i in maps["a"] and i in maps["b"] else np.nan for i in ids], np.float32)
    return found


def attribution_maps(pair: Pair, results: dict[str, list[Result]], method: str, image: str) -> list[np.ndarray]:
    maps = []
    for m in (pair.a, pair.b):
        art = next(r.artifact for r in results[m.name] if r.job.kind == method and r.job.image == image
                   and r.artifact is not None)
        maps.append(_plane(art.main[0]))
    return maps


def _plane(m: np.ndarray) -> np.ndarray:
    """A (H, W) map: a (C, H, W) one summed over |channels|."""
    m = np.asarray(m, np.float32)
    return np.abs(m).sum(0) if m.ndim == 3 else m


def write(folder: Path, comparisons: list[Comparison], results: dict[str, list[Result]],
          draws: dict[str, DrawContext]) -> list[dict[str, Any]]:
    """Each pair's arrays (one `.npz`) and figures under comparisons/<name>/; manifest records."""
    records = []
    for c in comparisons:
        base = f"comparisons/{file_name(c.name)}"
        for pair in c.pairs:
            if pair.artifact is None:
                continue
            stem = f"{file_name(pair.a.name)}-vs-{file_name(pair.b.name)}"
            arrays = dict(pair.artifact.arrays)
            arrays.update({f"attribution/{k}": v for k, v in attribution_correlations(pair, results).items()})
            data = f"{base}/data/{stem}.npz"
            (folder / data).parent.mkdir(parents=True, exist_ok=True)
            write_arrays(folder / data, arrays)
            figures = web_images.publish_all(folder, draw_pair(folder, f"{base}/figures/{stem}", pair, arrays, results,
                                                               draws, c.dataset))
            pair.files = {"data": data, "figures": figures, "arrays": arrays}
            records.append({
                "model": None, "comparison": c.name, "technique": KIND, "models": [pair.a.name, pair.b.name],
                "layer": None, "image": None, "params": {}, "metrics": metrics(pair.artifact.meta),
                "figure": next(iter(figures.values()), None),
                "figures": figures, "data": data, "key": pair.key,
                "arrays": [array_record(k, v, data) for k, v in arrays.items()],
            })
        if len(c.models) > 2 and all(p.artifact is not None and "cka" in p.artifact.arrays for p in c.pairs):
            layers = [layer for layer in c.models[-1].layers
                      if all(layer in p.a.layers for p in c.pairs)]
            lines = np.asarray([[p.artifact.arrays["cka"][p.a.layers.index(layer), p.b.layers.index(layer)]
                                 for layer in layers] for p in c.pairs] + [[1.0] * len(layers)])
            if layers:
                c.files["series"] = f"{base}/figures/series-cka.png"
                cf.series_lines([m.name for m in c.models], layers, lines, folder / c.files["series"])
                c.files["series"] = str(web_images.publish(folder / c.files["series"]).relative_to(folder))
                c.files["series_values"] = lines.tolist()
                c.files["series_layers"] = layers
    return records


def metrics(meta: dict[str, Any]) -> dict[str, Any]:
    """The page's numbers that are not arrays: accuracies, agreement, the flips table, layer and image names."""
    keys = ("models", "layers", "images", "dataset", "accuracy", "agreement", "flips", "batches", "units",
            "weight_layers", "first_conv", "same_architecture")
    return {k: meta[k] for k in keys if k in meta}


def draw_pair(folder: Path, stem: str, pair: Pair, arrays: dict[str, np.ndarray], results: dict[str, list[Result]],
              draws: dict[str, DrawContext], data: Dataset | None) -> dict[str, str]:
    meta, figures = pair.artifact.meta, {}

    def path(name: str) -> Path:
        figures[name] = f"{stem}-{name}.png"
        return folder / figures[name]

    if "cka" in arrays:
        cf.cka_heatmap(arrays["cka"], meta["layers"][0], meta["layers"][1], pair.a.name, pair.b.name, path("cka"))
    if "weight_change" in arrays and len(arrays["weight_change"]):
        cf.weight_bars(meta["weight_layers"], arrays["weight_change"], path("weights"))
    if "first_filters_a" in arrays and "first_filters_b" in arrays:
        cf.filters_side_by_side([arrays["first_filters_a"], arrays["first_filters_b"]], [pair.a.name, pair.b.name],
                                path("filters"))
    units = meta.get("units") or []
    if units:
        cf.correlation_curve(units, [arrays[f"unit_correlation/{layer}"] for layer in units], path("units"))
        for layer in units:
            rows = []
            for k, channel in enumerate(arrays[f"changed_units/{layer}"]):
                r = arrays[f"unit_correlation/{layer}"][channel]
                for side, model in enumerate((pair.a, pair.b)):
                    rows.append((f"{layer} channel {channel} (r = {r:.2f}): top images in {model.name}",
                                 [np.asarray(imagelib.crop(data.image(int(i)), model.input))
                                  for i in arrays[f"top_images/{layer}"][side, k]]))
            cf.top_images(rows, path(f"units-{file_name(layer)}"))
    for method in ATTRIBUTIONS:
        rho = arrays.get(f"attribution/{method}")
        if rho is None or np.isnan(rho).all():
            continue
        worst = int(np.nanargmin(rho))
        image = meta["images"][worst]
        maps = attribution_maps(pair, results, method, image)
        picture = draws[pair.a.name].picture(image)
        cf.maps_side_by_side(picture, maps, [f"{pair.a.name}", f"{pair.b.name}"], path(f"attribution-{method}"))
    return figures


def page_context(c: Comparison, folder: Path) -> dict[str, Any]:
    """What the comparison page shows, pair by pair (numbers from the arrays, figures by path relative to the page).
    `folder`: the output being written, its model pages already there (a unit page is linked only where it is)."""

    def unit_link(model: LoadedModel, layer: str) -> str | None:
        page = f"{file_name(model.name)}/units-{file_name(layer)}.md"
        return f"../{page}" if (folder / page).is_file() else None

    pairs = []
    for pair in c.pairs:
        row: dict[str, Any] = {"a": pair.a.name, "b": pair.b.name, "status": pair.status, "error": pair.error}
        if pair.artifact is not None and pair.files:
            arrays, meta = pair.files["arrays"], pair.artifact.meta
            figures = {k: f"../{v}" for k, v in pair.files["figures"].items()}
            labels = [pair.a.labels or [], pair.b.labels or []]
            images = []
            for k, image in enumerate(meta["images"]):
                top = [(measure._label(labels[s], int(arrays["image_top1"][s, k])),
                        float(arrays["image_probability"][s, k])) for s in (0, 1)]
                images.append({"id": image, "a": top[0], "b": top[1], "flip": top[0][0] != top[1][0],
                               "rho": {m: _number(arrays.get(f"attribution/{m}"), k) for m in ATTRIBUTIONS}})
            units = []
            for layer in meta.get("units") or []:
                r = arrays[f"unit_correlation/{layer}"]
                units.append({"layer": layer, "channels": len(r), "median": float(np.nanmedian(r)) if len(r) else None,
                              "below": int((r < 0.5).sum()), "figure": figures.get(f"units-{file_name(layer)}"),
                              "changed": [{"channel": int(ch), "r": float(r[ch])}
                                          for ch in arrays[f"changed_units/{layer}"]],
                              "pages": [(m.name, link) for m in (pair.a, pair.b) if (link := unit_link(m, layer))]})
            weights = None
            if "weight_change" in arrays and len(arrays["weight_change"]):
                change = arrays["weight_change"]
                most = int(np.argmax(change))
                weights = {"most": meta["weight_layers"][most], "most_value": float(change[most]),
                           "median": float(np.median(change)), "first_conv": meta.get("first_conv")}
            attribution = {m: {"title": title, "mean": float(np.nanmean(arrays[f"attribution/{m}"])),
                               "worst": meta["images"][int(np.nanargmin(arrays[f"attribution/{m}"]))]}
                           for m, title in ATTRIBUTIONS.items()
                           if f"attribution/{m}" in arrays and not np.isnan(arrays[f"attribution/{m}"]).all()}
            cka = arrays.get("cka")
            row.update(
                meta=meta, figures=figures, images=images, units=units, weights=weights, attribution=attribution,
                flipped=sum(i["flip"] for i in images), data=f"../{pair.files['data']}",
                diagonal=[{"layer": layer, "cka": float(cka[i, meta["layers"][1].index(layer)])}
                          for i, layer in enumerate(meta["layers"][0]) if cka is not None and layer in meta["layers"][1]],
            )
        pairs.append(row)
    series = None
    if "series" in c.files:
        series = {"figure": f"../{c.files['series']}", "layers": c.files["series_layers"],
                  "cka": c.files["series_values"], "members": [m.name for m in c.models]}
    return {"name": c.name, "models": [m.name for m in c.models], "sources": {m.name: m.source for m in c.models},
            "dataset": c.dataset_name if c.dataset is not None else None, "dataset_size": len(c.dataset) if c.dataset
            else None, "left_out": c.left_out, "pairs": pairs, "series": series}


def _number(values: np.ndarray | None, k: int) -> float | None:
    if values is None or np.isnan(values[k]):
        return None
    return float(values[k])
