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
    def value(self, acts: Activations) -> torch.Tensor:
        return image_tv(acts.image)

    def name(self, b: int | None = None) -> str:
        return "TV(image)"


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


def total_variation(weight: float) -> Objective:
    """Penalize weight·TV of the [0, 1] image (add it)."""
    return Objective(((-float(weight), ImageTV()),))


batched = BaseObjective.batched
