"""What changed between two models (a pair of a comparison: model A against the reference B), as numbers:

- one pass over the data set through both: each one's top-1 class and its probability per image, linear CKA between
  every pair of their chosen layers (minibatch unbiased HSIC, so memory does not grow with the data set), and, for
  layers the two share, each channel's spatial-mean activation per image (its correlation between the models);
- the weights (same architecture): relative change ‖W_B − W_A‖ / ‖W_A‖ of each conv and linear layer;
- the attributions: per image, the rank correlation of each model's Grad-CAM and integrated-gradients maps, read from
  the two models' own results (nothing recomputed).

Everything returns arrays; `generator/compare/stage.py` caches and publishes them."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from generator import images as imagelib
from generator.datasets import Dataset
from generator.hooks import record_outputs
from generator.models import LoadedModel
from generator.similarity import MinibatchCKA, channel_correlation, spearman

VERSION = 1
# Images per minibatch of the CKA estimate: its HSIC terms average over minibatches (Nguyen et al. 2021 used 256);
# 128 keeps a large model's flattened early maps (e.g. 32 × 112 × 112 floats an image) to a few hundred MB.
BATCH = 128


def same_architecture(a: LoadedModel, b: LoadedModel) -> bool:
    """The same tensors under the same names: what weights and units can be compared on."""
    sa, sb = a.module.state_dict(), b.module.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape for k in sa)


def shared_units(a: LoadedModel, b: LoadedModel) -> list[str]:
    """The chosen layers of both whose outputs have the same channels: their units can be matched one to one."""
    if not same_architecture(a, b):
        return []
    shapes_a, shapes_b = a.shapes_at(a.input.size), b.shapes_at(b.input.size)
    return [layer for layer in a.layers if layer in b.layers and shapes_a.get(layer) == shapes_b.get(layer)
            and shapes_a.get(layer) is not None and len(shapes_a[layer]) in (1, 3)]


@dataclass
class DatasetPass:
    top1: np.ndarray  # (2, N) int: each model's predicted class
    prob: np.ndarray  # (2, N) float: its probability
    cka: np.ndarray  # (La, Lb) linear CKA between A's layer i and B's layer j
    units: dict[str, np.ndarray]  # shared layer → (2, N, C) spatial-mean activation of each channel
    batches: int  # minibatches the CKA estimate averaged


def dataset_pass(a: LoadedModel, b: LoadedModel, data: Dataset, units: list[str], batch: int = BATCH) -> DatasetPass:
    n = len(data)
    top1, prob = np.zeros((2, n), np.int64), np.zeros((2, n), np.float32)
    cka = MinibatchCKA(len(a.layers), len(b.layers))
    means: dict[str, np.ndarray] = {}
    for start in range(0, n, batch):
        rows = range(start, min(start + batch, n))
        pictures = [data.image(i) for i in rows]
        outs = []
        inputs: dict[str, torch.Tensor] = {}  # a checkpoint series shares its preprocessing: done once
        for side, model in enumerate((a, b)):
            spec = model.input.model_dump_json()
            if spec not in inputs:
                inputs[spec] = torch.stack([imagelib.preprocess(p, model.input) for p in pictures])
            x = inputs[spec].to(model.device)
            with torch.inference_mode(), record_outputs(model.module, model.layers) as recorded:
                p = model.logits(x).float().softmax(1)
            best = p.max(1)
            top1[side, rows.start:rows.stop] = best.indices.cpu().numpy()
            prob[side, rows.start:rows.stop] = best.values.cpu().numpy()
            outs.append([recorded[layer] for layer in model.layers])
            for layer in units:
                out = recorded[layer].float()
                value = out.mean((2, 3)) if out.dim() == 4 else out.flatten(1)
                store = means.setdefault(layer, np.zeros((2, n, value.shape[1]), np.float32))
                store[side, rows.start:rows.stop] = value.cpu().numpy()
        cka.update(*outs)
    return DatasetPass(top1, prob, cka.result(), means, cka.batches)


def weight_change(a: nn.Module, b: nn.Module) -> tuple[list[str], np.ndarray]:
    """(layer names, ‖W_B − W_A‖ / ‖W_A‖) of every conv and linear layer, in forward-definition order."""
    names, change = [], []
    modules_b = dict(b.named_modules())
    for name, module in a.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)) and name in modules_b:
            wa, wb = module.weight.detach().float(), modules_b[name].weight.detach().float()
            names.append(name)
            change.append(float((wb - wa).norm() / wa.norm().clamp_min(1e-12)))
    return names, np.asarray(change, np.float32)


def first_conv(module: nn.Module) -> tuple[str, np.ndarray] | None:
    for name, m in module.named_modules():
        if isinstance(m, nn.Conv2d):
            return name, m.weight.detach().float().cpu().numpy()
    return None


def flips(top1: np.ndarray, labels_a: list[str], labels_b: list[str], most: int = 10) -> list[dict]:
    """The most frequent (A's class → B's class) moves among the images whose top-1 differs."""
    moved = top1[0] != top1[1]
    pairs, counts = np.unique(top1[:, moved].T, axis=0, return_counts=True) if moved.any() else (np.zeros((0, 2)), [])
    order = np.argsort(-np.asarray(counts), kind="stable")[:most]
    return [{"from": _label(labels_a, pairs[i][0]), "to": _label(labels_b, pairs[i][1]), "count": int(counts[i])}
            for i in order]


def accuracy(top1: np.ndarray, data: Dataset, labels: list[str] | None) -> float | None:
    """Top-1 accuracy on the labelled images when the model's classes name the data set's; None otherwise."""
    if not data.labelled or not labels:
        return None
    index = {name: i for i, name in enumerate(labels)}
    if not all(c in index for c in data.classes):
        return None
    truth = np.asarray([index[data.classes[k]] if k >= 0 else -1 for k in data.labels])
    known = truth >= 0
    return float((top1[known] == truth[known]).mean())


def unit_correlations(means: np.ndarray) -> np.ndarray:
    """(C,) Pearson correlation of each channel's activation between the two models over the data set."""
    return channel_correlation(means[0], means[1])


def map_correlation(map_a: np.ndarray, map_b: np.ndarray) -> float:
    """Spearman correlation of two attribution maps (resized to the larger when their sizes differ)."""
    a, b = np.asarray(map_a, np.float32), np.asarray(map_b, np.float32)
    if a.shape != b.shape:
        side = max(a.shape[-1], b.shape[-1])
        a, b = (F.interpolate(torch.from_numpy(m)[None, None], size=(side, side), mode="bilinear")[0, 0].numpy()
                for m in (a, b))
    return spearman(a, b)


def _label(labels: list[str], index: int) -> str:
    return labels[index] if 0 <= index < len(labels) else f"class {index}"
