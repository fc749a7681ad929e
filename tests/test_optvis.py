"""generator.optvis: parameterizations invert, transforms undo and reduce to the identity, objectives compose and
describe themselves, and the render loop raises its target, batches exactly, is reproducible and leaves the model
as it found it."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from helpers import tiny_net
from generator.hooks import hook_count
from generator.optvis import (
    Activations,
    Regularizers,
    batched,
    channel,
    class_logit,
    compose,
    fft_image,
    from_image,
    gaussian_blur,
    jitter,
    l2_penalty,
    layer_l2,
    neuron,
    pad,
    pixel_image,
    random_rotate,
    random_scale,
    render,
    shift,
    standard_transforms,
    total_variation,
)
from generator.optvis.objectives import BaseObjective
from generator.optvis.param import COLOR_CORRELATION_SVD_SQRT, COLOR_DECORRELATION, correlate_colors, decorrelate_colors
from generator.optvis.transforms import blur_image, rotate, zoom

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def pictures(b=2, c=3, h=24, w=31, seed=0) -> torch.Tensor:
    return torch.rand(b, c, h, w, generator=gen(seed)) * 0.9 + 0.05


# ---------------------------------------------------------------- parameterizations


@pytest.mark.parametrize("h,w", [(24, 31), (32, 32), (17, 20)])
@pytest.mark.parametrize("squash", ["sigmoid", "clip"])
def test_fft_image_round_trips(h, w, squash):
    x = pictures(h=h, w=w)
    p = from_image(x, "fft", squash=squash, decay_power=1.5)
    assert p.spectrum.shape == (2, 3, h, w // 2 + 1, 2)
    torch.testing.assert_close(p(), x, atol=2e-5, rtol=0)
    # Encoding is linear in the spectrum after the squash: assigning again gives the same coefficients.
    before = p.spectrum.detach().clone()
    p.assign(p().detach())
    torch.testing.assert_close(p.spectrum.detach(), before, atol=1e-3, rtol=1e-3)


def test_fft_image_grayscale_round_trips_without_colour_matrix():
    x = pictures(c=1)
    p = from_image(x, "fft")
    assert not p.decorrelate and p().shape == (2, 1, 24, 31)
    torch.testing.assert_close(p(), x, atol=2e-5, rtol=0)
    assert fft_image(3, 16, channels=1)().shape == (3, 1, 16, 16)


def test_pixel_image_round_trip_is_exact_and_projection_keeps_range():
    x = pictures()
    p = from_image(x, "pixel")
    assert torch.equal(p(), x)
    with torch.no_grad():
        p.pixels.add_(2.0)
    p.project()
    assert float(p().detach().min()) == 1.0
    assert pixel_image(2, 8, channels=1)().shape == (2, 1, 8, 8)


def test_decorrelation_is_lucids_matrix_and_invertible():
    assert COLOR_DECORRELATION.norm(dim=0).max().item() == pytest.approx(1.0)
    torch.testing.assert_close(COLOR_DECORRELATION / COLOR_DECORRELATION[0, 0],
                               COLOR_CORRELATION_SVD_SQRT / COLOR_CORRELATION_SVD_SQRT[0, 0])
    t = torch.randn(2, 3, 5, 6)
    torch.testing.assert_close(correlate_colors(decorrelate_colors(t)), t, atol=1e-5, rtol=0)
    # A grey direction in decorrelated space maps to (almost) equal RGB: the first column is luminance.
    grey = decorrelate_colors(torch.tensor([1.0, 0, 0]).view(1, 3, 1, 1)).flatten()
    assert float(grey.max() - grey.min()) < 0.05 * float(grey.mean())


def test_fft_scaling_starts_grey_not_saturated():
    """Lucid's spectrum scale is for an unnormalized inverse FFT times √(HW) = torch's norm="ortho": the start is a
    faint grey noise. Multiplying by √(HW) again (the earlier bug) saturates the sigmoid."""
    for size in (64, 160):
        im = fft_image(2, size, seed=0)().detach()
        assert abs(float(im.mean()) - 0.5) < 0.01
        assert 5e-4 < float(im.std()) < 0.02
        assert float((im - 0.5).abs().max()) < 0.1


def test_fft_low_frequencies_move_more_than_high_ones():
    p = fft_image(1, 32, seed=0, decay_power=1.0)
    spec = p.spectrum
    p.spectrum = torch.zeros_like(spec)
    low = p.raw().detach().clone()
    with torch.no_grad():
        p.spectrum[0, 0, 0, 1, 0] = 1.0  # lowest horizontal frequency
    low = p.raw().detach().std()
    with torch.no_grad():
        p.spectrum.zero_()
        p.spectrum[0, 0, 16, 16, 0] = 1.0  # highest
    high = p.raw().detach().std()
    assert float(low) > 10 * float(high)


def test_param_seeds_are_per_element():
    both = fft_image(3, 16, seed=[5, 6, 7])()
    torch.testing.assert_close(both[1:2], fft_image(1, 16, seed=6)())
    torch.testing.assert_close(pixel_image(2, 8, seed=3)()[1:], pixel_image(1, 8, seed=4)())
    with pytest.raises(ValueError, match="2 seeds"):
        fft_image(3, 16, seed=[1, 2])


# ---------------------------------------------------------------- transforms


def test_jitter_is_undone_by_the_opposite_shift():
    x = torch.randn(2, 3, 20, 24)
    t = jitter(5)
    draws = set()
    g = gen(1)
    for _ in range(20):
        dy, dx = t.sample(g)
        assert -5 <= dy <= 5 and -5 <= dx <= 5
        draws.add((dy, dx))
        y = t.apply(x, (dy, dx))
        assert torch.equal(shift(y, -dy, -dx), x)
    assert len(draws) > 5
    dy, dx = t.sample(gen(2))
    assert torch.equal(t(x, gen(2)), shift(x, dy, dx))


def test_transforms_are_the_identity_at_zero_strength():
    x = torch.randn(2, 3, 20, 24)
    for t in (pad(0), jitter(0), random_scale([1.0]), random_rotate([0]), gaussian_blur(0.0),
              standard_transforms(224, strength=0.0)):
        assert torch.equal(t(x, gen()), x), t
    # and nearly so for a tiny angle or scale (the affine maths has no offset)
    torch.testing.assert_close(rotate(x, 1e-6), x, atol=1e-4, rtol=0)
    torch.testing.assert_close(zoom(x, 1 + 1e-7), x, atol=1e-4, rtol=0)


def test_rotation_and_zoom_move_content_the_right_way():
    x = torch.zeros(1, 1, 21, 31)
    x[0, 0, 10, 25] = 1.0  # right of centre (centre is (10, 15))
    r = rotate(x, 90)
    y, xx = divmod(int(r.flatten().argmax()), 31)
    assert (abs(y - 10), abs(xx - 15)) in {(10, 0)}  # a quarter turn: 10 px right → 10 px up or down
    z = zoom(x, 1.5)  # zooming in pushes content away from the centre
    y, xx = divmod(int(z.flatten().argmax()), 31)
    assert y == 10 and xx == 30 or xx == 15 + round(10 * 1.5)


def test_blur_keeps_constants_and_spreads_a_point():
    c = torch.full((1, 2, 12, 12), 0.3)
    torch.testing.assert_close(blur_image(c, 1.0), c)
    d = torch.zeros(1, 1, 15, 15)
    d[0, 0, 7, 7] = 1.0
    b = blur_image(d, 1.0)
    assert float(b.sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(b[0, 0, 7, 7]) == pytest.approx(1 / (2 * math.pi), rel=0.05)


def test_transforms_are_seeded_and_differentiable():
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    t = standard_transforms(32)
    a, b = t(x, gen(3)), t(x, gen(3))
    assert torch.equal(a, b)
    assert not torch.equal(a, t(x, gen(4)))
    a.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert t.describe().startswith("pad")
    assert compose([pad(2), jitter(1)]).spec()["transforms"][0] == {"transform": "Pad", "width": 2,
                                                                     "mode": "constant", "value": 0.0}


# ---------------------------------------------------------------- objectives


def test_objective_descriptions_compose():
    tabby = class_logit(281, "tabby")
    assert tabby.description == "maximize 'tabby' logit"
    assert (tabby + l2_penalty(0.01)).description == "maximize 'tabby' logit − 0.01·L2(image)"
    assert (tabby + l2_penalty(0.01) + total_variation(0.5)).description == (
        "maximize 'tabby' logit − 0.01·L2(image) − 0.5·TV(image)")
    assert (2 * channel("conv1", 3) - neuron("conv2", 1)).description == (
        "maximize 2·mean of conv1 channel 3 − conv2 channel 1 unit at centre")
    assert (layer_l2("relu2") * 0.5).description == "maximize 0.5·L2(relu2)"
    assert (tabby + tabby) == 2 * tabby and hash(tabby + tabby) == hash(2 * tabby)
    assert (tabby - tabby).description == "nothing"
    many = class_logit([1, 2], ["goldfish", "shark"]) + l2_penalty(0.1)
    assert many.captions(2) == ["maximize 'goldfish' logit − 0.1·L2(image)",
                                "maximize 'shark' logit − 0.1·L2(image)"]
    b = batched([tabby, channel("conv1", 3)]) + l2_penalty(1)
    assert b.captions() == ["maximize 'tabby' logit − L2(image)", "maximize mean of conv1 channel 3 − L2(image)"]
    assert b.layers() == {"conv1"} and b.needs_logits


def test_objectives_compute_per_element_losses():
    logits = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    maps = torch.arange(2 * 3 * 3 * 3, dtype=torch.float32).view(2, 3, 3, 3)
    image = torch.full((2, 3, 4, 4), 0.5)
    image[1, :, :, 2:] = 1.0
    acts = Activations({"c": maps}, logits, image, (image - 0.5) / 0.5)
    torch.testing.assert_close(class_logit(2)(acts), torch.tensor([-3.0, -6.0]))
    torch.testing.assert_close(class_logit([0, 2])(acts), torch.tensor([-1.0, -6.0]))
    torch.testing.assert_close(channel("c", [1, 2])(acts), -torch.stack([maps[0, 1].mean(), maps[1, 2].mean()]))
    torch.testing.assert_close(neuron("c", 1)(acts), -maps[:, 1, 1, 1])
    torch.testing.assert_close(neuron("c", 0, y=0, x=2)(acts), -maps[:, 0, 0, 2])
    torch.testing.assert_close(layer_l2("c")(acts), -maps.flatten(1).norm(dim=1))
    torch.testing.assert_close(l2_penalty(0.1)(acts), torch.tensor([0.0, 0.1 * 3 * 8]))
    torch.testing.assert_close(total_variation(1.0)(acts), torch.tensor([0.0, 3 * 4 * 0.5]))
    b = batched([class_logit(0), channel("c", 2)])
    torch.testing.assert_close(b(acts), torch.stack([-logits[0, 0], -maps[1, 2].mean()]))
    with pytest.raises(ValueError, match="3 per-element indices"):
        class_logit([0, 1, 2])(acts)


# ---------------------------------------------------------------- render


def _logit(net, images: np.ndarray, c: int) -> np.ndarray:
    with torch.no_grad():
        return net((torch.from_numpy(images) - 0.5) / 0.5)[:, c].numpy()


@pytest.mark.parametrize("kind", ["pixel", "fft"])
def test_class_objective_raises_the_target_logit(kind):
    torch.manual_seed(0)
    net = tiny_net().eval()
    param = pixel_image(2, 32, seed=0, sd=0.1) if kind == "pixel" else fft_image(2, 32, seed=0)
    param_start = param().detach().numpy()
    start = _logit(net, param_start, 2)
    res = render(net, class_logit(2, "c2") + l2_penalty(1e-4), param, mean=MEAN, std=STD, steps=25,
                 lr=0.05 if kind == "pixel" else 0.2, transforms=compose([jitter(2)]), snapshots=(0, 5, 25), seed=0)
    end = _logit(net, res.images, 2)
    assert (end > start + 0.5).all(), (start, end)
    others = _logit(net, res.images, 0)
    assert (end - start > np.abs(others - _logit(net, param_start, 0))).all()
    assert res.images.shape == (2, 3, 32, 32) and res.images.min() >= 0 and res.images.max() <= 1
    assert res.losses.shape == (25, 2) and res.losses[-1].mean() < res.losses[0].mean()
    assert sorted(res.snapshots) == [0, 5, 25] and np.array_equal(res.snapshots[25], res.images)
    assert res.captions == ["maximize 'c2' logit − 0.0001·L2(image)"] * 2
    assert res.seconds > 0


@pytest.mark.parametrize("kind", ["pixel", "fft"])
def test_a_batch_equals_separate_runs_with_the_same_seeds(kind):
    net = tiny_net().eval()
    targets, seeds = [0, 1, 3], [10, 11, 12]

    def make(s):
        return pixel_image(len(s), 32, seed=s, sd=0.1) if kind == "pixel" else fft_image(len(s), 32, seed=s)

    kw = dict(mean=MEAN, std=STD, steps=12, lr=0.05, transforms=compose([pad(2), jitter(2), random_rotate([-5, 0, 5])]),
              seed=7, regularizers=Regularizers(blur_every=3, blur_sigma=0.5, norm_pct=10) if kind == "pixel" else None)
    together = render(net, class_logit(targets), make(seeds), **kw)
    alone = [render(net, class_logit(t), make([s]), **kw) for t, s in zip(targets, seeds)]
    for b, single in enumerate(alone):
        np.testing.assert_allclose(together.images[b], single.images[0], atol=2e-4)
        np.testing.assert_allclose(together.losses[:, b], single.losses[:, 0], rtol=1e-3, atol=1e-3)
    # the batched form of the same objectives is the same computation
    mixed = render(net, batched([class_logit(t) for t in targets]), make(seeds), **kw)
    np.testing.assert_allclose(mixed.images, together.images, atol=1e-5)


def test_render_is_reproducible_with_a_seed():
    net = tiny_net().eval()
    kw = dict(mean=MEAN, std=STD, steps=8, lr=0.05, transforms=standard_transforms(32))
    a = render(net, channel("relu2", 3), fft_image(2, 32, seed=1), seed=3, **kw)
    b = render(net, channel("relu2", 3), fft_image(2, 32, seed=1), seed=3, **kw)
    c = render(net, channel("relu2", 3), fft_image(2, 32, seed=1), seed=4, **kw)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.losses, b.losses)
    assert not np.array_equal(a.images, c.images)


class Failing(BaseObjective):
    """An objective that works for a few calls, then raises (a bug in a user's objective)."""

    def __init__(self, inner, after: int):
        self.inner, self.after, self.calls = inner, after, 0

    @property
    def needs_logits(self):
        return self.inner.needs_logits

    def layers(self):
        return self.inner.layers()

    def captions(self, b):
        return self.inner.captions(b)

    def __call__(self, acts):
        self.calls += 1
        if self.calls > self.after:
            raise RuntimeError("objective failed")
        return self.inner(acts)


@pytest.mark.parametrize("after", [0, 3])
def test_render_leaves_the_model_as_it_found_it_even_when_the_objective_raises(after):
    net = tiny_net()
    net.train()
    net.fc.eval()  # a mixed state must come back exactly
    net.conv1.weight.requires_grad_(False)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    modes = {n: m.training for n, m in net.named_modules()}
    flags = {n: p.requires_grad for n, p in net.named_parameters()}
    with pytest.raises(RuntimeError, match="objective failed"):
        render(net, Failing(class_logit(1) + neuron("relu1", 2), after), pixel_image(2, 32), mean=MEAN, std=STD,
               steps=10, transforms=jitter(1))
    assert hook_count(net) == 0
    assert {n: m.training for n, m in net.named_modules()} == modes
    assert {n: p.requires_grad for n, p in net.named_parameters()} == flags
    assert all(p.grad is None for p in net.parameters())
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k
    # and after a successful render too (BatchNorm statistics would move in train mode: it runs in eval)
    bn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                       nn.Linear(4, 2)).train()
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    render(bn, class_logit(0) + channel("2", 1), pixel_image(2, 16), mean=MEAN, std=STD, steps=3)
    assert bn.training and hook_count(bn) == 0 and all(p.grad is None for p in bn.parameters())
    assert all(p.requires_grad for p in bn.parameters())
    for k, v in bn.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_render_names_an_unknown_layer():
    with pytest.raises(ValueError, match="did you mean 'relu2'"):
        render(tiny_net(), channel("relu3", 0), pixel_image(1, 16), mean=MEAN, std=STD, steps=1)


def test_grayscale_model_renders_one_channel_images():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 3))
    res = render(net, class_logit(1), fft_image(2, 16, channels=1), mean=(0.3,), std=(0.2,), steps=3,
                 transforms=standard_transforms(16))
    assert res.images.shape == (2, 1, 16, 16)


def test_yosinski_regularizers_clip_small_pixels_to_the_mean_colour():
    net = tiny_net().eval()
    mean, std = (0.4, 0.5, 0.6), (0.25, 0.25, 0.25)
    reg = Regularizers(decay=0.01, blur_every=2, blur_sigma=0.5, norm_pct=30)
    res = render(net, class_logit(2), pixel_image(2, 32, sd=0.2, seed=0), mean=mean, std=std, steps=6, lr=0.05,
                 regularizers=reg)
    at_mean = np.all(np.abs(res.images - np.array(mean).reshape(1, 3, 1, 1)) < 1e-6, axis=1)  # (B, H, W)
    assert (at_mean.mean(axis=(1, 2)) >= 0.25).all()
    res = render(net, class_logit(2), pixel_image(2, 32, sd=0.2, seed=0), mean=mean, std=std, steps=4, lr=0.05,
                 regularizers=Regularizers(contrib_pct=50))
    at_mean = np.all(np.abs(res.images - np.array(mean).reshape(1, 3, 1, 1)) < 1e-6, axis=1)
    assert (at_mean.mean(axis=(1, 2)) >= 0.45).all()
    plain = render(net, class_logit(2), pixel_image(2, 32, sd=0.2, seed=0), mean=mean, std=std, steps=4, lr=0.05)
    assert np.all(np.abs(plain.images - np.array(mean).reshape(1, 3, 1, 1)) < 1e-6, axis=1).mean() < 0.01


def test_redirected_rectifiers_change_only_blocked_gradients():
    """Lucid's redirected ReLU/ReLU6 gradient: an element whose rectifier passes some gradient gets exactly the
    ordinary one; an element it blocks entirely gets the part that opens it (up below 0, down above 6); hooks go."""
    from generator.hooks import hook_count
    from generator.optvis.redirect import redirected_rectifiers

    net = torch.nn.Sequential(torch.nn.ReLU6())
    x = torch.tensor([[[-1.0, 2.0, -3.0, 1.0]], [[-1.0, -2.0, 7.0, -3.0]]], requires_grad=True)  # row 1: closed
    w = torch.tensor([[[1.0, 1.0, -1.0, -1.0]]])

    def grad():
        (g,) = torch.autograd.grad((net(x) * w).sum().neg(), x)  # a loss: maximize Σ w·y
        return g

    plain = grad()
    with redirected_rectifiers(net) as state:
        assert state.modules == 1
        redirected = grad()
    assert hook_count(net) == 0
    torch.testing.assert_close(redirected[0], plain[0])  # row 0 passes gradient at x = 2: unchanged
    assert plain[1].abs().sum() == 0
    # row 1: −1 and −2 would rise (w > 0): passed; 7 above 6 with w < 0 would fall: passed; −3 with w < 0: not
    torch.testing.assert_close(redirected[1], torch.tensor([[-1.0, -1.0, 1.0, 0.0]]))
