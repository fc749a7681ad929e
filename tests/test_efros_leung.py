"""Efros & Leung texture synthesis: the vectorized (wavefront, matrix-product) synthesizer against a plain per-pixel
loop written here from the paper, the output made only of source pixels, its neighbourhoods matched in the source,
seeds, and the measures of a result. Tiny sizes: the file runs in seconds on one CPU thread."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from generator.techniques.synthesis import efros_leung as el
from generator import images as imagelib


def texture(name: str, scale: int = 48, side: int = 32) -> np.ndarray:
    """The centre square of a bundled sample resized so its shorter side is `scale`: a small structured source."""
    im = imagelib.sample(f"skimage:{name}").resize((scale, scale), Image.LANCZOS)
    o = (scale - side) // 2
    return np.asarray(im.crop((o, o, o + side, o + side)))


def noise_source(side: int = 14, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(side, side, 3), dtype=np.uint8)


def periodic_source(side: int = 14, period: int = 4, seed: int = 4) -> np.ndarray:
    """A random tile repeated: every window occurs several times over, so exact ties are everywhere."""
    tile = np.random.default_rng(seed).integers(0, 256, size=(period, period, 3), dtype=np.uint8)
    reps = -(-side // period)
    return np.tile(tile, (reps, reps, 1))[:side, :side]


def reference(source: np.ndarray, size: int, window: int, epsilon: float, seed: int):
    """Efros & Leung pixel by pixel in scan-line order, a loop over every source window for every pixel, the
    distance summed directly as Σ over the known neighbours of gauss · (a − b)². Candidates: distance ≤ (1 + ε) ×
    the smallest; of the k candidates, in source raster order, the ⌊u·k⌋-th, with u the pixel's draw from
    torch.rand(size², generator seeded with `seed`) in raster order (the synthesizer's documented draws)."""
    h = window // 2
    hs, ws, c = source.shape
    sigma = window / 6.4
    d = np.arange(-h, h + 1)
    gauss = np.maximum(np.round(np.exp(-(d[:, None] ** 2 + d[None] ** 2) / (2 * sigma ** 2)) * 2 ** 20), 1)
    draws = torch.rand(size * size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).numpy()
    out = np.zeros((size, size, c), np.float64)
    known = np.zeros((size, size), bool)
    prov = np.zeros((size, size), np.int64)
    src = source.astype(np.float64)
    for i in range(size):
        for j in range(size):
            dists, centres = [], []
            for y in range(h, hs - h):
                for x in range(h, ws - h):
                    total = 0.0
                    for dy in range(-h, h + 1):
                        for dx in range(-h, h + 1):
                            oi, oj = i + dy, j + dx
                            if 0 <= oi < size and 0 <= oj < size and known[oi, oj]:
                                diff = out[oi, oj] - src[y + dy, x + dx]
                                total += gauss[dy + h, dx + h] * float(diff @ diff)
                    dists.append(total)
                    centres.append((y, x))
            dists = np.array(dists)
            cand = np.flatnonzero(dists <= dists.min() * (1 + epsilon))
            y, x = centres[cand[min(int(draws[i * size + j] * len(cand)), len(cand) - 1)]]
            out[i, j], known[i, j], prov[i, j] = src[y, x], True, y * ws + x
    return out.astype(np.uint8), prov


@pytest.mark.parametrize("screen", [True, False])
@pytest.mark.parametrize("source", ["noise", "periodic"])
@pytest.mark.parametrize("epsilon", [0.0, 0.1])
def test_the_vectorized_synthesizer_is_the_per_pixel_loop(source, epsilon, screen):
    src = noise_source(9) if source == "noise" else periodic_source(9)
    ours = el.synthesize(src, 8, window=5, epsilon=epsilon, seed=7, screen=screen)
    tex, prov = reference(src, 8, 5, epsilon, seed=7)
    np.testing.assert_array_equal(ours.provenance, prov)
    np.testing.assert_array_equal(ours.texture, tex)


def test_the_texture_is_made_only_of_source_pixels():
    src = texture("immunohistochemistry")
    r = el.synthesize(src, 40, window=7, seed=1)
    assert r.texture.shape == (40, 40, 3) and r.texture.dtype == np.uint8
    # through the provenance: each pixel is the source pixel it names, and that is a window centre
    np.testing.assert_array_equal(r.texture, src.reshape(-1, 3)[r.provenance])
    assert np.isin(r.provenance, el.source_windows(src, 7)[1]).all()
    # and by value alone
    pack = lambda a: a.reshape(-1, 3).astype(np.int64) @ np.array([65536, 256, 1])  # noqa: E731
    assert np.isin(pack(r.texture), pack(src)).all()
    # many different source pixels, not one repeated
    assert len(np.unique(r.provenance)) > 200


def test_each_pixel_copies_a_window_within_epsilon_of_the_best_match():
    """Brute force, vectorized over the source windows but not over the output: the window each pixel copied from
    matches the pixel's known neighbourhood (as it was when the pixel was made) within (1 + ε) of the best."""
    src, w, eps = texture("brick", side=24), 7, 0.1
    h = w // 2
    r = el.synthesize(src, 24, window=w, epsilon=eps, seed=2)
    wins, centres = el.source_windows(src, w)
    wins = wins.astype(np.float64)
    gauss = el.gaussian_weights(w)
    padded = np.zeros((24 + 2 * h, 24 + 2 * h, 3))
    padded[h:-h, h:-h] = r.texture
    order = np.arange(24 * 24).reshape(24, 24)
    for i in range(24):
        for j in range(24):
            known = np.zeros((24 + 2 * h, 24 + 2 * h), bool)
            known[h:-h, h:-h] = order < order[i, j]  # made before (i, j) in scan-line order
            m = (known[i:i + w, j:j + w] * gauss)[None, :, :, None]
            d = (m * (wins - padded[i:i + w, j:j + w][None]) ** 2).sum((1, 2, 3))
            chosen = d[np.flatnonzero(centres == r.provenance[i, j])[0]]
            assert chosen <= d.min() * (1 + eps)
            assert r.error[i, j] == pytest.approx(np.sqrt(d.min() / max(3 * m.sum(), 1)), abs=1e-9)


@pytest.mark.parametrize("name", ["brick", "immunohistochemistry"])
def test_texture_neighbourhoods_have_near_matches_in_the_source(name):
    """Every whole w × w window of the texture (below the first rows, which start from nothing) against every source
    window, by brute force: most have a close match, far closer than the same pixels shuffled have; and the module's
    own measure of this agrees."""
    src, w = texture(name), 7
    r = el.synthesize(src, 40, window=w, seed=0)
    wins = el.source_windows(src, w)[0].reshape(-1, w * w * 3).astype(np.float64)

    def nearest(picture):
        view = np.lib.stride_tricks.sliding_window_view(picture, (w, w), axis=(0, 1))[w:]  # skip the first rows
        flat = view.transpose(0, 1, 3, 4, 2).reshape(-1, w * w * 3).astype(np.float64)
        return np.array([((wins - x) ** 2).sum(1).min() for x in flat])

    ours = nearest(r.texture)
    shuffled = nearest(np.random.default_rng(0).permutation(r.texture.reshape(-1, 3)).reshape(r.texture.shape))
    rms = lambda d: np.sqrt(d / (w * w * 3))  # noqa: E731
    assert np.median(rms(ours)) < 0.5 * np.median(rms(shuffled))
    # the module's measure (matrix products) is the brute force's, window for window
    module = el.nearest_windows(r.texture[w:], src, w, stride=1)
    np.testing.assert_array_equal(module, ours)


def test_exact_matches_are_found_exactly():
    """A texture cut out of the source itself: every one of its windows occurs there, at distance exactly 0."""
    src = texture("brick")
    assert (el.nearest_windows(src[5:25, 3:20], src, 7, stride=2) == 0).all()
    changed = src[5:25, 3:20].copy()
    changed[8, 8, 0] ^= 1  # one grey level in one channel
    d = el.nearest_windows(changed, src, 7, stride=1).reshape(14, 11)  # windows by their top-left corner
    covers = np.zeros((14, 11), bool)
    covers[2:9, 2:9] = True  # the windows that contain pixel (8, 8)
    assert (d[~covers] == 0).all() and (d[covers] >= 1).all()


def test_same_seed_same_texture_and_another_seed_another():
    src = texture("gravel")
    a, b = el.synthesize(src, 24, window=5, seed=3), el.synthesize(src, 24, window=5, seed=3)
    np.testing.assert_array_equal(a.texture, b.texture)
    np.testing.assert_array_equal(a.provenance, b.provenance)
    c = el.synthesize(src, 24, window=5, seed=4)
    assert not np.array_equal(a.provenance, c.provenance)


def test_grayscale_sources_and_rectangular_outputs():
    src = texture("brick")[..., 0]
    r = el.synthesize(src, (12, 20), window=5, seed=0)
    assert r.texture.shape == (12, 20, 1)
    np.testing.assert_array_equal(r.texture[..., 0], src.reshape(-1)[r.provenance])


def test_gaussian_weights_follow_the_paper():
    for w in (5, 11, 15):
        g = el.gaussian_weights(w)
        h, sigma = w // 2, w / 6.4
        assert g[h, h] == 2 ** 20 and (g == np.round(g)).all() and g.min() >= 1
        assert g[h, h + 1] / g[h, h] == pytest.approx(np.exp(-1 / (2 * sigma ** 2)), rel=1e-5)
        assert g[h + 2, h + 2] / g[h, h] == pytest.approx(np.exp(-8 / (2 * sigma ** 2)), abs=0.5 / 2 ** 20)


def test_bad_windows_are_refused():
    src = noise_source(9)
    with pytest.raises(ValueError, match="odd"):
        el.synthesize(src, 8, window=4)
    with pytest.raises(ValueError, match="does not fit"):
        el.synthesize(src, 8, window=11)


def test_histogram_distance_and_coherence():
    src = texture("immunohistochemistry")
    assert el.histogram_distance(src, src) == 0
    shuffled = np.random.default_rng(0).permutation(src.reshape(-1, 3)).reshape(src.shape)
    assert el.histogram_distance(shuffled, src) == 0  # colours and proportions, not their places
    black, white = np.zeros_like(src), np.full_like(src, 255)
    assert el.histogram_distance(black, white) == 1
    runs = np.arange(20).reshape(2, 10)  # each row copied left to right from consecutive source pixels
    assert el.coherence(runs) == 1
    assert el.coherence(runs[:, ::-1]) == 0


def near_ties_source(seed: int = 0) -> np.ndarray:
    """The periodic source with ±1 added to 30% of the values: many windows a few units apart, far below the
    rounding error of float32 sums of this size, so a screen without its rounding slack picks wrong windows."""
    rng = np.random.default_rng(seed)
    src = periodic_source(24).astype(int)
    src += (rng.random(src.shape) < 0.3) * rng.choice([-1, 1], src.shape)
    return np.clip(src, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("source", ["periodic", "near ties", "brick"])
@pytest.mark.parametrize("epsilon", [0.0, 0.1])
def test_the_float32_screen_changes_nothing(source, epsilon):
    """The screen lets through every window that can be a candidate: the same texture as float64 products alone,
    on a source full of exact ties, one full of near ties, and a photo."""
    src = {"periodic": periodic_source(20), "near ties": near_ties_source(), "brick": texture("brick")}[source]
    a = el.synthesize(src, 32, window=7, epsilon=epsilon, seed=5, screen=True)
    b = el.synthesize(src, 32, window=7, epsilon=epsilon, seed=5, screen=False)
    np.testing.assert_array_equal(a.provenance, b.provenance)
    np.testing.assert_array_equal(a.error, b.error)


def test_global_torch_settings_are_left_as_they_were():
    threads, precision = torch.get_num_threads(), torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        el.synthesize(noise_source(9), 8, window=5)
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(precision)
    assert torch.get_num_threads() == threads
