"""The figures stage's plotting primitives and their publishing (WebP or palette PNG), timed on inputs of the sizes
the default report draws: 224-px photographs with attribution maps, 48 activation maps of 112 × 112, a picture grid
of 8 × 6 tiles of 160 px, top-patch grids, neighbours, embeddings, histograms, filters. Prints, per figure, the
seconds to draw it (matplotlib to PNG), the seconds to publish it, its published format, pixel size and bytes. Not a
test: nothing here asserts a time. Times are CPU seconds of the process (time.process_time: drawing is
single-threaded), which a busy shared machine disturbs far less than wall-clock time.

With `--against REV` the same figures are drawn a second time by the code of git revision REV (a temporary
worktree, in a subprocess), and the table shows both side by side: before (REV) and after (the working tree), with
each figure's pixel size and format, which should not change.

    OMP_NUM_THREADS=1 .venv/bin/python bench/figures.py [--against REV] [--repeat N] [--only NAME,...]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def photo(size: int = 224, which: str = "chelsea") -> np.ndarray:
    """A photograph (scikit-image's) resized to size × size, uint8 RGB."""
    from PIL import Image
    from skimage import data

    return np.asarray(Image.fromarray(getattr(data, which)()).resize((size, size), Image.BILINEAR))


def smooth_maps(n: int, h: int, w: int, seed: int = 0, signed: bool = False) -> np.ndarray:
    """n smooth random maps (blurred noise), as attribution and activation maps look."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    maps = np.stack([gaussian_filter(rng.standard_normal((h, w)), max(1.0, h / 20)) for _ in range(n)])
    maps /= np.abs(maps).max()
    return maps.astype(np.float32) if signed else np.maximum(maps, 0).astype(np.float32)


def synthesized(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """n noise-like synthesized pictures (feature visualizations look like coloured high-frequency patterns)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a = gaussian_filter(rng.standard_normal((size, size, 3)), (1.2, 1.2, 0))
        a = (a - a.min()) / (a.max() - a.min())
        out.append((a * 255).astype(np.uint8))
    return out


def cases() -> dict:
    """name → a function drawing that figure into a folder and returning its paths."""
    from generator import figures
    from generator.techniques.dataset import figures as dfig

    pic = photo()
    labels = ["tabby, tabby cat", "tiger cat", "Egyptian cat"]

    def attribution_rows(d):
        figures.attribution_rows(pic, smooth_maps(2, 224, 224), labels[:2], d / "f.png", "Saliency\n(clipped)",
                                 "|gradient|")
        return [d / "f.png"]

    def guided_rows(d):
        g = smooth_maps(3, 224, 224, signed=True)[None]
        figures.guided_rows(pic, g, smooth_maps(1, 224, 224), labels[:1], d / "f.png", "guided backprop",
                            "max |gradient| over channels", 99.0)
        return [d / "f.png"]

    def occlusion_rows(d):
        figures.occlusion_rows(pic, smooth_maps(2, 224, 224, signed=True), labels[:2], d / "f.png", "occlusion",
                               "drop in log-odds", 56)
        return [d / "f.png"]

    def grabcut_rows(d):
        masks = (smooth_maps(1, 224, 224) > 0.2).astype(np.float32)
        figures.grabcut_rows(pic, smooth_maps(1, 224, 224), masks, labels[:1], d / "f.png", "saliency")
        return [d / "f.png"]

    def comparison(d):
        rng = np.random.default_rng(0)
        m = 10
        curves = [np.sort(rng.random(17))[::-1] for _ in range(m)]
        figures.attribution_comparison(pic, list(smooth_maps(m, 224, 224, signed=True)),
                                       [f"method {i}" for i in range(m)], d / "f.png", signed=[i % 2 == 0 for i in range(m)], deletion=curves,
                                       insertion=[c[::-1] for c in curves], deletion_auc=[0.2] * m,
                                       insertion_auc=[0.6] * m, target="tabby (p=0.53)")
        return [d / "f.png"]

    def channel_grid_112(d):
        dead = np.zeros(48, bool)
        dead[[3, 17]] = True
        figures.channel_grid(smooth_maps(48, 112, 112, signed=True), list(range(48)), dead, d / "f.png",
                             "_act_stem: 48 of 32 channels")
        return [d / "f.png"]

    def channel_grid_7(d):
        figures.channel_grid(smooth_maps(48, 7, 7), list(range(48)), np.zeros(48, bool), d / "f.png", "_act_head")
        return [d / "f.png"]

    def picture_grid_8x6(d):
        tiles = synthesized(48, 160)
        grid = [tiles[r * 6:(r + 1) * 6] for r in range(8)]
        figures.picture_grid(grid, [[f"p = 0.{r}{c} after 256 steps" for c in range(6)] for r in range(8)],
                             [f"class {r}" for r in range(8)], [f"step {c}" for c in range(6)], d / "f.png")
        return [d / "f.png"]

    def unit_grid_2x4(d):
        tiles = synthesized(8, 224, seed=1)
        figures.picture_grid([tiles[:4], tiles[4:]], [[f"channel {i}: 3.21" for i in range(4)]] * 2, ["", ""],
                             [""] * 4, d / "f.png")
        return [d / "f.png"]

    def picture_row_2(d):
        figures.picture_row([pic, synthesized(1, 224)[0]], ["original", "dreamt at _blocks.5._act1: layer norm 2.1×"],
                            d / "f.png")
        return [d / "f.png"]

    def prediction_bars(d):
        figures.prediction_bars(pic, ["tabby, tabby cat", "tiger cat", "Egyptian cat", "lynx", "remote control"],
                                [0.5, 0.2, 0.1, 0.05, 0.01], d / "f.png")
        return [d / "f.png"]

    def save_picture_160(d):
        figures.save_picture(synthesized(1, 160)[0], d / "f.png", min_side=160)
        return [d / "f.png"]

    def rgb_filters(d):
        rng = np.random.default_rng(0)
        figures.rgb_filters(rng.standard_normal((32, 3, 3, 3)).astype(np.float32), d / "f.png")
        return [d / "f.png"]

    def pointwise_usage(d):
        rng = np.random.default_rng(0)
        figures.pointwise_usage(rng.standard_normal((320, 1280)).astype(np.float32), d / "f.png", "_conv_head")
        return [d / "f.png"]

    def patch_grid_8x8(d):
        patches = [[photo(56 + 8 * (j % 3))[:40 + j, :56] for j in range(8)] for _ in range(8)]
        dfig.patch_grid(patches, [f"channel {c}" for c in range(8)], [[f"{v:.2f}" for v in range(8)]] * 8, d / "f.png")
        return [d / "f.png"]

    def patch_grid_unit(d):  # one channel's page: its top patches in one row (a max_patches result draws 8-12)
        patches = [photo(56 + 8 * (j % 3))[:40 + j, :56] for j in range(8)]
        dfig.patch_grid([patches], ["channel 3"], [[f"{v:.2f} · tabby, tabby cat" for v in range(8)]], d / "f.png",
                        cell=96)
        return [d / "f.png"]

    def activation_histogram(d):
        rng = np.random.default_rng(0)
        dfig.activation_histograms([rng.gamma(1.0, 1.0, 1000)], ["_blocks.5._act1 · channel 3"], d / "f.png",
                                   marks=[np.arange(8) + 4.0])
        return [d / "f.png"]

    def neighbor_rows(d):
        q = [photo(224)] * 8
        nb = [[photo(224, "coffee")] * 6] * 8
        titles = [[f"Shirt · 0.{i}3" for i in range(6)]] * 8
        dfig.neighbor_rows(q, nb, nb, d / "f.png", [f"query {i}" for i in range(8)], titles, titles,
                           [[True, False] * 3] * 8, [[False, True] * 3] * 8)
        return [d / "f.png"]

    def embedding_scatter(d):
        rng = np.random.default_rng(0)
        dfig.embedding_scatter(rng.standard_normal((1000, 2)), rng.integers(0, 10, 1000),
                               [f"class {i}" for i in range(10)], d / "f.png", "t-SNE of _act_head")
        return [d / "f.png"]

    def thumbnail_grid(d):
        rng = np.random.default_rng(0)
        pics = [np.repeat(rng.integers(0, 255, (28, 28, 1), dtype=np.uint8), 3, 2) for _ in range(144)]
        dfig.thumbnail_grid(pics, np.arange(144).reshape(12, 12), d / "f.png")
        return [d / "f.png"]

    return {k: v for k, v in locals().items() if callable(v) and not k.startswith("_")
            and k not in ("pic", "labels", "figures", "dfig")}


def measure(names: list[str] | None, repeat: int, keep: Path | None = None) -> dict:
    """{name: {draw, publish, format, size, bytes}}: medians over `repeat` runs of drawing and publishing. `keep`: a
    folder to copy each published figure into (name.webp or name.png), to compare two revisions' pixels."""
    import matplotlib

    matplotlib.use("Agg")
    from PIL import Image

    from generator import web_images

    found = cases()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, draw in found.items():
            if names and name not in names:
                continue
            draws, pubs = [], []
            for i in range(repeat + 1):  # the first run warms caches (fonts, colour maps) and is not counted
                d = Path(tmp) / f"{name}-{i}"
                d.mkdir()
                t = time.process_time()
                paths = draw(d)
                t1 = time.process_time()
                published = [web_images.publish(p) for p in paths]
                t2 = time.process_time()
                if i:
                    draws.append(t1 - t)
                    pubs.append(t2 - t1)
            with Image.open(published[0]) as im:
                size = im.size
            if keep:
                keep.mkdir(parents=True, exist_ok=True)
                shutil.copy(published[0], keep / f"{name}{published[0].suffix}")
            out[name] = {"draw": statistics.median(draws), "publish": statistics.median(pubs),
                         "format": published[0].suffix[1:], "size": list(size),
                         "bytes": sum(p.stat().st_size for p in published)}
    return out


def measure_at(rev: str, names: list[str] | None, repeat: int, keep: Path | None = None) -> dict:
    """`measure` run by the code of git revision `rev`, in a temporary worktree and a subprocess."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev], check=True,
                       capture_output=True)
        try:
            (tree / "bench").mkdir(exist_ok=True)
            script = tree / "bench" / "_figures_bench.py"
            script.write_text(Path(__file__).read_text())
            args = [sys.executable, str(script), "--json", "--repeat", str(repeat)] + (
                ["--only", ",".join(names)] if names else []) + (["--keep", str(keep)] if keep else [])
            env = {**os.environ, "PYTHONPATH": str(tree)}
            done = subprocess.run(args, cwd=tree, env=env, check=True, capture_output=True, text=True)
            return json.loads(done.stdout.strip().splitlines()[-1])
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False,
                           capture_output=True)


def same_pixels(a: Path, b: Path) -> str:
    from PIL import Image

    with Image.open(a) as x, Image.open(b) as y:
        p, q = np.asarray(x.convert("RGB")).astype(int), np.asarray(y.convert("RGB")).astype(int)
    if p.shape != q.shape:
        return f"different sizes {p.shape} {q.shape}"
    d = np.abs(p - q).max(-1)
    return "same pixels" if not d.any() else f"pixels differ: {(d > 0).mean():.3%} of them, by up to {d.max()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", metavar="REV", help="also time the code of this git revision (before)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", help="figures to time, comma-separated")
    ap.add_argument("--keep", type=Path, help="copy the published figures here (with --against: into before/ and "
                    "after/, and say which differ)")
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    names = args.only.split(",") if args.only else None
    if args.json:
        print(json.dumps(measure(names, args.repeat, args.keep)))
        return
    keep = args.keep.resolve() if args.keep else None
    before = measure_at(args.against, names, args.repeat, keep and keep / "before") if args.against else None
    after = measure(names, args.repeat, keep and keep / "after" if args.against else keep)
    if before is None:
        print(f"{'figure':22} {'draw s':>7} {'publish s':>9} {'total s':>8}  format  size        bytes")
        for name, r in after.items():
            print(f"{name:22} {r['draw']:7.3f} {r['publish']:9.3f} {r['draw'] + r['publish']:8.3f}  "
                  f"{r['format']:6}  {'×'.join(map(str, r['size'])):10} {r['bytes']:8d}")
        print(f"{'all':22} {sum(r['draw'] for r in after.values()):7.3f} "
              f"{sum(r['publish'] for r in after.values()):9.3f} "
              f"{sum(r['draw'] + r['publish'] for r in after.values()):8.3f}")
        return
    print(f"before: {args.against}; after: the working tree; seconds (median of {args.repeat})")
    print(f"{'figure':22} {'draw':>13} {'publish':>13} {'total':>13} {'ratio':>6}  {'format':13} {'size':23} bytes")
    totals = [0.0] * 6
    for name, a in after.items():
        b = before.get(name)
        if b is None:
            continue
        row = [b["draw"], a["draw"], b["publish"], a["publish"], b["draw"] + b["publish"], a["draw"] + a["publish"]]
        totals = [t + v for t, v in zip(totals, row)]
        fmt = b["format"] if b["format"] == a["format"] else f"{b['format']}→{a['format']}"
        size = "×".join(map(str, a["size"])) if b["size"] == a["size"] else \
            f"{'×'.join(map(str, b['size']))}→{'×'.join(map(str, a['size']))}"
        print(f"{name:22} {row[0]:6.3f}→{row[1]:6.3f} {row[2]:6.3f}→{row[3]:6.3f} {row[4]:6.3f}→{row[5]:6.3f} "
              f"{row[4] / max(row[5], 1e-9):5.2f}×  {fmt:13} {size:23} {b['bytes']}→{a['bytes']}")
    if keep:
        for name in after:
            b, a = sorted((keep / "before").glob(f"{name}.*")), sorted((keep / "after").glob(f"{name}.*"))
            if b and a:
                print(f"{name}: {'same bytes' if b[0].read_bytes() == a[0].read_bytes() else same_pixels(b[0], a[0])}")
    print(f"{'all':22} {totals[0]:6.2f}→{totals[1]:6.2f} {totals[2]:6.2f}→{totals[3]:6.2f} "
          f"{totals[4]:6.2f}→{totals[5]:6.2f} {totals[4] / max(totals[5], 1e-9):5.2f}×")


if __name__ == "__main__":
    main()
