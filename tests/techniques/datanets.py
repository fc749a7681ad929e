"""Helpers for the data-set technique tests (a module, not a conftest.py, for the reason given in gradnets.py): a
labelled data set whose classes differ in colour and texture, and a RunContext with its feature store."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from generator.context import DrawContext, RunContext
from generator.datasets import Dataset
from generator.techniques.dataset.feature_pass import FeatureStore
from generator.models import LoadedModel
from generator.spec import InputSpec
from generator.artifacts import Job

COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}


def colour_dataset(per_class: int = 8, size: int = 24, seed: int = 0) -> Dataset:
    """Noisy pictures of three colours with stripes of random period: the class is the colour."""
    rng = np.random.default_rng(seed)
    pics, labels = [], []
    for k, rgb in enumerate(COLOURS.values()):
        for _ in range(per_class):
            period = int(rng.integers(3, 8))
            stripes = (np.arange(size) // period % 2)[None, :, None] * 50
            a = np.asarray(rgb)[None, None] + stripes + rng.normal(0, 25, (size, size, 3))
            pics.append(Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)))
            labels.append(k)
    names = [f"{list(COLOURS)[l]}-{i}" for i, l in enumerate(labels)]
    return Dataset("colours", "three colours", list(COLOURS), np.asarray(labels), names, f"colours{seed}",
                   lambda i: pics[i])


def data_context(module: torch.nn.Module, dataset: Dataset, cache: Path, layers: list[str], size: int = 32,
                 labels=None) -> tuple[RunContext, DrawContext]:
    model = LoadedModel("m", module.eval(), InputSpec(size=size, resize=size), labels, None, "test", "digest",
                        torch.device("cpu"), layers=list(layers), dataset=dataset.name)
    store = FeatureStore(model, dataset, cache, layers, batch_size=16)
    return RunContext(model, {}, dataset=dataset, features=store), DrawContext(model, {}, dataset)


def job(kind: str, params, layer: str) -> Job:
    return Job("m", kind, params, layer)
