"""Synthesis by matching, ours against straightforward implementations, in one run; prints the ratios. Not a test.

    .venv/bin/python bench/matching.py [SECTION ...] [options]        (sections: nonparametric, style; default: all)

nonparametric — Efros & Leung texture synthesis: our synthesizer (generator/techniques/synthesis/efros_leung.py: wavefronts of
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

style — neural style transfer: ours (generator/optvis/matching.py) against the PyTorch tutorial's algorithm on the
same network (torchvision's VGG19 with seeded random weights, up to conv3_1), images and number of L-BFGS
evaluations; seconds per evaluation (see `style`).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image

from generator.techniques.synthesis import efros_leung as el
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


# Neural style transfer ------------------------------------------------------------------------------------------


def style_args(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("style")
    g.add_argument("--style-size", type=int, default=256, help="side of the square content and style images")
    g.add_argument("--style-steps", type=int, default=60,
                   help="L-BFGS evaluations (forward + backward) for each (the tutorial's default is 300)")
    g.add_argument("--style-repeat", type=int, default=2, help="runs of each (alternating); the best time counts")
    g.add_argument("--content", default="chelsea", help="skimage sample")
    g.add_argument("--style", default="hubble_deep_field", help="skimage sample")


def square_sample(name: str, side: int) -> torch.Tensor:
    """(1, 3, side, side) in [0, 1]: the sample's centre square, resized."""
    im = imagelib.sample(f"skimage:{name}")
    s = min(im.size)
    left, top = (im.width - s) // 2, (im.height - s) // 2
    im = im.crop((left, top, left + s, top + s)).resize((side, side), Image.LANCZOS)
    return (torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)[None].float() / 255).contiguous()


def tutorial_style_transfer(cnn, mean, std, content, style, steps: int, style_weight=1e6, content_weight=1.0):
    """The PyTorch tutorial's algorithm (pytorch.org/tutorials/advanced/neural_style_tutorial.html), as written there:
    a new nn.Sequential of VGG's feature layers up to the last loss, a normalization module first, ReLUs replaced by
    out-of-place ones, a ContentLoss module after conv_4 and StyleLoss modules after conv_1..conv_5 (Gram matrix
    F Fᵀ / (a·b·c·d), MSE), the content image as the start, torch.optim.LBFGS([input_img]) with its defaults and
    the pixels clamped to [0, 1] in place inside the closure, until `steps` closure evaluations have run."""
    from torch import nn
    import torch.nn.functional as F

    def gram_matrix(x):
        a, b, c, d = x.size()
        features = x.view(a * b, c * d)
        return torch.mm(features, features.t()).div(a * b * c * d)

    class ContentLoss(nn.Module):
        def __init__(self, target):
            super().__init__()
            self.target = target.detach()

        def forward(self, x):
            self.loss = F.mse_loss(x, self.target)
            return x

    class StyleLoss(nn.Module):
        def __init__(self, target_feature):
            super().__init__()
            self.target = gram_matrix(target_feature).detach()

        def forward(self, x):
            self.loss = F.mse_loss(gram_matrix(x), self.target)
            return x

    class Normalization(nn.Module):
        def __init__(self, mean, std):
            super().__init__()
            self.mean = torch.tensor(mean).view(-1, 1, 1).to(content.device)
            self.std = torch.tensor(std).view(-1, 1, 1).to(content.device)

        def forward(self, img):
            return (img - self.mean) / self.std

    content_layers, style_layers = ["conv_4"], ["conv_1", "conv_2", "conv_3", "conv_4", "conv_5"]
    model = nn.Sequential(Normalization(mean, std))
    content_losses, style_losses = [], []
    i = 0
    for layer in cnn.children():
        if isinstance(layer, nn.Conv2d):
            i += 1
            name = f"conv_{i}"
        elif isinstance(layer, nn.ReLU):
            name = f"relu_{i}"
            layer = nn.ReLU(inplace=False)
        elif isinstance(layer, nn.MaxPool2d):
            name = f"pool_{i}"
        else:
            name = f"bn_{i}"
        model.add_module(name, layer)
        if name in content_layers:
            loss = ContentLoss(model(content).detach())
            model.add_module(f"content_loss_{i}", loss)
            content_losses.append(loss)
        if name in style_layers:
            loss = StyleLoss(model(style).detach())
            model.add_module(f"style_loss_{i}", loss)
            style_losses.append(loss)
    for i in range(len(model) - 1, -1, -1):
        if isinstance(model[i], (ContentLoss, StyleLoss)):
            break
    model = model[:i + 1]
    input_img = content.clone()
    input_img.requires_grad_(True)
    model.eval()
    model.requires_grad_(False)
    optimizer = torch.optim.LBFGS([input_img])
    run = [0]
    while run[0] < steps:
        def closure():
            with torch.no_grad():
                input_img.clamp_(0, 1)
            optimizer.zero_grad()
            model(input_img)
            loss = style_weight * sum(sl.loss for sl in style_losses) + content_weight * sum(
                cl.loss for cl in content_losses)
            loss.backward()
            run[0] += 1
            return loss

        optimizer.step(closure)
    with torch.no_grad():
        input_img.clamp_(0, 1)
    return input_img.detach(), run[0]


def style(args) -> None:
    """Neural style transfer: ours (generator/optvis/matching.py: hooks record the layers of the unchanged model, the
    forward stops after the last one) against the PyTorch tutorial's algorithm written out above, on the same
    network — torchvision's VGG19 with random weights (seeded; nothing downloads), its conv_1..conv_5 (features.0, 2,
    5, 7, 10) for the style and conv_4 (features.7) for the content — the same images and the same number of
    L-BFGS evaluations. Ours uses a strong-Wolfe line search, the tutorial L-BFGS' default unit steps; the seconds
    per evaluation compare the machinery, and both results are scored with the same relative losses."""
    import torchvision

    from generator.optvis import matching

    device = torch.device(args.device)
    torch.manual_seed(0)
    vgg = torchvision.models.vgg19(weights=None).eval().to(device)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    content = square_sample(args.content, args.style_size).to(device)
    style_image = square_sample(args.style, args.style_size).to(device)
    n = args.style_steps
    print(f"Style transfer: {args.content} in the style of {args.style}, {args.style_size} × {args.style_size} px, "
          f"VGG19 (random weights), {n} L-BFGS evaluations each, on {device}"
          f"{f' ({torch.get_num_threads()} thread(s))' if device.type == 'cpu' else ''}, best of {args.style_repeat}\n")
    net = matching.Network(vgg, mean, std, "vgg19")
    style_layers, content_layer = ["features.0", "features.2", "features.5", "features.7", "features.10"], "features.7"

    def ours():
        terms = [matching.GramTerm(net, style_layers, [style_image[0]], args.style_size, weight=100.0),
                 matching.ContentTerm(net, content_layer, content)]
        return matching.synthesize(terms, content.clone(), steps=n, tv_weight=0.0)

    def theirs():
        return tutorial_style_transfer(vgg.features, mean, std, content, style_image, n)

    best: dict[str, tuple] = {}
    for _ in range(args.style_repeat):  # alternating, so that a change in the machine's load hits both alike
        for name, fn in (("ours (matching.synthesize)", ours), ("PyTorch tutorial", theirs)):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            seconds, out = timed(fn)
            peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None
            image, evals = ((torch.from_numpy(out.images).to(device), out.evaluations) if name.startswith("ours")
                            else out)
            if name not in best or seconds < best[name][1]:
                best[name] = (name, seconds, evals, peak, image)
    rows = list(best.values())
    # Both results scored alike: relative style error (mean over the five layers) and relative content error.
    print(f"{'method':<30}{'seconds':>9}{'evals':>7}{'s / eval':>10}{'÷ ours':>8}{'peak MiB':>10}"
          f"{'style loss':>12}{'content loss':>14}")
    for name, seconds, evals, peak, image in rows:
        s_err = float(np.mean(matching.gram_errors(net, style_layers, image, [style_image[0]], args.style_size)))
        with torch.no_grad(), matching.Features(net, [content_layer]) as feats:
            c_err = float(matching.relative_error(feats(image)[content_layer], feats(content)[content_layer]))
        per = seconds / max(evals, 1)
        ratio = per / (rows[0][1] / max(rows[0][2], 1))
        print(f"{name:<30}{seconds:>9.1f}{evals:>7}{per:>10.3f}{ratio:>7.2f}×"
              f"{(f'{peak:.0f}' if peak is not None else 'n/a'):>10}{s_err:>12.4f}{c_err:>14.4f}")
    print("\nseconds: ours includes its three extra forwards (the targets, the losses at the start and at the end)."
          "\n÷ ours: seconds per evaluation relative to ours. The losses: ‖G − A‖²/‖A‖² of the Gram matrices, mean over"
          "\nthe five style layers, from the style image's; ‖F − P‖²/‖P‖² of conv_4's features from the content's."
          "\npeak MiB: CUDA only (torch.cuda.max_memory_allocated).")


SECTIONS = {"nonparametric": (nonparametric_args, nonparametric), "style": (style_args, style)}


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
