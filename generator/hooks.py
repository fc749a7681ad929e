"""Context managers that attach hooks to named modules and always remove them, even when the forward raises."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from generator.errors import did_you_mean


@contextmanager
def record_outputs(model: nn.Module, names: list[str], detach: bool = True) -> Iterator[dict[str, Any]]:
    """Record the outputs of the named modules during forwards inside the block: {name: output}."""
    modules = dict(model.named_modules())
    outputs: dict[str, Any] = {}
    handles = []

    def hook_for(name: str):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            outputs[name] = output.detach() if detach and isinstance(output, torch.Tensor) else output

        return hook

    try:
        for name in names:
            handles.append(modules[name].register_forward_hook(hook_for(name)))
        yield outputs
    finally:
        for h in handles:
            h.remove()


@contextmanager
def record_calls(model: nn.Module) -> Iterator[list[tuple[str, nn.Module, tuple[int, ...] | None]]]:
    """Record every named module's forward calls inside the block, in the order they finish: (name, module, output
    shape without the batch dimension, or None when the output is not a tensor)."""
    calls: list[tuple[str, nn.Module, tuple[int, ...] | None]] = []
    handles = []

    def hook_for(name: str):
        def hook(module: nn.Module, _inputs: Any, output: Any) -> None:
            calls.append((name, module, tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else None))

        return hook

    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(hook_for(name)))
        yield calls
    finally:
        for h in handles:
            h.remove()


@contextmanager
def hooked(model: nn.Module, hooks: dict[str, Callable[..., Any]], pre: bool = False) -> Iterator[None]:
    """Attach each hook to the module of `model` its key names (a forward hook; with `pre`, a forward pre-hook) for
    the block only. A forward hook may return a replacement output."""
    modules = dict(model.named_modules())
    handles = []
    try:
        for name, hook in hooks.items():
            module = modules[name]
            handles.append(module.register_forward_pre_hook(hook) if pre else module.register_forward_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


def missing_module(model: nn.Module, name: str, owner: str) -> str | None:
    """"no module 'x' in OWNER; did you mean …" when `name` is not a named module of `model`, else None: the one
    message for a layer name that is not there, wherever it is checked."""
    names = [n for n, _ in model.named_modules() if n]
    if name in names:
        return None
    return f"no module '{name}' in {owner}; {did_you_mean(name, names, 'modules')}"


def hook_count(model: nn.Module) -> int:
    """All hooks on all modules of a model: used by tests to show nothing is left behind."""
    total = 0
    for m in model.modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            total += len(getattr(m, attr, {}) or {})
    return total
