"""Fooling images (Szegedy et al. 2014; Goodfellow et al. 2015): change a real image imperceptibly until the network
calls it a chosen class. Targeted iterative gradient-sign steps (Kurakin et al. 2017) on the pixels the model sees,
kept within an L∞ ball of radius `epsilon` around the original and inside the valid pixel range; each image stops
changing once the target's probability reaches `confidence`.

The target is never the class the model already sees: by default each image's least likely class other than its
top-1; when the named `target` is an image's own top-1 (the Bag of a Bag → Bag request), that image is aimed at its
most likely other class instead — the nearest class to fool it into — and the page says so (`target_requested`,
`retargeted`). An image counts as fooled only when the target, a class other than the original, is top-1 after the
last step (on the 8-bit image shown); one that is not is listed in `meta["unmet"]` and its figure says "not fooled".

Budgets: by default `epsilon` 8 of 255 grey levels, and 24 for inputs under 64 px a side (with few pixels, each one
must carry more of the change); `step` defaults to epsilon / 8.
How the defaults were chosen: site_src/tuning.md#fooling-images."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from generator import figures
from generator.figures import to_picture
from generator.optvis.render import SMALL_INPUT  # models under this many px a side get SMALL_EPSILON
from generator.models import resolve_target
from generator.artifacts import Artifact, Job, Params, PER_IMAGE
from generator import optvis
from generator.techniques.synthesis.base import SynthesisTechnique

EPSILON, SMALL_EPSILON = 8.0, 24.0


class FoolingParams(Params):
    quick_caps = {"steps": 20}

    target: str | int | None = Field(None, description="the class to make the model see (label or index; default: "
                                                       "each image's least likely class other than its top-1; an "
                                                       "image whose top-1 is the target is aimed at its most likely "
                                                       "other class)")
    epsilon: float | None = Field(None, gt=0, le=255, description="largest change of any pixel, in 0..255 units (L∞ "
                                                                  "bound; default 8, or 24 for inputs under 64 px)")
    step: float | None = Field(None, gt=0, le=64, description="change per step, in 0..255 units (default: "
                                                              "epsilon / 8)")
    steps: int = Field(60, ge=1, le=10000, description="most steps")
    confidence: float = Field(0.9, gt=0, lt=1, description="stop once the target's probability reaches this")

    def budget(self, side: int) -> tuple[float, float]:
        """(epsilon, step) in 0..255 units for a model whose input is `side` px."""
        eps = self.epsilon if self.epsilon is not None else (EPSILON if side >= SMALL_INPUT else SMALL_EPSILON)
        return eps, self.step if self.step is not None else eps / 8


def choose_targets(logits: torch.Tensor, requested: int | None) -> tuple[list[int], list[bool]]:
    """Each image's target class, never its own top-1: `requested`, unless that is the image's top-1 (then its most
    likely other class), or by default its least likely other class. Also, per image, whether it was re-aimed."""
    targets, retargeted = [], []
    for row in logits.float():
        top = int(row.argmax())
        others = row.clone()
        if requested is not None and requested != top:
            targets.append(requested)
            retargeted.append(False)
        elif requested is not None:
            others[top] = -float("inf")
            targets.append(int(others.argmax()))
            retargeted.append(True)
        else:
            others[top] = float("inf")
            targets.append(int(others.argmin()))
            retargeted.append(False)
    return targets, retargeted


class Fooling(SynthesisTechnique):
    kind = "fooling"
    title = "Fooling images"
    summary = "imperceptible changes that make the model see a chosen class"
    version = 3
    Params = FoolingParams
    scope = PER_IMAGE
    arrays = {"fooled": "(C, H, W) float32: the changed image, pixels in [0, 1] on the 8-bit grid (k / 255)",
              "difference": "(C, H, W) float32: fooled − original in [0, 1] pixel units, within ±epsilon / 255"}

    def check(self, model, params: FoolingParams) -> list[str]:
        if params.target is None:
            return []
        resolved = resolve_target(model, params.target)
        return [f"target: {resolved}"] if isinstance(resolved, str) else []

    def run(self, ctx, jobs: list[Job]) -> list[Artifact]:
        p: FoolingParams = jobs[0].params
        model = ctx.model
        original = model.denormalize(ctx.batch([j.image for j in jobs])).clamp(0, 1)  # pixels in 0..1
        with torch.no_grad():
            logits_before = model.logits(model.normalize(original)).float()
        before = logits_before.softmax(1)
        requested = int(resolve_target(model, p.target)) if p.target is not None else None
        chosen, retargeted = choose_targets(logits_before, requested)
        targets = torch.tensor(chosen, device=ctx.device)
        epsilon, step_size = p.budget(model.input.size)
        eps, alpha = epsilon / 255.0, step_size / 255.0
        first_top1: list[int | None] = [None] * len(jobs)

        def watch(step: int, _loss, acts) -> None:
            top = acts.logits.argmax(1)
            for i in range(len(jobs)):
                if first_top1[i] is None and int(top[i]) == chosen[i]:
                    first_top1[i] = step

        param = optvis.from_image(original, kind="pixel", ball=(original, eps))
        result = self.optimize(
            ctx, optvis.class_log_probability(chosen), param, steps=p.steps, lr=alpha, optimizer="signed",
            goal=lambda acts: acts.logits.float().softmax(1).gather(1, targets[:, None])[:, 0] >= p.confidence,
            callback=watch)
        # An image stops at the evaluation that first met the confidence: the steps before it are its steps.
        steps_taken = [int(r) if r >= 0 else result.steps for r in result.reached]
        x = torch.from_numpy(result.images).to(ctx.device)
        x = x.detach()
        # The L∞ bound and the range hold in 8-bit pixels too: what the page shows is what was measured.
        x = (x * 255).round() / 255
        with torch.no_grad():
            after = model.logits(model.normalize(x)).float().softmax(1)
        out = []
        for i, job in enumerate(jobs):
            t = int(targets[i])
            orig_top = int(before[i].argmax())
            fooled_top = int(after[i].argmax())
            fooled = fooled_top == t and t != orig_top
            linf = float((x[i] - original[i]).abs().max() * 255)
            meta = {
                "target": model.label(t), "original": model.label(orig_top),
                "metrics": {
                    "target": model.label(t), "target_before": float(before[i, t]), "target_after": float(after[i, t]),
                    "original_class": model.label(orig_top), "original_before": float(before[i, orig_top]),
                    "original_after": float(after[i, orig_top]), "fooled": fooled,
                    "top1_after": model.label(fooled_top), "linf": round(linf, 3), "epsilon": epsilon,
                    "step": step_size, "top1_step": first_top1[i] if fooled else None, "steps": int(steps_taken[i]),
                },
            }
            if requested is not None:
                meta["target_requested"] = model.label(requested)
            if retargeted[i]:
                meta["retargeted"] = (f"the model already sees '{model.label(requested)}'; aimed at its most likely "
                                      f"other class, '{model.label(t)}'")
            if not fooled:
                meta["unmet"] = [f"not fooled: top-1 '{model.label(fooled_top)}' (was '{model.label(orig_top)}'), "
                                 f"target '{model.label(t)}' at p = {float(after[i, t]):.2f} after "
                                 f"{int(steps_taken[i])} steps within ε = {epsilon:g}/255"]
            out.append(Artifact({"fooled": x[i].cpu().numpy(), "difference": (x[i] - original[i]).cpu().numpy()}, meta))
        return out

    def draw(self, art, job, env, path: Path) -> bool:
        m = art.metrics
        fooled = to_picture(art.arrays["fooled"])
        diff = art.arrays["difference"].transpose(1, 2, 0)
        gain = 127.5 / max(m["epsilon"] / 255.0, 1e-6)  # ±epsilon spans the whole grey range
        shown = np.clip(diff * gain + 127.5, 0, 255).astype(np.uint8)
        if shown.shape[2] == 1:
            shown = shown[..., 0]
        picture = env.picture(job.image)
        if m["fooled"]:
            middle = f"fooled: {m['top1_after']} ({m['target_after']:.2f})"
            title = f"target '{m['target']}': top-1 at step {m['top1_step']}"
        else:
            middle = f"NOT fooled: top-1 {m['top1_after']} (target {m['target_after']:.2f})"
            title = f"target '{m['target']}': NOT reached within ε = {m['epsilon']:g}/255, {m['steps']} steps"
        figures.picture_row(
            [picture, fooled, shown],
            [f"original: {m['original_class']} ({m['original_before']:.2f})", middle,
             f"difference × {gain / 255:.0f} (L∞ = {m['linf']:.0f}/255)"],
            path, title)
        return True
