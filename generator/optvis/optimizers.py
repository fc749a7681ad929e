"""The optimizers of the engine besides torch's Adam and L-BFGS: the two fixed-size gradient steps of the techniques
that change a given photograph — DeepDream's step normalized by the gradient's mean magnitude (Mordvintsev, Olah &
Tyka 2015: `size` means the same at every layer) and the signed step of projected gradient descent (Madry et al.
2018) that fooling images take. Both descend the loss; each batch element's step depends on its own gradient only."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

OptimizerName = Literal["adam", "lbfgs", "normalized", "signed"]


class _FixedStep(torch.optim.Optimizer):
    def __init__(self, params, lr: float):
        super().__init__(params, {"lr": lr})

    def direction(self, grad: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.sub_(group["lr"] * self.direction(p.grad))
        return loss


class NormalizedStep(_FixedStep):
    """p ← p − lr · g / mean |g|, the mean over each batch element's values."""

    def direction(self, grad: torch.Tensor) -> torch.Tensor:
        scale = grad.abs().flatten(1).mean(1).view(-1, *([1] * (grad.dim() - 1)))
        return grad / (scale + 1e-8)


class SignedStep(_FixedStep):
    """p ← p − lr · sign(g)."""

    def direction(self, grad: torch.Tensor) -> torch.Tensor:
        return grad.sign()


def make_optimizer(name: OptimizerName, tensors: Sequence[torch.Tensor], lr: float,
                   history: int = 20) -> torch.optim.Optimizer:
    """The optimizer `name` over `tensors`. L-BFGS takes steps of 1 with a strong-Wolfe line search (`lr` unused);
    the engine sets how many evaluations each of its calls may make."""
    if name == "adam":
        return torch.optim.Adam(tensors, lr=lr)
    if name == "lbfgs":
        return torch.optim.LBFGS(tensors, lr=1.0, max_iter=1, max_eval=1, history_size=history, tolerance_grad=0.0,
                                 tolerance_change=0.0, line_search_fn="strong_wolfe")
    if name == "normalized":
        return NormalizedStep(tensors, lr)
    if name == "signed":
        return SignedStep(tensors, lr)
    raise ValueError(f"unknown optimizer '{name}'; use 'adam', 'lbfgs', 'normalized' or 'signed'")
