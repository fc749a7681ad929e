"""The format a figure is published in. Figures are drawn as PNG, which records the density they were drawn at
(pHYs). A figure that PNG stores badly (photographs, dreams, synthesized textures, dense heat maps: its PNG is more
than LOSSLESS_MARGIN times its WebP) is published as WebP at QUALITY instead, with the same density in its EXIF, and
the PNG is removed; line art (charts, histograms, text, flat colours) stays PNG, reduced to a palette of 256
colours when that is smaller, which keeps edges crisp. On the default report this took the figures from 151 MB to about a sixth (README).

Both encoders are deterministic: the same PNG gives the same bytes, so a regenerated site's diff shows only the
figures that changed.

Sizes are compared, never needed for themselves: the PNG and the octree palette are encoded only as far as a
comparison needs (`_size_upto`: an encoding stops once it is larger than what it is compared with), which is exact.
A matplotlib figure is drawn fast (zlib level 1, marked `DRAWN_FAST` in its PNG: figures._save); its size in the
rule is that of the PNG savefig writes at its default level 6, encoded as far as needed, so the rule and the
published bytes are those of a figure drawn at level 6."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

QUALITY = 82  # WebP quality: text at 2× density stays sharp; the default report's figures were checked at full size
METHOD = 2  # libwebp's effort (0-6): 4 took twice as long for files 4% smaller
LOSSLESS_MARGIN = 1.3  # keep the PNG while it is at most this many times its WebP's size
# EXIF tags that carry the density (the PNG's pHYs) into the WebP, for the site's figure widths.
X_RESOLUTION, Y_RESOLUTION, RESOLUTION_UNIT, INCH = 0x011A, 0x011B, 0x0128, 2
# The text key of a PNG drawn at zlib level 1 by figures._save (its size is not the one the rule compares).
DRAWN_FAST = "convscope-drawn-fast"


def publish(path: Path) -> Path:
    """The figure at `path` (a PNG) in the format it is published in: the same path, or the `.webp` beside it that
    replaced it."""
    path = Path(path)
    if path.suffix.lower() != ".png" or not path.is_file():
        return path
    with Image.open(path) as im:
        im.load()
        dpi = im.info.get("dpi")
        drawn_fast = DRAWN_FAST in im.info and im.mode == "RGBA"
        picture = im.convert("RGB") if im.mode not in ("RGB", "L") else im.copy()
        as_drawn = im.copy() if drawn_fast else None
    # The size of the PNG as drawn (as savefig writes it at level 6 for a figure drawn fast): exact up to `limit`,
    # anything larger once it is larger.
    if as_drawn is None:
        png_size = lambda limit: path.stat().st_size  # noqa: E731
    else:
        png_size = lambda limit: _size_upto(lambda f: _savefig_png(as_drawn, dpi, f), limit)  # noqa: E731
    webp = encode_webp(picture, dpi)
    limit = LOSSLESS_MARGIN * len(webp)
    # The fast octree palette decides the format (maximum coverage takes seconds on a photograph); the kept PNG
    # then gets the better palette.
    if (_size_upto(lambda f: _palette_png(picture, dpi, Image.Quantize.FASTOCTREE, f), limit) <= limit
            or png_size(limit) <= limit):
        palette = encode_palette_png(picture, dpi)
        if png_size(len(palette)) > len(palette):
            path.write_bytes(palette)
        elif as_drawn is not None:  # the truecolor PNG is smaller: as savefig writes it
            with path.open("wb") as f:
                _savefig_png(as_drawn, dpi, f)
        return path
    target = path.with_suffix(".webp")
    target.write_bytes(webp)
    path.unlink()
    return target


class _Larger(Exception):
    pass


class _Counter(io.RawIOBase):
    """A file that keeps no bytes: counts them, and stops the writer once there are more than `limit`."""

    def __init__(self, limit: float):
        self.limit, self.count = limit, 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.count += len(data)
        if self.count > self.limit:
            raise _Larger
        return len(data)


def _size_upto(write, limit: float) -> int:
    """The number of bytes `write(file)` writes, exact when at most `limit`; a number above `limit` when more (the
    encoder is stopped there)."""
    counter = _Counter(limit)
    try:
        write(counter)
    except _Larger:
        pass
    return counter.count


def _savefig_png(rgba: Image.Image, dpi: tuple[float, float] | None, f) -> None:
    """The PNG that matplotlib's savefig writes for these pixels (zlib level 6, its Software text, the density)."""
    from matplotlib.image import imsave

    imsave(f, np.asarray(rgba), format="png", dpi=dpi[0] if dpi else 100)


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
    _palette_png(picture, dpi, method, buffer)
    return buffer.getvalue()


def _palette_png(picture: Image.Image, dpi: tuple[float, float] | None, method: Image.Quantize, f) -> None:
    picture.convert("RGB").quantize(256, method=method, dither=Image.Dither.NONE).save(
        f, "PNG", optimize=True, **({"dpi": dpi} if dpi else {}))


def publish_all(folder: Path, figures: dict[str, str]) -> dict[str, str]:
    """{name: path relative to `folder`} with each figure in its published format."""
    return {name: str(publish(folder / rel).relative_to(folder)) for name, rel in figures.items()}
