"""Saliency + GrabCut: on a bright square whose pixels alone move the class score, the mask is the square; seeds
follow the documented fractions; masks are repeatable; nothing left behind."""
from __future__ import annotations

from collections import OrderedDict

import cv2
import numpy as np
import pytest
import torch
from helpers import act_net, assert_same_state, make_ctx, make_model, model_state, params, render_page, run
from PIL import Image
from pydantic import ValidationError
from torch import nn

from generator import images as imagelib
from generator.context import RunContext
from generator.techniques.attribution.saliency_grabcut import seed_mask

SIDE, TOP, LEFT, SQUARE = 32, 10, 14, 10  # a 10 × 10 bright square at rows 10..19, columns 14..23


def square_picture(seed: int = 0) -> Image.Image:
    """A dark grey picture with a little noise (GrabCut fits colour mixtures) and a bright square."""
    rng = np.random.default_rng(seed)
    a = np.clip(60 + rng.normal(0, 4, size=(SIDE, SIDE, 3)), 0, 255)
    a[TOP:TOP + SQUARE, LEFT:LEFT + SQUARE] = np.clip(235 + rng.normal(0, 4, size=(SQUARE, SQUARE, 3)), 0, 255)
    return Image.fromarray(a.astype(np.uint8), "RGB")


def bright_detector() -> nn.Sequential:
    """Class 0's logit counts bright places: a 3 × 3 mean filter, ReLU above a threshold that only the square's
    pixels pass, global mean. Its input gradient is non-zero on the square (and one pixel around it) only."""
    net = nn.Sequential(OrderedDict([
        ("conv", nn.Conv2d(3, 1, 3, padding=1)), ("act", nn.ReLU(inplace=True)), ("gap", nn.AdaptiveAvgPool2d(1)),
        ("flat", nn.Flatten()), ("fc", nn.Linear(1, 2)),
    ]))
    with torch.no_grad():
        net.conv.weight.fill_(1 / 27)
        net.conv.bias.fill_(-0.5)  # normalized grey is about -1.1, white about +2.4
        net.fc.weight.copy_(torch.tensor([[4.0], [-4.0]]))
        net.fc.bias.zero_()
    return net.eval()


def square_ctx() -> RunContext:
    im = square_picture()
    record = imagelib.ImageRecord("s/square", "s", "square", "square", im, imagelib.digest(im))
    return RunContext(make_model(bright_detector(), size=SIDE, labels=["bright", "dark"]), {"s/square": record})


def test_mask_is_the_salient_square():
    ctx = square_ctx()
    (art,) = run("saliency_grabcut", ctx, targets=["bright"])
    mask = art.main[0] > 0.5
    square = np.zeros((SIDE, SIDE), bool)
    square[TOP:TOP + SQUARE, LEFT:LEFT + SQUARE] = True
    sal = art.arrays["saliency"][0]
    assert sal[square].mean() > 5 * sal[~square].mean()  # the model's gradient does sit on the square
    assert mask.any() and not mask.all()  # a proper, non-empty subset
    assert mask[square].mean() > 0.9  # covers the square ...
    assert mask[~square].mean() < 0.05  # ... and little else
    assert art.metrics["area_fraction"] == pytest.approx(mask.mean())
    assert art.meta["targets"][0]["area_fraction"] == pytest.approx(mask.mean())
    assert art.metrics["saliency_inside"] > 0.5


def test_seeds_follow_the_fractions():
    ramp = np.arange(100, dtype=np.float32).reshape(10, 10)  # 99 is the most salient
    p = params("saliency_grabcut", foreground=0.05, probable_foreground=0.3, background=0.3, border=0)
    seeds = seed_mask(ramp, p).reshape(-1)
    order = np.argsort(-ramp.reshape(-1))
    assert (seeds[order[:5]] == cv2.GC_FGD).all()
    assert (seeds[order[5:30]] == cv2.GC_PR_FGD).all()
    assert (seeds[order[30:70]] == cv2.GC_PR_BGD).all()
    assert (seeds[order[70:]] == cv2.GC_BGD).all()
    # With a border, the frame is definite background except where it is definite foreground (the top rows).
    framed = seed_mask(ramp, p.model_copy(update={"border": 0.1}))
    frame = np.zeros((10, 10), bool)
    frame[0], frame[-1], frame[:, 0], frame[:, -1] = True, True, True, True
    assert (framed[frame & (framed != cv2.GC_FGD)] == cv2.GC_BGD).all()
    assert (framed[~frame] == seed_mask(ramp, p)[~frame]).all() and (framed[9, 9] == cv2.GC_FGD)


def test_fractions_that_overlap_are_rejected():
    with pytest.raises(ValidationError, match="probable_foreground"):
        params("saliency_grabcut", foreground=0.4, probable_foreground=0.3)
    with pytest.raises(ValidationError, match="must not exceed 1"):
        params("saliency_grabcut", probable_foreground=0.6, background=0.5)


def test_masks_are_repeatable_and_arrays_complete():
    ctx = make_ctx(act_net(), images=2)
    first = run("saliency_grabcut", ctx)
    again = run("saliency_grabcut", ctx)
    for a, b in zip(first, again):
        assert np.array_equal(a.main, b.main)
        assert set(np.unique(a.main)) <= {0.0, 1.0}
        assert a.arrays["saliency"].shape == a.arrays["seeds"].shape == a.main.shape == (1, 32, 32)
        assert 0 < a.metrics["area_fraction"] < 1


def test_quick_does_fewer_iterations():
    assert params("saliency_grabcut", iterations=5).quick().iterations == 2


def test_model_left_as_it_was_and_page_renders(tmp_path):
    ctx = make_ctx(act_net(), images=2)
    before = model_state(ctx.model.module)
    text = render_page("saliency_grabcut", ctx, tmp_path)
    assert_same_state(before, model_state(ctx.model.module))
    assert "How to read this" in text and "mask area" in text
    assert len(list((tmp_path / "tiny" / "figures" / "saliency_grabcut").glob("*.png"))) == 2


@pytest.mark.parametrize("arch", ["resnet18", "alexnet"])
def test_in_place_relu_models(arch):
    import torchvision

    torch.manual_seed(0)
    net = getattr(torchvision.models, arch)(weights=None, num_classes=4).eval()
    ctx = make_ctx(net, images=1, size=64)
    before = model_state(net)
    (art,) = run("saliency_grabcut", ctx)
    assert_same_state(before, model_state(net))
    assert art.main.shape == (1, 64, 64) and 0 < art.metrics["area_fraction"] < 1


SIDE2, OBJ = 48, (14, 34)  # a 20 × 20 red square at rows and columns 14..33 of a 48-px picture


def object_on_texture(seed: int = 0) -> Image.Image:
    """A flat red square on a busy grey texture (random 2 × 2 blocks of dark and light)."""
    rng = np.random.default_rng(seed)
    blocks = rng.choice([40.0, 210.0], size=(SIDE2 // 2, SIDE2 // 2))
    a = np.repeat(np.repeat(blocks, 2, 0), 2, 1)[..., None].repeat(3, 2) + rng.normal(0, 3, (SIDE2, SIDE2, 3))
    lo, hi = OBJ
    a[lo:hi, lo:hi] = np.array([220.0, 40.0, 40.0]) + rng.normal(0, 3, (hi - lo, hi - lo, 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


def red_not_texture() -> nn.Sequential:
    """Class 0 = red places − 30 × textured places. Channel 0 fires on red, channel 1 on grey-level edges (a
    Laplacian of the channel sum). The texture counts *against* the class, so the plain gradient's magnitude is
    largest on the background, while the class's evidence (Grad-CAM: ReLU of the weighted channels) is the square."""
    net = nn.Sequential(OrderedDict([
        ("conv", nn.Conv2d(3, 2, 3, padding=1)), ("act", nn.ReLU()), ("gap", nn.AdaptiveAvgPool2d(1)),
        ("flat", nn.Flatten()), ("fc", nn.Linear(2, 2)),
    ]))
    lap = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]])
    with torch.no_grad():
        net.conv.weight.zero_()
        net.conv.weight[0, :, 1, 1] = torch.tensor([1.0, -1.0, -1.0])  # R − G − B: red only
        net.conv.weight[1] = lap / 3
        net.conv.bias.copy_(torch.tensor([-1.0, -1.0]))  # channel 1: strong edges only, not the pixel noise
        net.fc.weight.copy_(torch.tensor([[1.0, -30.0], [0.0, 0.0]]))
        net.fc.bias.zero_()
    return net.eval()


def test_mask_finds_the_object_not_the_textured_background():
    """Issue 12: seeded by the plain gradient (the old defaults), GrabCut segmented the background of the sample
    photos; SmoothGrad × Grad-CAM seeds with the border as background find the object."""
    im = object_on_texture()
    record = imagelib.ImageRecord("s/obj", "s", "obj", "obj", im, imagelib.digest(im))
    ctx = RunContext(make_model(red_not_texture(), size=SIDE2, labels=["red", "other"]), {"s/obj": record})
    square = np.zeros((SIDE2, SIDE2), bool)
    square[OBJ[0]:OBJ[1], OBJ[0]:OBJ[1]] = True
    old = run("saliency_grabcut", ctx, targets=["red"], samples=1, gate=False, border=0, foreground=0.05,
              probable_foreground=0.3)[0].main[0] > 0.5
    assert old[square].mean() < 0.1 and old[~square].sum() > 0.5 * square.sum()  # the old seeds: the background
    (art,) = run("saliency_grabcut", ctx, targets=["red"])
    mask = art.main[0] > 0.5
    assert mask[square].mean() > 0.9 and mask[~square].mean() < 0.05, (mask[square].mean(), mask[~square].mean())
    assert art.meta["gate_layer"] == "act"
