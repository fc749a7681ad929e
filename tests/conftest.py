"""Shared fixtures: tiny CNNs (a few convs, 32×32 inputs), tiny images made with Pillow, specs in tmp_path with a
tmp cache. Nothing here downloads anything or needs a GPU."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from generator import images as imagelib
from generator.cli import main
from generator.context import RunContext
from generator.models import LoadedModel
from generator.spec import InputSpec

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def one_thread():
    """For modules of many small optimizations: on a shared 2-core machine two intra-op threads make such runs many
    times slower (the modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

# The factory module written beside each test's spec (`factory: tinymod:build`). Its weights are seeded, so two
# builds of the same spec give the same weights digest (and so hit the cache).
TINYMOD = '''
from collections import OrderedDict

import torch
from torch import nn


def _init(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return module


def build(classes=4, seed=0):
    return _init(nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, 8, 3, padding=1)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(8, 16, 3, padding=1)), ("relu2", nn.ReLU()),
        ("gap", nn.AdaptiveAvgPool2d(1)), ("flat", nn.Flatten()), ("fc", nn.Linear(16, classes)),
    ])), seed)


def build10():
    return build(classes=10)


def build_other():
    """A different architecture: its state dict does not fit `build`'s."""
    return _init(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4)))


class TupleOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = build()

    def forward(self, x):
        logits = self.body(x)
        return (logits.mean(1, keepdim=True), logits * 2.0)


class DictOut(TupleOut):
    def forward(self, x):
        logits = self.body(x)
        return {"features": logits.mean(1, keepdim=True), "scores": logits * 3.0}


def build_tuple():
    return TupleOut()


def build_dict():
    return DictOut()


class TripNet(nn.Module):
    """Raises on bright inputs only: one image of a set fails, the others pass."""

    def __init__(self):
        super().__init__()
        self.net = build()

    def forward(self, x):
        if bool((x.detach().flatten(1).mean(1) > 1.0).any()):  # any image of the batch
            raise ValueError("tripwire: this input is too bright")
        return self.net(x)


def build_tripwire():
    return TripNet()


def not_a_module():
    return 42
'''


@pytest.fixture(autouse=True)
def _forget_factory_modules():
    """Factory modules are imported by name; each test writes its own `tinymod.py`, so forget earlier ones."""
    for name in ("tinymod", "badmod", "brokenmod"):
        sys.modules.pop(name, None)
    yield
    for name in ("tinymod", "badmod", "brokenmod"):
        sys.modules.pop(name, None)


def tiny_net(classes: int = 4, seed: int = 0) -> nn.Sequential:
    """The same network as `tinymod.build`, for tests that do not go through a spec."""
    ns: dict = {}
    exec(TINYMOD, ns)
    return ns["build"](classes=classes, seed=seed)


def noise_image(path: Path, size=(48, 40), seed: int = 0, high: int = 120) -> Path:
    """A small dark RGB noise picture (dark: normalized mean well below the tripwire)."""
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, high, size=(size[1], size[0], 3), dtype=np.uint8), "RGB").save(path)
    return path


def write_spec(folder: Path, data: dict, name: str = "spec.yml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def make_project(folder: Path) -> Path:
    """`tinymod.py` and two tiny images in `pics/` (a landscape and a portrait one)."""
    (folder / "tinymod.py").write_text(TINYMOD, encoding="utf-8")
    (folder / "pics").mkdir()
    noise_image(folder / "pics" / "a.png", seed=1)
    noise_image(folder / "pics" / "b.png", size=(40, 56), seed=2)
    return folder


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path)


def tiny_spec(**model_overrides) -> dict:
    """A spec for the tiny factory model on the two images in `pics/`, output and cache inside the project."""
    model = {
        "name": "tiny",
        "factory": "tinymod:build",
        "input": {"size": 32},
        "layers": ["conv1", "relu2"],
        "techniques": {"predictions": {"top_k": 3}, "filters": {}, "activations": {"max_channels": 8}},
    }
    model.update(model_overrides)
    return {
        "title": "tiny report",
        "output": "out",
        "cache": "cache",
        "device": "cpu",
        "images": {"pics": ["pics/a.png", "pics/b.png"]},
        "models": [model],
    }


def cli(*argv: str) -> int:
    return main([str(a) for a in argv])


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def make_context(module: nn.Module, pictures: dict[str, Image.Image], size: int = 32, labels=None) -> RunContext:
    """A RunContext around a bare module (no spec), for calling a technique directly."""
    module = module.eval()
    model = LoadedModel("m", module, InputSpec(size=size, resize=size), labels, None, "test", "digest",
                        torch.device("cpu"), layers=[])
    records = {
        f"s/{name}": imagelib.ImageRecord(f"s/{name}", "s", name, name, im, imagelib.digest(im))
        for name, im in pictures.items()
    }
    return RunContext(model, records)


def record_arrays(out: Path, record: dict) -> dict[str, np.ndarray]:
    """Every array of a manifest record by name: the main one from its `data` (.npy), the rest from its `archive`."""
    arrays = {record["arrays"][0]["name"]: np.load(out / record["data"], allow_pickle=False)}
    if record.get("archive"):
        with np.load(out / record["archive"], allow_pickle=False) as rest:
            arrays.update({name: rest[name] for name in rest.files})
    return arrays


def colour_folder(root: Path, per_class: int = 5) -> None:
    """A labelled image folder of three colour classes (red, green, blue), `per_class` noisy 24-px images each."""
    rng = np.random.default_rng(0)
    for name, rgb in {"red": (200, 30, 30), "green": (30, 190, 60), "blue": (30, 50, 210)}.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            a = np.asarray(rgb)[None, None] + rng.normal(0, 30, (24, 24, 3))
            Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(root / name / f"{i}.png")
