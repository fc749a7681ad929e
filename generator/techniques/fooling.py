"""Fooling images (Szegedy et al. 2014; Goodfellow et al. 2015): change a real image imperceptibly until the network
calls it a chosen class. Targeted iterative gradient-sign steps (Kurakin et al. 2017) on the pixels the model sees,
kept within an L∞ ball of radius `epsilon` around the original and inside the valid pixel range; each image stops
changing once the target's probability reaches `confidence`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from generator import figures
from generator.techniques.attribution import resolve_target
from generator.techniques.base import Artifact, Job, Params, Technique


class FoolingParams(Params):
    target: str | int | None = Field(None, description="the class to make the model see (label or index; default: "
                                                       "each image's least likely class)")
    epsilon: float = Field(8.0, gt=0, le=255, description="largest change of any pixel, in 0..255 units (L∞ bound)")
    step: float = Field(1.0, gt=0, le=64, description="change per step, in 0..255 units")
    steps: int = Field(60, ge=1, le=10000, description="most steps")
    confidence: float = Field(0.9, gt=0, lt=1, description="stop once the target's probability reaches this")

    def quick(self) -> "FoolingParams":
        return self.model_copy(update={"steps": min(self.steps, 20)})


class Fooling(Technique):
    kind = "fooling"
    title = "Fooling images"
    summary = "imperceptible changes that make the model see a chosen class"
    Params = FoolingParams
    scope = "image"
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
        mean = torch.tensor(model.input.mean, device=ctx.device).view(1, -1, 1, 1)
        std = torch.tensor(model.input.std, device=ctx.device).view(1, -1, 1, 1)
        original = (ctx.batch([j.image for j in jobs]) * std + mean).clamp(0, 1)  # pixels in 0..1
        with torch.no_grad():
            before = model.logits((original - mean) / std).float().softmax(1)
        targets = torch.tensor([resolve_target(model, p.target) if p.target is not None else int(b.argmin())
                                for b in before], device=ctx.device)
        eps, alpha = p.epsilon / 255.0, p.step / 255.0
        x = original.clone()
        done = torch.zeros(len(jobs), dtype=torch.bool, device=ctx.device)
        first_top1 = [None] * len(jobs)
        steps_taken = torch.zeros(len(jobs), dtype=torch.long)
        for step in range(1, p.steps + 1):
            x.requires_grad_(True)
            logits = model.logits((x - mean) / std).float()
            loss = F.cross_entropy(logits, targets, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x)
            with torch.no_grad():
                probs = logits.softmax(1)
                hit = probs.gather(1, targets[:, None])[:, 0] >= p.confidence
                done |= hit
                for i in range(len(jobs)):
                    if first_top1[i] is None and int(probs[i].argmax()) == int(targets[i]):
                        first_top1[i] = step - 1  # the image of the previous step already did it
                if bool(done.all()):
                    break
                move = (~done).float().view(-1, 1, 1, 1)
                steps_taken += (~done).cpu().long()
                x = x.detach() - alpha * grad.sign() * move
                x = torch.min(torch.max(x, original - eps), original + eps).clamp(0, 1)
        x = x.detach()
        # The L∞ bound and the range hold in 8-bit pixels too: what the page shows is what was measured.
        x = (x * 255).round() / 255
        with torch.no_grad():
            after = model.logits((x - mean) / std).float().softmax(1)
        out = []
        for i, job in enumerate(jobs):
            t = int(targets[i])
            orig_top = int(before[i].argmax())
            fooled_top = int(after[i].argmax())
            linf = float((x[i] - original[i]).abs().max() * 255)
            meta = {
                "target": model.label(t), "original": model.label(orig_top),
                "metrics": {
                    "target": model.label(t), "target_before": float(before[i, t]), "target_after": float(after[i, t]),
                    "original_class": model.label(orig_top), "original_before": float(before[i, orig_top]),
                    "original_after": float(after[i, orig_top]), "fooled": fooled_top == t,
                    "top1_after": model.label(fooled_top), "linf": round(linf, 3), "epsilon": p.epsilon,
                    "top1_step": first_top1[i], "steps": int(steps_taken[i]),
                },
            }
            out.append(Artifact({"fooled": x[i].cpu().numpy(), "difference": (x[i] - original[i]).cpu().numpy()}, meta))
        return out

    def draw(self, art, job, env, path: Path) -> bool:
        m = art.metrics
        fooled = (art.arrays["fooled"].transpose(1, 2, 0) * 255).round().astype(np.uint8)
        diff = art.arrays["difference"].transpose(1, 2, 0)
        gain = 127.5 / max(m["epsilon"] / 255.0, 1e-6)  # ±epsilon spans the whole grey range
        shown = np.clip(diff * gain + 127.5, 0, 255).astype(np.uint8)
        if fooled.shape[2] == 1:
            fooled, shown = fooled[..., 0], shown[..., 0]
        picture = env.picture(job.image)
        step = "never" if m["top1_step"] is None else f"at step {m['top1_step']}"
        figures.picture_row(
            [picture, fooled, shown],
            [f"original: {m['original_class']} ({m['original_before']:.2f})",
             f"fooled: {m['top1_after']} ({m['target_after']:.2f})",
             f"difference × {gain / 255:.0f} (L∞ = {m['linf']:.0f}/255)"],
            path, f"target '{m['target']}': top-1 {step}")
        return True
