"""Every registered technique × three tiny CNNs, through the build's own machinery (spec → `prepare` → `plan` with
--quick → `execute`): (a) a plain ReLU `nn.Sequential`, (b) a custom forward with ReLU6 modules and functional
`F.relu`, (c) a SiLU network with batch norm and a depthwise conv. For each pair: it runs without a failed job (or
`inapplicable` says in a sentence why it does not apply); it leaves no hook behind and the model's weights, buffers,
requires_grad flags, gradients and train/eval modes exactly as they were; two runs with the same seed give
bit-identical arrays; its artifacts survive a cache round trip; it draws a PNG (or has no figure at all) and its page
renders. 32-px inputs, a dozen data-set images, a few steps each."""
from __future__ import annotations

import dataclasses
import functools
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import SEEDED_INIT, assert_same_state, colour_folder, model_state, noise_image, write_spec
from generator.cache import Cache
from generator.checks import ReportSpec, prepare, sets_used_by
from generator.context import DrawContext, RunContext
from generator.outputs import write_outputs
from generator.pipeline import ModelPages, Result, execute, plan
from generator.report import model_page_context, technique_page_context
from generator.techniques import registry
from generator.techniques.dataset.feature_pass import FeatureStore
from generator.templating import Renderer

pytestmark = pytest.mark.usefixtures("one_thread")

# The factory module of the three networks, written beside the spec (`factory: allnets:NAME`), weights seeded.
ALLNETS = SEEDED_INIT + '''

def plain():
    """(a) A plain ReLU CNN: Conv2d / ReLU / MaxPool2d / ... / Linear in one nn.Sequential."""
    return _init(nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, 8, 3, padding=1)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(8, 12, 3, padding=1)), ("relu2", nn.ReLU(inplace=True)), ("pool2", nn.MaxPool2d(2)),
        ("flat", nn.Flatten()), ("fc", nn.Linear(12 * 8 * 8, 4)),
    ])))


class Functional(nn.Module):
    """(b) ReLU6 modules and functional activations (F.relu, torch.relu) in a custom forward."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act1 = nn.ReLU6()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 12, 3, padding=1)
        self.conv3 = nn.Conv2d(12, 12, 3, padding=1)
        self.act3 = nn.ReLU6()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, 4)

    def forward(self, x):
        x = self.pool(self.act1(self.conv1(x)))
        x = F.relu(self.conv2(x))
        x = self.act3(torch.relu(self.conv3(x)))
        return self.fc(torch.flatten(self.gap(x), 1))


def functional():
    return _init(Functional())


def silu():
    """(c) SiLU with batch norm, a depthwise (grouped) 3×3 conv and a pointwise conv."""
    net = _init(nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, 8, 3, padding=1, bias=False)), ("bn1", nn.BatchNorm2d(8)), ("act1", nn.SiLU()),
        ("dw", nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False)), ("bn2", nn.BatchNorm2d(8)),
        ("act2", nn.SiLU()),
        ("pw", nn.Conv2d(8, 16, 1)), ("act3", nn.SiLU()),
        ("gap", nn.AdaptiveAvgPool2d(1)), ("flat", nn.Flatten()), ("fc", nn.Linear(16, 4)),
    ])))
    with torch.no_grad():  # batch-norm statistics that are not the identity
        for i, bn in enumerate(m for m in net.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.copy_(torch.linspace(-0.1, 0.1, bn.num_features) * (i + 1))
            bn.running_var.copy_(torch.linspace(0.5, 1.5, bn.num_features))
    return net
'''

NETS = {  # name → (factory, layers shown)
    "plain": ("allnets:plain", ["relu1", "relu2"]),
    "functional": ("allnets:functional", ["act1", "conv2"]),
    "silu": ("allnets:silu", ["act1", "act3"]),
}

# Tiny settings for every selectable technique (the build's --quick shrinks them further where it can).
TECHNIQUES = {
    "predictions": {"top_k": 3}, "filters": {"max_filters": 4, "max_inputs": 3}, "activations": {"max_channels": 4},
    "saliency": {}, "guided_backprop": {}, "integrated_gradients": {"steps": 4}, "smoothgrad": {"samples": 3},
    "occlusion": {"window": 16, "stride": 16}, "gradcam": {}, "guided_gradcam": {},
    "saliency_grabcut": {"samples": 2, "iterations": 1},
    "nearest_neighbors": {"k": 3, "queries": 3}, "embedding": {"grid": 4, "cell": 16},
    "max_patches": {"per_layer": 2, "top_k": 2},
    "class_visualization": {"max_classes": 1, "steps": 4, "pixel_steps": 4, "size": 32},
    "unit_visualization": {"per_layer": 2, "steps": 4, "size": 32},
    "fooling": {"steps": 4}, "deepdream": {"octaves": 1, "steps": 2, "jitter": 2},
    "multifaceted": {"max_classes": 1, "facets": 1, "steps": 4, "size": 32, "thumbnails": 2},
    "feature_inversion": {"steps": 4, "size": 32},
    "texture_synthesis_nonparametric": {"images": ["textures"], "scale": 24, "source_size": 16, "size": 16,
                                        "window": 5},
    "texture_synthesis": {"images": ["textures"], "size": 32, "source_size": 32, "steps": 3, "coarse_steps": 0,
                          "random_filters": False},
    "style_transfer": {"styles": ["styles"], "size": 32, "style_size": 32, "steps": 3, "coarse_steps": 0,
                       "random_filters": False},
}


def test_every_technique_is_covered_here():
    assert set(TECHNIQUES) == set(registry.selectable())
    assert set(registry.selectable()) | set(registry.core()) == set(registry.TECHNIQUES)
    assert not set(registry.selectable()) & set(registry.core())


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The three networks prepared as a build prepares them (`prepare`, then `plan` with --quick): net → its loaded
    model, planned jobs, run and draw contexts, and each technique's parameters."""
    root = tmp_path_factory.mktemp("allnets")
    (root / "allnets.py").write_text(ALLNETS, encoding="utf-8")
    (root / "pics").mkdir()
    noise_image(root / "pics" / "a.png", seed=1)
    noise_image(root / "pics" / "b.png", size=(40, 56), seed=2)
    noise_image(root / "pics" / "texture.png", size=(40, 40), seed=3, high=255)
    noise_image(root / "pics" / "style.png", size=(36, 44), seed=4, high=255)
    colour_folder(root / "colours", per_class=4)
    spec = {
        "title": "all techniques", "output": "out", "cache": "cache", "device": "cpu", "seed": 0,
        "datasets": {"colours": {"folder": "colours"}},
        "images": {"pics": ["pics/a.png", "pics/b.png"], "textures": ["pics/texture.png"],
                   "styles": ["pics/style.png"]},
        "models": [{"name": net, "factory": factory, "labels": ["cat", "dog", "car", "tree"], "input": {"size": 32},
                    "layers": layers, "images": ["pics"], "dataset": "colours", "techniques": TECHNIQUES}
                   for net, (factory, layers) in NETS.items()],
    }
    rspec = ReportSpec.load(write_spec(root, spec))
    prepared = prepare(rspec)  # imports allnets.py from beside the spec
    sys.modules.pop("allnets", None)
    worlds = {}
    for model in prepared.models:
        ms = rspec.models[model.spec_index]
        own = [r.id for s in rspec.image_sets_of(ms) for r in prepared.images[s]]
        records = {r.id: r for s in sets_used_by(rspec, ms) for r in prepared.images[s]}
        dataset = prepared.datasets[model.dataset]
        params = {k: t.Params() for k, t in registry.core().items()} | ms.technique_params()
        sets = {s: [r.id for r in prepared.images[s]] for s in sets_used_by(rspec, ms)}
        jobs = plan(model, params, own, {k: r.digest for k, r in records.items()}, quick=True,
                    dataset_digest=dataset.digest, sets=sets)
        layers = [j.layer for j in jobs if j.layer and registry.get(j.kind).scope.dataset != "none"]
        features = FeatureStore(model, dataset, root / "cache", layers)
        ctx = RunContext(model, records, quick=True, seed=rspec.seed, dataset=dataset, features=features, own=own)
        worlds[model.name] = {"model": model, "jobs": jobs, "ctx": ctx, "params": params,
                              "draw": DrawContext(model, records, dataset)}
    return worlds


def _same_arrays(a, b, what: str) -> None:
    assert list(a.arrays) == list(b.arrays), what
    for name in a.arrays:
        x, y = np.asarray(a.arrays[name]), np.asarray(b.arrays[name])
        assert x.dtype == y.dtype and x.shape == y.shape, f"{what}: {name} {x.dtype}{x.shape} vs {y.dtype}{y.shape}"
        assert np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"), f"{what}: array {name} differs"


def _is_png(path: Path) -> None:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as im:
        assert im.width > 0 and im.height > 0, path


def _plain(markdown: str) -> str:
    """Rendered Markdown without its escapes ("\\(", "\\+", "\\_"), to find a sentence or title in it."""
    return markdown.replace("\\", "")


@functools.cache
def _renderer() -> Renderer:
    return Renderer()


@pytest.mark.parametrize("net", list(NETS))
@pytest.mark.parametrize("kind", list(registry.TECHNIQUES))
def test_technique_on_net(world, kind, net, tmp_path):
    w = world[net]
    model, ctx, technique = w["model"], w["ctx"], registry.get(kind)
    module = model.module
    reason = technique.inapplicable(model, w["params"][kind])
    jobs = [j for j in w["jobs"] if j.kind == kind]
    if reason is not None:  # does not apply: says why in a sentence, plans no job, and its page says so
        assert isinstance(reason, str) and len(reason.split()) >= 3, reason
        assert not jobs
        text = _renderer().page("pages/inapplicable.md.j2", model={"name": net, "source": model.source},
                                technique={"kind": kind, "title": technique.title, "summary": technique.summary},
                                reason=reason)
        assert f"was not run on this model: {reason}" in _plain(text)
        return
    assert jobs, f"{kind} planned no job on {net}"

    # runs, leaving the model as it was (weights, buffers, flags, grads, modes, hooks)
    before = model_state(module)
    first = execute(jobs, {net: ctx}, Cache(tmp_path / "c1"), force=True)
    assert_same_state(before, model_state(module))
    failed = [f"{r.job.label}: {r.error}" for r in first if r.status == "failed"]
    assert not failed, "\n".join(failed)
    assert len(first) == len(jobs) and all(r.status == "ran" and r.artifact is not None for r in first)

    # deterministic on the CPU: a second run, same seed, gives the same arrays
    second = execute(jobs, {net: ctx}, Cache(tmp_path / "c2"), force=True)
    assert_same_state(before, model_state(module))
    for a, b in zip(first, second):
        assert b.status == "ran", b.error
        _same_arrays(a.artifact, b.artifact, f"second run of {a.job.label}")

    # a cache round trip keeps arrays and meta
    cache = Cache(tmp_path / "rt")
    back = []
    for r in first:
        cache.put(r.job.key, r.artifact)
        got = cache.get(r.job.key)
        assert got is not None, r.job.label
        _same_arrays(r.artifact, got, f"cache round trip of {r.job.label}")
        assert got.meta == r.artifact.meta, f"cache round trip of {r.job.label}: meta differs"
        back.append(Result(r.job, "cached", 0.0, got))

    # its figure, drawn from the cached artifact: a PNG (or several), or False for a technique without figures
    drawn = [technique.draw(r.artifact, r.job, w["draw"], tmp_path / "fig" / f"{i}.png") for i, r in enumerate(back)]
    for i, d in enumerate(drawn):
        if isinstance(d, dict):
            assert d, f"{kind}: an empty dict of figures"
            for p in d.values():
                _is_png(Path(p))
        elif d:
            _is_png(tmp_path / "fig" / f"{i}.png")
    for r, d in zip(back, drawn):  # every artifact has its figure, or the technique draws none at all
        assert bool(d) == (kind not in NO_FIGURE), f"{r.job.label}: draw() returned {d!r}"

    # its page renders, without failures (write_outputs turns a figure that fails to draw into one)
    pages = ModelPages(model, w["draw"], list(back))
    write_outputs(tmp_path / "out", pages, lambda n: None)
    assert all(r.status == "cached" for r in pages.results), [r.error for r in pages.results]
    if technique.always:  # the core techniques (inputs, architecture) are shown on the model's page
        text = _renderer().page("pages/model.md.j2", **model_page_context(pages, [], {}))
    else:
        tctx = technique_page_context(pages, kind)
        assert not tctx["failed"], tctx["failed"]
        text = _renderer().page(f"pages/{kind}.md.j2", **tctx)
        assert technique.title in _plain(text), text[:200]
    assert len(text) > 200


@pytest.mark.parametrize("net", list(NETS))
def test_without_a_data_set_the_data_set_views_say_why(world, net):
    """The branch the three networks above never take: a model that names no data set gets, for each data-set
    technique, a sentence instead of jobs, and a page that says so."""
    model = dataclasses.replace(world[net]["model"], dataset=None)
    kinds = [k for k, t in registry.TECHNIQUES.items() if t.uses_dataset]
    assert {"nearest_neighbors", "embedding", "max_patches"} <= set(kinds)
    for kind in kinds:
        technique = registry.get(kind)
        params = world[net]["params"][kind]
        reason = technique.inapplicable(model, params)
        assert reason and "data set" in reason, kind
        assert not [j for j in plan(model, {kind: params}, [], {}, quick=True) if j.kind == kind], kind
        text = _renderer().page("pages/inapplicable.md.j2", model={"name": net, "source": model.source},
                                technique={"kind": kind, "title": technique.title, "summary": technique.summary},
                                reason=reason)
        assert f"was not run on this model: {reason}" in _plain(text), kind


NO_FIGURE = {"architecture"}  # techniques that draw no figure (the model page shows the table)
