"""One pass over a data set per model: every layer the data-set views need is recorded together, reduced on the
device to what they use, and cached on disk as memory-mapped arrays shared by all of them.

Per layer and image: `vectors` (the output itself for flat layers, the spatial mean per channel for volumes — a
feature vector whatever the layer), `maxima` and `argmax` (each channel's largest value and where it is, for the
top patches and the activation histograms). Per image also `pixels`: the input downsampled to at most 32 px a side,
the space the "semantics beat pixels" comparison is made in."""
from __future__ import annotations

from typing import TYPE_CHECKING

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from generator import images as imagelib
from generator.cache import cache_key
from generator.errors import ConvscopeError, one_line
from generator.hooks import record_outputs
from generator.batching import images_per_forward

if TYPE_CHECKING:
    from generator.datasets import Dataset
    from generator.models import LoadedModel

VERSION = 1
PIXEL_SIDE = 32
SKIPPED_TYPES = (nn.Dropout, nn.Identity, nn.Flatten)


@dataclass
class LayerFeatures:
    layer: str
    shape: tuple[int, ...]  # one image's output: (C, H, W) or (D,)
    vectors: np.ndarray  # (N, D) float32
    maxima: np.ndarray  # (N, C) float32
    argmax: np.ndarray  # (N, C) int32, flat index into H × W

    @property
    def spatial(self) -> tuple[int, int] | None:
        return tuple(self.shape[1:]) if len(self.shape) == 3 else None


def penultimate(model: LoadedModel) -> str:
    """The layer whose output feeds the classifier's last linear layer (the "last-layer features" of the lecture);
    without a linear layer, the last module with a spatial output."""
    # Every call of a leaf module (one without children), in the order they finish; shapes without the batch.
    order = [call for call in model.probe().calls if not list(call[1].children())]
    linears = [i for i, (_, m, _) in enumerate(order) if isinstance(m, nn.Linear)]
    if linears:
        last = linears[-1]
        width = order[last][1].in_features
        for name, module, shape in reversed(order[:last]):
            if not isinstance(module, SKIPPED_TYPES) and shape is not None and int(np.prod(shape)) == width:
                return name
    for name, module, shape in reversed(order):
        if shape is not None and len(shape) == 3:
            return name
    raise ConvscopeError(model.name, "no layer gives feature vectors (no linear classifier and no conv output)")


class FeatureStore:
    """The features of one model on one data set, extracted on first use for all `layers` at once."""

    def __init__(self, model: LoadedModel, dataset: Dataset, root: Path, layers: Iterable[str] = (),
                 batch_size: int | None = None, progress: Callable[[str], None] | None = None):
        self.model, self.dataset, self.root = model, dataset, Path(root) / "features"
        self.wanted = list(dict.fromkeys(layers))
        self.batch_size = batch_size  # None: chosen at the first extraction (`_default_batch_size`)
        self.progress = progress
        self.stats: dict[str, float] = {}  # seconds and images/s of the last extraction, for the page

    def _folder(self, layer: str | None) -> Path:
        key = cache_key(model=self.model.digest, dataset=self.dataset.digest, layer=layer, version=VERSION,
                        pixels=PIXEL_SIDE if layer is None else None, input=self.model.input.model_dump())
        return self.root / key[:2] / key

    def layer(self, name: str) -> LayerFeatures:
        folder = self._folder(name)
        if not (folder / "meta.json").is_file():
            self.extract([name])
        meta = json.loads((folder / "meta.json").read_text())
        load = lambda n: np.load(folder / f"{n}.npy", mmap_mode="r")  # noqa: E731
        return LayerFeatures(name, tuple(meta["shape"]), load("vectors"), load("maxima"), load("argmax"))

    def pixels(self) -> np.ndarray:
        folder = self._folder(None)
        if not (folder / "meta.json").is_file():
            self.extract([])
        return np.load(folder / "pixels.npy", mmap_mode="r")

    def extract(self, layers: list[str]) -> None:
        """One pass computing every missing layer of `wanted` + `layers` (and the pixels when missing)."""
        todo = [n for n in dict.fromkeys(self.wanted + layers) if not (self._folder(n) / "meta.json").is_file()]
        need_pixels = not (self._folder(None) / "meta.json").is_file()
        if not todo and not need_pixels:
            return
        n = len(self.dataset)
        if self.batch_size is None:
            self.batch_size = self._default_batch_size(n)
        staging = {name: Path(tempfile.mkdtemp(prefix=".tmp-", dir=self._mk(self.root))) for name in todo + [None]}
        arrays: dict[str, dict[str, np.ndarray]] = {}
        shapes: dict[str, tuple] = {}
        start = time.perf_counter()
        try:
            # On a GPU the next batch is decoded while this one runs; on a CPU that thread would only take cores
            # from the forward (measured: 0.82× a plain loop on 2 cores), so batches are made inline there.
            with ThreadPoolExecutor(1) if self.model.device.type != "cpu" else _Inline() as pool:
                batches = range(0, n, self.batch_size)
                pending = pool.submit(self._batch, 0) if n else None
                for b in batches:
                    x = pending.result()
                    if b + self.batch_size < n:
                        pending = pool.submit(self._batch, b + self.batch_size)
                    x = x.to(self.model.device, non_blocking=True)
                    with torch.inference_mode(), record_outputs(self.model.module, todo) as outs:
                        self.model.module(x)
                    rows = slice(b, b + len(x))
                    if need_pixels:
                        side = min(PIXEL_SIDE, x.shape[-1])
                        pix = F.adaptive_avg_pool2d(x.float(), side).flatten(1).cpu().numpy()
                        self._write(arrays, staging, None, "pixels", pix, rows, n)
                    for name in todo:
                        out = outs.get(name)
                        if not isinstance(out, torch.Tensor):
                            raise ConvscopeError(name, "gives no tensor output to extract features from")
                        shapes[name] = tuple(out.shape[1:])
                        vectors, maxima, argmax = reduce(out.float())
                        for key, value in (("vectors", vectors), ("maxima", maxima), ("argmax", argmax)):
                            self._write(arrays, staging, name, key, value, rows, n)
                    if self.progress:
                        self.progress(f"features {self.dataset.name}: {b + len(x)}/{n}")
            if self.progress:
                self.progress("")
            seconds = time.perf_counter() - start
            self.stats = {"seconds": seconds, "images_per_second": n / seconds if seconds else 0.0, "images": n}
            for name in todo + ([None] if need_pixels else []):
                for a in arrays.get(str(name), {}).values():
                    a.flush()
                meta = {"layer": name, "shape": shapes.get(name), "images": n, **self.stats}
                (staging[name] / "meta.json").write_text(json.dumps(meta))
                final = self._folder(name)
                shutil.rmtree(final, ignore_errors=True)
                self._mk(final.parent)
                staging[name].rename(final)
        finally:
            arrays.clear()
            for folder in staging.values():
                shutil.rmtree(folder, ignore_errors=True)

    def _default_batch_size(self, n: int) -> int:
        """256 on CUDA; on the CPU as many images as keep the largest activation map within the cache
        (generator.batching: 4 for EfficientNet-Lite0 at 224 px, about 2× faster per image there than 64)."""
        if self.model.device.type == "cuda" or not n:
            return 256
        try:
            sample = imagelib.preprocess(self.dataset.image(0), self.model.input)[None].to(self.model.device)
        except Exception:  # an unreadable first image: the pass itself reports it, naming the file
            return 64
        return images_per_forward(self.model, sample, n)

    def _batch(self, start: int) -> torch.Tensor:
        xs = []
        for i in range(start, min(start + self.batch_size, len(self.dataset))):
            try:
                xs.append(imagelib.preprocess(self.dataset.image(i), self.model.input))
            except Exception as exc:
                raise ConvscopeError(self.dataset.names[i], f"cannot read this image of data set "
                                                            f"'{self.dataset.name}' ({one_line(exc)})") from None
        x = torch.stack(xs)
        return x.pin_memory() if self.model.device.type == "cuda" else x

    @staticmethod
    def _mk(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @staticmethod
    def _write(arrays, staging, name, key, value: np.ndarray, rows: slice, n: int) -> None:
        store = arrays.setdefault(str(name), {})
        if key not in store:
            store[key] = np.lib.format.open_memmap(staging[name] / f"{key}.npy", mode="w+", dtype=value.dtype,
                                                   shape=(n, *value.shape[1:]))
        store[key][rows] = value


class _Inline:
    """The executor interface, running each call at once (the CPU case)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def submit(self, fn, *args):
        from concurrent.futures import Future

        future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:
            future.set_exception(exc)
        return future


def reduce(out: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A batch of layer outputs → (vectors, per-channel maxima, flat argmax), computed on the device."""
    if out.dim() == 4:
        flat = out.flatten(2)
        maxima, argmax = flat.max(2)
        vectors = flat.mean(2)
    else:
        vectors = out.flatten(1)
        maxima, argmax = vectors, torch.zeros_like(vectors, dtype=torch.int64)
    return (vectors.cpu().numpy().astype(np.float32), maxima.cpu().numpy().astype(np.float32),
            argmax.cpu().numpy().astype(np.int32))
