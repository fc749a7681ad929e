"""Results → figures, data files, pages, manifest.json and build.json, all written into one (staging) folder."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from generator import figures
from generator.context import DrawContext
from generator.models import LoadedModel
from generator.errors import one_line
from generator.pipeline import Result
from generator.templating import Renderer
from generator.techniques import registry
from generator.techniques.attribution.base import AttributionTechnique


@dataclass
class ModelPages:
    model: LoadedModel
    draw: DrawContext
    results: list[Result] = field(default_factory=list)


def stem(result: Result) -> str:
    parts = [p for p in (result.job.layer, result.job.image) if p]
    return re.sub(r"[^A-Za-z0-9_.-]+", "--", "__".join(parts)) or "model"


def drawing_digest(kind: str) -> str:
    """A digest of the code that draws a technique's figures: a cached figure is reused only while it matches."""
    technique = registry.get(kind)
    h = hashlib.sha256()
    for module in sorted({figures.__name__, "generator.dataset_figures", *(c.__module__ for c in type(technique).__mro__)}):
        source = getattr(sys.modules.get(module), "__file__", None)
        if source:
            h.update(Path(source).read_bytes())
    return h.hexdigest()[:16]


def previous_records(output: Path) -> dict[str, dict[str, Any]]:
    """key → manifest record of the last build in `output`, to reuse figures and data files of cached results."""
    try:
        records = json.loads((output / "manifest.json").read_text())["artifacts"]
        return {r["key"]: r for r in records if isinstance(r, dict) and r.get("key")}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def write_outputs(folder: Path, pages: ModelPages, progress: Callable[[int], None],
                  previous: Path | None = None) -> list[dict[str, Any]]:
    """Draw each artifact's figure and save its arrays: the main one as `.npy` (the record's `data`, what a reader
    loads first), the others in one `.npz` beside it (`archive`); return the manifest records. Figures of cached
    results are copied from the `previous` output when the drawing code has not changed since, and so are their
    data files when they list the same arrays (a cached result's arrays are those its file was written from). A
    figure that fails to draw turns its result into a failure shown on the page."""
    old = previous_records(previous) if previous else {}
    digests: dict[str, str] = {}
    records = []
    for i, r in enumerate(pages.results):
        progress(1)
        if r.artifact is None:
            continue
        name = pages.model.name
        figure = f"{name}/figures/{r.job.kind}/{stem(r)}.png"
        data = f"{name}/data/{r.job.kind}/{stem(r)}.npy"
        rest = dict(list(r.artifact.arrays.items())[1:])
        archive = f"{name}/data/{r.job.kind}/{stem(r)}.npz" if rest else None
        (folder / data).parent.mkdir(parents=True, exist_ok=True)
        before = old.get(r.job.key)
        arrays = array_records(r.artifact.arrays, registry.get(r.job.kind), data, archive)
        files = [f for f in (data, archive) if f]
        if (r.status == "cached" and before and before.get("data") == data and before.get("archive") == archive
                and all((previous / f).is_file() for f in files) and _shapes(before.get("arrays")) == _shapes(arrays)):
            for f in files:
                shutil.copy2(previous / f, folder / f)
        else:
            np.save(folder / data, r.artifact.main, allow_pickle=False)
            if archive:
                write_arrays(folder / archive, rest)
        drawing = digests.setdefault(r.job.kind, drawing_digest(r.job.kind))
        try:
            olds = (before or {}).get("figures") or {"main": (before or {}).get("figure")}
            reusable = (r.status == "cached" and before and before.get("figure") and before.get("drawing") == drawing
                        and before["params"] == r.job.params.model_dump(mode="json")
                        and all(f and (previous / f).is_file() for f in olds.values()))
            if reusable:
                for f in olds.values():
                    (folder / f).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(previous / f, folder / f)
                named = olds
            else:
                drawn = registry.get(r.job.kind).draw(r.artifact, r.job, pages.draw, folder / figure)
                named = ({k: str(Path(v).relative_to(folder)) for k, v in drawn.items()} if isinstance(drawn, dict)
                         else {"main": figure} if drawn else {})
        except Exception as exc:
            pages.results[i] = Result(r.job, "failed", r.seconds, None, f"drawing the figure: {one_line(exc)}")
            continue
        main = next(iter(named.values()), None)
        r.artifact.meta["_figure"] = main
        r.artifact.meta["_figures"] = named
        r.artifact.meta["_data"] = data
        r.artifact.meta["_archive"] = archive
        r.artifact.meta["_arrays"] = [a["name"] for a in arrays]
        records.append({
            "model": name, "technique": r.job.kind, "layer": r.job.layer, "image": r.job.image,
            "target": r.artifact.meta.get("target"), "params": r.job.params.model_dump(mode="json"),
            "metrics": r.artifact.metrics, "figure": main, "figures": named, "data": data, "archive": archive,
            "arrays": arrays,
            "key": r.job.key, "drawing": drawing if named else None,
        })
    return records


def array_records(arrays: dict[str, np.ndarray], technique, data: str, archive: str | None) -> list[dict[str, Any]]:
    """What the manifest lists of each array of an artifact, in its order (the main array first): name, shape,
    dtype, meaning (the technique's `arrays`) and the file that holds it (`data`, or the `archive` for the rest)."""
    return [{"name": name, "shape": list(np.shape(value)), "dtype": str(np.asarray(value).dtype),
             "meaning": technique.meaning(name), "file": data if i == 0 else archive}
            for i, (name, value) in enumerate(arrays.items())]


def _shapes(listed: Any) -> list[tuple] | None:
    try:
        return [(a["name"], list(a["shape"]), a["dtype"]) for a in listed]
    except (TypeError, KeyError):
        return None


def write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Every array of an artifact into one .npz, deflated (level 1: images saved as float32 shrink to about a
    third): `np.load(path, allow_pickle=False)[name]`. Written member by member like np.savez_compressed, so any
    array name works and an object array fails here rather than when someone loads it."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, value in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)


def unmet(r: Result) -> bool:
    """Whether a result did not reach its technique's goal (a unit that did not move, an image not fooled): the
    technique says so in `meta['unmet']`, and the pages count and list it."""
    return bool(r.artifact is not None and r.artifact.meta.get("unmet"))


def _row(r: Result, pages: ModelPages) -> dict[str, Any]:
    meta = r.artifact.meta if r.artifact else {}
    rel = lambda p: p.split("/", 1)[1] if p else None  # noqa: E731  (pages live in the model's folder)
    return {
        "layer": r.job.layer, "image": r.job.image,
        "image_name": pages.draw.image_name(r.job.image) if r.job.image else None,
        "status": r.status, "error": r.error, "seconds": r.seconds,
        "figure": rel(meta.get("_figure")), "data": rel(meta.get("_data")), "archive": rel(meta.get("_archive")),
        "arrays": meta.get("_arrays") or [],
        "figures": {k: rel(v) for k, v in (meta.get("_figures") or {}).items()},
        "meta": meta, "metrics": meta.get("metrics", {}),
        "unmet": list(meta.get("unmet") or []),  # goals this result did not reach, one line each
    }


def _sections(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows grouped by layer, in plan order."""
    groups: dict[Any, list] = defaultdict(list)
    for row in rows:
        groups[row["layer"]].append(row)
    return [{"layer": layer, "rows": items} for layer, items in groups.items()]


def model_page_context(pages: ModelPages, selected: list[str], skipped: dict[str, str] | None = None) -> dict[str, Any]:
    m = pages.model
    by_kind: dict[str, list[Result]] = defaultdict(list)
    for r in pages.results:
        by_kind[r.job.kind].append(r)
    arch = next(iter(by_kind.get("architecture", [])), None)
    techniques = [
        {"kind": k, "title": registry.get(k).title, "summary": registry.get(k).summary,
         "failed": sum(r.status == "failed" for r in by_kind[k]), "jobs": len(by_kind[k]),
         "unmet": sum(unmet(r) for r in by_kind[k])}
        for k in selected if by_kind.get(k)
    ] + [{"kind": k, "title": registry.get(k).title, "summary": registry.get(k).summary, "failed": 0, "jobs": 0,
          "unmet": 0, "inapplicable": reason} for k, reason in (skipped or {}).items()]
    by_title = {t["kind"]: t for t in techniques}
    return {
        "families": [{"title": title, "techniques": [by_title[k] for k in kinds],
                      "attribution": title == registry.family("saliency")}
                     for title, kinds in registry.by_family(list(by_title))],
        "model": {
            "name": m.name, "source": m.source, "digest": m.digest, "parameters": m.num_params, "layers": m.layers,
            "input": m.input.model_dump(), "classes": len(m.labels) if m.labels else None,
        },
        "architecture": _row(arch, pages) if arch else None,
        "inputs": [_row(r, pages) for r in by_kind.get("input", [])],
        "techniques": techniques,
    }


def technique_page_context(pages: ModelPages, kind: str) -> dict[str, Any]:
    t = registry.get(kind)
    results = [r for r in pages.results if r.job.kind == kind]
    rows = [_row(r, pages) for r in results]
    return {
        "model": {"name": pages.model.name, "source": pages.model.source},
        "technique": {"kind": kind, "title": t.title, "summary": t.summary, "version": t.version},
        "params": results[0].job.params.model_dump(mode="json") if results else {},
        "sections": _sections(rows),
        "failed": [row for row in rows if row["status"] == "failed"],
        "unmet": [row for row in rows if row["unmet"]],
        "dataset": dataset_context(pages.draw.dataset) if t.uses_dataset else None,
        "unit_pages": {row["layer"]: unit_page(row["layer"]) for row in rows if row["layer"]},
    }


def dataset_context(dataset) -> dict[str, Any] | None:
    if dataset is None:
        return None
    return {"name": dataset.name, "description": dataset.description, "about": getattr(dataset, "about", ""),
            "size": len(dataset), "total": dataset.total,
            "classes": dataset.classes, "skipped": dataset.skipped, "notes": dataset.notes}


def unit_visuals(pages: ModelPages) -> dict[str, dict[int, dict[str, Any]]]:
    """layer → channel → {figure, after, dataset_mean}: the unit visualizations the unit pages show."""
    found: dict[str, dict[int, dict[str, Any]]] = {}
    for r in pages.results:
        if r.job.kind != "unit_visualization" or r.artifact is None:
            continue
        row = _row(r, pages)
        for u in r.artifact.meta["units"]:
            figure = row["figures"].get(f"unit-{u['channel']}")
            if figure:
                found.setdefault(r.job.layer, {})[u["channel"]] = {**u, "figure": figure, "steps": r.artifact.meta["steps"]}
    return found


def unit_page(layer: str) -> str:
    """The unit page of a layer, in the model's folder (so figure paths stay relative to it)."""
    return f"units-{_slug(layer)}.md"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "--", text) or "image"


def comparison_context(folder: Path, pages: ModelPages, kinds: list[str]) -> dict[str, Any] | None:
    """The attribution comparison page of one model, from artifacts already computed (None with fewer than two
    attribution methods): per image, one figure with every method's map of its first (top-1) target side by side,
    written to `<model>/figures/comparison/<image>.png` (drawing here only lays out existing arrays), and the
    methods ranked by deletion AUC (lower is better) and insertion AUC (higher is better), with the randomization
    check; then each method's means over the images."""
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
        figure, error = None, None
        if rows:
            figure = f"{pages.model.name}/figures/comparison/{_slug(image)}.png"
            arrays = [row.pop("result").artifact.arrays for row in rows]
            try:
                scored = [row["deletion_auc"] is not None for row in rows]
                figures.attribution_comparison(
                    pages.draw.picture(image), [a["map"][0] for a in arrays],
                    [row["title"] + (f" ({row['constant']}: not scored)" if row["constant"] else "") for row in rows],
                    folder / figure, signed=[row["signed"] for row in rows],
                    deletion=[a["deletion"][0] if "deletion" in a and ok else None for a, ok in zip(arrays, scored)],
                    insertion=[a["insertion"][0] if "insertion" in a and ok else None for a, ok in zip(arrays, scored)],
                    deletion_auc=[row["deletion_auc"] for row in rows],
                    insertion_auc=[row["insertion_auc"] for row in rows],
                    target=f"{rows[0]['target']} (p={rows[0]['probability']:.2f})")
            except Exception as exc:
                figure, error = None, f"drawing the figure: {one_line(exc)}"
        targets = {row["target"] for row in rows}
        columns = [row["title"] for row in rows]  # the figure's order (the spec's), before ranking
        rows.sort(key=lambda row: (row["deletion_rank"] is None, row["deletion_rank"] or 0))
        images.append({
            "image": image, "image_name": pages.draw.image_name(image), "figure": figure.split("/", 1)[1] if figure else None,
            "error": error, "rows": rows, "missing": missing, "columns": columns,
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


def write_pages(folder: Path, renderer: Renderer, title: str, all_pages: list[ModelPages],
                selected: dict[str, list[str]], summary: list[dict[str, Any]], errors: list[str],
                skipped: dict[str, dict[str, str]] | None = None) -> None:
    """Every page. `skipped`: model → technique → why it does not apply; such a technique gets a page saying so."""
    models, navs = [], []
    for pages in all_pages:
        name = pages.model.name
        kinds = [k for k in selected[name] if any(r.job.kind == k for r in pages.results)]
        reasons = (skipped or {}).get(name, {})
        ctx = model_page_context(pages, kinds, reasons)
        comparison = comparison_context(folder, pages, kinds)
        ctx["comparison"] = "comparison.md" if comparison else None
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "index.md").write_text(renderer.page("pages/model.md.j2", **ctx), encoding="utf-8")
        if comparison:
            text = renderer.page("pages/comparison.md.j2", **comparison)
            (folder / name / "comparison.md").write_text(text, encoding="utf-8")
        for kind in kinds:
            tctx = technique_page_context(pages, kind)
            text = renderer.page(f"pages/{kind}.md.j2", **tctx)
            (folder / name / f"{kind}.md").write_text(text, encoding="utf-8")
            if kind == "max_patches":  # a unit page per layer: page count follows layers, not channels
                visuals = unit_visuals(pages)
                for row in (row for section in tctx["sections"] for row in section["rows"] if not row["error"]):
                    text = renderer.page("pages/units.md.j2", model=tctx["model"], layer=row["layer"], row=row,
                                         dataset=tctx["dataset"], visuals=visuals.get(row["layer"], {}))
                    (folder / name / unit_page(row["layer"])).write_text(text, encoding="utf-8")
        for kind, reason in reasons.items():
            t = registry.get(kind)
            text = renderer.page("pages/inapplicable.md.j2", model={"name": name, "source": pages.model.source},
                                 technique={"kind": kind, "title": t.title, "summary": t.summary}, reason=reason)
            (folder / name / f"{kind}.md").write_text(text, encoding="utf-8")
        units = sorted({unit_page(r.job.layer) for r in pages.results if r.job.kind == "max_patches" and r.job.layer
                        and r.artifact is not None and r.status != "failed"})
        navs.append(model_nav(name, [t["kind"] for t in ctx["techniques"]], bool(comparison), units))
        models.append({"name": name, "source": pages.model.source, "techniques": ctx["techniques"],
                       "failed": sum(r.status == "failed" for r in pages.results),
                       "unmet": sum(unmet(r) for r in pages.results)})
    text = renderer.page("pages/index.md.j2", title=title, models=models, summary=summary, errors=errors)
    (folder / "index.md").write_text(text, encoding="utf-8")
    write_json(folder / ".nav.json", {"models": navs})
    write_overview(folder / OVERVIEW, all_pages)


OVERVIEW = "overview.png"  # the home page's figure (site_src/index.md shows reports/overview.png)
# What the overview shows of each model, in this order: technique → how to take one picture from its artifact.
_OVERVIEW_KINDS = ("gradcam", "class_visualization", "unit_visualization", "deepdream", "style_transfer",
                   "texture_synthesis", "fooling")


def overview_tiles(pages: ModelPages, most: int = 4) -> list[tuple[np.ndarray, str]]:
    """Up to `most` pictures that show what the report holds for one model, each with a short caption: a Grad-CAM
    overlay, a class and a unit visualization, a dream, a painted or grown image; the inputs when none of these ran."""
    tiles: list[tuple[np.ndarray, str]] = []
    done = [r for r in pages.results if r.artifact is not None and r.status != "failed"]
    for kind in _OVERVIEW_KINDS:
        r = next((r for r in done if r.job.kind == kind), None)
        if r is None or len(tiles) >= most:
            continue
        a, meta = r.artifact.arrays, r.artifact.meta
        try:
            if kind == "gradcam":
                picture = pages.draw.picture(r.job.image)
                target = (meta.get("targets") or [{}])[0].get("label", "")
                tiles.append(((figures.heat_overlay(picture, a["map"][0], False, 99.0) * 255).astype(np.uint8),
                              f"Grad-CAM: {target}"))
            elif kind == "class_visualization":
                label = (meta.get("classes") or [{}])[0].get("label", "")
                tiles.append((figures.to_picture(a["regularized"][0], rgb=True), f"class: {label}"))
            elif kind == "unit_visualization":
                unit = (meta.get("units") or [{}])[0].get("channel", 0)
                tiles.append((figures.to_picture(a[next(iter(a))][0], rgb=True), f"unit {r.job.layer} #{unit}"))
            elif kind == "deepdream":
                tiles.append((figures.to_picture(a["dream"], rgb=True), f"DeepDream at {r.job.layer}"))
            elif kind in ("style_transfer", "texture_synthesis"):
                what = "style transfer" if kind == "style_transfer" else "texture (Gram)"
                tiles.append((figures.to_picture(a["results"][-1], rgb=True), what))
            elif kind == "fooling":
                tiles.append((figures.to_picture(a["fooled"], rgb=True), f"fooling: {meta.get('target', '')}"))
        except (KeyError, IndexError, ValueError, TypeError):
            continue  # an artifact of another shape: leave it out of the overview
    if not tiles:
        for r in (r for r in done if r.job.kind == "input"):
            if len(tiles) < most:
                tiles.append((pages.draw.picture(r.job.image), pages.draw.image_name(r.job.image)))
    return tiles


def write_overview(path: Path, all_pages: list[ModelPages]) -> None:
    """The home page's figure: a row of four pictures per model (at most three models), captioned."""
    rows = [(pages.model.name, overview_tiles(pages)) for pages in all_pages[:3]]
    rows = [(name, tiles) for name, tiles in rows if tiles]
    if not rows:
        return
    cols = max(len(tiles) for _, tiles in rows)
    blank = np.full((8, 8, 3), 255, np.uint8)
    grid = [[t[0] for t in tiles] + [blank] * (cols - len(tiles)) for _, tiles in rows]
    cells = [[t[1] for t in tiles] + [""] * (cols - len(tiles)) for _, tiles in rows]
    figures.picture_grid(grid, cells, [name for name, _ in rows], [""] * cols, path)


def model_nav(name: str, kinds: list[str], comparison: bool, units: list[str]) -> dict[str, Any]:
    """A model's pages in the sidebar (read by generator/mkdocs_hooks.py): grouped by technique family in the
    overview's order, as on the model page; the comparison page ends its family, the unit pages follow top patches."""
    families = []
    for title, members in registry.by_family(kinds):
        pages: list[Any] = []
        for kind in members:
            pages.append(f"{kind}.md")
            if kind == "max_patches" and units:
                pages.append({"Units by layer": units})
        if comparison and title == registry.family("saliency"):
            pages.append("comparison.md")
        families.append({title: pages})
    return {"folder": name, "title": name, "nav": families}


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, default=_json_default), encoding="utf-8")


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
