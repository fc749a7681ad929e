"""Spec validation: good specs parse; every bad one names the key path and says what is valid."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import cli, noise_image, tiny_spec, write_spec
from generator.errors import SpecErrors
from generator.checks import ReportSpec
from generator.techniques import registry
from generator.techniques.activations import ActivationsParams
from generator.techniques.predictions import PredictionsParams


def factory_model(**extra) -> dict:
    return {"name": "m", "factory": "tinymod:build", **extra}


def errors_of(data) -> list[str]:
    with pytest.raises(SpecErrors) as info:
        ReportSpec.parse(data)
    assert info.value.errors, "SpecErrors without any problem listed"
    return info.value.errors


def only_error(data) -> str:
    errors = errors_of(data)
    assert len(errors) == 1, errors
    return errors[0]


# ------------------------------------------------------------------------------------------------ good specs


def test_minimal_spec_gets_defaults():
    spec = ReportSpec.parse({"models": [factory_model()]})
    assert spec.device == "auto"
    assert spec.output == "site_src/reports"
    assert spec.images == {}
    m = spec.models[0]
    assert m.source == "factory"
    assert m.layers == []
    # no `techniques:` means every selectable technique with its defaults
    assert set(m.technique_params()) == set(registry.selectable()) >= {"predictions", "filters", "activations"}
    assert not {"input", "architecture"} & set(m.technique_params())
    assert m.technique_params()["predictions"] == PredictionsParams()


def test_full_spec_parses_with_its_values():
    spec = ReportSpec.parse({
        "title": "T", "device": "cuda:1", "seed": 7,
        "images": {"photos": ["skimage:chelsea", "pics/*.png"], "more": ["x.jpg"]},
        "models": [
            {"name": "r18", "torchvision": "resnet18", "weights": None, "images": ["photos"], "layers": ["layer1"],
             "techniques": {"predictions": {"top_k": 2}, "activations": None}},
            {"name": "lite", "builtin": "efficientnet-lite0", "logits": 0, "labels": ["a", "b"],
             "input": {"size": 64, "mode": "L", "mean": [0.5], "std": [0.25]}},
        ],
    })
    assert spec.device == "cuda:1" and spec.seed == 7
    r18, lite = spec.models
    assert r18.source == "torchvision" and r18.weights is None
    params = r18.technique_params()
    # `activations:` with no value means "run it with its defaults"; unlisted techniques do not run
    assert params == {"predictions": PredictionsParams(top_k=2), "activations": ActivationsParams()}
    assert lite.source == "builtin" and lite.input.size == 64 and lite.input.resize_to == round(64 * 8 / 7)
    assert spec.image_sets_of(r18) == ["photos"]
    assert spec.image_sets_of(lite) == ["photos", "more"]


# ------------------------------------------------------------------------------------------------ bad specs


def test_unknown_key_suggests_the_valid_one():
    assert only_error({"models": [factory_model(weightz=1)]}) == "models[0].weightz: unknown key; did you mean 'weights'?"


def test_unknown_key_nested_and_top_level():
    assert "models[0].input.sise: unknown key; did you mean 'size'?" in errors_of(
        {"models": [factory_model(input={"sise": 32})]})
    assert "modles: unknown key; did you mean 'models'?" in errors_of({"modles": [], "models": [factory_model()]})


def test_unknown_key_far_from_any_lists_valid_keys():
    line = only_error({"models": [factory_model(zzzzzz=1)]})
    assert line.startswith("models[0].zzzzzz: unknown key; valid keys:")
    assert "'factory'" in line and "'layers'" in line


def test_unknown_technique():
    line = only_error({"models": [factory_model(techniques={"activation": {}})]})
    assert line == "models[0].techniques.activation: unknown technique; did you mean 'activations'?"


def test_unknown_technique_far_from_any_lists_the_techniques():
    line = only_error({"models": [factory_model(techniques={"qqqqqq": {}})]})
    assert line.startswith("models[0].techniques.qqqqqq: unknown technique; valid techniques:")
    for kind in ("predictions", "filters", "activations"):
        assert repr(kind) in line


def test_bad_technique_param_value():
    line = only_error({"models": [factory_model(techniques={"predictions": {"top_k": 0}})]})
    assert line.startswith("models[0].techniques.predictions.top_k:")
    assert "greater than or equal to 1" in line


def test_bad_technique_param_choice():
    line = only_error({"models": [factory_model(techniques={"activations": {"order": "loudest"}})]})
    assert line.startswith("models[0].techniques.activations.order:")
    assert "'index'" in line and "'strongest'" in line


def test_unknown_technique_param():
    line = only_error({"models": [factory_model(techniques={"predictions": {"topk": 3}})]})
    assert line == "models[0].techniques.predictions.topk: unknown key; did you mean 'top_k'?"


def test_two_sources():
    line = only_error({"models": [factory_model(torchvision="resnet18")]})
    assert line.startswith("models[0]")
    assert "exactly one source of torchvision, builtin, factory" in line and "got torchvision, factory" in line


def test_no_source():
    line = only_error({"models": [{"name": "m"}]})
    assert line.startswith("models[0]")
    assert "exactly one source of torchvision, builtin, factory" in line and "got none" in line


def test_weights_without_torchvision():
    line = only_error({"models": [factory_model(weights="DEFAULT")]})
    assert line.startswith("models[0].weights:")
    assert "torchvision" in line and "checkpoint" in line


def test_weights_null_without_torchvision_is_also_an_error():
    assert only_error({"models": [factory_model(weights=None)]}).startswith("models[0].weights:")


def test_bad_builtin_lists_the_valid_ones():
    line = only_error({"models": [{"name": "m", "builtin": "resnet"}]})
    assert line.startswith("models[0].builtin:") and "'efficientnet-lite0'" in line and "'resnet'" in line


def test_bad_factory_shape():
    line = only_error({"models": [factory_model(factory="tinymod.build")]})
    assert line.startswith("models[0].factory:") and "module:function" in line


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "CPU", "cuda0"])
def test_bad_device(device):
    line = only_error({"device": device, "models": [factory_model()]})
    assert line.startswith("device:") and repr(device) in line
    assert "auto, cpu, cuda, cuda:N or mps" in line


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:3", "mps"])
def test_good_devices(device):
    assert ReportSpec.parse({"device": device, "models": [factory_model()]}).device == device


def test_unknown_image_set():
    line = only_error({"images": {"pics": ["a.png"]}, "models": [factory_model(images=["picz"])]})
    assert line == "models[0].images[0]: no image set 'picz'; did you mean 'pics'?"


def test_image_set_reference_without_any_sets():
    line = only_error({"models": [factory_model(images=["pics"])]})
    assert line.startswith("models[0].images[0]: no image set 'pics'") and "no sets" in line


def test_empty_image_set():
    line = only_error({"images": {"pics": []}, "models": [factory_model()]})
    assert line.startswith("images") and "'pics' is empty" in line


def test_duplicate_model_names():
    line = only_error({"models": [factory_model(), {"name": "m", "torchvision": "resnet18"}]})
    assert line.startswith("models[1].name:")
    assert "'m'" in line and "unique" in line


def test_bad_input_channels():
    line = only_error({"models": [factory_model(input={"mode": "L"})]})
    assert line.startswith("models[0].input") and "1 value(s)" in line


def test_several_problems_reported_together():
    errors = errors_of({"device": "gpu", "models": [factory_model(weightz=1, layers="conv1")]})
    joined = "\n".join(errors)
    assert "device:" in joined and "models[0].weightz" in joined and "models[0].layers" in joined


def test_models_required():
    assert only_error({"title": "x"}).startswith("models:")
    assert only_error({"models": []}).startswith("models:")


def test_not_a_mapping():
    assert "mapping" in only_error(["models"])


# ------------------------------------------------------------------------------------------------ files


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "spec.yml"
    path.write_text("title: x\nmodels:\n  - name: m\n    factory: [unclosed\n  - name: n\n", encoding="utf-8")
    with pytest.raises(SpecErrors) as info:
        ReportSpec.load(path)
    (line,) = info.value.lines()
    assert line.startswith(str(path))
    assert "not valid YAML" in line
    assert "line 5" in line  # the line where the parser finds the unclosed list


def test_yaml_tab_indent_names_the_line(tmp_path):
    path = tmp_path / "spec.yml"
    path.write_text("title: x\nmodels:\n\t- name: m\n", encoding="utf-8")
    with pytest.raises(SpecErrors) as info:
        ReportSpec.load(path)
    assert "line 3" in str(info.value) and "not valid YAML" in str(info.value)


def test_missing_spec_file(tmp_path):
    path = tmp_path / "nope.yml"
    with pytest.raises(SpecErrors) as info:
        ReportSpec.load(path)
    assert info.value.lines() == [f"{path}: file not found"]


def test_empty_spec_file(tmp_path):
    path = tmp_path / "spec.yml"
    path.write_text("", encoding="utf-8")
    with pytest.raises(SpecErrors, match="mapping"):
        ReportSpec.load(path)


def test_errors_from_a_file_name_the_file(tmp_path):
    path = write_spec(tmp_path, {"models": [factory_model(weightz=1)]})
    with pytest.raises(SpecErrors) as info:
        ReportSpec.load(path)
    assert info.value.lines() == [f"{path}: models[0].weightz: unknown key; did you mean 'weights'?"]


def test_load_resolves_paths_relative_to_the_spec_file(project, tmp_path, monkeypatch):
    sub = tmp_path / "nested" / "dir"
    sub.mkdir(parents=True)
    path = write_spec(sub, tiny_spec())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = ReportSpec.load(Path("..") / "nested" / "dir" / "spec.yml")
    assert spec.path == path.resolve()
    assert spec.base_dir == sub.resolve()
    assert spec.resolve(spec.output) == sub.resolve() / "out"
    assert spec.resolve(spec.cache) == sub.resolve() / "cache"
    assert spec.resolve("/abs/file.png") == Path("/abs/file.png")
    # images are found beside the spec, not in the working directory
    (sub / "pics").mkdir()
    noise_image(sub / "pics" / "a.png")
    noise_image(sub / "pics" / "b.png")
    from generator.images import load_sets

    sets, problems = load_sets(spec)
    assert problems == []
    assert [r.source for r in sets["pics"]] == [str(sub.resolve() / "pics" / "a.png"), str(sub.resolve() / "pics" / "b.png")]


# ------------------------------------------------------------------------------------------------ CLI


def test_schema_command(capsys):
    assert cli("schema") == 0
    schema = json.loads(capsys.readouterr().out)
    assert "models" in schema["properties"]
    assert "models" in schema["required"]
    defs = schema["$defs"]
    techniques = defs["TechniquesSpec"]["properties"]
    assert {"predictions", "filters", "activations"} <= set(techniques)
    assert "input" not in techniques and "architecture" not in techniques  # always run, never chosen

    def params_def(kind):
        refs = [a["$ref"] for a in techniques[kind].get("anyOf", []) if "$ref" in a]
        assert len(refs) == 1, techniques[kind]
        return defs[refs[0].rsplit("/", 1)[-1]]

    top_k = params_def("predictions")["properties"]["top_k"]
    assert top_k["default"] == 5 and top_k["minimum"] == 1 and top_k["description"]
    assert set(params_def("activations")["properties"]) >= {"max_channels", "order"}
    assert set(params_def("filters")["properties"]) >= {"layers", "max_filters"}


def test_validate_good_spec(project, capsys):
    path = write_spec(project, tiny_spec())
    assert cli("validate", path) == 0
    out = capsys.readouterr()
    assert "ok (1 model(s), 2 image(s))" in out.out
    assert "error" not in out.err


def test_validate_unknown_layer_is_one_line(project, capsys):
    path = write_spec(project, tiny_spec(layers=["conv1", "conv3"]))
    assert cli("validate", path) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: spec.yml: models[0].layers[1]: no module 'conv3' in tiny")
    assert "did you mean" in lines[0]
    assert "Traceback" not in err


def test_validate_bad_key_exits_2(project, capsys):
    path = write_spec(project, tiny_spec(weightz=1))
    assert cli("validate", path) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {path}: models[0].weightz: unknown key; did you mean 'weights'?"


def test_validate_missing_spec(tmp_path, capsys):
    assert cli("validate", tmp_path / "nope.yml") == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'nope.yml'}: file not found"


def test_validate_as_a_program_prints_no_traceback(project):
    """The installed entry point, in a subprocess: exit status 2 and one line on stderr."""
    import subprocess
    import sys

    path = write_spec(project, tiny_spec(layers=["relu9"]))
    proc = subprocess.run([sys.executable, "-m", "generator", "validate", str(path)], capture_output=True, text=True,
                          cwd=project, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "models[0].layers[0]" in lines[0] and "did you mean" in lines[0]
