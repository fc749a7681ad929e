"""Where figures are drawn: in worker processes, one per core, when a build has many to draw; in this process
otherwise. A figure is matplotlib's layout, rasterizing and PNG encoding: one core's work that no library spreads
over more, so the figures stage of a cold build ran on one of the machine's cores while the others idled.

Workers are started with `spawn` (never `fork`: a forked child of a process whose OpenMP threads have run can hang
in its first parallel region). Each receives the draw contexts once, when it starts, and then one artifact per
figure; exceptions come back whole, so a figure that fails is a failure on its page as before, and a full disk
still stops the build."""
from __future__ import annotations

import multiprocessing
import os
import pickle
from dataclasses import replace
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from generator.artifacts import Artifact, Job
from generator import web_images
from generator.context import DrawContext
from generator.techniques import registry

# Below this many figures to draw, starting workers (each imports torch and matplotlib and unpickles the models:
# a few seconds) costs more than it saves.
MIN_FIGURES = 40
MAX_WORKERS = 8

_contexts: dict[str, DrawContext] = {}  # a worker's draw contexts, by model name


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def draw_one(kind: str, art: Artifact, job: Job, env: DrawContext, path: Path) -> Any:
    """{name: path} of the figures the technique's `draw` made, each in the format it is published in (PNG or WebP:
    `web_images`), or False when it drew none."""
    out = registry.get(kind).draw(art, job, env, path)
    if isinstance(out, dict):
        return {name: str(web_images.publish(Path(p))) for name, p in out.items()}
    return {"main": str(web_images.publish(path))} if out else False


# What goes to a worker is pickled here with the standard pickler, into bytes. multiprocessing's own pickler would
# use torch's reducers, which move a tensor's storage into shared memory: numpy arrays that view the old storage
# (a model's weights, seen through `.numpy()`) would then read freed memory.
def _start_worker(contexts: bytes) -> None:
    torch.set_num_threads(1)  # one core per worker: the workers share the machine
    _contexts.update(pickle.loads(contexts))


def _draw_in_worker(task: bytes) -> Any:
    kind, art, job, model, path = pickle.loads(task)
    return draw_one(kind, art, job, _contexts[model], path)


def _call_in_worker(task: bytes) -> Any:
    function, args = pickle.loads(task)
    return function(*args)


def _without_weights(contexts: dict[str, DrawContext]) -> dict[str, DrawContext]:
    """The contexts a worker gets: figures draw from artifacts, images and labels, never through the network, so
    its weights (hundreds of MB for some models) stay here."""
    return {name: replace(ctx, model=replace(ctx.model, module=None, _probes={})) for name, ctx in contexts.items()}


class Drawing:
    """One figure to draw: `result()` is the technique's `draw` return value, or raises what drawing raised. Drawn
    in a worker when the drawer has started them, else here when `result()` is first asked for."""

    def __init__(self, drawer: "Drawer", args: tuple, function=None):
        self.drawer, self.args, self.function = drawer, args, function
        self.future: Future | None = None

    def result(self) -> Any:
        if self.future is None:
            self.future = Future()
            try:
                if self.function is not None:
                    self.future.set_result(self.function(*self.args))
                else:
                    kind, art, job, model, path = self.args
                    self.future.set_result(draw_one(kind, art, job, self.drawer.contexts[model], path))
            except Exception as exc:
                self.future.set_exception(exc)
        return self.future.result()

    def _submit(self, pool: ProcessPoolExecutor) -> None:
        if self.function is not None:
            self.future = pool.submit(_call_in_worker, pickle.dumps((self.function, self.args)))
        else:
            self.future = pool.submit(_draw_in_worker, pickle.dumps(self.args))


class Drawer:
    """Hands out `Drawing`s. Workers start once `MIN_FIGURES` figures are waiting (fewer are drawn here, when
    asked for), one per core up to `workers`."""

    def __init__(self, contexts: dict[str, DrawContext], workers: int | None = None):
        self.contexts = contexts
        self.workers = min(cores(), MAX_WORKERS) if workers is None else workers
        self.pool: ProcessPoolExecutor | None = None
        self.waiting: list[Drawing] = []

    def submit(self, kind: str, art: Artifact, job: Job, model: str, path: Path) -> Drawing:
        return self._queue(Drawing(self, (kind, art, job, model, path)))

    def call(self, function, *args) -> Drawing:
        """`function(*args)` drawn like a technique's figure (in a worker when there are workers): a module-level
        function, and arguments that pickle (arrays and strings: the figures of the comparison pages)."""
        return self._queue(Drawing(self, args, function))

    def _queue(self, drawing: Drawing) -> Drawing:
        self.waiting.append(drawing)
        if self.pool is None and self.workers > 1 and len(self.waiting) >= MIN_FIGURES:
            self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_start_worker,
                                            initargs=(pickle.dumps(_without_weights(self.contexts)),))
        if self.pool is not None:
            for waiting in self.waiting:
                if waiting.future is None:
                    waiting._submit(self.pool)
            self.waiting.clear()
        return drawing

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "Drawer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
