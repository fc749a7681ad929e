"""Helpers for the gradient-technique tests (a module, not a conftest.py: the foundation tests import `conftest` by
name, and a second conftest.py would shadow it): tiny CNNs with every kind of ReLU (modules, in-place, functional,
ReLU6, LeakyReLU) or none, a RunContext around a bare module, and a brute-force guided backprop to check against.
Nothing downloads anything or needs a GPU."""
from __future__ import annotations

from collections.abc import Callable

import functools
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn

from generator import images as imagelib
from generator.context import DrawContext, RunContext
from generator.models import LoadedModel
from generator.spec import InputSpec
from generator.techniques import registry
from generator.artifacts import Job

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
    from generator.report import ModelPages, technique_page_context, write_outputs

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
