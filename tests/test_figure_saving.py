"""How a figure is saved and published, made faster without changing a pixel or a published byte: figures._save lays
a figure out without resampling its images and writes its PNG at zlib level 1; show_pixels draws a mosaic without
resampling it; web_images measures the PNG savefig would have written only as far as its rule needs. Each is
compared here with the plain way: savefig(bbox_inches="tight") at level 6, imshow, the whole size."""
from __future__ import annotations

import io

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image
from skimage import data

from generator import figures, web_images
from generator.techniques.dataset import figures as dataset_figures


def plain_save(fig, path):
    """figures._save as it was: savefig's own tight box, at its default zlib level."""
    fig.savefig(path, dpi=figures.DPI, bbox_inches="tight", pad_inches=figures.PAD, facecolor="white")
    plt.close(fig)


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGBA"))


def photo(size=64):
    return np.asarray(Image.fromarray(data.chelsea()).resize((size, size)))


def draw_rows(path):  # constrained layout, images resampled, colour bars, a footnote
    rng = np.random.default_rng(0)
    figures.attribution_rows(photo(), rng.random((2, 64, 64)).astype(np.float32), ["a cat", "another cat"], path,
                             "Saliency", "|gradient|")


def draw_patches(path):  # a mosaic shown pixel for pixel, captions outside it
    dataset_figures.patch_grid([[photo(40), photo(24)[:20]], [photo(56)]], ["channel 1", "channel 2"],
                               [["0.91", "0.52 · a cat"], ["0.40"]], path, cell=48)


def draw_histogram(path):  # line art: stays PNG
    rng = np.random.default_rng(0)
    dataset_figures.activation_histograms([rng.gamma(1.0, 1.0, 500)], ["conv1 · channel 3"], path,
                                          marks=[np.arange(4) + 2.0])


@pytest.mark.parametrize("draw", [draw_rows, draw_patches, draw_histogram])
def test_saved_figures_have_the_pixels_savefig_tight_gives(tmp_path, monkeypatch, draw):
    draw(tmp_path / "fast.png")
    monkeypatch.setattr(figures, "_save", plain_save)
    monkeypatch.setattr(dataset_figures, "_save", plain_save)
    if draw is draw_patches:  # imshow, as before show_pixels
        monkeypatch.setattr(dataset_figures, "show_pixels", lambda ax, p: ax.imshow(p, interpolation="nearest"))
    draw(tmp_path / "plain.png")
    fast, plain = pixels(tmp_path / "fast.png"), pixels(tmp_path / "plain.png")
    assert fast.shape == plain.shape and np.array_equal(fast, plain)
    with Image.open(tmp_path / "fast.png") as a, Image.open(tmp_path / "plain.png") as b:
        assert a.info["dpi"] == b.info["dpi"]
        assert web_images.DRAWN_FAST in a.info and web_images.DRAWN_FAST not in b.info


def test_show_pixels_falls_back_to_resampling_at_another_scale(tmp_path):
    canvas = photo(50)
    fig = plt.figure(figsize=(1, 1))  # 200 pixels at figures.DPI: the canvas is enlarged 4×
    figures.show_pixels(fig.add_axes((0, 0, 1, 1)), canvas).axes.set_axis_off()
    fig.savefig(tmp_path / "a.png", dpi=figures.DPI)
    fig.axes[0].images[0].remove()
    fig.axes[0].imshow(canvas, interpolation="nearest")
    fig.savefig(tmp_path / "b.png", dpi=figures.DPI)
    plt.close(fig)
    assert np.array_equal(pixels(tmp_path / "a.png"), pixels(tmp_path / "b.png"))


@pytest.mark.parametrize("draw", [draw_rows, draw_patches, draw_histogram])
def test_a_figure_drawn_fast_is_published_as_the_one_drawn_at_level_6(tmp_path, monkeypatch, draw):
    (tmp_path / "fast").mkdir()
    (tmp_path / "plain").mkdir()
    draw(tmp_path / "fast" / "f.png")
    monkeypatch.setattr(figures, "_save", plain_save)
    monkeypatch.setattr(dataset_figures, "_save", plain_save)
    draw(tmp_path / "plain" / "f.png")
    plain_size = (tmp_path / "plain" / "f.png").stat().st_size
    with Image.open(tmp_path / "fast" / "f.png") as im:  # savefig's PNG, rebuilt from the pixels
        im.load()
        rebuilt = io.BytesIO()
        web_images._savefig_png(im, im.info["dpi"], rebuilt)
    assert rebuilt.getvalue() == (tmp_path / "plain" / "f.png").read_bytes()
    fast, plain = web_images.publish(tmp_path / "fast" / "f.png"), web_images.publish(tmp_path / "plain" / "f.png")
    assert fast.name == plain.name and fast.read_bytes() == plain.read_bytes()
    assert web_images._size_upto(lambda f: f.write(rebuilt.getvalue()), plain_size) == plain_size
    assert web_images._size_upto(lambda f: f.write(rebuilt.getvalue()), plain_size - 1) > plain_size - 1


def test_a_truecolour_png_smaller_than_its_palette_is_kept_as_savefig_writes_it(tmp_path, monkeypatch):
    """Flat colours: the palette is exact; where it is not the smaller file, the truecolour PNG is published, the one
    savefig writes at level 6 (not the fast one drawn)."""
    monkeypatch.setattr(web_images, "encode_palette_png", lambda picture, dpi, method=None: b"x" * 10**7)
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.bar([0, 1, 2], [3, 1, 2], color="#4c72b0")
    figures._save(fig, tmp_path / "fast.png")
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.bar([0, 1, 2], [3, 1, 2], color="#4c72b0")
    plain_save(fig, tmp_path / "plain.png")
    assert web_images.publish(tmp_path / "fast.png") == tmp_path / "fast.png"
    assert (tmp_path / "fast.png").read_bytes() == (tmp_path / "plain.png").read_bytes()
