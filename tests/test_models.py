"""Model sources (torchvision, factory, checkpoints .pt/.safetensors), logits selection, labels, layer names."""
from __future__ import annotations

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from helpers import TINYMOD, cli, tiny_net, tiny_spec, write_spec
from generator.checks import prepare
from generator.errors import ConvscopeError, SpecErrors
from generator.models import LoadedModel, ModelLoader, select_logits
from generator.checks import ReportSpec


def load_spec(folder, **model) -> ReportSpec:
    return ReportSpec.load(write_spec(folder, tiny_spec(**model)))


def problems(spec: ReportSpec) -> list[str]:
    with pytest.raises(SpecErrors) as info:
        prepare(spec)
    return info.value.errors


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


# ------------------------------------------------------------------------------------------------ torchvision


def test_torchvision_random_weights(tmp_path):
    spec = ReportSpec.parse({"device": "cpu", "models": [{"name": "r18", "torchvision": "resnet18", "weights": None}]})
    prepared = prepare(spec)
    (model,) = prepared.models
    assert isinstance(model.module, torchvision.models.ResNet)
    assert len(model.module.layer4) == 2  # resnet18, not another depth
    assert model.source == "torchvision resnet18 (random weights)"
    assert model.labels is None and model.input.size == 224
    assert not model.module.training
    assert all(not p.requires_grad for p in model.module.parameters())
    assert model.layers  # a default spread of layers was chosen
    assert all(name in model.module_names() for name in model.layers)
    with torch.no_grad():
        assert model.logits(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)


def test_torchvision_unknown_architecture():
    spec = ReportSpec.parse({"device": "cpu", "models": [{"name": "r", "torchvision": "resnet19", "weights": None}]})
    (line,) = problems(spec)
    assert line.startswith("models[0].torchvision: no classification model 'resnet19'")
    assert "did you mean 'resnet18'?" in line


def test_torchvision_unknown_weights_name():
    loader = ModelLoader(ReportSpec.parse({"models": [{"name": "r", "torchvision": "resnet18", "weights": "IMAGENET1K_V9"}]}),
                         torch.device("cpu"))
    with pytest.raises(ConvscopeError) as info:
        loader.load(0)
    assert info.value.where == "models[0].weights"
    assert "did you mean 'IMAGENET1K_V1'?" in info.value.message


# ------------------------------------------------------------------------------------------------ torchvision, own heads


def _finetuned(arch: str, classes: int = 7, **kwargs) -> torch.nn.Module:
    """A torchvision model with a head of its own and random weights, as after fine-tuning."""
    torch.manual_seed(7)
    return torchvision.models.get_model(arch, num_classes=classes, **kwargs).eval()


def _load_tv(folder, arch: str, **model) -> LoadedModel:
    spec = ReportSpec.parse({"device": "cpu", "models": [{"name": "m", "torchvision": arch, **model}]})
    spec._path = folder / "spec.yml"
    return ModelLoader(spec, torch.device("cpu")).load(0)


@pytest.mark.parametrize("arch, weights, head", [
    ("resnet18", None, "fc"),
    ("efficientnet_b0", "DEFAULT", "classifier.1"),
    ("mobilenet_v3_small", None, "classifier.3"),
    ("convnext_tiny", "DEFAULT", "classifier.2"),
    ("regnet_y_400mf", "DEFAULT", "fc"),          # built on the CPU: RegNet does not build on the meta device
    ("squeezenet1_0", None, "classifier.1"),      # a 1×1 conv head: weight [7, 512, 1, 1]
])
def test_finetuned_head_of_each_family(tmp_path, arch, weights, head):
    trained = _finetuned(arch)
    torch.save(trained.state_dict(), tmp_path / "ft.pt")
    model = _load_tv(tmp_path, arch, weights=weights, checkpoint="ft.pt")
    assert tuple(model.module.get_submodule(head).weight.shape[:1]) == (7,)
    assert same_weights(model.module, trained)
    if weights is None:
        assert model.source == f"torchvision {arch} (7-class head) + ft.pt" and model.labels is None
    else:  # the enum's preprocessing, not its 1000 ImageNet categories
        assert model.source.startswith(f"torchvision {arch} (preprocessing of ") and "7-class head" in model.source
        assert model.labels == [f"class {i}" for i in range(7)]
        assert (model.input.mean, model.input.size) == ([0.485, 0.456, 0.406], 224)
    if arch == "squeezenet1_0":  # one small forward: 7 logits, the trained model's
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            assert torch.allclose(model.logits(x), trained(x), atol=1e-5)


@pytest.mark.parametrize("aux", [True, False])
def test_finetuned_googlenet_with_or_without_aux_heads(tmp_path, aux):
    # torchvision's fine-tuning recipe: ImageNet weights (transform_input on), auxiliary heads kept or dropped.
    trained = _finetuned("googlenet", aux_logits=aux, transform_input=True, init_weights=False)
    torch.save(trained.state_dict(), tmp_path / "ft.pt")
    model = _load_tv(tmp_path, "googlenet", weights="DEFAULT", checkpoint="ft.pt")
    assert same_weights(model.module, trained)
    assert model.module.aux_logits is aux and model.module.transform_input is True


def test_finetuned_head_predicts_its_own_classes(tmp_path):
    trained = _finetuned("resnet18")
    torch.save(trained.state_dict(), tmp_path / "ft.pt")
    names = ["ant", "bee", "cat", "dog", "eel", "fox", "gnu"]
    spec = ReportSpec.parse({"device": "cpu", "models": [{
        "name": "ft", "torchvision": "resnet18", "weights": "DEFAULT", "checkpoint": "ft.pt", "labels": names,
        "input": {"size": 64}, "layers": ["layer4"], "techniques": {"predictions": {"top_k": 3}}}]})
    spec._path = tmp_path / "spec.yml"
    (model,) = prepare(spec).models
    assert model.labels == names and model.label(6) == "gnu"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = model.logits(x)
        assert logits.shape == (2, 7)
        assert torch.allclose(logits, trained(x), atol=1e-5)


def _save(kind: str, module: torch.nn.Module, folder) -> str:
    state = module.state_dict()
    if kind == "plain":
        torch.save(state, folder / "w.pt")
    elif kind == "dataparallel":
        torch.save(torch.nn.DataParallel(module).state_dict(), folder / "w.pt")
    elif kind in ("state_dict", "model", "model_state_dict"):  # a full training checkpoint
        optimizer = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)
        torch.save({"epoch": 3, kind: state, "optimizer": optimizer.state_dict(), "best_acc": 0.91}, folder / "w.pt")
    else:
        save_file({f"module.{k}": v.contiguous() for k, v in state.items()}, str(folder / "w.safetensors"))
        return "w.safetensors"
    return "w.pt"


@pytest.mark.parametrize("kind", ["plain", "dataparallel", "state_dict", "model", "model_state_dict", "safetensors"])
def test_finetuned_checkpoint_layouts(tmp_path, kind):
    trained = _finetuned("mobilenet_v3_small", classes=5)
    if kind == "dataparallel":
        assert next(iter(torch.nn.DataParallel(trained).state_dict())).startswith("module.")
    model = _load_tv(tmp_path, "mobilenet_v3_small", weights="DEFAULT", checkpoint=_save(kind, trained, tmp_path))
    assert same_weights(model.module, trained)
    assert model.labels == [f"class {i}" for i in range(5)]


def test_labels_size_a_fresh_head_and_must_match_a_checkpoint(tmp_path):
    model = _load_tv(tmp_path, "mobilenet_v3_small", weights=None, labels=["a", "b", "c"])
    assert model.module.classifier[3].out_features == 3 and model.labels == ["a", "b", "c"]
    assert model.source == "torchvision mobilenet_v3_small (random weights, 3-class head)"
    (tmp_path / "labels.txt").write_text("a\nb\n")
    model = _load_tv(tmp_path, "mobilenet_v3_small", weights=None, labels="labels.txt")
    assert model.module.classifier[3].out_features == 2
    torch.save(_finetuned("mobilenet_v3_small").state_dict(), tmp_path / "ft.pt")
    spec = ReportSpec.parse({"device": "cpu", "models": [{
        "name": "ft", "torchvision": "mobilenet_v3_small", "weights": "DEFAULT", "checkpoint": "ft.pt",
        "labels": ["a", "b", "c", "d", "e"], "input": {"size": 64}, "layers": ["features.3"]}]})
    spec._path = tmp_path / "spec.yml"
    assert problems(spec) == ["models[0].labels: 5 labels, but the model gives 7 logits"]


def test_kwargs_reach_the_constructor(tmp_path):
    model = _load_tv(tmp_path, "mobilenet_v3_small", weights=None, kwargs={"dropout": 0.5})
    assert model.module.classifier[2].p == 0.5
    model = _load_tv(tmp_path, "convnext_tiny", weights=None, kwargs={"stochastic_depth_prob": 0.3, "num_classes": 9})
    assert model.module.features[7][2].stochastic_depth.p == pytest.approx(0.3)
    assert model.module.classifier[2].out_features == 9


def test_kwargs_to_a_factory(project):
    (model,) = prepare(load_spec(project, kwargs={"classes": 6, "seed": 5})).models
    assert same_weights(model.module, tiny_net(classes=6, seed=5))
    (line,) = problems(load_spec(project, kwargs={"width": 3}))
    assert line.startswith("models[0].kwargs: tinymod:build() does not take them (") and "width" in line


def test_bad_kwarg_is_one_line_naming_the_key(tmp_path, capsys):
    path = write_spec(tmp_path, {"device": "cpu", "models": [
        {"name": "r", "torchvision": "resnet18", "weights": None, "kwargs": {"dropout": 0.5}}]})
    assert cli("validate", path) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("error: spec.yml: models[0].kwargs: resnet18 does not take them (TypeError: "
                           "ResNet.__init__() got an unexpected keyword argument 'dropout')"), err


@pytest.mark.parametrize("model, message", [
    ({"torchvision": "resnet18", "kwargs": {"when": "2024-01-01"}}, None),
    ({"torchvision": "resnet18", "kwargs": {"weights": "DEFAULT"}}, "models[0].kwargs: give 'weights' beside"),
    ({"torchvision": "resnet18", "kwargs": {"when": {"a": [1, {"b": None}]}}}, None),
    ({"torchvision": "resnet18", "kwargs": [1, 2]}, "models[0].kwargs: Input should be a valid dictionary"),
    ({"builtin": "fashion-mnist-net", "kwargs": {"a": 1}}, "models[0]: 'kwargs' applies only to a torchvision"),
])
def test_kwargs_are_plain_yaml_mappings(model, message):
    data = {"models": [{"name": "m", **model}]}
    if message is None:
        assert ReportSpec.parse(data).models[0].kwargs == model["kwargs"]
        return
    with pytest.raises(SpecErrors) as info:
        ReportSpec.parse(data)
    assert info.value.errors[0].startswith(message), info.value.errors


def test_kwargs_that_are_not_plain_values(tmp_path):
    (tmp_path / "s.yml").write_text("models:\n  - {name: m, torchvision: resnet18, kwargs: {since: 2024-01-01}}\n")
    with pytest.raises(SpecErrors) as info:
        ReportSpec.load(tmp_path / "s.yml")
    assert info.value.errors == ["models[0].kwargs: 'since' must be a plain value: a number, string, true/false, "
                                 "null, or a list or mapping of them"]


def test_num_classes_with_imagenet_weights_and_no_checkpoint(tmp_path):
    with pytest.raises(ConvscopeError) as info:
        _load_tv(tmp_path, "resnet18", weights="DEFAULT", kwargs={"num_classes": 7})
    assert info.value.where == "models[0].kwargs"
    assert "num_classes 7 differs from the 1000 classes of ResNet18_Weights.IMAGENET1K_V1" in info.value.message


def test_checkpoint_of_another_torchvision_architecture(tmp_path):
    torch.save(_finetuned("mobilenet_v3_small").state_dict(), tmp_path / "mnv3.pt")
    with pytest.raises(ConvscopeError) as info:
        _load_tv(tmp_path, "resnet18", weights=None, checkpoint="mnv3.pt")
    assert info.value.where == "models[0].checkpoint"
    assert "mnv3.pt does not fit the model: missing" in info.value.message and "'conv1.weight'" in info.value.message
    # the head's size is taken from the file, the rest must still fit: a grayscale stem is named
    state = _finetuned("resnet18").state_dict()
    state["conv1.weight"] = state["conv1.weight"][:, :1]
    torch.save(state, tmp_path / "gray.pt")
    with pytest.raises(ConvscopeError) as info:
        _load_tv(tmp_path, "resnet18", weights="DEFAULT", checkpoint="gray.pt")
    assert info.value.message == ("gray.pt does not fit the model: 1 tensor(s) of another shape e.g. 'conv1.weight' "
                                  "is [64, 1, 7, 7] in the file, [64, 3, 7, 7] in the model")


# ------------------------------------------------------------------------------------------------ factory


def test_factory_beside_the_spec(project):
    prepared = prepare(load_spec(project))
    (model,) = prepared.models
    assert model.source == "factory tinymod:build"
    assert same_weights(model.module, tiny_net())
    assert model.layers == ["conv1", "relu2"]
    assert [r.id for r in prepared.images["pics"]] == ["pics/a", "pics/b"]


@pytest.mark.parametrize("factory, message", [
    ("nosuchmod:build", "cannot import 'nosuchmod' (ModuleNotFoundError"),
    ("brokenmod:build", "cannot import 'brokenmod' (SyntaxError"),
    ("badmod:build", "cannot import 'badmod' (RuntimeError: first line"),
    ("tinymod:nothing", "'tinymod' has no function 'nothing'"),
])
def test_factory_errors_are_one_line_naming_the_key(project, capsys, factory, message):
    (project / "brokenmod.py").write_text("def build(:\n    pass\n")
    (project / "badmod.py").write_text("raise RuntimeError('first line\\nsecond line')\n")
    path = write_spec(project, tiny_spec(factory=factory))
    assert cli("validate", path) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: spec.yml: models[0].factory: "), err
    assert message in lines[0]
    assert "Traceback" not in err


def test_factory_that_raises(project):
    (project / "badmod.py").write_text("def build():\n    raise ValueError('no such width')\n")
    (line,) = problems(load_spec(project, factory="badmod:build"))
    assert line == "models[0].factory: badmod:build() raised ValueError: no such width"


def test_factory_returning_something_else(project):
    (line,) = problems(load_spec(project, factory="tinymod:not_a_module"))
    assert line.startswith("models[0].factory: returned int")


def test_forward_failure_names_the_model(project):
    # 1-channel input into a 3-channel conv
    (line,) = problems(load_spec(project, input={"size": 32, "mode": "L", "mean": [0.5], "std": [0.5]}))
    assert line.startswith("models[0]: a forward pass on a [1, 32, 32] input fails (RuntimeError")


# ------------------------------------------------------------------------------------------------ checkpoints


def _trained() -> torch.nn.Module:
    return tiny_net(seed=123)  # weights unlike the factory's own (seed 0)


@pytest.mark.parametrize("kind", ["pt", "pt-wrapped", "safetensors"])
def test_checkpoint_is_loaded_into_the_factory_model(project, kind):
    trained = _trained()
    state = trained.state_dict()
    if kind == "pt":
        path = project / "weights.pt"
        torch.save(state, path)
    elif kind == "pt-wrapped":  # a training checkpoint from DataParallel
        path = project / "ckpt.pth"
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    else:
        path = project / "weights.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    spec = load_spec(project, checkpoint=path.name)
    (model,) = prepare(spec).models
    assert same_weights(model.module, trained)
    assert not same_weights(model.module, tiny_net())
    assert model.source == f"factory tinymod:build + {path.name}"


def test_checkpoint_changes_the_digest(project):
    torch.save(_trained().state_dict(), project / "w.pt")
    (plain,) = prepare(load_spec(project)).models
    (loaded,) = prepare(load_spec(project, checkpoint="w.pt")).models
    assert plain.digest != loaded.digest


def test_checkpoint_of_another_architecture(project):
    ns: dict = {}
    exec(TINYMOD, ns)
    torch.save(ns["build_other"]().state_dict(), project / "other.pt")
    (line,) = problems(load_spec(project, checkpoint="other.pt"))
    assert line.startswith("models[0].checkpoint: other.pt does not fit the model:")
    assert "missing" in line and "unexpected" in line


def test_checkpoint_with_wrong_shapes(project):
    torch.save(tiny_net(classes=10).state_dict(), project / "ten.pt")
    (line,) = problems(load_spec(project, checkpoint="ten.pt"))
    assert line.startswith("models[0].checkpoint: ten.pt does not fit the model:")
    assert "fc.weight" in line


def test_checkpoint_with_wrong_shapes_via_cli_is_one_line(project, capsys):
    torch.save(tiny_net(classes=10).state_dict(), project / "ten.pt")
    assert cli("validate", write_spec(project, tiny_spec(checkpoint="ten.pt"))) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "models[0].checkpoint" in err, err


def test_checkpoint_missing_or_unreadable(project):
    (line,) = problems(load_spec(project, checkpoint="nope.pt"))
    assert line.startswith("models[0].checkpoint: file not found") and "nope.pt" in line
    (project / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    (line,) = problems(load_spec(project, checkpoint="junk.safetensors"))
    assert line.startswith("models[0].checkpoint: cannot read junk.safetensors as a state dict")


# ------------------------------------------------------------------------------------------------ logits, labels


def test_logits_from_a_tuple(project):
    (model,) = prepare(load_spec(project, factory="tinymod:build_tuple", logits=1, layers=["body.conv1"])).models
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model.module.body(x) * 2.0
        assert torch.allclose(model.logits(x), expected)


def test_logits_from_a_dict(project):
    (model,) = prepare(load_spec(project, factory="tinymod:build_dict", logits="scores", labels=list("abcd"),
                                 layers=["body.conv1"])).models
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.logits(x), model.module.body(x) * 3.0)


def test_dict_output_without_logits_key_is_an_error(project):
    (line,) = problems(load_spec(project, factory="tinymod:build_dict", layers=["body.conv1"]))
    assert line.startswith("models[0]:") and "set 'logits'" in line


def test_select_logits_rules():
    t = torch.arange(3.0)
    assert select_logits(t, None) is t
    assert select_logits((t, t + 1), None) is t
    assert select_logits({"logits": t}, None) is t
    assert select_logits([t, t + 1], 1).equal(t + 1)
    assert select_logits({"a": t + 5}, "a").equal(t + 5)


def test_labels_list(project):
    (model,) = prepare(load_spec(project, labels=["cat", "dog", "eel", "fox"])).models
    assert model.labels == ["cat", "dog", "eel", "fox"]
    assert model.label(2) == "eel" and model.label(7) == "class 7"


def test_labels_file_relative_to_spec(project):
    (project / "labels.txt").write_text("cat\ndog\n\neel\nfox\n")
    (model,) = prepare(load_spec(project, labels="labels.txt")).models
    assert model.labels == ["cat", "dog", "eel", "fox"]


def test_labels_count_mismatch(project):
    (line,) = problems(load_spec(project, labels=["cat", "dog", "eel"]))
    assert line == "models[0].labels: 3 labels, but the model gives 4 logits"


def test_labels_file_missing(project):
    (line,) = problems(load_spec(project, labels="labels.txt"))
    assert line.startswith("models[0].labels: file not found")


# ------------------------------------------------------------------------------------------------ layers


def test_unknown_layer(project):
    (line,) = problems(load_spec(project, layers=["conv3"]))
    assert line.startswith("models[0].layers[0]: no module 'conv3' in tiny; did you mean")
    assert "'conv1'" in line or "'conv2'" in line


def test_unknown_layers_all_reported(project):
    errors = problems(load_spec(project, layers=["relu1", "rlu2", "conv9"]))
    assert [e.split(":")[0] for e in errors] == ["models[0].layers[1]", "models[0].layers[2]"]
    assert "did you mean 'relu2'?" in errors[0]


def test_default_layers_are_a_spread_of_spatial_modules(project):
    (model,) = prepare(load_spec(project, layers=[])).models
    # the spatial leaves of the tiny net, last one included: conv1 relu1 pool1 conv2 relu2 → 4 of them (gap's
    # 1 × 1 output is one number per channel: never a default)
    assert len(model.layers) == 4
    assert model.layers[0] == "conv1" and model.layers[-1] == "relu2"
    order = [n for n, _ in model.module.named_modules() if n]
    assert model.layers == sorted(model.layers, key=order.index)


def test_resolve_unknown_module(project):
    (model,) = prepare(load_spec(project)).models
    assert model.resolve("conv2") is model.module.conv2
    with pytest.raises(ConvscopeError, match="did you mean 'conv2'"):
        model.resolve("conv22")


def test_technique_check_names_the_param(project):
    (line,) = problems(load_spec(project, techniques={"filters": {"layers": ["relu1"]}}))
    assert line.startswith("models[0].techniques.filters.layers[0]: 'relu1' is not a Conv2d in tiny")


def test_default_layers_are_the_nonlinearities_when_there_are_enough():
    import torch
    from torch import nn

    from generator.layers import default_layers

    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

    net = nn.Sequential(*block(1, 4), nn.MaxPool2d(2), *block(4, 8), *block(8, 8), nn.MaxPool2d(2), *block(8, 8),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 3 * 3, 10)).eval()
    # Spatial leaves: 4 convs, 4 batch norms, 4 ReLUs, 3 pools; the ReLUs are picked, not conv 0 ... pool 14.
    assert default_layers(net, (1, 28, 28), torch.device("cpu")) == ["2", "6", "9", "13"]
