"""The one forward every synthesis runs: a frozen model that records the layers an objective reads and stops right
after the deepest of them.

    with LayerForward(model, ["_blocks.5._act1"], read="pre") as forward:
        outputs, logits = forward(x)          # {layer: tensor}; logits None unless asked for

- Early exit. Nothing after the last recorded layer is computed or differentiated: the first forward runs whole and
  learns which (layer, call) completes the record; later forwards raise a private exception there (the design of
  `torchvision`'s `create_feature_extractor`, done with hooks so that any traceable-or-not model works). A forward
  that also needs the logits runs whole.
- What is read at a rectifier (ReLU, ReLU6, Hardtanh, the clamp inside Hardswish): `read="output"` the module's
  output; `read="pre"` its input, the value before the rectifier, as Lucid reads `mixed4a_pre_relu` — a unit can
  keep rising past ReLU6's cap of 6 and a unit that is off still has a gradient (Olah et al. 2017); `read="straight"`
  the output's value with the input's gradient (straight-through, Bengio, Léonard & Courville 2013), for matching
  objectives whose value must stay the output's. Layers that are not rectifiers are read as they are.
- Records are copies, so an in-place operation later in the network cannot change them.
- The model is frozen (eval mode, no parameter gradients) inside the block and restored, hooks removed, in `finally`."""
from __future__ import annotations

from contextlib import ExitStack
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from generator.hooks import hooked, missing_module
from generator.models import select_logits

Read = Literal["output", "pre", "straight"]
RECTIFIERS = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Hardswish)


def is_rectifier(module: nn.Module) -> bool:
    """A module whose output is flat (zero gradient) over part of its input: reading before it keeps a gradient."""
    return isinstance(module, RECTIFIERS)


class _Stop(Exception):
    """Raised by the hook that completes the record: nothing after it is needed."""


def check_modules(module: nn.Module, names: Sequence[str], owner: str = "the model") -> None:
    """ValueError "no module 'x' in OWNER; did you mean …" for the first of `names` that is no named module."""
    for name in names:
        problem = missing_module(module, name, owner)
        if problem:
            raise ValueError(problem)


class frozen:
    """The module in eval mode with its parameters' `requires_grad` off; both restored on exit."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __enter__(self) -> nn.Module:
        self.modes = [(m, m.training) for m in self.module.modules()]
        self.flags = [(p, p.requires_grad) for p in self.module.parameters()]
        self.module.eval()
        for p, _ in self.flags:
            p.requires_grad_(False)
        return self.module

    def __exit__(self, *exc) -> None:
        for p, flag in self.flags:
            p.requires_grad_(flag)
        for m, training in self.modes:
            m.training = training


class LayerForward:
    """See the module docstring. `logits`: also return the model's logits (no early exit); `logits_key` picks them
    from a model that returns several outputs. `early_exit=False` always runs the whole forward."""

    def __init__(self, model: nn.Module, layers: Sequence[str], *, logits: bool = False,
                 logits_key: int | str | None = None, read: Read = "output", early_exit: bool = True,
                 owner: str = "the model"):
        check_modules(model, layers, owner)
        self.model, self.layers = model, list(dict.fromkeys(layers))
        self.logits, self.logits_key, self.read = logits, logits_key, read
        self.early_exit = early_exit and not logits and bool(self.layers)
        modules = dict(model.named_modules())
        # Straight-through only where the rectifier is the identity between its bounds (not Hardswish's curve).
        through = (nn.ReLU, nn.Hardtanh) if read == "straight" else RECTIFIERS
        self.at_input = {name for name in self.layers if read != "output" and isinstance(modules[name], through)}
        self.outputs: dict[str, torch.Tensor] = {}
        self._calls: dict[str, int] = {}
        self._stop_at: tuple[str, int] | None = None
        self._last: tuple[str, int] | None = None
        self._stack = ExitStack()

    @property
    def pre_rectifier(self) -> list[str]:
        """The recorded layers read before their rectifier (`read="pre"`) or through it (`"straight"`)."""
        return [name for name in self.layers if name in self.at_input]

    def __enter__(self) -> "LayerForward":
        try:
            self._stack.enter_context(frozen(self.model))
            pre = {name: self._pre_hook(name) for name in self.at_input}
            if pre:
                self._stack.enter_context(hooked(self.model, pre, pre=True))
            self._stack.enter_context(hooked(self.model, {name: self._hook(name) for name in self.layers}))
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def _pre_hook(self, name: str):
        def hook(module, inputs):
            z = inputs[0] if inputs else None
            if isinstance(z, torch.Tensor):  # an in-place rectifier overwrites its input: keep a copy
                self._inputs[name] = z.clone() if getattr(module, "inplace", False) else z

        return hook

    def _hook(self, name: str):
        def hook(_module, _inputs, output):
            calls = self._calls[name] = self._calls.get(name, 0) + 1
            if not isinstance(output, torch.Tensor):
                self.outputs[name] = output
                return None
            if name in self.at_input and name in self._inputs:
                z = self._inputs.pop(name)
                self.outputs[name] = z if self.read == "pre" else z + (output - z).detach()
            else:
                self.outputs[name] = output
            self._last = (name, calls)
            if self.early_exit and self._stop_at == (name, calls) and len(self.outputs) == len(self.layers):
                raise _Stop
            # The network goes on with a copy, so that an in-place operation after this layer cannot change the record.
            return output.clone() if name not in self.at_input else None

        return hook

    def __call__(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        self.outputs, self._inputs, self._calls, self._last = {}, {}, {}, None
        try:
            out = self.model(x)
        except _Stop:
            return dict(self.outputs), None
        if self.early_exit and self._stop_at is None and self._last is not None \
                and len(self.outputs) == len(self.layers):
            self._stop_at = self._last  # the same layers in the same order end every later forward
        logits = select_logits(out, self.logits_key) if self.logits else None
        return dict(self.outputs), logits
