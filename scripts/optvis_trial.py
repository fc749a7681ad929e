"""A quick visual trial of `generator.optvis` on the embedded EfficientNet-Lite0: renders a batch and saves a grid
PNG with captions, so that settings can be tuned by looking (it is a tuning tool, not part of a build).

    .venv/bin/python scripts/optvis_trial.py class   --classes 281,967,1,985 --size 160 --steps 256 --out /tmp/optvis
    .venv/bin/python scripts/optvis_trial.py plain   --classes 281,967      # Simonyan 2014: pixels + L2, no transforms
    .venv/bin/python scripts/optvis_trial.py yosinski --classes 281,967     # pixels + blur/clip/decay + jitter
    .venv/bin/python scripts/optvis_trial.py unit --layer _blocks.5._act1 --channels 0,1,2,3

Each run writes `<out>/<mode>_<tag>.png` (the images, each captioned with its objective and the softmax probability
of its class on the untransformed image) and `<out>/<mode>_<tag>_steps.png` (snapshots, one row per image), and
saves the final images as `<out>/<mode>_<tag>.npy`, and prints the seconds. `--threads` defaults to 1: on the
shared 2-core build machine two intra-op threads made every step 10–15× slower while other jobs ran.

Without options each mode uses the tuned defaults of `generator/optvis/render.py` (`CLASS_DEFAULTS`, ...); that
module's docstring records what each setting looked like and the timings. The runs behind it:

    class --decay-power 1.0 --lr 0.05          Lucid's default: objects visible, busy and noisy
    class --decay-power 1.5 --lr 0.05          big clear objects, saturated colours
    class (defaults), also --steps 512         chosen (512: more detail and more dotted texture)
    class --strength 2 | --l2 5e-4 | --tv 1e-3 | --blur 0.5     rejected (see render.py)
    unit --layer _blocks.5._act1 / _blocks.10._act1 --channels 0,1,2,3,4,5
    plain ; yosinski (defaults) ; yosinski --decay 0 --blur-sigma 0.5 --norm-pct 50 --lr 0.05
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generator.builtin.efficientnet_lite import MEAN, STD, efficientnet_lite0  # noqa: E402
from generator.models import imagenet_labels  # noqa: E402
from generator.optvis.render import CLASS_DEFAULTS, SIMONYAN_DEFAULTS, UNIT_DEFAULTS, YOSINSKI_DEFAULTS  # noqa: E402
from generator.optvis import (  # noqa: E402
    Regularizers,
    batched,
    channel,
    class_logit,
    compose,
    fft_image,
    gaussian_blur,
    jitter,
    l2_penalty,
    pad,
    pixel_image,
    random_rotate,
    random_scale,
    render,
    standard_transforms,
    total_variation,
)

DEFAULT_CLASSES = "281,967,1,985,980,323"  # tabby, espresso, goldfish, daisy, volcano, monarch


def to_uint8(images: np.ndarray) -> list[np.ndarray]:
    return [(np.clip(im.transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8) for im in images]


def grid(pictures: list[np.ndarray], captions: list[str], cols: int, scale: int = 1) -> Image.Image:
    h, w = pictures[0].shape[:2]
    h, w = h * scale, w * scale
    rows = (len(pictures) + cols - 1) // cols
    cap = 28
    canvas = Image.new("RGB", (cols * (w + 4) + 4, rows * (h + cap + 4) + 4), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (pic, text) in enumerate(zip(pictures, captions)):
        r, c = divmod(i, cols)
        x0, y0 = 4 + c * (w + 4), 4 + r * (h + cap + 4)
        im = Image.fromarray(pic.squeeze() if pic.shape[-1] == 1 else pic)
        if scale != 1:
            im = im.resize((w, h), Image.NEAREST)
        canvas.paste(im, (x0, y0))
        for j, line in enumerate(_wrap(text, max(8, w // 6))[:2]):
            draw.text((x0, y0 + h + 2 + 12 * j), line, fill="black")
    return canvas


def _wrap(text: str, n: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if len(line) + len(word) + 1 > n and line:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + [line]


@torch.no_grad()
def probabilities(model, images: np.ndarray) -> np.ndarray:
    x = (torch.from_numpy(images) - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    return torch.softmax(model(x), 1).numpy()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["class", "plain", "yosinski", "unit"])
    ap.add_argument("--classes", default=DEFAULT_CLASSES)
    ap.add_argument("--layer", default="_blocks.5._act1")
    ap.add_argument("--channels", default="0,1,2,3")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--decay-power", type=float, default=None, help="FFT 1/f exponent (default 1.5)")
    ap.add_argument("--strength", type=float, default=1.0, help="transform strength (0 = none)")
    ap.add_argument("--blur", type=float, default=0.0, help="append a Gaussian blur of this sigma to the transforms")
    ap.add_argument("--l2", type=float, default=None, help="L2 penalty weight on the normalized image")
    ap.add_argument("--tv", type=float, default=0.0, help="total-variation weight")
    ap.add_argument("--decay", type=float, default=YOSINSKI_DEFAULTS["regularizers"].decay,
                    help="yosinski: L2 decay per step")
    ap.add_argument("--blur-every", type=int, default=4, help="yosinski: blur every n steps")
    ap.add_argument("--blur-sigma", type=float, default=1.0, help="yosinski: blur width")
    ap.add_argument("--norm-pct", type=float, default=20, help="yosinski: clip pixels of small norm (percentile)")
    ap.add_argument("--contrib-pct", type=float, default=0, help="yosinski: clip pixels of small contribution")
    ap.add_argument("--sd", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="1 is far faster than 2 while others share the 2 cores")
    ap.add_argument("--scale", type=int, default=1, help="enlarge the pictures in the grid")
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", default="/tmp/optvis")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = efficientnet_lite0(pretrained=True).eval()
    labels = imagenet_labels()
    classes = [int(c) for c in args.classes.split(",")]

    mode = args.mode
    defaults = {"class": CLASS_DEFAULTS, "plain": SIMONYAN_DEFAULTS, "yosinski": YOSINSKI_DEFAULTS,
                "unit": UNIT_DEFAULTS}[mode]
    size = args.size or defaults["size"]
    steps = args.steps or defaults["render"]["steps"]
    regularizers = None
    dp = args.decay_power if args.decay_power is not None else CLASS_DEFAULTS["image"]["decay_power"]
    if mode == "class":
        objective = class_logit(classes, [labels[c] for c in classes])
        if args.l2:
            objective = objective + l2_penalty(args.l2)
        if args.tv:
            objective = objective + total_variation(args.tv)
        param = fft_image(len(classes), size, seed=args.seed, decay_power=dp, sd=args.sd)
        transforms = standard_transforms(size, args.strength) if args.strength > 0 else None
        lr = args.lr or CLASS_DEFAULTS["render"]["lr"]
    elif mode == "plain":
        objective = class_logit(classes, [labels[c] for c in classes]) + l2_penalty(
            args.l2 if args.l2 is not None else SIMONYAN_DEFAULTS["l2"])
        param = pixel_image(len(classes), size, seed=args.seed, sd=args.sd)
        transforms = None
        lr = args.lr or SIMONYAN_DEFAULTS["render"]["lr"]
    elif mode == "yosinski":
        objective = class_logit(classes, [labels[c] for c in classes])
        if args.l2:
            objective = objective + l2_penalty(args.l2)
        param = pixel_image(len(classes), size, seed=args.seed, sd=args.sd)
        d = max(1, round(YOSINSKI_DEFAULTS["jitter"] * size / 160 * args.strength))
        transforms = compose([pad(d), jitter(d)]) if args.strength > 0 else None
        regularizers = Regularizers(decay=args.decay, blur_every=args.blur_every, blur_sigma=args.blur_sigma,
                                    norm_pct=args.norm_pct, contrib_pct=args.contrib_pct)
        lr = args.lr or YOSINSKI_DEFAULTS["render"]["lr"]
    else:
        chans = [int(c) for c in args.channels.split(",")]
        objective = channel(args.layer, chans)
        param = fft_image(len(chans), size, seed=args.seed, decay_power=dp, sd=args.sd)
        transforms = standard_transforms(size, args.strength) if args.strength > 0 else None
        lr = args.lr or UNIT_DEFAULTS["render"]["lr"]

    if args.blur > 0 and transforms is not None:
        transforms = compose([*transforms.transforms, gaussian_blur(args.blur)])
    snaps = sorted({0, steps // 16, steps // 4, steps})
    t0 = time.perf_counter()
    result = render(model, objective, param, mean=MEAN, std=STD, steps=steps, lr=lr, transforms=transforms,
                    snapshots=snaps, seed=args.seed, regularizers=regularizers)
    wall = time.perf_counter() - t0
    pics = to_uint8(result.images)
    captions = result.captions
    if mode == "unit":
        captions = [f"{args.layer} ch {c}" for c in chans]
    else:
        probs = probabilities(model, result.images)
        captions = [f"{labels[c]} p={probs[i, c]:.2f} top={labels[int(probs[i].argmax())][:14]}"
                    for i, c in enumerate(classes)]
    tag = f"_{args.tag}" if args.tag else ""
    path = out / f"{mode}{tag}.png"
    grid(pics, captions, cols=min(len(pics), 3), scale=args.scale).save(path)
    np.save(path.with_suffix(".npy"), result.images)
    strip_pics, strip_caps = [], []
    for i in range(len(pics)):
        for s in snaps:
            strip_pics.append(to_uint8(result.snapshots[s][i:i + 1])[0])
            strip_caps.append(f"step {s}")
    grid(strip_pics, strip_caps, cols=len(snaps)).save(out / f"{mode}{tag}_steps.png")
    print(f"{path}: {len(pics)} images {size}px, {steps} steps, {result.seconds:.1f} s render ({wall:.1f} s wall), "
          f"{result.seconds / steps:.3f} s/step; final loss {result.losses[-1].round(2).tolist()}")
    for cap in captions:
        print("  ", cap)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
