"""Gradient steps on the pixels of a given photograph, for the techniques that change an image instead of rendering
one from a parameterization (that is `render`'s Adam loop): DeepDream's normalized ascent seen through a random
shift (Mordvintsev, Olah & Tyka 2015) and the fooling images' signed steps kept in an L∞ ball around the photograph
(projected gradient descent, Madry et al. 2018). Pixels are in [0, 1]; the model's normalization is the caller's."""
from __future__ import annotations

from collections.abc import Callable

import torch

from generator.optvis.transforms import Jitter, shift


def input_gradient(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                   loss: Callable[[torch.Tensor], torch.Tensor] = torch.sum, jitter: Jitter | None = None,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(forward(x), ∂ loss(forward(x)) / ∂x). With `jitter`, the model sees x circularly shifted by a random
    (dy, dx) drawn from `generator`, and the gradient is shifted back onto x's pixels."""
    dy, dx = jitter.sample(generator) if jitter is not None else (0, 0)
    seen = shift(x, dy, dx).requires_grad_(True)
    out = forward(seen)
    (grad,) = torch.autograd.grad(loss(out), seen)
    return out, shift(grad, -dy, -dx)


def normalized_step(x: torch.Tensor, grad: torch.Tensor, size: float) -> torch.Tensor:
    """DeepDream's step: x + size · grad / mean |grad| of each image (so `size` means the same at every layer),
    pixels kept in [0, 1]."""
    grad = grad / (grad.abs().flatten(1).mean(1).view(-1, 1, 1, 1) + 1e-8)
    return (x + size * grad).clamp(0, 1).detach()


def signed_step(x: torch.Tensor, grad: torch.Tensor, size: float, origin: torch.Tensor, radius: float,
                move: torch.Tensor) -> torch.Tensor:
    """A descent step of projected gradient descent: x − size · sign(grad) for the images where `move` (B,) is 1,
    then back into the L∞ ball of `radius` around `origin` and into [0, 1]."""
    x = x.detach() - size * grad.sign() * move.view(-1, 1, 1, 1)
    return torch.min(torch.max(x, origin - radius), origin + radius).clamp(0, 1)
