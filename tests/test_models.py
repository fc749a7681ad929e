"""Model sources (torchvision, factory, checkpoints .pt/.safetensors), logits selection, labels, layer names."""
from __future__ import annotations

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from conftest import TINYMOD, cli, tiny_net, tiny_spec, write_spec
from generator.build import prepare
from generator.errors import ConvscopeError, SpecErrors
from generator.models import ModelLoader, select_logits
from generator.spec import Spec


def load_spec(folder, **model) -> Spec:
    return Spec.load(write_spec(folder, tiny_spec(**model)))


def problems(spec: Spec) -> list[str]:
    with pytest.raises(SpecErrors) as info:
        prepare(spec)
    return info.value.errors


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


# ------------------------------------------------------------------------------------------------ torchvision


def test_torchvision_random_weights(tmp_path):
    spec = Spec.parse({"device": "cpu", "models": [{"name": "r18", "torchvision": "resnet18", "weights": None}]})
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
    spec = Spec.parse({"device": "cpu", "models": [{"name": "r", "torchvision": "resnet19", "weights": None}]})
    (line,) = problems(spec)
    assert line.startswith("models[0].torchvision: no classification model 'resnet19'")
    assert "did you mean 'resnet18'?" in line


def test_torchvision_unknown_weights_name():
    loader = ModelLoader(Spec.parse({"models": [{"name": "r", "torchvision": "resnet18", "weights": "IMAGENET1K_V9"}]}),
                         torch.device("cpu"))
    with pytest.raises(ConvscopeError) as info:
        loader.load(0)
    assert info.value.where == "models[0].weights"
    assert "did you mean 'IMAGENET1K_V1'?" in info.value.message


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
    # the spatial leaves of the tiny net, last one included: conv1 relu1 pool1 conv2 relu2 gap → 4 of them
    assert len(model.layers) == 4
    assert model.layers[0] == "conv1" and model.layers[-1] == "gap"
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
