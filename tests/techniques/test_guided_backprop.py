"""Guided backprop: equal to Captum on nn.ReLU modules, and to a hand-written backward where Captum is silently
wrong (ReLU6, functional and in-place ReLUs, LeakyReLU); unit targets; torchvision models; nothing left behind."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from captum.attr import GuidedBackprop as CaptumGuided
from helpers import (FunctionalNet, Raises, act_net, assert_same_state, brute_force_guided, make_ctx, model_state,
                      params, plain_gradient, render_page, run)
from pydantic import ValidationError
from torch import nn

from generator.techniques.attribution.rectifiers import NoReluError, active_modes, guided_relus
from generator.hooks import hook_count
from generator.techniques import registry
from generator.techniques.attribution.gradients import class_gradients


def batch_and_targets(ctx):
    x = ctx.batch(list(ctx.images))
    with torch.no_grad():
        return x, ctx.model.module(x).argmax(1).tolist()


def test_matches_captum_on_relu_modules():
    ctx = make_ctx(act_net(), images=3)
    arts = run("guided_backprop", ctx)
    x, targets = batch_and_targets(ctx)
    ref = CaptumGuided(ctx.model.module).attribute(x.clone().requires_grad_(), target=targets)
    ours = np.concatenate([a.arrays["guided"] for a in arts])
    assert ours.shape == (3, 3, 32, 32)
    assert np.abs(ours - ref.numpy()).max() < 1e-6
    assert np.abs(np.concatenate([a.main for a in arts]) - ref.abs().amax(1).numpy()).max() < 1e-6


def test_relu6_matches_brute_force_where_captum_does_not():
    net = act_net(nn.ReLU6, scale=1.0)  # large weights: many pre-activations above 6, so the cap matters
    ctx = make_ctx(net, images=2)
    x, targets = batch_and_targets(ctx)
    with torch.no_grad():
        assert (net.conv1(x) > 6).float().mean() > 0.05
    arts = run("guided_backprop", ctx)
    for i, (art, t) in enumerate(zip(arts, targets)):
        ref = brute_force_guided(net, x[i:i + 1], t, upper=6.0)[0]
        assert torch.allclose(torch.from_numpy(art.arrays["guided"][0]), ref, rtol=1e-4, atol=1e-6 * ref.abs().max())
        plain = plain_gradient(net, x[i:i + 1], t)[0]
        assert (ref - plain).abs().max() > 0.1 * plain.abs().max()  # really differs from the plain gradient
        captum = CaptumGuided(net).attribute(x[i:i + 1].clone().requires_grad_(), target=t)[0]
        assert torch.allclose(captum, plain, atol=1e-6)  # Captum skips nn.ReLU6: the plain gradient, silently


def test_relu6_model_left_alone_after_guided():
    net = act_net(nn.ReLU6, scale=1.0)
    ctx = make_ctx(net, images=2)
    x, targets = batch_and_targets(ctx)
    with torch.no_grad():
        out_before = net(x)
    grad_before = plain_gradient(net, x, targets[0])
    state = model_state(net)
    run("guided_backprop", ctx)
    assert_same_state(state, model_state(net))
    with torch.no_grad():
        assert torch.equal(net(x), out_before)
    assert torch.equal(plain_gradient(net, x, targets[0]), grad_before)


@pytest.mark.parametrize("inplace", [False, True], ids=["functional", "functional-inplace"])
def test_functional_relus_match_brute_force(inplace):
    net = FunctionalNet(inplace=inplace)
    reference = act_net()  # the same weights, as modules, for the hand-written backward
    ctx = make_ctx(net, images=2)
    x, targets = batch_and_targets(ctx)
    with torch.no_grad():
        out_before = net(x)
        assert torch.allclose(out_before, reference(x), atol=1e-6)
    grad_before = plain_gradient(net, x, targets[0])
    state = model_state(net)
    arts = run("guided_backprop", ctx)
    for i, (art, t) in enumerate(zip(arts, targets)):
        ref = brute_force_guided(reference, x[i:i + 1], t)[0]
        assert torch.allclose(torch.from_numpy(art.arrays["guided"][0]), ref, rtol=1e-4, atol=1e-6 * ref.abs().max())
        assert (ref - plain_gradient(net, x[i:i + 1], t)[0]).abs().max() > 0
    assert_same_state(state, model_state(net))
    with torch.no_grad():
        assert torch.equal(net(x), out_before)
    assert torch.equal(plain_gradient(net, x, targets[0]), grad_before)


def test_in_place_modules_equal_out_of_place():
    a, b = make_ctx(act_net()), make_ctx(act_net(inplace=True))
    for x, y in zip(run("guided_backprop", a), run("guided_backprop", b)):
        np.testing.assert_allclose(x.arrays["guided"], y.arrays["guided"], rtol=1e-5, atol=1e-8)


def test_leaky_relu_matches_brute_force():
    net = act_net(nn.LeakyReLU, negative_slope=0.1)
    ctx = make_ctx(net, images=1)
    x, targets = batch_and_targets(ctx)
    (art,) = run("guided_backprop", ctx)
    ref = brute_force_guided(net, x, targets[0], slope=0.1)[0]
    assert torch.allclose(torch.from_numpy(art.arrays["guided"][0]), ref, rtol=1e-4, atol=1e-6 * ref.abs().max())


def test_every_relu_form_is_intercepted_and_forward_unchanged():
    x = torch.randn(4, 5) * 4
    forms = {
        "nn.ReLU": nn.ReLU(), "nn.ReLU(inplace)": nn.ReLU(inplace=True), "nn.ReLU6": nn.ReLU6(),
        "nn.ReLU6(inplace)": nn.ReLU6(inplace=True), "nn.LeakyReLU": nn.LeakyReLU(0.2),
        "nn.LeakyReLU(inplace)": nn.LeakyReLU(0.2, inplace=True), "F.relu": F.relu, "torch.relu": torch.relu,
        "Tensor.relu": torch.Tensor.relu, "torch.relu_": torch.relu_, "Tensor.relu_": torch.Tensor.relu_,
        "F.relu6": F.relu6, "F.hardtanh(0, 6)": lambda t: F.hardtanh(t, 0.0, 6.0),
        "F.hardtanh_(0, 3)": lambda t: F.hardtanh_(t, 0.0, 3.0), "F.leaky_relu": F.leaky_relu,
        "F.leaky_relu_": lambda t: F.leaky_relu_(t, 0.3),
    }
    for name, f in forms.items():
        expected = f(x.clone())
        leaf = x.clone().requires_grad_(True)
        with guided_relus() as mode:
            h = leaf * 1.0
            out = f(h)
        assert mode.total == 1, name
        assert torch.equal(out, expected), name
        if "inplace" in name or name.endswith("_") or "_(" in name:
            assert torch.equal(h, expected), name  # in-place forms still change their input
        up = torch.randn_like(x)
        (g,) = torch.autograd.grad(out, leaf, up)
        assert (g[up <= 0] == 0).all(), name  # negative upstream gradient never passes
    with guided_relus() as mode:
        F.hardtanh(x, -1.0, 1.0)  # not a ReLU: passes through untouched
        torch.sigmoid(x)
    assert mode.total == 0
    assert active_modes() == []


SMOOTH = {
    "silu": (nn.SiLU, lambda a: torch.sigmoid(a) * (1 + a * (1 - torch.sigmoid(a)))),
    "gelu": (nn.GELU, lambda a: 0.5 * (1 + torch.erf(a / 2 ** 0.5)) + a * torch.exp(-a * a / 2) / (2 * torch.pi) ** 0.5),
    "hardswish": (nn.Hardswish, lambda a: torch.where(a >= 3, 1.0, torch.where(a <= -3, 0.0, (2 * a + 3) / 6))),
}


@pytest.mark.parametrize("name", list(SMOOTH))
def test_smooth_rectifiers_match_the_stated_rule(name):
    """SiLU, GELU, Hardswish: relu(upstream) · f'(x) · [x > 0], written out by hand with each f' in closed form;
    never the plain gradient, and not the ReLU rule either (the slope is kept)."""
    act, derivative = SMOOTH[name]
    net = act_net(act, scale=1.0)
    ctx = make_ctx(net, images=2)
    x, targets = batch_and_targets(ctx)
    arts = run("guided_backprop", ctx)
    for i, (art, t) in enumerate(zip(arts, targets)):
        ref = brute_force_guided(net, x[i:i + 1], t, derivative=derivative)[0]
        got = torch.from_numpy(art.arrays["guided"][0])
        assert torch.allclose(got, ref, rtol=1e-4, atol=1e-5 * ref.abs().max())
        plain = plain_gradient(net, x[i:i + 1], t)[0]
        assert (ref - plain).abs().max() > 0.1 * plain.abs().max()
        relu_rule = brute_force_guided(net, x[i:i + 1], t)[0]
        assert (ref - relu_rule).abs().max() > 0.01 * ref.abs().max()
    assert arts[0].meta["smooth_rectifiers"] == [name]


@pytest.mark.parametrize("arch", ["resnet18", "vgg11", "alexnet"])
def test_torchvision_models_run(arch):
    module = getattr(torchvision.models, arch)(weights=None, num_classes=10).eval()
    for p in module.parameters():
        p.requires_grad_(False)  # as the loader leaves them
    ctx = make_ctx(module, images=2, size=64, labels=None)
    x, targets = batch_and_targets(ctx)
    state = model_state(module)
    with torch.no_grad():
        out_before = module(x)
    with guided_relus() as mode:
        with torch.no_grad():
            module(x)
    assert mode.calls["relu"] >= 5  # in-place nn.ReLU modules, all caught
    arts = run("guided_backprop", ctx)
    guided = np.concatenate([a.arrays["guided"] for a in arts])
    assert guided.shape == (2, 3, 64, 64) and np.isfinite(guided).all() and np.abs(guided).max() > 0
    plain = plain_gradient(module, x, targets[0])[0].numpy()
    assert np.abs(guided[0] - plain).max() > 1e-3 * np.abs(plain).max()
    assert_same_state(state, model_state(module))
    with torch.no_grad():
        assert torch.equal(module(x), out_before)


def test_unit_target_matches_brute_force():
    net = act_net()
    ctx = make_ctx(net, images=2)
    x = ctx.batch(list(ctx.images))
    arts = run("guided_backprop", ctx, layer="conv2", channel=5)
    with torch.no_grad():
        act = net.conv2(net.pool(net.act1(net.conv1(x))))[:, 5]
    for i, art in enumerate(arts):
        unit = art.meta["targets"][0]
        r, c = divmod(int(act[i].flatten().argmax()), act.shape[-1])
        assert unit["position"] == [r, c] and unit["activation"] == pytest.approx(float(act[i, r, c]), rel=1e-5)
        assert unit["probability"] is None and art.meta["target"] == unit["label"] == f"conv2 channel 5 at {(r, c)}"
        ref = brute_force_guided(net, x[i:i + 1], unit=("conv2", 5, (r, c)))[0]
        assert torch.allclose(torch.from_numpy(art.arrays["guided"][0]), ref, rtol=1e-4, atol=1e-6 * ref.abs().max())
    mean = run("guided_backprop", ctx, layer="conv2", channel=5, at="mean")
    assert not np.allclose(mean[0].main, arts[0].main)
    assert hook_count(net) == 0


def test_unit_checks():
    ctx = make_ctx(act_net())
    t = registry.get("guided_backprop")
    assert t.check(ctx.model, params("guided_backprop", layer="conv2", channel=7)) == []
    (problem,) = t.check(ctx.model, params("guided_backprop", layer="conv3", channel=0))
    assert problem.startswith("layer: no module 'conv3'") and "did you mean 'conv2'?" in problem
    (problem,) = t.check(ctx.model, params("guided_backprop", layer="conv2", channel=8))
    assert problem == "channel: 8 is out of range: 'conv2' has 8 channels (0 to 7)"
    with pytest.raises(ValidationError, match="'layer' and 'channel' go together"):
        params("guided_backprop", layer="conv2")
    with pytest.raises(ValidationError, match="'targets' do not apply when 'layer' is set"):
        params("guided_backprop", layer="conv2", channel=1, targets=["cat"])
    (problem,) = t.check(ctx.model, params("guided_backprop", targets=["dgo"]))
    assert "did you mean 'dog'?" in problem


@pytest.mark.parametrize("extra", [{}, {"layer": "0", "channel": 1}], ids=["class", "unit"])
def test_model_without_relu_is_a_clear_error(extra):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4)).eval()
    ctx = make_ctx(net, images=1)
    with pytest.raises(NoReluError, match="tiny has no rectifier.*silently equal the plain gradient"):
        run("guided_backprop", ctx, **extra)
    assert active_modes() == [] and hook_count(net) == 0


@pytest.mark.parametrize("extra", [{}, {"layer": "body.conv1", "channel": 1}], ids=["class", "unit"])
def test_hooks_and_mode_removed_when_forward_raises(extra):
    net = Raises().eval()
    ctx = make_ctx(net, images=1)
    with pytest.raises(ValueError, match="boom in forward"):
        run("guided_backprop", ctx, **extra)
    assert active_modes() == [] and hook_count(net) == 0


def test_batch_equals_single_images():
    ctx = make_ctx(act_net(nn.ReLU6, scale=1.0), images=3)
    together = run("guided_backprop", ctx)
    for art, image in zip(together, ctx.images):
        (alone,) = run("guided_backprop", ctx, [image])
        np.testing.assert_allclose(art.arrays["guided"], alone.arrays["guided"], rtol=1e-5, atol=1e-7)


def test_class_gradients_guided_flag_and_plain():
    net = act_net(nn.ReLU6, scale=1.0)
    ctx = make_ctx(net, images=1)
    x, targets = batch_and_targets(ctx)
    plain = class_gradients(ctx.model, x, torch.tensor(targets))
    assert torch.allclose(plain, plain_gradient(net, x, targets[0]), atol=1e-6)


def test_page_and_figure(tmp_path):
    ctx = make_ctx(act_net(), images=1)
    text = render_page("guided_backprop", ctx, tmp_path)
    assert "How to read this" in text and "grey where the gradient is zero" in text
    assert (tmp_path / "tiny" / "figures" / "guided_backprop" / "s--p0.png").stat().st_size > 5000
    text = render_page("guided_backprop", ctx, tmp_path, layer="conv2", channel=3)
    assert "channel 3 of <code>conv2</code>" in text and "| conv2 channel 3 at \\(" in text
    assert "| unit activation |" in text
