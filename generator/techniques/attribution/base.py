"""What every attribution technique shares: which classes to explain, one job per image with all its targets
batched, a (targets, H, W) map at input resolution, and the image | map | overlay figure.

A technique subclasses `AttributionTechnique` and implements `attribute` (numbers only).

Honesty rules every method shares (`run`): a map that is constant (all zeros included: a Grad-CAM whose weighted sum
is negative everywhere) ranks no pixel before another, so it is labelled on its figure, listed in `meta["unmet"]`,
and never scored (no deletion/insertion curve or AUC: NaN in the arrays, absent from the comparison's ranking).
Deletion and insertion record the class's log-odds, not its probability (techniques/attribution/faithfulness.py says why)."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from generator.techniques.attribution import faithfulness as faith
from generator import figures
from generator.batching import images_per_forward
from generator.artifacts import Artifact, Job, Params, PER_IMAGE
from generator.techniques.base import Technique
from generator.models import resolve_target, target_problems, weights_digest


class AttributionParams(Params):
    quick_caps = {"faithfulness_steps": 8, "sanity_stages": 1}

    targets: list[str | int] | None = Field(
        None, description="classes to explain, by label or index (default: each image's top-1 class)"
    )
    faithfulness: bool = Field(
        True, description="deletion and insertion curves and their AUC (Petsiuk et al. 2018) for every map"
    )
    faithfulness_steps: int = Field(16, ge=2, le=1024, description="pixel chunks of the deletion/insertion curves")
    sanity: bool = Field(
        True, description="model randomization check (Adebayo et al. 2018): recompute maps with top layers randomized"
    )
    sanity_stages: int = Field(3, ge=1, le=20, description="how many top stages the randomization cascade covers")

    def sanity_params(self) -> "AttributionParams":
        """The settings the randomization check recomputes maps with. The same as the map's by default; a costly
        method returns cheaper ones (fewer path points), and the check then compares like with like: the model's
        own map at those settings against the randomized models' maps at those settings."""
        return self


# What the arrays every attribution artifact holds mean: one row per target (class) explained on the image. Each
# technique declares its "map" (and any array of its own) beside them: `{"map": "...", **ATTRIBUTION_ARRAYS}`.
ATTRIBUTION_ARRAYS = {
    "targets": "(targets,) int64: the class index each row explains",
    "probabilities": "(targets,) float32: the model's softmax probability of each row's class on the image",
    "deletion": "(targets, faithfulness_steps + 1) float32: the class's log-odds log p/(1 − p) = z_c − log Σ_{j≠c} "
                "exp z_j (nats, from the logits) as the map's top pixels are replaced by the deletion baseline, 0 % "
                "to 100 % of the pixels in equal chunks (Petsiuk 2018); NaN rows for constant maps (not scored)",
    "insertion": "(targets, faithfulness_steps + 1) float32: the class's log-odds (nats) as the map's top pixels are "
                 "put back into a blurred image, 0 % to 100 % in equal chunks (Petsiuk 2018); NaN for constant maps",
    "deletion_auc": "(targets,) float32: area under each deletion log-odds curve over the fraction axis [0, 1], in "
                    "nats (lower: more faithful); NaN for a constant map",
    "insertion_auc": "(targets,) float32: area under each insertion log-odds curve, in nats (higher: more faithful); "
                     "NaN for a constant map",
    "sanity_correlations": "(targets, stages) float32: Spearman rank correlation of |map| with the map recomputed "
                           "after randomizing the top 1, 2, … stages of the model (Adebayo 2018); NaN where "
                           "undefined (a constant map)",
}


CLIP_PERCENTILE = 99.0  # gradient maps are heavy-tailed: a few pixels would take the whole colour scale


def display_maps(maps: np.ndarray, signed: bool, percentile: float = CLIP_PERCENTILE) -> np.ndarray:
    """Each map clipped at the given percentile of its |values| for display: a handful of extreme pixels would
    otherwise take the whole colour scale and leave the rest black. The arrays saved as data stay unclipped."""
    out = np.empty_like(maps, dtype=np.float32)
    for i, m in enumerate(maps):
        top = float(np.percentile(np.abs(m), percentile)) or float(np.abs(m).max()) or 1.0
        out[i] = np.clip(m, -top if signed else 0.0, top)
    return out


def attribution_arrays(meaning: str, **others: str) -> dict[str, str]:
    """An attribution technique's `arrays`: its map ("(targets, H, W) float32: `meaning`; one map per target"), the
    faithfulness and sanity arrays every attribution has, and the `others` it publishes (which take precedence)."""
    return {"map": f"(targets, H, W) float32: {meaning}; one map per target", **ATTRIBUTION_ARRAYS, **others}


def target_labels(art: Artifact) -> list[str]:
    """Each target's figure label: 'class (p=0.93)', and on a second line what is wrong with its map (the short
    `warnings` a technique put on the target: a constant map, a completeness gap)."""
    labels = []
    for t in art.meta["targets"]:
        label = t["label"] if t.get("probability") is None else f"{t['label']} (p={t['probability']:.2f})"
        if t.get("warnings"):
            label += "\n" + "; ".join(f"⚠ {w}" for w in t["warnings"])
        labels.append(label)
    return labels


def flag(art: Artifact, target: dict, short: str, line: str) -> None:
    """Mark one target's map as not reaching its goal: `short` on its figure label, `line` in meta['unmet']."""
    target.setdefault("warnings", []).append(short)
    art.meta.setdefault("unmet", []).append(line)


def constant_description(m: np.ndarray) -> str:
    """'all zeros' or 'constant (0.25 everywhere)' for a map `faithfulness.constant_maps` calls constant."""
    if not np.isfinite(m).all():
        return "not finite"
    value = float(m.flat[0]) if m.size else 0.0
    return "all zeros" if value == 0 else f"constant ({value:.3g} everywhere)"


class AttributionTechnique(Technique):
    Params = AttributionParams
    scope = PER_IMAGE
    colour_map_meaning = "how much each pixel raised the class score (bright = more)"
    arrays = {"map": "(targets, H, W) float32: the attribution of each input pixel, one map per target",
              **ATTRIBUTION_ARRAYS}

    def check(self, model, params: AttributionParams) -> list[str]:
        return target_problems(model, params.targets, "targets")

    def attribute(self, ctx, x: torch.Tensor, targets: torch.Tensor, params) -> torch.Tensor:
        """Maps for a batch: x (N, C, H, W) on the device, targets (N,) class indices → (N, H, W), >= 0 where
        the technique's maps are unsigned. Must leave the model exactly as it found it. A technique overrides this
        or `compute` (by default each is made of the other)."""
        return self.compute(ctx, x, targets, params)["map"]

    def compute(self, ctx, x: torch.Tensor, targets: torch.Tensor, params) -> dict[str, torch.Tensor]:
        """Named per-row arrays for a batch, "map" first (the artifact's main array): a technique that keeps more
        than the map (guided backprop's colour gradient) overrides this; `attribute` stays the map alone."""
        return {"map": self.attribute(ctx, x, targets, params)}

    def run(self, ctx, jobs: list[Job]) -> list[Artifact]:
        model = ctx.model
        x = ctx.batch([j.image for j in jobs])
        with torch.no_grad():
            probs = model.logits(x).float().softmax(1)
        # Every (image, target) pair becomes one row of a single batch.
        pairs: list[tuple[int, int]] = []
        for i, job in enumerate(jobs):
            wanted = job.params.targets
            ids = [resolve_target(model, t) for t in wanted] if wanted else [int(probs[i].argmax())]
            pairs += [(i, int(t)) for t in ids]
        rows = torch.tensor([p[0] for p in pairs], device=x.device)
        classes = torch.tensor([p[1] for p in pairs], device=x.device)
        arrays = {name: a.detach().float().cpu().numpy()
                  for name, a in self.compute(ctx, x[rows], classes, jobs[0].params).items()}
        maps = arrays["map"]
        constant = faith.constant_maps(maps)
        checks = self.evaluate(ctx, x[rows], classes, maps, jobs[0].params, constant)
        out = []
        for i, job in enumerate(jobs):
            mine = [k for k, p in enumerate(pairs) if p[0] == i]
            targets = [{"index": pairs[k][1], "label": model.label(pairs[k][1]),
                        "probability": float(probs[i, pairs[k][1]])} for k in mine]
            meta = {"targets": targets, "target": ", ".join(t["label"] for t in targets),
                    "metrics": {"max": float(maps[mine].max()), "mean": float(maps[mine].mean())}}
            art = Artifact({name: a[mine].astype(np.float32) for name, a in arrays.items()}, meta)
            art.arrays["targets"] = np.array([pairs[k][1] for k in mine], dtype=np.int64)
            art.arrays["probabilities"] = np.array([t["probability"] for t in targets], dtype=np.float32)
            out.append(art)
            self.add_checks(out[-1], mine, checks)
            for t, k in zip(targets, mine):
                if constant[k]:
                    what = constant_description(maps[k])
                    t["constant_map"] = what
                    flag(art, t, f"{what}: not scored",
                         f"{t['label']}: the map is {what}: it ranks no pixel above another, so it is not scored")
        return out

    def evaluate(self, ctx, x: torch.Tensor, classes: torch.Tensor, maps: np.ndarray, params,
                 constant: np.ndarray | None = None) -> dict:
        """Faithfulness numbers of all maps at once (one row per (image, target) pair): deletion/insertion curves
        and the randomization cascade's rank correlations (techniques/attribution/faithfulness.py says how and why). Rows that
        are `constant` maps get no curves (NaN): a constant map orders no pixel."""
        checks: dict = {}
        start = time.perf_counter()
        if params.faithfulness:
            steps = params.faithfulness_steps
            scored = np.flatnonzero(~constant) if constant is not None else np.arange(len(maps))
            checks["deletion"] = np.full((len(maps), steps + 1), np.nan, dtype=np.float32)
            checks["insertion"] = np.full((len(maps), steps + 1), np.nan, dtype=np.float32)
            if len(scored):
                pick = torch.as_tensor(scored, device=x.device)
                dele, ins = faith.deletion_insertion(
                    ctx.model.logits, x[pick], maps[scored], classes[pick], steps=steps,
                    batch=images_per_forward(ctx.model, x[:1], 2 * (steps + 1) * len(scored)))
                checks["deletion"][scored], checks["insertion"][scored] = dele, ins
            checks["faithfulness"] = {"steps": steps, "score": faith.SCORE, "score_short": faith.SCORE_SHORT,
                                      "deletion_baseline": faith.DELETION_BASELINE,
                                      "insertion_baseline": faith.INSERTION_BASELINE,
                                      "seconds_per_map": (time.perf_counter() - start) / max(1, len(scored))}
            start = time.perf_counter()
        if params.sanity:
            original = ctx.model.module
            before = weights_digest(original)
            stages = faith.randomization_stages(original, x[:1])[: params.sanity_stages]
            corr = np.full((len(maps), len(stages)), np.nan)
            cheap = params.sanity_params()
            reference = maps
            if cheap != params:
                torch.manual_seed(ctx.seed)
                reference = self.attribute(ctx, x, classes, cheap).detach().float().cpu().numpy()
            for k in range(len(stages)):
                module = faith.randomized_copy(original, stages[: k + 1], ctx.seed).eval()
                rctx = dataclasses.replace(ctx, model=dataclasses.replace(ctx.model, module=module))
                torch.manual_seed(ctx.seed)  # stochastic methods draw the same noise as for the original maps
                again = self.attribute(rctx, x, classes, cheap).detach().float().cpu().numpy()
                for r in range(len(maps)):
                    corr[r, k] = faith.rank_correlation(np.abs(reference[r]), np.abs(again[r]))
                del module, rctx
            if weights_digest(original) != before:
                raise RuntimeError("the randomization check changed the original model's weights")
            checks["correlations"] = corr
            checks["sanity"] = {"stages": stages, "threshold": faith.SANITY_THRESHOLD,
                                "measure": "Spearman rank correlation of absolute-value maps",
                                "recomputed_with": {k: v for k, v in cheap.cache_fields().items()
                                                    if v != params.cache_fields().get(k)},
                                "seconds_per_map": (time.perf_counter() - start) / len(maps)}
        return checks

    @staticmethod
    def add_checks(art: Artifact, mine: list[int], checks: dict) -> None:
        """Put the rows `mine` of `evaluate`'s numbers into one artifact: curves as arrays, per-target numbers in
        meta['targets'], their means (and the sanity flag) in meta['metrics']."""
        number = lambda v: None if v is None or not np.isfinite(v) else float(v)  # noqa: E731  (NaN is not JSON)
        metrics = art.meta["metrics"]
        if "deletion" in checks:
            for name in ("deletion", "insertion"):
                curves = checks[name][mine]
                art.arrays[name] = curves.astype(np.float32)
                areas = np.atleast_1d(faith.auc(curves))  # NaN for an unscored (constant) map
                for t, a in zip(art.meta["targets"], areas):
                    t[f"{name}_auc"] = number(a)
                art.arrays[f"{name}_auc"] = np.asarray(areas, dtype=np.float32)
                metrics[f"{name}_auc"] = float(np.nanmean(areas)) if np.isfinite(areas).any() else None
            art.meta["faithfulness"] = checks["faithfulness"]
        if "correlations" in checks:
            corr = checks["correlations"][mine]
            art.arrays["sanity_correlations"] = corr.astype(np.float32)
            for t, row in zip(art.meta["targets"], corr):
                t["sanity_correlations"] = [number(v) for v in row]
                t["sanity_flag"] = bool(len(row) and np.isfinite(row[-1]) and row[-1] > faith.SANITY_THRESHOLD)
            with np.errstate(all="ignore"):
                means = [number(np.nanmean(col)) if np.isfinite(col).any() else None for col in corr.T]
            metrics["sanity_correlations"] = means
            metrics["sanity_correlation"] = means[-1] if means else None
            metrics["sanity_flag"] = bool(means and means[-1] is not None and means[-1] > faith.SANITY_THRESHOLD)
            art.meta["sanity"] = checks["sanity"]

    def figure_title(self, art: Artifact) -> str:
        """The title of an artifact's figure: the technique's (Grad-CAM adds its layer)."""
        return self.title

    def draw(self, art: Artifact, job: Job, env, path: Path) -> bool:
        maps, title = art.main, self.figure_title(art)
        if self.clip is not None:
            maps, title = display_maps(maps, self.signed, self.clip), f"{title}\n(shown clipped at the {self.clip:g}th percentile)"
        figures.attribution_rows(env.picture(job.image), maps, target_labels(art), path, title,
                                 self.colour_map_meaning, signed=self.signed)
        return True

    signed = False  # True for maps whose sign matters (integrated gradients): drawn on a diverging scale
    clip: float | None = None  # gradient maps (heavy-tailed) are shown clipped at this percentile of |values|
