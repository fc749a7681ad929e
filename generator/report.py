"""Results and their drawn figures → page models → Markdown pages (one per technique per model, the model pages, the
index) and the sidebar's `.nav.json`. Computes nothing and draws nothing: pages beside a technique's own (unit pages,
the attribution comparison) are declared as data in `EXTRA_PAGES` and `MODEL_PAGES`."""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from generator.artifacts import file_name
from generator.comparison import comparison
from generator.pipeline import ModelPages, Result
from generator.errors import cannot_write, one_line
from generator.templating import Renderer, escape_md
from generator.techniques import registry

REPRODUCE_PAGE = "reproduce.md"  # the exact commands that rebuild the report (the footer links it: mkdocs_hooks)


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
        "figure": rel(drawn.get("figure")), "data": rel(drawn.get("data")),
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
    return f"units-{file_name(layer)}.md"


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


def failure_page(title: str, error: str) -> str:
    """What stands in for a page that could not be written: its title and why, in one sentence."""
    return (f"# {escape_md(title)}\n\n!!! failure \"This page could not be written\"\n\n    {escape_md(error)}\n\n"
            "    Every other page of the report is complete; `build.json` lists this failure under `failures`.\n")


def write_page(folder: Path, page: str, title: str, render: Callable[[], str], failures: list[dict[str, str]]) -> bool:
    """Write one page (`page`: its path in the output folder). A page whose model or template raises is replaced by
    `failure_page` and recorded in `failures`; the other pages are written all the same."""
    try:
        text = render()
    except Exception as exc:
        if cannot_write(exc):
            raise
        page_failed(folder, page, title, exc, failures)
        return False
    (folder / page).parent.mkdir(parents=True, exist_ok=True)
    (folder / page).write_text(text, encoding="utf-8")
    return True


def page_failed(folder: Path, page: str, title: str, exc: Exception, failures: list[dict[str, str]]) -> None:
    """Record a page that could not be written, and write `failure_page` in its place."""
    failures.append({"stage": "page", "file": page, "error": one_line(exc)})
    (folder / page).parent.mkdir(parents=True, exist_ok=True)
    (folder / page).write_text(failure_page(title, one_line(exc)), encoding="utf-8")


def write_pages(folder: Path, renderer: Renderer, title: str, all_pages: list[ModelPages],
                selected: dict[str, list[str]], summary: list[dict[str, Any]], errors: list[str],
                skipped: dict[str, dict[str, str]] | None = None, comparisons: list[dict[str, Any]] | None = None
                ) -> list[dict[str, str]]:
    """Every page, and the failures of those that could not be written (each replaced by a page that says so).
    `skipped`: model → technique → why it does not apply; such a technique gets a page saying so. `comparisons`:
    name, page, models, data set of each comparison page, listed on the home page and on its models' pages."""
    comparisons = comparisons or []
    failures: list[dict[str, str]] = []
    models, navs = [], []
    for pages in all_pages:
        name = pages.model.name
        kinds = [k for k in selected[name] if any(r.job.kind == k for r in pages.results)]
        reasons = (skipped or {}).get(name, {})
        try:
            ctx = model_page_context(pages, kinds, reasons)
        except Exception as exc:  # the model page says so; its technique pages are still written
            ctx = {"techniques": [{"kind": k, "title": registry.get(k).title, "summary": registry.get(k).summary,
                                   "failed": 0, "jobs": 0, "unmet": 0, "inapplicable": reasons.get(k)}
                                  for k in list(kinds) + list(reasons)]}
            page_failed(folder, f"{name}/index.md", name, exc, failures)
        own = {}
        for page in MODEL_PAGES:
            try:
                page_model = page.context(pages, kinds)
            except Exception as exc:  # its page says so, like a page whose template fails
                page_failed(folder, f"{name}/{page.filename}", page.filename, exc, failures)
                own[page] = None
                continue
            if page_model is not None:
                own[page] = page_model
        ctx["comparison"] = "comparison.md" if any(p.filename == "comparison.md" for p in own) else None
        ctx["compared_in"] = [c for c in comparisons if name in c["models"]]
        if "model" in ctx:
            write_page(folder, f"{name}/index.md", name, lambda: renderer.page("pages/model.md.j2", **ctx), failures)
        for page, page_model in own.items():
            if page_model is not None:
                write_page(folder, f"{name}/{page.filename}", page.filename,
                           lambda: renderer.page(page.template, **page_model), failures)
        extras: dict[str, tuple[str, list[str]]] = {}
        for kind in kinds:
            tctx: dict[str, Any] = {}

            def technique_page() -> str:
                tctx.update(technique_page_context(pages, kind))
                return renderer.page(f"pages/{kind}.md.j2", **tctx)

            written = write_page(folder, f"{name}/{kind}.md", registry.get(kind).title, technique_page, failures)
            extra = EXTRA_PAGES.get(kind)
            if extra is None or not written:
                continue
            files = []
            for row in (row for section in tctx["sections"] for row in section["rows"] if not row["error"]):
                files.append(extra.filename(row["layer"]))
                write_page(folder, f"{name}/{files[-1]}", f"{row['layer']}",
                           lambda: renderer.page(extra.template, **extra.context(pages, tctx, row)), failures)
            if files:
                extras[kind] = (extra.nav_title, sorted(set(files)))
        for kind, reason in reasons.items():
            t = registry.get(kind)
            write_page(folder, f"{name}/{kind}.md", t.title, lambda: renderer.page(
                "pages/inapplicable.md.j2", model={"name": name, "source": pages.model.source},
                technique={"kind": kind, "title": t.title, "summary": t.summary}, reason=reason), failures)
        navs.append(model_nav(name, [t["kind"] for t in ctx["techniques"]], extras,
                              {page.family_of: page.filename for page in own}))
        models.append({"name": name, "source": pages.model.source, "techniques": ctx["techniques"],
                       "failed": sum(r.status == "failed" for r in pages.results),
                       "unmet": sum(unmet(r) for r in pages.results)})
    listed = errors + [f"{f['file']}: {f['error']}" for f in failures]
    write_page(folder, "index.md", title, lambda: renderer.page("pages/index.md.j2", title=title, models=models,
                                                                summary=summary, errors=listed,
                                                                comparisons=comparisons), failures)
    write_json(folder / ".nav.json", {"models": navs})
    return failures


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
