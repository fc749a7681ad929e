"""Data sets from the spec: folders, globs, torchvision data sets on local files and sample crops, with labels,
stratified limits, and unreadable files skipped and named."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from helpers import cli, noise_image, tiny_spec, write_spec
from generator import datasets as datalib
from generator.errors import ConvscopeError, SpecErrors
from generator.checks import ReportSpec


def spec_with(folder: Path, **datasets) -> ReportSpec:
    data = tiny_spec(dataset=next(iter(datasets)))
    data["datasets"] = datasets
    return ReportSpec.load(write_spec(folder, data))


def class_folder(root: Path, counts: dict[str, int]) -> Path:
    for k, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True)
        for i in range(n):
            noise_image(root / name / f"{i:03d}.png", size=(20, 20), seed=100 * k + i)
    return root


def write_idx(path: Path, array: np.ndarray) -> None:
    code = {np.dtype("u1"): 0x08}[array.dtype]
    header = struct.pack(">HBB", 0, code, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def test_folder_labels_from_subfolders_and_unreadable_file_skipped(project: Path):
    root = class_folder(project / "data", {"cats": 3, "dogs": 2})
    (root / "dogs" / "001b.png").write_bytes(b"not a png at all")  # in the middle of the sorted files
    data = datalib.load(spec_with(project, d={"folder": "data"}), "d")
    assert data.classes == ["cats", "dogs"]
    assert data.labels.tolist() == [0, 0, 0, 1, 1]
    assert [s["name"] for s in data.skipped] == ["dogs/001b.png"]
    assert data.image(4).size == (20, 20)
    assert data.label(3) == "dogs"


def test_folder_errors_name_the_key(project: Path):
    (project / "empty" / "cats").mkdir(parents=True)
    with pytest.raises(ConvscopeError, match=r"datasets\.d\.folder: no class sub-folders with images"):
        datalib.load(spec_with(project, d={"folder": "empty"}), "d")
    with pytest.raises(ConvscopeError, match=r"datasets\.d\.folder: folder not found"):
        datalib.load(spec_with(project, d={"folder": "missing"}), "d")


def test_all_files_unreadable_is_an_error_naming_one(project: Path):
    (project / "bad" / "x").mkdir(parents=True)
    (project / "bad" / "x" / "a.png").write_bytes(b"garbage")
    with pytest.raises(ConvscopeError, match=r"no readable images.*x/a\.png"):
        datalib.load(spec_with(project, d={"folder": "bad"}), "d")


def test_limit_is_stratified_and_a_limit_above_the_size_is_a_note(project: Path):
    class_folder(project / "data", {"a": 6, "b": 6, "c": 2})
    data = datalib.load(spec_with(project, d={"folder": "data", "limit": 6, "seed": 3}), "d")
    assert np.bincount(data.labels).tolist() == [2, 2, 2]
    assert data.total == 14 and len(data) == 6
    again = datalib.load(spec_with(project, d={"folder": "data", "limit": 6, "seed": 3}), "d")
    assert again.names == data.names and again.digest == data.digest
    other = datalib.load(spec_with(project, d={"folder": "data", "limit": 6, "seed": 4}), "d")
    assert other.digest != data.digest
    big = datalib.load(spec_with(project, d={"folder": "data", "limit": 100}), "d")
    assert len(big) == 14 and "limit 100 is more than the 14 images" in big.notes[0]


def test_stratified_takes_rare_classes_whole():
    labels = np.array([0] * 50 + [1] * 3 + [2] * 50)
    chosen = datalib.stratified(labels, 30, seed=0)
    assert np.bincount(labels[chosen]).tolist() == [14, 3, 13] or np.bincount(labels[chosen]).tolist() == [13, 3, 14]
    assert (np.diff(chosen) > 0).all()


def test_more_classes_than_class_names_is_an_error(project: Path):
    class_folder(project / "data", {"a": 1, "b": 1, "c": 1})
    with pytest.raises(ConvscopeError, match=r"datasets\.d\.classes: 2 names for 3 classes"):
        datalib.load(spec_with(project, d={"folder": "data", "classes": ["x", "y"]}), "d")
    renamed = datalib.load(spec_with(project, d={"folder": "data", "classes": ["x", "y", "z"]}), "d")
    assert renamed.label(2) == "z"


def test_glob_with_and_without_parent_labels(project: Path):
    class_folder(project / "data", {"a": 2, "b": 1})
    plain = datalib.load(spec_with(project, d={"glob": "data/*/*.png"}), "d")
    assert plain.labels.tolist() == [-1, -1, -1] and not plain.labelled
    by_parent = datalib.load(spec_with(project, d={"glob": "data/*/*.png", "labels_from_parent": True}), "d")
    assert by_parent.classes == ["a", "b"] and by_parent.labels.tolist() == [0, 0, 1]
    with pytest.raises(ConvscopeError, match="matches no file"):
        datalib.load(spec_with(project, d={"glob": "nothing/*.png"}), "d")


def test_sample_crops_are_deterministic_squares(project: Path):
    data = datalib.load(spec_with(project, d={"samples": ["skimage:chelsea", "pics/a.png"], "crops": 4}), "d")
    assert len(data) == 8 and data.classes == ["chelsea", "a"]
    assert data.labels.tolist() == [0] * 4 + [1] * 4
    sizes = [data.image(i).size for i in range(4)]
    assert all(w == h for w, h in sizes) and len(set(sizes)) > 1
    again = datalib.load(spec_with(project, d={"samples": ["skimage:chelsea", "pics/a.png"], "crops": 4}), "d")
    assert np.array_equal(np.asarray(again.image(2)), np.asarray(data.image(2)))


def test_fashion_mnist_from_idx_files_in_both_layouts(project: Path):
    rng = np.random.default_rng(0)
    pictures = rng.integers(0, 255, size=(12, 28, 28), dtype=np.uint8)
    labels = np.arange(12, dtype=np.uint8) % 10
    flat = project / "fm"
    flat.mkdir()
    write_idx(flat / "t10k-images-idx3-ubyte.gz", pictures)
    write_idx(flat / "t10k-labels-idx1-ubyte.gz", labels)
    data = datalib.load(spec_with(project, d={"torchvision": "FashionMNIST", "root": "fm"}), "d")
    assert len(data) == 12 and data.classes[9] == "Ankle boot" and data.labels.tolist() == labels.tolist()
    assert data.image(5).mode == "L" and np.array_equal(np.asarray(data.image(5)), pictures[5])
    nested = project / "tv" / "FashionMNIST" / "raw"
    nested.mkdir(parents=True)
    write_idx(nested / "t10k-images-idx3-ubyte.gz", pictures)
    write_idx(nested / "t10k-labels-idx1-ubyte.gz", labels)
    assert len(datalib.load(spec_with(project, d={"torchvision": "FashionMNIST", "root": "tv"}), "d")) == 12
    with pytest.raises(ConvscopeError, match=r"datasets\.d\.root: no train-images.*dataset-fashion-mnist"):
        datalib.load(spec_with(project, d={"torchvision": "FashionMNIST", "root": "fm", "split": "train"}), "d")


def test_missing_root_and_never_downloading(project: Path):
    with pytest.raises(ConvscopeError, match=r"datasets\.d\.root: folder not found.*dataset-fashion-mnist"):
        datalib.load(spec_with(project, d={"torchvision": "FashionMNIST", "root": "nowhere"}), "d")
    (project / "cifar").mkdir()
    with pytest.raises(ConvscopeError, match=r"datasets\.d\.root: cannot read CIFAR10 .*never downloads"):
        datalib.load(spec_with(project, d={"torchvision": "CIFAR10", "root": "cifar"}), "d")


def test_spec_errors_for_datasets(project: Path):
    data = tiny_spec(dataset="fahsion")
    data["datasets"] = {"fashion": {"folder": "x"}, "two": {"folder": "x", "glob": "*.png"},
                        "rootless": {"torchvision": "MNIST"}, "stray": {"folder": "x", "root": "y"}}
    with pytest.raises(SpecErrors) as err:
        ReportSpec.load(write_spec(project, data))
    text = "\n".join(err.value.lines())
    assert "datasets.two: give exactly one source" in text
    assert "datasets.rootless: 'MNIST' needs 'root'" in text
    assert "datasets.stray: 'root' applies only to a torchvision data set" in text


def test_unknown_dataset_name_suggests(project: Path):
    data = tiny_spec(dataset="fahsion")
    data["datasets"] = {"fashion": {"folder": "x"}}
    with pytest.raises(SpecErrors, match=r"models\[0\]\.dataset: no data set 'fahsion'; did you mean 'fashion'"):
        ReportSpec.load(write_spec(project, data))


def test_a_data_set_technique_without_a_data_set_is_a_spec_error(project: Path, capsys):
    data = tiny_spec()
    data["models"][0]["techniques"]["nearest_neighbors"] = {}
    assert cli("validate", write_spec(project, data)) == 2
    assert "techniques.nearest_neighbors: looks across a data set, but the model names none" in capsys.readouterr().err
