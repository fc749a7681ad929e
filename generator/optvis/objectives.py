"""Objectives: what an input optimization maximizes, as values that compose and describe themselves.

An objective is called on the `Activations` of one forward (the recorded layer outputs, the logits, the image) and
returns a LOSS per batch element, shape (B,), that the render loop MINIMIZES. Internally an `Objective` is a linear
combination Σ cᵢ·termᵢ of quantities to MAXIMIZE, and its loss is −Σ cᵢ·termᵢ; so

    class_logit(281, "tabby")            loss = −logit₂₈₁                 "maximize 'tabby' logit"
    l2_penalty(0.01)                     loss = +0.01·‖x‖²                "maximize −0.01·L2(image)"
    class_logit(281, "tabby") + l2_penalty(0.01)                          "maximize 'tabby' logit − 0.01·L2(image)"

Penalties are already signed: combine them with `+` (the description shows the sign, so `class_logit(...) −
l2_penalty(...)` reads "... + 0.01·L2(image)", visibly rewarding the norm). `+`, `−`, unary `−` and scalar `*`
compose; equal terms merge (`a + a == 2 * a`). Terms are frozen dataclasses: objectives are hashable, compare by
value and `key()` gives JSON for cache keys — no closures (unlike Lucid's, whose design this follows:
`lucid/optvis/objectives.py`, Olah et al. 2017).

Batches. Two ways to optimize B different things in one forward:
- per-element indices: `class_logit([281, 967, 1], ["tabby", "espresso", "goldfish"])`, `channel(layer, [3, 7])`,
  `neuron(layer, [3, 7])`: element b maximizes index b (vectorized gather);
- `Objective.batched([obj₀, …, obj_{B−1}])`: element b gets objective b, evaluated on row b only (any objectives,
  also of different kinds). `batched + l2_penalty(w)` adds the penalty to every element.
Either way element b's loss depends on row b only, so the batch gives the same gradients as B separate runs.
`captions(B)` gives each element's description (a figure caption).

Quantities (all per batch element):
- `class_logit(index, label)`: the unnormalized class score from the model's logits (Simonyan et al. 2014 optimize
  the score, not the softmax probability, which can rise by pushing other classes down).
- `channel(layer, c)`: mean of channel c's map; `neuron(layer, c, y, x)`: one unit, the centre by default.
- `layer_l2(layer)`: the L2 norm of a layer's output (DeepDream, Mordvintsev et al. 2015).
- `l2_penalty(w)`: w·Σ x² over the *normalized* input before transforms (x = (image − mean)/std, so 0 is the
  model's mean colour, as in Simonyan's zero-centred images).
- `total_variation(w)`: w·Σ |neighbour differences| of the [0, 1] image (anisotropic TV, as in Lucid and
  Mahendran & Vedaldi 2015 with β = 1).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from generator.optvis.transforms import resample

Index = int | tuple[int, ...]


@dataclass
class Activations:
    """What an objective sees: recorded layer outputs, the logits (when asked for), and the image before transforms
    — `image` in [0, 1], `input` normalized with the model's mean and std. All have the batch first."""

    outputs: Mapping[str, Any] = field(default_factory=dict)
    logits: torch.Tensor | None = None
    image: torch.Tensor | None = None
    input: torch.Tensor | None = None

    @property
    def batch(self) -> int:
        for t in (self.image, self.logits, *self.outputs.values()):
            if isinstance(t, torch.Tensor):
                return t.shape[0]
        raise ValueError("no tensors recorded")

    def layer(self, name: str) -> torch.Tensor:
        if name not in self.outputs:
            raise KeyError(f"layer '{name}' was not recorded (recorded: {sorted(self.outputs)})")
        out = self.outputs[name]
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"layer '{name}' returned {type(out).__name__}, not a tensor")
        return out

    def rows(self, index: slice) -> "Activations":
        def cut(t):
            return t[index] if isinstance(t, torch.Tensor) else t

        return Activations({k: cut(v) for k, v in self.outputs.items()}, cut(self.logits), cut(self.image),
                           cut(self.input))


def _index(index: int | Sequence[int]) -> Index:
    if isinstance(index, torch.Tensor):
        index = index.tolist()
    if isinstance(index, (list, tuple)):
        return tuple(int(i) for i in index)
    return int(index)


def _per_element(index: Index, batch: int, device: torch.device) -> torch.Tensor:
    """(B,) long tensor of element b's index."""
    if isinstance(index, int):
        return torch.full((batch,), index, dtype=torch.long, device=device)
    if len(index) != batch:
        raise ValueError(f"{len(index)} per-element indices for a batch of {batch}")
    return torch.tensor(index, dtype=torch.long, device=device)


def _pick(index: Index, b: int | None):
    if isinstance(index, int) or b is None:
        return index
    return index[b] if b < len(index) else index


class Term:
    """One quantity to maximize, per batch element. Subclasses are frozen dataclasses."""

    needs_logits: ClassVar[bool] = False

    def layers(self) -> tuple[str, ...]:
        return ()

    def value(self, acts: Activations) -> torch.Tensor:
        raise NotImplementedError

    def name(self, b: int | None = None) -> str:
        """Readable name; `b` picks element b's index when the term has per-element indices."""
        raise NotImplementedError

    def key(self) -> dict:
        return {"term": type(self).__name__, **{k: v for k, v in vars(self).items()}}


@dataclass(frozen=True)
class Logit(Term):
    index: Index
    label: str | tuple[str, ...] | None = None
    needs_logits: ClassVar[bool] = True

    def value(self, acts: Activations) -> torch.Tensor:
        if acts.logits is None:
            raise ValueError("the logits were not recorded")
        logits = acts.logits.flatten(1)
        idx = _per_element(self.index, logits.shape[0], logits.device)
        return logits.gather(1, idx[:, None])[:, 0]

    def name(self, b: int | None = None) -> str:
        index, label = _pick(self.index, b), _pick(self.label, b) if isinstance(self.label, tuple) else self.label
        if isinstance(index, tuple):
            labels = label if isinstance(label, tuple) else [None] * len(index)
            return "logits of " + ", ".join(f"'{lab}'" if lab else f"class {i}" for i, lab in zip(index, labels))
        return f"'{label}' logit" if label else f"logit of class {index}"


@dataclass(frozen=True)
class LogProbability(Logit):
    """log softmax of the class: raising it lowers every other class (the cross-entropy a fooling image descends)."""

    def value(self, acts: Activations) -> torch.Tensor:
        if acts.logits is None:
            raise ValueError("the logits were not recorded")
        logits = acts.logits.flatten(1).float()
        idx = _per_element(self.index, logits.shape[0], logits.device)
        return logits.log_softmax(1).gather(1, idx[:, None])[:, 0]

    def name(self, b: int | None = None) -> str:
        return "log p of " + super().name(b).replace(" logit", "")


def _channel_maps(acts: Activations, layer: str, index: Index) -> torch.Tensor:
    """(B, ...) element b's channel index[b] of the layer output (B, C, ...)."""
    out = acts.layer(layer)
    idx = _per_element(index, out.shape[0], out.device)
    shape = (out.shape[0], 1) + tuple(out.shape[2:])
    return out.gather(1, idx.view(-1, *([1] * (out.dim() - 1))).expand(shape))[:, 0]


@dataclass(frozen=True)
class LayerTerm(Term):
    """A quantity of one recorded layer."""

    layer: str

    def layers(self) -> tuple[str, ...]:
        return (self.layer,)


@dataclass(frozen=True)
class ChannelTerm(LayerTerm):
    """A quantity of one channel of a layer (with per-element indices, element b's channel index[b])."""

    index: Index

    def maps(self, acts: Activations) -> torch.Tensor:
        return _channel_maps(acts, self.layer, self.index)

    def channels(self, b: int | None) -> str:
        index = _pick(self.index, b)
        return ", ".join(map(str, index)) if isinstance(index, tuple) else str(index)


@dataclass(frozen=True)
class ChannelMean(ChannelTerm):
    def value(self, acts: Activations) -> torch.Tensor:
        maps = self.maps(acts)
        return maps.flatten(1).mean(1) if maps.dim() > 1 else maps

    def name(self, b: int | None = None) -> str:
        return f"mean of {self.layer} channel {self.channels(b)}"


@dataclass(frozen=True)
class Neuron(ChannelTerm):
    y: int | None = None
    x: int | None = None

    def value(self, acts: Activations) -> torch.Tensor:
        maps = self.maps(acts)
        if maps.dim() == 1:
            return maps
        h, w = maps.shape[-2:]
        y = h // 2 if self.y is None else self.y
        x = w // 2 if self.x is None else self.x
        return maps[:, y, x]

    def name(self, b: int | None = None) -> str:
        where = "centre" if self.y is None and self.x is None else f"({self.y}, {self.x})"
        return f"{self.layer} channel {self.channels(b)} unit at {where}"


@dataclass(frozen=True)
class LayerL2(LayerTerm):
    def value(self, acts: Activations) -> torch.Tensor:
        return acts.layer(self.layer).flatten(1).norm(dim=1)

    def name(self, b: int | None = None) -> str:
        return f"L2({self.layer})"


@dataclass(frozen=True)
class ImageL2(Term):
    def value(self, acts: Activations) -> torch.Tensor:
        return acts.input.flatten(1).pow(2).sum(1)

    def name(self, b: int | None = None) -> str:
        return "L2(image)"


def image_tv(x: torch.Tensor, beta: float | None = None) -> torch.Tensor:
    """The total variation of each image of x (B, C, H, W), the one TV of the package. Without `beta`: anisotropic,
    Σ |differences of vertical and horizontal neighbours| (Lucid's; Mahendran & Vedaldi's with β = 1 up to the
    norm). With `beta`: Mahendran & Vedaldi's TV^β, the mean over pixels and channels of ((∂x/∂u)² + (∂x/∂v)²)^(β/2),
    with forward differences (the last row/column left out)."""
    if beta is None:
        dy = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).sum(1)
        dx = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).sum(1)
        return dy + dx
    dy = x[..., 1:, :-1] - x[..., :-1, :-1]
    dx = x[..., :-1, 1:] - x[..., :-1, :-1]
    squared = dy * dy + dx * dx
    if beta != 2:
        squared = (squared + 1e-8) ** (beta / 2)
    return squared.flatten(1).mean(1)


@dataclass(frozen=True)
class ImageTV(Term):
    """Total variation of the [0, 1] image: `image_tv`'s sum (β None), or its mean of TV^β; `per_value` divides the
    sum by the values of one image (the mean absolute neighbour difference)."""

    beta: float | None = None
    per_value: bool = False
    tag: str = "tv"

    def value(self, acts: Activations) -> torch.Tensor:
        tv = image_tv(acts.image, self.beta)
        return tv / acts.image[0].numel() if self.per_value else tv

    def name(self, b: int | None = None) -> str:
        return "TV(image)" if self.beta is None else f"TV^{self.beta:g}(image)"


@dataclass(frozen=True)
class RangePenalty(Term):
    """The mean squared distance of the image's pixels from [0, 1]: a smooth bound that L-BFGS can model, for an
    unclamped pixel image (clamping inside the loss leaves pixels stuck outside with zero gradient)."""

    tag: str = "range"

    def value(self, acts: Activations) -> torch.Tensor:
        return (acts.image - acts.image.clamp(0, 1)).pow(2).flatten(1).mean(1)

    def name(self, b: int | None = None) -> str:
        return "range(image)"


def relative_error(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """‖x − target‖² / ‖target‖² per batch element (target broadcast over the batch when it has one row)."""
    diff = (x.float() - target.float()).flatten(1).pow(2).sum(1)
    return diff / target.float().flatten(1).pow(2).sum(1).clamp_min(1e-12)


def gram(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (B, C, C): F Fᵀ / (H·W), F the (C, H·W) map of each image (a mean over positions, so images of
    different sizes have comparable Gram matrices)."""
    b, c = features.shape[:2]
    f = features.reshape(b, c, -1).float()
    return torch.bmm(f, f.transpose(1, 2)) / f.shape[-1]


def smooth_activations(features: torch.Tensor) -> torch.Tensor:
    """SWAG's activation smoothing (Wang, Li & Vasconcelos, CVPR 2021): a softmax over ALL activations of a layer of
    one image (channels and positions together, temperature 1, as the authors' `softmax3d`), times their number N
    so that it has mean 1 whatever the image size (ours: the paper resizes both images to one size; for equal sizes
    N is a constant and the relative losses are the paper's). Residual networks' activations are peaky; the
    softmax raises their entropy before the Gram matrix and the content comparison."""
    b = features.shape[0]
    f = features.reshape(b, -1).float()
    return (torch.softmax(f, dim=1) * f.shape[1]).reshape(features.shape)


def _seen(features: torch.Tensor, smooth: bool) -> torch.Tensor:
    return smooth_activations(features) if smooth else features.float()


class Preparation:
    """What a matching term gets to compute its targets: `features(images)` runs [0, 1] images through the
    engine's recording forward (no gradient) and returns {layer: output}; `scale` of the coarse-to-fine schedule
    and `size` (H, W) of the image being optimized at it."""

    def __init__(self, features, scale: float, size: tuple[int, int]):
        self.features, self.scale, self.size = features, scale, size


@dataclass(frozen=True, eq=False)
class FeatureMatch(Term):
    """−‖Φ(x) − Φ(reference)‖² / ‖Φ(reference)‖² at `layer` (Mahendran & Vedaldi's normalized feature loss; Gatys'
    content loss up to the normalization): `reference` (B, C, H, W) in [0, 1] is resampled to the image's size at
    each scale. `smooth`: SWAG's activation smoothing on both sides. `follows_transforms`: the reference is shown
    the same random transform as the image at every step (inversion with jitter), so the loss stays exact."""

    layer: str
    reference: torch.Tensor
    smooth: bool = False
    follows_transforms: bool = False
    tag: str = "content"
    targets: dict = field(default_factory=dict, repr=False)

    def layers(self) -> tuple[str, ...]:
        return (self.layer,)

    def prepare(self, prep: Preparation) -> None:
        with torch.no_grad():
            self.targets["t"] = _seen(prep.features(resample(self.reference, prep.size))[self.layer], self.smooth)

    def value(self, acts: Activations) -> torch.Tensor:
        return -relative_error(_seen(acts.layer(self.layer), self.smooth), self.targets["t"])

    def name(self, b: int | None = None) -> str:
        return f"match of {self.layer}"

    def key(self) -> dict:
        return {"term": "FeatureMatch", "layer": self.layer, "smooth": self.smooth}


@dataclass(frozen=True, eq=False)
class GramMatch(Term):
    """−(mean over `layers` of ‖G(x) − G(source)‖² / ‖G(source)‖²): the Gram (texture, style) loss of Gatys, Ecker &
    Bethge 2015/2016, relative so that every layer counts alike whatever its scale. One (C, h, w) source per batch
    element (the same tensor for several elements is measured once), resampled at scale s to s × `source_side`
    pixels on its shorter side. Layers a coarse image does not reach are left out at that scale."""

    layers_: tuple[str, ...]
    sources: tuple[torch.Tensor, ...]
    source_side: int
    smooth: bool = False
    tag: str = "style"
    targets: dict = field(default_factory=dict, repr=False)

    def layers(self) -> tuple[str, ...]:
        return self.layers_

    def prepare(self, prep: Preparation) -> None:
        side = max(8, round(self.source_side * prep.scale))
        done: dict[int, dict[str, torch.Tensor]] = {}
        rows: dict[str, list[torch.Tensor]] = {layer: [] for layer in self.layers_}
        with torch.no_grad():
            for src in self.sources:
                if id(src) not in done:
                    h, w = src.shape[-2:]
                    k = side / min(h, w)
                    out = prep.features(resample(src[None], (max(1, round(h * k)), max(1, round(w * k)))))
                    done[id(src)] = {layer: gram(_seen(out[layer], self.smooth)) for layer in self.layers_
                                     if layer in out}
                for layer, g in done[id(src)].items():
                    rows[layer].append(g)
        self.targets.clear()
        self.targets.update({layer: torch.cat(g) for layer, g in rows.items() if len(g) == len(self.sources)})

    def value(self, acts: Activations) -> torch.Tensor:
        errors = [relative_error(gram(_seen(acts.outputs[layer], self.smooth)), self.targets[layer])
                  for layer in self.layers_ if layer in self.targets and isinstance(acts.outputs.get(layer),
                                                                                    torch.Tensor)]
        if not errors:
            raise ValueError(f"none of the layers {list(self.layers_)} was reached")
        return -torch.stack(errors).mean(0)

    def name(self, b: int | None = None) -> str:
        return f"Gram match of {', '.join(self.layers_)}"

    def key(self) -> dict:
        return {"term": "GramMatch", "layers": list(self.layers_), "smooth": self.smooth}


def _num(c: float) -> str:
    return f"{c:g}"


class BaseObjective:
    """Shared by `Objective` and `BatchedObjective`."""

    def __call__(self, acts: Activations) -> torch.Tensor:
        raise NotImplementedError

    def layers(self) -> frozenset[str]:
        raise NotImplementedError

    @property
    def needs_logits(self) -> bool:
        raise NotImplementedError

    def captions(self, batch: int) -> list[str]:
        raise NotImplementedError

    @property
    def description(self) -> str:
        raise NotImplementedError

    def __str__(self) -> str:
        return self.description

    def __sub__(self, other: "BaseObjective") -> "BaseObjective":
        return self + (-1.0) * other

    def __neg__(self) -> "BaseObjective":
        return (-1.0) * self

    def __rmul__(self, k: float) -> "BaseObjective":
        return self * k

    def prepared_terms(self) -> list[Term]:
        return []

    def prepare(self, prep: "Preparation") -> None:
        """Compute the targets of matching terms (at a scale of the coarse-to-fine schedule)."""

    @property
    def follows_transforms(self) -> bool:
        return False

    @staticmethod
    def batched(objectives: Sequence["Objective"]) -> "BatchedObjective":
        return BatchedObjective(tuple(objectives))


@dataclass(frozen=True)
class Objective(BaseObjective):
    """Maximize Σ coefficient·term (loss = −that), the same for every batch element (up to per-element indices)."""

    terms: tuple[tuple[float, Term], ...]

    def __post_init__(self):
        merged: dict[Term, float] = {}
        for c, t in self.terms:
            merged[t] = merged.get(t, 0.0) + float(c)
        object.__setattr__(self, "terms", tuple((c, t) for t, c in merged.items() if c != 0))

    def __call__(self, acts: Activations) -> torch.Tensor:
        total = None
        for c, t in self.terms:
            v = c * t.value(acts)
            total = v if total is None else total + v
        if total is None:
            return torch.zeros(acts.batch, device=acts.image.device if acts.image is not None else None)
        return -total

    def layers(self) -> frozenset[str]:
        return frozenset(name for _, t in self.terms for name in t.layers())

    @property
    def needs_logits(self) -> bool:
        return any(t.needs_logits for _, t in self.terms)

    def prepared_terms(self) -> list[Term]:
        """The terms that compute targets before they can be evaluated (matching terms)."""
        return [t for _, t in self.terms if hasattr(t, "prepare")]

    def prepare(self, prep: "Preparation") -> None:
        for t in self.prepared_terms():
            t.prepare(prep)

    @property
    def follows_transforms(self) -> bool:
        return any(getattr(t, "follows_transforms", False) for t in self.prepared_terms())

    def tagged(self, acts: Activations) -> dict[str, torch.Tensor]:
        """Each tagged term's value (B,), unweighted, with the sign of a loss for penalties and matches (an error,
        a TV, a range excess: lower is better); untagged terms are left out."""
        return {t.tag: -t.value(acts) if isinstance(t, (FeatureMatch, GramMatch)) else t.value(acts)
                for _, t in self.terms if getattr(t, "tag", None)}

    def describe(self, b: int | None = None) -> str:
        if not self.terms:
            return "nothing"
        parts = []
        for i, (c, t) in enumerate(self.terms):
            mag = "" if abs(c) == 1 else f"{_num(abs(c))}·"
            sign = ("−" if c < 0 else "") if i == 0 else (" − " if c < 0 else " + ")
            parts.append(f"{sign}{mag}{t.name(b)}")
        return "maximize " + "".join(parts)

    @property
    def description(self) -> str:
        return self.describe()

    def captions(self, batch: int) -> list[str]:
        return [self.describe(b) for b in range(batch)]

    def key(self) -> list:
        return [[c, t.key()] for c, t in self.terms]

    def __add__(self, other: BaseObjective) -> BaseObjective:
        if isinstance(other, BatchedObjective):
            return other.__radd__(self)
        if not isinstance(other, Objective):
            return NotImplemented
        return Objective(self.terms + other.terms)

    def __mul__(self, k: float) -> "Objective":
        if not isinstance(k, (int, float)):
            return NotImplemented
        return Objective(tuple((c * float(k), t) for c, t in self.terms))


@dataclass(frozen=True)
class BatchedObjective(BaseObjective):
    """Element b of the batch maximizes `parts[b]`, evaluated on row b alone."""

    parts: tuple[Objective, ...]

    def __post_init__(self):
        if not self.parts:
            raise ValueError("a batched objective needs at least one objective")
        for p in self.parts:
            if not isinstance(p, Objective):
                raise TypeError(f"batched objectives are made of Objective, not {type(p).__name__}")

    def __len__(self) -> int:
        return len(self.parts)

    def prepared_terms(self) -> list[Term]:
        return [t for p in self.parts for t in p.prepared_terms()]

    def prepare(self, prep: "Preparation") -> None:
        for p in self.parts:
            p.prepare(prep)

    @property
    def follows_transforms(self) -> bool:
        return any(p.follows_transforms for p in self.parts)

    def __call__(self, acts: Activations) -> torch.Tensor:
        if acts.batch != len(self.parts):
            raise ValueError(f"a batched objective of {len(self.parts)} objectives on a batch of {acts.batch}")
        return torch.cat([p(acts.rows(slice(b, b + 1))) for b, p in enumerate(self.parts)])

    def layers(self) -> frozenset[str]:
        return frozenset().union(*(p.layers() for p in self.parts))

    @property
    def needs_logits(self) -> bool:
        return any(p.needs_logits for p in self.parts)

    @property
    def description(self) -> str:
        return "; ".join(p.description for p in self.parts)

    def captions(self, batch: int | None = None) -> list[str]:
        return [p.description for p in self.parts]

    def key(self) -> list:
        return [{"batched": [p.key() for p in self.parts]}]

    def __add__(self, other: BaseObjective) -> "BatchedObjective":
        if isinstance(other, Objective):
            return BatchedObjective(tuple(p + other for p in self.parts))
        if isinstance(other, BatchedObjective):
            if len(other) != len(self):
                raise ValueError(f"cannot add batched objectives of {len(self)} and {len(other)} elements")
            return BatchedObjective(tuple(a + b for a, b in zip(self.parts, other.parts)))
        return NotImplemented

    def __radd__(self, other: Objective) -> "BatchedObjective":
        if isinstance(other, Objective):
            return BatchedObjective(tuple(other + p for p in self.parts))
        return NotImplemented

    def __mul__(self, k: float) -> "BatchedObjective":
        if not isinstance(k, (int, float)):
            return NotImplemented
        return BatchedObjective(tuple(p * k for p in self.parts))


def _label(label: str | Sequence[str] | None) -> str | tuple[str, ...] | None:
    if label is None or isinstance(label, str):
        return label
    return tuple(str(x) for x in label)


def class_logit(index: int | Sequence[int], label: str | Sequence[str] | None = None) -> Objective:
    """Maximize the unnormalized score of class `index` (one index, or one per batch element)."""
    return Objective(((1.0, Logit(_index(index), _label(label))),))


def class_log_probability(index: int | Sequence[int], label: str | Sequence[str] | None = None) -> Objective:
    """Maximize log p(class `index`) (one index, or one per batch element): minus the cross-entropy."""
    return Objective(((1.0, LogProbability(_index(index), _label(label))),))


def channel(layer: str, c: int | Sequence[int]) -> Objective:
    """Maximize the mean of channel `c` of `layer` (one channel, or one per batch element)."""
    return Objective(((1.0, ChannelMean(layer, _index(c))),))


def neuron(layer: str, c: int | Sequence[int], y: int | None = None, x: int | None = None) -> Objective:
    """Maximize one unit of channel `c` of `layer`: position (y, x) of its map, the centre by default."""
    return Objective(((1.0, Neuron(layer, _index(c), y, x)),))


def layer_l2(layer: str) -> Objective:
    """DeepDream: maximize the L2 norm of `layer`'s output."""
    return Objective(((1.0, LayerL2(layer)),))


def l2_penalty(weight: float) -> Objective:
    """Penalize weight·Σ x² of the normalized input (add it: `class_logit(...) + l2_penalty(0.01)`)."""
    return Objective(((-float(weight), ImageL2()),))


def total_variation(weight: float, beta: float | None = None, per_value: bool = False) -> Objective:
    """Penalize weight·TV of the [0, 1] image (add it); `beta`, `per_value`: see `ImageTV`."""
    return Objective(((-float(weight), ImageTV(beta, per_value)),))


def range_penalty(weight: float) -> Objective:
    """Penalize weight·(mean squared excess of the pixels outside [0, 1]) (add it)."""
    return Objective(((-float(weight), RangePenalty()),))


def feature_match(layer: str, reference: torch.Tensor, weight: float = 1.0, *, smooth: bool = False,
                  follows_transforms: bool = False, tag: str = "content") -> Objective:
    """Match `layer`'s features to those of `reference` (B, C, H, W) in [0, 1]: see `FeatureMatch`."""
    return Objective(((float(weight), FeatureMatch(layer, reference, smooth, follows_transforms, tag)),))


def gram_match(layers: Sequence[str], sources: Sequence[torch.Tensor], source_side: int, weight: float = 1.0, *,
               smooth: bool = False, tag: str = "style") -> Objective:
    """Match the Gram matrices of `layers` to those of one source per batch element: see `GramMatch`."""
    return Objective(((float(weight), GramMatch(tuple(layers), tuple(sources), int(source_side), smooth, tag)),))


batched = BaseObjective.batched
