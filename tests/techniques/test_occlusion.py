"""Occlusion: equal to Captum's Occlusion on the class's log-odds (the default) and softmax probability, batched
equal to one window at a time, fills as documented, bad windows caught before running, in-place ReLU models, a
saturated model still mapped, nothing left behind."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from captum.attr import Occlusion as CaptumOcclusion
from helpers import torchvision_net, act_net, assert_same_state, make_ctx, model_state, params, render_page, run
from pydantic import ValidationError
from torch import nn

from generator import images as imagelib
from generator.techniques.attribution.faithfulness import blur
from generator.techniques import registry
from generator.techniques.attribution.occlusion import fill_images, occlusion_maps, window_count

# Weights that leave the softmax unsaturated (p ≈ 0.65), so covering a patch moves it by far more than float error
# (larger weights saturate it at 1.0: every drop is 0 and any map would match any other).
SCALE = 0.15


def sensitive_ctx(images: int = 3, module=None, size: int = 32):
    return make_ctx(module or act_net(scale=SCALE), images=images, size=size)


def batch(ctx):
    x = ctx.batch(list(ctx.images))
    with torch.no_grad():
        return x, ctx.model.module(x).argmax(1)


def all_log_odds(z: torch.Tensor) -> torch.Tensor:
    """log p_c / (1 − p_c) of every class c, written out: z_c − log Σ_{j≠c} exp z_j."""
    cols = [z[:, c] - torch.logsumexp(torch.cat([z[:, :c], z[:, c + 1:]], 1), 1) for c in range(z.shape[1])]
    return torch.stack(cols, 1)


def captum_map(ctx, x, targets, fill, window, stride, score="log_odds"):
    if score == "log_odds":
        forward = lambda t: all_log_odds(ctx.model.module(t))  # noqa: E731  (Captum measures its forward's output)
    else:
        forward = lambda t: ctx.model.module(t).softmax(1)  # noqa: E731
    c = x.shape[1]
    attr = CaptumOcclusion(forward).attribute(
        x, sliding_window_shapes=(c, window, window), strides=(c, stride, stride), baselines=fill.contiguous(),
        target=targets)
    # A window spans all channels, so every channel holds the same map.
    assert torch.allclose(attr, attr[:, :1].expand_as(attr))
    return attr[:, 0]


@pytest.mark.parametrize("score", ["log_odds", "probability"])
@pytest.mark.parametrize("window,stride", [(8, 4), (7, 5), (8, 5), (32, 32), (5, 3)])
def test_matches_captum_zero_fill(window, stride, score):
    ctx = sensitive_ctx()
    x, targets = batch(ctx)
    p = params("occlusion", window=window, stride=stride, fill="zero", score=score)
    ours = registry.get("occlusion").attribute(ctx, x, targets, p)
    ref = captum_map(ctx, x, targets, fill_images(ctx, x, p), window, stride, score)
    assert ours.shape == (3, 32, 32)
    assert ref.abs().max() > 1e-2  # the comparison means something
    assert (ours - ref).abs().max() < 1e-5 * max(1.0, float(ref.abs().max()))


@pytest.mark.parametrize("fill", ["mean", "blur"])
def test_matches_captum_other_fills(fill):
    ctx = sensitive_ctx()
    x, targets = batch(ctx)
    p = params("occlusion", window=8, stride=4, fill=fill)
    ours = registry.get("occlusion").attribute(ctx, x, targets, p)
    ref = captum_map(ctx, x, targets, fill_images(ctx, x, p), 8, 4)
    assert (ours - ref).abs().max() < 1e-5


def test_saturated_model_still_gives_a_map():
    """Issue 12: at p = 1.00 the probability drop is float noise everywhere; the log-odds drop is not."""
    ctx = make_ctx(act_net(scale=3.0), images=1)  # large weights: the softmax saturates
    x, targets = batch(ctx)
    with torch.no_grad():
        assert ctx.model.module(x).softmax(1).max() > 1 - 1e-6
    p = params("occlusion", window=8, stride=4, fill="zero")
    probability = registry.get("occlusion").attribute(ctx, x, targets, p.model_copy(update={"score": "probability"}))
    odds = registry.get("occlusion").attribute(ctx, x, targets, p)
    assert probability.abs().max() < 1e-5 and odds.abs().max() > 0.1


def test_fills_are_what_the_docs_say():
    ctx = sensitive_ctx()
    x, _ = batch(ctx)
    spec = ctx.model.input
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    zero = fill_images(ctx, x, params("occlusion", fill="zero"))
    assert torch.allclose(zero, ((0 - mean) / std).expand_as(x))  # black pixels, normalized
    # Mean: each image's crop averaged per channel, then the images averaged, then normalized.
    crops = [np.asarray(imagelib.crop(r.image, spec), dtype=np.float64) / 255 for r in ctx.images.values()]
    colour = torch.tensor(np.mean([c.reshape(-1, 3).mean(0) for c in crops], axis=0), dtype=torch.float32)
    got = fill_images(ctx, x, params("occlusion", fill="mean"))
    assert torch.allclose(got, ((colour.view(1, 3, 1, 1) - mean) / std).expand_as(x), atol=1e-6)
    # Blur: the image itself, blurred with σ = window / 4 unless given.
    assert torch.allclose(fill_images(ctx, x, params("occlusion", window=12, stride=6, fill="blur")), blur(x, 3.0))
    assert torch.allclose(fill_images(ctx, x, params("occlusion", fill="blur", blur_sigma=1.5)), blur(x, 1.5))


def brute_force(module, x, targets, fill, window, stride):
    """One forward per window, written without the technique's helpers; drops in log-odds (float64)."""
    score = lambda y, t: all_log_odds(module(y).double())[0, t]  # noqa: E731
    n, _, h, w = x.shape

    def starts(length):
        s = list(range(0, length - window + 1, stride))
        if s[-1] + window < length:  # one more, clipped at the border
            s.append(s[-1] + stride)
        return s

    out = torch.zeros(n, h, w, dtype=torch.float64)
    for i in range(n):
        with torch.no_grad():
            p0 = score(x[i:i + 1], targets[i])
            total = torch.zeros(h, w, dtype=torch.float64)
            count = torch.zeros(h, w, dtype=torch.float64)
            for top in starts(h):
                for left in starts(w):
                    y = x[i:i + 1].clone()
                    rows, cols = slice(top, top + window), slice(left, left + window)
                    y[..., rows, cols] = fill[i:i + 1, :, rows, cols]
                    drop = p0 - score(y, targets[i])
                    total[top:top + window, left:left + window] += float(drop)
                    count[top:top + window, left:left + window] += 1
        out[i] = total / count
    return out


@pytest.mark.parametrize("per_forward", [1, 7, None])
def test_batched_equals_one_window_at_a_time(per_forward):
    ctx = sensitive_ctx(images=2)
    x, top = batch(ctx)
    # Image 0 explained for two classes, image 1 for one: rows of one image share their windows.
    rows = torch.tensor([0, 0, 1])
    targets = torch.tensor([int(top[0]), (int(top[0]) + 1) % 4, int(top[1])])
    xr = x[rows]
    fill = fill_images(ctx, xr, params("occlusion", fill="mean"))
    ours = occlusion_maps(ctx.model, xr, targets, fill, 9, 5, batch=per_forward)
    ref = brute_force(ctx.model.module, xr, targets, fill, 9, 5)
    assert ref.abs().max() > 1e-2
    assert (ours.double() - ref).abs().max() < 1e-5


class ViewNet(nn.Module):
    """Flattens a spatial map with `.view`, which a channels-last tensor cannot do: occlusion must fall back."""

    def __init__(self):
        super().__init__()
        body = act_net(scale=SCALE)
        self.conv1, self.act1, self.pool = body.conv1, body.act1, body.pool
        self.conv2, self.act2 = body.conv2, body.act2
        self.fc = nn.Linear(8 * 16 * 16, 4)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(self.fc.weight.shape, generator=torch.Generator().manual_seed(1)) * 0.05)

    def forward(self, x):
        h = self.act2(self.conv2(self.pool(self.act1(self.conv1(x)))))
        return self.fc(h.view(len(x), -1))


def test_model_that_cannot_take_channels_last():
    net = ViewNet().eval()
    ctx = make_ctx(net, images=2)
    x, targets = batch(ctx)
    with pytest.raises(RuntimeError):  # the premise: this model fails on a channels-last batch
        net(x.contiguous(memory_format=torch.channels_last))
    fill = fill_images(ctx, x, params("occlusion", fill="zero"))
    ours = occlusion_maps(ctx.model, x, targets, fill, 8, 4)
    ref = brute_force(net, x, targets, fill, 8, 4)
    assert ref.abs().max() > 1e-3
    assert (ours.double() - ref).abs().max() < 1e-5


def test_windows_go_through_the_model_in_batches(monkeypatch):
    """Full forwards (`full=True`); the incremental path's batches: tests/test_incremental_occlusion.py."""
    from generator import batching

    ctx = sensitive_ctx(images=2)
    x, targets = batch(ctx)
    # A cache that holds the maps of 16 images, so that the 128 windows take 8 forwards.
    monkeypatch.setattr(batching, "CPU_CACHE_BUDGET", 16 * batching.largest_activation_bytes(ctx.model.module, x[:1]))
    sizes = []
    handle = ctx.model.module.register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[0]))
    try:
        fill = fill_images(ctx, x, params("occlusion", fill="zero"))
        occlusion_maps(ctx.model, x, targets, fill, 4, 4, full=True)
    finally:
        handle.remove()
    windows = window_count(32, 32, 4, 4)  # 64 per image, 128 in all
    assert windows == 64
    per_forward = batching.images_per_forward(ctx.model, x[:1], 2 * windows)
    assert per_forward == 16
    assert sizes[0] == 2  # the unoccluded images, once
    assert sizes[1] == 1  # the probe that measures the largest activation map (generator.batching)
    assert sum(sizes[2:]) == 2 * windows and len(sizes) - 2 == math.ceil(2 * windows / per_forward)


def test_run_reports_the_windows_and_signed_metrics():
    ctx = sensitive_ctx(images=2)
    arts = run("occlusion", ctx, window=8, stride=4)
    for art in arts:
        assert art.main.shape == (1, 32, 32)
        assert art.meta["occlusion"]["windows"] == 49 and art.metrics["windows"] == 49
        assert art.metrics["largest_drop"] == pytest.approx(float(art.main.max()))
        assert art.meta["occlusion"]["fill"] == "mean" and len(art.meta["occlusion"]["fill_colour"]) == 3


def test_window_larger_than_the_input_is_a_check_error():
    ctx = sensitive_ctx()
    technique = registry.get("occlusion")
    problems = technique.check(ctx.model, params("occlusion", window=33, stride=8))
    assert len(problems) == 1 and problems[0].startswith("window:") and "larger than the 32 × 32" in problems[0]
    assert technique.check(ctx.model, params("occlusion", window=32, stride=8)) == []


def test_window_too_large_caught_by_validate(project, capsys):
    from helpers import cli, tiny_spec, write_spec

    spec = write_spec(project, tiny_spec(techniques={"occlusion": {"window": 40, "stride": 8}}))
    assert cli("validate", spec) != 0
    out = capsys.readouterr()
    text = out.out + out.err
    assert "techniques.occlusion.window" in text and "larger than the 32 × 32" in text


def test_stride_larger_than_window_is_rejected():
    with pytest.raises(ValidationError, match="stride"):
        params("occlusion", window=8, stride=9)


def test_quick_uses_non_overlapping_windows():
    p = params("occlusion", window=8, stride=4)
    q = p.quick()
    assert q.stride == "window" and q.geometry(32) == (8, 8)
    assert window_count(32, 32, *q.geometry(32)) < window_count(32, 32, *p.geometry(32)) / 3
    assert params("occlusion").quick().geometry(224) == (32, 32)


def test_default_window_scales_with_the_input():
    assert params("occlusion").geometry(224) == (32, 16)
    assert params("occlusion").geometry(32) == (5, 2)
    assert params("occlusion").geometry(8) == (1, 1)
    assert params("occlusion", window=12).geometry(224) == (12, 6)
    assert params("occlusion", stride="window").geometry(224) == (32, 32)
    # The defaults never fail the check, whatever the input size; a stride above the default window does.
    technique = registry.get("occlusion")
    for size in (8, 28, 224):
        model = make_ctx(act_net(), images=0, size=size).model
        assert technique.check(model, params("occlusion")) == []
    (problem,) = technique.check(make_ctx(act_net(), images=0).model, params("occlusion", stride=6))
    assert problem.startswith("stride:") and "default window of 5 px" in problem


@pytest.mark.parametrize("arch", ["resnet18", "vgg11", "alexnet"])
def test_in_place_relu_models(arch):
    net = torchvision_net(arch)
    ctx = make_ctx(net, images=2, size=64)
    before = model_state(net)
    x, targets = batch(ctx)
    p = params("occlusion", window=32, stride=32, fill="zero")
    ours = registry.get("occlusion").attribute(ctx, x, targets, p)
    assert_same_state(before, model_state(net))
    assert ours.shape == (2, 64, 64) and torch.isfinite(ours).all()
    ref = captum_map(ctx, x, targets, fill_images(ctx, x, p), 32, 32)
    assert (ours - ref).abs().max() < 1e-5


def test_model_left_as_it_was_and_page_renders(tmp_path):
    ctx = sensitive_ctx(images=2)
    before = model_state(ctx.model.module)
    text = render_page("occlusion", ctx, tmp_path, window=8, stride=4)
    assert_same_state(before, model_state(ctx.model.module))
    assert "How to read this" in text and "8 × 8 pixel patch" in text
    figures = list((tmp_path / "tiny" / "figures" / "occlusion").glob("*.png"))
    assert len(figures) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_and_batches_by_memory():
    from generator.batching import images_per_forward

    ctx = sensitive_ctx(images=2)
    x, targets = batch(ctx)
    p = params("occlusion", window=8, stride=4, fill="zero")
    cpu = registry.get("occlusion").attribute(ctx, x, targets, p)
    ctx.model.module.cuda()
    ctx.model.device = torch.device("cuda")
    ctx._inputs.clear()
    try:
        xc, tc = x.cuda(), targets.cuda()
        assert images_per_forward(ctx.model, xc[:1], 10_000) > 64
        gpu = registry.get("occlusion").attribute(ctx, xc, tc, p)
    finally:
        ctx.model.module.cpu()
    assert (gpu.cpu() - cpu).abs().max() < 1e-4
