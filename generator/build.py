"""A whole build: spec → checks → jobs → cache/run → figures, pages, manifest → (optionally) the MkDocs site.
The output folder and the site are replaced only when complete, so a crash never leaves them half-written."""
from __future__ import annotations

import shutil
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from generator.cache import Cache
from generator.checks import ReportSpec, prepare, sets_used_by
from generator.context import DrawContext, RunContext
from generator.drawing import Drawer
from generator.executor import LocalExecutor
from generator.errors import ConvscopeError, cannot_write, did_you_mean, one_line
from generator.techniques.dataset.feature_pass import FeatureStore
from generator.pipeline import Result, execute, inapplicable, plan, steps
from generator.progress import StageProgress
from generator.ray_executor import RayExecutor, parse_executor
from generator.spec import DEVICE_PATTERN
from generator.templating import Renderer
from generator.outputs import OVERVIEW, comparison_records, draw_comparisons, write_outputs, write_overview
from generator.report import REPRODUCE_PAGE, ModelPages, write_json, write_page, write_pages
from generator.compare import stage as compare
from generator.provenance import pip_pin, provenance
from generator.site import build_site, folder_locks, remove_leftovers, replace_folder, staging_folder
from generator.techniques import registry


@dataclass
class BuildOptions:
    only: list[str] | None = None
    models: list[str] | None = None
    skip: list[str] | None = None
    device: str | None = None
    executor: str | None = None  # local, ray or ray:ADDRESS (--executor); None: the spec's `executor`
    force: bool = False
    quick: bool = False
    site: Path | None = None
    mkdocs_config: Path | None = None
    data: bool = True  # publish the data files with the site (--no-data: they stay in the output folder only)
    command: list[str] | None = None  # the command line, for the provenance (build.json, the Reproduce page)


def build(spec_path: Path, options: BuildOptions, console: Console) -> int:
    started = time.time()
    spec = ReportSpec.load(spec_path)
    if options.models:
        names = [n for m in spec.models for n in dict.fromkeys([m.name] + m.members)]
        unknown = [n for n in options.models if n not in names]
        if unknown:
            raise ConvscopeError("--models", f"no model '{unknown[0]}' in {spec_path}; {did_you_mean(unknown[0], names, 'models')}")
        options.models = [member for n in options.models for member in spec.members(n)]  # a series: its checkpoints
    if options.only:
        known = list(registry.TECHNIQUES)
        unknown = [k for k in options.only if k not in known]
        if unknown:
            raise ConvscopeError("--only", f"no technique '{unknown[0]}'; {did_you_mean(unknown[0], known, 'techniques')}")

    if options.skip:
        names = [m.name for m in spec.models] + list(spec.datasets)
        unknown = [n for n in options.skip if n not in names]
        if unknown:
            raise ConvscopeError("--skip", f"no model or data set '{unknown[0]}' in {spec_path}; {did_you_mean(unknown[0], names, 'names')}")
        console.print(f"leaving out {', '.join(options.skip)} (--skip)")
    folders = [spec.resolve(spec.cache), spec.resolve(spec.output)] + ([options.site] if options.site else [])
    with folder_locks(folders, console):
        return _build(spec, options, console, started)


def _build(spec: ReportSpec, options: BuildOptions, console: Console, started: float) -> int:
    stages: dict[str, float] = {}  # seconds of each stage, for build.json (bench/build.py prints them)
    clock = time.perf_counter()
    executor_name, address = parse_executor(options.executor) if options.executor else (spec.executor, None)
    device_name = options.device or spec.device
    if executor_name == "ray" and not DEVICE_PATTERN.match(device_name):
        raise ConvscopeError("--device", f"'{device_name}' is not a device; use auto, cpu, cuda, cuda:N or mps")
    with console.status("loading images, data sets and models, checking the spec"):
        # On Ray the workers load the models on their own devices; here they are only checked and planned.
        prepared = prepare(spec, "cpu" if executor_name == "ray" else options.device, skip=options.skip)
    for name, data in prepared.datasets.items():
        for line in data.notes + [f"skipped unreadable {s['name']} ({s['reason']})" for s in data.skipped[:5]]:
            console.print(f"[yellow]datasets.{name}[/]: {line}", highlight=False)
    cache = Cache(spec.resolve(spec.cache))
    contexts: dict[str, RunContext] = {}
    draws: dict[str, DrawContext] = {}
    jobs = []
    selected: dict[str, list[str]] = {}
    skipped: dict[str, dict[str, str]] = {}  # model → technique → why it does not apply
    for model in prepared.models:
        ms = spec.models[model.spec_index]
        own = [r.id for s in spec.image_sets_of(ms) for r in prepared.images[s]]
        records = {r.id: r for s in sets_used_by(spec, ms) for r in prepared.images[s]}
        dataset = prepared.datasets.get(model.dataset) if model.dataset else None
        params = ms.technique_params()
        selected[model.name] = list(params)
        skipped[model.name] = inapplicable(model, params)
        if ms.dataset and model.dataset is None:  # its data set was left out with --skip
            skipped[model.name].update({k: f"its data set '{ms.dataset}' was left out of this build (--skip)"
                                        for k in skipped[model.name] if registry.get(k).uses_dataset})
        params = {k: p for k, p in params.items() if k not in skipped[model.name]}
        sets = {s: [r.id for r in prepared.images[s]] for s in sets_used_by(spec, ms)}
        model_jobs = plan(model, params, own, {k: r.digest for k, r in records.items()}, quick=options.quick,
                          dataset_digest=dataset.digest if dataset else None, sets=sets)
        features = None
        if dataset is not None:
            layers = [j.layer for j in model_jobs if j.layer and registry.get(j.kind).scope.dataset != "none"]
            features = FeatureStore(model, dataset, spec.resolve(spec.cache), layers)
        contexts[model.name] = RunContext(model, records, quick=options.quick, seed=spec.seed, dataset=dataset,
                                          features=features, own=own)
        draws[model.name] = DrawContext(model, records, dataset)
        jobs += model_jobs

    def runnable(job) -> bool:
        return (not options.models or job.model in options.models) and (
            not options.only or job.kind in options.only or registry.get(job.kind).always)

    device = prepared.models[0].device if prepared.models else torch.device("cpu")
    stages["prepare"], clock = time.perf_counter() - clock, time.perf_counter()
    if executor_name == "ray":
        settings = spec.ray.model_copy(update={"address": address}) if address else spec.ray
        executor = RayExecutor(settings, device_name, spec.base_dir, console)
        device = executor.device
    else:
        executor = LocalExecutor()
    console.print(f"[bold]{spec.title}[/]: {len(prepared.models)} model(s), {len(jobs)} jobs, device {device}")
    with executor, StageProgress(console, "jobs", len(steps(jobs)), len(jobs)) as progress:
        for ctx in contexts.values():  # a long pass over a data set says how far it got
            if ctx.features is not None:
                ctx.features.progress = progress.note
        results = execute(jobs, contexts, cache, force=options.force, runnable=runnable, progress=progress,
                          executor=executor)
    stages["jobs"], clock = time.perf_counter() - clock, time.perf_counter()
    comparisons = compare.plan(spec, prepared.models, prepared.datasets, contexts)
    if comparisons:
        pairs = [p for c in comparisons for p in c.pairs]
        compare.run(comparisons, cache, contexts, force=options.force,
                    runnable=lambda pair: not options.models or {pair.a.name, pair.b.name} & set(options.models))
        console.print(f"comparisons: {len(pairs)} pair(s), {sum(p.status == 'cached' for p in pairs)} cached, "
                      f"{sum(p.status == 'failed' for p in pairs)} failed, {time.perf_counter() - clock:.0f} s",
                      highlight=False)
        stages["comparisons"], clock = time.perf_counter() - clock, time.perf_counter()
    for line in cache.unreadable:
        console.print(f"[yellow]warning[/]: cache entry {line}; recomputed", highlight=False)

    output = spec.resolve(spec.output)
    remove_leftovers(output)
    staging = staging_folder(f".{output.name}.", output.parent if output.parent.exists() else None)
    try:
        by_model = {m.name: ModelPages(m, draws[m.name]) for m in prepared.models}
        for r in results:
            by_model[r.job.model].results.append(r)
        manifest = []
        failures: list[dict[str, str]] = []  # figures and pages that could not be written (each page says so)
        with StageProgress(console, "figures", len(by_model), len(results)) as progress, Drawer(draws) as drawer:
            for pages in by_model.values():
                progress.begin(f"{pages.model.name} figures", len(pages.results))
                manifest += write_outputs(staging, pages, progress.advance, previous=output, drawer=drawer)
                failures += guarded("figure", f"{pages.model.name}/figures/comparison", draw_comparisons, staging, pages,
                                    output)
        failures += guarded("figure", OVERVIEW, write_overview, staging, list(by_model.values()))
        own_results = {name: pages.results for name, pages in by_model.items()}
        for c in comparisons:
            failed = guarded("figure", c.page, lambda c: manifest.extend(compare.write(staging, [c], own_results,
                                                                                      draws)), c)
            for pair in c.pairs if failed else ():
                pair.status, pair.error = "failed", pair.error or failed[0]["error"]
            failures += failed
        stages["figures"], clock = time.perf_counter() - clock, time.perf_counter()
        results = [r for pages in by_model.values() for r in pages.results]
        summary = summarize(results)
        errors = [f"{r.job.label}: {r.error}" for r in results if r.status == "failed"]
        errors += [f"{f['file']}: {f['error']}" for f in failures]
        listed = [{"name": c.name, "page": c.page, "models": [m.name for m in c.models], "dataset": c.dataset_name}
                  for c in comparisons]
        facts = provenance(spec.path, prepared.models, str(device), options.command or ["convscope", "build", str(spec.path)])
        renderer = Renderer(data_published=options.data)
        write_page(staging, REPRODUCE_PAGE, "Reproduce this report",
                   lambda: renderer.page("pages/reproduce.md.j2", title=spec.title, facts=facts, spec=spec.path.name,
                                         torch_pin=pip_pin(facts["torch"]), vision_pin=pip_pin(facts["torchvision"])),
                   failures)
        failures += write_pages(staging, renderer, spec.title, list(by_model.values()), selected, summary, errors,
                                skipped, listed)
        for c in comparisons:
            write_page(staging, c.page, c.name, lambda: renderer.page("pages/model_comparison.md.j2",
                                                                     **compare.page_context(c, staging)), failures)
        errors += [f"comparison {c.name}: {p.a.name} → {p.b.name}: {p.error}" for c in comparisons for p in c.pairs
                   if p.error]
        errors += [f"{f['file']}: {f['error']}" for f in failures if f["stage"] == "page"]
        stages["pages"] = time.perf_counter() - clock
        write_json(staging / "manifest.json", {"spec": str(spec.path), "artifacts": manifest,
                                               "comparisons": comparison_records(list(by_model.values()))})
        write_json(staging / "build.json", {
            "spec": str(spec.path), "provenance": facts, "site": {"data": options.data},
            "device": str(device), "executor": executor.describe(), "quick": options.quick,
            "force": options.force,
            "seconds": round(time.time() - started, 3), "stages": {k: round(v, 3) for k, v in stages.items()},
            "failures": failures,
            "comparisons": [{"comparison": c.name, "models": [p.a.name, p.b.name], "status": p.status,
                             "seconds": round(p.seconds, 4), "error": p.error, "key": p.key}
                            for c in comparisons for p in c.pairs],
            "jobs": [{"model": r.job.model, "technique": r.job.kind, "layer": r.job.layer, "image": r.job.image,
                      "status": r.status, "seconds": round(r.seconds, 4), "error": r.error, "key": r.job.key,
                      "where": r.where}
                     for r in results],
        })
        replace_folder(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    print_summary(console, summary, output)
    site_ok = True
    if options.site is not None:
        site_ok = build_site(options.mkdocs_config or spec.base_dir / "mkdocs.yml", options.site, console)
    failed = sum(r.status == "failed" for r in results) + len(failures) + sum(
        p.status == "failed" for c in comparisons for p in c.pairs)
    for line in errors:
        console.print(f"[red]failed[/] {line}", highlight=False)
    return 1 if failed or not site_ok else 0


def guarded(stage: str, file: str, write, *args) -> list[dict[str, str]]:
    """Run one writing step of the figures stage; a step that raises is a failure in one line (the build goes on,
    lists it in build.json and on the index page, and exits with status 1), not a lost build."""
    try:
        write(*args)
        return []
    except Exception as exc:
        if cannot_write(exc):
            raise
        return [{"stage": stage, "file": file, "error": one_line(exc)}]


def summarize(results: list[Result]) -> list[dict]:
    rows: dict[str, dict] = defaultdict(lambda: {"ran": 0, "cached": 0, "failed": 0, "seconds": 0.0})
    for r in results:
        row = rows[r.job.kind]
        row[r.status] += 1
        row["seconds"] += r.seconds
    return [{"technique": k, **v} for k, v in rows.items()]


def print_summary(console: Console, summary: list[dict], output: Path) -> None:
    table = Table(title=f"jobs → {output}")
    for col in ("technique", "ran", "cached", "failed", "seconds"):
        table.add_column(col, justify="left" if col == "technique" else "right")
    for row in summary:
        table.add_row(row["technique"], str(row["ran"]), str(row["cached"]),
                      f"[red]{row['failed']}[/]" if row["failed"] else "0", f"{row['seconds']:.1f}")
    total = {k: sum(r[k] for r in summary) for k in ("ran", "cached", "failed", "seconds")}
    table.add_row("[bold]all[/]", str(total["ran"]), str(total["cached"]), str(total["failed"]), f"{total['seconds']:.1f}")
    console.print(table)

