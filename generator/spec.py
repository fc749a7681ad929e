"""The YAML spec as pydantic models: `Spec.load(path)` validates everything that can be checked without a model or
the technique registry. A leaf of the package: `checks.py` adds the techniques' parameters (`ReportSpec`, validated
through the registry) and the checks that need a loaded model (layer names, class names), still before any heavy
work.
"""
from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator, model_validator,
)

from generator.errors import SpecErrors, did_you_mean

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")
BUILTIN_MODELS = ("efficientnet-lite0", "fashion-mnist-net")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputSpec(Strict):
    """How an image becomes the model's input tensor: resize the shorter side, centre-crop, normalize."""

    size: int = Field(224, ge=8, le=4096, description="side of the square crop fed to the model, in pixels")
    resize: int | None = Field(None, ge=8, le=8192, description="shorter side before cropping (default size × 8/7)")
    mean: list[float] = Field([0.485, 0.456, 0.406], min_length=1, max_length=3)
    std: list[float] = Field([0.229, 0.224, 0.225], min_length=1, max_length=3)
    mode: Literal["RGB", "L"] = Field("RGB", description="colour (RGB) or grayscale (L) input")
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"

    @model_validator(mode="after")
    def _channels_agree(self) -> "InputSpec":
        channels = 3 if self.mode == "RGB" else 1
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(f"mean and std need {channels} value(s) for mode {self.mode}")
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be positive")
        return self

    @property
    def resize_to(self) -> int:
        return self.resize or round(self.size * 8 / 7)


TORCHVISION_DATASETS = ("FashionMNIST", "MNIST", "KMNIST", "CIFAR10", "CIFAR100", "SVHN", "STL10", "ImageFolder")


class DatasetSpec(Strict):
    """A named data set: the images the data-set views (neighbours, embeddings, top patches) look across.
    Exactly one source; nothing is ever downloaded."""

    folder: str | None = Field(None, description="a folder with one sub-folder of images per class (labels from folder names)")
    glob: str | None = Field(None, description="a glob of image files (unlabelled, or labelled by parent folder with labels_from_parent)")
    torchvision: Literal[TORCHVISION_DATASETS] | None = Field(  # type: ignore[valid-type]
        None, description="a torchvision data set class reading local files at 'root'")
    samples: list[str] | None = Field(
        None, description="photos (skimage:NAME, sklearn:NAME or files), each a class of 'crops' random crops")
    root: str | None = Field(None, description="the local folder a torchvision data set reads")
    split: Literal["train", "test"] = Field("test", description="which split of a torchvision data set")
    crops: int = Field(1, ge=1, le=256, description="random crops per photo, for 'samples'")
    labels_from_parent: bool = Field(False, description="for 'glob': label each file by its parent folder's name")
    classes: list[str] | None = Field(None, description="class names, overriding those the data set gives")
    limit: int | None = Field(None, ge=1, description="at most this many images, stratified by class")
    seed: int = Field(0, description="seed for the stratified subset and the crops")
    about: str | None = Field(None, description="what the data set is and why it was chosen, in a sentence or two for "
                                                "every page that looks across it")

    @model_validator(mode="after")
    def _one_source(self) -> "DatasetSpec":
        sources = [s for s in ("folder", "glob", "torchvision", "samples") if getattr(self, s) is not None]
        if len(sources) != 1:
            got = ", ".join(sources) if sources else "none"
            raise ValueError(f"give exactly one source of folder, glob, torchvision, samples (got {got})")
        if self.torchvision and not self.root:
            raise ValueError(f"'{self.torchvision}' needs 'root': the local folder holding its files")
        if self.root and not self.torchvision:
            raise ValueError("'root' applies only to a torchvision data set")
        if self.samples is not None and not self.samples:
            raise ValueError("'samples' is empty")
        return self

    @property
    def source(self) -> str:
        return next(s for s in ("folder", "glob", "torchvision", "samples") if getattr(self, s) is not None)


def _plain(value: Any) -> bool:
    """A value YAML writes plainly (what a constructor argument in a spec can be): no dates, no objects."""
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return value is None or isinstance(value, (bool, int, float, str))


class ModelSpec(Strict):
    name: Annotated[str, Field(pattern=NAME_PATTERN, description="a short name, used in page titles and paths")]
    torchvision: str | None = Field(None, description="a torchvision architecture name, e.g. resnet18")
    weights: str | None = Field("DEFAULT", description="torchvision weights enum name, DEFAULT, or null (random)")
    builtin: Literal[BUILTIN_MODELS] | None = Field(None, description="an embedded model")  # type: ignore[valid-type]
    factory: str | None = Field(None, description="module:function returning an nn.Module")
    checkpoint: str | None = Field(None, description="a state dict (.pt/.pth or .safetensors) loaded into the model")
    checkpoints: dict[Annotated[str, Field(pattern=NAME_PATTERN)], str | None] | None = Field(
        None, description="a series of checkpoints of this model, in order (name → file; null: the model's own "
                          "weights): each is a model of its own, named <name>-<entry>, and the series is compared")
    kwargs: dict[str, Any] | None = Field(
        None, description="more constructor arguments, e.g. {dropout: 0.5}: for torchvision.models.get_model or the "
                          "factory function (a torchvision head's num_classes comes from the checkpoint or labels)")
    input: InputSpec | None = None
    labels: Literal["imagenet"] | list[str] | str | None = Field(
        None, description="'imagenet', a text file with one label per line, or a list"
    )
    logits: int | str | None = Field(None, description="index, key or attribute of the logits in the model's output")
    layers: list[str] = Field(default_factory=list, description="dotted module names to show (default: a spread)")
    images: list[str] | None = Field(None, description="image set names (default: all)")
    dataset: str | None = Field(None, description="the data set the data-set views look across")
    # Typed by each technique's Params in checks.ReportModelSpec (the registry is above this module).
    techniques: dict[str, Any] | None = Field(None, description="technique → parameters (default: all that apply)")

    @field_validator("factory")
    @classmethod
    def _factory_shape(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[\w.]+:\w+", value):
            raise ValueError("expected 'module:function', e.g. 'mynet:build'")
        return value

    @field_validator("kwargs")
    @classmethod
    def _plain_kwargs(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        for key, v in (value or {}).items():
            if not key.isidentifier():
                raise ValueError(f"'{key}' is not an argument name")
            if key == "weights":
                raise ValueError("give 'weights' beside 'torchvision', not in kwargs")
            if not _plain(v):
                raise ValueError(f"'{key}' must be a plain value: a number, string, true/false, null, or a list or "
                                 "mapping of them")
        return value

    @field_validator("weights")
    @classmethod
    def _weights_need_torchvision(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Runs only when `weights` is given; `torchvision` (declared before it) is in info.data unless it was invalid.
        if "torchvision" in info.data and info.data["torchvision"] is None:
            raise ValueError("'weights' applies only to a torchvision model; use 'checkpoint' for your own weights")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> "ModelSpec":
        sources = [s for s in ("torchvision", "builtin", "factory") if getattr(self, s) is not None]
        if len(sources) != 1:
            got = ", ".join(sources) if sources else "none"
            raise ValueError(f"give exactly one source of torchvision, builtin, factory (got {got})")
        if self.kwargs and self.builtin is not None:
            raise ValueError("'kwargs' applies only to a torchvision or factory model")
        if self.checkpoints is not None:
            if self.checkpoint is not None:
                raise ValueError("give 'checkpoint' (one model) or 'checkpoints' (a series), not both")
            if len(self.checkpoints) < 2:
                raise ValueError("'checkpoints' is a series to compare: give at least two")
        return self

    @property
    def members(self) -> list[str]:
        """The names of the models this entry stands for: its own, or one per checkpoint of its series."""
        return [f"{self.name}-{key}" for key in self.checkpoints] if self.checkpoints else [self.name]

    @property
    def source(self) -> str:
        return next(s for s in ("torchvision", "builtin", "factory") if getattr(self, s) is not None)


class RaySpec(Strict):
    """Where and how a build runs on Ray (`executor: ray`): each model gets one worker (a Ray actor) that loads it
    once and runs its batches; results come back to this machine, which writes the cache and the pages."""

    address: str | None = Field(
        None, description="cluster to join: host:port of its head, ray://host:10001 (Ray Client) or auto; "
                          "empty: RAY_ADDRESS when set, else a Ray started on this machine for the build")
    cpus_per_model: float = Field(1.0, gt=0, description="CPUs each model's worker takes (its torch threads)")
    gpus_per_model: float | None = Field(
        None, ge=0, description="GPUs each model's worker takes (a fraction shares one); "
                                "empty: 1 when the cluster has GPUs and the device is not cpu, else 0")


class ComparisonSpec(Strict):
    """Models compared on one page: the predictions, representations, weights, units and attributions that changed."""

    models: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = Field(
        min_length=2, description="the models, in order; each is compared with the last (a checkpoint series' name "
                                  "stands for its checkpoints)")
    dataset: str = Field(description="the data set the predictions, representation similarity and unit correlations "
                                     "are measured on")
    name: Annotated[str, Field(pattern=NAME_PATTERN)] | None = Field(
        None, description="the page's name (default: the models' names joined by '-vs-')")


class Spec(Strict):
    title: str = Field("convscope report", description="title of the report's index page")
    output: str = Field("site_src/reports", description="folder for generated pages, relative to the spec file")
    cache: str = Field(".convscope-cache", description="folder for cached results, relative to the spec file")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    seed: int = Field(0, description="seed for every random choice, so builds repeat")
    executor: Literal["local", "ray"] = Field(
        "local", description="where jobs run: in this process (local) or on Ray workers, one per model (ray)")
    ray: RaySpec = Field(default_factory=RaySpec, description="the Ray cluster and each worker's resources")
    images: dict[Annotated[str, Field(pattern=NAME_PATTERN)], list[str]] = Field(
        default_factory=dict, description="named image sets: file paths, globs or samples (skimage:chelsea)"
    )
    datasets: dict[Annotated[str, Field(pattern=NAME_PATTERN)], DatasetSpec] = Field(
        default_factory=dict, description="named data sets: image folders, globs, torchvision data sets, sample crops"
    )
    models: list[ModelSpec] = Field(min_length=1)
    comparisons: list[ComparisonSpec] = Field(
        default_factory=list, description="pages comparing models (a checkpoint series gets one without asking)")

    _path: Path = PrivateAttr(default=Path("reports.yml"))

    @field_validator("device")
    @classmethod
    def _device_shape(cls, value: str) -> str:
        if not DEVICE_PATTERN.match(value):
            raise ValueError(f"'{value}' is not a device; use auto, cpu, cuda, cuda:N or mps")
        return value

    @field_validator("images")
    @classmethod
    def _sets_not_empty(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, entries in value.items():
            if not entries:
                raise ValueError(f"image set '{name}' is empty")
        return value

    @property
    def path(self) -> Path:
        return self._path

    @property
    def base_dir(self) -> Path:
        return self._path.parent

    def resolve(self, relative: str) -> Path:
        """A path from the spec, relative to the spec file's folder."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def members(self, name: str) -> list[str]:
        """The models a name stands for: a checkpoint series' name its checkpoints, a model's name itself."""
        for ms in self.models:
            if name == ms.name or name in ms.members:
                return ms.members if name == ms.name else [name]
        return []

    def all_comparisons(self) -> list[ComparisonSpec]:
        """The spec's comparisons, series names expanded, then one per checkpoint series (on its model's data set,
        or on none: then only the views that need no data set apply)."""
        listed = [c.model_copy(update={"models": [m for name in c.models for m in self.members(name)],
                                       "name": c.name or "-vs-".join(c.models)}) for c in self.comparisons]
        series = [ComparisonSpec.model_construct(models=ms.members, dataset=ms.dataset, name=ms.name)
                  for ms in self.models if ms.checkpoints]
        return listed + series

    def image_sets_of(self, model: ModelSpec) -> list[str]:
        return list(self.images) if model.images is None else model.images

    @classmethod
    def load(cls, path: str | Path) -> "Spec":
        path = Path(path)
        if not path.is_file():
            raise SpecErrors(str(path), ["file not found"])
        if path.stat().st_size > MAX_SPEC_BYTES:
            raise SpecErrors(str(path), [f"{path.stat().st_size:,} bytes; a spec is at most {MAX_SPEC_BYTES:,}"])
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}: " if mark else ""
            raise SpecErrors(str(path), [f"{where}not valid YAML ({getattr(exc, 'problem', exc)})"]) from None
        except UnicodeDecodeError:
            raise SpecErrors(str(path), ["not a UTF-8 text file"]) from None
        values = expanded_size(data)
        if values > MAX_SPEC_VALUES:
            raise SpecErrors(str(path), [f"the spec expands to {values:,} values through YAML anchors and aliases "
                                         f"(at most {MAX_SPEC_VALUES:,}): an alias bomb?"])
        spec = cls.parse(data, source=str(path))
        spec._path = path.resolve()
        return spec

    @classmethod
    def parse(cls, data: Any, source: str = "spec") -> "Spec":
        if not isinstance(data, dict):
            raise SpecErrors(source, ["the spec must be a mapping with at least a 'models' key"])
        try:
            spec = cls.model_validate(data)
        except ValidationError as exc:
            raise SpecErrors(source, [format_error(e, cls) for e in exc.errors()]) from None
        problems = []
        first_of: dict[str, int] = {}
        for i, model in enumerate(spec.models):
            if model.name in first_of:
                problems.append(f"models[{i}].name: '{model.name}' is already the name of models[{first_of[model.name]}]; "
                                "model names must be unique")
            first_of.setdefault(model.name, i)
            for j, set_name in enumerate(model.images or []):
                if set_name not in spec.images:
                    problems.append(
                        f"models[{i}].images[{j}]: no image set '{set_name}'; {did_you_mean(set_name, spec.images, 'sets')}"
                    )
            if model.dataset is not None and model.dataset not in spec.datasets:
                problems.append(f"models[{i}].dataset: no data set '{model.dataset}'; "
                                f"{did_you_mean(model.dataset, spec.datasets, 'data sets')}")
        models_named = {ms.name: i for i, ms in reversed(list(enumerate(spec.models)))}
        member_of: dict[str, int] = {}
        for i, model in enumerate(spec.models):
            for member in model.members if model.checkpoints else ():
                clash = models_named.get(member, member_of.get(member))
                if clash is not None:
                    problems.append(f"models[{i}].checkpoints: its model '{member}' would have the name of models[{clash}]")
                member_of.setdefault(member, i)
        names = [n for ms in spec.models for n in [ms.name] + (ms.members if ms.checkpoints else [])]
        pages: dict[str, int] = {}
        for i, c in enumerate(spec.comparisons):
            for j, name in enumerate(c.models):
                if name not in names:
                    problems.append(f"comparisons[{i}].models[{j}]: no model '{name}'; {did_you_mean(name, names, 'models')}")
            expanded = [m for name in c.models for m in spec.members(name)]
            if len(set(expanded)) != len(expanded):
                problems.append(f"comparisons[{i}].models: a model is listed twice")
            if c.dataset not in spec.datasets:
                problems.append(f"comparisons[{i}].dataset: no data set '{c.dataset}'; "
                                f"{did_you_mean(c.dataset, spec.datasets, 'data sets')}")
            page = c.name or "-vs-".join(c.models)
            if page in pages or page in [ms.name for ms in spec.models if ms.checkpoints]:
                problems.append(f"comparisons[{i}].name: another comparison is already called '{page}'; give a name")
            pages.setdefault(page, i)
        if problems:
            raise SpecErrors(source, problems)
        return spec


# A spec is a page of YAML. YAML aliases let a few lines stand for billions of values ("billion laughs"): safe_load
# shares them, but validating walks every one, so the expanded size is counted first (in linear time) and capped.
MAX_SPEC_BYTES = 1_000_000
MAX_SPEC_VALUES = 100_000


def expanded_size(data: Any) -> int:
    """How many values `data` holds with every alias expanded (shared lists and mappings counted each time)."""
    sizes: dict[int, int] = {}

    def size(value: Any) -> int:
        if not isinstance(value, (list, dict)):
            return 1
        if id(value) not in sizes:
            sizes[id(value)] = 0  # a cycle (an alias inside its own anchor) counts once
            items = value.values() if isinstance(value, dict) else value
            sizes[id(value)] = 1 + sum(size(v) for v in items)
        return sizes[id(value)]

    return size(data)


def key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def format_error(error: dict[str, Any], root: type[BaseModel]) -> str:
    """A pydantic error as 'key.path: message', with valid keys (of the `root` spec model) suggested for unknown ones."""
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
    path = key_path(loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        name = str(loc[-1])
        fields = _fields_at(root, loc[:-1])
        what = "techniques" if len(loc) >= 2 and loc[-2] == "techniques" else "keys"
        return f"{path}: unknown {'technique' if what == 'techniques' else 'key'}; {did_you_mean(name, fields, what)}"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    if error["type"] == "literal_error" and "expected" in error.get("ctx", {}):
        message = f"must be one of {error['ctx']['expected']}; got {error.get('input')!r}"
    return f"{path}: {message}"


def _unwrap(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return [t for a in typing.get_args(annotation) for t in _unwrap(a)]
    if origin is Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    return [annotation]


def _fields_at(model: Any, loc: tuple[Any, ...]) -> list[str]:
    """Names of the keys allowed at a location of the spec (for 'did you mean')."""
    candidates = [model]
    for part in loc:
        nxt = []
        for c in candidates:
            origin = typing.get_origin(c)
            if isinstance(part, int) and origin is list:
                nxt += _unwrap(typing.get_args(c)[0])
            elif isinstance(c, type) and issubclass(c, BaseModel) and part in c.model_fields:
                nxt += _unwrap(c.model_fields[part].annotation)
            elif origin is dict:
                nxt += _unwrap(typing.get_args(c)[1])
        candidates = nxt
    for c in candidates:
        if isinstance(c, type) and issubclass(c, BaseModel):
            return list(c.model_fields)
    return []
