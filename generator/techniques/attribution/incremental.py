"""Exact occlusion by incremental inference, as in Krypton (Nakandala, Kumar & Papakonstantinou, "Incremental and
Approximate Inference for Faster Occlusion-based Deep CNN Explanations", SIGMOD 2019).

A patch covering part of the input changes only the part of each layer's output that its receptive field reaches.
So each image goes through the model once with every layer's output kept, and then, for a batch of patches, each
layer recomputes only a box around the changed part: a convolution or pooling reads its input region from the kept
map (padded explicitly, as the layer pads) with the batch's recomputed box pasted in, and runs with no padding of
its own. Ops that act position by position (batch norm in eval mode, activations, the sum of two maps) keep the box,
or the union of two. A box has one size for every patch, so that their crops stack into one batch, and slides inward
at the borders: positions outside the changed part recompute to the kept values. From a node whose box covers its
whole map, or an op that mixes positions and is not modelled here (global pooling, flatten, linear, a permute), the
layers run on whole maps of the batch. An eval-mode batch norm is folded into the convolution before it, and an
activation overwrites the fresh output of the convolution before it, saving passes over the maps. The logits equal
a full forward of each covered image up to float rounding.

The model is traced with torch.fx, every convolution kept whole: a Conv2d subclass may pad inside its forward from
the input's size (EfficientNet-Lite's TensorFlow "SAME" padding), which fx cannot trace through, so its padding is
found once by a probe. A model fx cannot trace raises `Unsupported`, and occlusion runs a full forward per patch.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import itertools
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from generator import batching
from generator.errors import one_line
from generator.models import select_logits

# Modules that map each position to itself (and, in eval mode, Dropout and BatchNorm2d: `_position_wise_op`).
POSITION_WISE_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
                         nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus,
                         nn.Identity)
POSITION_WISE_FUNCTIONS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.neg,
    torch.add, torch.sub, torch.mul, torch.div, torch.maximum, torch.minimum, torch.neg,
    torch.relu, torch.relu_, torch.sigmoid, torch.tanh, torch.clamp, torch.clip,
    F.relu, F.relu6, F.hardtanh, F.leaky_relu, F.elu, F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid,
    F.softplus, F.sigmoid, F.tanh,
}
POSITION_WISE_METHODS = {name + suffix for name in ("add", "sub", "mul", "div", "neg", "relu", "sigmoid", "tanh",
                                                    "clamp", "clip") for suffix in ("", "_")}
PROBE_TOLERANCE = 1e-4  # relative: a wrong padding is off by the size of the values, float rounding by ~1e-6


class Unsupported(Exception):
    """The model cannot be swept incrementally; the message says why."""


class LeafConvTracer(fx.Tracer):
    """Keeps every Conv2d whole, subclasses too: they may pad inside their forward from the input's size."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, nn.Conv2d) or super().is_leaf_module(m, module_qualified_name)


# Geometry --------------------------------------------------------------------------------------------------------

Interval = tuple[int, int]  # [lo, hi) along one side of a map; lo == hi: nothing there


def hull(a: Interval, b: Interval) -> Interval:
    if a[0] == a[1]:
        return b
    if b[0] == b[1]:
        return a
    return min(a[0], b[0]), max(a[1], b[1])


@dataclass(frozen=True)
class Side:
    """One side (rows or columns) of a node's recomputed box, for each window position along that side."""
    length: int  # of the whole map
    changed: tuple[Interval, ...]  # the positions the patch can change
    size: int  # of the box: the longest changed interval, so that every patch's box has the same shape
    starts: tuple[int, ...]  # the box's first position: at the changed interval, slid inside the map

    @staticmethod
    def around(changed: list[Interval], length: int) -> Side:
        size = max(1, max(hi - lo for lo, hi in changed))
        return Side(length, tuple(changed), size, tuple(max(0, min(lo, length - size)) for lo, _ in changed))

    def positions(self, device) -> torch.Tensor:
        """(window positions, size): the map positions the box covers."""
        return torch.tensor(self.starts, device=device)[:, None] + torch.arange(self.size, device=device)


@dataclass(frozen=True)
class Box:
    rows: Side
    cols: Side

    @property
    def whole(self) -> bool:
        return self.rows.size == self.rows.length and self.cols.size == self.cols.length

    @property
    def area(self) -> int:
        return self.rows.size * self.cols.size


@dataclass(frozen=True)
class Window:
    """A convolution or pooling as a sliding window with explicit padding: `op(x, padding)` runs it, and it reads
    positions s·o − before … s·o − before + d·(k − 1) of its input for output position o."""
    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pads: tuple[int, int, int, int]  # top, bottom, left, right
    fill: float  # what the padding holds: 0 for convolutions, −inf for max pooling
    op: Callable[..., torch.Tensor]

    def reach(self, changed: Interval, axis: int, out_length: int) -> Interval:
        """The output positions whose window meets the changed input positions [lo, hi)."""
        lo, hi = changed
        if lo == hi:
            return 0, 0
        k, s, d, before = self.kernel[axis], self.stride[axis], self.dilation[axis], self.pads[2 * axis]
        first = max(0, -(-(lo + before - d * (k - 1)) // s))
        last = min(out_length - 1, (hi - 1 + before) // s)
        return (first, last + 1) if first <= last else (0, 0)

    def span(self, out_size: int, axis: int) -> int:
        """Input positions (padding included) that `out_size` consecutive outputs read."""
        return (out_size - 1) * self.stride[axis] + (self.kernel[axis] - 1) * self.dilation[axis] + 1

    def whole(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom, left, right = self.pads
        if top == bottom and left == right:
            return self.op(x, (top, left))
        return self.op(F.pad(x, (left, right, top, bottom), value=self.fill), (0, 0))


def _conv_op(conv: nn.Conv2d) -> Callable[..., torch.Tensor]:
    return lambda x, padding: F.conv2d(x, conv.weight, conv.bias, conv.stride, padding, conv.dilation, conv.groups)


def _declared_pads(conv: nn.Conv2d) -> tuple[int, int, int, int] | None:
    """A plain Conv2d's zero padding, from its attributes; None where only a probe can tell."""
    if type(conv).forward is not nn.Conv2d.forward or conv.padding_mode != "zeros":
        return None
    if conv.padding == "valid":
        return 0, 0, 0, 0
    if conv.padding == "same":  # PyTorch puts the odd pixel at the end
        totals = [d * (k - 1) for k, d in zip(conv.kernel_size, conv.dilation)]
        return totals[0] // 2, totals[0] - totals[0] // 2, totals[1] // 2, totals[1] - totals[1] // 2
    return conv.padding[0], conv.padding[0], conv.padding[1], conv.padding[1]


def _pad_splits(n_in: int, n_out: int, k: int, s: int, d: int) -> list[tuple[int, int]]:
    """(before, after) paddings of one side that give n_out outputs from n_in inputs, the even splits first."""
    least = max(0, (n_out - 1) * s + d * (k - 1) + 1 - n_in)
    splits = []
    for total in range(least, least + s):
        even = [(total // 2, total - total // 2), (total - total // 2, total // 2)]
        splits += list(dict.fromkeys(even + [(b, total - b) for b in range(total + 1)]))
    return splits


@torch.no_grad()
def _probed_pads(conv: nn.Conv2d, in_shape: torch.Size, out_shape: torch.Size, device,
                 dtype) -> tuple[int, int, int, int] | None:
    """The zero padding a Conv2d subclass applies in its forward: the one the sizes allow (a 1 × 1 convolution's),
    or the candidate whose padding-free convolution reproduces the module's output on a random input (random, so
    that every border position tells). Whether the forward is a plain convolution of its weight at all is left to
    the check of the traced pass's logits (occlusion.py)."""
    axes = [_pad_splits(in_shape[2 + a], out_shape[2 + a], conv.kernel_size[a], conv.stride[a], conv.dilation[a])
            for a in (0, 1)]
    candidates = list(itertools.product(*axes))
    if len(candidates) == 1:
        return candidates[0][0] + candidates[0][1]
    z = torch.randn(tuple(in_shape), generator=torch.Generator().manual_seed(0)).to(device, dtype)
    expected = conv(z)
    if not isinstance(expected, torch.Tensor) or expected.shape != out_shape:
        return None
    op = _conv_op(conv)
    tolerance = PROBE_TOLERANCE * (1 + float(expected.abs().max()))
    for (top, bottom), (left, right) in candidates:
        got = op(F.pad(z, (left, right, top, bottom)), (0, 0))
        if got.shape == expected.shape and float((got - expected).abs().max()) <= tolerance:
            return top, bottom, left, right
    return None


def conv_window(conv: nn.Conv2d, in_shape: torch.Size, out_shape: torch.Size, device, dtype) -> Window | None:
    pads = _declared_pads(conv) or _probed_pads(conv, in_shape, out_shape, device, dtype)
    if pads is None:
        return None
    return Window(conv.kernel_size, conv.stride, conv.dilation, pads, 0.0, _conv_op(conv))


@torch.no_grad()
def fold_batch_norm(window: Window, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> Window:
    """A convolution and the eval-mode batch norm after it as one convolution: one pass over the map less."""
    scale = (bn.running_var + bn.eps).rsqrt()
    shift = -bn.running_mean * scale
    if bn.weight is not None:
        scale, shift = scale * bn.weight, shift * bn.weight
    if bn.bias is not None:
        shift = shift + bn.bias
    weight = conv.weight * scale.view(-1, 1, 1, 1)
    bias = shift if conv.bias is None else conv.bias * scale + shift
    op = lambda x, padding: F.conv2d(x, weight, bias, conv.stride, padding, conv.dilation, conv.groups)  # noqa: E731
    return dataclasses.replace(window, op=op)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def pool_window(pool: nn.Module, in_shape: torch.Size, out_shape: torch.Size) -> Window | None:
    """MaxPool2d (padding −inf, ceil mode as extra padding at the end) or AvgPool2d counting zero padding."""
    k, p = _pair(pool.kernel_size), _pair(pool.padding)
    s = _pair(pool.stride or pool.kernel_size)
    if isinstance(pool, nn.MaxPool2d) and not pool.return_indices:
        d = _pair(pool.dilation)
        extra = [max(0, (out_shape[2 + a] - 1) * s[a] + d[a] * (k[a] - 1) + 1 - in_shape[2 + a] - 2 * p[a])
                 for a in (0, 1)]
        op = lambda x, padding: F.max_pool2d(x, k, s, padding, d)  # noqa: E731
        return Window(k, s, d, (p[0], p[0] + extra[0], p[1], p[1] + extra[1]), -math.inf, op)
    if isinstance(pool, nn.AvgPool2d) and not pool.ceil_mode and (pool.count_include_pad or not any(p)):
        op = lambda x, padding: F.avg_pool2d(x, k, s, padding, False, True, pool.divisor_override)  # noqa: E731
        return Window(k, s, (1, 1), (p[0], p[0], p[1], p[1]), 0.0, op)
    return None


# The traced graph --------------------------------------------------------------------------------------------------

def trace(module: nn.Module) -> fx.GraphModule:
    try:
        graph = LeafConvTracer().trace(module)
    except Exception as exc:  # tracing runs the model's own Python, which may fail in any way
        raise Unsupported(f"torch.fx cannot trace it ({one_line(exc)})") from exc
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise Unsupported(f"its forward takes {len(placeholders)} inputs")
    return fx.GraphModule(module, graph)


def _inplace_flag(fn, args, kwargs) -> bool:
    try:
        bound = inspect.signature(fn).bind(*args, **kwargs)
    except (TypeError, ValueError):  # a builtin without a signature, or another call convention
        return False
    return bound.arguments.get("inplace") is True


def mutates_input(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether the op writes into its first argument (`relu_`, `F.relu(x, inplace=True)`, ReLU(inplace=True))."""
    if node.op == "call_module":
        return getattr(modules[node.target], "inplace", False) is True
    if node.op == "call_method":
        return node.target.endswith("_") and not node.target.endswith("__")
    if node.op == "call_function":
        name = getattr(node.target, "__name__", "")
        return (name.endswith("_") and not name.endswith("__")) or _inplace_flag(node.target, node.args, node.kwargs)
    return False


def functionalize(graph: fx.Graph, modules: dict[str, nn.Module]) -> None:
    """Point every later reader of an argument that an op writes into at that op's output, so the graph means the
    same with the op computing a new tensor (a `x.relu_()` whose result is dropped still changes what follows)."""
    order = {n: i for i, n in enumerate(graph.nodes)}
    for node in graph.nodes:
        if node.args and isinstance(node.args[0], fx.Node) and mutates_input(node, modules):
            written = node.args[0]
            for user in list(written.users):
                if order[user] > order[node]:
                    user.replace_input_with(written, node)


def call(node: fx.Node, gm: fx.GraphModule, modules: dict[str, nn.Module], args: tuple, kwargs: dict,
         copy_first: bool = False) -> Any:
    """One node's op on the given arguments; `copy_first` for an op that writes into its first argument: it gets a
    copy (the kept maps and the recomputed boxes are read again later)."""
    if node.op == "get_attr":
        return functools.reduce(getattr, node.target.split("."), gm)
    if copy_first and isinstance(args[0], torch.Tensor):
        args = (args[0].clone(),) + tuple(args[1:])
    if node.op == "call_module":
        return modules[node.target](*args, **kwargs)
    if node.op == "call_method":
        return getattr(args[0], node.target)(*args[1:], **kwargs)
    return node.target(*args, **kwargs)


def ancestors(node: fx.Node) -> set[fx.Node]:
    seen, todo = set(), [node]
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo += n.all_input_nodes
    return seen


def constants(args: Any) -> list:
    """The values among (nested) arguments that are not other nodes' outputs."""
    found: list = []
    fx.node.map_aggregate(args, found.append)
    return [a for a in found if not isinstance(a, fx.Node)]


def spatial(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() == 4


def channel_wise(value: Any) -> bool:
    """A value that broadcasts over a map the same way at every position: a number or a per-channel tensor."""
    if not isinstance(value, torch.Tensor):
        return not isinstance(value, (list, tuple, dict))
    return value.numel() == 1 or (value.dim() >= 3 and tuple(value.shape[-2:]) == (1, 1))


# The sweep ---------------------------------------------------------------------------------------------------------

@dataclass
class Crop:
    """How a batch reads a region of one node's output: its kept map, padded as the reader pads it, with the
    batch's recomputed box pasted over it. Map and boxes sit in one buffer of channel vectors (`Kept.buffers`): the
    padded map's positions row by row, then the batch's boxes; a crop is one `index_select` from it, which copies
    whole channel vectors (on the CPU ~8× faster than indexing rows and columns, then pasting). The tables hold,
    per window position, padded map positions and the matching position in the box, or −1 outside it."""
    source: fx.Node
    key: tuple  # of its buffer: (source, pads, fill)
    rows: torch.Tensor
    rows_in_box: torch.Tensor
    cols: torch.Tensor
    cols_in_box: torch.Tensor
    width: int  # of the padded map
    area: int  # of the padded map: where the boxes start in the buffer
    box_size: tuple[int, int]

    @staticmethod
    def of(source: fx.Node, box: Box, starts: tuple[list[int], list[int]], sizes: tuple[int, int],
           pads: tuple[int, int, int, int], fill: float, device) -> Crop:
        """The region of `sizes` at `starts` (map positions, before padding) of each window position."""
        tables = []
        for axis, side in enumerate((box.rows, box.cols)):
            at = torch.tensor(starts[axis])[:, None] + torch.arange(sizes[axis])
            inside = at - torch.tensor(side.starts)[:, None]
            inside = torch.where((inside >= 0) & (inside < side.size), inside, -1)
            tables += [(at + pads[2 * axis]).to(device), inside.to(device)]
        height, width = box.rows.length + pads[0] + pads[1], box.cols.length + pads[2] + pads[3]
        return Crop(source, (source, pads, fill), *tables, width, height * width, (box.rows.size, box.cols.size))

    def is_box(self) -> bool:
        """Whether the crop is exactly the source's box at every window position."""
        return all(t.shape[1] == size and bool((t == torch.arange(size, device=t.device)).all())
                   for t, size in zip((self.rows_in_box, self.cols_in_box), self.box_size))

    def take(self, buffer: torch.Tensor, wy: torch.Tensor, wx: torch.Tensor) -> torch.Tensor:
        """buffer: (area + B·h·w, C) with this batch's boxes in → (B, C, rows, cols), channels-last in memory."""
        rows, cols = self.rows[wy][:, :, None], self.cols[wx][:, None, :]
        in_rows, in_cols = self.rows_in_box[wy][:, :, None], self.cols_in_box[wx][:, None, :]
        batch = torch.arange(len(wy), device=wy.device)[:, None, None]
        in_box = self.area + (batch * self.box_size[0] + in_rows) * self.box_size[1] + in_cols
        index = torch.where((in_rows >= 0) & (in_cols >= 0), in_box, rows * self.width + cols)
        return buffer.index_select(0, index.flatten()).view(*index.shape, -1).permute(0, 3, 1, 2)


@dataclass
class Kept:
    """One image's pass without a patch: what crops read, and the outputs that do not depend on the input."""
    values: dict[fx.Node, Any]  # of the nodes that do not depend on the input
    buffers: dict[tuple, torch.Tensor]  # (node, pads, fill) → (padded area + room · box area, C); see `Crop`
    room: int  # boxes a buffer holds: the most windows a batch may have
    image: torch.Tensor  # (H, W, C)
    fill: torch.Tensor  # (H, W, C): what covers a window
    logits: torch.Tensor  # (1, classes)


@dataclass
class Batch:
    """The state of one batch of windows going through the graph."""
    kept: Kept
    wy: torch.Tensor  # (B,) each window's row among the window positions
    wx: torch.Tensor  # (B,) and column
    values: dict[fx.Node, Any] = field(default_factory=dict)
    whole: dict[fx.Node, torch.Tensor] = field(default_factory=dict)  # boxes pasted into whole maps
    pasted: set[tuple] = field(default_factory=set)  # buffers holding this batch's boxes

    def read(self, crop: Crop) -> torch.Tensor:
        buffer = self.kept.buffers[crop.key]
        if crop.key not in self.pasted:
            box = self.values[crop.source].permute(0, 2, 3, 1)
            buffer[crop.area:crop.area + box[..., 0].numel()].view(box.shape).copy_(box)
            self.pasted.add(crop.key)
        return crop.take(buffer, self.wy, self.wx)


class Sweep:
    """Logits of an image with each window covered, recomputing only what the window changes. Built for one model
    and one geometry (the window's side, and its starts along the rows and along the columns): the constructor
    traces and plans (raises `Unsupported`); then `keep(image, fill, room)` once per image and
    `logits(kept, windows)` per batch of at most `room` windows."""

    def __init__(self, model, sample: torch.Tensor, window: int, window_starts: list[list[int]]):
        self.gm = trace(model.module)
        self.modules = dict(self.gm.named_modules())
        functionalize(self.gm.graph, self.modules)
        self.mutating = {n for n in self.gm.graph.nodes if mutates_input(n, self.modules)}
        self.device, self.dtype = sample.device, sample.dtype
        self.nx = len(window_starts[1])
        values = self._interpret(sample)
        self.output = self._logits_node(values, model.logits_key)
        wanted = ancestors(self.output)
        self.nodes = [n for n in self.gm.graph.nodes if n in wanted]
        self.input = self.nodes[0]
        if self.input.op != "placeholder":
            raise Unsupported("its logits do not depend on its input")
        self.shapes = {n: v.shape for n, v in values.items() if isinstance(v, torch.Tensor)}
        self.windows = {n: w for n in self.nodes if (w := self._window(n, values)) is not None}
        self._fold_batch_norms()
        self.in_place = {n: twin for n in self.nodes if (twin := self._in_place_twin(n)) is not None}
        self.state: dict[fx.Node, str] = {}  # "clean" (as kept), "box" (recomputed in its box), "whole"
        self.boxes: dict[fx.Node, Box] = {}
        self.crops: dict[fx.Node, dict[fx.Node, Crop]] = {}  # box node → the crop of each input it reads
        self.steps = [(n, self._plan(n, values, window, window_starts)) for n in self.nodes]
        self.last_use = self._last_uses()
        # A box that an op on whole maps reads is pasted into the whole kept map.
        self.whole_crops = {n: Crop.of(n, box, ([0] * len(box.rows.starts), [0] * len(box.cols.starts)),
                                       (box.rows.length, box.cols.length), (0, 0, 0, 0), 0.0, self.device)
                            for n, box in self.boxes.items() if self._read_whole(n)}
        self.buffers = {c.key: c for crops in [*self.crops.values(), self.whole_crops] for c in crops.values()}

    # Planning ----------------------------------------------------------------------------------------------------

    def _interpret(self, x: torch.Tensor) -> dict[fx.Node, Any]:
        values: dict[fx.Node, Any] = {}
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                values[node] = x
            elif node.op != "output":
                args, kwargs = fx.node.map_arg((node.args, node.kwargs), values.__getitem__)
                values[node] = call(node, self.gm, self.modules, args, kwargs, node in self.mutating)
        return values

    def _logits_node(self, values: dict[fx.Node, Any], key) -> fx.Node:
        out_node = next(n for n in self.gm.graph.nodes if n.op == "output")
        logits = select_logits(fx.node.map_arg(out_node.args[0], values.__getitem__), key)
        found = [n for n, v in values.items() if v is logits]
        if not found or not isinstance(logits, torch.Tensor) or logits.dim() != 2:
            raise Unsupported("its logits are not the output of one traced op")
        return found[-1]

    def _window(self, node: fx.Node, values: dict[fx.Node, Any]) -> Window | None:
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            return None
        module, x, y = self.modules[node.target], values[node.args[0]], values[node]
        if not (spatial(x) and spatial(y)):
            return None
        if isinstance(module, nn.Conv2d):
            return conv_window(module, x.shape, y.shape, self.device, self.dtype)
        if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            return pool_window(module, x.shape, y.shape)
        return None

    def _fold_batch_norms(self) -> None:
        """Fold each eval-mode BatchNorm2d into the convolution before it, where nothing else reads the latter."""
        for node in list(self.nodes):
            conv = node.args[0] if node.op == "call_module" and len(node.args) == 1 else None
            if not (conv in self.windows and conv.op == "call_module" and len(conv.users) == 1
                    and isinstance(self.modules[conv.target], nn.Conv2d) and self._eval_batch_norm(node)):
                continue
            self.windows[conv] = fold_batch_norm(self.windows[conv], self.modules[conv.target],
                                                 self.modules[node.target])
            node.replace_all_uses_with(conv)
            self.nodes.remove(node)
            self.gm.graph.erase_node(node)
            if self.output is node:
                self.output = conv

    def _in_place_twin(self, node: fx.Node) -> nn.Module | None:
        """A copy of an activation module that writes into its input, where that input is a fresh convolution or
        pooling output that nothing else reads: a batch then spends one allocation and one pass over the map less
        (the kept pass keeps the module as it is: its maps are read again)."""
        module = self.modules[node.target] if node.op == "call_module" else None
        source = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        if not (isinstance(module, POSITION_WISE_MODULES) and hasattr(module, "inplace") and source in self.windows
                and len(source.users) == 1):
            return None
        twin = copy.copy(module)  # shares the parameters; the model's own module is left as it is
        twin.inplace = True
        return twin

    def _eval_batch_norm(self, node: fx.Node) -> bool:
        m = self.modules[node.target] if node.op == "call_module" else None
        return isinstance(m, nn.BatchNorm2d) and not m.training and m.running_mean is not None

    def _plan(self, node: fx.Node, values: dict[fx.Node, Any], window: int, window_starts: list[list[int]]):
        """How the node is computed for a batch, and its state."""
        inputs = node.all_input_nodes
        if node is self.input:
            return self._plan_input(node, window, window_starts)
        if all(self.state[n] == "clean" for n in inputs):
            self.state[node] = "clean"
            return lambda b: b.kept.values[node]
        if node in self.windows and self.state[inputs[0]] == "box":
            return self._plan_window(node)
        if self._position_wise(node, values):
            return self._plan_position_wise(node)
        self.state[node] = "whole"
        return self._whole_step(node)

    def _plan_input(self, node: fx.Node, window: int, window_starts: list[list[int]]):
        box = Box(*(Side.around([(s, min(s + window, n)) for s in starts], n)
                    for starts, n in zip(window_starts, self.shapes[node][2:])))
        self._set_box(node, box)
        rows, cols = box.rows.positions(self.device), box.cols.positions(self.device)
        covered = [(at >= torch.tensor(s, device=self.device)[:, None])
                   & (at < torch.tensor(s, device=self.device)[:, None] + window)
                   for at, s in ((rows, window_starts[0]), (cols, window_starts[1]))]

        def covered_input(b: Batch) -> torch.Tensor:
            r, c = rows[b.wy][:, :, None], cols[b.wx][:, None, :]
            inside = (covered[0][b.wy][:, :, None] & covered[1][b.wx][:, None, :])[..., None]
            return torch.where(inside, b.kept.fill[r, c], b.kept.image[r, c]).permute(0, 3, 1, 2)

        return covered_input

    def _plan_window(self, node: fx.Node):
        source, w = node.args[0], self.windows[node]
        src = self.boxes[source]
        out_shape = self.shapes[node]
        changed = [[w.reach(c, axis, out_shape[2 + axis]) for c in side.changed]
                   for axis, side in enumerate((src.rows, src.cols))]
        box = Box(Side.around(changed[0], out_shape[2]), Side.around(changed[1], out_shape[3]))
        if box.whole:
            self.state[node] = "whole"
            return self._whole_step(node)
        self._set_box(node, box)
        starts = [[o * w.stride[a] - w.pads[2 * a] for o in side.starts] for a, side in enumerate((box.rows,
                                                                                                    box.cols))]
        sizes = (w.span(box.rows.size, 0), w.span(box.cols.size, 1))
        crop = Crop.of(source, src, starts, sizes, w.pads, w.fill, self.device)
        if crop.is_box():  # a 1 × 1 convolution's: the input box itself
            return lambda b: w.op(b.values[source], (0, 0))
        self.crops[node] = {source: crop}
        return lambda b: w.op(b.read(crop), (0, 0))

    def _position_wise(self, node: fx.Node, values: dict[fx.Node, Any]) -> bool:
        """Whether the node maps each position of its boxed inputs (of the same size, channels aside) to the same
        position, the other inputs being numbers or per-channel constants."""
        out = values[node]
        if not (spatial(out) and self._position_wise_op(node)):
            return False
        for n in node.all_input_nodes:
            if self.state[n] == "whole":
                return False
            if self.state[n] == "box" and (self.shapes[n][0], *self.shapes[n][2:]) != (out.shape[0], *out.shape[2:]):
                return False
            if self.state[n] == "clean" and not channel_wise(values[n]):
                return False
        return all(channel_wise(a) for a in constants((node.args, node.kwargs)))

    def _position_wise_op(self, node: fx.Node) -> bool:
        if node.op == "call_module":
            m = self.modules[node.target]
            dropout = isinstance(m, (nn.Dropout, nn.Dropout2d)) and not m.training
            return isinstance(m, POSITION_WISE_MODULES) or dropout or self._eval_batch_norm(node)
        if node.op == "call_method":
            return node.target in POSITION_WISE_METHODS
        if node.op == "call_function" and node.target in (torch.cat, torch.concat):  # along the channels only
            return (node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)) in (1, -3)
        return node.op == "call_function" and node.target in POSITION_WISE_FUNCTIONS

    def _plan_position_wise(self, node: fx.Node):
        boxed = [n for n in node.all_input_nodes if self.state[n] == "box"]
        sides = []
        for axis in (0, 1):
            per_window = zip(*[(self.boxes[n].rows, self.boxes[n].cols)[axis].changed for n in boxed])
            sides.append(Side.around([functools.reduce(hull, c) for c in per_window], self.shapes[node][2 + axis]))
        box = Box(*sides)
        if box.whole:
            self.state[node] = "whole"
            return self._whole_step(node)
        self._set_box(node, box)
        starts = (list(box.rows.starts), list(box.cols.starts))
        crops = {n: Crop.of(n, self.boxes[n], starts, (box.rows.size, box.cols.size), (0, 0, 0, 0), 0.0,
                            self.device)
                 for n in boxed if self.boxes[n] != box}
        self.crops[node] = crops

        def operand(b: Batch, n: fx.Node) -> Any:
            if n in crops:
                return b.read(crops[n])
            return b.values[n] if self.state[n] == "box" else b.kept.values[n]

        def step(b: Batch) -> torch.Tensor:
            args, kwargs = fx.node.map_arg((node.args, node.kwargs), functools.partial(operand, b))
            return self._run_batch(node, args, kwargs)

        return step

    def _whole_step(self, node: fx.Node):
        # Whole maps come channels-last; an op that may reshape them (`.view` over a map) gets the usual layout.
        reshapes = node not in self.windows and not self._position_wise_op(node)

        def value(b: Batch, n: fx.Node) -> Any:
            v = self._whole_value(b, n)
            return v.contiguous() if reshapes and spatial(v) else v

        def step(b: Batch) -> Any:
            args, kwargs = fx.node.map_arg((node.args, node.kwargs), functools.partial(value, b))
            return self._run_batch(node, args, kwargs)

        return step

    def _set_box(self, node: fx.Node, box: Box) -> None:
        self.state[node] = "box"
        self.boxes[node] = box

    def _read_whole(self, node: fx.Node) -> bool:
        """Whether some reader of a box node takes whole maps."""
        return node is self.output or any(self.state.get(u) == "whole" for u in node.users)

    def _last_uses(self) -> dict[fx.Node, list[fx.Node]]:
        """After each node, the values no later node reads."""
        last: dict[fx.Node, fx.Node] = {}
        for node in self.nodes:
            for n in node.all_input_nodes:
                last[n] = node
        uses: dict[fx.Node, list[fx.Node]] = {n: [] for n in self.nodes}
        for n, user in last.items():
            if n is not self.output:
                uses[user].append(n)
        return uses

    # Running -----------------------------------------------------------------------------------------------------

    def _run_batch(self, node: fx.Node, args: tuple, kwargs: dict) -> Any:
        if node in self.in_place:
            return self.in_place[node](*args)
        return self._run_whole(node, args, kwargs)

    def _run_whole(self, node: fx.Node, args: tuple, kwargs: dict) -> Any:
        if node in self.windows:
            return self.windows[node].whole(args[0])
        return call(node, self.gm, self.modules, args, kwargs, node in self.mutating)

    def _whole_value(self, b: Batch, node: fx.Node) -> Any:
        """A node's output for the whole batch on whole maps: a box pasted into the kept map."""
        if self.state[node] == "clean":
            return b.kept.values[node]
        if self.state[node] == "whole":
            return b.values[node]
        if node not in b.whole:
            b.whole[node] = b.read(self.whole_crops[node])
        return b.whole[node]

    def keep(self, image: torch.Tensor, fill: torch.Tensor, room: int) -> Kept:
        """The pass without a window: image and fill (1, C, H, W); buffers with room for `room` windows' boxes."""
        values: dict[fx.Node, Any] = {self.input: image}
        for node in self.nodes[1:]:
            args, kwargs = fx.node.map_arg((node.args, node.kwargs), values.__getitem__)
            values[node] = self._run_whole(node, args, kwargs)
        buffers = {key: self._buffer(values[crop.source], crop, room) for key, crop in self.buffers.items()}
        clean = {n: v for n, v in values.items() if self.state[n] == "clean"}
        return Kept(clean, buffers, room, image[0].permute(1, 2, 0).contiguous(),
                    fill[0].permute(1, 2, 0).contiguous(), values[self.output])

    @staticmethod
    def _buffer(x: torch.Tensor, crop: Crop, room: int) -> torch.Tensor:
        """The kept map padded as `crop` reads it, its positions row by row, then room for the boxes."""
        _, pads, value = crop.key
        top, bottom, left, right = pads
        if any(pads):
            x = F.pad(x, (left, right, top, bottom), value=value)
        buffer = x.new_empty(crop.area + room * crop.box_size[0] * crop.box_size[1], x.shape[1])
        buffer[:crop.area].view(x.shape[2], x.shape[3], -1).copy_(x[0].permute(1, 2, 0))
        return buffer

    def logits(self, kept: Kept, windows: torch.Tensor) -> torch.Tensor:
        """(B,) window indices (row-major), B at most `kept.room` → (B, classes) logits of the image with each
        window covered."""
        if len(windows) > kept.room:
            raise ValueError(f"{len(windows)} windows in a batch; the buffers hold {kept.room}")
        b = Batch(kept, windows // self.nx, windows % self.nx)
        for node, step in self.steps:
            b.values[node] = step(b)
            for done in self.last_use[node]:
                b.values.pop(done, None)
                b.whole.pop(done, None)
        out = self._whole_value(b, self.output)
        return out.expand(len(windows), -1) if self.state[self.output] == "clean" else out

    # What it saves -----------------------------------------------------------------------------------------------

    def recomputed(self) -> dict[str, float]:
        """Share of a full forward's work that a window recomputes: of the output positions of every op
        ("positions"), and of the multiply-adds of the convolutions and linear layers ("flops")."""
        done = {"positions": 0, "flops": 0}
        full = {"positions": 0, "flops": 0}
        for node in self.nodes[1:]:
            if node not in self.shapes or self.state[node] == "clean":
                continue
            shape = self.shapes[node]
            share = self.boxes[node].area / (shape[2] * shape[3]) if self.state[node] == "box" else 1.0
            work = {"positions": shape.numel(), "flops": shape.numel() * self._macs_per_output(node)}
            for k in work:
                done[k] += work[k] * share
                full[k] += work[k]
        return {k: done[k] / full[k] if full[k] else 1.0 for k in done}

    def _macs_per_output(self, node: fx.Node) -> int:
        module = self.modules.get(node.target) if node.op == "call_module" else None
        if isinstance(module, nn.Conv2d):
            return module.weight[0].numel()
        if isinstance(module, nn.Linear):
            return module.in_features
        return 0

    def windows_per_batch(self, todo: int) -> int:
        """As many windows as keep the batch's largest tensor within the CPU cache budget (`generator.batching`),
        a power of two; on CUDA, as many as a share of the free memory holds (four live tensors a window)."""
        largest = max(self._bytes_per_window(n) for n in self.nodes)
        if self.device.type != "cuda":
            fits = max(1, batching.CPU_CACHE_BUDGET // largest)
            return max(1, min(1 << (fits.bit_length() - 1), batching.CPU_MAX_IMAGES, todo))
        free, _ = torch.cuda.mem_get_info(self.device)
        return max(1, min(int(batching.CUDA_MEMORY_SHARE * free / (4 * largest)), batching.CUDA_MAX_IMAGES, todo))

    def _bytes_per_window(self, node: fx.Node) -> int:
        if node not in self.shapes or self.state[node] == "clean":
            return 1
        shape, size = self.shapes[node], torch.empty((), dtype=self.dtype).element_size()
        if self.state[node] != "box":
            return shape.numel() * size
        crops = [c.rows.shape[1] * c.cols.shape[1] for c in self.crops.get(node, {}).values()]  # its inputs
        return shape[1] * max([self.boxes[node].area] + crops) * size
