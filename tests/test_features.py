"""The feature store: one pass over a data set gives every wanted layer, equal to a direct forward, cached on disk."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from helpers import tiny_net
from generator import images as imagelib
from generator.datasets import Dataset
from generator.techniques.dataset.feature_pass import FeatureStore, penultimate, reduce
from generator.hooks import record_outputs
from generator.models import LoadedModel
from generator.spec import InputSpec
from PIL import Image


def noise_dataset(n: int = 11, size: int = 20) -> Dataset:
    rng = np.random.default_rng(0)
    pics = [Image.fromarray(rng.integers(0, 255, (size, size + 4, 3), dtype=np.uint8)) for _ in range(n)]
    return Dataset("noise", "noise", ["a", "b"], np.arange(n) % 2, [f"n{i}" for i in range(n)], "d0",
                   lambda i: pics[i])


def loaded(module: nn.Module, size: int = 32) -> LoadedModel:
    return LoadedModel("m", module.eval(), InputSpec(size=size, resize=size), None, None, "test", "digest",
                       torch.device("cpu"))


def test_features_equal_a_direct_forward_over_several_batches(tmp_path: Path):
    model, data = loaded(tiny_net()), noise_dataset()
    store = FeatureStore(model, data, tmp_path, ["relu1", "relu2", "fc"], batch_size=4)
    x = torch.stack([imagelib.preprocess(data.image(i), model.input) for i in range(len(data))])
    with torch.no_grad(), record_outputs(model.module, ["relu1", "fc"]) as outs:
        model.module(x)
    relu1 = store.layer("relu1")
    assert relu1.shape == (8, 32, 32) and relu1.spatial == (32, 32)
    np.testing.assert_allclose(relu1.vectors, outs["relu1"].mean((2, 3)).numpy(), rtol=1e-5, atol=1e-6)
    flat = outs["relu1"].flatten(2)
    np.testing.assert_allclose(relu1.maxima, flat.max(2).values.numpy(), rtol=1e-6)
    picked = np.take_along_axis(flat.numpy(), np.asarray(relu1.argmax)[..., None].astype(np.int64), 2)[..., 0]
    np.testing.assert_allclose(picked, relu1.maxima, rtol=1e-6)  # the recorded position holds the maximum
    fc = store.layer("fc")
    assert fc.shape == (4,) and fc.spatial is None
    np.testing.assert_allclose(fc.vectors, outs["fc"].numpy(), rtol=1e-5, atol=1e-6)
    assert store.pixels().shape == (11, 3 * 32 * 32)
    assert isinstance(relu1.vectors, np.memmap)


def test_one_pass_serves_all_layers_and_the_cache_serves_the_next_build(tmp_path: Path):
    model, data = loaded(tiny_net()), noise_dataset()
    calls = []
    model.module.register_forward_pre_hook(lambda m, i: calls.append(len(i[0])))
    store = FeatureStore(model, data, tmp_path, ["relu1", "relu2"], batch_size=8)
    store.layer("relu2")
    store.layer("relu1")
    store.pixels()
    assert calls == [8, 3]  # one pass over 11 images, every layer and the pixels together
    again = FeatureStore(model, data, tmp_path, ["relu1", "relu2"], batch_size=8)
    np.testing.assert_array_equal(again.layer("relu1").maxima, store.layer("relu1").maxima)
    assert calls == [8, 3]
    other = FeatureStore(model, Dataset("noise2", "", ["a"], np.zeros(3, dtype=np.int64), ["x"] * 3, "d1",
                                        data.get), tmp_path, ["relu1"])
    other.layer("relu1")
    assert calls[2:] == [1, 3]  # another data set digest: the batch-size probe, then extracted again


def test_reduce_of_flat_and_spatial_outputs():
    volume = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4)
    vectors, maxima, argmax = reduce(volume)
    assert vectors.tolist() == [[5.5, 17.5]] and maxima.tolist() == [[11, 23]] and argmax.tolist() == [[11, 11]]
    vectors, maxima, argmax = reduce(torch.tensor([[1.0, -2.0]]))
    assert vectors.tolist() == maxima.tolist() == [[1.0, -2.0]] and argmax.tolist() == [[0, 0]]


@pytest.mark.parametrize("arch,expected", [("resnet18", "avgpool"), ("vgg11", "classifier.4"),
                                           ("alexnet", "classifier.5"), ("mobilenet_v3_small", "classifier.1")])
def test_penultimate_is_the_input_of_the_last_linear_layer(arch: str, expected: str):
    module = torchvision.models.get_model(arch, weights=None, num_classes=10)
    assert penultimate(loaded(module, size=64)) == expected


def test_penultimate_of_the_tiny_net_skips_flatten():
    assert penultimate(loaded(tiny_net())) == "gap"
