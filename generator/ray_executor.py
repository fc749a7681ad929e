"""Batches of jobs on Ray (`executor: ray`, `--executor ray[:ADDRESS]`; `pip install 'convscope[ray]'`).

Each model gets one worker, a Ray actor holding `cpus_per_model` CPUs and `gpus_per_model` GPUs, which loads the
model once (from what this process sends it: the run context with the weights, the images and the data set's file
bytes, so a worker needs no shared file system) and runs that model's batches one after another, as `run_batch`
does here. Workers of different models run at the same time, as many as the cluster's resources hold; a worker is
stopped as soon as its model's batches are done, so the next model's can start. Results come back as arrays and
this process writes them into the same content-addressed cache as a local build: the two share a cache.

Failures stay as isolated as locally: a batch that raises is rerun job by job on its worker, and when a worker dies
(a crash, the out-of-memory killer) a new one takes its place and its batches are rerun job by job, so only the job
that kills a worker fails. Ctrl-C stops every worker."""
from __future__ import annotations

import copy
import logging
import os
import sys
import sysconfig
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from generator.artifacts import Job
from generator.context import RunContext, resolve_device
from generator.datasets import in_memory
from generator.errors import ConvscopeError, one_line
from generator.executor import Result, here, run_batch
from generator.spec import RaySpec

INSTALL = "pip install 'convscope[ray]'"


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConvscopeError("executor", f"'ray' needs Ray, which is not installed here: {INSTALL}") from None
    return ray


class ModelWorker:
    """One model on one Ray worker (made a Ray actor by `RayExecutor`): loads the context once, runs batches."""

    def __init__(self, context: bytes, device: str, threads: int):
        torch.set_num_threads(threads)
        self.broken: str | None = None  # why the model could not be loaded here: every job then fails saying so
        try:
            self.ctx = _unpack(context, resolve_device(device))
        except Exception as exc:
            self.broken = f"its Ray worker could not load the model: {one_line(exc)}"
            self.ctx = None
        ray = import_ray()
        self.where = here("ray", self.ctx.device if self.ctx else torch.device(device))
        self.where["ip"] = ray.util.get_node_ip_address()

    def run(self, jobs: list[Job]) -> list[tuple]:
        if self.ctx is None:
            return [("failed", 0.0, None, self.broken, self.where) for _ in jobs]
        return [tuple(r)[1:] for r in run_batch(jobs, self.ctx, self.where)]


def _pack(ctx: RunContext, base_dir: Path) -> bytes:
    """The context as bytes a worker anywhere can load: weights on the CPU, the data set's files inside it, no
    callbacks into this process. Modules loaded from files beside the spec (a factory model's code) travel by value,
    since a worker may not have those files."""
    ray = import_ray()
    model = replace(ctx.model, module=ctx.model.module.cpu(), device=torch.device("cpu"))
    dataset = in_memory(ctx.dataset) if ctx.dataset is not None else None
    features = None
    if ctx.features is not None:
        features = copy.copy(ctx.features)
        features.model, features.progress = model, None
        features.dataset = dataset if ctx.features.dataset is ctx.dataset else in_memory(ctx.features.dataset)
    ctx = replace(ctx, model=model, dataset=dataset, features=features, _inputs={})
    pickler = ray.cloudpickle
    own = _user_modules(ctx.model.module, base_dir)
    for module in own:
        pickler.register_pickle_by_value(module)
    try:
        return pickler.dumps(ctx)
    finally:
        for module in own:
            pickler.unregister_pickle_by_value(module)


def _unpack(data: bytes, device: torch.device) -> RunContext:
    ctx = import_ray().cloudpickle.loads(data)
    ctx.model.module.to(device)
    ctx.model.device = device
    ctx.model._probes.clear()  # their tensors were made on the other machine's device
    if ctx.features is not None:
        root = ctx.features.root
        try:
            root.mkdir(parents=True, exist_ok=True)
            writable = os.access(root, os.W_OK)
        except OSError:
            writable = False
        if not writable:  # the spec's cache folder is not on this machine: the data-set pass is kept in /tmp
            ctx.features.root = Path("/tmp") / "convscope-features"
    return ctx


def _user_modules(module: torch.nn.Module, base_dir: Path) -> list[Any]:
    """The Python modules that are not installed packages and that a model's code may need: those its classes come
    from and every module loaded from beside the spec (a factory's file and what it imports from there)."""
    installed = [Path(sysconfig.get_paths()[k]).resolve() for k in ("stdlib", "platstdlib", "purelib", "platlib")]
    classes = {type(m).__module__ for m in module.modules()}
    found = []
    for name, mod in list(sys.modules.items()):
        path = getattr(mod, "__file__", None)
        if path is None or name.split(".")[0] in ("generator", "torch", "torchvision"):
            continue
        path = Path(path).resolve()
        if any(path.is_relative_to(p) for p in installed):
            continue
        if name in classes or path.is_relative_to(base_dir.resolve()):
            found.append(mod)
    return found


class RayExecutor:
    """Runs batches on Ray workers, one per model; see the module's docstring."""

    name = "ray"

    def __init__(self, settings: RaySpec, device: str, base_dir: Path, console: Console):
        self.ray = ray = import_ray()
        self.base_dir = base_dir
        self.started = not ray.is_initialized()  # a Ray this build started (or joined) is shut down at its end
        if self.started:
            try:
                # Ray's start-up notes (a token was made, where its logs go) are not the build's to print.
                logging.getLogger("ray").setLevel(logging.ERROR)
                ray.init(address=settings.address, include_dashboard=False, logging_level=logging.ERROR,
                         log_to_driver=False)
            except Exception as exc:
                raise ConvscopeError("ray.address", f"cannot start or join Ray at {settings.address or 'this machine'}:"
                                                    f" {one_line(exc)}") from None
        try:
            self._fit(settings, device)
        except ConvscopeError:
            self.close()
            raise
        self.address = ray.get_runtime_context().gcs_address
        self.actors: dict[str, Any] = {}
        self.contexts: dict[str, Any] = {}  # model → its packed context, in Ray's object store
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        console.print(f"ray: {'started' if self.started and not settings.address else 'joined'} {self.address}, "
                      f"{nodes} node(s) with {self.resources.get('CPU', 0):g} CPU, {self.resources.get('GPU', 0):g} "
                      f"GPU; each model's worker takes {self.options['num_cpus']:g} CPU, {self.options['num_gpus']:g} "
                      f"GPU, device {self.device}", highlight=False)

    def _fit(self, settings: RaySpec, device: str) -> None:
        """Each worker's resources and device, from the spec and what the cluster has."""
        self.resources = {k: v for k, v in self.ray.cluster_resources().items() if k in ("CPU", "GPU", "memory")}
        gpus = self.resources.get("GPU", 0)
        per_gpu = settings.gpus_per_model
        if per_gpu is None:
            per_gpu = 1.0 if gpus >= 1 and device != "cpu" else 0.0
        if device.startswith("cuda") and per_gpu == 0:
            raise ConvscopeError("device", f"'{device}' asked for, but the Ray cluster has no GPU to give each model's "
                                           "worker (ray.gpus_per_model)")
        if per_gpu > gpus or settings.cpus_per_model > self.resources.get("CPU", 0):
            raise ConvscopeError("ray", f"each model's worker asks for {settings.cpus_per_model:g} CPU and {per_gpu:g} "
                                        f"GPU, but the cluster has {self.resources.get('CPU', 0):g} CPU and {gpus:g} GPU")
        # Ray shows a worker only its own GPUs: whichever it got is 'cuda' there.
        self.device = "cuda" if per_gpu > 0 else ("cpu" if device == "auto" else device)
        self.options = {"num_cpus": settings.cpus_per_model, "num_gpus": per_gpu, "max_restarts": 0}
        self.threads = max(1, int(settings.cpus_per_model))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "address": self.address, "resources": self.resources,
                "per_model": {"CPU": self.options["num_cpus"], "GPU": self.options["num_gpus"]},
                "device": self.device}

    def _actor(self, model: str):
        if model not in self.actors:
            remote = self.ray.remote(ModelWorker).options(**self.options)
            self.actors[model] = remote.remote(self.contexts[model], self.device, self.threads)
        return self.actors[model]

    def _release(self, model: str) -> None:
        actor = self.actors.pop(model, None)
        if actor is not None:
            self.ray.kill(actor)

    def run(self, batches: list[list[Job]], contexts: dict[str, RunContext]) -> Iterator[list[Result]]:
        """Send every batch now; give back their results in order as they are asked for."""
        for model in dict.fromkeys(b[0].model for b in batches):
            self.contexts[model] = self.ray.put(_pack(contexts[model], self.base_dir))
        sent = [self._send(b) for b in batches]
        return self._collect(batches, sent)

    def _send(self, batch: list[Job]) -> tuple:
        """(the batch's result reference, the worker it went to)."""
        actor = self._actor(batch[0].model)
        return actor.run.remote(batch), actor

    def _collect(self, batches: list[list[Job]], sent: list[tuple]) -> Iterator[list[Result]]:
        model_of = {ref: b[0].model for (ref, _), b in zip(sent, batches)}
        left = Counter(model_of.values())
        waiting = set(model_of)
        for batch, (ref, actor) in zip(batches, sent):
            while ref in waiting:
                done, _ = self.ray.wait(list(waiting), num_returns=1)
                for d in done:
                    waiting.discard(d)
                    left[model_of[d]] -= 1
                    if left[model_of[d]] == 0 and self._succeeded(d):
                        self._release(model_of[d])  # its resources go to the next model's worker
            yield self._results(batch, ref, actor)
            if left[batch[0].model] == 0:
                self._release(batch[0].model)

    def _succeeded(self, ref) -> bool:
        try:
            self.ray.get(ref)
            return True
        except self.ray.exceptions.RayError:
            return False

    def _results(self, batch: list[Job], ref, actor) -> list[Result]:
        try:
            out = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            died = isinstance(exc, self.ray.exceptions.RayActorError)
            if died and self.actors.get(batch[0].model) is actor:
                self.actors.pop(batch[0].model)  # the next batch of this model starts a new worker
            if len(batch) > 1:  # rerun job by job to find the job at fault; the others still succeed alone
                return [r for job in batch for r in self._results([job], *self._send([job]))]
            lines = str(exc).strip().splitlines()
            reason = lines[0][:200] if lines else type(exc).__name__
            what = "its Ray worker died while running it" if died else "its Ray task failed"
            return [Result(batch[0], "failed", 0.0, None, f"{what} ({reason})", {"executor": self.name})]
        return [Result(job, *fields) for job, fields in zip(batch, out)]

    def close(self) -> None:
        """Stop every worker (also on Ctrl-C: their tasks end with them) and the Ray this build started."""
        for model in list(getattr(self, "actors", {})):
            self._release(model)
        getattr(self, "contexts", {}).clear()
        if self.started:
            self.ray.shutdown()

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def parse_executor(text: str) -> tuple[str, str | None]:
    """`--executor local`, `ray` or `ray:ADDRESS` → (name, address)."""
    name, _, address = text.partition(":")
    if name not in ("local", "ray") or (name == "local" and address):
        raise ConvscopeError("--executor", f"'{text}' is not an executor; use local, ray or ray:ADDRESS")
    return name, address or None
