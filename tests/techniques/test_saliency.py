"""Saliency: Simonyan's max |∂logit/∂x| over channels, equal to Captum's, on a batch at once, model left alone."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import Saliency as CaptumSaliency
from helpers import FunctionalNet, act_net, assert_same_state, make_ctx, model_state, params, render_page, run
from torch import nn

from generator.techniques import registry


def test_matches_captum():
    ctx = make_ctx(act_net(), images=3)
    arts = run("saliency", ctx)
    x = ctx.batch(list(ctx.images))
    targets = [a.meta["targets"][0]["index"] for a in arts]
    assert targets == ctx.model.module(x).argmax(1).tolist()  # top-1 by default
    ref = CaptumSaliency(ctx.model.module).attribute(x.clone().requires_grad_(), target=targets, abs=True)
    ref = ref.amax(1).numpy()
    ours = np.stack([a.main[0] for a in arts])
    assert np.abs(ours - ref).max() < 1e-6
    assert ours.max() > 0


def test_logit_not_probability_and_named_targets():
    ctx = make_ctx(act_net(), images=1)
    (art,) = run("saliency", ctx, targets=["dog", 3])
    assert [t["label"] for t in art.meta["targets"]] == ["dog", "tree"]
    assert art.main.shape == (2, 32, 32)
    x = ctx.batch(list(ctx.images))
    for row, target in enumerate((1, 3)):
        ref = CaptumSaliency(ctx.model.module).attribute(x.clone().requires_grad_(), target=target).amax(1)[0]
        assert np.abs(art.main[row] - ref.numpy()).max() < 1e-6
    assert not np.allclose(art.main[0], art.main[1])


def test_batch_equals_single_images():
    ctx = make_ctx(act_net(), images=3)
    together = run("saliency", ctx)
    for art, image in zip(together, ctx.images):
        (alone,) = run("saliency", ctx, [image])
        np.testing.assert_allclose(art.main, alone.main, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("module", [act_net(), FunctionalNet(inplace=True), act_net(inplace=True)],
                         ids=["relu", "functional-inplace", "module-inplace"])
def test_model_left_alone(module):
    for i, p in enumerate(module.parameters()):
        p.requires_grad_(i % 2 == 0)  # a mix: neither flag may change, and no .grad may appear
    ctx = make_ctx(module)
    x = ctx.batch(list(ctx.images))
    with torch.no_grad():
        before_out = module(x)
    before = model_state(module)
    run("saliency", ctx)
    assert_same_state(before, model_state(module))
    with torch.no_grad():
        assert torch.equal(module(x), before_out)


def test_in_place_relus_give_the_plain_gradient():
    plain, inplace = make_ctx(FunctionalNet()), make_ctx(FunctionalNet(inplace=True))
    for a, b in zip(run("saliency", plain), run("saliency", inplace)):
        np.testing.assert_allclose(a.main, b.main, rtol=1e-5, atol=1e-7)


def test_leading_in_place_relu_on_the_input():
    module = nn.Sequential(nn.ReLU(inplace=True), act_net())
    (art,) = run("saliency", make_ctx(module, images=1))
    assert np.isfinite(art.main).all() and art.main.max() > 0


def test_unknown_class_is_a_check_error():
    ctx = make_ctx(act_net())
    problems = registry.get("saliency").check(ctx.model, params("saliency", targets=["cta", 7]))
    assert problems[0].startswith("targets[0]: no class 'cta'") and "did you mean 'cat'?" in problems[0]
    assert problems[1].startswith("targets[1]: class index 7 is out of range")


def test_page_and_figure(tmp_path):
    ctx = make_ctx(act_net(), images=2)
    text = render_page("saliency", ctx, tmp_path)
    out = tmp_path
    assert "How to read this" in text and "### p0" in text and "### p1" in text
    assert "| explains | index | probability |" in text
    figures = sorted((out / "tiny" / "figures" / "saliency").glob("*.png"))
    assert len(figures) == 2 and all(f.stat().st_size > 5000 for f in figures)
    assert "(figures/saliency/s--p0.png)" in text
    assert "## Parameters" in text
