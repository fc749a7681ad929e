"""The layer table: each module's output shape, parameter count and receptive field (size, stride, offset).

Receptive fields are measured, not derived from a module list, so residual branches, TF "SAME" padding and
dilation are handled: a float64 copy of the model is made linear and positive (every conv/linear averages its
inputs, norms become identities, max-pools become average-pools, activations see values in (0, 1] where they pass
gradients), and the gradient of one output unit w.r.t. a constant input is non-zero exactly on its receptive field.
Two neighbouring units give the stride; the offset is the centre of unit (0, 0) in input pixels (it may be
negative: padding). A unit whose field reaches the input border is re-measured on a larger input.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from generator.hooks import hooked, record_outputs

MAX_SIDE = 4096


@dataclass
class ReceptiveField:
    size: int  # pixels (square fields; rows and columns agree for the models we build)
    stride: int
    offset: float  # centre of unit (0, 0), input pixels
    whole: bool = False  # the unit sees the whole input (global pooling, fully connected)

    def box(self, row: int, col: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) input pixels seen by unit (row, col), clipped at the image border."""
        if self.whole:
            return 0, 0, height, width
        half = (self.size - 1) / 2
        top = round(self.offset + row * self.stride - half)
        left = round(self.offset + col * self.stride - half)
        return max(top, 0), max(left, 0), min(top + self.size, height), min(left + self.size, width)


@dataclass
class LayerInfo:
    name: str
    type: str
    shape: tuple[int, ...] | None  # output shape without the batch dimension
    params: int
    rf: ReceptiveField | None

    def as_row(self) -> dict:
        row = asdict(self)
        row["shape"] = list(self.shape) if self.shape else None
        return row


def _linearize(model: nn.Module) -> nn.Module:
    m = copy.deepcopy(model).cpu().float().eval()
    for name, mod in list(m.named_modules()):
        for pname, p in mod.named_parameters(recurse=False):
            with torch.no_grad():
                if pname == "weight" and p.dim() >= 2:
                    p.fill_(1.0 / max(p[0].numel(), 1))  # each output averages its inputs
                elif pname == "weight":
                    p.fill_(1.0)
                else:
                    p.zero_()
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.running_var is not None:
            mod.running_mean.zero_()
            mod.running_var.fill_(1.0 - mod.eps)
    _swap_max_pools(m)
    return m


def _swap_max_pools(module: nn.Module) -> None:
    # A max-pool sends gradient to one input only; an average-pool of the same geometry sees the same field.
    for child_name, child in module.named_children():
        if isinstance(child, nn.MaxPool2d):
            setattr(module, child_name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding, child.ceil_mode))
        elif isinstance(child, nn.AdaptiveMaxPool2d):
            setattr(module, child_name, nn.AdaptiveAvgPool2d(child.output_size))
        else:
            _swap_max_pools(child)


def _extent(mask: torch.Tensor) -> tuple[int, int] | None:
    idx = torch.nonzero(mask).flatten()
    return (int(idx[0]), int(idx[-1])) if len(idx) else None


class _Enough(Exception):
    """Raised by a hook once every layer of interest has produced its output: the rest of the forward is skipped."""


NARROW = 64  # columns of the probe input: fields are measured along rows, so the input can be a tall strip
PIXEL_BUDGET = 16 * 224 * 224  # probe pixels per pass (float64, with gradients), whatever the side


def receptive_fields(model: nn.Module, names: list[str], channels: int, side: int) -> dict[str, ReceptiveField | None]:
    """Receptive field of each named layer with a 4-D output; None where it cannot be measured.

    Fields are measured along rows on a tall, narrow probe (side × 64), so even an 800-pixel field is cheap;
    square kernels are assumed (rows and columns agree)."""
    lin = _linearize(model)
    result: dict[str, ReceptiveField | None] = {}
    pending = list(names)
    # A field wider than twice the input covers the whole input from every unit, whatever its exact size: probing
    # up to 4× the input measures every field a reader can tell apart, and stops the doubling early for layers
    # whose field is global (after a squeeze-excite block's pooling), which would otherwise run to MAX_SIDE.
    limit = min(MAX_SIDE, max(4 * side, 256))
    while pending and side <= limit:
        retry = []
        chunk = max(1, PIXEL_BUDGET // (3 * side * NARROW))
        for start in range(0, len(pending), chunk):
            group = pending[start:start + chunk]
            for name, rf in _measure(lin, group, channels, side).items():
                if rf == "retry":
                    retry.append(name)
                else:
                    result[name] = rf
        pending, side = retry, side * 2
    for name in pending:  # still touching the border at 4× the input: every unit sees the whole input
        result[name] = ReceptiveField(MAX_SIDE, 0, 0.0, whole=True)
    return result


def _measure(lin: nn.Module, names: list[str], channels: int, side: int) -> dict:
    # Three samples per layer, seeded in one backward pass: the bottom edge of the first row's field, and the top
    # edges of the last two rows' fields. Fields up to about twice the probe's side fit this way, since each
    # sample needs only one of its edges inside the input. A tiny constant input keeps every activation inside its
    # pass-through range (ReLU6 below 6 even after many residual additions double it).
    x = torch.full((3 * len(names), channels, side, NARROW), 1e-6, dtype=torch.float32, requires_grad=True)
    acts: dict = {}

    def hook_for(name: str):
        def hook(_m, _i, output):
            acts[name] = output
            if len(acts) == len(names):
                raise _Enough

        return hook

    with hooked(lin, {n: hook_for(n) for n in names}):
        try:
            lin(x)
        except Exception:
            pass  # _Enough, or a failure further on: the layers recorded so far are still measured
    out: dict = {}
    seeds = []
    for i, name in enumerate(names):
        a = acts.get(name)
        if not isinstance(a, torch.Tensor) or a.dim() != 4 or not a.requires_grad:
            out[name] = None
            continue
        h = a.shape[-2]
        if h == 1:
            out[name] = ReceptiveField(side, 0, (side - 1) / 2, whole=True)
            continue
        seeds += [a[3 * i, :, 0, 0].sum(), a[3 * i + 1, :, h - 1, 0].sum(), a[3 * i + 2, :, h - 2, 0].sum()]
        out[name] = h
    if not seeds:
        return out
    (grad,) = torch.autograd.grad(sum(seeds), x)
    seen = grad.abs().sum((1, 3)) > 0  # (samples, rows)
    for i, name in enumerate(names):
        h = out.get(name)
        if not isinstance(h, int):
            continue
        first, last, before_last = (_extent(seen[3 * i + k]) for k in range(3))
        if first is None or last is None or before_last is None:
            out[name] = None
        elif first[1] == side - 1 or last[0] == 0 or before_last[0] == 0:  # an edge we need is clipped
            out[name] = "retry"
        else:
            stride = last[0] - before_last[0]
            double_half = first[1] - last[0] + (h - 1) * stride  # size - 1
            out[name] = ReceptiveField(double_half + 1, stride, first[1] - double_half / 2)
    return out


def layer_table(model: nn.Module, input_shape: tuple[int, int, int], device: torch.device, depth: int = 2,
                extra: list[str] | None = None) -> list[LayerInfo]:
    """One row per module down to `depth` levels (plus `extra` names), in forward order."""
    names = [n for n, _ in model.named_modules() if n and n.count(".") < depth]
    for n in extra or []:
        if n not in names:
            names.append(n)
    modules = dict(model.named_modules())
    x = torch.zeros(1, *input_shape, device=device)
    order: list[str] = []
    # pre-hooks: a container is listed when it is entered, before the modules inside it
    entered = {n: lambda m, i, n=n: order.append(n) for n in names}
    with torch.no_grad(), record_outputs(model, names) as outs, hooked(model, entered, pre=True):
        model(x)
    ordered = list(dict.fromkeys(order)) + [n for n in names if n not in order]
    spatial = [n for n in ordered if isinstance(outs.get(n), torch.Tensor) and outs[n].dim() == 4]
    rfs = receptive_fields(model, spatial, input_shape[0], input_shape[1])
    rows = []
    for n in ordered:
        o = outs.get(n)
        shape = tuple(o.shape[1:]) if isinstance(o, torch.Tensor) else None
        params = sum(p.numel() for p in modules[n].parameters())
        rows.append(LayerInfo(n, type(modules[n]).__name__, shape, params, rfs.get(n)))
    return rows


# Nonlinearities: where a model has enough of them, its default layers are their outputs. A convolution's raw output
# (before its BatchNorm and ReLU) is a linear map of the input: maximizing its mean only drives the image to black or
# white, and its activation maps are signed where a reader expects the unit's firing.
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
               nn.Hardswish)


def default_layers(model: nn.Module, input_shape: tuple[int, int, int], device: torch.device, count: int = 4) -> list[str]:
    """A spread of layers for a model whose spec names none: `count` evenly spaced modules (two levels deep)
    with spatial outputs, the last one included — only the nonlinearities among them when there are `count` or
    more, else the blocks that hold a nonlinearity (a ConvNeXt stage, a ResNet bottleneck, an EfficientNet stage),
    not the norm-and-conv steps between them (a ConvNeXt stem or downsampling layer ends in a LayerNorm or a raw conv).
    Outputs of one position (after global pooling) are never chosen: their maps are a single number."""
    names = [n for n, _ in model.named_modules() if n and n.count(".") < 2]
    with torch.no_grad(), record_outputs(model, names) as outs:
        model(torch.zeros(1, *input_shape, device=device))
    spatial = [n for n in names if isinstance(outs.get(n), torch.Tensor) and outs[n].dim() == 4
               and outs[n].shape[-1] * outs[n].shape[-2] > 1]
    # Prefer leaves and blocks over containers that hold them (a Sequential's output repeats its last child's).
    leaves = [n for n in spatial if not any(o.startswith(n + ".") for o in spatial)]
    modules = dict(model.named_modules())
    activations = [n for n in leaves if isinstance(modules[n], ACTIVATIONS)]
    blocks = [n for n in leaves if any(isinstance(m, ACTIVATIONS) for m in modules[n].modules())]
    if len(activations) >= count:
        leaves = activations
    elif len(blocks) >= count:
        leaves = blocks
    if len(leaves) <= count:
        return leaves
    step = (len(leaves) - 1) / (count - 1)
    return [leaves[round(i * step)] for i in range(count)]


def spread(maxima: np.ndarray, count: int) -> list[int]:
    """`count` channels evenly spaced over those that fire somewhere in the data set (a dead channel has no top
    patches to show); all channels if none fires."""
    alive = np.flatnonzero(np.asarray(maxima).max(0) > 0)
    pool = alive if len(alive) else np.arange(maxima.shape[1])
    if len(pool) <= count:
        return pool.tolist()
    return pool[np.linspace(0, len(pool) - 1, count).round().astype(int)].tolist()
