"""Results → figures, data files, pages, manifest.json and build.json, all written into one (staging) folder."""
from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from generator.context import DrawContext
from generator.models import LoadedModel
from generator.pipeline import Result, one_line
from generator.render import Renderer
from generator.techniques import registry


@dataclass
class ModelPages:
    model: LoadedModel
    draw: DrawContext
    results: list[Result] = field(default_factory=list)


def stem(result: Result) -> str:
    parts = [p for p in (result.job.layer, result.job.image) if p]
    return re.sub(r"[^A-Za-z0-9_.-]+", "--", "__".join(parts)) or "model"


def write_outputs(folder: Path, pages: ModelPages, progress: Callable[[int], None]) -> list[dict[str, Any]]:
    """Draw each artifact's figure and save its main array; return the manifest records. A figure that fails
    to draw turns its result into a failure shown on the page."""
    records = []
    for i, r in enumerate(pages.results):
        progress(1)
        if r.artifact is None:
            continue
        name = pages.model.name
        figure = f"{name}/figures/{r.job.kind}/{stem(r)}.png"
        data = f"{name}/data/{r.job.kind}/{stem(r)}.npy"
        (folder / data).parent.mkdir(parents=True, exist_ok=True)
        np.save(folder / data, r.artifact.main, allow_pickle=False)
        try:
            drawn = registry.get(r.job.kind).draw(r.artifact, r.job, pages.draw, folder / figure)
        except Exception as exc:
            pages.results[i] = Result(r.job, "failed", r.seconds, None, f"drawing the figure: {one_line(exc)}")
            continue
        r.artifact.meta["_figure"] = figure if drawn else None
        r.artifact.meta["_data"] = data
        records.append({
            "model": name, "technique": r.job.kind, "layer": r.job.layer, "image": r.job.image,
            "target": r.artifact.meta.get("target"), "params": r.job.params.model_dump(mode="json"),
            "metrics": r.artifact.metrics, "figure": figure if drawn else None, "data": data, "key": r.job.key,
        })
    return records


def _row(r: Result, pages: ModelPages) -> dict[str, Any]:
    meta = r.artifact.meta if r.artifact else {}
    rel = lambda p: p.split("/", 1)[1] if p else None  # noqa: E731  (pages live in the model's folder)
    return {
        "layer": r.job.layer, "image": r.job.image,
        "image_name": pages.draw.image_name(r.job.image) if r.job.image else None,
        "status": r.status, "error": r.error, "seconds": r.seconds,
        "figure": rel(meta.get("_figure")), "data": rel(meta.get("_data")),
        "meta": meta, "metrics": meta.get("metrics", {}),
    }


def _sections(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows grouped by layer, in plan order."""
    groups: dict[Any, list] = defaultdict(list)
    for row in rows:
        groups[row["layer"]].append(row)
    return [{"layer": layer, "rows": items} for layer, items in groups.items()]


def model_page_context(pages: ModelPages, selected: list[str]) -> dict[str, Any]:
    m = pages.model
    by_kind: dict[str, list[Result]] = defaultdict(list)
    for r in pages.results:
        by_kind[r.job.kind].append(r)
    arch = next(iter(by_kind.get("architecture", [])), None)
    techniques = [
        {"kind": k, "title": registry.get(k).title, "summary": registry.get(k).summary,
         "failed": sum(r.status == "failed" for r in by_kind[k]), "jobs": len(by_kind[k])}
        for k in selected if by_kind.get(k)
    ]
    return {
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
    }


def write_pages(folder: Path, renderer: Renderer, title: str, all_pages: list[ModelPages],
                selected: dict[str, list[str]], summary: list[dict[str, Any]], errors: list[str]) -> None:
    models = []
    for pages in all_pages:
        name = pages.model.name
        kinds = [k for k in selected[name] if any(r.job.kind == k for r in pages.results)]
        ctx = model_page_context(pages, kinds)
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "index.md").write_text(renderer.page("pages/model.md.j2", **ctx), encoding="utf-8")
        for kind in kinds:
            text = renderer.page(f"pages/{kind}.md.j2", **technique_page_context(pages, kind))
            (folder / name / f"{kind}.md").write_text(text, encoding="utf-8")
        models.append({"name": name, "source": pages.model.source, "techniques": ctx["techniques"],
                       "failed": sum(r.status == "failed" for r in pages.results)})
    text = renderer.page("pages/index.md.j2", title=title, models=models, summary=summary, errors=errors)
    (folder / "index.md").write_text(text, encoding="utf-8")


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, default=_json_default), encoding="utf-8")


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
