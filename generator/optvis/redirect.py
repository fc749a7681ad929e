"""Redirected rectifier gradients (Lucid's `redirected_relu_grad`, `lucid/misc/redirected_relu_grad.py`): a way out of
the flat start of an input optimization.

A unit behind a ReLU (or ReLU6) that is silent on the starting image — its pre-activation below 0 everywhere —
passes no gradient, so plain ascent never moves the image and the unit's visualization stays the grey start (seen on
EfficientNet-Lite0's `_act_head` and Fashion-MNIST's `features.6`, for units that fire on a third of the data set).
While `redirected_rectifiers` is active, every `nn.ReLU` / `nn.ReLU6` of the model back-propagates, for a batch
element whose ordinary rectifier gradient at that layer is zero everywhere, the incoming gradient also where the
rectifier is closed — but only its part that pushes the input back into the open range (up below 0, down above 6):

    regime        ordinary gradient     redirected (only when the element's ordinary gradient is all zero)
    low < x < hi  passes                passes
    x ≤ low       0                     passes if it raises x, else 0
    x ≥ hi        0                     passes if it lowers x, else 0

So an element whose unit fires follows the exact gradient; a silent one climbs its pre-activation until it fires,
and from then on follows the exact gradient too. The forward pass is unchanged. Functional rectifiers
(`torch.relu` in a forward) are not modules and are not redirected."""
from __future__ import annotations

from contextlib import contextmanager
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from generator.hooks import hooked


class _Redirected(torch.autograd.Function):
    """Forward: the rectifier's output `y`, unchanged. Backward: the redirected gradient w.r.t. its input `x` (also
    right for in-place rectifiers, where `x` is `y`: a closed unit then sits exactly at `low` or `high`)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor, low: float, high: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.low, ctx.high = low, high
        return y.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        low, high = ctx.low, ctx.high
        plain = grad * ((x > low) & (x < high))
        silent = ~(plain != 0).flatten(1).any(1) if plain.dim() > 1 else plain == 0
        if not bool(silent.any()):  # the usual case once the units fire: the exact gradient, nothing more to compute
            return plain, None, None, None
        # A descent step moves x by −grad: below `low` only a negative grad raises it, above `high` only a positive.
        wrong_way = ((x <= low) & (grad > 0)) | ((x >= high) & (grad < 0))
        redirected = grad.masked_fill(wrong_way, 0)
        silent = silent.view(-1, *([1] * (plain.dim() - 1)))
        return torch.where(silent, redirected, plain), None, None, None


def _range(module: nn.Module) -> tuple[float, float] | None:
    if isinstance(module, nn.ReLU):
        return 0.0, float("inf")
    if isinstance(module, nn.ReLU6):
        return 0.0, 6.0
    return None


@dataclass
class Redirection:
    """What `redirected_rectifiers` yields: switch it with `active`; `modules` is how many rectifiers it covers."""

    active: bool = True
    modules: int = 0


@contextmanager
def redirected_rectifiers(model: nn.Module, active: bool = True) -> Iterator[Redirection]:
    """Within the block, while `.active`, the model's ReLU/ReLU6 modules back-propagate the redirected gradient.
    Hooks are registered on entry (so before any recording hooks registered later, which then see the redirected
    output) and removed on exit, also on errors."""
    state = Redirection(active)

    def hook_for(low: float, high: float):
        def hook(_module, inputs, output):
            if not state.active or not torch.is_grad_enabled() or not isinstance(output, torch.Tensor):
                return None
            if not output.requires_grad or not inputs or not isinstance(inputs[0], torch.Tensor):
                return None
            return _Redirected.apply(inputs[0], output, low, high)

        return hook

    hooks = {name: hook_for(*bounds) for name, module in model.named_modules()
             if (bounds := _range(module)) is not None}
    with hooked(model, hooks):
        state.modules = len(hooks)
        yield state
