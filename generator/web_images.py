"""The format a figure is published in. Figures are drawn as PNG, which records the density they were drawn at
(pHYs). A figure that PNG stores badly (photographs, dreams, synthesized textures, dense heat maps: its PNG is more
than LOSSLESS_MARGIN times its WebP) is published as WebP at QUALITY instead, with the same density in its EXIF, and
the PNG is removed; line art (charts, histograms, text, flat colours) stays PNG, reduced to a palette of 256
colours when that is smaller, which keeps edges crisp. On the default report this took the figures from 151 MB to about a sixth (README).

Both encoders are deterministic: the same PNG gives the same bytes, so a regenerated site's diff shows only the
figures that changed."""
from __future__ import annotations

import io
from pathlib import Path

from PIL import Image
from PIL.TiffImagePlugin import IFDRational

QUALITY = 82  # WebP quality: text at 2× density stays sharp; the default report's figures were checked at full size
METHOD = 2  # libwebp's effort (0-6): 4 took twice as long for files 4% smaller
LOSSLESS_MARGIN = 1.3  # keep the PNG while it is at most this many times its WebP's size
# EXIF tags that carry the density (the PNG's pHYs) into the WebP, for the site's figure widths.
X_RESOLUTION, Y_RESOLUTION, RESOLUTION_UNIT, INCH = 0x011A, 0x011B, 0x0128, 2


def publish(path: Path) -> Path:
    """The figure at `path` (a PNG) in the format it is published in: the same path, or the `.webp` beside it that
    replaced it."""
    path = Path(path)
    if path.suffix.lower() != ".png" or not path.is_file():
        return path
    with Image.open(path) as im:
        im.load()
        dpi = im.info.get("dpi")
        picture = im.convert("RGB") if im.mode not in ("RGB", "L") else im.copy()
    webp = encode_webp(picture, dpi)
    # The fast octree palette decides the format (maximum coverage takes seconds on a photograph); the kept PNG
    # then gets the better palette.
    if min(path.stat().st_size, len(encode_palette_png(picture, dpi, Image.Quantize.FASTOCTREE))) \
            <= LOSSLESS_MARGIN * len(webp):
        palette = encode_palette_png(picture, dpi)
        if len(palette) < path.stat().st_size:
            path.write_bytes(palette)
        return path
    target = path.with_suffix(".webp")
    target.write_bytes(webp)
    path.unlink()
    return target


def encode_webp(picture: Image.Image, dpi: tuple[float, float] | None) -> bytes:
    exif = Image.Exif()
    if dpi:
        exif[X_RESOLUTION] = IFDRational(round(dpi[0] * 100), 100)
        exif[Y_RESOLUTION] = IFDRational(round(dpi[1] * 100), 100)
        exif[RESOLUTION_UNIT] = INCH
    buffer = io.BytesIO()
    picture.save(buffer, "WEBP", quality=QUALITY, method=METHOD, exif=exif.tobytes() if dpi else b"")
    return buffer.getvalue()


def encode_palette_png(picture: Image.Image, dpi: tuple[float, float] | None,
                       method: Image.Quantize = Image.Quantize.MAXCOVERAGE) -> bytes:
    """A PNG of at most 256 colours (no dithering): exact for a figure of flat colours, and for antialiased text and
    lines a few grey levels fewer than the eye tells apart. Maximum coverage, measured on a grid of heat maps with a
    colour bar: no pixel off by more than 6 of 255, where octree was off by up to 15 and median cut by 73 (a title's
    black turned dark red)."""
    buffer = io.BytesIO()
    picture.convert("RGB").quantize(256, method=method, dither=Image.Dither.NONE).save(
        buffer, "PNG", optimize=True, **({"dpi": dpi} if dpi else {}))
    return buffer.getvalue()


def publish_all(folder: Path, figures: dict[str, str]) -> dict[str, str]:
    """{name: path relative to `folder`} with each figure in its published format."""
    return {name: str(publish(folder / rel).relative_to(folder)) for name, rel in figures.items()}
