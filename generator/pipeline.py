"""plan(spec) → jobs; execute(jobs) → results, each ran, cached or failed. One failing job never stops the others."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from generator.cache import Cache, cache_key
from generator.context import DrawContext, RunContext
from generator.executor import LocalExecutor, Result
from generator.models import LoadedModel
from generator.progress import NoProgress
from generator.techniques import registry
from generator.artifacts import Job, Reads


@dataclass
class ModelPages:
    """One model's results on their way to pages: `drawn` holds, by (kind, layer, image), the manifest record of
    what the figures stage wrote for each result (figures, data files, arrays)."""

    model: LoadedModel
    draw: DrawContext
    results: list[Result] = field(default_factory=list)
    drawn: dict[tuple[str, str | None, str | None], dict[str, Any]] = field(default_factory=dict)


def inapplicable(model: LoadedModel, params_by_kind: dict) -> dict[str, str]:
    """kind → why that technique does not apply to the model (its page says so instead of showing figures)."""
    reasons = {kind: registry.get(kind).inapplicable(model, params) for kind, params in params_by_kind.items()}
    return {kind: reason for kind, reason in reasons.items() if reason is not None}


def plan(model: LoadedModel, params_by_kind: dict, image_ids: list[str], image_digests: dict[str, str],
         quick: bool = False, dataset_digest: str | None = None, sets: dict[str, list[str]] | None = None) -> list[Job]:
    """Every job of one model: the core techniques, then the chosen ones, expanded over layers and images.
    `image_ids` are the model's images; `sets` maps the image sets that techniques name themselves to their ids."""
    jobs: list[Job] = []
    sets = sets or {}
    wanted = {k: t.Params() for k, t in registry.core().items()} | params_by_kind
    set_digest = cache_key(images=sorted(image_digests.get(i) for i in image_ids))
    for kind, params in wanted.items():
        technique = registry.get(kind)
        if technique.inapplicable(model, params) is not None:
            continue
        if quick:
            params = params.quick()
        scope, reads = technique.scope, technique.reads(params)
        layers = technique.layers(model, params) if "layer" in scope.over else [None]
        imgs = [None] if "image" not in scope.over else (
            image_ids if reads.image_sets is None else [i for name in reads.image_sets for i in sets[name]])
        for layer in layers:
            for image in imgs:
                job = Job(model.name, kind, params, layer, image)
                job.key = job_key(job, technique, model, reads, image_digests, set_digest, dataset_digest, sets)
                jobs.append(job)
    return jobs


def job_key(job: Job, technique, model: LoadedModel, reads: Reads, image_digests: dict[str, str], set_digest: str,
            dataset_digest: str | None, sets: dict[str, list[str]]) -> str:
    """The cache key of a job, from what it reads: the model's weights, the technique's version and parameters, its
    layer and image, and what its scope and `Reads` declare (the data set, the model's chosen layers, the whole
    image set, reference images). An entry that does not apply is left out, so older keys stay valid."""
    scope = technique.scope
    extra: dict = {}
    if scope.dataset == "needs" or (scope.dataset == "follows" and dataset_digest is not None):
        extra["dataset"] = dataset_digest
    if reads.references:
        extra["references"] = [image_digests[i] for name in reads.references for i in sets[name]]
    return cache_key(
        model=model.digest, kind=job.kind, version=technique.version, params=job.params.cache_fields(),
        layer=job.layer, image=image_digests.get(job.image) if job.image else None,
        layers=model.layers if scope.over == "model" or reads.model_layers else None,
        image_set=set_digest if reads.whole_set else None, **extra,
    )


def steps(jobs: list[Job]) -> dict[tuple[str, str], int]:
    """(model, technique) → its number of jobs, in the order they run: what progress counts as a step."""
    counts: dict[tuple[str, str], int] = {}
    for job in jobs:
        counts[(job.model, job.kind)] = counts.get((job.model, job.kind), 0) + 1
    return counts


def _groups(jobs: list[Job]) -> list[list[Job]]:
    """Jobs a technique can run in one call: same model and technique (and layer, for layer × image)."""
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        over = registry.get(job.kind).scope.over
        key = (job.model, job.kind, job.layer if over == "layer×image" else None, job.key if over == "model" else None)
        groups.setdefault(key, []).append(job)
    return list(groups.values())


def execute(jobs: list[Job], contexts: dict[str, RunContext], cache: Cache, force: bool = False,
            runnable: Callable[[Job], bool] = lambda job: True, batch_size: int = 16,
            progress=NoProgress(), executor=None) -> list[Result]:
    """Run what is not cached, in batches, on `executor` (here by default). Jobs that are not `runnable` (outside
    --only/--models) are taken from the cache when there, and left out otherwise, so a partial build keeps the pages
    it already had. `progress` hears of each technique of each model as it starts (`begin`) and of its jobs as they
    end (`advance`), in plan order whichever executor ran them; results enter the cache here, as they come back."""
    results: dict[int, Result] = {}
    per_step = steps(jobs)
    events: list[tuple] = []  # in plan order: ("begin", step), ("advance", n, how), ("batch", jobs)
    batches: list[list[Job]] = []
    step = None
    for group in _groups(jobs):
        if (group[0].model, group[0].kind) != step:
            step = (group[0].model, group[0].kind)
            events.append(("begin", step))
        todo = []
        for job in group:
            art = None if force and runnable(job) else cache.get(job.key)
            if art is not None:
                results[id(job)] = Result(job, "cached", 0.0, art)
                events.append(("advance", 1, "cached"))
            elif runnable(job):
                todo.append(job)
            else:
                events.append(("advance", 1, "left out"))
        for start in range(0, len(todo), batch_size):
            batches.append(todo[start:start + batch_size])
            events.append(("batch", batches[-1]))
    finished = (executor or LocalExecutor()).run(batches, contexts)
    for event in events:
        if event[0] == "begin":
            progress.begin(" ".join(event[1]), per_step[event[1]])
        elif event[0] == "advance":
            progress.advance(event[1], event[2])
        else:
            for r in next(finished):
                if r.artifact is not None:
                    cache.put(r.job.key, r.artifact)
                results[id(r.job)] = r
            progress.advance(len(event[1]))
    return [results[id(j)] for j in jobs if id(j) in results]
