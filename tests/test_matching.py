"""Matching machinery (generator/optvis/matching.py) and the random multi-scale filters: Gram matrices against a
loop, recording that leaves the model as it was, Gram synthesis that makes a texture (judged by a network that did
not make it), style transfer lowering both losses, seeds."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from helpers import Raises, act_net, assert_same_state, model_state

from generator import images as imagelib
from generator.hooks import hook_count
from generator.optvis import matching
from generator import optvis
from generator.optvis.forward import LayerForward
from generator.optvis.objectives import FeatureMatch, GramMatch, Preparation
from generator.optvis.random_filters import random_filters

SMALL = dict(kernel_sizes=(3, 5, 9, 15), filters=24)  # a cheap random net for tests (15 px runs at half size)

pytestmark = pytest.mark.usefixtures("one_thread")



def plain_net(net: nn.Module) -> matching.Network:
    return matching.Network(net, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "tiny")


def sample(name: str, side: int) -> torch.Tensor:
    im = imagelib.sample(f"skimage:{name}")
    x = matching.to_tensor(im, 3)
    h, w = x.shape[-2:]
    k = side / min(h, w)
    return matching.resize(x[None], (round(h * k), round(w * k)))[0]


def test_gram_matches_a_loop_over_positions():
    f = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    expected = torch.zeros(2, 3, 3)
    for b in range(2):
        for i in range(3):
            for j in range(3):
                expected[b, i, j] = sum(f[b, i, y, x] * f[b, j, y, x] for y in range(4) for x in range(5)) / 20
    torch.testing.assert_close(matching.gram(f), expected)
    torch.testing.assert_close(matching.gram(f), torch.einsum("bchw,bdhw->bcd", f, f) / 20)


def test_relative_error_and_total_variation():
    a, b = torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 4.0]])
    assert float(matching.relative_error(b, a)) == pytest.approx(9 / 25)
    x = torch.zeros(1, 1, 2, 2)
    x[0, 0, 0, 0] = 1.0  # two neighbour differences of 1 among 4 values
    assert float(matching.total_variation(x)) == pytest.approx(2 / 4)


def paper_softmax3d(features: torch.Tensor) -> torch.Tensor:
    """SWAG's transform as its authors wrote it (github.com/peiwang062/swag, resnet_swag.py `softmax3d`), for one
    image: the whole (1, C, H, W) map flattened into one row, softmax, reshaped back."""
    a, b, c, d = features.size()
    return nn.Softmax(dim=1)(torch.reshape(features, (1, -1))).reshape(a, b, c, d)


def test_smoothing_is_swags_softmax_over_all_of_a_layers_activations():
    f = 3 * torch.randn(2, 4, 5, 6, generator=torch.Generator().manual_seed(0))
    ours = matching.smooth_activations(f)
    paper = torch.cat([paper_softmax3d(f[b:b + 1]) for b in range(2)])
    # Ours is the paper's softmax scaled by the number of activations (so that sizes are comparable) ...
    torch.testing.assert_close(ours, paper * f[0].numel())
    torch.testing.assert_close(ours.flatten(1).mean(1), torch.ones(2))
    # ... which the relative losses do not see: for maps of one size they are the paper transform's exactly.
    g = 3 * torch.randn(2, 4, 5, 6, generator=torch.Generator().manual_seed(1))
    theirs_g = torch.cat([paper_softmax3d(g[b:b + 1]) for b in range(2)])
    torch.testing.assert_close(matching.relative_error(matching.gram(ours), matching.gram(matching.smooth_activations(g))),
                               matching.relative_error(matching.gram(paper), matching.gram(theirs_g)))
    torch.testing.assert_close(matching.relative_error(ours, matching.smooth_activations(g)),
                               matching.relative_error(paper, theirs_g))
    # Not a per-channel or per-position softmax: one activation's change moves every other one.
    h = f.clone()
    h[0, 0, 0, 0] += 1
    moved = matching.smooth_activations(h)[0] != ours[0]
    assert bool(moved.all())


def test_smoothing_is_applied_to_the_gram_and_the_content_terms():
    net = plain_net(act_net())
    content = matching.resize(sample("chelsea", 32)[None, :, :, :32], (32, 32))
    style = sample("hubble_deep_field", 40)
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    layers = ["act1", "act2"]
    with LayerForward(net.module, layers) as forward:
        def feats(x):
            return forward(net.prepare(x))[0]

        prep = Preparation(feats, 1.0, (32, 32))
        gram_term = GramMatch(tuple(layers), (style,), 40, smooth=True)
        gram_term.prepare(prep)
        content_term = FeatureMatch("act2", content, smooth=True)
        content_term.prepare(prep)
        outs, src, tgt = feats(image), feats(style[None]), feats(content)
        acts = optvis.Activations(outs)
        swag = matching.smooth_activations
        expected = torch.stack([matching.relative_error(matching.gram(swag(outs[k])), matching.gram(swag(src[k])))
                                for k in layers]).mean(0)
        torch.testing.assert_close(-gram_term.value(acts), expected)
        torch.testing.assert_close(-content_term.value(acts), matching.relative_error(swag(outs["act2"]),
                                                                                      swag(tgt["act2"])))
        plain = GramMatch(tuple(layers), (style,), 40)
        plain.prepare(prep)
        assert float((plain.value(acts) - gram_term.value(acts)).abs()) > 1e-3


def test_style_loss_falls_under_smoothing_from_noise():
    style = sample("hubble_deep_field", 64)
    model = plain_net(act_net())
    term = matching.GramTerm(model, ["act1", "act2"], [style], 64, smooth=True)
    noise = matching.noise_start(1, 3, 48, 48, 0, mean=style.mean((1, 2)), sd=0.05)
    r = matching.synthesize([term], noise, steps=30)
    assert r.end["style"][0] < 0.5 * r.start["style"][0]


def test_colour_histogram_distance():
    black, white = np.zeros((3, 4, 4)), np.ones((3, 4, 4))
    assert matching.histogram_distance(black, black) == 0
    assert matching.histogram_distance(black, white) == 1
    half = np.concatenate([black[:, :2], white[:, 2:]], 1)
    assert matching.histogram_distance(half, white) == pytest.approx(0.5)


def test_random_filters_are_deterministic_from_their_seed():
    a, b, c = random_filters(seed=3, **SMALL), random_filters(seed=3, **SMALL), random_filters(seed=4, **SMALL)
    for (name, x), (_, y), (_, z) in zip(a.state_dict().items(), b.state_dict().items(), c.state_dict().items()):
        assert torch.equal(x, y), name
        assert not torch.equal(x, z), name
    assert a.layers == ["scales.k3", "scales.k5", "scales.k9", "scales.k15"]
    x = torch.rand(1, 3, 40, 40)
    with torch.no_grad():
        outs = a(x)
    # Valid convolutions; 15 px runs on the 2× downsampled image with a 7 px kernel.
    assert [tuple(o.shape[-2:]) for o in outs] == [(38, 38), (36, 36), (32, 32), (14, 14)]
    assert all(o.shape[1] == 24 and o.min() >= 0 for o in outs)
    w = a.scales["k9"].weight
    torch.testing.assert_close(w.flatten(1).norm(dim=1), torch.ones(24))


def test_features_leave_the_model_as_it_was_and_stop_after_the_last_layer():
    calls = []

    class Tail(nn.Module):
        def forward(self, x):
            calls.append(1)
            return x

    net = nn.Sequential(OrderedDict([("conv", nn.Conv2d(3, 4, 3)), ("relu", nn.ReLU(inplace=True)),
                                     ("conv2", nn.Conv2d(4, 4, 3)), ("tail", Tail())])).train()
    before = model_state(net)
    x = torch.randn(1, 3, 12, 12)
    with LayerForward(net, ["conv", "conv2"]) as forward:
        first, second = forward(x)[0], forward(x)[0]
        assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert len(calls) == 1  # the second forward stopped at conv2
    # The record of a conv followed by an in-place ReLU is still the conv's (pre-ReLU) output.
    assert first["conv"].min() < 0
    torch.testing.assert_close(first["conv"], second["conv"])
    assert_same_state(before, model_state(net))


def test_features_remove_hooks_when_the_forward_raises():
    net = Raises()
    before = model_state(net)
    with pytest.raises(ValueError, match="boom"):
        with LayerForward(net, ["body.act1"]) as forward:
            forward(torch.randn(1, 3, 8, 8))
    assert hook_count(net) == 0
    assert_same_state(before, model_state(net))
    with pytest.raises(ValueError, match="did you mean .body.act2."):
        with LayerForward(net, ["body.actx2"]):
            pass


def texture(seed: int = 0):
    source = sample("brick", 96)
    net = matching.random_network(3, seed=0, **SMALL)
    start = matching.noise_start(1, 3, 48, 48, seed, mean=source.mean((1, 2)), sd=0.05)
    term = matching.GramTerm(net, net.module.layers, [source], 96)
    return source, net, start, matching.synthesize([term], start, steps=30, coarse_steps=15, scales=(0.5, 1.0))


def test_gram_synthesis_makes_the_texture_as_judged_by_another_network():
    source, net, start, result = texture()
    assert result.end["style"][0] < 0.05 * result.start["style"][0]  # the Gram loss falls by more than 95%
    image = torch.from_numpy(result.images)
    assert image.shape == (1, 3, 48, 48) and 0 <= image.min() and image.max() <= 1
    # Noise can match statistics too: a network with other random filters must also find the result far closer to
    # the photograph than noise with the photograph's mean and contrast, and so must the colour histogram.
    judge = matching.random_network(3, seed=1, **SMALL)
    noise = matching.reference_noise(source, 48, 48, seed=0)[None]
    result_d, noise_d = matching.gram_distance(judge, judge.module.layers, torch.cat([image, noise]), [source] * 2, 96)
    assert result_d < 0.3 * noise_d
    assert matching.histogram_distance(result.images[0], source) < 0.5 * matching.histogram_distance(noise[0], source)
    # The same seed gives the same texture on the CPU.
    np.testing.assert_array_equal(texture()[3].images, result.images)


def test_style_transfer_lowers_style_and_content_losses():
    content = matching.resize(sample("chelsea", 48)[None, :, :, 8:56], (48, 48))
    style = sample("hubble_deep_field", 64)
    net = matching.random_network(3, seed=0, **SMALL)
    model = matching.Network(act_net(), (0.5,) * 3, (0.25,) * 3, "tiny")

    def terms(weight: float = 1.0):
        return [matching.GramTerm(net, net.module.layers, [style], 64, weight=weight),
                matching.ContentTerm(model, "act1", content)]

    noise = matching.noise_start(1, 3, 48, 48, 0, mean=content.mean((2, 3))[0], sd=0.05)
    r = matching.synthesize(terms(), noise, steps=30, tv_weight=0.1)
    for name in ("style", "content"):
        assert r.end[name][0] < 0.7 * r.start[name][0], name
    # From the content photograph the content loss starts at 0 (and may only rise); the style loss still falls.
    c = matching.synthesize(terms(10.0), content.clone(), steps=30, tv_weight=0.1)
    assert c.start["content"][0] == 0 and c.end["style"][0] < 0.5 * c.start["style"][0]


def test_adam_and_bad_arguments():
    source = sample("gravel", 48)
    net = matching.random_network(3, seed=0, kernel_sizes=(3, 5), filters=16)
    term = matching.GramTerm(net, net.module.layers, [source], 48)
    start = matching.noise_start(1, 3, 32, 32, 0)
    r = matching.synthesize([term], start, steps=40, optimizer="adam", lr=0.05)
    assert r.end["style"][0] < 0.5 * r.start["style"][0]
    with pytest.raises(ValueError, match="scales"):
        matching.synthesize([term], start, steps=1, scales=(1.0, 0.5))
    with pytest.raises(ValueError, match="optimizer"):
        matching.synthesize([term], start, steps=1, optimizer="sgd")
