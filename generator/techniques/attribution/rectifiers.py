"""Guided backpropagation (Springenberg et al. 2015) for every ReLU-family activation, however the model calls it.

`guided_relus()` is a `TorchFunctionMode`: while it is active, each call of a ReLU-family function — `F.relu`,
`torch.relu`, `Tensor.relu` and their in-place forms, `F.relu6`, `F.hardtanh` with `min_val=0` (what `nn.ReLU6`
calls), `F.leaky_relu` and its in-place form — is answered by `GuidedActivation`, whose forward is the original
function and whose backward passes gradient only where the input was in the pass-through range *and* the gradient
arriving from above is positive. Modules (`nn.ReLU`, `nn.ReLU6`, `nn.LeakyReLU`) call these functions, so modules,
in-place modules and functional calls in a `forward` are all covered; no hook is put on any module, and nothing
outside the `with` block changes. (Captum's GuidedBackprop hooks `nn.ReLU` modules only: on ReLU6 or functional
ReLUs it silently returns the plain gradient.)

Smooth rectifiers (SiLU/Swish, GELU, Hardswish, Mish, ELU, CELU, SELU: EfficientNet, MobileNetV3, ConvNeXt) have no
pass-through range, and the paper defines the rule for ReLUs only. We use the generalization that equals Springenberg's
rule on a ReLU: a unit passes back only positive gradient, only where its forward input was positive, scaled by its
own slope there: dL/dx = relu(dL/dy) · f'(x) · [x > 0]. Without the gate on x the negative lobe of SiLU/GELU would
pass (small, sign-flipped) gradient back, which is the plain gradient's behaviour, not guidance. Gates that multiply
(sigmoid and hard-sigmoid in squeeze-excite blocks) and LayerNorm are not rectifiers and keep their plain gradient,
as max-pooling and every other operation do in the paper.

The backward is recorded in the graph during the forward, so the backward pass may run after the block has exited.
`GuidedMode.require(name)` raises `NoReluError` when the forward met no rectifier at all: guided backprop of such a
model would be the plain gradient, and we say so rather than return it under the wrong name.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


class NoReluError(RuntimeError):
    """Guided backprop asked of a model whose forward calls no ReLU-family activation."""


class GuidedActivation(torch.autograd.Function):
    """y = f(x) exactly as the original function computes it; dL/dx = relu(dL/dy) · f'(x), where f'(x) is 1 in the
    pass-through range (0 < x < upper), `slope` below zero (LeakyReLU; 0 otherwise) and 0 elsewhere."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], upper: float, slope: float):
        inside = x > 0
        if upper != math.inf:
            inside &= x < upper
        # f'(x), not x: an in-place caller overwrites x right after (upper is inf for LeakyReLU)
        ctx.save_for_backward(torch.where(inside, 1.0, slope) if slope else inside)
        return fn(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _guided_gradient(ctx, grad), None, None, None


class GuidedGate(torch.autograd.Function):
    """y = f(x) for a smooth rectifier f; dL/dx = relu(dL/dy) · f'(x) · [x > 0] (see the module's docstring)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]):
        with torch.enable_grad():  # f'(x) from autograd, so every variant (GELU's tanh form, ...) is exact
            leaf = x.detach().requires_grad_(True)
            (slope,) = torch.autograd.grad(fn(leaf).sum(), leaf)
        ctx.save_for_backward(slope * (x > 0))  # computed now: an in-place caller overwrites x right after
        return fn(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _guided_gradient(ctx, grad), None


def _guided_gradient(ctx, grad: torch.Tensor) -> torch.Tensor:
    """relu(dL/dy) · the local factor a guided function saved in its forward."""
    (local,) = ctx.saved_tensors
    return grad.clamp(min=0) * local.to(grad.dtype)


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


# func → (name, in-place?, reads (upper, slope) from the call or None when this call is not a ReLU-family one)
def _relu(args, kwargs):
    return math.inf, 0.0


def _hardtanh(args, kwargs):
    low, high = _arg(args, kwargs, 1, "min_val", -1.0), _arg(args, kwargs, 2, "max_val", 1.0)
    return (float(high), 0.0) if low == 0 and high > 0 else None  # min 0: ReLU6 and other capped ReLUs


def _relu6(args, kwargs):
    return 6.0, 0.0


def _leaky(args, kwargs):
    return math.inf, float(_arg(args, kwargs, 1, "negative_slope", 0.01))


def _inplace_kw(index: int) -> Callable[[tuple, dict], bool]:
    return lambda args, kwargs: bool(_arg(args, kwargs, index, "inplace", False))


_ALWAYS = lambda args, kwargs: True  # noqa: E731
_NEVER = lambda args, kwargs: False  # noqa: E731

_TABLE: dict[Any, tuple[str, Callable, Callable, Callable[[torch.Tensor, float, float], torch.Tensor]]] = {}


def _register(funcs, name, params, inplace, compute) -> None:
    for f in funcs:
        _TABLE[f] = (name, params, inplace, compute)


def _compute_relu(x, upper, slope):
    return torch.relu(x)


def _compute_capped(x, upper, slope):
    return F.hardtanh(x, 0.0, upper)


def _compute_relu6(x, upper, slope):
    return F.relu6(x)


def _compute_leaky(x, upper, slope):
    return F.leaky_relu(x, slope)


_register([F.relu], "relu", _relu, _inplace_kw(1), _compute_relu)
_register([torch.relu, torch.Tensor.relu], "relu", _relu, _NEVER, _compute_relu)
_register([torch.relu_, torch.Tensor.relu_], "relu", _relu, _ALWAYS, _compute_relu)
_register([F.relu6], "relu6", _relu6, _inplace_kw(1), _compute_relu6)
_register([F.hardtanh], "hardtanh", _hardtanh, _inplace_kw(3), _compute_capped)
_register([F.hardtanh_], "hardtanh", _hardtanh, _ALWAYS, _compute_capped)
_register([F.leaky_relu], "leaky_relu", _leaky, _inplace_kw(2), _compute_leaky)
_register([F.leaky_relu_], "leaky_relu", _leaky, _ALWAYS, _compute_leaky)


# Smooth rectifiers: func → (name, in-place?, the out-of-place function with the call's other arguments bound).
_SMOOTH: dict[Any, tuple[str, Callable, Callable[[tuple, dict], Callable[[torch.Tensor], torch.Tensor]]]] = {
    F.silu: ("silu", _inplace_kw(1), lambda a, k: F.silu),
    F.hardswish: ("hardswish", _inplace_kw(1), lambda a, k: F.hardswish),
    F.mish: ("mish", _inplace_kw(1), lambda a, k: F.mish),
    F.gelu: ("gelu", _NEVER, lambda a, k: lambda t: F.gelu(t, approximate=k.get("approximate", "none"))),
    F.elu: ("elu", _inplace_kw(2), lambda a, k: lambda t: F.elu(t, _arg(a, k, 1, "alpha", 1.0))),
    F.celu: ("celu", _inplace_kw(2), lambda a, k: lambda t: F.celu(t, _arg(a, k, 1, "alpha", 1.0))),
    F.selu: ("selu", _inplace_kw(1), lambda a, k: F.selu),
}


class GuidedMode(TorchFunctionMode):
    """While active, ReLU-family calls get guided gradients. `calls` counts what was replaced, by function."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _SMOOTH:
            return self._smooth(func, args, kwargs)
        entry = _TABLE.get(func)
        if entry is None:
            return func(*args, **kwargs)
        name, params, inplace, compute = entry
        read = params(args, kwargs)
        x = args[0] if args else kwargs.get("input")
        if read is None or not isinstance(x, torch.Tensor) or not x.is_floating_point():
            return func(*args, **kwargs)
        upper, slope = read
        self.calls[name] += 1
        # The mode is off inside this method, so `compute` runs the original kernels, not this handler again.
        out = GuidedActivation.apply(x, lambda t: compute(t, upper, slope), upper, slope)
        if inplace(args, kwargs):
            # Keep in-place semantics for callers that use `x` afterwards: x takes the values (and, through the
            # copy, the guided gradient path) of the out-of-place result.
            return x.copy_(out)
        return out

    def _smooth(self, func, args: tuple, kwargs: dict):
        name, inplace, bind = _SMOOTH[func]
        x = args[0] if args else kwargs.get("input")
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            return func(*args, **kwargs)
        self.calls[name] += 1
        out = GuidedGate.apply(x, bind(args, kwargs))
        return x.copy_(out) if inplace(args, kwargs) else out

    @property
    def smooth(self) -> list[str]:
        """The smooth rectifiers met (their guided rule is this project's generalization, stated on the page)."""
        return sorted(n for n in self.calls if n in SMOOTH_RECTIFIERS)

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def require(self, model_name: str) -> None:
        """Raise unless the forward met at least one ReLU-family activation."""
        if not self.total:
            raise NoReluError(
                f"{model_name} has no rectifier (ReLU, ReLU6, LeakyReLU, SiLU, GELU, Hardswish, Mish, ELU, SELU; "
                "module or functional); "
                "guided backprop would silently equal the plain gradient"
            )


@contextmanager
def guided_relus() -> Iterator[GuidedMode]:
    """Inside the block, every ReLU-family call records a guided backward. The mode is popped on exit, also when
    the forward raises."""
    mode = GuidedMode()
    with mode:
        yield mode


def rectifiers(forward: Callable[[torch.Tensor], Any], x: torch.Tensor) -> dict[str, int]:
    """Which rectifiers a forward of `x` calls, and how often (a page says which guided rule each one got)."""
    with torch.no_grad(), guided_relus() as mode:
        forward(x)
    return dict(mode.calls)


SMOOTH_RECTIFIERS = frozenset(v[0] for v in _SMOOTH.values())


def no_rectifier(model) -> str | None:
    """Why guided backpropagation does not apply to a loaded model (its forward calls no rectifier), or None."""
    if rectifiers(model.logits, model.blank()):
        return None
    return ("the model calls no rectifier (ReLU, ReLU6, LeakyReLU, SiLU, GELU, Hardswish, Mish, ELU, SELU), and "
            "guided backpropagation is defined by how gradient passes back through them: without one it would be "
            "the plain gradient under another name (see Saliency)")


def active_modes() -> list:
    """The torch function modes now active (tests check that none is left behind)."""
    return list(torch.overrides._get_current_function_mode_stack())
