"""SmoothGrad: the mean of Captum's |gradient| over exactly our noisy copies; seeded, repeatable, batch-invariant;
guided variant; model left alone."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from captum.attr import GuidedBackprop as CaptumGuided
from captum.attr import NoiseTunnel
from captum.attr import Saliency as CaptumSaliency
from helpers import (FunctionalNet, Raises, act_net, assert_same_state, make_ctx, model_state, params, render_page,
                      run)
from torch import nn

from generator.techniques.attribution.rectifiers import NoReluError, active_modes
from generator.hooks import hook_count
from generator.techniques import registry
from generator.techniques.attribution.smoothgrad import noise_draws, noise_scale


def reference(ctx, method, samples: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Captum's gradient on each of our noisy copies: (signed mean (N, C, H, W), max over channels of the mean
    |gradient| (N, H, W))."""
    x = ctx.batch(list(ctx.images))
    with torch.no_grad():
        targets = ctx.model.module(x).argmax(1).tolist()
    z = noise_draws(ctx.seed, samples, tuple(x.shape[1:]))
    sigma = noise_scale(x, noise)
    grads = []
    for s in range(samples):
        noisy = (x + sigma.view(-1, 1, 1, 1) * z[s]).requires_grad_(True)
        if method == "saliency":
            grads.append(CaptumSaliency(ctx.model.module).attribute(noisy, target=targets, abs=False))
        else:
            grads.append(CaptumGuided(ctx.model.module).attribute(noisy, target=targets))
    grads = torch.stack(grads)
    return grads.mean(0).numpy(), grads.abs().mean(0).amax(1).numpy()


def test_saliency_matches_captum_over_the_same_noise():
    ctx = make_ctx(act_net(), images=3, seed=7)
    arts = run("smoothgrad", ctx, samples=6, noise=0.2, batch=4)  # 4: chunks cut across images
    _, ref = reference(ctx, "saliency", 6, 0.2)
    got = np.concatenate([a.main for a in arts])
    assert np.abs(got - ref).max() < 1e-5 * np.abs(ref).max()


def test_guided_matches_captum_over_the_same_noise():
    ctx = make_ctx(act_net(), images=2)
    arts = run("smoothgrad", ctx, samples=5, of="guided_backprop")
    grad, ref = reference(ctx, "guided", 5, 0.15)
    assert np.abs(np.concatenate([a.main for a in arts]) - ref).max() < 1e-5 * np.abs(ref).max()
    assert np.abs(np.concatenate([a.arrays["guided"] for a in arts]) - grad).max() < 1e-5 * np.abs(grad).max()


def test_noise_tunnel_agrees_in_expectation():
    """Captum's NoiseTunnel draws its own noise; with many samples both estimate the same mean gradient."""
    ctx = make_ctx(act_net(), images=1)
    x = ctx.batch(list(ctx.images))
    target = int(ctx.model.module(x).argmax())
    sigma = float(noise_scale(x, 0.15)[0])
    torch.manual_seed(0)
    nt = NoiseTunnel(CaptumSaliency(ctx.model.module)).attribute(
        x.clone().requires_grad_(), nt_type="smoothgrad", nt_samples=400, nt_samples_batch_size=100, stdevs=sigma,
        target=target)  # abs=True, Saliency's default: the mean |gradient|, as ours
    (art,) = run("smoothgrad", ctx, samples=400, batch=100)
    ref = nt.abs().amax(1)[0].numpy()
    corr = np.corrcoef(art.main.ravel(), ref.ravel())[0, 1]
    assert corr > 0.9


def test_seeded_and_batch_invariant():
    ctx = make_ctx(act_net(), images=3, seed=3)
    first = np.concatenate([a.main for a in run("smoothgrad", ctx, samples=4)])
    again = np.concatenate([a.main for a in run("smoothgrad", ctx, samples=4)])
    assert np.array_equal(first, again)
    alone = np.concatenate([run("smoothgrad", ctx, [i], samples=4, batch=3)[0].main for i in ctx.images])
    np.testing.assert_allclose(first, alone, rtol=1e-5, atol=1e-6 * np.abs(first).max())
    other = dataclasses.replace(ctx, seed=4)
    assert not np.allclose(first, np.concatenate([a.main for a in run("smoothgrad", other, samples=4)]))


def test_noise_smooths_the_map():
    ctx = make_ctx(act_net(), images=1)
    (plain,) = run("saliency", ctx)
    (smooth,) = run("smoothgrad", ctx, samples=32)

    def roughness(m):  # mean absolute difference of neighbours, relative to the map's mean
        return (np.abs(np.diff(m, axis=-1)).mean() + np.abs(np.diff(m, axis=-2)).mean()) / m.mean()

    assert roughness(smooth.main[0]) < roughness(plain.main[0])


def test_model_left_alone_with_in_place_relus():
    net = FunctionalNet(inplace=True)
    ctx = make_ctx(net, images=2)
    x = ctx.batch(list(ctx.images))
    with torch.no_grad():
        before_out = net(x)
    state = model_state(net)
    for of in ("saliency", "guided_backprop"):
        got = np.concatenate([a.main for a in run("smoothgrad", ctx, samples=3, of=of)])
        ref = np.concatenate([a.main for a in run("smoothgrad", make_ctx(FunctionalNet(), images=2), samples=3, of=of)])
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-7)
    assert_same_state(state, model_state(net))
    with torch.no_grad():
        assert torch.equal(net(x), before_out)


def test_guided_without_relu_and_raising_forward():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4)).eval()
    with pytest.raises(NoReluError, match="no rectifier"):
        run("smoothgrad", make_ctx(net, images=1), samples=2, of="guided_backprop")
    (art,) = run("smoothgrad", make_ctx(net, images=1), samples=2)  # the plain gradient needs no ReLU
    assert art.main.max() > 0
    raising = Raises().eval()
    with pytest.raises(ValueError, match="boom"):
        run("smoothgrad", make_ctx(raising, images=1), samples=2, of="guided_backprop")
    assert hook_count(raising) == 0 and active_modes() == []


def test_quick_unknown_class_and_bad_params():
    p = params("smoothgrad")
    assert p.samples == 16 and p.noise == 0.15 and p.quick().samples == 4
    assert noise_scale(torch.tensor([[0.0, 2.0, -1.0], [1.0, 1.0, 1.5]]), 0.1).tolist() == pytest.approx([0.3, 0.05])
    ctx = make_ctx(act_net())
    (problem,) = registry.get("smoothgrad").check(ctx.model, params("smoothgrad", targets=["doog"]))
    assert "did you mean 'dog'?" in problem
    with pytest.raises(ValueError):
        params("smoothgrad", of="integrated_gradients")


def test_page_and_figures(tmp_path):
    ctx = make_ctx(act_net(), images=1)
    text = render_page("smoothgrad", ctx, tmp_path, samples=3)
    assert "SmoothGrad" in text and "gradient of the class score" in text
    text = render_page("smoothgrad", ctx, tmp_path, samples=3, of="guided_backprop")
    assert "guided-backprop gradient" in text
    assert (tmp_path / "tiny" / "figures" / "smoothgrad" / "s--p0.png").stat().st_size > 5000
