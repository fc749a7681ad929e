"""Everything the spec cannot check alone: each technique's parameters, typed through the registry (`ReportSpec`),
and what needs a loaded model (layer and class names, a forward pass, image sets named by techniques). All problems
are raised together, each with its key path, before any job runs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from generator import datasets as datalib
from generator import images as imagelib
from generator.context import resolve_device
from generator.errors import ConvscopeError, SpecErrors, did_you_mean
from generator.layers import default_layers
from generator.models import LoadedModel, ModelLoader
from generator.spec import ModelSpec, Spec
from generator.techniques import registry


def _empty_means_defaults(cls, data: Any) -> Any:
    """`filters:` with no value means "run it with its defaults"."""
    if isinstance(data, dict):
        return {k: ({} if v is None else v) for k, v in data.items()}
    return data


def _techniques_model() -> type[BaseModel]:
    """One optional field per registered technique, typed by its Params, so the JSON Schema documents them all."""
    fields: dict[str, Any] = {
        kind: (technique.Params | None, Field(None, description=technique.summary))
        for kind, technique in registry.selectable().items()
    }
    return create_model(
        "TechniquesSpec",
        __config__=ConfigDict(extra="forbid"),
        __validators__={"empty_means_defaults": model_validator(mode="before")(classmethod(_empty_means_defaults))},
        **fields,
    )


TechniquesSpec = _techniques_model()


class ReportModelSpec(ModelSpec):
    """A model of the spec with its techniques' parameters validated by their Params."""

    techniques: TechniquesSpec | None = Field(  # type: ignore[valid-type]
        None, description="technique → parameters (default: all that apply)")

    def technique_params(self) -> dict[str, BaseModel]:
        """The techniques this model runs, with their parameters: the listed ones, or all with defaults."""
        if self.techniques is None:
            return {kind: t.Params() for kind, t in registry.selectable().items()}
        return {k: v for k, v in self.techniques if v is not None}


class ReportSpec(Spec):
    """The whole spec as a build reads it: `ReportSpec.load(path)`."""

    models: list[ReportModelSpec] = Field(min_length=1)


def json_schema() -> dict[str, Any]:
    schema = ReportSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "convscope report spec"
    return schema


@dataclass
class Prepared:
    """Everything checked and loaded, before any job runs."""

    spec: ReportSpec
    models: list[LoadedModel]
    images: dict[str, list[imagelib.ImageRecord]]
    datasets: dict[str, datalib.Dataset]


def prepare(spec: ReportSpec, device_name: str | None = None, pretrained: bool = True,
            skip: list[str] | None = None) -> Prepared:
    """Load images, data sets and models and check every reference in the spec; all problems are raised together.
    Models named in `skip` are left out entirely (with their data sets, unless another model uses them); a data set
    named in `skip` is not loaded, and the models that look across it get pages saying their data-set views do not
    apply."""
    try:
        device = resolve_device(device_name or spec.device)
    except ConvscopeError as exc:
        raise SpecErrors(str(spec.path.name), [str(exc)]) from None
    wanted = [ms for ms in spec.models if ms.name not in (skip or [])]
    # Without --skip every image set is loaded (so every problem is reported); with it, only the sets still used.
    problems = [p for ms in spec.models for p in named_set_problems(spec, ms)]
    used_sets = [s for s in spec.images if not skip or any(s in sets_used_by(spec, ms) for ms in wanted)]
    datasets = {}
    sources = [ms.dataset for ms in wanted if ms.dataset and ms.dataset not in (skip or [])]
    sources += imagelib.dataset_names({k: v for k, v in spec.images.items() if k in used_sets})
    sources += [c.dataset for c in spec.all_comparisons() if c.dataset and c.dataset not in (skip or [])]
    for name in dict.fromkeys(sources):
        if name not in spec.datasets:
            continue  # an image entry naming no data set: reported with its key by load_sets
        try:
            datasets[name] = datalib.load(spec, name)
        except ConvscopeError as exc:
            problems.append(str(exc))
    image_sets, image_problems = imagelib.load_sets(spec, used_sets, datasets)
    problems += image_problems
    loader = ModelLoader(spec, device)
    models = []
    for i, ms in enumerate(spec.models):
        if ms not in wanted:
            continue
        for member in ms.checkpoints or [None]:  # a checkpoint series: a model per checkpoint
            try:
                model = loader.load(i, pretrained=pretrained, member=member)
            except ConvscopeError as exc:
                problems.append(str(exc))
                continue
            if model.dataset in (skip or []):
                model.dataset = None  # its data set left out: the data-set views say they do not apply
            found = check_model(spec, model)
            if not found:
                model.layers = chosen_layers(spec, model)
                found = check_techniques(spec, model)
            problems += found
            models.append(model)
    if problems:  # a series' checkpoints share their entry's problems: each said once
        raise SpecErrors(str(spec.path.name), list(dict.fromkeys(problems)))
    return Prepared(spec, models, image_sets, datasets)


def sets_named_by(ms) -> dict[str, list[str]]:
    """Image sets that a model's techniques name themselves (texture sources, style images): technique → sets."""
    named = {}
    for kind, params in ms.technique_params().items():
        reads = registry.get(kind).reads(params)
        sets = list(reads.image_sets or []) + list(reads.references)
        if sets:
            named[kind] = sets
    return named


def sets_used_by(spec: ReportSpec, ms) -> list[str]:
    """Every image set a model reads: its own and those its techniques name."""
    named = [s for sets in sets_named_by(ms).values() for s in sets]
    return list(dict.fromkeys(spec.image_sets_of(ms) + [s for s in named if s in spec.images]))


def named_set_problems(spec: ReportSpec, ms) -> list[str]:
    i = spec.models.index(ms)
    problems = []
    for kind, sets in sets_named_by(ms).items():
        params = ms.technique_params()[kind]
        for name in dict.fromkeys(sets):
            if name in spec.images:
                continue
            field = next((f for f, v in params if v == name or (isinstance(v, (list, tuple)) and name in v)), None)
            key = f"models[{i}].techniques.{kind}" + (f".{field}" if field else "")
            problems.append(f"{key}: no image set '{name}'; {did_you_mean(name, spec.images, 'sets')}")
    return problems


def check_model(spec: ReportSpec, model: LoadedModel) -> list[str]:
    """The model's own entries: its layer names, a forward pass on a blank input, its labels against its logits."""
    i, ms = model.spec_index, spec.models[model.spec_index]
    problems = [f"models[{i}].layers[{j}]: {problem}" for j, layer in enumerate(ms.layers)
                if (problem := model.missing_module(layer))]
    try:
        classes = model.probe().classes
    except Exception as exc:
        shape = list(model.input_shape)
        return problems + [f"models[{i}]: a forward pass on a {shape} input fails ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''})"]
    if model.labels and classes != len(model.labels):
        problems.append(f"models[{i}].labels: {len(model.labels)} labels, but the model gives {classes} logits")
    return problems


def chosen_layers(spec: ReportSpec, model: LoadedModel) -> list[str]:
    """The layers the model's pages show: the spec's, or a spread of its blocks."""
    ms = spec.models[model.spec_index]
    return list(ms.layers) or default_layers(model.module, model.input_shape, model.device)


def check_techniques(spec: ReportSpec, model: LoadedModel) -> list[str]:
    """Each technique's parameters against the loaded model (its chosen layers already set)."""
    i, ms = model.spec_index, spec.models[model.spec_index]
    problems = []
    for kind, params in ms.technique_params().items():
        if registry.get(kind).uses_dataset and ms.techniques is not None and model.dataset is None and not ms.dataset:
            problems.append(f"models[{i}].techniques.{kind}: looks across a data set, but the model names none; "
                            f"add 'dataset: NAME' to models[{i}]" + (f" (one of {', '.join(spec.datasets)})" if spec.datasets else ""))
            continue
        for problem in registry.get(kind).check(model, params):
            problems.append(f"models[{i}].techniques.{kind}.{problem}")
    return problems
