"""Synthesis by matching, ours against straightforward implementations, in one run; prints the ratios. Not a test.

    .venv/bin/python bench/matching.py [SECTION ...] [options]        (sections: nonparametric; default: all)

nonparametric — Efros & Leung texture synthesis: our synthesizer (generator/efros_leung.py: wavefronts of
independent pixels, all source windows compared by one matrix product, a float32 screen with exact float64
re-measurement) against the same algorithm written the plain way, in numpy, on the same source and the same
per-pixel random draws:
  - a per-pixel loop over the source windows (the textbook implementation: for each output pixel, for each source
    window, the masked Gaussian-weighted SSD), and
  - a per-pixel numpy version that compares one pixel with all source windows at once by broadcasting.
Both are far too slow for the whole texture, so they are timed on the first `--loop-rows` / `--numpy-rows` rows
and their time is extrapolated to all rows (each pixel costs them the same: the whole window is compared, masked);
the pixels they did compute are checked against ours (same draws → same pixels). Our float64-only path
(`screen=False`) is timed too. Default: a 128 × 128 texture from a 64 × 64 source, 11 × 11 window, on the grey
`gravel` (where ours compares one channel instead of three) and the colour `immunohistochemistry` sample.
Ours runs on `--device` (on the CPU always one thread: see efros_leung.synthesize); the plain versions on the CPU.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image

from generator import efros_leung as el
from generator import images as imagelib
from timing import timed  # bench/timing.py (the script's folder is on sys.path)


# Non-parametric texture synthesis -----------------------------------------------------------------------------


def nonparametric_args(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("nonparametric")
    g.add_argument("--textures", default="gravel,immunohistochemistry", help="skimage samples, comma-separated")
    g.add_argument("--scale", type=int, default=128, help="shorter side of the resized sample")
    g.add_argument("--source", type=int, default=64, help="side of the source square cut from its centre")
    g.add_argument("--size", type=int, default=128, help="side of the texture")
    g.add_argument("--window", type=int, default=11)
    g.add_argument("--epsilon", type=float, default=0.1)
    g.add_argument("--loop-rows", type=int, default=1, help="rows the per-window loop computes (then extrapolated)")
    g.add_argument("--numpy-rows", type=int, default=8, help="rows the per-pixel numpy version computes")


def source_square(name: str, scale: int, side: int) -> np.ndarray:
    im = imagelib.sample(f"skimage:{name}")
    k = scale / min(im.size)
    im = im.resize((round(im.width * k), round(im.height * k)), Image.LANCZOS)
    left, top = (im.width - side) // 2, (im.height - side) // 2
    return np.asarray(im.crop((left, top, left + side, top + side)))


def plain(source: np.ndarray, size: int, window: int, epsilon: float, seed: int, rows: int, per_window: bool):
    """Efros & Leung in scan-line order, written the obvious way, for the first `rows` rows of a size × size
    texture: (pixels (rows, size, C), provenance (rows, size)). `per_window`: a Python loop over the source windows
    for each pixel; otherwise one broadcast over all windows per pixel."""
    h = window // 2
    hs, ws, c = source.shape
    gauss = el.gaussian_weights(window)
    draws = el.pixel_draws(size, size, seed)
    src = source.astype(np.float64)
    wins, centres = el.source_windows(source, window)
    wins = wins.astype(np.float64)
    out = np.zeros((size + h, size + 2 * h, c))  # h rows above, h columns each side: never known
    known = np.zeros((size + h, size + 2 * h), bool)
    prov = np.zeros((rows, size), np.int64)
    for i in range(rows):
        for j in range(size):
            nb = out[i:i + window, j:j + window]  # the pixel's neighbourhood on the padded canvas
            m = (known[i:i + window, j:j + window] * gauss)[:, :, None]
            if per_window:
                d = np.empty(len(wins))
                for n in range(len(wins)):
                    d[n] = (m * (nb - wins[n]) ** 2).sum()
            else:
                d = (m[None] * (nb[None] - wins) ** 2).sum((1, 2, 3))
            cand = np.flatnonzero(d <= d.min() * (1 + epsilon))
            pick = cand[min(int(draws[i, j] * len(cand)), len(cand) - 1)]
            prov[i, j] = centres[pick]
            out[i + h, j + h] = src.reshape(-1, c)[centres[pick]]
            known[i + h, j + h] = True
    return out[h:h + rows, h:h + size].astype(np.uint8), prov


def nonparametric(args) -> None:
    print(f"Efros & Leung: {args.size}×{args.size} texture from a {args.source}×{args.source} source (a sample "
          f"resized to {args.scale} px), {args.window}×{args.window} window, ε = {args.epsilon}; ours on "
          f"{'one CPU thread' if args.device == 'cpu' else args.device}, the plain versions on numpy {np.__version__}\n")
    rows = []
    for name in args.textures.split(","):
        src = source_square(name, args.scale, args.source)
        grey = bool((src == src[..., :1]).all())
        kw = dict(size=args.size, window=args.window, epsilon=args.epsilon, seed=0, device=args.device)
        t_ours, ours = timed(lambda: el.synthesize(src, **kw), repeat=2)  # the screen on or off, as it decides
        n_values = (args.source - args.window + 1) ** 2 * (args.window ** 2 // 2) * (1 if grey else 3)
        default_on = args.device.startswith("cuda") or n_values >= 400_000  # its rule (efros_leung._grow)
        t_other, other = timed(lambda: el.synthesize(src, **kw, screen=not default_on), repeat=2)
        assert np.array_equal(other.provenance, ours.provenance)
        label = f"{name} ({'grey' if grey else 'colour'})"
        on_off = lambda on: "float32 screen + exact" if on else "float64 products only"  # noqa: E731
        rows.append((label, f"ours ({on_off(default_on)})", args.size, t_ours, t_ours, "—"))
        rows.append((label, f"ours with {on_off(not default_on)}", args.size, t_other, t_other, "same"))
        for what, n_rows, per_window in (("numpy, all windows per pixel", args.numpy_rows, False),
                                         ("loop over windows per pixel", args.loop_rows, True)):
            start = time.perf_counter()
            pixels, prov = plain(src, args.size, args.window, args.epsilon, 0, n_rows, per_window)
            seconds = time.perf_counter() - start
            same = np.array_equal(prov, ours.provenance[:n_rows]) and np.array_equal(pixels, ours.texture[:n_rows])
            rows.append((label, what, n_rows, seconds, seconds * args.size / n_rows, "same" if same else "DIFFERENT"))
    print(f"{'texture':<30}{'method':<34}{'rows':>6}{'measured s':>12}{'all rows s':>12}{'÷ ours':>9}  pixels")
    ours_s = {}
    for label, what, n_rows, measured, full, same in rows:
        ours_s.setdefault(label, full)
        print(f"{label:<30}{what:<34}{n_rows:>6}{measured:>12.2f}{full:>12.1f}{full / ours_s[label]:>8.1f}×  {same}")
    print("\nall rows s: the measured time × (texture rows ÷ rows computed), for the plain versions an extrapolation."
          "\npixels: whether the rows computed are ours, pixel for pixel and source position for source position.")


SECTIONS = {"nonparametric": (nonparametric_args, nonparametric)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sections", nargs="*", help=f"which comparisons to run: {', '.join(SECTIONS)} (default: all)")
    # shared by every section
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    for add_args, _ in SECTIONS.values():
        add_args(ap)
    args = ap.parse_args()
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in args.sections or list(SECTIONS):
        SECTIONS[name][1](args)


if __name__ == "__main__":
    main()
