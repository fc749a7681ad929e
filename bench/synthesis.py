"""Synthesis speed, in one run on the same model: (a) our unit visualization against Lucent's `render_vis`, several
calls each (Lucent registers a forward hook on every module at every call and never removes them, lucent#45, so its
later calls run more hooks), and (b) our batched class visualization (N classes in one batch) against N
sequential single-class runs, (c) MaCo's class visualization against horama's, and (d) each speed lever of the
engine on its own (early exit, batch, stop rule, coarse to fine). Prints tables with the ratios; not a test.

    .venv/bin/python bench/synthesis.py [--size 128] [--steps 64] [--calls 3] [--classes 4] [--threads 1]
    .venv/bin/python bench/synthesis.py --only maco [--maco-class 281] [--images /tmp/maco]   # (c) alone

Model: the embedded EfficientNet-Lite0 (ImageNet weights, inputs normalized with mean = std = 0.5).

(a) One channel of `--layer` (ours `_blocks.5._act1`, in Lucent's naming `_blocks_5__act1`) per call, `--calls`
calls, each on a fresh `--size`-px image for `--steps` Adam steps at lr 0.02 (UNIT_DEFAULTS), both sides with the
same image and the same work per step:
- ours: `generator.optvis` as `unit_visualization` uses it: `fft_image(decay_power=1.5)` (decorrelated colours,
  sigmoid), `standard_transforms(size)` (pad 7, jitter 5, scale 0.9–1.1, rotate ±10°, jitter 2 at 128 px), the
  channel-mean objective, hooks only on the objective's layer, removed after the call;
- Lucent 0.1.8: `render_vis` with its own `param.fft_image(decay_power=1.5)` + `to_valid_rgb(decorrelate=True)`, its
  own pad / jitter / random_scale / random_rotate / jitter with the same amounts (jitter at least 2: Lucent asserts
  d > 1; its jitter is a bilinear kornia translate, ours a roll), normalization as a transform
  (`preprocess=False`: Lucent's own assumes torchvision's ImageNet statistics) and `fixed_image_size` = the padded
  size, so the network sees inputs of the same size as ours (Lucent's random_scale changes the size, and without it
  Lucent upsamples everything below 224 px to 224), `objectives.channel`, no progress bar, no display.
Each call is timed on its own; the table shows every call, the forward hooks left on the model after it, and the
channel's mean activation on the final (untransformed) image — both sides climb to similar values.
Also timed: ours with all `--calls` channels in one batch (what `unit_visualization` does for a layer).

(b) `--classes` ImageNet classes by class visualization's Fourier method (CLASS_DEFAULTS: decay power 1.5, lr 0.01,
`standard_transforms(size)`) for `--steps` steps: one batch of N images against N runs of one image each, with the
same seeds (the batch follows the same trajectories, up to float rounding: the final probabilities and the largest
image difference are printed).

(c) Class visualization by MaCo (Fel et al. 2023, "Unlocking Feature Visualization for Deeper Networks with
MAgnitude Constrained Optimization": the Fourier phase optimized, the magnitude fixed) beside its reference
implementation, horama 0.3.0, on the same model and class (`--maco-class`, tabby 281), the same image size and the
same number of steps; one image each, timed after a 2-step warm-up, and the class's softmax probability on the final
untransformed image (and, as horama's model only ever sees crops of 25-30% of the image's side, on its central
27.5% resized to the full size: `p(centre)`):
- ours: `maco_image(1, size)` in our render loop: Adam at lr `MACO_LR` on the phase, `standard_transforms(size)`,
  the class logit; the model sees one (size + 2·pad)-px image per step.
- horama: `horama.maco` with its own loop and defaults (NAdam at lr 1.0, 6 crops per step covering 25-30% of the
  image's side each, resampled to `model_input_size` with roi_align + bicubic, Gaussian and uniform noise 0.05,
  phase re-standardized every step), except: `image_size` = `--size` (its default, 1280, is for GPUs),
  `model_input_size` = `--size` (what our side shows the model; its default, 224, is 1280 px crops' scale),
  `values_range` = (−1, 1), which is [0, 1] pixels in this model's normalized units (its default, (−2.5, 2.5), is
  torchvision's ImageNet normalization), and the magnitude spectrum: horama downloads an ImageNet average
  (`imagenet_decorrelated.npy`), which cannot be reached offline, so it gets ours (`MacoImage.magnitude`,
  `--maco-magnitude`: by default 1/f^1.4, or `photos`, the mean of six bundled colour photographs; DC 0) through its
  own file: written as `spectrum_decorrelated.npy` in a temporary working folder, where its `init_maco_buffer` looks
  before downloading (its bilinear resize to the same size is the identity; its standardizations make the scale
  irrelevant). Its transparency map is computed but not used. Its random draws come from torch's global generator,
  seeded here; its progress bar is switched off. `--images DIR` writes both final images as PNGs.

Lucent's installation: `pip install torch-lucent==0.1.8` brings kornia 0.4.1 (its pin `kornia<=0.4.1`), which
installs and runs on torch 2.14 (pure Python; only `kornia.warp_affine`, `get_rotation_matrix2d` and `translate`
are used); no shim is needed. Lucent picks its device itself (CUDA whenever available) and draws its transforms
from NumPy's global generator, which is seeded here.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from generator import optvis
from generator.builtin import efficientnet_lite as lite
from generator.hooks import record_outputs
from generator.optvis.render import CLASS_DEFAULTS, UNIT_DEFAULTS
from timing import timed  # bench/timing.py (the script's folder is on sys.path)

CLASSES = [281, 967, 1, 985, 980, 323, 948, 417]  # tabby, espresso, goldfish, daisy, volcano, monarch, apple, balloon
# Adam's step on the phase (radians) in our loop, for section (c): on this model and class at 128 px and 64 steps
# lr 0.05, 0.1 and 0.2 all reached p ≈ 0.97-0.99 (with the photos' spectrum); 0.1 looked best at 256 steps.
MACO_LR = 0.1
HORAMA_CROP = 0.275  # the side of horama's crops as a fraction of the image's: 0.25-0.30 (its box_size, as it uses it)


def lucent_name(layer: str) -> str:
    """Lucent's hook key of a module: the path's parts joined by '_' (`_blocks.5._act1` → `_blocks_5__act1`)."""
    return "_".join(layer.split("."))


def forward_hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


@torch.no_grad()
def channel_mean(model, layer: str, images: torch.Tensor, channels: list[int]) -> np.ndarray:
    """Each image's own channel, spatially averaged, on the untransformed image (as unit_visualization reports)."""
    x = (images.float() - 0.5) / 0.5
    with record_outputs(model, [layer]) as outs:
        model(x)
    maps = outs[layer].float().mean((2, 3))
    return maps[torch.arange(len(channels)), torch.tensor(channels)].cpu().numpy()


@torch.no_grad()
def class_probability(model, images: torch.Tensor, classes: list[int]) -> np.ndarray:
    p = model((images.float() - 0.5) / 0.5).softmax(1)
    return p[torch.arange(len(classes)), torch.tensor(classes)].cpu().numpy()


def ours_units(model, layer, channels, size, steps, seed, device):
    param = optvis.fft_image(len(channels), size, seed=seed, decay_power=UNIT_DEFAULTS["image"]["decay_power"])
    result = optvis.render(model, optvis.channel(layer, channels), param, mean=lite.MEAN, std=lite.STD, steps=steps,
                           lr=UNIT_DEFAULTS["render"]["lr"], seed=seed, device=device,
                           transforms=optvis.standard_transforms(size))
    return torch.from_numpy(result.images).to(device)


def lucent_unit(model, layer, channel, size, steps, seed):
    from lucent.optvis import objectives, param, render, transform

    np.random.seed(seed)  # Lucent's transforms draw from NumPy's global generator, its init from torch's
    torch.manual_seed(seed)
    ours = optvis.standard_transforms(size).transforms  # pad, jitter, scale, rotate, jitter: the same amounts
    pad_w = ours[0].width
    jit1, jit2 = (max(2, t.d) for t in (ours[1], ours[4]))  # Lucent's jitter(d) asserts d > 1 (and shifts 0..d−1)

    def param_f():
        params, image_f = param.fft_image((1, 3, size, size), sd=0.01,
                                          decay_power=UNIT_DEFAULTS["image"]["decay_power"])
        return params, param.to_valid_rgb(image_f, decorrelate=True)

    transforms = [
        transform.pad(pad_w, mode="constant", constant_value=0.5),
        transform.jitter(jit1),
        transform.random_scale([1 + (i - 5) / 50.0 for i in range(11)]),
        transform.random_rotate(list(range(-10, 11)) + 5 * [0]),
        transform.jitter(jit2),
        lambda x: (x - 0.5) / 0.5,  # the model's normalization (mean = std = 0.5)
    ]
    images = render.render_vis(model, objectives.channel(lucent_name(layer), channel), param_f,
                               optimizer=lambda p: torch.optim.Adam(p, lr=UNIT_DEFAULTS["render"]["lr"]),
                               transforms=transforms, thresholds=(steps,), preprocess=False, progress=False,
                               show_image=False, fixed_image_size=size + 2 * pad_w)
    return torch.from_numpy(images[-1]).permute(0, 3, 1, 2)


def units(models, args, device) -> list[tuple]:
    """`models`: (ours, Lucent's, a spare for warming Lucent up): the same weights, so Lucent's leaked hooks never
    slow our calls down."""
    mine, theirs, spare = models
    layer = args.layer
    with torch.no_grad(), record_outputs(mine, [layer]) as outs:
        mine(torch.zeros(1, 3, args.size, args.size, device=device))
    count = outs[layer].shape[1]
    channels = [int(c) for c in np.linspace(0, count - 1, args.calls).round()]
    # One short call each first, so one-time costs (kornia's TorchScript, allocator growth) stay out of call 1.
    ours_units(mine, layer, [0], args.size, 2, args.seed, device)
    lucent_unit(spare, layer, 0, args.size, 2, args.seed)
    print(f"(a) unit visualization: {layer} (Lucent: {lucent_name(layer)}), channels {channels}, one per call, "
          f"{args.size} px, {args.steps} steps; 'hooks': forward hooks on the model after the call, "
          f"'act': the channel's mean on the final image")
    print(f"{'call':>6}{'channel':>9}{'ours s':>9}{'hooks':>7}{'act':>8}{'Lucent s':>10}{'hooks':>7}{'act':>8}"
          f"{'Lucent/ours':>13}")
    ours_s, lucent_s, rows = [], [], []
    for i, c in enumerate(channels):
        t_ours, image = timed(lambda: ours_units(mine, layer, [c], args.size, args.steps, args.seed + i, device))
        a_ours = channel_mean(mine, layer, image, [c])[0]
        t_luc, image = timed(lambda: lucent_unit(theirs, layer, c, args.size, args.steps, args.seed + i))
        a_luc = channel_mean(mine, layer, image.to(device), [c])[0]
        ours_s.append(t_ours)
        lucent_s.append(t_luc)
        print(f"{i + 1:>6}{c:>9}{t_ours:>9.2f}{forward_hooks(mine):>7}{a_ours:>8.2f}{t_luc:>10.2f}"
              f"{forward_hooks(theirs):>7}{a_luc:>8.2f}{t_luc / t_ours:>12.2f}×")
    # The leak's cost per step, directly: one forward + backward at the padded size, clean model vs Lucent's.
    side = args.size + 2 * optvis.standard_transforms(args.size).transforms[0].width
    x = torch.zeros(1, 3, side, side, device=device, requires_grad=True)
    step = lambda m: torch.autograd.grad(m(x).sum(), x)  # noqa: E731
    t_clean = t_leaky = float("inf")
    for _ in range(7):  # alternating, so a change of machine load hits both alike
        t_clean = min(t_clean, timed(lambda: step(mine))[0])
        t_leaky = min(t_leaky, timed(lambda: step(theirs))[0])
    print(f"Lucent's last call took {lucent_s[-1] / lucent_s[0]:.2f}× its first "
          f"(ours: {ours_s[-1] / ours_s[0]:.2f}×). "
          f"One forward + backward on the model Lucent used: {t_leaky * 1e3:.1f} ms with its "
          f"{forward_hooks(theirs)} leaked hooks, {t_clean * 1e3:.1f} ms without\n")
    rows.append(("unit viz", f"Lucent render_vis, call 1 of {args.calls}", ours_s[0], lucent_s[0]))
    rows.append(("unit viz", f"Lucent render_vis, call {args.calls} of {args.calls}", ours_s[-1], lucent_s[-1]))
    rows.append(("unit viz", f"Lucent, all {args.calls} calls", sum(ours_s), sum(lucent_s)))
    t_batch, _ = timed(lambda: ours_units(mine, layer, channels, args.size, args.steps, args.seed, device))
    rows.append(("unit viz", f"Lucent, {args.calls} calls (ours: 1 batch)", t_batch, sum(lucent_s)))
    return rows


def classes(model, args, device) -> list[tuple]:
    chosen = CLASSES[:args.classes]
    size = args.size
    print(f"(b) class visualization: classes {chosen}, {size} px, {args.steps} steps, Fourier method")

    def run(cls, seeds):
        param = optvis.fft_image(len(cls), size, seed=seeds, decay_power=CLASS_DEFAULTS["image"]["decay_power"])
        result = optvis.render(model, optvis.class_logit(cls), param, mean=lite.MEAN, std=lite.STD,
                               steps=args.steps, lr=CLASS_DEFAULTS["render"]["lr"], seed=args.seed, device=device,
                               transforms=optvis.standard_transforms(size))
        return torch.from_numpy(result.images).to(device)

    seeds = [args.seed + i for i in range(len(chosen))]
    t_batch, batch_images = timed(lambda: run(chosen, seeds))
    t_seq, seq_images = timed(lambda: torch.cat([run([c], [s]) for c, s in zip(chosen, seeds)]))
    p_batch = class_probability(model, batch_images, chosen)
    p_seq = class_probability(model, seq_images, chosen)
    print(f"  one batch of {len(chosen)}: {t_batch:.2f} s, p = {np.array2string(p_batch, precision=3)}; "
          f"{len(chosen)} single runs: {t_seq:.2f} s, p = {np.array2string(p_seq, precision=3)}; "
          f"max |Δimage| {float((batch_images - seq_images).abs().max()):.1e}\n")
    return [("class viz", f"{len(chosen)} sequential single-class runs", t_batch, t_seq)]


def ours_maco(model, cls, size, steps, seed, device, magnitude="power"):
    param = optvis.maco_image(1, size, seed=seed, magnitude=magnitude)
    result = optvis.render(model, optvis.class_logit([cls]), param, mean=lite.MEAN, std=lite.STD, steps=steps,
                           lr=MACO_LR, seed=seed, device=device, transforms=optvis.standard_transforms(size))
    return torch.from_numpy(result.images).to(device)


def horama_maco(model, cls, size, steps, seed, device, magnitude="power"):
    from horama import maco_fv

    maco_fv.tqdm = functools.partial(tqdm, disable=True)  # its progress bar, off
    spectrum = optvis.maco_image(1, size, magnitude=magnitude).magnitude[0].numpy()  # ours: (3, size, size // 2 + 1)
    torch.manual_seed(seed)  # horama's phase, crops and noise come from torch's global generator
    low, high = (0 - lite.MEAN[0]) / lite.STD[0], (1 - lite.MEAN[0]) / lite.STD[0]
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder):
        np.save(maco_fv.MACO_SPECTRUM_FILENAME, spectrum)  # found there: nothing is downloaded
        image, _ = maco_fv.maco(lambda x: model(x)[:, cls].mean(), total_steps=steps, image_size=size,
                                model_input_size=size, values_range=(low, high), device=str(device))
    return ((image.detach() - low) / (high - low))[None].to(device)


def centre_crop(images: torch.Tensor, fraction: float) -> torch.Tensor:
    """The central `fraction` of each side, resized back to the full size: the scale horama's crops show the model."""
    size = images.shape[-1]
    side = round(size * fraction)
    start = (size - side) // 2
    crop = images[..., start:start + side, start:start + side]
    return torch.nn.functional.interpolate(crop, size=(size, size), mode="bilinear", antialias=True,
                                           align_corners=False)


def save_png(image: torch.Tensor, path: Path) -> None:
    from PIL import Image

    pixels = (image[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    Image.fromarray(pixels).save(path)


def maco(model, args, device) -> list[tuple]:
    cls, size, steps, kind = args.maco_class, args.size, args.steps, args.maco_magnitude
    print(f"(c) class visualization by MaCo: class {cls}, {size} px, {steps} steps, one image each; ours: our loop "
          f"(Adam lr {MACO_LR}, 1 image of {size} px + padding per step), horama 0.3.0: its loop (NAdam lr 1.0, "
          f"6 crops of {size} px per step), the same magnitude spectrum ({kind})")
    ours_maco(model, cls, size, 2, args.seed, device, kind)  # warm-up: the spectrum at this size, allocations
    horama_maco(model, cls, size, 2, args.seed, device, kind)
    t_ours, ours_image = timed(lambda: ours_maco(model, cls, size, steps, args.seed, device, kind))
    t_hor, hor_image = timed(lambda: horama_maco(model, cls, size, steps, args.seed, device, kind))
    p_ours = class_probability(model, ours_image, [cls])[0]
    p_hor = class_probability(model, hor_image, [cls])[0]
    print(f"  p(class): on the whole final image; p(centre): on its central {HORAMA_CROP:.1%} × {HORAMA_CROP:.1%}, "
          f"resized to {size} px (the scale of horama's crops)")
    print(f"{'':<12}{'s':>8}{'ms/step':>9}{'p(class)':>10}{'p(centre)':>11}{'pixel std':>11}")
    for name, t, p, image in (("ours", t_ours, p_ours, ours_image), ("horama", t_hor, p_hor, hor_image)):
        centre = class_probability(model, centre_crop(image, HORAMA_CROP), [cls])[0]
        print(f"{name:<12}{t:>8.2f}{t / steps * 1e3:>9.1f}{p:>10.3f}{centre:>11.3f}{float(image.std()):>11.3f}")
    print(f"{'horama/ours':<12}{t_hor / t_ours:>7.2f}×{t_hor / t_ours:>8.2f}×{p_hor / max(p_ours, 1e-12):>9.2f}×\n")
    if args.images:
        folder = Path(args.images)
        folder.mkdir(parents=True, exist_ok=True)
        save_png(ours_image, folder / f"ours_maco_{cls}_{size}px_{steps}steps.png")
        save_png(hor_image, folder / f"horama_maco_{cls}_{size}px_{steps}steps.png")
        print(f"  images written to {folder}\n")
    return [("MaCo", "horama maco (its loop: 6 crops per step)", t_ours, t_hor)]


def lever_run(model, layer, channels, size, steps, seed, device, **options):
    param = optvis.fft_image(len(channels), size, seed=seed, decay_power=UNIT_DEFAULTS["image"]["decay_power"])
    result = optvis.render(model, optvis.channel(layer, channels), param, mean=lite.MEAN, std=lite.STD, steps=steps,
                           lr=UNIT_DEFAULTS["render"]["lr"], seed=seed, device=device,
                           transforms=optvis.standard_transforms(size), read="pre", **options)
    return result, torch.from_numpy(result.images).to(device)


def levers(model, args, device) -> list[tuple]:
    """(d) Each speed lever of the engine on its own, on unit visualization of `--layer` (8 channels, `--steps`):
    the early exit (against whole forwards, and the recorded layer equal to a whole forward's), the batch (8
    channels at once against 8 runs of one), the stop rule (steps used and the channel's value against every step)
    and coarse to fine (half the steps at half size, then full size)."""
    from generator.optvis.forward import LayerForward

    channels = list(range(0, 8 * 7, 7))
    size, steps, seed = args.size, args.steps, args.seed
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed)).to(device)
    with torch.no_grad(), LayerForward(model, [args.layer]) as early, record_outputs(model, [args.layer]) as full:
        early(x)
        stopped = early(x)[0][args.layer]
        model(x)
        gap = float((stopped - full[args.layer]).abs().max())
    print(f"(d) early-exit forward vs whole forward at {args.layer}: largest difference {gap:.1e}")

    def timed_lever(n: int = steps, **options):
        seconds, (result, images) = timed(lambda: lever_run(model, args.layer, channels, size, n, seed, device,
                                                           **options))
        value = channel_mean(model, args.layer, images, channels).mean()
        return seconds, result.steps, value

    rows, table = [], []
    base_s, base_steps, base_v = timed_lever()
    table.append(("engine (early exit, batch of 8)", base_s, base_steps, base_v))
    whole_s, _, whole_v = timed_lever(early_exit=False)
    table.append(("whole forwards", whole_s, steps, whole_v))
    rows.append(("early exit", f"{args.layer}, whole forwards", base_s, whole_s))
    singles, _ = timed(lambda: [lever_run(model, args.layer, [c], size, steps, seed, device) for c in channels])
    table.append(("8 runs of one channel", singles, steps, float("nan")))
    rows.append(("batch", "8 channels: 8 runs of one", base_s, singles))
    stop_s, stop_steps, stop_v = timed_lever(stop=optvis.StopRule())
    table.append(("stop rule", stop_s, stop_steps, stop_v))
    rows.append(("stop rule", f"every one of {steps} steps", stop_s, base_s))
    c2f_s, c2f_steps, c2f_v = timed_lever(steps // 2, scales=(0.5, 1.0), coarse_steps=steps // 2)
    table.append(("coarse to fine (½ size, then full)", c2f_s, c2f_steps, c2f_v))
    rows.append(("coarse→fine", f"{steps} steps at full size", c2f_s, base_s))
    print(f"{'(d) unit visualization, 8 channels':<40}{'s':>8}{'steps':>7}{'value':>9}")
    for name, seconds, used, value in table:
        print(f"{name:<40}{seconds:>8.2f}{used:>7}{value:>9.2f}")
    print()
    return rows


def main() -> None:
    # kornia 0.4.1 (Lucent's) scripts functions with torch.jit, which torch 2.14 deprecates: one warning per function.
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128, help="image side (px)")
    ap.add_argument("--steps", type=int, default=64, help="optimization steps of every run")
    ap.add_argument("--calls", type=int, default=3, help="unit visualization calls on each side")
    ap.add_argument("--classes", type=int, default=4, help=f"classes batched (at most {len(CLASSES)})")
    ap.add_argument("--layer", default="_blocks.5._act1")
    ap.add_argument("--only", default="units,classes,maco,levers",
                    help="sections to run: units, classes, maco, levers")
    ap.add_argument("--maco-class", type=int, default=CLASSES[0], help="(c): the ImageNet class (281: tabby)")
    ap.add_argument("--maco-magnitude", default="power", choices=["power", "photos"],
                    help="(c): the fixed magnitude spectrum, both sides")
    ap.add_argument("--images", default="", help="(c): write the final images as PNGs in this folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not 1 <= args.classes <= len(CLASSES):
        ap.error(f"--classes must be 1..{len(CLASSES)}")
    device = torch.device(args.device)
    models = []
    for _ in range(3):  # ours, Lucent's, a spare (see `units`)
        model = lite.efficientnet_lite0(pretrained=True).eval().to(device)
        for p in model.parameters():
            p.requires_grad_(False)
        with torch.no_grad():  # warm up
            model(torch.zeros(1, 3, args.size, args.size, device=device))
        models.append(model)
    model = models[0]
    print(f"EfficientNet-Lite0, device {device}, {torch.get_num_threads()} threads\n")
    rows = []
    chosen = {s.strip() for s in args.only.split(",")}
    if "units" in chosen:
        rows += units(models, args, device)
    if "classes" in chosen:
        rows += classes(model, args, device)
    if "maco" in chosen:
        rows += maco(model, args, device)
    if "levers" in chosen:
        rows += levers(model, args, device)
    print(f"{'what':<11}{'vs':<44}{'ours s':>9}{'peer s':>9}{'peer/ours':>11}")
    for what, vs, ours_s, peer_s in rows:
        print(f"{what:<11}{vs:<44}{ours_s:>9.2f}{peer_s:>9.2f}{peer_s / ours_s:>10.2f}×")


if __name__ == "__main__":
    main()
