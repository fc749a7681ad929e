"""The figures stage: each artifact's figure drawn by its technique's `draw()`, its arrays written as data files, and
the manifest record of both. Figures and data files of cached results are copied from the previous output while
the code that drew them is unchanged. Returns records; artifacts are never written into."""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from generator import figures, web_images
from generator.errors import cannot_write, one_line
from generator.artifacts import file_name
from generator.comparison import comparison, figure_path
from generator.drawing import Drawer, Drawing
from generator.pipeline import ModelPages, Result
from generator.techniques import registry
from generator.techniques.dataset import figures as dataset_figures


def stem(result: Result) -> str:
    parts = [p for p in (result.job.layer, result.job.image) if p]
    return file_name("__".join(parts), empty="model")


def drawing_digest(kind: str) -> str:
    """A digest of the code that draws a technique's figures: a cached figure is reused only while it matches."""
    technique = registry.get(kind)
    return _source_digest(figures, dataset_figures, web_images,
                          *(sys.modules[c.__module__] for c in type(technique).__mro__))


def _source_digest(*modules) -> str:
    h = hashlib.sha256()
    for name in sorted({m.__name__ for m in modules}):
        source = getattr(sys.modules.get(name), "__file__", None)
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
                  previous: Path | None = None, drawer: Drawer | None = None) -> list[dict[str, Any]]:
    """Draw each artifact's figure and save its arrays in one `.npz` (the record's `data`: `write_arrays`); return
    the manifest records. Figures of cached
    results are copied from the `previous` output when the drawing code has not changed since, and so are their
    data files when they list the same arrays (a cached result's arrays are those its file was written from). A
    figure that fails to draw turns its result into a failure shown on the page. Each record is also kept in
    `pages.drawn` under its job's (kind, layer, image), for the pages. Figures are drawn by `drawer` (in worker
    processes when it has them), all submitted before the first is waited for."""
    drawer = drawer or Drawer({pages.model.name: pages.draw}, workers=1)
    old = previous_records(previous) if previous else {}
    digests: dict[str, str] = {}
    pending = []  # (index, result, figure, data, arrays, drawing, copied figures or a Future)
    for i, r in enumerate(pages.results):
        if r.artifact is None:
            progress(1)
            continue
        name = pages.model.name
        figure = f"{name}/figures/{r.job.kind}/{stem(r)}.png"
        data = f"{name}/data/{r.job.kind}/{stem(r)}.npz"
        before = old.get(r.job.key)
        drawing = digests.setdefault(r.job.kind, drawing_digest(r.job.kind))
        olds = (before or {}).get("figures") or {"main": (before or {}).get("figure")}
        reusable = (r.status == "cached" and before and before.get("figure") and before.get("drawing") == drawing
                    and before["params"] == r.job.params.model_dump(mode="json")
                    and all(f and (previous / f).is_file() for f in olds.values()))
        step = "writing its data"
        try:
            arrays = write_data(folder, r, data, before, previous)
            step = "copying its figure"
            for f in olds.values() if reusable else ():
                (folder / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(previous / f, folder / f)
        except Exception as exc:
            if cannot_write(exc):
                raise
            pages.results[i] = r._replace(status="failed", artifact=None, error=f"{step}: {one_line(exc)}")
            progress(1)
            continue
        drawn: Any = olds if reusable else drawer.submit(r.job.kind, r.artifact, r.job, name, folder / figure)
        pending.append((i, r, figure, data, arrays, drawing, drawn))
    early = submit_comparisons(folder, pages, drawer, previous)
    records = []
    for i, r, figure, data, arrays, drawing, drawn in pending:
        progress(1)
        if isinstance(drawn, Drawing):
            try:
                out = drawn.result()
            except Exception as exc:
                if cannot_write(exc):
                    raise
                pages.results[i] = r._replace(status="failed", artifact=None,
                                              error=f"drawing the figure: {one_line(exc)}")
                continue
            drawn = {k: str(Path(v).relative_to(folder)) for k, v in out.items()} if out else {}
        main = next(iter(drawn.values()), None)
        records.append({
            "model": pages.model.name, "technique": r.job.kind, "layer": r.job.layer, "image": r.job.image,
            "target": r.artifact.meta.get("target"), "params": r.job.params.model_dump(mode="json"),
            "metrics": r.artifact.metrics, "figure": main, "figures": drawn, "data": data,
            "arrays": arrays,
            "key": r.job.key, "drawing": drawing if drawn else None,
        })
        pages.drawn[(r.job.kind, r.job.layer, r.job.image)] = records[-1]
    collect_comparisons(folder, pages, early)
    return records


def write_data(folder: Path, r: Result, data: str, before: dict[str, Any] | None,
               previous: Path | None) -> list[dict[str, Any]]:
    """Write a result's data file (copied from the previous output when a cached result wrote the same one) and
    return the manifest's records of its arrays."""
    (folder / data).parent.mkdir(parents=True, exist_ok=True)
    technique = registry.get(r.job.kind)
    arrays = [array_record(name, value, data, technique.meaning(name)) for name, value in r.artifact.arrays.items()]
    if (r.status == "cached" and before and before.get("data") == data and (previous / data).is_file()
            and _shapes(before.get("arrays")) == _shapes(arrays)):
        shutil.copy2(previous / data, folder / data)
    else:
        write_arrays(folder / data, r.artifact.arrays)
    return arrays


# Float arrays of this many numbers and more (pictures, maps, activations, synthesized images) are published as
# float16: about three significant digits, more than a figure shows, at half the size. Smaller ones (scores,
# probabilities, curves, coordinates, filters of small layers) keep their precision. The cache keeps every array
# at full precision; the manifest lists each array's published dtype and, when rounded, the dtype it was computed in.
HALF_FROM = 65536


def published(value: Any) -> np.ndarray:
    """An array as the data file holds it: float16 for large float arrays whose values fit float16's range."""
    a = np.asanyarray(value)
    if a.dtype.kind == "f" and a.dtype.itemsize > 2 and a.size >= HALF_FROM:
        with np.errstate(over="ignore"):
            half = a.astype(np.float16)
        if np.array_equal(np.isfinite(half), np.isfinite(a)):  # nothing beyond ±65504
            return half
    return a


def array_record(name: str, value: Any, file: str, meaning: str | None = None) -> dict[str, Any]:
    """What the manifest lists of one array: name, shape, the dtype its file holds (and `computed`, the dtype it was
    computed in, when that differs), meaning and file."""
    a, stored = np.asanyarray(value), published(value)
    record = {"name": name, "shape": list(a.shape), "dtype": str(stored.dtype)}
    if stored.dtype != a.dtype:
        record["computed"] = str(a.dtype)
    return {**record, "meaning": meaning, "file": file}


def _shapes(listed: Any) -> list[tuple] | None:
    try:
        return [(a["name"], list(a["shape"]), a["dtype"]) for a in listed]
    except (TypeError, KeyError):
        return None


def write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Every array of an artifact, in its order (the main one first), into one deflated .npz:
    `np.load(path)[name]`. Large float arrays as float16 (`published`). Written member by member like
    np.savez_compressed, so any array name works and an object array fails here rather than when someone loads it;
    each member dated 1980-01-01 (zip's epoch), so the same arrays give the same bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for name, value in arrays.items():
            member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            member.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(member, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, published(value), allow_pickle=False)


def _comparisons(pages: ModelPages) -> list[tuple[dict, list[dict], str, str]]:
    """(entry, rows, figure path, digest) of each image's comparison figure: the digest of its inputs (the results'
    keys, the rows' titles) and of the code drawing it."""
    found = comparison(pages, list(dict.fromkeys(r.job.kind for r in pages.results)))
    code = _source_digest(figures, web_images, sys.modules[__name__], sys.modules[comparison.__module__])
    out = []
    for entry in (found or {}).get("images", []):
        rows = entry["in_order"]
        if rows:
            digest = hashlib.sha256(json.dumps([code, [(row["result"].job.key, row["title"], row["constant"])
                                                       for row in rows]]).encode()).hexdigest()[:16]
            out.append((entry, rows, figure_path(pages.model.name, entry["image"]), digest))
    return out


def submit_comparisons(folder: Path, pages: ModelPages, drawer: Drawer,
                       previous: Path | None = None) -> dict[str, tuple[str, str, Drawing]]:
    """The comparison figures handed to `drawer` beside the results' figures (by workers while the results' are
    drawn, not one after the other afterwards): image → (figure, digest, drawing). Those the `previous` output
    holds are left to `draw_comparisons`, which copies them."""
    old = previous_comparisons(previous) if previous else {}
    early = {}
    for entry, rows, figure, digest in _comparisons(pages):
        before = old.get(str(Path(figure).with_suffix("")))
        if not (before and before[1] == digest and (previous / before[0]).is_file()):
            early[entry["image"]] = (figure, digest, drawer.call(_draw_and_publish_comparison, folder, figure,
                                                                 *_comparison_arguments(pages, entry, rows)))
    return early


def collect_comparisons(folder: Path, pages: ModelPages, early: dict[str, tuple[str, str, Drawing]]) -> None:
    """Keep in `pages.drawn` the comparison figures drawn early whose inputs are still those of the final results
    (a result whose figure failed to draw leaves its comparison); `draw_comparisons` draws the others."""
    current = {entry["image"]: digest for entry, _, _, digest in _comparisons(pages)}
    for image, (figure, digest, drawing) in early.items():
        try:
            published, error = drawing.result(), None
        except Exception as exc:
            if cannot_write(exc):
                raise
            published, error = None, f"drawing the figure: {one_line(exc)}"
        if current.get(image) == digest:
            pages.drawn[("comparison", None, image)] = {"figure": published, "error": error, "digest": digest}
        elif published:  # it shows results that changed since: draw_comparisons draws it again
            (folder / published).unlink(missing_ok=True)


def draw_comparisons(folder: Path, pages: ModelPages, previous: Path | None = None) -> None:
    """The attribution comparison's figure of each image: every method's map of the first target side by side, in
    the spec's order, with its deletion and insertion curves where scored; kept in `pages.drawn` under
    ("comparison", None, image) as {figure, error, digest}. A figure whose inputs (the results' keys, the rows'
    titles) and drawing code match the `previous` output's is copied from there instead of drawn again, and one
    `write_outputs` drew already (`collect_comparisons`) is kept."""
    old = previous_comparisons(previous) if previous else {}
    for entry, rows, figure, digest in _comparisons(pages):
        done = pages.drawn.get(("comparison", None, entry["image"]))
        if done and done.get("digest") == digest:
            continue
        error = None
        before = old.get(str(Path(figure).with_suffix("")))  # (its published file, digest)
        try:
            if before and before[1] == digest and (previous / before[0]).is_file():
                figure = before[0]
                (folder / figure).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(previous / figure, folder / figure)
            else:
                figure = _draw_and_publish_comparison(folder, figure, *_comparison_arguments(pages, entry, rows))
        except Exception as exc:
            if cannot_write(exc):
                raise
            figure, error = None, f"drawing the figure: {one_line(exc)}"
        pages.drawn[("comparison", None, entry["image"])] = {"figure": figure, "error": error, "digest": digest}


def _comparison_arguments(pages: ModelPages, entry: dict, rows: list[dict]) -> tuple[np.ndarray, list, list, dict]:
    """What figures.attribution_comparison draws of one image (arrays and strings: they travel to a worker)."""
    arrays = [row["result"].artifact.arrays for row in rows]
    scored = [row["deletion_auc"] is not None for row in rows]
    return (pages.draw.picture(entry["image"]), [np.asarray(a["map"][0]) for a in arrays],
            [row["title"] + (f" ({row['constant']}: not scored)" if row["constant"] else "") for row in rows],
            dict(signed=[row["signed"] for row in rows],
                 deletion=[a["deletion"][0] if "deletion" in a and ok else None for a, ok in zip(arrays, scored)],
                 insertion=[a["insertion"][0] if "insertion" in a and ok else None for a, ok in zip(arrays, scored)],
                 deletion_auc=[row["deletion_auc"] for row in rows],
                 insertion_auc=[row["insertion_auc"] for row in rows],
                 target=f"{rows[0]['target']} (p={rows[0]['probability']:.2f})"))


def _draw_and_publish_comparison(folder: Path, figure: str, picture: np.ndarray, maps: list, titles: list,
                                 options: dict) -> str:
    """Draw one comparison figure and publish it; its published path, relative to `folder`."""
    figures.attribution_comparison(picture, maps, titles, folder / figure, **options)
    return str(web_images.publish(folder / figure).relative_to(folder))


def comparison_records(all_pages: list[ModelPages]) -> list[dict[str, str]]:
    """What manifest.json lists of the comparison figures: each one's path and the digest of what drew it."""
    return [{"figure": d["figure"], "digest": d["digest"]} for pages in all_pages
            for (kind, _, _), d in pages.drawn.items() if kind == "comparison" and d.get("figure")]


def previous_comparisons(output: Path) -> dict[str, tuple[str, str]]:
    """The comparison figures in the last build's manifest: figure path without its suffix → (path, digest)."""
    try:
        listed = json.loads((output / "manifest.json").read_text()).get("comparisons") or []
        return {str(Path(r["figure"]).with_suffix("")): (r["figure"], r["digest"]) for r in listed
                if isinstance(r, dict)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


OVERVIEW = "overview.webp"  # the home page's figure (site_src/index.md shows reports/overview.webp)
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


def write_overview(folder: Path, all_pages: list[ModelPages]) -> None:
    """The home page's figure (`OVERVIEW` in the output folder): a row of four pictures per model (at most three
    models), captioned."""
    rows = [(pages.model.name, overview_tiles(pages)) for pages in all_pages[:3]]
    rows = [(name, tiles) for name, tiles in rows if tiles]
    if not rows:
        return
    cols = max(len(tiles) for _, tiles in rows)
    blank = np.full((8, 8, 3), 255, np.uint8)
    grid = [[t[0] for t in tiles] + [blank] * (cols - len(tiles)) for _, tiles in rows]
    cells = [[t[1] for t in tiles] + [""] * (cols - len(tiles)) for _, tiles in rows]
    drawn = folder / Path(OVERVIEW).with_suffix(".png")
    figures.picture_grid(grid, cells, [name for name, _ in rows], [""] * cols, drawn)
    with Image.open(drawn) as im:  # photographs: always WebP, so the home page's link is fixed
        (folder / OVERVIEW).write_bytes(web_images.encode_webp(im.convert("RGB"), im.info.get("dpi")))
    drawn.unlink()
