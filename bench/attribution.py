"""Attribution speed, ours vs Captum, in one run on the same inputs: occlusion (Captum with its default
perturbations_per_eval=1 and with a tuned value), integrated gradients (same steps, same points, same baseline) and
saliency; and our incremental occlusion against one full forward per window (`occlusion_maps(full=True)`, what
occlusion did before it). Also checks that both sides computed the same maps. Prints a table with the ratios; not a
test.

    .venv/bin/python bench/attribution.py [--window 56] [--stride 28] [--tuned 16] [--steps 16] [--repeat 2]

Model: the embedded EfficientNet-Lite0 (ImageNet weights, inputs normalized with mean = std = 0.5, 224 × 224), on
four sample photos (skimage chelsea, coffee, rocket, astronaut), each explained for its top-1 class. Occlusion fills
with black (zero intensity) on both sides and measures the drop of the softmax probability (Captum gets a forward
that returns probabilities). Each timing is the best of `--repeat` runs, ours and Captum's interleaved (Captum's
default occlusion, the slowest, runs once). Defaults keep the whole run to a few minutes on 2 CPU cores;
`--window 32 --stride 16` (169 windows per image) is the full-size setting. The incremental-vs-full row measures the
drop of the log-odds (occlusion's default score) on both sides, and prints which path ran and the share of a full
forward's work a window recomputes.
"""
from __future__ import annotations

import argparse

import torch
from captum.attr import IntegratedGradients as CaptumIG
from captum.attr import Occlusion as CaptumOcclusion
from captum.attr import Saliency as CaptumSaliency

from generator import images as imagelib
from generator.builtin import efficientnet_lite as lite
from generator.context import RunContext
from generator.models import LoadedModel, imagenet_labels
from generator.spec import InputSpec
from generator.techniques import registry
from generator.techniques.attribution.occlusion import fill_images, occlusion_maps, window_count
from timing import timed  # bench/timing.py (the script's folder is on sys.path)

PHOTOS = ["skimage:chelsea", "skimage:coffee", "skimage:rocket", "skimage:astronaut"]


def context(device: torch.device) -> RunContext:
    module = lite.efficientnet_lite0(pretrained=True).eval().to(device)
    for p in module.parameters():
        p.requires_grad_(False)
    spec = InputSpec(size=224, resize=256, mean=[0.5] * 3, std=[0.5] * 3, interpolation="bicubic")
    model = LoadedModel("efficientnet-lite0", module, spec, imagenet_labels(), None, "builtin", "bench", device)
    records = {}
    for entry in PHOTOS:
        im = imagelib.sample(entry)
        records[entry] = imagelib.ImageRecord(entry, "photos", entry, entry, im, imagelib.digest(im))
    return RunContext(model, records)


def pair(ours, theirs, repeat: int):
    """Both timed `repeat` times, alternating, so a change of machine load hits both alike."""
    t_ours, t_theirs = float("inf"), float("inf")
    for _ in range(repeat):
        t, a = timed(ours)
        t_ours = min(t_ours, t)
        t, b = timed(theirs)
        t_theirs = min(t_theirs, t)
    return t_ours, a, t_theirs, b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window", type=int, default=56)
    ap.add_argument("--stride", type=int, default=28)
    ap.add_argument("--repeat", type=int, default=2, help="runs per timing (the best counts)")
    ap.add_argument("--tuned", type=int, default=16, help="Captum's tuned perturbations_per_eval")
    ap.add_argument("--steps", type=int, default=16, help="integrated-gradients path points")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    ctx = context(device)
    model = ctx.model
    x = ctx.batch(list(ctx.images))
    with torch.no_grad():
        targets = model.logits(x).argmax(1)  # warms the model up, too
    n = len(x)
    windows = window_count(224, 224, args.window, args.stride)
    print(f"EfficientNet-Lite0 on {n} photos at 224 px, device {device}, {torch.get_num_threads()} threads; "
          f"top-1: {', '.join(model.label(int(t)) for t in targets)}")
    print(f"occlusion: {args.window} px window, stride {args.stride}: {windows} windows per image, "
          f"{n * windows} perturbed images in all\n")
    rows = []

    # Occlusion ------------------------------------------------------------------------------------------------
    occ = registry.get("occlusion")
    params = occ.Params(window=args.window, stride=args.stride, fill="zero", score="probability", faithfulness=False,
                        sanity=False)
    fill = fill_images(ctx, x, params).contiguous()
    probabilities = lambda t: model.logits(t).softmax(1)  # noqa: E731
    c = x.shape[1]
    captum_occ = CaptumOcclusion(probabilities)

    def captum_occlusion(per_eval: int):
        with torch.no_grad():
            return captum_occ.attribute(x, sliding_window_shapes=(c, args.window, args.window),
                                        strides=(c, args.stride, args.stride), baselines=fill, target=targets,
                                        perturbations_per_eval=per_eval)[:, 0]

    t_default, ref = timed(lambda: captum_occlusion(1))
    t_ours, ours, t_tuned, ref_tuned = pair(lambda: occ.attribute(ctx, x, targets, params),
                                            lambda: captum_occlusion(args.tuned), args.repeat)
    diff = max(float((ours - ref).abs().max()), float((ours - ref_tuned).abs().max()))
    rows.append(("occlusion", "Captum, perturbations_per_eval=1", t_ours, t_default, diff))
    rows.append(("occlusion", f"Captum, perturbations_per_eval={args.tuned}", t_ours, t_tuned, diff))

    # Occlusion: incremental (the default) vs one full forward per window -----------------------------------------
    sweep: dict = {}
    t_ours, ours, t_ref, ref = pair(
        lambda: occlusion_maps(model, x, targets, fill, args.window, args.stride, report=sweep),
        lambda: occlusion_maps(model, x, targets, fill, args.window, args.stride, full=True), args.repeat)
    rows.append(("occlusion incremental", "full forwards (today's)", t_ours, t_ref, float((ours - ref).abs().max())))

    # Integrated gradients (Gauss-Legendre: the same points and weights on both sides) ---------------------------
    ig = registry.get("integrated_gradients")
    ig_params = ig.Params(steps=args.steps, method="gausslegendre", baseline="black", faithfulness=False,
                          sanity=False)
    from generator.techniques.attribution.integrated_gradients import make_baseline

    baseline = make_baseline(model, x, "black")
    t_ours, ours, t_ref, ref = pair(lambda: ig.attribute(ctx, x, targets, ig_params),
                                    lambda: CaptumIG(model.logits).attribute(
                                        x, baselines=baseline, target=targets, n_steps=args.steps,
                                        method="gausslegendre").sum(1), args.repeat)
    rows.append(("integrated gradients", f"Captum, n_steps={args.steps}, one batch", t_ours, t_ref,
                 float((ours - ref).abs().max() / ref.abs().max())))

    # Saliency ---------------------------------------------------------------------------------------------------
    sal = registry.get("saliency")
    sal_params = sal.Params(faithfulness=False, sanity=False)
    t_ours, ours, t_ref, ref = pair(lambda: sal.attribute(ctx, x, targets, sal_params),
                                    lambda: CaptumSaliency(model.logits).attribute(
                                        x.clone().requires_grad_(True), target=targets, abs=True).amax(1),
                                    max(args.repeat, 3))
    rows.append(("saliency", "Captum Saliency (abs), max over channels", t_ours, t_ref,
                 float((ours - ref).abs().max())))

    print(f"{'method':<22}{'vs':<42}{'ours s':>9}{'theirs s':>10}{'theirs/ours':>13}{'max |diff|':>12}")
    for method, what, ours_s, ref_s, d in rows:
        print(f"{method:<22}{what:<42}{ours_s:>9.2f}{ref_s:>10.2f}{ref_s / ours_s:>12.2f}×{d:>12.2g}")
    print("\nmax |diff|: largest difference between the two maps (integrated gradients: relative to the largest "
          "attribution).")
    print(f"incremental occlusion: {sweep}")


if __name__ == "__main__":
    main()
