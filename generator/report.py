"""Results and their drawn figures → page models → Markdown pages (one per technique per model, the model pages, the
index) and the sidebar's `.nav.json`. Computes nothing and draws nothing: pages beside a technique's own (unit pages,
the attribution comparison) are declared as data in `EXTRA_PAGES` and `MODEL_PAGES`."""
from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from generator.comparison import comparison
from generator.pipeline import ModelPages, Result
from generator.templating import Renderer
from generator.techniques import registry


def unmet(r: Result) -> bool:
    """Whether a result did not reach its technique's goal (a unit that did not move, an image not fooled): the
    technique says so in `meta['unmet']`, and the pages count and list it."""
    return bool(r.artifact is not None and r.artifact.meta.get("unmet"))


def _row(r: Result, pages: ModelPages) -> dict[str, Any]:
    meta = r.artifact.meta if r.artifact else {}
    drawn = pages.drawn.get((r.job.kind, r.job.layer, r.job.image), {}) if r.artifact else {}
    rel = lambda p: p.split("/", 1)[1] if p else None  # noqa: E731  (pages live in the model's folder)
    return {
        "layer": r.job.layer, "image": r.job.image,
        "image_name": pages.draw.image_name(r.job.image) if r.job.image else None,
        "status": r.status, "error": r.error, "seconds": r.seconds,
        "figure": rel(drawn.get("figure")), "data": rel(drawn.get("data")), "archive": rel(drawn.get("archive")),
        "arrays": [a["name"] for a in drawn.get("arrays", [])],
        "figures": {k: rel(v) for k, v in (drawn.get("figures") or {}).items()},
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


def unit_page_context(pages: ModelPages, page: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    return {"model": page["model"], "layer": row["layer"], "row": row, "dataset": page["dataset"],
            "visuals": unit_visuals(pages).get(row["layer"], {})}


def comparison_page_context(pages: ModelPages, kinds: list[str]) -> dict[str, Any] | None:
    """The comparison page's model, with each image's figure as the figures stage drew it (None: no such page)."""
    found = comparison(pages, kinds)
    if found is None:
        return None
    for entry in found["images"]:
        drawn = pages.drawn.get(("comparison", None, entry["image"]), {})
        entry["figure"] = drawn["figure"].split("/", 1)[1] if drawn.get("figure") else None
        entry["error"] = drawn.get("error")
    return found


@dataclass(frozen=True)
class ExtraPages:
    """Pages a technique adds beside its own, one per section (layer) of its page that has no error."""

    template: str
    filename: Callable[[str], str]  # layer → the page's file, in the model's folder
    context: Callable[[ModelPages, dict, dict], dict]  # (pages, the technique page's model, its row) → page model
    nav_title: str  # the sidebar group that lists them, after the technique's page


@dataclass(frozen=True)
class ModelPage:
    """A page of its own for one model, built from several techniques' results (None from `context`: no page)."""

    filename: str
    template: str
    context: Callable[[ModelPages, list[str]], dict | None]
    family_of: str  # listed at the end of this technique's family in the sidebar


# Page count follows layers, not channels: one unit page per layer of the top patches.
EXTRA_PAGES = {"max_patches": ExtraPages("pages/units.md.j2", lambda layer: unit_page(layer), unit_page_context,
                                         "Units by layer")}
MODEL_PAGES = [ModelPage("comparison.md", "pages/comparison.md.j2", comparison_page_context, "saliency")]


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
        own = {page: page_model for page in MODEL_PAGES if (page_model := page.context(pages, kinds)) is not None}
        ctx["comparison"] = "comparison.md" if any(p.filename == "comparison.md" for p in own) else None
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "index.md").write_text(renderer.page("pages/model.md.j2", **ctx), encoding="utf-8")
        for page, page_model in own.items():
            (folder / name / page.filename).write_text(renderer.page(page.template, **page_model), encoding="utf-8")
        extras: dict[str, tuple[str, list[str]]] = {}
        for kind in kinds:
            tctx = technique_page_context(pages, kind)
            text = renderer.page(f"pages/{kind}.md.j2", **tctx)
            (folder / name / f"{kind}.md").write_text(text, encoding="utf-8")
            extra = EXTRA_PAGES.get(kind)
            if extra is None:
                continue
            files = []
            for row in (row for section in tctx["sections"] for row in section["rows"] if not row["error"]):
                files.append(extra.filename(row["layer"]))
                text = renderer.page(extra.template, **extra.context(pages, tctx, row))
                (folder / name / files[-1]).write_text(text, encoding="utf-8")
            if files:
                extras[kind] = (extra.nav_title, sorted(set(files)))
        for kind, reason in reasons.items():
            t = registry.get(kind)
            text = renderer.page("pages/inapplicable.md.j2", model={"name": name, "source": pages.model.source},
                                 technique={"kind": kind, "title": t.title, "summary": t.summary}, reason=reason)
            (folder / name / f"{kind}.md").write_text(text, encoding="utf-8")
        navs.append(model_nav(name, [t["kind"] for t in ctx["techniques"]], extras,
                              {page.family_of: page.filename for page in own}))
        models.append({"name": name, "source": pages.model.source, "techniques": ctx["techniques"],
                       "failed": sum(r.status == "failed" for r in pages.results),
                       "unmet": sum(unmet(r) for r in pages.results)})
    text = renderer.page("pages/index.md.j2", title=title, models=models, summary=summary, errors=errors)
    (folder / "index.md").write_text(text, encoding="utf-8")
    write_json(folder / ".nav.json", {"models": navs})


def model_nav(name: str, kinds: list[str], extras: dict[str, tuple[str, list[str]]] | None = None,
              own: dict[str, str] | None = None) -> dict[str, Any]:
    """A model's pages in the sidebar (read by generator/mkdocs_hooks.py): grouped by technique family in the
    overview's order, as on the model page. `extras`: technique → (group title, its extra pages), listed after the
    technique's page; `own`: technique → a model page listed at the end of that technique's family."""
    extras, own = extras or {}, own or {}
    families = []
    for title, members in registry.by_family(kinds):
        pages: list[Any] = []
        for kind in members:
            pages.append(f"{kind}.md")
            if kind in extras:
                pages.append({extras[kind][0]: extras[kind][1]})
        pages += [page for kind, page in own.items() if registry.family(kind) == title]
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
