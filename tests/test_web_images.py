"""The published format of a figure: photographs become WebP that keep the figure's density and look like
the PNG; line art stays PNG (a palette when smaller), with its density."""
from __future__ import annotations

import numpy as np
from PIL import Image
from skimage import data

from generator import figures, mkdocs_hooks, web_images


def test_a_photograph_becomes_webp_with_its_density(tmp_path):
    picture = data.chelsea()[:240, :320]
    path = tmp_path / "photo.png"
    figures.save_picture(picture, path, density=2)
    published = web_images.publish(path)
    assert published == tmp_path / "photo.webp" and not path.exists()
    with Image.open(published) as im:
        assert im.format == "WEBP" and im.size == (320, 240)
        assert np.abs(np.asarray(im.convert("RGB"), float) - picture).mean() < 6  # looks like the photograph
    assert mkdocs_hooks.css_size(published) == (160, 120)  # drawn at 2×: shown at half its pixels
    smooth = np.repeat(np.linspace(0, 255, 160, dtype=np.uint8)[None, :, None], 120, 0).repeat(3, 2)
    figures.save_picture(np.ascontiguousarray(smooth), path)
    again = web_images.publish(path)
    with Image.open(again) as im:  # whichever format, it shows the same picture
        assert np.abs(np.asarray(im.convert("RGB"), float) - smooth).mean() < 3


def test_line_art_stays_png_with_its_density(tmp_path):
    chart = np.full((200, 300, 3), 255, np.uint8)
    chart[50:150, 40:60] = (70, 110, 180)
    chart[100:150, 80:100] = (70, 110, 180)
    chart[160, 20:280] = 0
    path = tmp_path / "chart.png"
    figures.save_picture(chart, path, density=2)
    assert web_images.publish(path) == path
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert np.array_equal(np.asarray(im.convert("RGB")), chart)  # few colours: the palette is exact
    assert mkdocs_hooks.css_size(path) == (150, 100)
