"""The IDX reader, the Fashion-MNIST loader and the builtin fashion-mnist-net (weights, accuracy, spec loading)."""
from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from generator.builtin import fashion_mnist as fm
from generator.errors import ConvscopeError
from generator.idx import DEBIAN_ROOT, FASHION_MNIST_CLASSES, load_fashion_mnist, parse_idx, read_idx

HAS_DATA = (DEBIAN_ROOT / "t10k-images-idx3-ubyte.gz").is_file() or (DEBIAN_ROOT / "t10k-images-idx3-ubyte").is_file()


def idx_bytes(array: np.ndarray) -> bytes:
    codes = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C,
             np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}
    big = array.astype(array.dtype.newbyteorder(">")) if array.dtype.itemsize > 1 else array
    header = struct.pack(">HBB", 0, codes[big.dtype], array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + big.tobytes()


def write_split(folder, prefix: str, images: np.ndarray, labels: np.ndarray, gz: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
        data = idx_bytes(array)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)


# ----------------------------------------------------------------------------------------------------- IDX files


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trips(tmp_path, gz):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    data = idx_bytes(images)
    path.write_bytes(gzip.compress(data) if gz else data)
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (3, 28, 28) and np.array_equal(out, images)


@pytest.mark.parametrize("dtype", ["i1", ">i2", ">i4", ">f4", ">f8"])
def test_parse_idx_other_types_in_native_order(dtype):
    array = np.arange(-6, 6).reshape(3, 4).astype(dtype)
    out = parse_idx(idx_bytes(array))
    assert out.dtype.isnative and out.shape == (3, 4) and np.array_equal(out, array)


def test_bad_magic_number_is_a_clear_error(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x12\x34\x08\x01" + struct.pack(">I", 2) + b"ab")
    with pytest.raises(ConvscopeError, match="bad magic number 0x12340801") as info:
        read_idx(path)
    assert info.value.where == str(path)


def test_unknown_type_code_and_wrong_size_are_errors():
    with pytest.raises(ConvscopeError, match="unknown type code 0x07"):
        parse_idx(b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"x")
    with pytest.raises(ConvscopeError, match="shape 2×3 of uint8 needs 6 bytes of data, found 5"):
        parse_idx(b"\x00\x00\x08\x02" + struct.pack(">II", 2, 3) + b"12345")


@pytest.mark.parametrize("layout", ["flat", "torchvision", "plain"])
def test_load_fashion_mnist_layouts(tmp_path, layout):
    images = np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 28, 28).astype(np.uint8)
    labels = np.array([9, 0], dtype=np.uint8)
    folder = tmp_path / "FashionMNIST" / "raw" if layout == "torchvision" else tmp_path
    write_split(folder, "t10k", images, labels, gz=layout != "plain")
    x, y = load_fashion_mnist(tmp_path, "test")
    assert x.dtype == np.uint8 and x.shape == (2, 28, 28) and np.array_equal(x, images)
    assert y.dtype == np.int64 and y.tolist() == [9, 0]


def test_missing_files_name_the_debian_package(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ConvscopeError) as info:
        load_fashion_mnist(missing, "train")
    assert info.value.where == str(missing)
    assert "train-images-idx3-ubyte" in str(info.value) and "dataset-fashion-mnist" in str(info.value)


def test_mismatched_label_count_is_an_error(tmp_path):
    write_split(tmp_path, "train", np.zeros((3, 28, 28), np.uint8), np.zeros(2, np.uint8))
    with pytest.raises(ConvscopeError, match="expected 3 labels"):
        load_fashion_mnist(tmp_path, "train")


# ----------------------------------------------------------------------------------------------- the builtin model


@pytest.fixture(scope="module")
def net():
    return fm.fashion_mnist_net()


def test_builtin_loads_its_weights_and_gives_10_logits(net):
    assert fm.WEIGHTS.is_file() and fm.CLASSES == FASHION_MNIST_CLASSES and len(fm.CLASSES) == 10
    assert not net.training
    assert sum(p.numel() for p in net.parameters()) < 1_500_000
    with torch.no_grad():
        out = net(torch.zeros(3, 1, fm.INPUT_SIZE, fm.INPUT_SIZE))
    assert out.shape == (3, 10) and torch.isfinite(out).all()
    assert any(isinstance(m, torch.nn.ReLU) for m in net.features)
    assert isinstance(net.classifier[5], torch.nn.ReLU) and net.classifier[4].out_features == fm.FEATURE_DIM


def test_random_weights_differ_from_the_trained_ones(net):
    torch.manual_seed(0)
    fresh = fm.fashion_mnist_net(pretrained=False)
    assert not torch.equal(fresh.features[0].weight, net.features[0].weight)


@pytest.mark.skipif(not HAS_DATA, reason=f"no Fashion-MNIST in {DEBIAN_ROOT} (apt-get install dataset-fashion-mnist)")
def test_accuracy_on_the_test_set(net):
    images, labels = load_fashion_mnist(DEBIAN_ROOT, "test")
    x = ((torch.from_numpy(images[:2000]).float() / 255 - fm.MEAN) / fm.STD).unsqueeze(1)
    with torch.no_grad():
        pred = net(x).argmax(1).numpy()
    assert (pred == labels[:2000]).mean() >= 0.90


def test_loaded_through_the_spec():
    from generator.models import ModelLoader
    from generator.checks import ReportSpec

    spec = ReportSpec.parse({"models": [{"name": "f", "builtin": "fashion-mnist-net"}]})
    model = ModelLoader(spec, torch.device("cpu")).load(0)
    assert model.labels == FASHION_MNIST_CLASSES
    assert model.input.mode == "L" and model.input.size == 28 and model.input.resize_to == 28
    assert model.input.mean == [fm.MEAN] and model.input.std == [fm.STD]
    assert "Fashion-MNIST" in model.source
    assert model.logits(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
