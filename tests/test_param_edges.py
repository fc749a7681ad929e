"""Every documented value of every technique parameter works: a whole build of the tiny model with each parameter at
the edges its pydantic field documents (the bounds, each Literal choice, None where allowed, an empty list where
allowed) ends with every page written and no failed job; a value just outside a bound is a one-line, keyed error.

The edge values are derived from the fields' metadata, so a new parameter is covered without editing this file. The
builds group parameters: one build sets every parameter of every technique to its lowest documented value, one to
its highest (with the cost-driving ones overridden below, each with its reason), and a few more each give every
parameter its next special value (None, [], a Literal choice, a bool, a layer or class named below)."""
from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import annotated_types as at
import pytest
from pydantic import ValidationError

from helpers import cli, colour_folder, read_json, tiny_spec, write_spec
from generator.checks import ReportSpec
from generator.errors import SpecErrors
from generator.techniques import registry

pytestmark = pytest.mark.usefixtures("one_thread")

BIG_FLOAT = 1e6  # a field with no upper bound: a large value (weights, penalties)
BIG_INT = 2**31 - 1  # ... and for integers (seeds)

# The highest documented value of these would make the build take minutes: a cheap value instead (CPU seconds
# measured on the shared 2-core machine). Steps are the optimizations' loop counts: what one more step does is what
# the first did. Sizes: unit visualization at 512 px took 112 s (every channel of both layers), multifaceted 18 s;
# Gram texture synthesis at 1024 px with 1024 random filters per width 196 s. Class visualization and feature
# inversion keep their largest size (4 s and less).
CHEAP_MAX: dict[str, dict[str, Any]] = {
    "class_visualization": {"steps": 3, "pixel_steps": 3},
    "unit_visualization": {"steps": 3, "size": 128},
    "multifaceted": {"steps": 3, "size": 128},
    "fooling": {"steps": 20},
    "deepdream": {"steps": 2},
    "feature_inversion": {"steps": 3},
    # Efros–Leung grows the texture pixel by pixel, matching a window against every window of the source: the
    # largest window (41) in the smallest texture and source it fits (size >= window, source_size >= window + 2)
    "texture_synthesis_nonparametric": {"size": 41, "source_size": 43},
    # 256: the widest random filters (127 px) need twice that at the coarse (half) scale
    "texture_synthesis": {"steps": 3, "coarse_steps": 3, "size": 256, "source_size": 512, "random_filter_count": 32},
    "style_transfer": {"steps": 3, "coarse_steps": 3, "size": 256, "style_size": 512, "random_filter_count": 32},
}
# Under the special values (which leave most fields at their defaults), each technique runs its preview settings
# (`quick()`) with these loop counts at their lowest documented value: the special builds test choices, not sizes.
LOOPS = ("steps", "pixel_steps", "coarse_steps", "samples", "iterations", "octaves")
# Values a field's metadata cannot give (names of the tiny model's layers, classes, image sets), as the special
# values of those fields: build k gives each field its k-th special value.
NAMED: dict[str, dict[str, list[Any]]] = {
    "deepdream": {"layers": [["relu1"], ["conv1", "relu2"]]},
    "feature_inversion": {"layers": [["relu1"], ["conv1", "relu2"]]},
    "filters": {"layers": [["conv2"], ["conv1", "conv2"]]},
    "gradcam": {"layer": ["conv1", "relu2"]},
    "guided_gradcam": {"layer": ["conv1", "relu2"]},
    "nearest_neighbors": {"layer": ["conv1", "fc"], "query_set": ["pics"]},
    "embedding": {"layer": ["relu2", "conv1"]},
    "texture_synthesis": {"layers": [["conv1"], ["conv1", "relu2"]], "images": [["pics"]]},
    "texture_synthesis_nonparametric": {"images": [["pics"]]},
    "style_transfer": {"content_layer": ["conv1"], "style_layers": [["conv1"], ["relu2"]], "images": [["pics"]],
                       "styles": [["styles"]]},
    "fooling": {"target": [0, 3]},
    # snapshots: some beyond the steps, and none within them (no progress strip)
    "class_visualization": {"classes": [[0, 3]], "snapshots": [[0, 1, 2], [5000]]},
    # every class: those no data-set image is predicted as are listed as empty (all empty is a failure by design)
    "multifaceted": {"classes": [[0, 1, 2, 3]]},
    "unit_visualization": {"channels": [[0, 7]]},
    "max_patches": {"channels": [[0, 7]]},
}
# Values the metadata allows but a technique's `check` rejects for this model, with a keyed one-line message naming
# what to give instead: (technique, parameters, the key the message names). Tested as rejections; the one-field ones
# are left out of the builds. An empty list of layers or image sets means nothing to do; the window's maximum is for
# large inputs; random filters wider than half the coarse scale need a larger image.
REJECTED: list[tuple[str, dict[str, Any], str]] = [
    ("feature_inversion", {"layers": []}, "layers"),
    ("texture_synthesis_nonparametric", {"images": []}, "images"),
    ("texture_synthesis", {"images": []}, "images"),
    ("texture_synthesis", {"layers": []}, "layers"),
    ("texture_synthesis", {"random_kernel_sizes": [127], "size": 128}, "size"),
    ("style_transfer", {"images": []}, "images"),
    ("style_transfer", {"styles": []}, "styles"),
    ("style_transfer", {"style_layers": []}, "style_layers"),
    ("style_transfer", {"random_kernel_sizes": [127], "size": 128}, "size"),
    ("occlusion", {"window": 4096}, "window"),
]
ATTRIBUTION_TARGETS = [[0, 3]]  # every attribution technique's `targets`
# Values that pair with another field's (cross-field rules of the Params), per build.
PAIRED: dict[str, dict[str, dict[str, Any]]] = {
    "guided_backprop": {"min": {"layer": "conv1", "channel": 0}, "max": {"layer": "relu2", "channel": 15},
                        "special-1": {"layer": "relu2", "channel": 3, "targets": None}},
    # the three seeded fractions: foreground ≤ probable foreground, probable foreground + background ≤ 1
    "saliency_grabcut": {"max": {"background": 0.001}},
    # the largest window is the tiny model's input side (4096 is rejected for it, see REJECTED)
    "occlusion": {"min": {"stride": 1}, "max": {"window": 32, "stride": "window"}},
    # the model's own picture painted in a named style (the other builds paint the two of `pics`, see below)
    "style_transfer": {"special-1": {"images": None}},
}


def _unwrap(annotation) -> list:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return [t for a in typing.get_args(annotation) for t in _unwrap(a)]
    return [annotation]


def _bounds(metadata) -> tuple[Any, Any, bool, bool]:
    """(lower, upper, lower is strict, upper is strict) from annotated-types constraints."""
    lo = hi = None
    lo_strict = hi_strict = False
    for m in metadata:
        if isinstance(m, at.Ge):
            lo = m.ge
        elif isinstance(m, at.Gt):
            lo, lo_strict = m.gt, True
        elif isinstance(m, at.Le):
            hi = m.le
        elif isinstance(m, at.Lt):
            hi, hi_strict = m.lt, True
    return lo, hi, lo_strict, hi_strict


def _number_edges(kind: type, metadata) -> tuple[Any, Any]:
    lo, hi, lo_strict, hi_strict = _bounds(metadata)
    if lo is None and hi is None:  # a number with no bounds at all (a class index): named below where it matters
        return None, None
    step = 1 if kind is int else 1e-3
    low = None if lo is None else (lo + step if lo_strict else lo)
    high = (BIG_INT if kind is int else BIG_FLOAT) if hi is None else (hi - step if hi_strict else hi)
    return low, high


def field_edges(info) -> tuple[Any, Any, list]:
    """(lowest, highest, special values) of one field; None where the field has no such value. Lowest/highest use
    the numeric bounds of the field (of a list's items for a list: a one-item list); the special values are None
    where allowed, [] where allowed, every Literal choice and both bools."""
    members = _unwrap(info.annotation)
    low = high = None
    special: list = []
    for t in members:
        if t is type(None):
            special.append(None)
        elif t is bool:
            special += [True, False]
        elif typing.get_origin(t) is Literal:
            special += list(typing.get_args(t))
        elif t in (int, float):
            low, high = _number_edges(t, info.metadata)
        elif typing.get_origin(t) is list:
            min_length = next((m.min_length for m in info.metadata if isinstance(m, at.MinLen)), 0)
            if min_length == 0:
                special.append([])
            (item,) = typing.get_args(t)
            if typing.get_origin(item) is Annotated:
                base, *meta = typing.get_args(item)
                meta = [m for f in meta for m in getattr(f, "metadata", [f])]
                if base in (int, float):
                    lo, hi = _number_edges(base, meta)
                    low, high = ([lo] if lo is not None else None), [hi]
    return low, high, special


def technique_cases(kind: str) -> dict[str, dict[str, Any]]:
    """Build name → this technique's parameters in that build (only those that differ from the defaults)."""
    fields = registry.get(kind).Params.model_fields
    edges = {name: field_edges(info) for name, info in fields.items()}
    named = dict(NAMED.get(kind, {}))
    if "targets" in fields:
        named.setdefault("targets", ATTRIBUTION_TARGETS)
    cases: dict[str, dict[str, Any]] = {"min": {}, "max": {}}
    for name, (low, high, _) in edges.items():
        if low is not None:
            cases["min"][name] = low
        if high is not None:
            cases["max"][name] = CHEAP_MAX.get(kind, {}).get(name, high)
    rejected = [(name, value) for k, values, _ in REJECTED if k == kind and len(values) == 1
                for name, value in values.items()]
    specials = {name: [v for v in edges[name][2] + [v for v in named.get(name, []) if v not in edges[name][2]]
                       if (name, v) not in rejected] for name in fields}
    default = registry.get(kind).Params()
    quick = default.quick()
    base = {name: getattr(quick, name) for name in fields if getattr(quick, name) != getattr(default, name)}
    base.update({name: cases["min"][name] for name in LOOPS if name in cases["min"]})
    depth = max((len(v) for v in specials.values()), default=0)
    for k in range(depth):
        cases[f"special-{k}"] = {**base, **{name: values[k] for name, values in specials.items() if len(values) > k}}
    for case, values in PAIRED.get(kind, {}).items():
        cases.setdefault(case, {}).update(values)
    if kind == "style_transfer":  # the model has one picture: "the style of the next content image" needs two
        for values in cases.values():
            if values.get("images") is None and values.get("styles") is None:
                values["images"] = ["pics"]
    for case, values in cases.items():  # a mistake here is the test's: say which combination does not validate
        try:
            registry.get(kind).Params(**values)
        except ValidationError as exc:
            raise AssertionError(f"{kind} in build '{case}': {values} does not validate; pair the values in "
                                 f"PAIRED:\n{exc}") from None
    return cases


def all_cases() -> dict[str, dict[str, dict[str, Any]]]:
    """Build name → {technique → parameters}."""
    builds: dict[str, dict[str, dict[str, Any]]] = {}
    for kind in registry.selectable():
        for case, values in technique_cases(kind).items():
            builds.setdefault(case, {})[kind] = values
    return builds


BUILDS = all_cases()


def test_every_field_has_an_edge_value():
    """A field whose type this file does not understand would silently go untested."""
    for kind, technique in registry.selectable().items():
        for name, info in technique.Params.model_fields.items():
            low, high, special = field_edges(info)
            assert low is not None or high is not None or special or name in NAMED.get(kind, {}), (kind, name)


def edge_project(root: Path) -> Path:
    """A data set of 9 pictures in 3 classes beside `project`'s tiny model and pictures (few pictures: a build draws
    every thumbnail the largest values ask for)."""
    colour_folder(root / "colours", per_class=3)
    return root


def edge_spec(techniques: dict[str, dict[str, Any]]) -> dict:
    """The tiny model with these techniques on one picture (set `one`); `pics` (two) and `styles` are there for the
    parameters that name image sets."""
    spec = tiny_spec(dataset="colours", images=["one"], techniques=techniques)
    spec["datasets"] = {"colours": {"folder": "colours"}}
    spec["images"].update({"one": ["pics/a.png"], "styles": ["pics/b.png"]})
    return spec


@pytest.mark.parametrize("case", sorted(BUILDS))
def test_documented_values_build(project: Path, case: str, capsys):
    edge_project(project)
    path = write_spec(project, edge_spec(BUILDS[case]))
    code = cli("build", path)
    err = capsys.readouterr().err
    assert code in (0, 1), err
    jobs = read_json(project / "out" / "build.json")["jobs"]
    failed = [f"{j['technique']} {j['layer'] or ''} {j['image'] or ''}: {j['error']}" for j in jobs
              if j["status"] == "failed"]
    assert not failed, "\n".join(failed)
    assert code == 0, err
    out = project / "out" / "tiny"
    missing = [kind for kind in BUILDS[case] if not (out / f"{kind}.md").is_file()]
    assert not missing, missing


def test_rejected_values_are_keyed_one_line_errors(project: Path, capsys):
    """Each rejection in a model of its own, all checked by one `convscope validate`."""
    edge_project(project)
    spec = edge_spec({})
    spec["models"] = [dict(spec["models"][0], name=f"m{i}", techniques={kind: values})
                      for i, (kind, values, _) in enumerate(REJECTED)]
    assert cli("validate", write_spec(project, spec)) == 2
    err = capsys.readouterr().err
    for i, (kind, _, key) in enumerate(REJECTED):
        assert f"error: spec.yml: models[{i}].techniques.{kind}.{key}: " in err, (kind, key, err)
    assert "Traceback" not in err


def _beyond(info) -> list[Any]:
    """Values just outside a field's bounds: its numbers' (of the field, or of a list's items), a list's length."""
    out = []
    for t in _unwrap(info.annotation):
        meta, base = info.metadata, t
        wrap = lambda v: v  # noqa: E731
        if typing.get_origin(t) is list:
            if next((m.min_length for m in info.metadata if isinstance(m, at.MinLen)), 0) >= 1:
                out.append([])
            (item,) = typing.get_args(t)
            if typing.get_origin(item) is not Annotated:
                continue
            base, *fs = typing.get_args(item)
            meta = [m for f in fs for m in getattr(f, "metadata", [f])]
            wrap = lambda v: [v]  # noqa: E731
        if base not in (int, float):
            continue
        lo, hi, lo_strict, hi_strict = _bounds(meta)
        step = 1 if base is int else 1e-3
        if lo is not None:
            out.append(wrap(lo if lo_strict else lo - step))
        if hi is not None:
            out.append(wrap(hi if hi_strict else hi + step))
    return out


def test_values_beyond_the_bounds_are_keyed_one_line_errors(tmp_path: Path):
    for kind, technique in registry.selectable().items():
        for name, info in technique.Params.model_fields.items():
            for value in _beyond(info):
                spec = tiny_spec(techniques={kind: {name: value}})
                with pytest.raises(SpecErrors) as raised:
                    ReportSpec.parse(spec)
                lines = raised.value.lines()
                key = f"models[0].techniques.{kind}.{name}"
                assert any(line.startswith(key) or f" {key}" in line or f"{key}" in line for line in lines), (
                    kind, name, value, lines)
                assert all("\n" not in line for line in lines)
