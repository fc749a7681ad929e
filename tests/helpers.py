"""Every test helper, in one place (fixtures stay in tests/conftest.py, which imports from here). Nothing here
downloads anything or needs a GPU.

- Specs and builds: the tiny factory model `TINYMOD` (`tinymod:build`), `tiny_net`, `make_project`, `tiny_spec`,
  `write_spec`, `cli`, `read_json`, `record_arrays`, pictures (`noise_image`, `noise_picture`, `colour_folder`).
- Technique calls on a bare module: `make_context` / `make_ctx` / `make_model`, `params`, `run`, `render_page`.
- Gradient techniques: tiny CNNs with every kind of ReLU (modules, in-place, functional, ReLU6, LeakyReLU) or none
  (`act_net`, `FunctionalNet`, `Raises`), `model_state` / `assert_same_state`, a brute-force guided backprop,
  `torchvision_net`.
- Data-set techniques: `colour_dataset` (classes differ in colour and texture), `data_context` with its feature
  store, `job`."""
from __future__ import annotations

import copy
import functools
import json
import shutil
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
import yaml
from PIL import Image
from torch import nn

from generator import images as imagelib
from generator.artifacts import Job
from generator.cli import main
from generator.context import DrawContext, RunContext
from generator.datasets import Dataset
from generator.models import LoadedModel
from generator.spec import InputSpec
from generator.techniques import registry
from generator.techniques.dataset.feature_pass import FeatureStore

REPO = Path(__file__).resolve().parent.parent

# Seeded weights for the networks of a factory module (the source text every such module starts with), so two
# builds of the same spec give the same weights digest (and so hit the cache).
SEEDED_INIT = '''
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


def _init(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return module
'''

# The factory module written beside each test's spec (`factory: tinymod:build`).
TINYMOD = SEEDED_INIT + '''

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


def tiny_net(classes: int = 4, seed: int = 0) -> nn.Sequential:
    """The same network as `tinymod.build`, for tests that do not go through a spec."""
    ns: dict = {}
    exec(TINYMOD, ns)
    return ns["build"](classes=classes, seed=seed)


def permuted_twin(net: nn.Module, order: torch.Tensor) -> nn.Module:
    """The same function with conv1's output channels reordered: channel j of the twin's conv1 is channel order[j] of
    the original's, and conv2 reads its inputs in the new order (any net with `conv1` feeding `conv2`)."""
    twin = copy.deepcopy(net)
    with torch.no_grad():
        twin.conv1.weight.copy_(net.conv1.weight[order])
        twin.conv1.bias.copy_(net.conv1.bias[order])
        twin.conv2.weight.copy_(net.conv2.weight[:, order])
    return twin


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


def copy_site_setup(root: Path) -> Path:
    """The repository's MkDocs setup in `root`: mkdocs.yml, the hooks it names (beside it, as in the repository) and
    the hand-written pages without any generated report (or a leftover staging folder)."""
    shutil.copy(REPO / "mkdocs.yml", root / "mkdocs.yml")
    (root / "generator").mkdir(exist_ok=True)
    shutil.copy(REPO / "generator" / "mkdocs_hooks.py", root / "generator" / "mkdocs_hooks.py")
    shutil.copytree(REPO / "site_src", root / "site_src",
                    ignore=lambda folder, names: [n for n in names if n == "reports" or n.startswith(".")]
                    if Path(folder) == REPO / "site_src" else [])
    return root


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
    """Every array of a manifest record by name, from its `data` (.npz)."""
    with np.load(out / record["data"], allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def colour_folder(root: Path, per_class: int = 5) -> None:
    """A labelled image folder of three colour classes (red, green, blue), `per_class` noisy 24-px images each."""
    rng = np.random.default_rng(0)
    for name, rgb in {"red": (200, 30, 30), "green": (30, 190, 60), "blue": (30, 50, 210)}.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            a = np.asarray(rgb)[None, None] + rng.normal(0, 30, (24, 24, 3))
            Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(root / name / f"{i}.png")


# --- gradient techniques ---

LABELS = ["cat", "dog", "car", "tree"]


def _init(module: nn.Module, seed: int = 0, scale: float = 0.3) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return module.eval()


def act_net(act: type[nn.Module] = nn.ReLU, classes: int = 4, seed: int = 0, scale: float = 0.3, **kw) -> nn.Sequential:
    """conv(3→6) act maxpool conv(6→8) act flatten linear: small enough to differentiate by hand."""
    return _init(nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, 6, 3, padding=1)), ("act1", act(**kw)), ("pool", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(6, 8, 3, padding=1)), ("act2", act(**kw)),
        ("gap", nn.AdaptiveAvgPool2d(4)), ("flat", nn.Flatten()), ("fc", nn.Linear(8 * 16, classes)),
    ])), seed, scale)


class FunctionalNet(nn.Module):
    """The same layers with the activations called as functions (the case module hooks miss)."""

    def __init__(self, inplace: bool = False, seed: int = 0):
        super().__init__()
        body = act_net(seed=seed)
        self.conv1, self.pool, self.conv2, self.gap, self.fc = body.conv1, body.pool, body.conv2, body.gap, body.fc
        self.inplace = inplace

    def forward(self, x):
        if self.inplace:
            x = self.conv1(x)
            x.relu_()  # the return value ignored: only the in-place change carries the result
            x = self.pool(x)
            x = F.relu(self.conv2(x), inplace=True)
        else:
            x = torch.relu(self.conv1(x))
            x = self.pool(x)
            x = self.conv2(x).relu()
        return self.fc(torch.flatten(self.gap(x), 1))


class Raises(nn.Module):
    """Runs a ReLU, then fails: hooks and modes must still be gone afterwards."""

    def __init__(self):
        super().__init__()
        self.body = act_net()

    def forward(self, x):
        self.body.act1(self.body.conv1(x))
        raise ValueError("boom in forward")


def noise_picture(seed: int, size=(40, 36)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8), "RGB")


def make_model(module: nn.Module, size: int = 32, labels=LABELS) -> LoadedModel:
    return LoadedModel("tiny", module.eval(), InputSpec(size=size, resize=size), labels, None, "test", "digest",
                       torch.device("cpu"), layers=[])


def make_ctx(module: nn.Module, images: int = 2, size: int = 32, labels=LABELS, seed: int = 0) -> RunContext:
    model = make_model(module, size, labels)
    records = {}
    for i in range(images):
        im = noise_picture(10 + i)
        records[f"s/p{i}"] = imagelib.ImageRecord(f"s/p{i}", "s", f"p{i}", f"p{i}", im, imagelib.digest(im))
    return RunContext(model, records, seed=seed)


def params(kind: str, **kw):
    """A technique's params; the (slow) faithfulness checks off unless asked for, where the base has them."""
    cls = registry.get(kind).Params
    for flag in ("faithfulness", "sanity"):
        if flag in cls.model_fields:
            kw.setdefault(flag, False)
    return cls(**kw)


def run(kind: str, ctx: RunContext, image_ids=None, **kw):
    p = params(kind, **kw)
    ids = list(ctx.images) if image_ids is None else image_ids
    return registry.get(kind).run(ctx, [Job(ctx.model.name, kind, p, image=i) for i in ids])


def model_state(module: nn.Module) -> dict:
    """What 'left exactly as it was' means: weights, buffers, requires_grad flags, .grad, mode, hook count."""
    from generator.hooks import hook_count

    return {
        "state": {k: v.clone() for k, v in module.state_dict().items()},
        "requires_grad": [p.requires_grad for p in module.parameters()],
        "grads": [p.grad is None for p in module.parameters()],
        "training": [m.training for m in module.modules()],
        "hooks": hook_count(module),
    }


def assert_same_state(before: dict, after: dict) -> None:
    assert before["state"].keys() == after["state"].keys()
    for k in before["state"]:
        assert torch.equal(before["state"][k], after["state"][k]), k
    for key in ("requires_grad", "grads", "training", "hooks"):
        assert before[key] == after[key], key
    assert torch.overrides._get_current_function_mode_stack() == []


def plain_gradient(module: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    x = x.detach().clone().requires_grad_(True)
    out = module(x)
    (g,) = torch.autograd.grad(out[:, target].sum(), x)
    return g


def brute_force_guided(net: nn.Sequential, x: torch.Tensor, target: int | None = None,
                       unit: tuple[str, int, tuple[int, int]] | None = None,
                       upper: float = float("inf"), slope: float = 0.0,
                       derivative: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Guided backprop of `act_net`-shaped networks written out layer by layer: forward keeping each activation's
    input, then backward by hand — linear maps by their transposes, max-pool by routing to its argmax, each
    activation by relu(upstream) · (1 on 0 < a < upper, `slope` on a ≤ 0), or · f'(a) [a > 0] with `derivative`. Either a class `target`, or a
    `unit` = (name of conv1 or conv2, channel, (row, col)) whose output is differentiated."""
    m = dict(net.named_children())
    with torch.no_grad():
        a1 = m["conv1"](x)
        h1 = m["act1"](a1)
        p, idx = F.max_pool2d(h1, 2, return_indices=True)
        a2 = m["conv2"](p)
        h2 = m["act2"](a2)
        g_ = m["gap"](h2)

        def through_act(grad, a):
            local = torch.where(a > 0, torch.where(a < upper, 1.0, 0.0), slope)
            if derivative is not None:  # a smooth rectifier: its slope where the input is positive, 0 elsewhere
                local = derivative(a) * (a > 0)
            return grad.clamp(min=0) * local

        def conv_back(grad, conv):
            return F.conv_transpose2d(grad, conv.weight, padding=conv.padding)

        if unit is None:
            grad = m["fc"].weight[target].view(1, *g_.shape[1:]).expand_as(g_).clone()
            grad = F.interpolate(grad, size=h2.shape[-2:], mode="nearest") / ((h2.shape[-1] // g_.shape[-1]) ** 2)
            grad = through_act(grad, a2)
            grad = conv_back(grad, m["conv2"])
        else:
            name, channel, (r, c) = unit
            grad = torch.zeros_like(a2 if name == "conv2" else a1)
            grad[:, channel, r, c] = 1.0
            if name == "conv2":
                grad = conv_back(grad, m["conv2"])
        if unit is None or unit[0] == "conv2":
            grad = F.max_unpool2d(grad, idx, 2, output_size=h1.shape[-2:])
            grad = through_act(grad, a1)
        return conv_back(grad, m["conv1"])


def render_page(kind: str, ctx: RunContext, folder: Path, **kw) -> str:
    """Run a technique on a context, draw its figures into `folder` and render its page."""
    from generator.pipeline import Result
    from generator.templating import Renderer
    from generator.report import ModelPages, technique_page_context
    from generator.outputs import write_outputs

    p = params(kind, **kw)
    jobs = [Job(ctx.model.name, kind, p, image=i) for i in ctx.images]
    arts = registry.get(kind).run(ctx, jobs)
    pages = ModelPages(ctx.model, DrawContext(ctx.model, ctx.images),
                       [Result(j, "ran", 0.1, a) for j, a in zip(jobs, arts)])
    write_outputs(folder, pages, lambda n: None)
    return Renderer().page(f"pages/{kind}.md.j2", **technique_page_context(pages, kind))


@functools.cache
def torchvision_net(arch: str):
    """A torchvision model with random weights (no download), shared by the tests that use it."""
    torch.manual_seed(0)
    net = getattr(torchvision.models, arch)(weights=None, num_classes=4).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


# --- data-set techniques ---

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
