"""Occlusion (Zeiler & Fergus 2014): cover part of the image and see how much the class's probability drops.

A square patch of `window` pixels slides over the model's input in steps of `stride`. For each position the patch
is replaced by the `fill` and the target class's score is recorded; the drop is
score(image) − score(image with this patch covered). Each pixel of the map is the mean drop of the windows that
cover it (what Captum's `Occlusion` computes), so the map is at input resolution and *signed*: positive where
covering the pixel lowers the score (evidence for the class), negative where it raises it (evidence against).

The score (`score`): by default the class's **log-odds**, log p/(1 − p) = z_c − log Σ_{j≠c} exp z_j in nats,
computed from the logits (techniques/attribution/faithfulness.py `log_odds`), the same score the deletion/insertion curves use.
The softmax probability (`score: probability`, Zeiler & Fergus's and Captum's usual target) saturates: on a model
that gives p = 1.00 (the Fashion-MNIST network on its test images) covering any patch moves p by 1e-6 and the map
is numerical noise, while the log-odds still falls by nats where the evidence is.

Window positions follow Captum exactly: along each side of length L, ceil((L − window) / stride) + 1 windows start
at 0, stride, 2·stride, …; the last one may reach past the border and is clipped there.

Fills (all computed in pixel space, then normalized like the model's input):
  mean   the mean colour of the model's image set (every image's input crop, averaged per channel with each image
         weighing the same), so a covered patch looks like "an average pixel" of the data the report shows;
  zero   black: pixel intensity 0 in every channel, i.e. (0 − mean) / std in the normalized input;
  blur   the same patch of a Gaussian-blurred copy of the image (σ = `blur_sigma`, default window / 4): it removes
         the patch's detail but keeps its colours, a gentler perturbation.

The default window is a seventh of the input side (32 pixels at 224, 5 at 32), with a stride of half the window.

Windows are computed incrementally where the model allows (techniques/attribution/incremental.py, after Krypton,
Nakandala et al. SIGMOD 2019): each image goes through the model once, then each batch of windows recomputes, layer
by layer, only the box that a window can change, until that box covers the layer's whole map. The maps equal one
full forward per window up to float rounding. On EfficientNet-Lite0 at 224 px (32 px windows, stride 16) a window
recomputes 29% of the layers' outputs and 65% of their multiply-adds (from the 14 × 14 maps on, a window reaches
every position), yet the sweep runs about 3–4× faster than full forwards on a CPU: the high-resolution early layers
it mostly skips are the memory-bound ones, about 70% of a forward's time. A model torch.fx cannot trace, a window
that changes (nearly) everything, or a traced pass whose logits differ from the model's gets one full forward per
window instead, the windows of every image in batches sized by `generator.batching`: on CUDA from a probe forward's
peak memory and the free memory, on the CPU to the processor's cache, in the channels-last layout (faster there;
models that cannot take it fall back to the usual one). The path taken is in meta['occlusion']['path'].
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from generator import figures, images as imagelib
from generator.batching import images_per_forward
from generator.techniques.attribution.base import (AttributionParams, AttributionTechnique, attribution_arrays,
                                                  target_labels)
from generator.artifacts import Artifact, Job, Reads
from generator.techniques.attribution.faithfulness import blur, log_odds
from generator.techniques.attribution.incremental import Sweep, Unsupported

# Incremental occlusion only where a window recomputes at most this share of the convolutions' multiply-adds: above
# it the crops, pastes and planning cost about what they save. Measured on the CPU (one thread) against full
# forwards: torchvision models at 64–128 px 1.1–1.9× faster at shares of 0.41–0.78 (small ShuffleNet and AlexNet
# 0.7–0.9×), 0.66–1.0× at 0.84–0.87; EfficientNet-Lite0 and MobileNetV2 at 224 px (0.65, 0.57) 3–4×.
INCREMENTAL_MAX_SHARE = 0.8
# How close the traced pass's logits must come to the model's (relative to their size): float rounding differs by
# ~1e-6, a misread op by far more.
AGREEMENT = 1e-4


class OcclusionParams(AttributionParams):
    # Non-overlapping windows: about a quarter of the forwards at the default stride = window / 2.
    quick_caps = {"stride": "window"}

    window: int | None = Field(
        None, ge=1, le=4096, description="side of the square patch, in input pixels (default: the input side / 7, "
                                         "rounded: 32 px at 224)")
    stride: int | Literal["window"] | None = Field(
        None, description="step between patch positions, in input pixels, at most the window; 'window' for "
                          "non-overlapping patches (default: half the window)")
    fill: Literal["mean", "zero", "blur"] = Field(
        "mean", description="what covers the patch: mean colour of the image set, black, or a blurred copy")
    blur_sigma: float | None = Field(
        None, gt=0, le=1024, description="σ of the Gaussian for fill: blur, in pixels (default window / 4)")
    score: Literal["log_odds", "probability"] = Field(
        "log_odds", description="what the drop is measured in: the class's log-odds log p/(1 − p) in nats (does not "
                                "saturate at p = 1), or its softmax probability")
    sanity: bool = Field(
        False, description="model randomization check; off by default for occlusion: it repeats the whole sweep "
                           "once per stage")

    @model_validator(mode="after")
    def _stride_fits(self) -> "OcclusionParams":
        if isinstance(self.stride, int):
            if self.stride < 1:
                raise ValueError("stride must be at least 1")
            if self.window is not None and self.stride > self.window:
                raise ValueError(f"stride ({self.stride}) must not exceed window ({self.window}): pixels between "
                                 "windows would never be covered")
        return self

    def geometry(self, side: int) -> tuple[int, int]:
        """(window, stride) in pixels for an input of `side` pixels, defaults filled in."""
        window = self.window or max(1, round(side / 7))
        if self.stride == "window":
            return window, window
        return window, self.stride or max(1, window // 2)


def starts(length: int, window: int, stride: int) -> list[int]:
    """Window starts along one side, as Captum's Occlusion places them (the last window may be clipped)."""
    return [k * stride for k in range(math.ceil((length - window) / stride) + 1)]


def window_count(height: int, width: int, window: int, stride: int) -> int:
    return len(starts(height, window, stride)) * len(starts(width, window, stride))


def _coverage(length: int, window: int, stride: int, device) -> torch.Tensor:
    """(windows along this side, length) bool: which pixels each window position covers."""
    pos = torch.arange(length, device=device)
    s = torch.tensor(starts(length, window, stride), device=device)[:, None]
    return (pos >= s) & (pos < s + window)


def mean_colour(ctx) -> list[float]:
    """Per-channel mean intensity (0..1) of the model's view of every image in its sets, each image weighing the
    same."""
    spec = ctx.model.input
    means = []
    for record in (ctx.images[i] for i in ctx.own_images):
        a = np.asarray(imagelib.crop(record.image, spec), dtype=np.float64) / 255.0
        means.append(a.reshape(-1, len(spec.mean)).mean(0))
    return np.mean(means, axis=0).tolist()


def fill_images(ctx, x: torch.Tensor, params: OcclusionParams) -> torch.Tensor:
    """What replaces a covered patch, shaped like x (N, C, H, W), in the normalized input space."""
    spec = ctx.model.input
    mean = torch.tensor(spec.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    if params.fill == "zero":
        return ((0.0 - mean) / std).expand_as(x)
    if params.fill == "mean":
        colour = torch.tensor(mean_colour(ctx), dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return ((colour - mean) / std).expand_as(x)
    return blur(x, params.blur_sigma or params.geometry(x.shape[-1])[0] / 4)


def _unique_rows(x: torch.Tensor) -> tuple[list[int], list[int]]:
    """Rows of x that are the same image (one image explained for several classes) share their windows."""
    firsts: list[int] = []
    which: list[int] = []
    for r in range(len(x)):
        for u, f in enumerate(firsts):
            if torch.equal(x[r], x[f]):
                which.append(u)
                break
        else:
            firsts.append(r)
            which.append(len(firsts) - 1)
    return firsts, which


def class_scores(logits: torch.Tensor, targets: torch.Tensor, score: str) -> torch.Tensor:
    """(B, classes) logits, (B,) targets → (B,) each row's target score: log-odds (nats) or softmax probability."""
    if score == "log_odds":
        return log_odds(logits, targets)
    return logits.float().softmax(1).gather(1, targets.view(-1, 1).to(logits.device))[:, 0]


def _logits(model, images: torch.Tensor, channels_last: bool) -> tuple[torch.Tensor, bool]:
    """Logits of a batch, and whether to keep using the channels-last layout. On the CPU a channels-last batch
    runs about 1.3× faster through convolutions (oneDNN's preferred layout; same numbers up to float rounding); a
    model that cannot take one (a `.view` over spatial dimensions) raises, and gets the usual layout from then on."""
    if channels_last:
        try:
            return model.logits(images.contiguous(memory_format=torch.channels_last)).float(), True
        except RuntimeError:
            pass
    return model.logits(images).float(), False


def occlusion_maps(model, x: torch.Tensor, targets: torch.Tensor, fill: torch.Tensor, window: int,
                   stride: int, batch: int | None = None, score: str = "log_odds", full: bool = False,
                   report: dict | None = None) -> torch.Tensor:
    """The occlusion map of each row: x (N, C, H, W) inputs, targets (N,), fill (N, C, H, W) → (N, H, W) mean drop
    in the target's score (`class_scores`: log-odds or probability) over the windows covering each pixel.

    Rows of one image share its windows. Where the model allows, each image's windows go through it incrementally
    (`incremental.Sweep`: each layer recomputes only what a window changes), `batch` windows at a time (default:
    sized to the device); otherwise, or with `full`, every covered image goes through `model.logits` whole, `batch`
    per forward. `report` (a dict) receives how: {"path": "incremental", "recomputed_positions": share,
    "recomputed_flops": share} (of a full forward's work, per window) or {"path": "full forwards (why)"}."""
    n, _, h, w = x.shape
    rows = _coverage(h, window, stride, x.device)  # (ny, H)
    cols = _coverage(w, window, stride, x.device)  # (nx, W)
    firsts, which = _unique_rows(x)
    which_t = torch.tensor(which, device=x.device)
    targets = targets.to(x.device).long()
    report = {} if report is None else report
    with torch.no_grad():
        logits, channels_last = _logits(model, x[firsts], x.device.type == "cpu")  # (U, classes)
        base = class_scores(logits[which_t], targets, score)  # (N,)
        sweep = None if full else _sweep(model, x[firsts[:1]], window, [starts(h, window, stride),
                                                                        starts(w, window, stride)], report)
        if sweep is None:
            report.setdefault("path", "full forwards (asked for)")
            batches = _full_batches(model, x, fill, firsts, list(range(len(firsts))), (rows, cols), batch,
                                    channels_last)
        else:
            batches = _incremental_batches(sweep, model, x, fill, firsts, logits, (rows, cols), batch, channels_last,
                                           report)
        drops = _drops(batches, base, which, targets, score, len(rows) * len(cols))
    # Windows are separable (a row band × a column band): the sum over windows of drop × coverage is R^T D C.
    r_f, c_f = rows.float(), cols.float()
    total_drop = torch.einsum("yh,nyx,xw->nhw", r_f, drops.view(n, len(rows), len(cols)), c_f)
    count = r_f.sum(0)[:, None] * c_f.sum(0)[None, :]  # windows covering each pixel (>= 1: stride <= window)
    return total_drop / count


def _sweep(model, sample: torch.Tensor, window: int, window_starts: list[list[int]], report: dict) -> Sweep | None:
    """The incremental sweep of this model and geometry, or None (and why, in `report`) where it cannot run or
    would save too little."""
    try:
        sweep = Sweep(model, sample, window, window_starts)
    except Unsupported as exc:
        report["path"] = f"full forwards ({exc})"
        return None
    share = sweep.recomputed()
    if share["flops"] > INCREMENTAL_MAX_SHARE:
        report["path"] = f"full forwards (a window changes {share['flops']:.0%} of the convolutions' work)"
        return None
    report.update(path="incremental", recomputed_positions=round(share["positions"], 4),
                  recomputed_flops=round(share["flops"], 4))
    return sweep


Batches = Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # (image, window, logits) of each item


def _full_batches(model, x: torch.Tensor, fill: torch.Tensor, firsts: list[int], images: list[int],
                  coverage: tuple[torch.Tensor, torch.Tensor], batch: int | None, channels_last: bool) -> Batches:
    """One full forward per covered image, `batch` at a time: (distinct image, window) items, image-major."""
    rows, cols = coverage
    windows, nx = len(rows) * len(cols), len(cols)
    images_t = torch.tensor(images, device=x.device)
    firsts_t = torch.tensor(firsts, device=x.device)
    total = len(images) * windows
    batch = batch or images_per_forward(model, x[:1], total)
    for start in range(0, total, batch):
        item = torch.arange(start, min(start + batch, total), device=x.device)
        u, p = images_t[item // windows], item % windows
        covered = rows[p // nx][:, :, None] & cols[p % nx][:, None, :]  # (B, H, W)
        img = firsts_t[u]
        logits, channels_last = _logits(model, torch.where(covered[:, None], fill[img], x[img]), channels_last)
        yield u, p, logits


def _incremental_batches(sweep: Sweep, model, x: torch.Tensor, fill: torch.Tensor, firsts: list[int],
                         base_logits: torch.Tensor, coverage: tuple[torch.Tensor, torch.Tensor], batch: int | None,
                         channels_last: bool, report: dict) -> Batches:
    """Each image's windows through `sweep`. An image whose traced pass does not give the model's logits (an op
    the trace misreads, e.g. one writing into a view) gets full forwards instead."""
    windows = len(coverage[0]) * len(coverage[1])
    per_batch = batch or sweep.windows_per_batch(windows)
    misread = 0
    for u, first in enumerate(firsts):
        kept = sweep.keep(x[first:first + 1], fill[first:first + 1], per_batch)
        if not _agrees(kept.logits.float(), base_logits[u:u + 1]):
            misread += 1
            yield from _full_batches(model, x, fill, firsts, [u], coverage, batch, channels_last)
            continue
        for start in range(0, windows, per_batch):
            p = torch.arange(start, min(start + per_batch, windows), device=x.device)
            yield torch.full_like(p, u), p, _finite(model, sweep.logits(kept, p).float())
    why = "the traced model's logits differ from the model's"
    if misread == len(firsts):
        report.clear()
        report["path"] = f"full forwards ({why})"
    elif misread:
        report["path"] = f"incremental, full forwards for {misread} of {len(firsts)} images ({why})"


def _agrees(ours: torch.Tensor, model_s: torch.Tensor) -> bool:
    return float((ours - model_s).abs().max()) <= AGREEMENT * (1 + float(model_s.abs().max()))


def _finite(model, logits: torch.Tensor) -> torch.Tensor:
    """As `LoadedModel.logits` does: a NaN or infinite logit fails the job rather than give a meaningless map."""
    if not bool(torch.isfinite(logits).all()):
        bad = int((~torch.isfinite(logits)).sum())
        raise FloatingPointError(f"{model.name} gives NaN or infinite logits on this input ({bad} of "
                                 f"{logits.numel()} values); no result is computed from them")
    return logits


def _drops(batches: Batches, base: torch.Tensor, which: list[int], targets: torch.Tensor, score: str,
           windows: int) -> torch.Tensor:
    """(N, windows): each row's base score minus its score with each window covered."""
    n = len(which)
    drops = torch.empty(n, windows, device=base.device)
    for u, p, logits in batches:
        for r in range(n):
            mine = u == which[r]
            if mine.any():
                drops[r, p[mine]] = base[r] - class_scores(logits[mine], targets[r].expand(int(mine.sum())), score)
    return drops


class Occlusion(AttributionTechnique):
    kind = "occlusion"
    title = "Occlusion"
    summary = "drop in the class score (log-odds) when a sliding patch covers each part of the image"
    # version 3: drops in log-odds by default; log-odds faithfulness; constant maps unscored
    version = 3
    Params = OcclusionParams
    # How the last `attribute` call computed its windows (`occlusion_maps`' report), for `run` to put in the meta.
    last_sweep: dict = {}
    colour_map_meaning = "drop in the class's log-odds when covered: red = evidence for the class, blue = against"
    signed = True
    arrays = attribution_arrays("score(image) − score(patch covered), the score being the class's log-odds log p/(1 "
                                "− p) in nats (or its probability with score: probability, "
                                "meta['occlusion']['score']), averaged over the windows that cover each pixel "
                                "(signed: positive = evidence for the class)")

    def reads(self, params: OcclusionParams) -> Reads:
        return Reads(whole_set=params.fill == "mean")  # the patch colour is the mean over the model's images

    def check(self, model, params: OcclusionParams) -> list[str]:
        problems = super().check(model, params)
        size = model.input.size
        window, stride = params.geometry(size)
        if window > size:
            problems.append(f"window: {window} px is larger than the {size} × {size} px input of {model.name}; "
                            f"use at most {size}")
        elif stride > window:
            problems.append(f"stride: {stride} px exceeds the default window of {window} px ({size} / 7) for "
                            f"{model.name}'s input; set a window or a smaller stride")
        return problems

    def attribute(self, ctx, x: torch.Tensor, targets: torch.Tensor, params: OcclusionParams) -> torch.Tensor:
        window, stride = params.geometry(ctx.model.input.size)
        if window > min(x.shape[-2:]):
            raise ValueError(f"window {window} px is larger than the {tuple(x.shape[-2:])} input")
        report: dict = {}
        maps = occlusion_maps(ctx.model, x, targets, fill_images(ctx, x, params), window, stride,
                              score=params.score, report=report)
        self.last_sweep = report
        return maps

    def run(self, ctx, jobs: list[Job]) -> list[Artifact]:
        arts = super().run(ctx, jobs)
        p: OcclusionParams = jobs[0].params
        size = ctx.model.input.size
        window, stride = p.geometry(size)
        info = {"windows": window_count(size, size, window, stride), "window": window, "stride": stride,
                "fill": p.fill, "score": p.score, **self.last_sweep}
        if p.fill == "mean":
            info["fill_colour"] = [round(v, 4) for v in mean_colour(ctx)]
        if p.fill == "blur":
            info["blur_sigma"] = p.blur_sigma or window / 4
        for art in arts:
            m = art.main
            art.meta["occlusion"] = info
            art.meta["metrics"].update({"windows": info["windows"], "largest_drop": float(m.max()),
                                        "largest_rise": float(max(-m.min(), 0.0))})
        return arts

    def draw(self, art: Artifact, job: Job, env, path: Path) -> bool:
        info = art.meta["occlusion"]
        method = f"Occlusion: {info['window']} px window, stride {info['stride']}, {info['fill']} fill"
        meaning = (self.colour_map_meaning if info.get("score", "probability") == "log_odds" else
                   "drop in p(class) when covered: red = evidence for the class, blue = against")
        figures.occlusion_rows(env.picture(job.image), art.main, target_labels(art), path, method, meaning,
                               window=info["window"])
        return True
