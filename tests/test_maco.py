"""MaCo's phase-only image (Fel et al. 2023): the magnitude spectrum stays exactly fixed while the optimizer moves
the phase, batches equal single images, the render loop raises a class logit through it, and assign keeps a
picture's phase (and so its layout) under the fixed magnitude."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import tiny_net
from generator.optvis import MacoImage, class_logit, compose, jitter, maco_image, render
from generator.optvis.param import (
    EPS,
    correlate_colors,
    hermitian_phase,
    periodic_component,
    photo_magnitude,
    power_magnitude,
)

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

pytestmark = pytest.mark.usefixtures("one_thread")


def spectrum(t: torch.Tensor) -> torch.Tensor:
    return torch.fft.rfftn(t.detach().double(), dim=(-2, -1), norm="ortho")


def free(param: MacoImage) -> torch.Tensor:
    """The coefficients whose phase is free: magnitude > 0 and not their own conjugate (kx = 0 or W/2 with ky = 0
    or H/2)."""
    h, w = param.height, param.width
    mask = param.magnitude[0, 0] > 0
    edges = [0] + ([w // 2] if w % 2 == 0 else [])
    selfconj = [0] + ([h // 2] if h % 2 == 0 else [])
    for kx in edges:
        for ky in selfconj:
            mask[ky, kx] = False
    return mask


def wrapped(a: torch.Tensor) -> torch.Tensor:
    return torch.remainder(a + np.pi, 2 * np.pi) - np.pi


@pytest.mark.parametrize("h,w,channels,magnitude", [(16, 16, 3, "photos"), (17, 20, 3, "power"),
                                                    (24, 31, 1, "photos")])
def test_the_magnitude_stays_fixed_while_a_step_moves_the_phase(h, w, channels, magnitude):
    p = maco_image(2, h, w, seed=0, channels=channels, magnitude=magnitude)
    assert p.phase.shape == (2, channels, h, w // 2 + 1) and p().shape == (2, channels, h, w)
    target = p.magnitude[0].double()
    torch.testing.assert_close(spectrum(p.raw()).abs(), target.expand(2, -1, -1, -1), atol=1e-5, rtol=1e-4)
    before = spectrum(p.raw()).angle()
    optimizer = torch.optim.Adam(p.parameters(), lr=0.1)
    (-p()[:, :, : h // 2].mean()).backward()  # brighten the top half
    optimizer.step()
    after = spectrum(p.raw())
    torch.testing.assert_close(after.abs(), target.expand(2, -1, -1, -1), atol=1e-5, rtol=1e-4)
    moved = wrapped(after.angle() - before)[..., free(p)].abs()
    assert moved.median() > 0.05  # every free coefficient's phase moved (Adam's first step is ~lr each)
    assert p.magnitude.requires_grad is False and p.parameters() == [p.phase]
    # the raw image has unit variance per channel and zero mean: the contrast cannot drift
    raw = p.raw().detach()
    torch.testing.assert_close(raw.var((2, 3), unbiased=False), torch.ones(2, channels), atol=1e-4, rtol=0)
    torch.testing.assert_close(raw.mean((2, 3)), torch.zeros(2, channels), atol=1e-5, rtol=0)


def test_hermitian_phase_is_odd_in_the_self_conjugate_columns_only():
    phase = torch.randn(1, 1, 6, 4, dtype=torch.float64)  # W = 6: columns 0 and 3 are their own conjugates
    odd = hermitian_phase(phase, 6)
    mirror = [0, 5, 4, 3, 2, 1]
    for kx in (0, 3):
        torch.testing.assert_close(odd[0, 0, mirror, kx], -odd[0, 0, :, kx])
    torch.testing.assert_close(odd[..., 1:3], phase[..., 1:3])
    assert torch.equal(hermitian_phase(phase, 7)[..., 1:], phase[..., 1:])  # odd W: only column 0


def test_a_batch_equals_single_images_with_the_same_seeds():
    together = maco_image(3, 16, 20, seed=[5, 9, 2])
    for b, s in enumerate([5, 9, 2]):
        torch.testing.assert_close(together()[b], maco_image(1, 16, 20, seed=[s])()[0])
    torch.testing.assert_close(maco_image(3, 16, 20, seed=5)(), maco_image(3, 16, 20, seed=[5, 6, 7])())
    assert not torch.equal(together()[0], together()[1])
    with pytest.raises(ValueError, match="2 seeds given for a batch of 3"):
        maco_image(3, 16, seed=[1, 2])
    # ... and so does a render (elementwise Adam, per-element objectives)
    net = tiny_net().eval()
    kw = dict(mean=MEAN, std=STD, steps=6, lr=0.1, transforms=compose([jitter(2)]), seed=3)
    batch = render(net, class_logit([0, 3]), maco_image(2, 24, seed=[4, 8]), **kw)
    for b, (t, s) in enumerate(zip([0, 3], [4, 8])):
        alone = render(net, class_logit(t), maco_image(1, 24, seed=[s]), **kw)
        np.testing.assert_allclose(batch.images[b], alone.images[0], atol=2e-4)


def test_render_raises_a_class_logit_with_pixels_in_range():
    net = tiny_net().eval()
    param = maco_image(2, 32, seed=0)
    start = param().detach()
    res = render(net, class_logit(2), param, mean=MEAN, std=STD, steps=25, lr=0.3, transforms=compose([jitter(2)]))
    with torch.no_grad():
        before = net((start - 0.5) / 0.5)
        after = net((torch.from_numpy(res.images) - 0.5) / 0.5)
    gain = after[:, 2] - before[:, 2]
    others = (after - before)[:, [0, 1, 3]].abs().amax(1)
    # the fixed magnitude fixes the contrast, so logits move less than with a free spectrum: the target's the most
    assert (gain > 0.15).all() and (gain > 2 * others).all(), (gain, others)
    assert res.images.min() >= 0 and res.images.max() <= 1 and 0.05 < res.images.std() < 0.3
    assert res.losses[-1].mean() < res.losses[0].mean()


def test_assign_keeps_the_picture_s_phase_and_its_layout():
    import skimage.data
    import torch.nn.functional as F

    photo = torch.tensor(skimage.data.chelsea(), dtype=torch.float32).permute(2, 0, 1)[None] / 255
    picture = F.interpolate(photo, size=(30, 45), mode="bilinear", antialias=True, align_corners=False)
    p = maco_image(1, 30, 45, seed=0).assign(picture)
    x = picture.double().clamp(EPS, 1 - EPS)
    wanted = spectrum(correlate_colors(torch.log(x) - torch.log1p(-x))).angle()
    got = spectrum(p.raw()).angle()
    mask = free(p)
    assert wrapped(got - wanted)[..., mask].abs().max() < 1e-3
    # the phase carries the layout (Oppenheim & Lim 1981): the image looks like the picture, but is not it
    image = p().detach()
    r = np.corrcoef(image.flatten().numpy(), picture.flatten().numpy())[0, 1]
    assert r > 0.6, r
    assert (image - picture).abs().max() > 0.05
    # a random start is unrelated to the picture
    r0 = np.corrcoef(maco_image(1, 30, 45, seed=0)().detach().flatten().numpy(), picture.flatten().numpy())[0, 1]
    assert abs(r0) < 0.3
    with pytest.raises(ValueError, match="does not fit"):
        p.assign(torch.rand(1, 3, 30, 44))


def test_photo_magnitude_is_a_natural_cached_spectrum_and_spec_says_what_it_is():
    a = photo_magnitude(32, 40)
    assert a is photo_magnitude(32, 40) and a.shape == (3, 32, 21) and not a.flags.writeable
    assert a[:, 0, 0].tolist() == [0.0, 0.0, 0.0]
    # falls with frequency like a photograph's: the top octave holds far less amplitude than the lowest
    f = np.sqrt(np.fft.fftfreq(32)[:, None] ** 2 + np.fft.rfftfreq(40)[None] ** 2)
    low, high = a[:, (f > 0) & (f < 0.08)].mean(), a[:, f > 0.25].mean()
    assert low > 10 * high
    grey = photo_magnitude(32, 40, channels=1)
    assert grey.shape == (1, 32, 21)
    assert power_magnitude(8, 8, 2, 1.0).shape == (2, 8, 5)
    spec = maco_image(2, 16, channels=1, magnitude="power", decay_power=1.5).spec()
    assert spec["param"] == "maco" and spec["shape"] == [2, 1, 16, 16] and spec["decay_power"] == 1.5
    assert maco_image(1, 8).spec()["decay_power"] == 1.4 and "photos" in maco_image(1, 8, magnitude="photos").spec()
    assert not maco_image(1, 8, channels=1).decorrelate
    with pytest.raises(ValueError, match="'photos' or 'power'"):
        maco_image(1, 8, magnitude="imagenet")
    moved = maco_image(1, 8).to("cpu")
    assert moved.phase.requires_grad and moved.phase.is_leaf


def laplacian(u: torch.Tensor, periodic: bool) -> torch.Tensor:
    """The 4-neighbour Laplacian, over the torus or over the neighbours inside the image only (Moisan's Δ_i)."""
    out = torch.zeros_like(u)
    for dim in (-2, -1):
        n = u.shape[dim]
        for shift in (1, -1):
            diff = torch.roll(u, shift, dim) - u
            if not periodic:  # the neighbour that wrapped around is no neighbour
                edge = [0] if shift == 1 else [n - 1]
                diff.index_fill_(dim % u.dim(), torch.tensor(edge), 0.0)
            out += diff
    return out


def test_periodic_component_removes_the_seams():
    # Moisan 2011: the periodic component p has the image's interior Laplacian as its periodic Laplacian, and the
    # same mean
    u = torch.rand(2, 12, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    u = u + torch.linspace(0, 3, 12, dtype=torch.float64)[:, None]  # a strong seam between the top and bottom rows
    p = periodic_component(u)
    torch.testing.assert_close(laplacian(p, periodic=True), laplacian(u, periodic=False))
    torch.testing.assert_close(p.mean((-2, -1)), u.mean((-2, -1)))
    seam = lambda t: (t[..., -1, :] - t[..., 0, :]).abs().mean()  # noqa: E731
    assert seam(p) < 0.3 * seam(u)


def test_the_generator_never_imports_horama():
    package = Path(__file__).resolve().parent.parent / "generator"
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "horama" for n in names), path
