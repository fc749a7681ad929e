"""Where a build's batches of jobs run. A batch is jobs of one model and technique that the technique runs in one
call. `LocalExecutor` runs them here, one after the other; `generator.ray_executor.RayExecutor` runs them on Ray
workers. Both give back each batch's results in the order the batches were planned, so the cache, the progress lines
and the pages do not depend on where the work was done."""
from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from typing import Any, Literal, NamedTuple

import torch

from generator.artifacts import Artifact, Job
from generator.context import RunContext
from generator.errors import one_line
from generator.techniques import registry

Status = Literal["ran", "cached", "failed"]


class Result(NamedTuple):
    """What became of one job: run, taken from the cache, or failed (with why, in one line). `where` says where it
    ran (executor, node, process, device), for build.json; None for a cached result."""

    job: Job
    status: Status
    seconds: float
    artifact: Artifact | None = None
    error: str | None = None
    where: dict[str, Any] | None = None


def here(executor: str, device: torch.device) -> dict[str, Any]:
    """Where this process runs jobs, as build.json lists it."""
    return {"executor": executor, "node": socket.gethostname(), "pid": os.getpid(), "device": str(device)}


def run_batch(jobs: list[Job], ctx: RunContext, where: dict[str, Any] | None = None) -> list[Result]:
    """Run one batch. When it raises, each job is run alone, so only the job at fault fails (in one line)."""
    technique = registry.get(jobs[0].kind)
    torch.manual_seed(ctx.seed)
    start = time.perf_counter()
    try:
        arts = technique.run(ctx, jobs)
        if len(arts) != len(jobs):
            raise RuntimeError(f"{technique.kind} returned {len(arts)} results for {len(jobs)} jobs")
    except Exception as exc:
        if len(jobs) > 1:  # find the job at fault: the others still succeed on their own
            return [r for job in jobs for r in run_batch([job], ctx, where)]
        return [Result(jobs[0], "failed", time.perf_counter() - start, None, one_line(exc), where)]
    finally:
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()
    each = (time.perf_counter() - start) / len(jobs)
    return [Result(job, "ran", each, art, None, where) for job, art in zip(jobs, arts)]


class LocalExecutor:
    """Runs each batch in this process when its results are asked for."""

    name = "local"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "node": socket.gethostname()}

    def run(self, batches: list[list[Job]], contexts: dict[str, RunContext]) -> Iterator[list[Result]]:
        for batch in batches:
            ctx = contexts[batch[0].model]
            yield run_batch(batch, ctx, here(self.name, ctx.device))

    def close(self) -> None:
        pass

    def __enter__(self) -> "LocalExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
