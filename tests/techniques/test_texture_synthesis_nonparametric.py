"""The non-parametric texture synthesis technique: never touches the network, textures made of the source's pixels,
metrics that tell a texture from shuffled pixels, reproducible, bad params named by key, and its page."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from torch import nn

from helpers import make_ctx, render_page
from generator import images as imagelib
from generator.techniques import registry
from generator.artifacts import Job
from generator.techniques.synthesis.texture_synthesis_nonparametric import source_picture

KIND = "texture_synthesis_nonparametric"
SMALL = dict(scale=48, source_size=24, size=32, window=5)


class Untouchable(nn.Module):
    """A model that fails if anything runs it: the technique must not."""

    def forward(self, x):
        raise AssertionError("the network was run")


@functools.cache
def record(name: str) -> imagelib.ImageRecord:
    im = imagelib.sample(f"skimage:{name}")
    return imagelib.ImageRecord(f"textures/{name}", "textures", name, name, im, imagelib.digest(im))


def texture_ctx(names=("brick", "immunohistochemistry"), seed: int = 0):
    ctx = make_ctx(Untouchable(), images=0, seed=seed)
    for name in names:
        ctx.images[f"textures/{name}"] = record(name)
    return ctx


def run(ctx, **kw):
    technique = registry.get(KIND)
    p = technique.Params(**{**SMALL, **kw})
    return technique.run(ctx, [Job("tiny", KIND, p, image=i) for i in ctx.images]), p


def test_textures_are_made_of_source_pixels_without_the_network():
    ctx = texture_ctx()
    arts, p = run(ctx)
    assert len(arts) == 2
    for art, image in zip(arts, ctx.images):
        tex, prov, src = art.arrays["texture"], art.arrays["provenance"], art.arrays["source"]
        assert tex.shape == (32, 32, 3) and tex.dtype == np.uint8 and src.shape == (24, 24, 3)
        np.testing.assert_array_equal(src, source_picture(ctx.images[image].image, p))
        np.testing.assert_array_equal(tex, src.reshape(-1, 3)[prov])
        m = art.metrics
        assert m["device"] == "cpu" and m["seconds"] > 0 and m["source_windows"] == 20 * 20
        # a texture, not its pixels in random order: windows much nearer to the source's than shuffled pixels'
        assert m["nearest_rms"] < 0.6 * m["shuffled_rms"]
        assert 0 <= m["exact_windows"] <= 1 and 0.3 < m["coherence"] <= 1 and 0 < m["source_used"] <= 1
        assert m["histogram_distance"] < 0.5 < m["noise_histogram_distance"]
        assert 0 <= m["match_error"] <= m["match_error_p95"]


def test_same_seed_same_texture():
    a, _ = run(texture_ctx(("gravel",), seed=3))
    b, _ = run(texture_ctx(("gravel",), seed=3))
    c, _ = run(texture_ctx(("gravel",), seed=4))
    np.testing.assert_array_equal(a[0].arrays["texture"], b[0].arrays["texture"])
    assert not np.array_equal(a[0].arrays["provenance"], c[0].arrays["provenance"])


def test_source_picture_resizes_then_cuts_the_centre():
    im = imagelib.sample("skimage:chelsea")  # 451 × 300, not square
    technique = registry.get(KIND)
    src = source_picture(im, technique.Params(scale=60, source_size=40))
    assert src.shape == (40, 40, 3)
    whole = source_picture(im, technique.Params(scale=None, source_size=40))  # the whole image: shorter side 40
    assert whole.shape == (40, 40, 3) and not np.array_equal(src, whole)


def test_the_image_sets_are_the_technique_s_own():
    technique = registry.get(KIND)
    assert technique.reads(technique.Params()).image_sets is None
    assert technique.reads(technique.Params(images=["textures"])).image_sets == ("textures",)
    assert technique.reads(technique.Params(images=["textures"])).references == ()


@pytest.mark.parametrize("kw, key, words", [
    (dict(window=10), "window", "even"),
    (dict(source_size=24, scale=48, window=23), "window", "does not fit"),
    (dict(size=9, window=11), "size", "smaller than the window"),
    (dict(images=[]), "images", "empty"),
    (dict(scale=64, source_size=96), "source_size", "larger than the resized image"),
])
def test_bad_params_are_problems_naming_the_key(kw, key, words):
    technique = registry.get(KIND)
    ctx = make_ctx(Untouchable())
    problems = technique.check(ctx.model, technique.Params(**kw))
    assert len(problems) == 1 and problems[0].startswith(f"{key}: ") and words in problems[0]
    assert technique.check(ctx.model, technique.Params()) == []


def test_quick_shrinks_and_stays_valid():
    technique = registry.get(KIND)
    p = technique.Params()
    q = p.quick()
    assert q.size < p.size and q.source_size < p.source_size
    assert technique.check(make_ctx(Untouchable()).model, q) == []


def test_page(tmp_path):
    ctx = texture_ctx(("brick",))
    text = render_page(KIND, ctx, tmp_path, **SMALL)
    assert "No network involved" in text
    assert "| brick |" in text
    figure = "figures/texture_synthesis_nonparametric/textures--brick.png"
    assert figure in text and (tmp_path / "tiny" / figure).is_file()
    assert "<code>window</code> | <code>5</code>" in text
    assert torch.get_float32_matmul_precision() == "highest"  # left as it was
